//! WADO-RS rendered images and thumbnails (PS3.18 §10.4.1.1.3 and §8.3.5): an instance
//! (its first frame), one frame (`.../frames/{n}/rendered`), and thumbnails of an
//! instance, a series or a study (the first instance of it that has pixel data), as
//! `image/jpeg` (the default) or `image/png` by the Accept header.
//!
//! Rendering follows the Grayscale Standard pipeline of PS3.3 C.11: the Modality LUT
//! (Rescale Slope and Intercept), then the VOI window: the `window=center,width[,function]`
//! query parameter (`linear`, `linear-exact`, `sigmoid`: PS3.3 C.11.2.1.2), else the
//! image's own first Window Center / Width (with its VOI LUT Function), else the frame's
//! minimum and maximum; MONOCHROME1 is inverted. RGB is passed through (scaled to 8 bits),
//! YBR_FULL and YBR_FULL_422 are converted to RGB (PS3.3 C.7.6.3.1.2). `viewport=w,h`
//! scales the image to fit (thumbnails fit 128 × 128); `quality=` (1–100) sets the JPEG
//! quality. Only the frame rendered is decoded.

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use radveil_part10::{self as p10, DataSet, Encoding, Limits};
use radveil_pixeldata::ImagePixel;
use radveil_standard::tags;
use radveil_store::{Handle, Level};
use std::collections::HashMap;

use crate::app::{base_url, error, handle, visible_rows, AppState};
use crate::frames::{frame_list, open_instance, pixel_refusal, Refused};
use crate::multipart::{media_type, split_unquoted};
use crate::scope::Scope;
use crate::streamed;

/// The side of the square a thumbnail fits in.
pub const THUMBNAIL: u32 = 128;
/// The largest viewport side accepted.
pub const MAX_VIEWPORT: u32 = 4096;
/// JPEG quality when none is asked for.
pub const DEFAULT_QUALITY: u8 = 90;

/// A rendered media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rendered {
    /// `image/jpeg`.
    Jpeg,
    /// `image/png`.
    Png,
}

impl Rendered {
    fn media(self) -> &'static str {
        match self {
            Rendered::Jpeg => "image/jpeg",
            Rendered::Png => "image/png",
        }
    }
}

/// The rendered type an Accept header asks for (the first one offered wins).
pub fn accepted(accept: Option<&HeaderValue>) -> Result<Rendered, String> {
    let Some(accept) = accept else {
        return Ok(Rendered::Jpeg);
    };
    let accept = accept
        .to_str()
        .map_err(|_| "the Accept header is not text".to_string())?;
    for range in split_unquoted(accept, ',') {
        match media_type(&range).0.as_str() {
            "image/jpeg" | "image/*" | "*/*" => return Ok(Rendered::Jpeg),
            "image/png" => return Ok(Rendered::Png),
            _ => {}
        }
    }
    Err("rendered images are offered as image/jpeg or image/png".into())
}

/// A VOI LUT Function (PS3.3 C.11.2.1.3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Function {
    /// LINEAR (C.11.2.1.2.1).
    Linear,
    /// LINEAR_EXACT (C.11.2.1.3.2).
    LinearExact,
    /// SIGMOID (C.11.2.1.3.1).
    Sigmoid,
}

/// A VOI window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Window Center.
    pub center: f64,
    /// Window Width.
    pub width: f64,
    /// How values inside the window map to output.
    pub function: Function,
}

impl Window {
    /// The 8-bit output of a modality value `x` (before any MONOCHROME1 inversion).
    pub fn apply(&self, x: f64) -> u8 {
        let (c, w) = (self.center, self.width);
        let y = match self.function {
            Function::Linear => {
                let w1 = (w - 1.0).max(f64::MIN_POSITIVE);
                if x <= c - 0.5 - w1 / 2.0 {
                    0.0
                } else if x > c - 0.5 + w1 / 2.0 {
                    255.0
                } else {
                    ((x - (c - 0.5)) / w1 + 0.5) * 255.0
                }
            }
            Function::LinearExact => {
                let w = w.max(f64::MIN_POSITIVE);
                if x <= c - w / 2.0 {
                    0.0
                } else if x > c + w / 2.0 {
                    255.0
                } else {
                    ((x - c) / w + 0.5) * 255.0
                }
            }
            Function::Sigmoid => 255.0 / (1.0 + (-4.0 * (x - c) / w.max(f64::MIN_POSITIVE)).exp()),
        };
        // In [0, 255] by construction (NaN gives 0).
        y.round().clamp(0.0, 255.0) as u8
    }
}

/// Reads `window=center,width[,function]`.
pub fn window_param(text: &str) -> Result<Window, String> {
    let bad = || "window is center,width[,linear|linear-exact|sigmoid]".to_string();
    let mut it = text.split(',');
    let num = |s: Option<&str>| {
        s.and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite())
    };
    let center = num(it.next()).ok_or_else(bad)?;
    let width = num(it.next()).filter(|w| *w > 0.0).ok_or_else(bad)?;
    let function = match it.next().map(|f| f.trim().to_ascii_lowercase()).as_deref() {
        None | Some("linear") => Function::Linear,
        Some("linear-exact") => Function::LinearExact,
        Some("sigmoid") => Function::Sigmoid,
        _ => return Err(bad()),
    };
    if it.next().is_some() {
        return Err(bad());
    }
    if function == Function::Linear && width < 1.0 {
        return Err("a linear window is at least 1 wide".into());
    }
    Ok(Window {
        center,
        width,
        function,
    })
}

/// What the query asks of a rendering.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// The VOI window, when given.
    pub window: Option<Window>,
    /// Fit within this many columns and rows.
    pub viewport: Option<(u32, u32)>,
    /// JPEG quality, 1–100.
    pub quality: Option<u8>,
}

/// Reads the query parameters of a rendered request (unknown ones are ignored, as
/// PS3.18 §8.3.5 lets a server do with `annotation`).
pub fn options(q: &HashMap<String, String>) -> Result<Options, String> {
    let mut o = Options::default();
    if let Some(w) = q.get("window") {
        o.window = Some(window_param(w)?);
    }
    if let Some(v) = q.get("viewport") {
        let bad = || format!("viewport is columns,rows, each 1 to {MAX_VIEWPORT}");
        let (a, b) = v.split_once(',').ok_or_else(bad)?;
        let side = |s: &str| {
            s.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_VIEWPORT).contains(n))
        };
        o.viewport = Some((side(a).ok_or_else(bad)?, side(b).ok_or_else(bad)?));
    }
    if let Some(qv) = q.get("quality") {
        o.quality = Some(
            qv.trim()
                .parse::<u8>()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| "quality is 1 to 100".to_string())?,
        );
    }
    Ok(o)
}

/// An 8-bit image: grey (1 sample) or RGB (3), row by row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Columns.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Samples per pixel: 1 or 3.
    pub samples: u8,
    /// The samples.
    pub pixels: Vec<u8>,
}

fn ds_numbers(ds: &DataSet<'_>, tag: u32) -> Vec<f64> {
    ds.string(tag)
        .map(|s| {
            s.split('\\')
                .filter_map(|v| v.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite())
                .collect()
        })
        .unwrap_or_default()
}

/// How to read one stored value of a decoded grey frame (native little endian, `bps`
/// bytes), masked to Bits Stored and sign-extended when Pixel Representation says so.
fn grey_reader(d: &ImagePixel) -> Result<impl Fn(&[u8]) -> f64, String> {
    let bps = d.bytes_per_sample();
    let stored = u32::from(d.bits_stored.clamp(1, 32));
    let signed = d.pixel_representation == 1;
    if !(1..=4).contains(&bps) || d.bits_allocated == 1 {
        return Err(format!("{}-bit images are not rendered", d.bits_allocated));
    }
    let mask: u64 = (1u64 << stored) - 1;
    Ok(move |c: &[u8]| {
        let mut raw = [0u8; 8];
        let n = c.len().min(8);
        raw[..n].copy_from_slice(&c[..n]);
        let v = u64::from_le_bytes(raw) & mask;
        if signed && (v >> (stored - 1)) & 1 == 1 {
            (v as i64 - (1i64 << stored)) as f64
        } else {
            v as f64
        }
    })
}

/// The image's own first Window Center / Width (0028,1050 / 0028,1051), with its VOI LUT
/// Function (0028,1056), when it has a usable one.
fn own_window(ds: &DataSet<'_>) -> Option<Window> {
    let c = ds_numbers(ds, tags::WINDOW_CENTER).first().copied()?;
    let w = ds_numbers(ds, tags::WINDOW_WIDTH)
        .first()
        .copied()
        .filter(|w| *w >= 1.0)?;
    let function = match ds.string(tags::VOILUT_FUNCTION).as_deref() {
        Some("LINEAR_EXACT") => Function::LinearExact,
        Some("SIGMOID") => Function::Sigmoid,
        _ => Function::Linear,
    };
    Some(Window {
        center: c,
        width: w,
        function,
    })
}

/// Renders one frame of Float or Double Float Pixel Data (from
/// [`radveil_pixeldata::float::decode_float_frame`]: little-endian values, one sample per
/// pixel). The values are the image's (no Modality LUT applies to them); the window is the
/// one asked for, else the image's own, else the finite values' minimum to maximum
/// (LINEAR_EXACT, so that the lowest value is black and the highest white however small
/// their range). NaN is black, infinities the ends.
pub fn render_float(
    ds: &DataSet<'_>,
    kind: radveil_pixeldata::float::FloatKind,
    d: &ImagePixel,
    frame: &[u8],
    window: Option<Window>,
) -> Result<Image, String> {
    if d.samples_per_pixel != 1 {
        return Err("float images of more than one sample are not rendered".into());
    }
    let values = || frame.chunks_exact(kind.bytes()).map(|c| kind.value(c));
    let window = window.or_else(|| own_window(ds)).unwrap_or_else(|| {
        let (lo, hi) = values()
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 0.0) };
        let width = hi - lo;
        Window {
            center: lo + width / 2.0,
            width: if width > 0.0 && width.is_finite() {
                width
            } else {
                1.0
            },
            function: Function::LinearExact,
        }
    });
    let invert = d.photometric_interpretation == "MONOCHROME1";
    let pixels = values()
        .map(|v| {
            let y = window.apply(v);
            if invert {
                255 - y
            } else {
                y
            }
        })
        .collect();
    Ok(Image {
        width: u32::from(d.columns),
        height: u32::from(d.rows),
        samples: 1,
        pixels,
    })
}

/// Renders one decoded frame (from [`radveil_pixeldata::decode_frame`]) of a data set.
pub fn render(
    ds: &DataSet<'_>,
    d: &ImagePixel,
    frame: &[u8],
    window: Option<Window>,
) -> Result<Image, String> {
    let width = u32::from(d.columns);
    let height = u32::from(d.rows);
    let pi = d.photometric_interpretation.as_str();
    match (d.samples_per_pixel, pi) {
        (1, "MONOCHROME1" | "MONOCHROME2") => {
            let slope = ds_numbers(ds, tags::RESCALE_SLOPE)
                .first()
                .copied()
                .unwrap_or(1.0);
            let intercept = ds_numbers(ds, tags::RESCALE_INTERCEPT)
                .first()
                .copied()
                .unwrap_or(0.0);
            let read = grey_reader(d)?;
            let bps = d.bytes_per_sample();
            // The Modality LUT, computed per value (no copy of the frame as numbers).
            let modality = |c: &[u8]| read(c) * slope + intercept;
            let window = window.or_else(|| own_window(ds)).unwrap_or_else(|| {
                let (lo, hi) = frame
                    .chunks_exact(bps)
                    .map(modality)
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                        (lo.min(v), hi.max(v))
                    });
                let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 0.0) };
                Window {
                    center: (lo + hi) / 2.0,
                    width: (hi - lo).max(1.0),
                    function: Function::LinearExact,
                }
            });
            let invert = pi == "MONOCHROME1";
            let pixels = frame
                .chunks_exact(bps)
                .map(|c| {
                    let y = window.apply(modality(c));
                    if invert {
                        255 - y
                    } else {
                        y
                    }
                })
                .collect();
            Ok(Image {
                width,
                height,
                samples: 1,
                pixels,
            })
        }
        (3, "RGB" | "YBR_FULL" | "YBR_FULL_422") => {
            let bps = d.bytes_per_sample();
            if !(1..=2).contains(&bps) {
                return Err(format!(
                    "{}-bit colour images are not rendered",
                    d.bits_allocated
                ));
            }
            let shift = u32::from(d.bits_stored.clamp(8, 16)) - 8;
            let samples: Vec<u8> = frame
                .chunks_exact(bps)
                .map(|c| {
                    let v = if bps == 2 {
                        u32::from(u16::from_le_bytes([c[0], c[1]]))
                    } else {
                        u32::from(c[0])
                    };
                    (v >> shift).min(255) as u8
                })
                .collect();
            let pixels = if pi == "RGB" {
                samples
            } else {
                samples
                    .chunks_exact(3)
                    .flat_map(|p| ybr_to_rgb(p[0], p[1], p[2]))
                    .collect()
            };
            Ok(Image {
                width,
                height,
                samples: 3,
                pixels,
            })
        }
        _ => Err("this photometric interpretation is not rendered".into()),
    }
}

/// YBR_FULL to RGB (PS3.3 C.7.6.3.1.2, the inverse of its equations).
fn ybr_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let (y, cb, cr) = (f64::from(y), f64::from(cb) - 128.0, f64::from(cr) - 128.0);
    let c = |v: f64| v.round().clamp(0.0, 255.0) as u8;
    [
        c(y + 1.402 * cr),
        c(y - 0.344_136 * cb - 0.714_136 * cr),
        c(y + 1.772 * cb),
    ]
}

/// Scales an image to fit `(columns, rows)`, keeping its aspect (nearest neighbour).
pub fn fit(img: Image, (vw, vh): (u32, u32)) -> Image {
    if img.width == 0 || img.height == 0 {
        return img;
    }
    let (w, h) = (u64::from(img.width), u64::from(img.height));
    let (vw, vh) = (u64::from(vw.max(1)), u64::from(vh.max(1)));
    // The largest size of the same aspect within the viewport.
    let (ow, oh) = if w * vh <= h * vw {
        ((w * vh / h).max(1), vh)
    } else {
        (vw, (h * vw / w).max(1))
    };
    if (ow, oh) == (w, h) {
        return img;
    }
    let s = usize::from(img.samples);
    let mut out = Vec::with_capacity((ow * oh) as usize * s);
    for y in 0..oh {
        let sy = (y * h / oh).min(h - 1);
        for x in 0..ow {
            let sx = (x * w / ow).min(w - 1);
            let at = ((sy * w + sx) as usize) * s;
            out.extend_from_slice(&img.pixels[at..at + s]);
        }
    }
    Image {
        width: ow as u32,
        height: oh as u32,
        samples: img.samples,
        pixels: out,
    }
}

/// Encodes an image.
pub fn encode(img: &Image, kind: Rendered, quality: u8) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    match kind {
        Rendered::Png => {
            let mut e = png::Encoder::new(&mut out, img.width, img.height);
            e.set_color(if img.samples == 3 {
                png::ColorType::Rgb
            } else {
                png::ColorType::Grayscale
            });
            e.set_depth(png::BitDepth::Eight);
            let mut w = e.write_header().map_err(|e| e.to_string())?;
            w.write_image_data(&img.pixels).map_err(|e| e.to_string())?;
            w.finish().map_err(|e| e.to_string())?;
        }
        Rendered::Jpeg => {
            let (w, h) = (
                u16::try_from(img.width).map_err(|_| "too wide for JPEG")?,
                u16::try_from(img.height).map_err(|_| "too tall for JPEG")?,
            );
            let color = if img.samples == 3 {
                jpeg_encoder::ColorType::Rgb
            } else {
                jpeg_encoder::ColorType::Luma
            };
            jpeg_encoder::Encoder::new(&mut out, quality)
                .encode(&img.pixels, w, h, color)
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(out)
}

/// Renders frame `index` (from 0) of a Part 10 file. CPU-bound: run off the async threads.
pub fn render_file(
    bytes: &[u8],
    index: usize,
    kind: Rendered,
    opts: &Options,
) -> Result<Vec<u8>, Refused> {
    let mut inflated = Vec::new();
    let (meta, ds, enc) = read_stored(bytes, &mut inflated)?;
    let count = frame_count(&ds)?;
    if index >= count {
        return Err(Refused(
            StatusCode::NOT_FOUND,
            format!(
                "frame {} of an image of {count} frames",
                index.saturating_add(1)
            ),
        ));
    }
    let ts = meta
        .transfer_syntax
        .trim_end_matches(['\0', ' '])
        .to_string();
    render_frame(&ds, enc, &ts, index, kind, opts)
}

/// A stored instance, read.
fn read_stored<'a>(
    bytes: &'a [u8],
    inflated: &'a mut Vec<u8>,
) -> Result<(p10::FileMeta<'a>, DataSet<'a>, Encoding), Refused> {
    p10::read_file(bytes, inflated, Limits::default()).map_err(|e| {
        Refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("a stored instance does not read: {e}"),
        )
    })
}

/// The number of frames of an image (integer or float pixel data); 404 for an instance
/// without pixel data.
fn frame_count(ds: &DataSet<'_>) -> Result<usize, Refused> {
    if ds.get(p10::PIXEL_DATA).is_none() && radveil_pixeldata::float::float_pixel_data(ds).is_none()
    {
        return Err(Refused(
            StatusCode::NOT_FOUND,
            "the instance has no pixel data".into(),
        ));
    }
    radveil_pixeldata::number_of_frames(ds)
        .map_err(|e| Refused(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Renders frame `index` of a data set read from a stored instance, which has that frame.
fn render_frame(
    ds: &DataSet<'_>,
    enc: Encoding,
    ts: &str,
    index: usize,
    kind: Rendered,
    opts: &Options,
) -> Result<Vec<u8>, Refused> {
    let budget = radveil_pixeldata::default_budget();
    // The frame's memory is held (`_frame`) while the image made from it is, whose own
    // memory (8-bit samples, and the scaled copy) is taken without waiting: a worker holding
    // memory never waits for more.
    let image_memory = |d: &ImagePixel| {
        let out = d
            .pixels_per_frame()
            .saturating_mul(usize::from(d.samples_per_pixel).min(3));
        let scaled = opts.viewport.map_or(0, |(w, h)| {
            (w as usize).saturating_mul(h as usize).saturating_mul(3)
        });
        budget
            .try_reserve(out.saturating_add(scaled) as u64)
            .map_err(|e| pixel_refusal(e.into()))
    };
    let unrendered = |why| Refused(StatusCode::NOT_ACCEPTABLE, why);
    let (mut img, _frame, _image) = if ds.get(p10::PIXEL_DATA).is_some() {
        let (d, frame, grant) =
            radveil_pixeldata::decode_frame(ds, enc, ts, index, budget).map_err(pixel_refusal)?;
        let image = image_memory(&d)?;
        let img = render(ds, &d, &frame, opts.window).map_err(unrendered)?;
        (img, grant, image)
    } else {
        let (fk, d, frame, grant) =
            radveil_pixeldata::float::decode_float_frame(ds, enc, index, budget)
                .map_err(pixel_refusal)?;
        let image = image_memory(&d)?;
        let img = render_float(ds, fk, &d, &frame, opts.window).map_err(unrendered)?;
        (img, grant, image)
    };
    if let Some(v) = opts.viewport {
        img = fit(img, v);
    }
    encode(&img, kind, opts.quality.unwrap_or(DEFAULT_QUALITY))
        .map_err(|why| Refused(StatusCode::INTERNAL_SERVER_ERROR, why))
}

/// The response of a rendering.
fn answer(r: Result<Vec<u8>, Refused>, kind: Rendered) -> Response {
    match r {
        Ok(body) => {
            let mut resp = Response::new(Body::from(body));
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind.media()));
            resp
        }
        Err(Refused(status, why)) if status == StatusCode::INTERNAL_SERVER_ERROR => {
            tracing::error!(error = %why, "rendering a stored instance");
            error(status, "a stored instance could not be rendered")
        }
        Err(Refused(status, why)) => error(status, &why),
    }
}

/// Renders frame `index` of one instance the caller may see.
async fn render_instance(
    state: &AppState,
    scope: &Scope,
    headers: &HeaderMap,
    (s, se, i): (Handle, Handle, Handle),
    index: usize,
    opts: Options,
) -> Response {
    let kind = match accepted(headers.get(header::ACCEPT)) {
        Ok(k) => k,
        Err(why) => return error(StatusCode::NOT_ACCEPTABLE, &why),
    };
    let bytes = match open_instance(state, scope, s, se, i).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let done = tokio::task::spawn_blocking(move || render_file(&bytes, index, kind, &opts)).await;
    match done {
        Ok(r) => {
            if r.is_ok() {
                state.metrics.retrieved(1);
            }
            answer(r, kind)
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
}

/// The options of a thumbnail: as asked, fitting [`THUMBNAIL`] unless a viewport is given.
fn thumbnail_options(q: &HashMap<String, String>) -> Result<Options, String> {
    let mut o = options(q)?;
    o.viewport.get_or_insert((THUMBNAIL, THUMBNAIL));
    Ok(o)
}

fn bad_request(why: &str) -> Response {
    error(StatusCode::BAD_REQUEST, why)
}

pub(crate) async fn instance_rendered(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path((study, series, inst)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let h = handles(&state, &study, &series, &inst);
    let r = match options(&q) {
        Ok(o) => render_instance(&state, &scope, &headers, h, 0, o).await,
        Err(why) => bad_request(&why),
    };
    crate::audit::study(&state, &scope, &study, Some(&series), Some(&inst), None).attach(r)
}

pub(crate) async fn instance_thumbnail(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path((study, series, inst)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let h = handles(&state, &study, &series, &inst);
    let r = match thumbnail_options(&q) {
        Ok(o) => render_instance(&state, &scope, &headers, h, 0, o).await,
        Err(why) => bad_request(&why),
    };
    crate::audit::study(&state, &scope, &study, Some(&series), Some(&inst), None).attach(r)
}

pub(crate) async fn frame_rendered(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path((study, series, inst, list)): Path<(String, String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let h = handles(&state, &study, &series, &inst);
    let r = match (frame_list(&list), options(&q)) {
        (Ok(n), Ok(o)) if n.len() == 1 => {
            render_instance(&state, &scope, &headers, h, n[0].saturating_sub(1), o).await
        }
        (Ok(_), Ok(_)) => error(StatusCode::BAD_REQUEST, "one frame is rendered per request"),
        (Err(why), _) | (_, Err(why)) => bad_request(&why),
    };
    crate::audit::study(&state, &scope, &study, Some(&series), Some(&inst), None).attach(r)
}

pub(crate) async fn series_thumbnail(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path((study, series)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let s = handle(&state, Level::Study, &study);
    let se = handle(&state, Level::Series, &series);
    let r = match thumbnail_options(&q) {
        Ok(o) => first_rendered(&state, &scope, &headers, s, Some(se), o).await,
        Err(why) => bad_request(&why),
    };
    crate::audit::study(&state, &scope, &study, Some(&series), None, None).attach(r)
}

pub(crate) async fn study_thumbnail(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path(study): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let s = handle(&state, Level::Study, &study);
    let r = match thumbnail_options(&q) {
        Ok(o) => first_rendered(&state, &scope, &headers, s, None, o).await,
        Err(why) => bad_request(&why),
    };
    crate::audit::study(&state, &scope, &study, None, None, None).attach(r)
}

/// The media type a rendered study or series is asked for: `multipart/related` with
/// `type="image/jpeg"` (the default, also for `image/*`, `*/*` or no type) or
/// `type="image/png"`. Single-part media types are ignored, as PS3.18 §10.4.4 has origin
/// servers do for resources of more than one response item: when nothing else is
/// acceptable, the request is refused (406).
pub fn accepted_multipart(accept: Option<&HeaderValue>) -> Result<Rendered, String> {
    let Some(accept) = accept else {
        return Ok(Rendered::Jpeg);
    };
    let accept = accept
        .to_str()
        .map_err(|_| "the Accept header is not text".to_string())?;
    for range in split_unquoted(accept, ',') {
        let (media, params) = media_type(&range);
        let kind = params
            .iter()
            .find(|(k, _)| k == "type")
            .map(|(_, v)| v.to_ascii_lowercase());
        match (media.as_str(), kind.as_deref()) {
            ("*/*", _) => return Ok(Rendered::Jpeg),
            ("multipart/related", None | Some("image/jpeg" | "image/*" | "*/*")) => {
                return Ok(Rendered::Jpeg)
            }
            ("multipart/related", Some("image/png")) => return Ok(Rendered::Png),
            _ => {}
        }
    }
    Err("a rendered study or series is offered as multipart/related; type=\"image/jpeg\" or type=\"image/png\" (single-part media types are for single images: PS3.18 10.4.4)".into())
}

/// One part of a rendered study or series: a rendered frame and where it is rendered alone
/// (its Content-Location, under the service's base URL).
struct Part {
    location: String,
    image: Vec<u8>,
}

/// The bytes of `part` in a multipart body with `boundary` and parts of `media`.
fn part_bytes(part: &Part, boundary: &str, media: &str) -> Bytes {
    streamed::part(
        boundary,
        &[
            ("Content-Type", media),
            ("Content-Location", &part.location),
        ],
        &part.image,
    )
}

/// What [`render_frames`] hands each frame to: the data set, the frame's index (from 0),
/// the number of frames and the encoded image; false stops.
pub(crate) type EachFrame<'f> = dyn FnMut(&DataSet<'_>, usize, usize, Vec<u8>) -> bool + 'f;

/// Renders every frame of a stored instance with `opts` in turn, handing `each` the data
/// set, the frame's index (from 0), the number of frames and the encoded image as each is
/// made (one frame's memory held at a time); stops early, without error, when `each` says
/// so. An instance without pixel data gives none. CPU-bound: run off the async threads.
/// (Rendered studies and series, and the patient's download, [`crate::download`].)
pub(crate) fn render_frames(
    bytes: &[u8],
    kind: Rendered,
    opts: &Options,
    each: &mut EachFrame<'_>,
) -> Result<(), Refused> {
    let mut inflated = Vec::new();
    let (meta, ds, enc) = read_stored(bytes, &mut inflated)?;
    let count = match frame_count(&ds) {
        Ok(n) => n,
        Err(Refused(StatusCode::NOT_FOUND, _)) => return Ok(()),
        Err(e) => return Err(e),
    };
    let ts = meta
        .transfer_syntax
        .trim_end_matches(['\0', ' '])
        .to_string();
    for index in 0..count {
        let image = render_frame(&ds, enc, &ts, index, kind, opts)?;
        if !each(&ds, index, count, image) {
            break;
        }
    }
    Ok(())
}

/// Renders every frame of a stored instance, handing each to `each` as it is made (one
/// frame's memory held at a time); stops early, without error, when `each` says so. An
/// instance without pixel data gives no part. CPU-bound: run off the async threads.
fn render_instance_frames(
    bytes: &[u8],
    base: &str,
    kind: Rendered,
    opts: &Options,
    each: &mut dyn FnMut(Part) -> bool,
) -> Result<(), Refused> {
    let mut instance = None;
    render_frames(bytes, kind, opts, &mut |ds, index, count, image| {
        // A UID is digits and dots (PS3.5 9.1); anything else (a hostile file's line break)
        // never reaches the part's headers.
        let instance = instance.get_or_insert_with(|| {
            let uid = |tag| {
                ds.string(tag)
                    .map(|s| s.trim().to_string())
                    .filter(|s| s.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
                    .unwrap_or_default()
            };
            format!(
                "{base}/studies/{}/series/{}/instances/{}",
                uid(tags::STUDY_INSTANCE_UID),
                uid(tags::SERIES_INSTANCE_UID),
                uid(tags::SOP_INSTANCE_UID)
            )
        });
        let location = if count == 1 {
            format!("{instance}/rendered")
        } else {
            format!("{instance}/frames/{}/rendered", index.saturating_add(1))
        };
        each(Part { location, image })
    })
}

/// A rendered study or series (PS3.18 §10.4.1.1.3): every frame of every instance the
/// caller may see that has pixel data, rendered, as `multipart/related` parts with the
/// Content-Location of each rendered alone, in the index's order. Instances without pixel
/// data (reports, presentation states) have no rendered image and are left out; an image
/// that cannot be rendered fails the request (406 with why, or, once parts were sent, a
/// response ended short).
///
/// Bounded: each frame is decoded and rendered within the pixel memory budget, one at a
/// time, and sent as it is made, at most [`streamed::PARTS_IN_FLIGHT`] waiting for the client. The
/// first part is made before the response starts, so a study with nothing to render (404),
/// an image that is not rendered (406) or no memory now (503) gets its status.
async fn render_many(
    state: &AppState,
    scope: &Scope,
    headers: &HeaderMap,
    study: Handle,
    series: Option<Handle>,
    opts: Options,
) -> Response {
    let kind = match accepted_multipart(headers.get(header::ACCEPT)) {
        Ok(k) => k,
        Err(why) => return error(StatusCode::NOT_ACCEPTABLE, &why),
    };
    let rows = match visible_rows(state, scope, study, series).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let base = base_url(state, headers);
    let boundary = crate::multipart::new_boundary();
    let ct = format!(
        "multipart/related; type=\"{}\"; boundary={boundary}",
        kind.media()
    );
    let state = state.clone();
    let made = streamed::respond(&ct, move |tx: streamed::Parts| async move {
        let opts = std::sync::Arc::new(opts);
        let mut sent = 0usize;
        for r in &rows {
            if tx.is_closed() {
                // The client is gone.
                return;
            }
            let bytes = match state.store.open_row(r).await {
                Ok(b) => b,
                Err(e) => {
                    let why = format!("a stored instance does not open: {e}");
                    let _ = tx
                        .send(Err(Refused(StatusCode::INTERNAL_SERVER_ERROR, why)))
                        .await;
                    return;
                }
            };
            let (part_tx, opts, base, boundary) =
                (tx.clone(), opts.clone(), base.clone(), boundary.clone());
            let done = tokio::task::spawn_blocking(move || {
                let mut n = 0usize;
                let r = render_instance_frames(&bytes, &base, kind, &opts, &mut |p| {
                    n = n.saturating_add(1);
                    let part = part_bytes(&p, &boundary, kind.media());
                    part_tx.blocking_send(Ok(part)).is_ok()
                });
                (r, n)
            })
            .await;
            let refused = match done {
                Ok((Ok(()), n)) => {
                    if n > 0 {
                        state.metrics.retrieved(1);
                    }
                    sent = sent.saturating_add(n);
                    continue;
                }
                Ok((Err(refused), _)) => refused,
                Err(_) => Refused(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into()),
            };
            let _ = tx.send(Err(refused)).await;
            return;
        }
        let last = if sent == 0 {
            Err(Refused(StatusCode::NOT_FOUND, "not found".into()))
        } else {
            Ok(streamed::close(&boundary))
        };
        let _ = tx.send(last).await;
    })
    .await;
    match made {
        Ok(resp) => resp,
        Err(refused) => answer(Err(refused), kind),
    }
}

pub(crate) async fn study_rendered(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path(study): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let s = handle(&state, Level::Study, &study);
    let r = match options(&q) {
        Ok(o) => render_many(&state, &scope, &headers, s, None, o).await,
        Err(why) => bad_request(&why),
    };
    crate::audit::study(&state, &scope, &study, None, None, None).attach(r)
}

pub(crate) async fn series_rendered(
    State(state): State<AppState>,
    Extension(scope): Extension<Scope>,
    Path((study, series)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let s = handle(&state, Level::Study, &study);
    let se = handle(&state, Level::Series, &series);
    let r = match options(&q) {
        Ok(o) => render_many(&state, &scope, &headers, s, Some(se), o).await,
        Err(why) => bad_request(&why),
    };
    crate::audit::study(&state, &scope, &study, Some(&series), None, None).attach(r)
}

/// Most instances tried for a series' or study's thumbnail before giving up (those
/// without pixel data are skipped).
const THUMBNAIL_TRIES: usize = 16;

/// The thumbnail of a study or series: its first instance (in the index's order) that
/// renders.
async fn first_rendered(
    state: &AppState,
    scope: &Scope,
    headers: &HeaderMap,
    study: Handle,
    series: Option<Handle>,
    opts: Options,
) -> Response {
    let rows = match visible_rows(state, scope, study, series).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let mut last = error(StatusCode::NOT_FOUND, "not found");
    for r in rows.iter().take(THUMBNAIL_TRIES) {
        let resp = render_instance(
            state,
            scope,
            headers,
            (r.study, r.series, r.instance),
            0,
            opts.clone(),
        )
        .await;
        if resp.status() != StatusCode::NOT_FOUND {
            return resp;
        }
        last = resp;
    }
    last
}

fn handles(state: &AppState, study: &str, series: &str, inst: &str) -> (Handle, Handle, Handle) {
    (
        handle(state, Level::Study, study),
        handle(state, Level::Series, series),
        handle(state, Level::Instance, inst),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_ps3_3_c_11_2_1_2() {
        let w = Window {
            center: 40.0,
            width: 400.0,
            function: Function::Linear,
        };
        assert_eq!(w.apply(-1000.0), 0);
        assert_eq!(w.apply(1000.0), 255);
        // The centre maps to the middle of the output range.
        assert_eq!(w.apply(39.5), 128);
        let e = Window {
            function: Function::LinearExact,
            ..w
        };
        assert_eq!(e.apply(40.0), 128);
        assert_eq!(e.apply(-160.0), 0);
        assert_eq!(e.apply(240.0), 255);
        let s = Window {
            function: Function::Sigmoid,
            ..w
        };
        assert_eq!(s.apply(40.0), 128);
        assert_eq!(window_param("40,400"), Ok(w));
        assert_eq!(window_param("40,400,linear-exact"), Ok(e));
        for bad in [
            "40",
            "40,0",
            "40,x",
            "40,400,cubic",
            "40,400,linear,1",
            "nan,4",
            "1,0.5",
        ] {
            assert!(window_param(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn viewports_keep_the_aspect() {
        let img = Image {
            width: 4,
            height: 2,
            samples: 1,
            pixels: (0..8).collect(),
        };
        let f = fit(img.clone(), (2, 2));
        assert_eq!((f.width, f.height), (2, 1));
        assert_eq!(f.pixels, vec![0, 2]);
        let f = fit(img, (8, 100));
        assert_eq!((f.width, f.height), (8, 4));
    }

    #[test]
    fn a_rendered_study_is_asked_for_as_multipart_only() {
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(accepted_multipart(None), Ok(Rendered::Jpeg));
        assert_eq!(accepted_multipart(Some(&h("*/*"))), Ok(Rendered::Jpeg));
        assert_eq!(
            accepted_multipart(Some(&h(r#"multipart/related; type="image/png""#))),
            Ok(Rendered::Png)
        );
        assert_eq!(
            accepted_multipart(Some(&h(
                r#"image/png, multipart/related; type="image/jpeg""#
            ))),
            Ok(Rendered::Jpeg)
        );
        assert_eq!(
            accepted_multipart(Some(&h("multipart/related"))),
            Ok(Rendered::Jpeg)
        );
        // Single-part types are for single images (PS3.18 10.4.4).
        for single in [
            "image/png",
            "image/jpeg",
            r#"multipart/related; type="image/gif""#,
        ] {
            assert!(accepted_multipart(Some(&h(single))).is_err(), "{single}");
        }
    }

    #[test]
    fn float_frames_render_from_their_finite_range() {
        use radveil_pixeldata::float::FloatKind;
        let ds = DataSet::default();
        let values = [-1.0f32, 0.0, 1.0, f32::NAN, f32::INFINITY, 3.0];
        let frame: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut px = DataSet::default();
        for (tag, v) in [
            (tags::ROWS, 2u16),
            (tags::COLUMNS, 3),
            (tags::BITS_ALLOCATED, 32),
        ] {
            px.put(p10::Element {
                tag,
                vr: p10::Vr::US,
                value: p10::Value::Bytes(v.to_le_bytes().to_vec().into()),
            });
        }
        px.put(p10::Element {
            tag: tags::FLOAT_PIXEL_DATA,
            vr: p10::Vr::OF,
            value: p10::Value::Bytes(frame.clone().into()),
        });
        let d = ImagePixel::from_dataset(&px, Encoding::ExplicitLittle).unwrap();
        let img = render_float(&ds, FloatKind::Float, &d, &frame, None).unwrap();
        // -1 .. 3 is black .. white; NaN black; +inf white.
        assert_eq!(img.pixels, vec![0, 64, 128, 0, 255, 255]);
        let w = Window {
            center: 0.0,
            width: 2.0,
            function: Function::LinearExact,
        };
        let img = render_float(&ds, FloatKind::Float, &d, &frame, Some(w)).unwrap();
        assert_eq!(img.pixels, vec![0, 128, 255, 0, 255, 255]);
    }

    #[test]
    fn accept_chooses_jpeg_or_png() {
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(accepted(None), Ok(Rendered::Jpeg));
        assert_eq!(accepted(Some(&h("image/png"))), Ok(Rendered::Png));
        assert_eq!(
            accepted(Some(&h("image/gif, image/png;q=0.5"))),
            Ok(Rendered::Png)
        );
        assert!(accepted(Some(&h("image/gif"))).is_err());
        let mut q = HashMap::new();
        q.insert("viewport".to_string(), "0,10".to_string());
        assert!(options(&q).is_err());
        q.insert("viewport".to_string(), "64,64".to_string());
        q.insert("quality".to_string(), "101".to_string());
        assert!(options(&q).is_err());
    }
}
