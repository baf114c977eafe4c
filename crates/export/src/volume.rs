//! Head volumes under the Clean Recognizable Visual Features option, in memory: the CT or
//! MR instances of one series are opened (decrypted) into memory together, their headers
//! grouped into the volumes they make (`radveil_deface::series::group_volumes`, as
//! `radveil deid` groups files), each volume assembled, defaced and checked for a face
//! (`radveil_deface`), the defaced pixels put back into each parsed instance, which is then
//! de-identified through the run like any other (Recognizable Visual Features NO, the
//! option's code recorded). A volume that shows a face and cannot be defaced is held back
//! whole; images that make no volume (too few slices, no plane geometry) go through with
//! their pixels untouched, as `radveil deid` sends them. Nothing identified reaches the
//! disk: the instances stay in memory, counted in the run's budget.

use std::path::{Path, PathBuf};

use radveil_deface::series::{self, SeriesError};
use radveil_deface::{DefaceError, DefaceOptions};
use radveil_deid::VisualFeatures;
use radveil_part10::{self as p10, BudgetError, DEFAULT_WAIT};
use radveil_store::Row;

use crate::run::{deidentify, open, Done, Settings, Shared};

/// The name a series' instance goes by in messages of the defacing code: its position in
/// the series, never an identifier.
fn name(n: usize) -> PathBuf {
    PathBuf::from(format!("instance-{n}"))
}

fn position(p: &Path) -> Option<usize> {
    p.to_str()?.strip_prefix("instance-")?.parse().ok()
}

/// Every instance of the series held back for `why`.
fn hold_all(n: usize, why: &str) -> Vec<Done> {
    (0..n)
        .map(|_| Done::Held(format!("held back: {why}")))
        .collect()
}

/// Exports the instances `rows` (the CT or MR images of one series), defacing the volumes
/// they make: one [`Done`] per row, in order.
pub(crate) fn series(shared: &Shared<'_>, settings: &Settings<'_>, rows: &[&Row]) -> Vec<Done> {
    let budget = shared.run.budget();
    // Every instance, and the copy of one that assembling the volume reads at a time.
    let largest = rows.iter().map(|r| r.size).max().unwrap_or(0);
    let total = rows.iter().fold(largest, |a, r| {
        a.saturating_add(r.size.saturating_add(crate::run::SEALED_OVERHEAD))
    });
    // The instances are all held while their volume is worked on.
    let _held = match budget.reserve(total, DEFAULT_WAIT) {
        Ok(g) => g,
        Err(e @ BudgetError::TooLarge { .. }) => {
            return hold_all(
                rows.len(),
                &format!("the series is too large to deface in memory: {e}"),
            )
        }
        Err(e) => return hold_all(rows.len(), &format!("the volume cannot be defaced: {e}")),
    };
    let mut files: Vec<Option<Vec<u8>>> = Vec::with_capacity(rows.len());
    let mut out: Vec<Option<Done>> = Vec::with_capacity(rows.len());
    for r in rows {
        match open(shared, r) {
            Ok(b) => {
                files.push(Some(b));
                out.push(None);
            }
            Err(d) => {
                files.push(None);
                out.push(Some(d));
            }
        }
    }
    let headers: Vec<(usize, series::ImageHeader)> = files
        .iter()
        .enumerate()
        .filter_map(|(n, f)| Some((n, series::image_header(f.as_ref()?)?)))
        .collect();
    let with_header: std::collections::HashSet<usize> = headers.iter().map(|(n, _)| *n).collect();
    let (groups, loose) = series::group_volumes(headers);
    // Images without a readable header or plane geometry make no volume: as deid sends
    // them, untouched (the de-identifier holds back those marked as showing a face).
    let untouched = loose
        .into_iter()
        .chain((0..rows.len()).filter(|n| files[*n].is_some() && !with_header.contains(n)));
    for n in untouched.collect::<Vec<_>>() {
        if let Some(f) = &files[n] {
            out[n] = Some(deidentify(shared, settings, f, VisualFeatures::Untouched));
        }
    }
    let options = DefaceOptions {
        ears: true,
        verify: true,
    };
    for g in groups {
        for d in &g.duplicates {
            out[*d] = Some(Done::Failed(radveil_pipeline::DUPLICATE_REASON.into()));
        }
        for (n, d) in volume(shared, settings, &files, &g.images, options) {
            out[n] = Some(d);
        }
    }
    out.into_iter()
        .map(|d| d.unwrap_or_else(|| Done::Failed("internal error: an instance left out".into())))
        .collect()
}

/// Defaces one volume (`members`: positions in `files`) and de-identifies its instances.
fn volume(
    shared: &Shared<'_>,
    settings: &Settings<'_>,
    files: &[Option<Vec<u8>>],
    members: &[usize],
    options: DefaceOptions,
) -> Vec<(usize, Done)> {
    let budget = shared.run.budget();
    let each = |visual| -> Vec<(usize, Done)> {
        members
            .iter()
            .filter_map(|&n| {
                let f = files[n].as_ref()?;
                Some((n, deidentify(shared, settings, f, visual)))
            })
            .collect()
    };
    let hold = |why: String| -> Vec<(usize, Done)> {
        members
            .iter()
            .map(|&n| (n, Done::Held(format!("held back: {why}"))))
            .collect()
    };
    let names: Vec<PathBuf> = members.iter().map(|&n| name(n)).collect();
    let assembled = series::assemble_with_budget(
        &names,
        |p| {
            position(p)
                .and_then(|n| files.get(n)?.as_ref())
                .map(|f| f.to_vec())
                .ok_or_else(|| std::io::Error::other("not opened"))
        },
        budget,
    );
    let mut vol = match assembled {
        Ok(v) => v,
        // A localizer or a few images: not a volume a face could be rendered from.
        Err(SeriesError::TooFewSlices(_)) => return each(VisualFeatures::Untouched),
        Err(e) => return hold(format!("cannot assemble a volume to look for a face: {e}")),
    };
    let voxels = vol.volume.data.len() as u64;
    let _volume = match budget.reserve(voxels.saturating_mul(5), DEFAULT_WAIT) {
        Ok(g) => g,
        Err(e) => return hold(format!("the volume cannot be defaced: {e}")),
    };
    let defaced = match radveil_deface::deface(&mut vol.volume, options) {
        Ok(d) => d,
        Err(DefaceError::NotAHead(why)) => {
            return match radveil_deface::face_check(&vol.volume) {
                Ok(fc) if !fc.face_found => each(VisualFeatures::NoneFound),
                Ok(fc) => hold(format!(
                "a face is found (score {:.1}) but the volume is not recognised as a head ({why})",
                fc.score
            )),
                Err(e) => hold(format!("the face check failed: {e}")),
            }
        }
        Err(e) => return hold(format!("defacing {e}")),
    };
    let mut out = Vec::with_capacity(members.len());
    for (k, &n) in members.iter().enumerate() {
        let Some(bytes) = files[n].as_ref() else {
            continue;
        };
        let rewritten = (|| -> Result<Vec<u8>, String> {
            let mut grant = budget.reserve(0, DEFAULT_WAIT).map_err(|e| e.to_string())?;
            let mut inflated = Vec::new();
            let (mut meta, mut ds, enc) =
                p10::read_file_in(bytes, &mut inflated, p10::Limits::default(), &mut grant)
                    .map_err(|e| format!("cannot deface: {e}"))?;
            let _pixels = series::put_defaced(
                &vol,
                k,
                (&mut meta, &mut ds, enc),
                &defaced.removed,
                &vol.volume.data,
                budget,
            )
            .map_err(|e| format!("cannot deface: {e}"))?;
            let mut w = Vec::with_capacity(bytes.len().saturating_add(1024));
            p10::write_file(&meta.elements, &ds, &meta.transfer_syntax, &mut w);
            Ok(w)
        })();
        out.push((
            n,
            match rewritten {
                Ok(b) => deidentify(shared, settings, &b, VisualFeatures::Cleaned),
                Err(why) => Done::Failed(why),
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_give_back_their_position_only() {
        assert_eq!(position(&name(7)), Some(7));
        assert_eq!(position(Path::new("instance-x")), None);
        assert_eq!(position(Path::new("/etc/passwd")), None);
    }
}
