//! Room on the data directory's filesystem: a store that would leave less than a reserve
//! free is refused (507 Insufficient Storage) before its body is read, so that the disk
//! never fills with the gateway's own objects and there is always room for what every
//! request writes (its audit event, the index's journal): reads, searches and deletes go on
//! being served, and audited, while stores are refused. Once space is freed stores work
//! again, with nothing to reset.
//!
//! A disk filled by something else is still handled where the write fails: the store
//! refuses the instance with PS3.18 failure reason A700 (out of resources).

use std::path::PathBuf;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::app::AppState;

/// The reserve kept free on the data directory's filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskReserve {
    /// A path on the filesystem to watch (the data directory).
    pub dir: PathBuf,
    /// Bytes left free for what reads and deletes write.
    pub min_free: u64,
}

/// The reserve when none is configured.
pub const DEFAULT_MIN_FREE: u64 = 256 << 20;

/// A store refused for want of room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the data directory's filesystem has {free} bytes free; this store needs {needed} with the reserve of {reserve} kept free")]
pub struct NoRoom {
    /// Bytes free now.
    pub free: u64,
    /// Bytes the store would need, the reserve included.
    pub needed: u64,
    /// The reserve.
    pub reserve: u64,
}

/// How much a stored byte may cost on disk: the sealed object, its sealed metadata copy and
/// the index's and journal's rows.
const COST: u64 = 2;

impl DiskReserve {
    /// Bytes available to this process on the watched filesystem.
    pub fn free(&self) -> std::io::Result<u64> {
        let s = rustix::fs::statvfs(&self.dir)?;
        Ok(s.f_bavail.saturating_mul(s.f_frsize))
    }

    /// `Ok` when a request body of `bytes` can be stored and leave the reserve free. When
    /// the free space cannot be read the store is let through (its writes then fail on
    /// their own, with A700).
    pub fn room_for(&self, bytes: u64) -> Result<(), NoRoom> {
        let Ok(free) = self.free() else {
            return Ok(());
        };
        let needed = bytes.saturating_mul(COST).saturating_add(self.min_free);
        if free < needed {
            return Err(NoRoom {
                free,
                needed,
                reserve: self.min_free,
            });
        }
        Ok(())
    }
}

/// Middleware (inside access control): refuses, before any of the body is read, a request
/// whose declared `Content-Length` is over the size limit (413; a chunked body is cut off
/// at the limit by the router) and a STOW-RS the disk has no room for with the reserve
/// kept (507). Both close the connection: the unread body leaves it unusable.
pub async fn refuse_early(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let declared = declared_length(&req);
    let max = state.limits.max_request;
    if declared.is_some_and(|n| n > max as u64) {
        tracing::warn!(
            limit = max,
            "request refused: its declared body is over the limit"
        );
        return refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the limit of {max} bytes\n"),
        );
    }
    let store = req.method() == Method::POST && req.uri().path().starts_with("/dicom-web/studies");
    if let Some(e) = state
        .disk
        .as_ref()
        .filter(|_| store)
        .and_then(|d| d.room_for(declared.unwrap_or(0)).err())
    {
        tracing::warn!(
            free = e.free,
            needed = e.needed,
            reserve = e.reserve,
            "store refused: the data directory's filesystem is (nearly) full"
        );
        return refusal(
            StatusCode::INSUFFICIENT_STORAGE,
            format!("insufficient storage: {e}. Nothing of this request was stored; what was stored before is kept and served. Free space on the data directory's filesystem and send it again.\n"),
        );
    }
    next.run(req).await
}

/// The request's `Content-Length`, when it has one that parses.
fn declared_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn refusal(status: StatusCode, text: String) -> Response {
    let mut r = Response::new(axum::body::Body::from(text));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_must_leave_the_reserve_free() {
        let dir = tempfile::tempdir().unwrap();
        let open = DiskReserve {
            dir: dir.path().to_path_buf(),
            min_free: 0,
        };
        let free = open.free().unwrap();
        assert!(free > 0);
        assert_eq!(open.room_for(0), Ok(()));
        // More than there is, and the reserve on top of a body that fits: refused.
        let e = open.room_for(free).unwrap_err();
        assert_eq!((e.free > 0, e.needed, e.reserve), (true, free * COST, 0));
        let tight = DiskReserve {
            min_free: free.saturating_add(1 << 30),
            ..open.clone()
        };
        assert!(tight.room_for(1).is_err());
        assert!(DiskReserve {
            min_free: u64::MAX,
            ..open
        }
        .room_for(u64::MAX)
        .is_err());
    }
}
