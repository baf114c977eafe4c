//! The patient's consent page: research use, AI training and commercial use of their
//! images, each yes or no with the date it was given or withdrawn and what the site assumes
//! when nothing is said; and "remove my images from future research and AI-training
//! datasets" (every purpose withdrawn at once). Each change is a new version of the
//! patient's FHIR Consent ([`radveil_consent`]), audited (ConsentChange, with what changed
//! in words), and a withdrawal gives the exports already holding the patient's images a
//! withdrawal notice ([`super::notices`]).

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use maud::html;
use radveil_access::Action as AccessAction;
use radveil_audit::{Action, PatientAccess};
use radveil_consent::{Change, Consents, PatientId, Policy, Purpose, Recorder, Source};

use super::pages::{self, message, Page};
use super::session::{constant_time_eq, Session};
use crate::app::AppState;
use crate::audit::What;

/// How a purpose is named to the patient.
fn label(p: Purpose) -> (&'static str, &'static str) {
    match p {
        Purpose::Research => (
            "Research",
            "Researchers may use copies of your images, with your name and other details removed, to study diseases and treatments.",
        ),
        Purpose::AiTraining => (
            "Training AI",
            "Copies of your images, with your name and other details removed, may be used to teach computer programs (artificial intelligence) to read scans.",
        ),
        Purpose::Commercial => (
            "Commercial use",
            "Companies may use copies of your images, with your name and other details removed, to build and sell products.",
        ),
    }
}

/// "3 March 2026" from an RFC 3339 time or a FHIR date.
fn day(t: &str) -> String {
    let d: String = t.chars().filter(char::is_ascii_digit).take(8).collect();
    pages::date(&d)
}

fn consents(state: &AppState) -> Result<&std::sync::Arc<Consents>, Box<Response>> {
    state.portal.consents.as_ref().ok_or_else(|| {
        Box::new(message(
            StatusCode::NOT_FOUND,
            "Consent is not kept here",
            "This server does not keep patients' consent.",
            false,
        ))
    })
}

/// `GET /portal/consent`.
pub async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(s) = state.portal.sessions.of(&headers) else {
        return pages::signed_out(&state);
    };
    let Some(p) = pages::patient_of(&s) else {
        return message(
            StatusCode::FORBIDDEN,
            "Not for staff accounts",
            "Consent is given by patients on their own account.",
            false,
        );
    };
    let consents = match consents(&state) {
        Ok(c) => c.clone(),
        Err(r) => return *r,
    };
    let handle = state.store.patient(p.id(), p.issuer());
    let current = match tokio::task::spawn_blocking(move || consents.current(&handle)).await {
        Ok(Ok(c)) => c,
        _ => {
            return message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Your consent could not be read just now. Please try again later.",
                false,
            )
        }
    };
    let defaults = state
        .portal
        .consents
        .as_ref()
        .map(|c| c.defaults())
        .unwrap_or_default();
    let body = html! {
        h1 { "Your choices" }
        p { "Your images are always used for your own care. Here you choose whether copies of them, with your name and other details removed, may also be used for the purposes below. You can change your mind at any time; a change applies to every dataset made after it, and datasets already made are told to delete your images." }
        form method="post" action="/portal/consent" {
            input type="hidden" name="csrf" value=(s.csrf);
            @for purpose in Purpose::ALL {
                @let (name, what) = label(purpose);
                @let choice = current.as_ref().and_then(|c| c.choice(purpose));
                @let permitted = current.as_ref().map_or(defaults.of(purpose).permits(), |c| c.permits(&defaults, purpose, None));
                fieldset {
                    legend { (name) }
                    p { (what) }
                    p class="note" {
                        @match choice {
                            Some(c) if c.permitted => { "You said yes on " (day(&c.since)) "." }
                            Some(c) => { "You said no on " (day(&c.since)) "." }
                            None => @match defaults.of(purpose) {
                                Policy::OptIn => "You have not said yet: until you say yes, your images are not used for this.",
                                Policy::OptOut => "You have not said yet: unless you say no, your images may be used for this.",
                            },
                        }
                    }
                    @let id_yes = format!("{}-yes", purpose.as_str());
                    @let id_no = format!("{}-no", purpose.as_str());
                    div {
                        input type="radio" id=(id_yes) name=(purpose.as_str()) value="yes" checked[permitted];
                        label for=(id_yes) { "Yes, my images may be used for this" }
                    }
                    div {
                        input type="radio" id=(id_no) name=(purpose.as_str()) value="no" checked[!permitted];
                        label for=(id_no) { "No" }
                    }
                }
            }
            button type="submit" { "Save my choices" }
        }
        h2 { "Remove my images from future datasets" }
        p { "This says no to all three at once. Research and AI-training datasets made from now on will not include your images, and the people who received earlier datasets are told which images of yours to delete." }
        form method="post" action="/portal/consent/withdraw" {
            input type="hidden" name="csrf" value=(s.csrf);
            button type="submit" class="secondary" { "Remove my images from future research and AI-training datasets" }
        }
    };
    Page::new("Your choices").session(&s).body(body).render()
}

/// The consent form.
#[derive(serde::Deserialize)]
pub struct ConsentForm {
    csrf: String,
    research: Option<String>,
    #[serde(rename = "ai-training")]
    ai_training: Option<String>,
    commercial: Option<String>,
}

/// The withdrawal form.
#[derive(serde::Deserialize)]
pub struct WithdrawForm {
    csrf: String,
}

/// A session allowed to post: a patient's, with the form's CSRF value.
fn poster(state: &AppState, headers: &HeaderMap, csrf: &str) -> Result<Session, Response> {
    let Some(s) = state.portal.sessions.of(headers) else {
        return Err(pages::signed_out(state));
    };
    if !constant_time_eq(s.csrf.as_bytes(), csrf.as_bytes()) {
        return Err(message(
            StatusCode::FORBIDDEN,
            "Not saved",
            "This form is out of date. Please go back, reload the page and try again.",
            false,
        ));
    }
    Ok(s)
}

/// `POST /portal/consent`: the yes/no switches.
pub async fn save(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<ConsentForm>,
) -> Response {
    let mut set = Vec::new();
    for (purpose, value) in [
        (Purpose::Research, &form.research),
        (Purpose::AiTraining, &form.ai_training),
        (Purpose::Commercial, &form.commercial),
    ] {
        match value.as_deref() {
            Some("yes") => set.push((purpose, true)),
            Some("no") => set.push((purpose, false)),
            None => {}
            Some(_) => {
                return message(
                    StatusCode::BAD_REQUEST,
                    "Not saved",
                    "The form was not understood.",
                    false,
                )
            }
        }
    }
    change(state, headers, &form.csrf, Some(set)).await
}

/// `POST /portal/consent/withdraw`: every purpose withdrawn.
pub async fn withdraw(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<WithdrawForm>,
) -> Response {
    change(state, headers, &form.csrf, None).await
}

/// Records `set` (or, for `None`, the withdrawal of everything) for the session's patient,
/// audits it, and sends the browser back to the consent page.
async fn change(
    state: AppState,
    headers: HeaderMap,
    csrf: &str,
    set: Option<Vec<(Purpose, bool)>>,
) -> Response {
    let s = match poster(&state, &headers, csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some(p) = pages::patient_of(&s) else {
        return message(
            StatusCode::FORBIDDEN,
            "Not for staff accounts",
            "Consent is given by patients on their own account.",
            false,
        );
    };
    let consents = match consents(&state) {
        Ok(c) => c.clone(),
        Err(r) => return *r,
    };
    let handle = state.store.patient(p.id(), p.issuer());
    let who = PatientId {
        id: p.id().to_string(),
        issuer: p.issuer().to_string(),
    };
    let recorder = Recorder {
        subject: Some(s.principal.subject.clone()),
        role: "patient".into(),
    };
    let done = tokio::task::spawn_blocking(move || -> Result<Change, String> {
        let c = match set {
            Some(set) => consents.update(&handle, &who, &set, recorder, Source::Portal),
            None => consents.withdraw_all(&handle, &who, recorder, Source::Portal),
        };
        c.map_err(|e| e.to_string())
    })
    .await;
    let issuer = (!p.issuer().is_empty()).then(|| p.issuer().to_string());
    let mut what = What {
        action: Some(Action::ConsentChange),
        ..What::default()
    };
    what.patients.push(PatientAccess {
        id: p.id().to_string(),
        issuer,
        ..PatientAccess::default()
    });
    let caller = pages::caller(&s, AccessAction::WriteConsent);
    let resp = match done {
        Ok(Ok(change)) => {
            what.detail = Some(change.words());
            if !change.withdrawn.is_empty() {
                super::notices::after_withdrawal(&state, &handle, &change).await;
            }
            let mut r = StatusCode::SEE_OTHER.into_response();
            r.headers_mut().insert(
                header::LOCATION,
                HeaderValue::from_static("/portal/consent"),
            );
            r
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "a consent change could not be recorded");
            message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Not saved",
                "Your choices could not be saved just now. Please try again later.",
                false,
            )
        }
        Err(_) => message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Not saved",
            "Please try again later.",
            false,
        ),
    };
    let mut r = what.attach(resp);
    r.extensions_mut().insert(caller);
    r
}
