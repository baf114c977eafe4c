//! Counters served at `/metrics` in the Prometheus text format. They count requests and
//! instances, never anything about them.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::app::AppState;

/// The gateway's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    stored: AtomicU64,
    refused: AtomicU64,
    retrieved: AtomicU64,
    deleted: AtomicU64,
}

impl Metrics {
    /// Counts a store request's results.
    pub fn stored(&self, ok: usize, failed: usize) {
        self.stored.fetch_add(ok as u64, Ordering::Relaxed);
        self.refused.fetch_add(failed as u64, Ordering::Relaxed);
    }

    /// Counts instances retrieved.
    pub fn retrieved(&self, n: usize) {
        self.retrieved.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts instances deleted.
    pub fn deleted(&self, n: usize) {
        self.deleted.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, v) in [
            (
                "radveil_instances_stored_total",
                "Instances stored by STOW-RS.",
                &self.stored,
            ),
            (
                "radveil_instances_refused_total",
                "STOW-RS parts refused.",
                &self.refused,
            ),
            (
                "radveil_instances_retrieved_total",
                "Instances retrieved by WADO-RS.",
                &self.retrieved,
            ),
            (
                "radveil_instances_deleted_total",
                "Instances deleted.",
                &self.deleted,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        out
    }
}

/// `GET /metrics`.
pub async fn handler(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render()
            + &state
                .ingest
                .as_ref()
                .map(|i| i.counters.render())
                .unwrap_or_default(),
    )
}
