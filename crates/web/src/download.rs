//! The patient's copy of their images (issue 15, item 1; HIPAA's right of access):
//! `GET /me/download` (every study of the token's patient) or `GET /me/download?study=UID`
//! (one of them) answers a zip:
//!
//! - `README.txt`: what is in it and how to open it, in plain words;
//! - `DICOM/<study>/<series>/<n>.dcm`: each instance byte for byte as it was stored;
//! - `JPEG/<study>/<series>/<n>.jpg` (`<n>-<frame>.jpg` for multi-frame images): each frame
//!   rendered as WADO-RS renders it ([`crate::rendered::render_frames`]: the image's own
//!   window, else its minimum and maximum), for any picture viewer;
//! - `JPEG/not-rendered.txt`, when some images could not be made into pictures (which ones;
//!   their DICOM files are there all the same).
//!
//! Folder names come from the study's date, modalities and description and the series'
//! number, modality and description, cut down to letters, digits, `-`, `_` and `+` (no path
//! separator, dot, control or direction-override character reaches a name), and numbered
//! when two are alike.
//!
//! The zip is written as it is sent, an instance at a time ([`crate::streamed::respond`]:
//! one instance, one rendered frame and a few chunks of [`CHUNK`] bytes in memory whatever
//! the number of studies; stored, not compressed: DICOM pixel data is mostly compressed
//! already and JPEGs are). Only a patient's token (or portal session) downloads, and only
//! their own studies: a staff token is refused (403), another patient's study is exactly a
//! missing one (404). The download is audited as a Retrieve of each study it holds, so the
//! patient's access log shows it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use axum::body::Bytes;
use axum::extract::{Extension, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use radveil_access::Compartment;
use radveil_audit::{Action, StudyRef};
use radveil_store::{Handle, Level};
use serde_json::Value;

use crate::app::{error, store_error, visible_rows, AppState};
use crate::audit::What;
use crate::auth::Caller;
use crate::frames::Refused;
use crate::qido::{SearchQuery, Target, MAX_RESULTS};
use crate::rendered::{render_frames, Options, Rendered};
use crate::scope::Scope;
use crate::streamed;

/// Bytes of zip sent at a time: the writer hands the body a chunk when it has this many.
pub const CHUNK: usize = 256 << 10;

/// Most series one download lists (a bound on the listing's memory; a patient with more
/// downloads a study at a time).
pub const MAX_SERIES: usize = 100_000;

/// The longest folder name made from a description, in characters.
const MAX_NAME: usize = 64;

/// One series to put in the zip.
#[derive(Debug, Clone)]
struct SeriesEntry {
    uid: String,
    folder: String,
}

/// One study to put in the zip, with its series.
#[derive(Debug, Clone)]
struct StudyEntry {
    uid: String,
    folder: String,
    series: Vec<SeriesEntry>,
}

/// `GET /me/download[?study=UID]`: a patient's images as a zip (see the module).
pub async fn download(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(scope): Extension<Scope>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let mut what = What {
        action: Some(Action::Retrieve),
        ..What::default()
    };
    // The whole of one patient's images, and only for that patient: a staff scope, and a
    // one-study scope (a share link's), are refused whatever the token says.
    let p = match (caller.grant.as_ref().map(|g| &g.compartment), scope) {
        (Some(Compartment::Patient(p)), Scope::Patient(h))
            if h == state.store.patient(p.id(), p.issuer()) =>
        {
            p
        }
        _ => {
            return what.attach(error(
                StatusCode::FORBIDDEN,
                "the download of one's images is for a patient's token",
            ))
        }
    };
    let study = match study_param(&params) {
        Ok(s) => s,
        Err(why) => return what.attach(error(StatusCode::BAD_REQUEST, why)),
    };
    let studies = match list(&state, &scope, study.as_deref()).await {
        Ok(s) => s,
        Err(resp) => return what.attach(resp),
    };
    for s in &studies {
        what.add(
            p.id(),
            p.issuer(),
            StudyRef {
                uid: s.uid.clone(),
                ..StudyRef::default()
            },
        );
    }
    let filename = match &study {
        Some(_) => "my-images-one-study.zip",
        None => "my-images.zip",
    };
    what.attach(respond(&state, scope, studies, filename).await)
}

/// The `study` parameter: a UID (digits and dots, at most 64), at most once; nothing else.
fn study_param(params: &[(String, String)]) -> Result<Option<String>, &'static str> {
    let mut study = None;
    for (k, v) in params {
        if k != "study" {
            return Err("unknown parameter (study)");
        }
        if study.is_some() {
            return Err("study given twice");
        }
        if v.is_empty() || v.len() > 64 || !v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err("study: a Study Instance UID (digits and dots, at most 64)");
        }
        study = Some(v.clone());
    }
    Ok(study)
}

/// The first text value of attribute `tag` of a DICOM JSON result.
fn value(result: &Value, tag: u32) -> Option<String> {
    let v = result.get(format!("{tag:08X}"))?.get("Value")?.get(0)?;
    match v {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The studies and series of the patient of `scope` (or the one study asked for), with
/// their folder names, in date order; 404 when there is none.
async fn list(
    state: &AppState,
    scope: &Scope,
    study: Option<&str>,
) -> Result<Vec<StudyEntry>, Response> {
    let target = || Target::Series {
        study: study.map(|s| state.store.uid(Level::Study, s)),
    };
    // (date, uid) -> (description, modalities, series: (number, modality, description, uid))
    type Found = (String, BTreeSet<String>, Vec<(i64, String, String, String)>);
    let mut found: BTreeMap<(String, String), Found> = BTreeMap::new();
    let mut offset = 0usize;
    loop {
        let params = vec![
            (
                "includefield".to_string(),
                "StudyInstanceUID,StudyDate,StudyDescription,SeriesInstanceUID,Modality,SeriesNumber,SeriesDescription"
                    .to_string(),
            ),
            ("limit".to_string(), MAX_RESULTS.to_string()),
            ("offset".to_string(), offset.to_string()),
        ];
        let q = SearchQuery::parse(&params, target())
            .map_err(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))?;
        let page = state
            .catalogue
            .search(&state.store, scope, &q, target(), "")
            .await
            .map_err(|e| store_error(&e))?;
        for r in &page.results {
            use radveil_standard::tags;
            let (Some(st), Some(se)) = (
                value(r, tags::STUDY_INSTANCE_UID),
                value(r, tags::SERIES_INSTANCE_UID),
            ) else {
                continue;
            };
            let date = value(r, tags::STUDY_DATE).unwrap_or_default();
            let modality = value(r, tags::MODALITY).unwrap_or_default();
            let entry = found.entry((date, st)).or_insert_with(|| {
                (
                    value(r, tags::STUDY_DESCRIPTION).unwrap_or_default(),
                    BTreeSet::new(),
                    Vec::new(),
                )
            });
            if !modality.is_empty() {
                entry.1.insert(modality.clone());
            }
            let number = value(r, tags::SERIES_NUMBER)
                .and_then(|n| n.parse::<i64>().ok())
                .unwrap_or(i64::MAX);
            entry.2.push((
                number,
                modality,
                value(r, tags::SERIES_DESCRIPTION).unwrap_or_default(),
                se,
            ));
        }
        offset = offset.saturating_add(page.results.len());
        if !page.more || page.results.is_empty() {
            break;
        }
        if offset >= MAX_SERIES {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too many series for one download: download a study at a time (?study=UID)",
            ));
        }
    }
    if found.is_empty() {
        return Err(error(StatusCode::NOT_FOUND, "not found"));
    }
    let mut studies = Vec::with_capacity(found.len());
    let mut study_names = Names::default();
    for ((date, uid), (description, modalities, mut series)) in found {
        let modalities: Vec<&str> = modalities.iter().map(String::as_str).collect();
        let date = pretty_date(&date);
        let folder = study_names.unique(folder_name(
            &[&date, &modalities.join(" "), &description],
            "Study",
        ));
        series.sort();
        let mut names = Names::default();
        let series = series
            .into_iter()
            .map(|(number, modality, description, uid)| {
                let number = if number == i64::MAX {
                    String::new()
                } else {
                    format!("{number:03}")
                };
                SeriesEntry {
                    folder: names
                        .unique(folder_name(&[&number, &modality, &description], "Series")),
                    uid,
                }
            })
            .collect();
        studies.push(StudyEntry {
            uid,
            folder,
            series,
        });
    }
    Ok(studies)
}

/// Rows asked for their attributes at a time (bounds the memory of the opened copies).
const NUMBERS_AT_ONCE: usize = 1024;

/// The Instance Number (0020,0013) of each of `rows` that has one, from the attributes
/// sealed in their index rows (no object is opened). A row whose attributes do not open has
/// none here: opening its object fails the download later.
async fn instance_numbers(
    state: &AppState,
    rows: &[radveil_store::Row],
) -> Result<BTreeMap<Handle, i64>, radveil_store::StoreError> {
    let mut out = BTreeMap::new();
    for chunk in rows.chunks(NUMBERS_AT_ONCE) {
        let handles = chunk.iter().map(|r| r.instance).collect();
        for (row, meta) in state.store.metas_of(handles).await? {
            let number = meta
                .ok()
                .and_then(|m| serde_json::from_slice::<Value>(&m).ok())
                .and_then(|v| value(&v, radveil_standard::tags::INSTANCE_NUMBER))
                .and_then(|n| n.parse::<i64>().ok());
            if let Some(n) = number {
                out.insert(row.instance, n);
            }
        }
    }
    Ok(out)
}

/// A DICOM date (YYYYMMDD) as YYYY-MM-DD; anything else as nothing.
fn pretty_date(da: &str) -> String {
    let b = da.as_bytes();
    if b.len() == 8 && b.iter().all(u8::is_ascii_digit) {
        format!("{}-{}-{}", &da[..4], &da[4..6], &da[6..])
    } else {
        String::new()
    }
}

/// A folder name from `parts` (text from the images, so hostile): letters, digits, `-`,
/// `_` and `+` kept, every other character a space, runs of spaces one, at most
/// [`MAX_NAME`] characters; `fallback` when nothing is left. No `/`, `\`, `.`, control or
/// direction-override character survives, so a name is one path component that is never
/// `..` nor hidden.
fn folder_name(parts: &[&str], fallback: &str) -> String {
    let mut out = String::new();
    let mut kept = 0usize;
    for c in parts.join(" ").chars() {
        let keep = c.is_alphanumeric() || matches!(c, '-' | '_' | '+');
        if keep {
            if kept >= MAX_NAME {
                break;
            }
            out.push(c);
            kept += 1;
        } else if !out.is_empty() && !out.ends_with(' ') {
            out.push(' ');
        }
    }
    let out = out.trim_end().to_string();
    if out.is_empty() {
        fallback.to_string()
    } else {
        out
    }
}

/// Names given so far at one level: a name given twice gets " (2)", " (3)", ...
#[derive(Default)]
struct Names(BTreeSet<String>);

impl Names {
    fn unique(&mut self, name: String) -> String {
        let mut candidate = name.clone();
        let mut n = 1u32;
        while self.0.contains(&candidate) {
            n = n.saturating_add(1);
            candidate = format!("{name} ({n})");
        }
        self.0.insert(candidate.clone());
        candidate
    }
}

/// The words of `README.txt`.
fn readme(studies: &[StudyEntry]) -> String {
    let mut s = String::from(
        "YOUR IMAGES\r\n\
         ===========\r\n\
         \r\n\
         This is a copy of your medical images, as the hospital keeps them.\r\n\
         \r\n\
         What is in it\r\n\
         -------------\r\n\
         DICOM   The images themselves, exactly as they were stored, one file (.dcm) per\r\n\
         \x20       image, in a folder per study (date, kind of scan, description) and a\r\n\
         \x20       folder per series within it. This is the format doctors and hospitals\r\n\
         \x20       use: give this folder to another hospital or doctor if they ask for\r\n\
         \x20       your images.\r\n\
         JPEG    The same images as ordinary pictures (.jpg) that any computer or phone\r\n\
         \x20       can show, in the same folders. They are for looking at only: they are\r\n\
         \x20       not good enough for a diagnosis, and a picture of a scan shows it with\r\n\
         \x20       one brightness and contrast setting.\r\n\
         \r\n\
         How to open the DICOM files\r\n\
         ---------------------------\r\n\
         Use a free DICOM viewer, for example Weasis (Windows, macOS, Linux), Horos\r\n\
         (macOS) or MicroDicom (Windows): open the viewer, then open the DICOM folder.\r\n\
         A DICOM viewer lets you scroll through a series and change brightness and\r\n\
         contrast.\r\n\
         \r\n\
         Keep this copy safe: it holds your name and other details about you.\r\n\
         \r\n\
         Studies in this copy\r\n\
         --------------------\r\n",
    );
    for st in studies {
        s.push_str(&format!("{}  ({} series)\r\n", st.folder, st.series.len()));
    }
    s
}

/// A [`Write`] that hands what is written to the response body in chunks of [`CHUNK`]
/// bytes, waiting while the client has not taken the ones before (so the writer holds
/// one chunk). Fails once the client is gone.
struct ToBody {
    tx: streamed::Parts,
    buf: Vec<u8>,
}

impl ToBody {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))
    }
}

impl Write for ToBody {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Why the zip stopped.
enum Stop {
    /// The client went away: nothing more to do.
    Gone,
    /// A stored instance did not open, or the zip could not be written: the body ends
    /// short (the client sees an incomplete download, never a complete one with files
    /// missing).
    Failed(Refused),
}

impl From<zip::result::ZipError> for Stop {
    fn from(e: zip::result::ZipError) -> Stop {
        match e {
            zip::result::ZipError::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe => {
                Stop::Gone
            }
            other => {
                tracing::error!(error = %other, "writing a download's zip");
                Stop::Failed(Refused(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the download could not be written".into(),
                ))
            }
        }
    }
}

impl From<std::io::Error> for Stop {
    fn from(e: std::io::Error) -> Stop {
        Stop::from(zip::result::ZipError::Io(e))
    }
}

/// The zip's entries' modification time: now (UTC), or the zip format's epoch.
fn now() -> zip::DateTime {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    zip::DateTime::from_date_and_time(
        u16::try_from(year).unwrap_or(1980),
        month as u8,
        day as u8,
        (rem / 3600) as u8,
        (rem % 3600 / 60) as u8,
        (rem % 60) as u8,
    )
    .unwrap_or_default()
}

/// Writes the zip of `studies` into `out`. Runs on a blocking thread: store reads go
/// through `rt`.
fn write_zip(
    state: &AppState,
    scope: &Scope,
    studies: &[StudyEntry],
    rt: &tokio::runtime::Handle,
    out: ToBody,
) -> Result<(), Stop> {
    let mut zip = zip::ZipWriter::new_stream(out);
    let time = now();
    let options = |size: usize| {
        zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .last_modified_time(time)
            .unix_permissions(0o644)
            .large_file(size as u64 >= zip::ZIP64_BYTES_THR)
    };
    let text = readme(studies);
    zip.start_file("README.txt", options(text.len()))?;
    zip.write_all(text.as_bytes())?;
    let mut not_rendered: Vec<String> = Vec::new();
    let render = Options::default();
    for st in studies {
        let study = state.store.uid(Level::Study, &st.uid);
        for se in &st.series {
            let series: Handle = state.store.uid(Level::Series, &se.uid);
            let failed = || {
                Stop::Failed(Refused(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store error".into(),
                ))
            };
            let mut rows = rt
                .block_on(visible_rows(state, scope, study, Some(series)))
                .map_err(|_| failed())?;
            let numbers = rt.block_on(instance_numbers(state, &rows)).map_err(|e| {
                tracing::error!(error = %e, "a download's series could not be listed");
                failed()
            })?;
            // By Instance Number (those without one last), else as the index has them: a
            // series' pictures are in the order the scanner made them.
            rows.sort_by_key(|r| numbers.get(&r.instance).copied().unwrap_or(i64::MAX));
            let width = rows.len().to_string().len().max(4);
            for (i, row) in rows.iter().enumerate() {
                let n = format!("{:0width$}", i.saturating_add(1));
                let bytes = rt.block_on(state.store.open_row(row)).map_err(|e| {
                    // Logged by tag-free words only; the client's body ends short.
                    tracing::error!(error = %e, "a stored instance of a download did not open");
                    Stop::Failed(Refused(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "a stored instance did not open".into(),
                    ))
                })?;
                let dicom = format!("DICOM/{}/{}/{n}.dcm", st.folder, se.folder);
                zip.start_file(dicom.as_str(), options(bytes.len()))?;
                zip.write_all(&bytes)?;
                state.metrics.retrieved(1);
                let jpeg = |frame: Option<usize>| match frame {
                    None => format!("JPEG/{}/{}/{n}.jpg", st.folder, se.folder),
                    Some(f) => format!("JPEG/{}/{}/{n}-{f}.jpg", st.folder, se.folder),
                };
                let mut written: Result<(), Stop> = Ok(());
                let rendered = render_frames(
                    &bytes,
                    Rendered::Jpeg,
                    &render,
                    &mut |_, index, count, image| {
                        let name = jpeg((count > 1).then_some(index.saturating_add(1)));
                        written = zip
                            .start_file(name.as_str(), options(image.len()))
                            .map_err(Stop::from)
                            .and_then(|()| zip.write_all(&image).map_err(Stop::from));
                        written.is_ok()
                    },
                );
                written?;
                if let Err(Refused(status, _)) = rendered {
                    // Not made into a picture (a kind of image radveil does not render, or
                    // no memory for it now): its DICOM file is there all the same.
                    tracing::info!(%status, "an image of a download was not rendered");
                    not_rendered.push(dicom);
                }
            }
        }
    }
    if !not_rendered.is_empty() {
        let mut note = String::from(
            "These images could not be made into pictures; their DICOM files are in the\r\n\
             DICOM folder all the same (open them with a DICOM viewer):\r\n\r\n",
        );
        for d in &not_rendered {
            note.push_str(d);
            note.push_str("\r\n");
        }
        zip.start_file("JPEG/not-rendered.txt", options(note.len()))?;
        zip.write_all(note.as_bytes())?;
    }
    let mut out = zip.finish()?.into_inner();
    out.flush()?;
    Ok(())
}

/// The streamed zip response of `studies`, as an attachment named `filename`.
async fn respond(
    state: &AppState,
    scope: Scope,
    studies: Vec<StudyEntry>,
    filename: &str,
) -> Response {
    let state = state.clone();
    let made = streamed::respond("application/zip", move |tx: streamed::Parts| async move {
        let rt = tokio::runtime::Handle::current();
        let failed = tx.clone();
        let done = tokio::task::spawn_blocking(move || {
            let out = ToBody {
                tx,
                buf: Vec::with_capacity(CHUNK),
            };
            write_zip(&state, &scope, &studies, &rt, out)
        })
        .await;
        let refused = match done {
            Ok(Ok(())) | Ok(Err(Stop::Gone)) => return,
            Ok(Err(Stop::Failed(r))) => r,
            Err(_) => Refused(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into()),
        };
        let _ = failed.send(Err(refused)).await;
    })
    .await;
    match made {
        Ok(mut resp) => {
            let h = resp.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
                h.insert(header::CONTENT_DISPOSITION, v);
            }
            // The images identify the patient: no cache keeps a copy.
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            resp
        }
        Err(Refused(status, why)) => {
            if status == StatusCode::INTERNAL_SERVER_ERROR {
                tracing::error!(error = %why, "a download failed before it started");
            }
            error(status, &why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_are_one_harmless_path_component() {
        for hostile in [
            "../../etc/passwd",
            "..",
            ".hidden",
            "a/b\\c",
            "x\u{0}y\r\nz",
            "evil\u{202E}gpj.exe",
            "C:\\Windows",
            "   ",
        ] {
            let n = folder_name(&[hostile], "Study");
            assert!(!n.is_empty());
            assert!(
                !n.contains(['/', '\\', '.', ':', '\u{202E}']) && !n.chars().any(char::is_control),
                "{n:?}"
            );
            assert_ne!(n, "..");
            assert_eq!(n.trim(), n);
        }
        assert_eq!(
            folder_name(&["2026-03-03", "CT MR", "HEAD W/O CONTRAST^1"], "Study"),
            "2026-03-03 CT MR HEAD W O CONTRAST 1"
        );
        assert_eq!(folder_name(&["", "", ""], "Series"), "Series");
        assert_eq!(folder_name(&["Crâne  é"], "S"), "Crâne é");
        let long = "x".repeat(500);
        assert_eq!(folder_name(&[&long], "S").chars().count(), MAX_NAME);
    }

    #[test]
    fn the_body_gets_bounded_chunks_and_the_writer_stops_when_the_client_goes() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(streamed::PARTS_IN_FLIGHT);
        let writer = std::thread::spawn(move || {
            let mut out = ToBody {
                tx,
                buf: Vec::new(),
            };
            out.write_all(&vec![7u8; 3 * CHUNK + 5])?;
            out.flush()
        });
        let mut sizes = Vec::new();
        while let Some(chunk) = rx.blocking_recv() {
            sizes.push(chunk.map(|b| b.len()).unwrap_or(0));
        }
        writer.join().unwrap().unwrap();
        assert_eq!(sizes, [CHUNK, CHUNK, CHUNK, 5]);

        let (tx, rx) = tokio::sync::mpsc::channel(streamed::PARTS_IN_FLIGHT);
        drop(rx);
        let mut out = ToBody {
            tx,
            buf: Vec::new(),
        };
        let err = out.write_all(&vec![0u8; CHUNK]).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
        assert!(matches!(Stop::from(err), Stop::Gone));
    }

    #[test]
    fn alike_names_are_numbered() {
        let mut names = Names::default();
        assert_eq!(names.unique("CT".into()), "CT");
        assert_eq!(names.unique("CT".into()), "CT (2)");
        assert_eq!(names.unique("CT".into()), "CT (3)");
        assert_eq!(names.unique("MR".into()), "MR");
    }

    #[test]
    fn the_study_parameter_is_a_uid_or_refused() {
        let p = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(study_param(&[]), Ok(None));
        assert_eq!(
            study_param(&p(&[("study", "1.2.3")])),
            Ok(Some("1.2.3".into()))
        );
        for bad in [
            p(&[("study", "../1")]),
            p(&[("study", "")]),
            p(&[("study", "1"), ("study", "2")]),
            p(&[("patient", "x")]),
        ] {
            assert!(study_param(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dates_are_shown_as_dates_or_not_at_all() {
        assert_eq!(pretty_date("20260303"), "2026-03-03");
        assert_eq!(pretty_date("2026"), "");
        assert_eq!(pretty_date("../x/../"), "");
    }

    #[test]
    fn the_entries_time_is_a_valid_zip_time() {
        let t = now();
        assert!(t.year() >= 2024, "{t:?}");
    }
}
