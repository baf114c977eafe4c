//! A self-contained JPEG-LS decoder (ITU-T T.87 | ISO/IEC 14495-1), lossless and
//! near-lossless.
//!
//! radveil binds a signature or ledger entry to the *pixel values* of a DICOM image, not to
//! the bytes of one particular encoding, so that a transcoding between transfer syntaxes
//! (for example JPEG-LS Lossless to Explicit VR Little Endian) does not break the binding.
//! For that it has to decode JPEG-LS encapsulated pixel data itself. This module does only
//! that: it turns one JPEG-LS codestream (one DICOM frame, SOI .. EOI) into sample values.
//!
//! Supported: SOF55 frames of 1 to 4 components with 2 to 16 bit precision; regular and run
//! mode coding with the context modelling of T.87 Annex A; lossless and near-lossless
//! (NEAR > 0) scans; interleave modes none (one scan per component), line and sample;
//! preset coding parameters (LSE type 1); restart intervals (DRI, RSTm); COM and APPn
//! segments are skipped. Not supported (rejected with an error): mapping tables (LSE types
//! 2 and 3, Tm != 0), oversize dimensions (LSE type 4), point transform, component
//! subsampling.
//!
//! Interoperability notes. Output was checked sample for sample against DCMTK (`dcmdjpls`)
//! and CharLS for lossless and near-lossless streams of every interleave mode. An LSE
//! MAXVAL below 2^P - 1 is honoured as T.87 defines (RANGE and clamping follow MAXVAL);
//! CharLS-based codecs (DCMTK, GDCM) use 2^P - 1 there instead, so a stream that CharLS was
//! explicitly asked to write with a smaller MAXVAL decodes differently (DICOM encoders keep
//! MAXVAL = 2^P - 1). After a restart marker the context variables and RUNindex are reset
//! and the previous line stays the reference for prediction; no encoder at hand writes
//! restart intervals, so that part is checked only structurally.
//!
//! The decoder is written for untrusted input: every malformed, truncated or oversized
//! codestream yields an `Err`, never a panic, and memory grows only with decoded lines.

/// A decoded JPEG-LS image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Number of columns (samples per line).
    pub width: usize,
    /// Number of lines.
    pub height: usize,
    /// Number of components (1 to 4).
    pub components: usize,
    /// Sample precision in bits (2..=16).
    pub precision: u8,
    /// Samples, row-major, components interleaved per pixel (R,G,B,R,G,B,... for 3
    /// components), whatever the interleave mode in the stream.
    pub samples: Vec<u16>,
}

/// Largest image accepted, in samples (width x height x components).
const MAX_SAMPLES: usize = 1 << 28;
/// Largest number of components accepted.
const MAX_COMPONENTS: usize = 4;

/// Run length order table J of T.87 A.2.1.
const J: [u32; 32] = [
    0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 9, 10, 11, 12, 13,
    14, 15,
];

/// Number of regular mode contexts.
const REGULAR_CONTEXTS: usize = 365;
const MIN_C: i32 = -128;
const MAX_C: i32 = 127;

// Marker codes (second byte after 0xFF).
const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;
const DRI: u8 = 0xDD;
const SOF55: u8 = 0xF7;
const LSE: u8 = 0xF8;
const COM: u8 = 0xFE;

type Res<T> = Result<T, String>;

fn err<T>(msg: &str) -> Res<T> {
    Err(msg.to_string())
}

/// Decodes one JPEG-LS codestream (SOI .. EOI). Errors are plain messages; never panics on
/// any input.
///
/// Bytes after the EOI marker (such as the padding of an odd-length DICOM fragment) are
/// ignored.
// No arithmetic on input here beyond what `Decoder` documents.
#[allow(clippy::arithmetic_side_effects)]
pub fn decode(data: &[u8]) -> Result<Image, String> {
    Decoder {
        data,
        frame: None,
        preset: Preset::default(),
        restart_interval: 0,
        planes: Vec::new(),
        done: Vec::new(),
    }
    .run()
}

/// Frame header (SOF55) contents.
#[derive(Debug, Clone)]
struct Frame {
    width: usize,
    height: usize,
    precision: u8,
    ids: Vec<u8>,
}

/// Preset coding parameters from an LSE type 1 segment; 0 means "default".
#[derive(Debug, Clone, Copy, Default)]
struct Preset {
    maxval: u32,
    t1: u32,
    t2: u32,
    t3: u32,
    reset: u32,
}

struct Decoder<'a> {
    data: &'a [u8],
    frame: Option<Frame>,
    preset: Preset,
    restart_interval: usize,
    /// One plane per frame component, grown line by line.
    planes: Vec<Vec<u16>>,
    /// Whether each component's scan has been decoded.
    done: Vec<bool>,
}

// Positions are inside the codestream (at most `isize::MAX` bytes) plus a marker's few
// bytes or a checked 16-bit segment length; segment offsets are bounded by `body.len()` and
// by the component count (at most 4); width and height are at most 65535 and their product
// with the component count is checked against MAX_SAMPLES before the planes grow. None of
// it can overflow.
#[allow(clippy::arithmetic_side_effects)]
impl<'a> Decoder<'a> {
    fn byte(&self, pos: usize) -> Res<u8> {
        match self.data.get(pos) {
            Some(&b) => Ok(b),
            None => err("truncated codestream"),
        }
    }

    fn u16_at(&self, pos: usize) -> Res<u16> {
        Ok(u16::from(self.byte(pos)?) << 8 | u16::from(self.byte(pos.saturating_add(1))?))
    }

    /// Returns the body of the marker segment whose length field is at `pos`, and the
    /// position after the segment.
    fn segment(&self, pos: usize) -> Res<(&'a [u8], usize)> {
        let len = usize::from(self.u16_at(pos)?);
        if len < 2 {
            return err("invalid marker segment length");
        }
        let end = pos.saturating_add(len);
        match self.data.get(pos + 2..end) {
            Some(body) => Ok((body, end)),
            None => err("truncated marker segment"),
        }
    }

    /// Reads the marker at `pos` (0xFF, optional 0xFF fill bytes, code); returns the code and
    /// the position after it.
    fn marker(&self, mut pos: usize) -> Res<(u8, usize)> {
        if self.byte(pos)? != 0xFF {
            return err("expected a marker");
        }
        while self.byte(pos)? == 0xFF {
            pos += 1;
        }
        let code = self.byte(pos)?;
        if code == 0 {
            return err("expected a marker");
        }
        Ok((code, pos + 1))
    }

    fn run(mut self) -> Res<Image> {
        if self.data.len() < 2 || self.data[0] != 0xFF || self.data[1] != SOI {
            return err("missing SOI marker");
        }
        let mut pos = 2;
        loop {
            let (code, after) = self.marker(pos)?;
            match code {
                EOI => break,
                SOF55 => {
                    let (body, next) = self.segment(after)?;
                    self.parse_frame(body)?;
                    pos = next;
                }
                LSE => {
                    let (body, next) = self.segment(after)?;
                    self.parse_lse(body)?;
                    pos = next;
                }
                DRI => {
                    let (body, next) = self.segment(after)?;
                    self.restart_interval = match body.len() {
                        2..=4 => body.iter().fold(0usize, |v, &b| v << 8 | usize::from(b)),
                        _ => return err("invalid DRI segment"),
                    };
                    pos = next;
                }
                SOS => {
                    let (body, next) = self.segment(after)?;
                    pos = self.scan(body, next)?;
                }
                COM | 0xE0..=0xEF => {
                    let (_, next) = self.segment(after)?;
                    pos = next;
                }
                SOI => return err("unexpected SOI marker"),
                0xD0..=0xD7 => return err("unexpected restart marker"),
                0xC0..=0xCF => return err("not a JPEG-LS codestream (SOFn of ITU-T T.81)"),
                other => return Err(format!("unsupported marker 0xFF{other:02X}")),
            }
        }
        let Some(frame) = self.frame else {
            return err("no frame header (SOF55)");
        };
        if self.done.iter().any(|d| !d) {
            return err("a component has no scan");
        }
        let nc = frame.ids.len();
        let samples = if nc == 1 {
            self.planes.pop().unwrap_or_default()
        } else {
            let count = frame.width * frame.height;
            let mut out = Vec::with_capacity(count * nc);
            for i in 0..count {
                for plane in &self.planes {
                    out.push(plane.get(i).copied().unwrap_or(0));
                }
            }
            out
        };
        Ok(Image {
            width: frame.width,
            height: frame.height,
            components: nc,
            precision: frame.precision,
            samples,
        })
    }

    fn parse_frame(&mut self, body: &[u8]) -> Res<()> {
        if self.frame.is_some() {
            return err("more than one frame header");
        }
        if body.len() < 6 {
            return err("truncated SOF55 segment");
        }
        let precision = body[0];
        let height = usize::from(u16::from(body[1]) << 8 | u16::from(body[2]));
        let width = usize::from(u16::from(body[3]) << 8 | u16::from(body[4]));
        let nc = usize::from(body[5]);
        if !(2..=16).contains(&precision) {
            return Err(format!("unsupported precision {precision}"));
        }
        if width == 0 || height == 0 {
            return err("zero width or height (LSE type 4 dimensions unsupported)");
        }
        if nc == 0 || nc > MAX_COMPONENTS {
            return Err(format!("unsupported component count {nc}"));
        }
        if body.len() != 6 + 3 * nc {
            return err("invalid SOF55 segment length");
        }
        match width.checked_mul(height).and_then(|v| v.checked_mul(nc)) {
            Some(v) if v <= MAX_SAMPLES => {}
            _ => return err("image too large"),
        }
        let mut ids = Vec::with_capacity(nc);
        for c in 0..nc {
            let id = body[6 + 3 * c];
            if ids.contains(&id) {
                return err("duplicate component identifier");
            }
            if body[7 + 3 * c] != 0x11 {
                return err("component subsampling is not supported");
            }
            ids.push(id);
        }
        self.planes = vec![Vec::new(); nc];
        self.done = vec![false; nc];
        self.frame = Some(Frame {
            width,
            height,
            precision,
            ids,
        });
        Ok(())
    }

    fn parse_lse(&mut self, body: &[u8]) -> Res<()> {
        match body.first() {
            Some(1) => {}
            Some(2 | 3) => return err("mapping tables (LSE type 2/3) are not supported"),
            Some(4) => return err("oversize image dimensions (LSE type 4) are not supported"),
            _ => return err("invalid LSE segment"),
        }
        if body.len() != 11 {
            return err("invalid LSE type 1 segment length");
        }
        let v = |i: usize| u32::from(body[i]) << 8 | u32::from(body[i + 1]);
        self.preset = Preset {
            maxval: v(1),
            t1: v(3),
            t2: v(5),
            t3: v(7),
            reset: v(9),
        };
        Ok(())
    }

    /// Decodes the scan whose SOS header body is `header` and whose entropy-coded data starts
    /// at `start`; returns the position of the marker that follows the scan.
    fn scan(&mut self, header: &[u8], start: usize) -> Res<usize> {
        let Some(frame) = self.frame.clone() else {
            return err("SOS before SOF55");
        };
        let ns = usize::from(*header.first().unwrap_or(&0));
        if ns == 0 || ns > frame.ids.len() || header.len() != 4 + 2 * ns {
            return err("invalid SOS segment");
        }
        let mut comps = Vec::with_capacity(ns);
        for i in 0..ns {
            let id = header[1 + 2 * i];
            let Some(c) = frame.ids.iter().position(|&x| x == id) else {
                return err("scan names an unknown component");
            };
            if self.done[c] || comps.contains(&c) {
                return err("component coded twice");
            }
            if header[2 + 2 * i] != 0 {
                return err("mapping tables are not supported");
            }
            comps.push(c);
        }
        let near = u32::from(header[1 + 2 * ns]);
        let ilv = header[2 + 2 * ns];
        if header[3 + 2 * ns] != 0 {
            return err("point transform is not supported");
        }
        let mode = match (ns, ilv) {
            (1, _) => Interleave::None,
            (_, 1) => Interleave::Line,
            (_, 2) => Interleave::Sample,
            (_, 0) => return err("several components in a non-interleaved scan"),
            _ => return err("invalid interleave mode"),
        };
        let params = Params::new(frame.precision, near, &self.preset)?;
        for &c in &comps {
            self.done[c] = true;
        }
        let mut scan = Scan::new(params, frame.width, ns);
        let height = frame.height;
        let width = frame.width;
        let mut seg_end = find_marker(self.data, start);
        let mut reader = BitReader::new(&self.data[start..seg_end]);
        let mut rst_count = 0usize;
        let capacity = (width * height).min(1 << 20);
        for &c in &comps {
            self.planes[c].reserve(capacity);
        }
        for y in 0..height {
            if self.restart_interval > 0 && y > 0 && y % self.restart_interval == 0 {
                reader.check()?;
                let (code, after) = self.marker(seg_end)?;
                if usize::from(code) != 0xD0 + rst_count % 8 {
                    return err("missing or out-of-order restart marker");
                }
                rst_count += 1;
                seg_end = find_marker(self.data, after);
                reader = BitReader::new(&self.data[after..seg_end]);
                scan.reset();
            }
            scan.start_line();
            match mode {
                Interleave::None => scan.line(&mut reader, 0)?,
                Interleave::Line => {
                    for i in 0..ns {
                        scan.line(&mut reader, i)?;
                    }
                }
                Interleave::Sample => scan.line_interleaved(&mut reader)?,
            }
            reader.check()?;
            for (i, &c) in comps.iter().enumerate() {
                let cur = &scan.cur[i];
                self.planes[c].extend(cur[1..=width].iter().map(|&v| v as u16));
            }
            scan.end_line();
        }
        Ok(seg_end)
    }
}

/// Position of the first marker (0xFF followed by a byte with its high bit set) at or
/// after `from`, or the data length when there is none.
// `i` stays below `data.len()`.
#[allow(clippy::arithmetic_side_effects)]
fn find_marker(data: &[u8], from: usize) -> usize {
    let mut i = from;
    while i + 1 < data.len() {
        if data[i] == 0xFF && data[i + 1] & 0x80 != 0 {
            return i;
        }
        i += 1;
    }
    data.len()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interleave {
    None,
    Line,
    Sample,
}

/// Coding parameters of one scan (T.87 A.2.1 and C.2.4.1).
#[derive(Debug, Clone, Copy)]
struct Params {
    maxval: i32,
    near: i32,
    range: i32,
    qbpp: u32,
    limit: u32,
    reset: i32,
    t1: i32,
    t2: i32,
    t3: i32,
}

/// Number of bits needed for values 0..n-1, i.e. ceil(log2(n)) for n >= 1.
// `n - 1` with n >= 2; `32 - leading_zeros` with leading_zeros <= 32.
#[allow(clippy::arithmetic_side_effects)]
fn ceil_log2(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

// Sample precision is at most 16 bits, so MAXVAL, NEAR (at most 255), RANGE and the
// thresholds all lie below 2^17: their sums and products here stay far inside i32/u32.
#[allow(clippy::arithmetic_side_effects)]
impl Params {
    fn new(precision: u8, near: u32, preset: &Preset) -> Res<Params> {
        let max_possible = (1u32 << precision) - 1;
        let maxval = if preset.maxval == 0 {
            max_possible
        } else if preset.maxval > max_possible {
            return err("MAXVAL exceeds the sample precision");
        } else {
            preset.maxval
        };
        if near > (maxval / 2).min(255) {
            return err("NEAR out of range");
        }
        let (m, n) = (maxval as i32, near as i32);
        let range = (m + 2 * n) / (2 * n + 1) + 1;
        let qbpp = ceil_log2(range as u32);
        let bpp = ceil_log2(maxval + 1).max(2);
        let limit = 2 * (bpp + bpp.max(8));
        // Default thresholds, C.2.4.1.1.
        let clamp = |i: i32, j: i32| if i > m || i < j { j } else { i };
        let (d1, d2, d3) = if m >= 128 {
            let factor = (m.min(4095) + 128) / 256;
            // FACTOR * (BASIC_T1 - 2) + 2 + 3 * NEAR, with BASIC_T1 = 3.
            let t1 = clamp(factor + 2 + 3 * n, n + 1);
            let t2 = clamp(factor * (7 - 3) + 3 + 5 * n, t1);
            let t3 = clamp(factor * (21 - 4) + 4 + 7 * n, t2);
            (t1, t2, t3)
        } else {
            let factor = 256 / (m + 1);
            let t1 = clamp((3 / factor + 3 * n).max(2), n + 1);
            let t2 = clamp((7 / factor + 5 * n).max(3), t1);
            let t3 = clamp((21 / factor + 7 * n).max(4), t2);
            (t1, t2, t3)
        };
        let pick = |v: u32, d: i32| if v == 0 { d } else { v as i32 };
        let t1 = pick(preset.t1, d1);
        let t2 = pick(preset.t2, d2);
        let t3 = pick(preset.t3, d3);
        if t1 < n + 1 || t1 > m || t2 < t1 || t2 > m || t3 < t2 || t3 > m {
            return err("invalid thresholds T1/T2/T3");
        }
        let reset = pick(preset.reset, 64);
        if reset < 3 || reset > m.max(255) {
            return err("invalid RESET");
        }
        Ok(Params {
            maxval: m,
            near: n,
            range,
            qbpp,
            limit,
            reset,
            t1,
            t2,
            t3,
        })
    }
}

/// MSB-first bit reader over one entropy-coded segment (no markers inside), undoing the
/// bit stuffing of T.87 A.1: after a 0xFF byte only the 7 low bits of the next byte count.
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    /// Bits, left-aligned; bits below the `nbits` valid ones are zero.
    acc: u64,
    nbits: u32,
    prev_ff: bool,
    /// Zero bits appended past the end of the data.
    overrun: u64,
}

// `nbits` stays within 0..=64 (filled to at most 64, consumed by at most 32), `pos` within
// the segment, and the zero-bit count saturates.
#[allow(clippy::arithmetic_side_effects)]
impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        BitReader {
            data,
            pos: 0,
            acc: 0,
            nbits: 0,
            prev_ff: false,
            overrun: 0,
        }
    }

    #[inline]
    fn fill(&mut self) {
        while self.nbits <= 56 {
            if let Some(&b) = self.data.get(self.pos) {
                self.pos += 1;
                if self.prev_ff {
                    self.acc |= u64::from(b & 0x7F) << (57 - self.nbits);
                    self.nbits += 7;
                } else {
                    self.acc |= u64::from(b) << (56 - self.nbits);
                    self.nbits += 8;
                }
                self.prev_ff = b == 0xFF;
            } else {
                self.nbits += 8;
                self.overrun = self.overrun.saturating_add(8);
            }
        }
    }

    /// Fails when bits past the end of the segment have been consumed.
    fn check(&self) -> Res<()> {
        if self.overrun > u64::from(self.nbits) {
            err("truncated entropy-coded data")
        } else {
            Ok(())
        }
    }

    /// Reads `n` (at most 32) bits.
    #[inline]
    fn bits(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        if self.nbits < n {
            self.fill();
        }
        let v = (self.acc >> (64 - n)) as u32;
        self.acc <<= n;
        self.nbits -= n;
        v
    }

    #[inline]
    fn bit(&mut self) -> bool {
        self.bits(1) == 1
    }

    /// Counts 0 bits up to and including the next 1 bit; returns the number of zeros, which
    /// must not exceed `max`.
    #[inline]
    fn unary(&mut self, max: u32) -> Res<u32> {
        let mut count = 0u32;
        if self.nbits < 32 {
            self.fill();
        }
        loop {
            let lz = self.acc.leading_zeros();
            if lz < self.nbits {
                count += lz;
                if count > max {
                    return err("invalid code (unary prefix too long)");
                }
                self.acc = (self.acc << lz) << 1;
                self.nbits -= lz + 1;
                return Ok(count);
            }
            count += self.nbits;
            self.acc = 0;
            self.nbits = 0;
            if count > max {
                return err("invalid code (unary prefix too long)");
            }
            self.fill();
        }
    }
}

/// Decoding state of one scan: context variables and the two line buffers per component.
struct Scan {
    p: Params,
    width: usize,
    /// Gradient quantization table for differences -T3..=T3, indexed by difference + T3.
    quant: Vec<i8>,
    a: [i64; REGULAR_CONTEXTS + 2],
    b: [i32; REGULAR_CONTEXTS],
    c: [i32; REGULAR_CONTEXTS],
    n: [i32; REGULAR_CONTEXTS + 2],
    nn: [i32; 2],
    /// RUNindex per component (only line interleaving uses more than one).
    run_index: [usize; MAX_COMPONENTS],
    /// Previous and current line per component, with one extra sample at each end.
    prev: Vec<Vec<i32>>,
    cur: Vec<Vec<i32>>,
}

// Sample values, predictions and errors are bounded by RANGE and MAXVAL (< 2^17) with
// NEAR <= 255; the context sums A (in i64), B and N are halved whenever N reaches RESET
// (<= 65535), so they stay far inside their types; line indices stay below width + 2
// (<= 65537), and run lengths are checked against the samples left in the line. None of
// it can overflow.
#[allow(clippy::arithmetic_side_effects)]
impl Scan {
    fn new(p: Params, width: usize, ns: usize) -> Scan {
        let quant = (-p.t3..=p.t3)
            .map(|d| {
                if d <= -p.t3 {
                    -4
                } else if d <= -p.t2 {
                    -3
                } else if d <= -p.t1 {
                    -2
                } else if d < -p.near {
                    -1
                } else if d <= p.near {
                    0
                } else if d < p.t1 {
                    1
                } else if d < p.t2 {
                    2
                } else if d < p.t3 {
                    3
                } else {
                    4
                }
            })
            .collect();
        let mut s = Scan {
            p,
            width,
            quant,
            a: [0; REGULAR_CONTEXTS + 2],
            b: [0; REGULAR_CONTEXTS],
            c: [0; REGULAR_CONTEXTS],
            n: [0; REGULAR_CONTEXTS + 2],
            nn: [0; 2],
            run_index: [0; MAX_COMPONENTS],
            prev: vec![vec![0; width + 2]; ns],
            cur: vec![vec![0; width + 2]; ns],
        };
        s.reset();
        s
    }

    /// Initializes the context variables (T.87 A.2.1), at the start of the scan and of
    /// each restart interval.
    fn reset(&mut self) {
        let a0 = i64::from(((self.p.range + 32) / 64).max(2));
        self.a = [a0; REGULAR_CONTEXTS + 2];
        self.b = [0; REGULAR_CONTEXTS];
        self.c = [0; REGULAR_CONTEXTS];
        self.n = [1; REGULAR_CONTEXTS + 2];
        self.nn = [0; 2];
        self.run_index = [0; MAX_COMPONENTS];
    }

    /// Sets up the samples outside the line: Ra of the first sample is Rb (the sample above
    /// it), Rd of the last sample is Rb.
    fn start_line(&mut self) {
        let w = self.width;
        for (prev, cur) in self.prev.iter_mut().zip(self.cur.iter_mut()) {
            cur[0] = prev[1];
            prev[w + 1] = prev[w];
        }
    }

    fn end_line(&mut self) {
        std::mem::swap(&mut self.prev, &mut self.cur);
    }

    #[inline]
    fn q(&self, d: i32) -> i32 {
        let t3 = self.p.t3;
        if d <= -t3 {
            -4
        } else if d >= t3 {
            4
        } else {
            i32::from(self.quant[(d + t3) as usize])
        }
    }

    /// Context number (signed, -364..=364) of the gradients around position `x`.
    #[inline]
    fn context(&self, prev: &[i32], cur: &[i32], x: usize) -> i32 {
        let (ra, rb, rc, rd) = (cur[x - 1], prev[x], prev[x - 1], prev[x + 1]);
        81 * self.q(rd - rb) + 9 * self.q(rb - rc) + self.q(rc - ra)
    }

    /// Decodes a Golomb-coded mapped error with the given k and code length limit
    /// (T.87 A.5.3).
    #[inline]
    fn golomb(&self, r: &mut BitReader, k: u32, limit: u32) -> Res<i32> {
        let max_prefix = limit.saturating_sub(self.p.qbpp + 1);
        let prefix = r.unary(max_prefix)?;
        let value = if prefix < max_prefix {
            (i64::from(prefix) << k) | i64::from(r.bits(k))
        } else {
            i64::from(r.bits(self.p.qbpp)) + 1
        };
        // A conforming encoder codes values up to about RANGE; larger ones are corrupt.
        if value > 2 * i64::from(self.p.range) + 2 {
            return err("invalid code (error value out of range)");
        }
        Ok(value as i32)
    }

    /// Reconstructs a sample from its prediction and signed (de-quantized) error, with the
    /// modulo wrap over RANGE and the clamp to 0..=MAXVAL (T.87 A.4.4, A.6.2).
    #[inline]
    fn reconstruct(&self, px: i32, err: i32) -> i32 {
        let p = &self.p;
        let step = 2 * p.near + 1;
        let mut rx = px + err * step;
        if rx < -p.near {
            rx += p.range * step;
        } else if rx > p.maxval + p.near {
            rx -= p.range * step;
        }
        rx.clamp(0, p.maxval)
    }

    /// Decodes one sample in regular mode; `qs` is the signed context number.
    #[inline]
    fn regular(&mut self, r: &mut BitReader, qs: i32, ra: i32, rb: i32, rc: i32) -> Res<i32> {
        let (q, negative) = if qs < 0 {
            ((-qs) as usize, true)
        } else {
            (qs as usize, false)
        };
        // MED predictor and bias correction.
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        let mut px = if rc >= hi {
            lo
        } else if rc <= lo {
            hi
        } else {
            ra + rb - rc
        };
        px = if negative {
            px - self.c[q]
        } else {
            px + self.c[q]
        };
        px = px.clamp(0, self.p.maxval);

        let n = self.n[q];
        let a = self.a[q];
        let mut k = 0u32;
        while (i64::from(n) << k) < a {
            k += 1;
            if k > 24 {
                return err("invalid context state");
            }
        }
        let merr = self.golomb(r, k, self.p.limit)?;
        let b = self.b[q];
        let mut errval = if self.p.near == 0 && k == 0 && 2 * b <= -n {
            // Special mapping of T.87 A.5.2.
            if merr & 1 == 1 {
                (merr - 1) >> 1
            } else {
                -(merr >> 1) - 1
            }
        } else if merr & 1 == 0 {
            merr >> 1
        } else {
            -((merr + 1) >> 1)
        };

        // Context update (A.6.1) and bias computation (A.6.2).
        let mut b = b + errval * (2 * self.p.near + 1);
        let mut a = a + i64::from(errval.abs());
        let mut n = n;
        if n == self.p.reset {
            a >>= 1;
            b >>= 1;
            n >>= 1;
        }
        n += 1;
        if b <= -n {
            b += n;
            if self.c[q] > MIN_C {
                self.c[q] -= 1;
            }
            if b <= -n {
                b = -n + 1;
            }
        } else if b > 0 {
            b -= n;
            if self.c[q] < MAX_C {
                self.c[q] += 1;
            }
            if b > 0 {
                b = 0;
            }
        }
        self.a[q] = a;
        self.b[q] = b;
        self.n[q] = n;

        if negative {
            errval = -errval;
        }
        Ok(self.reconstruct(px, errval))
    }

    /// Decodes the error of a run interruption sample (T.87 A.7.2) with run interruption
    /// type `ritype`, using RUNindex `ri` for the code length limit. Returns the error value
    /// before the sign correction.
    fn interruption_error(&mut self, r: &mut BitReader, ritype: usize, ri: usize) -> Res<i32> {
        let q = REGULAR_CONTEXTS + ritype;
        let n = self.n[q];
        let temp = if ritype == 0 {
            self.a[q]
        } else {
            self.a[q] + i64::from(n >> 1)
        };
        let mut k = 0u32;
        while (i64::from(n) << k) < temp {
            k += 1;
            if k > 24 {
                return err("invalid context state");
            }
        }
        let limit = self.p.limit.saturating_sub(J[ri] + 1);
        let em = self.golomb(r, k, limit)?;
        let t = em + ritype as i32;
        let map = t & 1 == 1;
        let magnitude = (t + i32::from(map)) >> 1;
        let nn = self.nn[ritype];
        let cond = k == 0 && 2 * nn < n;
        let errval = if map != cond { -magnitude } else { magnitude };

        let mut nn = nn;
        if errval < 0 {
            nn += 1;
        }
        let mut a = self.a[q] + i64::from((em + 1 - ritype as i32) >> 1);
        let mut n = n;
        if n == self.p.reset {
            a >>= 1;
            n >>= 1;
            nn >>= 1;
        }
        n += 1;
        self.a[q] = a;
        self.n[q] = n;
        self.nn[ritype] = nn;
        Ok(errval)
    }

    /// Decodes the run length part of run mode (T.87 A.7.1) for a line whose samples from
    /// `x` on are still to be decoded; returns how many samples the run covers and whether
    /// it is ended by an interruption sample (rather than by the end of the line).
    fn run_length(&mut self, r: &mut BitReader, x: usize, comp: usize) -> Res<(usize, bool)> {
        let remaining = self.width + 1 - x;
        let mut count = 0usize;
        loop {
            let ri = self.run_index[comp];
            if r.bit() {
                let rk = 1usize << J[ri];
                let step = rk.min(remaining - count);
                count += step;
                if step == rk && ri < 31 {
                    self.run_index[comp] = ri + 1;
                }
                if count == remaining {
                    return Ok((count, false));
                }
            } else {
                let rest = r.bits(J[ri]) as usize;
                count += rest;
                if count >= remaining {
                    return err("run length exceeds the line");
                }
                return Ok((count, true));
            }
        }
    }

    /// Decodes one line of the `comp`-th component of the scan (no sample interleaving).
    fn line(&mut self, r: &mut BitReader, comp: usize) -> Res<()> {
        let mut prev = std::mem::take(&mut self.prev[comp]);
        let mut cur = std::mem::take(&mut self.cur[comp]);
        let result = self.line_inner(r, comp, &prev, &mut cur);
        std::mem::swap(&mut self.prev[comp], &mut prev);
        std::mem::swap(&mut self.cur[comp], &mut cur);
        result
    }

    fn line_inner(
        &mut self,
        r: &mut BitReader,
        comp: usize,
        prev: &[i32],
        cur: &mut [i32],
    ) -> Res<()> {
        let w = self.width;
        let mut x = 1;
        while x <= w {
            let qs = self.context(prev, cur, x);
            if qs != 0 {
                cur[x] = self.regular(r, qs, cur[x - 1], prev[x], prev[x - 1])?;
                x += 1;
                continue;
            }
            // Run mode.
            let ra = cur[x - 1];
            let (count, interrupted) = self.run_length(r, x, comp)?;
            cur[x..x + count].fill(ra);
            x += count;
            if interrupted {
                let rb = prev[x];
                let ri = self.run_index[comp];
                let ritype = usize::from((ra - rb).abs() <= self.p.near);
                let errval = self.interruption_error(r, ritype, ri)?;
                cur[x] = if ritype == 1 {
                    self.reconstruct(ra, errval)
                } else if ra > rb {
                    self.reconstruct(rb, -errval)
                } else {
                    self.reconstruct(rb, errval)
                };
                x += 1;
                if ri > 0 {
                    self.run_index[comp] = ri - 1;
                }
            }
        }
        Ok(())
    }

    /// Decodes one line of all components of a sample-interleaved scan.
    fn line_interleaved(&mut self, r: &mut BitReader) -> Res<()> {
        let prev = std::mem::take(&mut self.prev);
        let mut cur = std::mem::take(&mut self.cur);
        let result = self.interleaved_inner(r, &prev, &mut cur);
        self.prev = prev;
        self.cur = cur;
        result
    }

    fn interleaved_inner(
        &mut self,
        r: &mut BitReader,
        prev: &[Vec<i32>],
        cur: &mut [Vec<i32>],
    ) -> Res<()> {
        let w = self.width;
        let mut qs = [0i32; MAX_COMPONENTS];
        let mut x = 1;
        while x <= w {
            let mut all_zero = true;
            for ((q, p), c) in qs.iter_mut().zip(prev).zip(cur.iter()) {
                *q = self.context(p, c, x);
                all_zero &= *q == 0;
            }
            if !all_zero {
                for ((&q, p), c) in qs.iter().zip(prev).zip(cur.iter_mut()) {
                    c[x] = self.regular(r, q, c[x - 1], p[x], p[x - 1])?;
                }
                x += 1;
                continue;
            }
            // Run mode over whole pixels.
            let (count, interrupted) = self.run_length(r, x, 0)?;
            for c in cur.iter_mut() {
                let ra = c[x - 1];
                c[x..x + count].fill(ra);
            }
            x += count;
            if interrupted {
                // Every component of the interruption pixel is coded as run interruption
                // type 0 (predicted by Rb): any single component may equal its Ra.
                let ri = self.run_index[0];
                for (p, c) in prev.iter().zip(cur.iter_mut()) {
                    let (ra, rb) = (c[x - 1], p[x]);
                    let errval = self.interruption_error(r, 0, ri)?;
                    c[x] = self.reconstruct(rb, if ra > rb { -errval } else { errval });
                }
                x += 1;
                if ri > 0 {
                    self.run_index[0] = ri - 1;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // test code on fixed, small vectors
mod tests {
    use super::*;

    /// (name, codestream, expected samples (u16 LE), width, height, components, precision)
    type Vector = (
        &'static str,
        &'static [u8],
        &'static [u8],
        usize,
        usize,
        usize,
        u8,
    );

    macro_rules! vector {
        ($name:literal, $w:expr, $h:expr, $c:expr, $p:expr) => {
            (
                $name,
                include_bytes!(concat!("../tests/jpegls/", $name, ".jls")),
                include_bytes!(concat!("../tests/jpegls/", $name, ".u16")),
                $w,
                $h,
                $c,
                $p,
            )
        };
    }

    const VECTORS: &[Vector] = &[
        vector!("dcmtk_gray8", 17, 13, 1, 8),
        vector!("dcmtk_gray12", 19, 12, 1, 16),
        vector!("dcmtk_gray16", 23, 11, 1, 16),
        vector!("dcmtk_gray5", 10, 12, 1, 8),
        vector!("dcmtk_gray8_near2", 17, 13, 1, 8),
        vector!("dcmtk_gray16_near5", 23, 11, 1, 16),
        vector!("dcmtk_gray8_params", 17, 13, 1, 8),
        vector!("dcmtk_rgb8_none", 15, 12, 3, 8),
        vector!("dcmtk_rgb8_line", 15, 12, 3, 8),
        vector!("dcmtk_rgb8_sample", 15, 12, 3, 8),
        vector!("dcmtk_rgb16_sample", 9, 12, 3, 16),
        vector!("dcmtk_rgb8_sample_near3", 15, 12, 3, 8),
        vector!("dcmtk_rgb8_line_near1", 15, 12, 3, 8),
        vector!("charls_gray12", 19, 12, 1, 12),
        vector!("charls_gray2", 21, 12, 1, 2),
        vector!("charls_gray10_near1", 16, 13, 1, 10),
        vector!("charls_gray16_near3_params", 20, 12, 1, 16),
        vector!("charls_gray8_reset3", 18, 12, 1, 8),
        vector!("charls_gray6_near2", 18, 12, 1, 6),
        vector!("charls_gray8_1x12", 1, 12, 1, 8),
        vector!("charls_rgb12_line_near2", 14, 12, 3, 12),
        vector!("charls_rgb12_sample", 14, 12, 3, 12),
        vector!("charls_rgb16_sample_near7", 9, 12, 3, 16),
        vector!("charls_four_none", 11, 12, 4, 8),
        vector!("charls_four_line", 11, 12, 4, 8),
        vector!("charls_four_sample", 11, 12, 4, 8),
    ];

    fn expected(raw: &[u8]) -> Vec<u16> {
        raw.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect()
    }

    /// Length of the codestream up to and including its (last) EOI marker.
    fn eoi_end(data: &[u8]) -> usize {
        data.windows(2).rposition(|w| w == [0xFF, EOI]).unwrap() + 2
    }

    #[test]
    fn decodes_vectors_exactly() {
        for &(name, data, raw, w, h, c, p) in VECTORS {
            let img = decode(data).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                (img.width, img.height, img.components, img.precision),
                (w, h, c, p),
                "{name}"
            );
            assert_eq!(img.samples, expected(raw), "{name}");
        }
    }

    #[test]
    fn truncated_codestreams_are_errors() {
        for &(name, data, ..) in VECTORS {
            for len in 0..eoi_end(data) {
                assert!(decode(&data[..len]).is_err(), "{name} cut at {len}");
            }
        }
    }

    #[test]
    fn trailing_padding_is_ignored() {
        let (_, data, raw, ..) = VECTORS[0];
        let mut padded = data.to_vec();
        padded.push(0);
        assert_eq!(decode(&padded).unwrap().samples, expected(raw));
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn mutated_and_random_inputs_do_not_panic() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for &(_, data, ..) in VECTORS {
            for round in 0..60 {
                let mut m = data.to_vec();
                let edits = 1 + rng.next() as usize % 4;
                for _ in 0..edits {
                    let i = rng.next() as usize % m.len();
                    match round % 3 {
                        0 => m[i] ^= 1 << (rng.next() % 8),
                        1 => m[i] = rng.next() as u8,
                        _ => m.truncate(i.max(1)),
                    }
                }
                let _ = decode(&m);
            }
            // Valid headers followed by random entropy-coded data.
            let header_end = data.windows(2).position(|w| w == [0xFF, SOS]).unwrap();
            let header_len =
                usize::from(data[header_end + 2]) << 8 | usize::from(data[header_end + 3]);
            let body = header_end + 2 + header_len;
            for _ in 0..20 {
                let mut m = data[..body].to_vec();
                for _ in 0..rng.next() % 400 {
                    m.push(rng.next() as u8);
                }
                m.extend_from_slice(&[0xFF, EOI]);
                let _ = decode(&m);
            }
        }
        for _ in 0..500 {
            let len = rng.next() as usize % 64;
            let mut m = vec![0xFF, SOI];
            m.extend((0..len).map(|_| rng.next() as u8));
            let _ = decode(&m);
        }
    }

    /// SOI, SOF55, optional DRI, SOS (NEAR 0, ILV 0) for a one-component 8-bit image.
    fn header(width: u16, height: u16, restart: Option<u16>) -> Vec<u8> {
        let mut v = vec![0xFF, SOI, 0xFF, SOF55, 0, 11, 8];
        v.extend_from_slice(&height.to_be_bytes());
        v.extend_from_slice(&width.to_be_bytes());
        v.extend_from_slice(&[1, 1, 0x11, 0]);
        if let Some(ri) = restart {
            v.extend_from_slice(&[0xFF, DRI, 0, 4]);
            v.extend_from_slice(&ri.to_be_bytes());
        }
        v.extend_from_slice(&[0xFF, SOS, 0, 8, 1, 1, 0, 0, 0, 0]);
        v
    }

    #[test]
    fn restart_intervals() {
        // An 8x2 black image, one line per restart interval: each line is one run coded as
        // six 1 bits (run lengths 1, 1, 1, 1, 2, 2), the run state being reset after RST0.
        let mut data = header(8, 2, Some(1));
        data.extend_from_slice(&[0xFC, 0xFF, 0xD0, 0xFC, 0xFF, EOI]);
        let img = decode(&data).unwrap();
        assert_eq!(img.samples, vec![0; 16]);

        // Wrong restart marker number, or none.
        let mut bad = header(8, 2, Some(1));
        bad.extend_from_slice(&[0xFC, 0xFF, 0xD1, 0xFC, 0xFF, EOI]);
        assert!(decode(&bad).is_err());
        let mut bad = header(8, 2, Some(1));
        bad.extend_from_slice(&[0xFC, 0xFC, 0xFF, EOI]);
        assert!(decode(&bad).is_err());
    }

    #[test]
    fn rejects_bad_headers() {
        let ok = {
            let mut d = header(8, 1, None);
            d.extend_from_slice(&[0xFC, 0xFF, EOI]);
            d
        };
        assert_eq!(decode(&ok).unwrap().samples, vec![0; 8]);
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut d = ok.clone();
            f(&mut d);
            decode(&d)
        };
        assert!(with(&|d| d[1] = 0xD9).is_err()); // no SOI
        assert!(with(&|d| d[6] = 1).is_err()); // precision 1
        assert!(with(&|d| d[6] = 17).is_err()); // precision 17
        assert!(with(&|d| d[7..9].copy_from_slice(&[0, 0])).is_err()); // height 0
        assert!(with(&|d| d[9..11].copy_from_slice(&[0, 0])).is_err()); // width 0
        assert!(with(&|d| d[3] = 0xC3).is_err()); // SOF3 (lossless JPEG)
        assert!(with(&|d| d[13] = 0x21).is_err()); // subsampling
        assert!(with(&|d| {
            // 65535 x 65535 samples: too large.
            d[7..11].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
        })
        .is_err());
        assert!(with(&|d| {
            // NEAR 200 > MAXVAL / 2.
            let n = d.len() - 6;
            d[n] = 200;
        })
        .is_err());
        // LSE type 2 (mapping table) and an invalid type 1 (T1 > MAXVAL).
        let lse = |body: &[u8]| {
            let mut d = ok.clone();
            let mut seg = vec![0xFF, LSE, 0, (body.len() + 2) as u8];
            seg.extend_from_slice(body);
            d.splice(15..15, seg);
            decode(&d)
        };
        assert!(lse(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_ok());
        assert!(lse(&[2, 1, 1, 0, 1]).is_err());
        assert!(lse(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(lse(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]).is_err()); // RESET 1
    }

    /// Decodes the `*.jls` files of the directory named by `RADVEIL_JPEGLS_DIR` and compares
    /// them with the `*.u16` files next to them (for checks against external decoders).
    #[test]
    #[ignore]
    fn external_vectors() {
        let dir = std::env::var("RADVEIL_JPEGLS_DIR").expect("RADVEIL_JPEGLS_DIR");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "jls") {
                let img = decode(&std::fs::read(&path).unwrap()).unwrap();
                let raw = std::fs::read(path.with_extension("u16")).unwrap();
                assert_eq!(img.samples, expected(&raw), "{}", path.display());
                checked += 1;
            }
        }
        assert!(checked > 0);
    }
}
