//! `radveil-access`: who may do what on the gateway.
//!
//! - [`Verifier`]: OAuth 2.0 bearer tokens (JWT, RFC 7519) verified against each trusted
//!   issuer's JWKS (a file, or OpenID Connect discovery from `--oidc-issuer`, cached and
//!   fetched again on an unknown `kid`, at most once per 30 s); `alg` taken from the key,
//!   never from the token alone (`none` and HMAC refused); `iss`, `aud`, `exp`, `nbf`
//!   (30 s leeway) checked; tokens over 8 KiB refused unread. Refusals are typed
//!   ([`Refusal`]) and never hold the token. A verified token is cached (by its hash,
//!   until its `exp`, while its issuer's key set is unchanged) so that a client's repeated
//!   requests are not each charged a signature verification.
//! - [`Principal`]: subject, client, roles (`admin`, `clinician`, `researcher`, `auditor`),
//!   SMART v2 scopes ([`smart`]) and the `patient` claim, with [`Principal::decide`] for
//!   each [`Action`]: a [`Grant`] reaching every patient or one ([`Compartment`]), with the
//!   break-glass reason when a clinician widened a read, or a typed [`Denied`].
//! - [`dev::DevIssuer`]: the local issuer of `radveil serve --dev` / `radveil token`.
//!
//! The `patient` claim is the DICOM Patient ID (0010,0020) as a string, or, where the site
//! uses Issuer of Patient ID (0010,0021), an object `{"id": "...", "issuer": "..."}`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cache;
pub mod dev;
pub mod jwks;
pub mod oidc;
pub mod principal;
pub mod smart;
pub mod verifier;

pub use jwks::{KeySet, PublicKey};
pub use principal::{Action, BreakGlass, Compartment, Denied, Grant, PatientRef, Principal, Role};
pub use verifier::{
    discover, Fetch, FetchError, HttpFetch, IssuerConfig, KeySource, Refusal, Settings, SetupError,
    Verifier, MAX_TOKEN,
};

#[cfg(test)]
mod tests;
