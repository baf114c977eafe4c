//! The patient's side of the gateway: the portal pages under `/portal`, the viewer under
//! `/viewer`, consent (`/fhir/Consent`), and the downloads a patient may take. What these
//! parts share lives in [`PortalState`], one field of [`crate::AppState`]; each part is
//! `None` (and its routes answer 404) when `radveil serve` was not given what it needs.

// A handler's early answer is a whole page (`Result<_, Response>`): its size is axum's
// Response's, paid once per request.
#![allow(clippy::result_large_err)]

pub mod consent;
pub mod notices;
pub mod pages;
pub mod research;
pub mod session;
pub mod share;
pub mod sharing;
pub mod signin;
pub mod staff;
pub mod unusual;
pub mod upload;
pub mod uploading;

/// What the patient's side shares between requests. Every field is optional, so tests of
/// other parts of the gateway build it with `Default::default()`.
#[derive(Debug, Clone, Default)]
pub struct PortalState {
    /// The OHIF viewer served under `/viewer` (`radveil serve --viewer DIR`); `None`: not installed.
    pub viewer: Option<std::sync::Arc<crate::viewer::Viewer>>,
    /// The portal's sessions (cookies of signed-in browsers).
    pub sessions: std::sync::Arc<session::Sessions>,
    /// Signing in with the site's OpenID provider (`radveil serve --portal-client-id`);
    /// `None`: the portal cannot be signed in to.
    pub signin: Option<std::sync::Arc<signin::SignIn>>,
    /// Patients' consents (`DATA/consent.db`), read and written by `/fhir/Consent` and the
    /// portal; `None`: none kept (those routes answer 404).
    pub consents: Option<std::sync::Arc<radveil_consent::Consents>>,
    /// The lineage of research exports and where withdrawal notices go; `None`: no
    /// notices are written (`radveil lineage --withdrawal-notices` still makes them).
    pub notices: Option<notices::Shared>,
    /// Share links (`DATA/shares.db`); `None`: sharing is off.
    pub shares: Option<std::sync::Arc<share::Shares>>,
    /// Images patients sent, held apart until staff attach them (`DATA/uploads.db`);
    /// `None`: uploads are off.
    pub uploads: Option<std::sync::Arc<upload::Uploads>>,
    /// The privacy officer's research exports (`radveil serve --export-profile`); `None`:
    /// exports are made with `radveil export` only.
    pub exports: Option<std::sync::Arc<research::ExportSite>>,
    /// Who treats whom, as the EHR records it (`DATA/careteam.db`); `None`: nobody is
    /// marked "outside the care team".
    pub careteams: Option<std::sync::Arc<radveil_consent::careteam::CareTeams>>,
    /// The site's night hours, for marking staff reading images at night.
    pub night: unusual::NightHours,
}

/// The portal's routes (under `/portal`), merged into the gateway's router.
pub fn routes() -> axum::Router<crate::AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/portal", get(pages::home))
        .route("/portal/", get(pages::home))
        .route("/portal/style.css", get(pages::style))
        .route("/portal/login", get(signin::login))
        .route("/portal/callback", get(signin::callback))
        .route("/portal/logout", post(signin::logout))
        .route("/portal/access-log", get(pages::access_log))
        .route("/portal/consent", get(consent::page).post(consent::save))
        .route("/portal/consent/withdraw", post(consent::withdraw))
        .route("/portal/share", get(sharing::form).post(sharing::create))
        .route("/portal/shares", get(sharing::list))
        .route("/portal/audit", get(staff::audit))
        .route("/portal/privacy", get(staff::privacy))
        .route("/portal/shares/revoke", post(sharing::revoke))
        .route("/portal/patient", get(sharing::find))
        .route(
            "/portal/privacy/export",
            get(research::page).post(research::start),
        )
        .route(
            "/portal/upload",
            get(uploading::page).post(uploading::receive),
        )
        .route("/portal/uploads", get(uploading::waiting))
        .route(
            "/portal/uploads/{id}",
            get(uploading::check).post(uploading::decide),
        )
        .route(
            "/s/{secret}",
            get(sharing::open).post(sharing::open_with_pin),
        )
        .route("/portal/{*rest}", get(pages::not_found))
}
