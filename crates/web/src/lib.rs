//! `radveil-web`: the gateway's DICOMweb service (PS3.18) over the encrypted store.
//!
//! - STOW-RS (`POST /dicom-web/studies[/{study}]`), each part stored (encrypted) before the
//!   response is sent; bad parts refused with a PS3.18 failure reason while good ones are
//!   stored.
//! - WADO-RS retrieve of studies, series and instances (`multipart/related;
//!   type="application/dicom"`), in the original transfer syntax or Explicit VR Little
//!   Endian.
//! - WADO-RS metadata of studies, series and instances ([`metadata`]): DICOM JSON from
//!   each instance's sealed metadata copy, with BulkDataURIs for pixel data and long binary
//!   values.
//! - WADO-RS frames ([`frames`]) and bulk data ([`bulkdata`]): `application/octet-stream`
//!   (decoded where radveil can) or the stored bitstreams with their media types.
//! - WADO-RS rendered images and thumbnails ([`rendered`]): `image/jpeg` or `image/png`,
//!   Modality LUT and VOI window applied.
//! - DELETE of studies, series and instances (crypto-shredded by the store).
//! - `/healthz` and `/metrics`.
//!
//! - Access control ([`auth`], `radveil-access`): bearer tokens on every DICOMweb route.
//!   Without an issuer configured ([`auth::AccessControl::Open`]) [`serve`] listens on
//!   loopback addresses only.
//! - The audit trail ([`audit`], `radveil-audit`): one sealed, Merkle-logged event per
//!   request on the DICOMweb and audit routes, durable before the response goes (a request
//!   whose event cannot be written is answered 500); `GET /audit` and `GET /me/access-log`
//!   read it ([`audit_routes`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod audit;
pub mod audit_routes;
pub mod auth;
pub mod bulkdata;
pub mod dicom_json;
pub mod disk;
pub mod download;
pub mod fhir_careteam;
pub mod fhir_consent;
pub mod frames;
pub mod ingest;
pub mod instance;
pub mod metadata;
pub mod metrics;
pub mod multipart;
pub mod portal;
pub mod qido;
pub mod rendered;
pub mod scope;
pub mod server;
pub mod stow;
mod streamed;
pub mod tls;
pub mod transfer;
pub mod viewer;
pub mod wado;

use std::net::SocketAddr;
use std::sync::Arc;

pub use app::{router, AppState, Limits};
/// Access control (re-exported for the binary's wiring).
pub use radveil_access as access;
pub use server::ConnectionLimits;

/// Why the server did not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Listening elsewhere than loopback without access control.
    #[error("{0} is not a loopback address: without access control (--dev, --jwks or --oidc-issuer) radveil serve listens on loopback only")]
    NotLoopback(SocketAddr),
    /// Binding or serving failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The QIDO-RS catalogue could not be read from the store's index.
    #[error("reading the index for searching: {0}")]
    Catalogue(radveil_store::StoreError),
}

/// How [`serve`] listens: plain HTTP or HTTPS, and the limits on each connection.
#[derive(Debug, Clone, Default)]
pub struct Listening {
    /// HTTPS with this configuration ([`tls::server_config`]); plain HTTP when `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Timeouts and caps on connections and request bodies.
    pub limits: ConnectionLimits,
}

/// Serves the gateway on `addr` until SIGTERM or Ctrl-C; then stops accepting, lets the
/// requests in flight finish (so nothing acknowledged is lost) and returns. `ready` gets the
/// address bound (port 0 picks a free one).
pub async fn serve(
    addr: SocketAddr,
    state: AppState,
    listening: Listening,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    if !addr.ip().is_loopback() && matches!(state.access, auth::AccessControl::Open) {
        return Err(ServeError::NotLoopback(addr));
    }
    // Searches answer from memory: the catalogue is filled before the first request.
    state
        .catalogue
        .load(&state.store)
        .await
        .map_err(ServeError::Catalogue)?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let stop = shutdown();
    ready(listener.local_addr()?);
    let tls = listening.tls.map(tokio_rustls::TlsAcceptor::from);
    server::run(listener, tls, router(state), listening.limits, stop).await;
    Ok(())
}

/// A future resolving on SIGTERM or Ctrl-C. The handlers are installed now, before it is
/// first polled: a signal sent as soon as the server says it is ready stops it gracefully
/// rather than killing it.
fn shutdown() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (mut term, mut int) = signals;
            let term = async {
                match term.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let int = async {
                match int.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = term => {}
                () = int => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutting down: finishing requests in flight");
    }
}
