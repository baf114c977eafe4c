//! `radveil deid` as a batch: `radveil_pipeline::batch` does the work; this draws the
//! progress bar (on a terminal) and prints the summary line.

use std::io::IsTerminal;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use radveil_pipeline::batch::{self, Batch, Progress};
use radveil_pipeline::report::Summary;

/// A progress bar on standard error, drawn only on a terminal.
struct Bar(ProgressBar);

impl Progress for Bar {
    fn start(&self, total: u64) {
        self.0.set_length(total);
    }
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
}

/// Runs the batch and prints a summary on standard error.
pub fn run(b: &Batch<'_>) -> Result<Summary> {
    let bar = Bar(if std::io::stderr().is_terminal() {
        ProgressBar::new(0).with_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} files ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
    } else {
        ProgressBar::hidden()
    });
    let done = batch::run(b, &bar);
    bar.0.finish_and_clear();
    let done = done?;
    let summary = done.summary;
    let secs = done.elapsed.as_secs_f64();
    let kept = if summary.kept > 0 || b.resume {
        format!(", {} kept from an earlier run", summary.kept)
    } else {
        String::new()
    };
    let swept = match done.stale_removed {
        0 => String::new(),
        n => format!("; {n} temporaries of an interrupted run removed"),
    };
    eprintln!(
        "radveil deid: {} written{kept}, {} held back, {} failed, {} duplicate, {} skipped in {:.1} s ({:.0} files/s){swept}",
        summary.written,
        summary.held,
        summary.failed,
        summary.duplicate,
        summary.skipped,
        secs,
        done.total as f64 / secs.max(1e-9)
    );
    Ok(summary)
}
