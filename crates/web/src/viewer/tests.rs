use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;

/// OHIF 3.13.2's two inline scripts once rebased onto /viewer/ (tools/viewer/prepare).
const SCRIPT_1: &str = r#"console.time("scriptToView"),window.PUBLIC_URL="/viewer/""#;
const SCRIPT_2: &str =
    r#"function browserImportFunction(n){return import(n)}window.PUBLIC_URL="/viewer/""#;

fn index_html() -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"UTF-8\">\
         <script>{SCRIPT_1}</script><link rel=\"manifest\" href=\"/viewer/manifest.json\">\
         <script rel=\"preload\" as=\"script\" src=\"/viewer/app-config.js\"></script>\
         <SCRIPT type=\"module\" src=\"/viewer/init-service-worker.js\"></SCRIPT>\
         <script>{SCRIPT_2}</script><script defer src=\"/viewer/app.bundle.0f6159c501addfe9.js\"></script>\
         </head><body><noscript>JS</noscript><div id=\"root\"></div></body></html>"
    )
}

/// A viewer folder: index.html, a hashed bundle, a codec, a hidden file, a sub-folder.
fn folder(dir: &Path) {
    std::fs::write(dir.join("index.html"), index_html()).unwrap();
    std::fs::write(dir.join("app.bundle.0f6159c501addfe9.js"), "window.x=1;\n").unwrap();
    std::fs::write(dir.join("app.bundle.css"), "body{}\n").unwrap();
    std::fs::write(dir.join("0ddf166f7a343eda.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(dir.join(".prepared-version"), "secret-ish\n").unwrap();
    std::fs::create_dir(dir.join("assets")).unwrap();
    std::fs::write(dir.join("assets").join("favicon.ico"), b"ico").unwrap();
}

fn app(viewer: Option<Viewer>, dir: &Path) -> axum::Router {
    let store = radveil_store::Store::open(
        &radveil_store::Layout::under(dir),
        radveil_store::Key::random().unwrap(),
    )
    .unwrap();
    crate::router(AppState {
        store,
        limits: Default::default(),
        metrics: Default::default(),
        access: crate::auth::AccessControl::Open,
        catalogue: Default::default(),
        auditor: None,
        ingest: None,
        https: false,
        disk: None,
        portal: crate::portal::PortalState {
            viewer: viewer.map(Arc::new),
            ..Default::default()
        },
    })
}

async fn get(app: &axum::Router, uri: &str) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let r = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = r.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes().to_vec();
    (parts.status, parts.headers, bytes)
}

#[test]
fn the_policy_hashes_exactly_the_inline_scripts() {
    let html = index_html();
    assert_eq!(inline_scripts(&html), vec![SCRIPT_1, SCRIPT_2]);
    // The hashes a browser computed for these scripts (Chromium 156 ran OHIF under this
    // policy with no violation reported).
    assert_eq!(
        script_hash(SCRIPT_1),
        "'sha256-4Z+QhQQ5Jbp+XWElD2tVnN0P74JLwp4gladbRtshx/8='"
    );
    assert_eq!(
        script_hash(SCRIPT_2),
        "'sha256-7EajqkDz7lgQAR4AbuPs8DJJhwT8bUhcTzjZ6SP3ijM='"
    );
    assert_eq!(
        script_hash(""),
        "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
    );
    let p = policy(&inline_scripts(&html));
    assert!(
        p.starts_with("default-src 'none'; script-src 'self' 'sha256-4Z+Q"),
        "{p}"
    );
    assert!(p.contains("'wasm-unsafe-eval'") && p.contains("frame-ancestors 'none'"));
    assert!(p.contains("connect-src 'self';"));
    assert!(!p
        .split(';')
        .any(|d| d.trim_start().starts_with("script-src")
            && (d.contains("'unsafe-inline'") || d.contains("'unsafe-eval'"))));
}

#[test]
fn inline_scripts_are_told_from_scripts_with_a_source() {
    let html = "<script src=x.js></script><script\ttype=module>a()</script>\
                <scripts>no</scripts><script data-src=\"y\">b()</script>\
                <script/src=\"z\"></script><SCRIPT>c()</Script><script async>";
    assert_eq!(inline_scripts(html), vec!["a()", "b()", "c()"]);
    assert!(inline_scripts("<script>unterminated").is_empty());
    assert!(inline_scripts("").is_empty());
}

#[test]
fn only_plain_paths_are_looked_up() {
    assert_eq!(classify(""), Target::App);
    assert_eq!(classify("viewer"), Target::File("viewer"));
    assert_eq!(
        classify("assets/favicon.ico"),
        Target::File("assets/favicon.ico")
    );
    assert_eq!(
        classify("app.bundle.0f6159c501addfe9.js"),
        Target::File("app.bundle.0f6159c501addfe9.js")
    );
    for bad in [
        "..",
        "../Cargo.toml",
        "assets/../../x",
        ".",
        "./index.html",
        ".prepared-version",
        "assets/.hidden",
        "%2e%2e/x",
        "..%2fx",
        "a//b",
        "viewer/",
        "/etc/passwd",
        "a\\..\\b",
        "a b",
        "a;b",
        "a\0b",
        "é",
        "a/b/c/d/e/f/g/h/i",
    ] {
        assert_eq!(classify(bad), Target::Refused, "{bad:?}");
    }
    assert_eq!(classify(&"a".repeat(256)), Target::Refused);
    assert_eq!(
        classify(&"a".repeat(255)),
        Target::File(&"a".repeat(255)[..])
    );
}

#[test]
fn types_and_caching() {
    assert_eq!(content_type("0ddf166f7a343eda.wasm"), "application/wasm");
    assert_eq!(
        content_type("app.bundle.0f6159c501addfe9.js"),
        "text/javascript; charset=utf-8"
    );
    assert_eq!(content_type("a34f9d1faa5f3315.woff2"), "font/woff2");
    assert_eq!(content_type("assets/x.PNG"), "image/png");
    assert_eq!(content_type("noext"), "application/octet-stream");
    assert_eq!(
        cache_control("app.bundle.0f6159c501addfe9.js"),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(
        cache_control("0ddf166f7a343eda.wasm"),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(cache_control("app.bundle.css"), "no-cache");
    assert_eq!(cache_control("init-service-worker.js"), "no-cache");
}

#[test]
fn a_folder_not_prepared_for_viewer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(Viewer::open(dir.path()), Err(ViewerError::Io(..))));
    // OHIF as shipped: built for the site root.
    std::fs::write(
        dir.path().join("index.html"),
        "<script>window.PUBLIC_URL=\"/\"</script><script src=\"/app-config.js\"></script>",
    )
    .unwrap();
    assert!(matches!(
        Viewer::open(dir.path()),
        Err(ViewerError::NotPrepared(..))
    ));
    std::fs::write(dir.path().join("index.html"), index_html()).unwrap();
    let v = Viewer::open(dir.path()).unwrap();
    assert!(v.csp().to_str().unwrap().contains(&script_hash(SCRIPT_2)));
    assert!(matches!(
        Viewer::open(&dir.path().join("nothing")),
        Err(ViewerError::Io(..))
    ));
}

#[tokio::test]
async fn files_routes_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    folder(&www);
    // A secret beside the folder, and links to it from inside.
    std::fs::write(dir.path().join("secret.txt"), "SECRET").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), www.join("leak.txt")).unwrap();
    std::os::unix::fs::symlink(dir.path(), www.join("up")).unwrap();
    let viewer = Viewer::open(&www).unwrap();
    let csp = viewer.csp().clone();
    let app = app(Some(viewer), data.path());

    let check_headers = |h: &axum::http::HeaderMap| {
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], csp);
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
    };

    // An app route (with the study in the query) gets index.html, never cached.
    for uri in [
        "/viewer/",
        "/viewer/viewer?StudyInstanceUIDs=1.2.3",
        "/viewer/viewer/dicomweb",
        "/viewer/index.html",
    ] {
        let (s, h, b) = get(&app, uri).await;
        assert_eq!(s, StatusCode::OK, "{uri}");
        assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
        assert_eq!(b, index_html().into_bytes());
        check_headers(&h);
    }
    let (s, h, _) = get(&app, "/viewer").await;
    assert_eq!(s, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(h[header::LOCATION], "/viewer/");

    // Files: their types, and hashed ones cached.
    let (s, h, b) = get(&app, "/viewer/0ddf166f7a343eda.wasm").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "application/wasm");
    assert_eq!(h[header::CONTENT_LENGTH], "8");
    assert_eq!(
        h[header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(b, b"\0asm\x01\0\0\0");
    check_headers(&h);
    let (s, h, b) = get(&app, "/viewer/assets/favicon.ico").await;
    assert_eq!((s, b.as_slice()), (StatusCode::OK, &b"ico"[..]));
    assert_eq!(h[header::CACHE_CONTROL], "no-cache");

    // The generated app-config: this origin's DICOMweb and the session's token.
    let (s, h, b) = get(&app, "/viewer/app-config.js").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
    assert_eq!(h[header::CACHE_CONTROL], "no-store");
    let text = String::from_utf8(b).unwrap();
    assert!(text.contains("qidoRoot: window.location.origin + '/dicom-web'"));
    assert!(text.contains(&format!("sessionStorage.getItem('{TOKEN_KEY}')")));
    assert!(text.contains("routerBasename: '/viewer'"));

    // Refused: traversal (raw and escaped), hidden files, links out of the folder, missing
    // files; each a plain 404 with the same headers.
    for uri in [
        "/viewer/../secret.txt",
        "/viewer/%2e%2e/secret.txt",
        "/viewer/..%2fsecret.txt",
        "/viewer/up/secret.txt",
        "/viewer/leak.txt",
        "/viewer/.prepared-version",
        "/viewer/assets/../../secret.txt",
        "/viewer/missing.js",
        "/viewer//etc/passwd",
    ] {
        let (s, h, b) = get(&app, uri).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(b, b"not found\n", "{uri}");
        check_headers(&h);
    }
}

#[tokio::test]
async fn without_a_viewer_it_is_not_installed() {
    let data = tempfile::tempdir().unwrap();
    let app = app(None, data.path());
    for uri in [
        "/viewer/",
        "/viewer/viewer?StudyInstanceUIDs=1",
        "/viewer/app-config.js",
    ] {
        let (s, h, b) = get(&app, uri).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert!(String::from_utf8(b).unwrap().contains("not installed"));
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(h[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'"));
    }
}

#[tokio::test]
async fn a_large_file_is_sent_whole_in_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    folder(dir.path());
    let big: Vec<u8> = (0..(3 * CHUNK + 17)).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("1234567890abcdef.wasm"), &big).unwrap();
    let app = app(Some(Viewer::open(dir.path()).unwrap()), data.path());
    let (s, h, b) = get(&app, "/viewer/1234567890abcdef.wasm").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::CONTENT_LENGTH], big.len().to_string().as_str());
    assert_eq!(b, big);
}

#[tokio::test]
async fn only_a_script_run_as_a_worker_may_evaluate_strings() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    folder(dir.path());
    let viewer = Viewer::open(dir.path()).unwrap();
    let csp = viewer.csp().clone();
    let app = app(Some(viewer), data.path());
    let fetch = |uri: &'static str, dest: &'static str| {
        let app = app.clone();
        async move {
            app.oneshot(
                Request::get(uri)
                    .header("sec-fetch-dest", dest)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap()
        }
    };
    let r = fetch("/viewer/app.bundle.0f6159c501addfe9.js", "worker").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], WORKER_POLICY);
    assert_eq!(r.headers()[header::VARY], "Sec-Fetch-Dest");
    assert!(WORKER_POLICY.contains("'unsafe-eval'"));
    assert!(!csp.to_str().unwrap().contains("'unsafe-eval'"));
    // The same file as a page's script, and the page itself asked for as a worker, keep
    // the page's policy; so does a script that is not there.
    let r = fetch("/viewer/app.bundle.0f6159c501addfe9.js", "script").await;
    assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], csp);
    assert_eq!(r.headers()[header::VARY], "Sec-Fetch-Dest");
    for uri in [
        "/viewer/",
        "/viewer/viewer",
        "/viewer/missing.js",
        "/viewer/0ddf166f7a343eda.wasm",
    ] {
        let r = fetch(uri, "worker").await;
        assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], csp, "{uri}");
    }
    let r = fetch("/viewer/app.bundle.0f6159c501addfe9.js", "serviceworker").await;
    assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], csp);
}
