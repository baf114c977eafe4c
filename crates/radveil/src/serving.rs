//! `radveil serve`, `radveil keys rotate` and `radveil token`: the gateway's wiring (the data
//! directory, the key-encryption key, the trusted token issuers, the runtime); the store,
//! the service and access control are `radveil-store`'s, `radveil-web`'s and
//! `radveil-access`'s.
//!
//! Access control: with `--dev`, `--jwks` or `--oidc-issuer` every DICOMweb request needs a
//! bearer token from a trusted issuer, and the server may listen on any address. With none
//! of them there is no access control, and the server listens on loopback only (the
//! machine's own users are trusted): nothing is ever served unauthenticated to the network.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use radveil_store::{Key, Layout, Store};
use zeroize::Zeroizing;

use crate::key::{self, KeyPolicy};

pub(crate) mod config;
mod trail;

/// The environment variable that may hold the key-encryption key (64 hex digits).
const KEK_ENV: &str = "RADVEIL_KEK";

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The data directory (made on first run): the index, the encrypted objects and, in
    /// `keys/`, the key store and (unless given otherwise) the key-encryption key. Back up
    /// `keys/` apart from the rest: deleting a study destroys its keys there.
    #[arg(long)]
    data: PathBuf,
    /// Address and port to listen on (default 127.0.0.1:8042). Without --dev, --jwks or
    /// --oidc-issuer (no access control) only loopback addresses are allowed.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Serve HTTPS with this PEM certificate chain (the server's certificate first): TLS 1.2
    /// and 1.3 only, BCP 195 (RFC 9325) cipher suites.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert; refused if group or others may read it.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Trust the local development issuer (its Ed25519 key made on first run in
    /// DATA/keys/dev-issuer.key, mode 0600); `radveil token` prints tokens from it. For
    /// trying things out: whoever can read that file can mint any token.
    #[arg(long)]
    dev: bool,
    /// Trust the OpenID Connect issuer at URL: its keys are found by discovery
    /// (URL/.well-known/openid-configuration, then jwks_uri), cached, and fetched again
    /// when a token names an unknown key (at most every 30 s) or after an hour.
    #[arg(long, value_name = "URL")]
    oidc_issuer: Option<String>,
    /// Trust tokens whose `iss` is --issuer and that verify with a key of this JWKS file.
    #[arg(long, value_name = "FILE", requires = "issuer")]
    jwks: Option<PathBuf>,
    /// The `iss` of the tokens verified with --jwks.
    #[arg(long, requires = "jwks")]
    issuer: Option<String>,
    /// The audience (`aud`) tokens must name: this service (default radveil).
    #[arg(long)]
    audience: Option<String>,
    /// The claim holding the roles (admin, clinician, researcher, auditor): a name or a
    /// dotted path (realm_access.roles for Keycloak; default roles).
    #[arg(long)]
    roles_claim: Option<String>,
    /// File holding the key-encryption key (64 hex digits). Default: RADVEIL_KEK, else
    /// DATA/keys/kek, made (mode 0600) on first run.
    #[arg(long)]
    kek_file: Option<PathBuf>,
    /// Largest request body, like 512M or 2G (default 512M); a larger one is refused 413
    /// unread.
    #[arg(long, value_name = "SIZE", value_parser = crate::parse_memory_size)]
    max_request: Option<u64>,
    /// Most parts in one STOW-RS request (default 10000).
    #[arg(long, value_name = "N")]
    max_parts: Option<std::num::NonZeroUsize>,
    /// Longest wait for a request's headers or a TLS handshake, like 30s (the default).
    #[arg(long, value_name = "TIME", value_parser = parse_timeout)]
    header_timeout: Option<u64>,
    /// Longest time for a request's whole body to arrive, like 5m (the default).
    #[arg(long, value_name = "TIME", value_parser = parse_timeout)]
    body_timeout: Option<u64>,
    /// Longest a response may wait for the client to read it, like 1m (the default).
    #[arg(long, value_name = "TIME", value_parser = parse_timeout)]
    send_timeout: Option<u64>,
    /// Most client connections served at once (default 512).
    #[arg(long, value_name = "N")]
    max_connections: Option<std::num::NonZeroUsize>,
    /// Space kept free on the data directory's filesystem, like 256M (the default): a store
    /// that would leave less is refused (507) so that reads go on while the disk is full.
    /// 0 keeps no reserve.
    #[arg(long, value_name = "SIZE", value_parser = parse_free_disk)]
    min_free_disk: Option<u64>,
    /// File holding the audit key (64 hex digits). Default: RADVEIL_AUDIT_KEY, else
    /// DATA/keys/audit-key, made (mode 0600) on first run.
    #[arg(long)]
    audit_key_file: Option<PathBuf>,
    /// A folder kept apart from the data and its backups (one per data directory) where the
    /// latest signed checkpoints of the audit trail and the ledger are kept, at every start
    /// and clean stop: at start each must extend the one kept there, so a trail rolled back
    /// (put back from an older copy) or deleted stops the start. Without it, only tampering
    /// within the trails is found.
    #[arg(long, value_name = "DIR")]
    kept_checkpoints: Option<PathBuf>,
    /// Trusted signers of images (repeatable): a certificate file (PEM bundle or DER, as
    /// `radveil verify --trust` takes) or a directory of them. Each stored instance's
    /// signatures are verified against them; the outcome is kept in its metadata.
    #[arg(long, value_name = "PATH")]
    trust: Vec<PathBuf>,
    /// Refuse instances from CLIENT (a token's client_id/azp or sub; `*` for every client,
    /// the only value without access control) unless a trusted signer signed them
    /// (repeatable).
    #[arg(long, value_name = "CLIENT")]
    require_signed: Vec<String>,
    /// Serve the OHIF viewer under /viewer from DIR (OHIF's prebuilt @ohif/app prepared by
    /// tools/viewer/prepare; tools/setup-peers makes one in .radveil/viewer), configured
    /// against this gateway's /dicom-web. Without it /viewer answers 404.
    #[arg(long, value_name = "DIR")]
    viewer: Option<PathBuf>,
    /// The patient portal's client id at the OpenID provider of --oidc-issuer (its
    /// redirect URI there: --public-url followed by /portal/callback).
    #[arg(long, value_name = "ID", requires = "portal_client_secret_file")]
    portal_client_id: Option<String>,
    /// The file holding the portal client's secret (readable by its owner only).
    #[arg(long, value_name = "FILE")]
    portal_client_secret_file: Option<PathBuf>,
    /// The URL browsers reach this gateway at, like https://imaging.example.org.
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// The scopes the portal asks of the provider (default "openid patient/ImagingStudy.rs").
    #[arg(long, value_name = "SCOPES")]
    portal_scope: Option<String>,
    /// The resource indicator (RFC 8707) naming this gateway at the provider.
    #[arg(long, value_name = "URI")]
    portal_resource: Option<String>,
    /// The site's night hours, HH:MM-HH:MM (default 22:00-06:00): clinicians and
    /// administrators reading images then are marked in access logs and the auditor's report.
    #[arg(long, value_name = "HH:MM-HH:MM")]
    night_hours: Option<String>,
    /// The site's offset from UTC for --night-hours, like +01:00 (default +00:00).
    #[arg(long, value_name = "±HH:MM", allow_hyphen_values = true)]
    utc_offset: Option<String>,
    /// The de-identification profile of the privacy officer's research exports from the
    /// portal (TOML, as `radveil deid --profile`); without one the portal makes no exports.
    #[arg(long, value_name = "PROFILE.toml")]
    export_profile: Option<PathBuf>,
    /// An Annex E option added to --export-profile (repeatable).
    #[arg(long = "export-option", value_name = "NAME")]
    export_options: Vec<String>,
    /// The de-identification key of the portal's exports (default: RADVEIL_KEY).
    #[arg(long, value_name = "FILE")]
    export_key_file: Option<PathBuf>,
    /// The site's defaults for consent to research, AI training and commercial use
    /// (`[consent]` in DATA/radveil.toml; no flag).
    #[arg(skip)]
    consent: radveil_consent::Defaults,
    #[command(flatten)]
    keys: KeyPolicy,
}

#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Re-wrap the store's keys under a new key-encryption key (nothing is re-encrypted).
    Rotate {
        /// The data directory.
        #[arg(long)]
        data: PathBuf,
        /// The current key-encryption key (default: RADVEIL_KEK, else DATA/keys/kek).
        #[arg(long)]
        kek_file: Option<PathBuf>,
        /// The new key-encryption key (64 hex digits; make one with `radveil keygen`).
        #[arg(long)]
        new_kek_file: PathBuf,
        #[command(flatten)]
        keys: KeyPolicy,
    },
}

/// The KEK from `file`, or the environment, or `DATA/keys/kek` (made when `make`).
fn load_kek(data: &Path, file: Option<&Path>, policy: KeyPolicy, make: bool) -> Result<Key> {
    const WHAT: &str = "key-encryption key";
    if let Some(f) = file {
        return key::key_file(f, WHAT, policy, false);
    }
    if let Some(v) = std::env::var_os(KEK_ENV) {
        return Key::from_hex(&Zeroizing::new(v.into_encoded_bytes())).context(KEK_ENV);
    }
    let default = Layout::under(data).keys.with_file_name("kek");
    if make {
        Layout::under(data).create_dirs()?;
    }
    key::key_file(&default, WHAT, policy, make)
        .context("keep a copy of the key-encryption key apart from the data")
}

/// The dev issuer of DATA, its key (`DATA/keys/dev-issuer.key`) made when `make` and missing.
fn dev_issuer(
    data: &Path,
    policy: KeyPolicy,
    make: bool,
) -> Result<radveil_web::access::dev::DevIssuer> {
    let path = Layout::under(data).keys.with_file_name("dev-issuer.key");
    if make {
        Layout::under(data).create_dirs()?;
    } else if !path.exists() {
        bail!(
            "no dev issuer key in {}: start `radveil serve --dev --data {}` once first",
            path.display(),
            data.display()
        );
    }
    let seed = key::key_file(&path, "dev issuer key", policy, make)?;
    Ok(radveil_web::access::dev::DevIssuer::from_seed(
        seed.expose(),
    )?)
}

/// The access control `args` ask for: the trusted issuers, or none.
fn access_control(args: &ServeArgs) -> Result<radveil_web::auth::AccessControl> {
    use radveil_web::access::{IssuerConfig, KeySet, KeySource};
    let aud = args
        .audience
        .as_deref()
        .unwrap_or(radveil_web::access::dev::DEFAULT_AUDIENCE);
    let audience = vec![aud.to_string()];
    let mut issuers = Vec::new();
    if args.dev {
        issuers.push(dev_issuer(&args.data, args.keys, true)?.config(aud));
        eprintln!("radveil serve: trusting the dev issuer (for trying things out; mint tokens with `radveil token`)");
    }
    if let (Some(file), Some(iss)) = (&args.jwks, &args.issuer) {
        let bytes =
            radveil_pipeline::input::read_regular(file, radveil_web::access::jwks::MAX_JWKS as u64)
                .with_context(|| format!("reading {}", file.display()))?;
        let keys = KeySet::from_jwks(&bytes).with_context(|| format!("{}", file.display()))?;
        issuers.push(IssuerConfig {
            issuer: iss.clone(),
            audience: audience.clone(),
            keys: KeySource::Keys(keys),
        });
    }
    let fetch: std::sync::Arc<dyn radveil_web::access::Fetch> =
        std::sync::Arc::new(radveil_web::access::HttpFetch::default());
    if let Some(iss) = &args.oidc_issuer {
        let jwks = radveil_web::access::discover(iss, fetch.as_ref())
            .with_context(|| format!("OpenID Connect discovery of {iss}"))?;
        issuers.push(IssuerConfig {
            issuer: iss.clone(),
            audience,
            keys: KeySource::Url(jwks),
        });
    }
    if issuers.is_empty() {
        return Ok(radveil_web::auth::AccessControl::Open);
    }
    let settings = radveil_web::access::Settings {
        roles_claim: args
            .roles_claim
            .clone()
            .unwrap_or_else(|| config::DEFAULT_ROLES_CLAIM.into()),
        ..Default::default()
    };
    let verifier = radveil_web::access::Verifier::new(issuers, fetch, settings)?;
    Ok(radveil_web::auth::AccessControl::Tokens(
        std::sync::Arc::new(verifier),
    ))
}

/// Opens (or makes, on first run) the audit log `DATA/audit` with its key and starts its
/// writer. A torn last line (an append that crashed before it was acknowledged) is cut off
/// and kept beside the log.
fn open_audit(
    args: &ServeArgs,
) -> Result<(radveil_web::audit::Auditor, radveil_web::audit::Writer)> {
    let key =
        crate::auditing::audit_key(&args.data, args.audit_key_file.as_deref(), args.keys, true)?;
    let dir = args.data.join(radveil_audit::AUDIT_DIR);
    let mut log = radveil_audit::AuditLog::open_or_init(&dir, key)
        .with_context(|| format!("opening the audit log in {}", dir.display()))?;
    if let Some(kept) = log.repair_torn()? {
        eprintln!(
            "radveil serve: warning: the audit log had a torn last line (an append that crashed before it was acknowledged); its bytes are kept in {}",
            kept.display()
        );
    }
    let source = format!("radveil@{}", crate::auditing::hostname());
    radveil_web::audit::Auditor::start(log, source).context("starting the audit writer")
}

/// Opens the patients' consents, `DATA/consent.db`, sealed under `DATA/keys/consent-key`
/// (made, mode 0600, on first run), with the site's defaults.
fn open_consents(args: &ServeArgs) -> Result<std::sync::Arc<radveil_consent::Consents>> {
    let file = args.data.join(radveil_consent::CONSENT_KEY_FILE);
    let key = key::key_file(&file, "consent key", args.keys, true)
        .context("keep a copy of the consent key apart from the data")?;
    let consents = radveil_consent::Consents::open(&args.data, key, args.consent)
        .with_context(|| format!("opening the consents in {}", args.data.display()))?;
    Ok(std::sync::Arc::new(consents))
}

/// `args` with what the command line leaves unsaid taken from `DATA/radveil.toml` (whose
/// relative paths are relative to DATA, where the file is).
fn with_file(mut args: ServeArgs, file: config::FileConfig) -> ServeArgs {
    let data = args.data.clone();
    let at = |p: Option<PathBuf>| p.map(|p| data.join(p));
    let a = file.access;
    args.listen = args.listen.or(file.listen);
    // The command line's pair replaces the file's pair (never one of each).
    if args.tls_cert.is_none() {
        args.tls_cert = at(file.tls.cert);
        args.tls_key = at(file.tls.key);
    }
    args.dev |= a.dev.unwrap_or(false);
    args.oidc_issuer = args.oidc_issuer.or(a.oidc_issuer);
    if args.jwks.is_none() {
        args.jwks = at(a.jwks);
        args.issuer = a.issuer;
    }
    args.audience = args.audience.or(a.audience);
    args.roles_claim = args.roles_claim.or(a.roles_claim);
    args.kek_file = args.kek_file.or(at(file.keys.kek_file));
    args.audit_key_file = args.audit_key_file.or(at(file.keys.audit_key_file));
    args.kept_checkpoints = args.kept_checkpoints.or(at(file.keys.kept_checkpoints));
    let l = file.limits;
    args.max_request = args.max_request.or(l.max_request);
    args.max_parts = args.max_parts.or(l.max_parts);
    args.header_timeout = args.header_timeout.or(l.header_timeout);
    args.body_timeout = args.body_timeout.or(l.body_timeout);
    args.send_timeout = args.send_timeout.or(l.send_timeout);
    args.max_connections = args.max_connections.or(l.max_connections);
    args.min_free_disk = args.min_free_disk.or(l.min_free_disk);
    args.consent = file.consent.defaults();
    args.viewer = args.viewer.or(at(file.viewer));
    let p = file.portal;
    args.portal_client_id = args.portal_client_id.or(p.client_id);
    args.portal_client_secret_file = args.portal_client_secret_file.or(at(p.client_secret_file));
    args.public_url = args.public_url.or(p.public_url);
    args.portal_scope = args.portal_scope.or(p.scope);
    args.portal_resource = args.portal_resource.or(p.resource);
    args.night_hours = args.night_hours.or(p.night_hours);
    args.utc_offset = args.utc_offset.or(p.utc_offset);
    let e = file.export;
    if args.export_profile.is_none() {
        args.export_profile = at(e.profile);
        args.export_options = e.options;
    }
    args.export_key_file = args.export_key_file.or(at(e.key_file));
    args
}

/// Parses `--header-timeout` and `--body-timeout`: like 30s, 5m (at least a second).
fn parse_timeout(text: &str) -> std::result::Result<u64, String> {
    match parse_lifetime(text)? {
        0 => Err("at least 1s".into()),
        n => Ok(n),
    }
}

/// The HTTPS configuration of `--tls-cert`/`--tls-key`: the key is read only if its owner
/// alone may read it (whatever --strict says: a server key others can read is a leaked
/// key), and zeroized after use.
fn tls_config(cert: &Path, key: &Path) -> Result<std::sync::Arc<radveil_web::tls::ServerConfig>> {
    use radveil_pipeline::secret::{read_secret, PermissionPolicy};
    let chain = radveil_pipeline::input::read_regular(cert, radveil_pipeline::secret::MAX_KEY_FILE)
        .with_context(|| format!("reading the TLS certificate {}", cert.display()))?;
    let secret = read_secret(key, "TLS private key", PermissionPolicy::Refuse)?;
    radveil_web::tls::server_config(&chain, &secret.bytes)
        .with_context(|| format!("TLS with {} and {}", cert.display(), key.display()))
}

/// Integrity at ingest: the trusted signers, the signing policy, and the ledger
/// `DATA/ledger` (made on first run, with its site key and checkpoint signer key in
/// `DATA/keys`) with its writer started.
fn open_ingest(
    args: &ServeArgs,
) -> Result<(
    radveil_web::ingest::Ingest,
    radveil_web::ingest::LedgerWriter,
)> {
    let paths = radveil_web::ingest::Paths::under(&args.data);
    let origin = format!("{}/radveil/gateway", crate::auditing::hostname());
    let policy = permissions(args.keys);
    let require = radveil_web::ingest::RequireSigned::new(&args.require_signed);
    let (ingest, writer) =
        radveil_web::ingest::open(&paths, &origin, &args.trust, require, policy, {
            &mut |note| eprintln!("radveil serve: {note}")
        })
        .with_context(|| format!("opening the ledger in {}", paths.ledger.display()))?;
    Ok((ingest, writer))
}

/// The permission policy for key files of `--strict`.
fn permissions(keys: KeyPolicy) -> radveil_pipeline::secret::PermissionPolicy {
    match keys.strict {
        true => radveil_pipeline::secret::PermissionPolicy::Refuse,
        false => radveil_pipeline::secret::PermissionPolicy::Warn,
    }
}

/// The start-up verification of the audit trail and the ledger, running.
struct Checks {
    audit: std::thread::JoinHandle<Result<()>>,
    ledger: std::thread::JoinHandle<Result<()>>,
}

/// Starts verifying the audit trail and the ledger of `args.data` ([`trail`]), each on a
/// thread of its own.
fn start_checks(args: &ServeArgs) -> Checks {
    let (data, file, keys) = (args.data.clone(), args.audit_key_file.clone(), args.keys);
    let kept = args.kept_checkpoints.clone();
    let audit = std::thread::spawn(move || {
        trail::check_audit(&data, kept.as_deref(), || {
            crate::auditing::audit_key(&data, file.as_deref(), keys, false)
        })
    });
    let (data, kept) = (args.data.clone(), args.kept_checkpoints.clone());
    let ledger =
        std::thread::spawn(move || trail::check_ledger(&data, kept.as_deref(), permissions(keys)));
    Checks { audit, ledger }
}

impl Checks {
    /// Waits for both verifications: the first failure stops the start.
    fn wait(self) -> Result<()> {
        let joined = |what| anyhow::anyhow!("verifying the {what} stopped unexpectedly");
        let audit = self.audit.join().map_err(|_| joined("audit trail"))?;
        let ledger = self.ledger.join().map_err(|_| joined("ledger"))?;
        audit.and(ledger)
    }
}

pub fn serve(args: ServeArgs) -> Result<ExitCode> {
    // Whatever the store writes (databases, objects, their folders) is the owner's alone.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    // The data directory and its settings file, made on first run.
    Layout::under(&args.data)
        .create_dirs()
        .with_context(|| format!("making {}", args.data.display()))?;
    let file = config::load_or_create(&args.data)?;
    let args = with_file(args, file);
    // The audit trail and the ledger are verified before anything is added to them, on
    // threads of their own while the store opens: a tampered one stops the start.
    let checks = start_checks(&args);
    let listen = match args.listen {
        Some(a) => a,
        None => config::DEFAULT_LISTEN
            .parse()
            .context("the default address")?,
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(tls_config(c, k)?),
        _ => None,
    };
    let access = access_control(&args)?;
    if matches!(access, radveil_web::auth::AccessControl::Open) {
        // Without tokens there is no client to name: such a policy would silently do nothing.
        if let Some(c) = args.require_signed.iter().find(|c| c.as_str() != "*") {
            bail!(
                "--require-signed {c}: without access control (--dev, --jwks or --oidc-issuer) no client has a name; use --require-signed '*'"
            );
        }
        if !listen.ip().is_loopback() {
            bail!(
                "{listen} is not a loopback address: without access control (--dev, --jwks or --oidc-issuer) radveil serve listens on loopback only"
            );
        }
        eprintln!("radveil serve: no access control (no --dev, --jwks or --oidc-issuer): every local user may read and write");
    }
    let kek = load_kek(&args.data, args.kek_file.as_deref(), args.keys, true)?;
    let store = Store::open(&Layout::under(&args.data), kek)
        .with_context(|| format!("opening the store in {}", args.data.display()))?;
    checks.wait()?;
    let (auditor, writer) = open_audit(&args)?;
    let (ingest, ledger_writer) = open_ingest(&args)?;
    let defaults = radveil_web::Limits::default();
    // The limits no flag sets keep their defaults.
    #[allow(clippy::needless_update)]
    let limits = radveil_web::Limits {
        max_request: args.max_request.map_or(defaults.max_request, |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        }),
        max_parts: args.max_parts.map_or(defaults.max_parts, |n| n.get()),
        ..defaults
    };
    let conn = radveil_web::ConnectionLimits::default();
    let secs = std::time::Duration::from_secs;
    let listening = radveil_web::Listening {
        limits: radveil_web::ConnectionLimits {
            header_timeout: args.header_timeout.map_or(conn.header_timeout, secs),
            body_timeout: args.body_timeout.map_or(conn.body_timeout, secs),
            send_timeout: args.send_timeout.map_or(conn.send_timeout, secs),
            max_connections: args
                .max_connections
                .map_or(conn.max_connections, |n| n.get()),
        },
        tls,
    };
    let scheme = if listening.tls.is_some() {
        "https"
    } else {
        "http"
    };
    // The patient's side (portal, viewer, consent): each part set up below when configured.
    // (Only some parts may be set here: the rest stay at their default.)
    #[allow(unused_mut, clippy::needless_update)]
    let mut portal = radveil_web::portal::PortalState {
        consents: Some(open_consents(&args)?),
        ..Default::default()
    };
    portal.signin = portal_signin(&args)?;
    portal.notices = Some(std::sync::Arc::new(
        radveil_web::portal::notices::Notices::new(open_lineage(&args)?, args.data.join("notices")),
    ));
    portal.shares = Some(open_shares(&args)?);
    portal.uploads = Some(open_uploads(&args)?);
    portal.exports = open_exports(&args)?;
    portal.careteams = Some(open_careteams(&args)?);
    portal.night = radveil_web::portal::unusual::NightHours::parse(
        args.night_hours.as_deref().unwrap_or("22:00-06:00"),
        args.utc_offset.as_deref().unwrap_or("+00:00"),
    )
    .context("--night-hours / --utc-offset ([portal] night_hours, utc_offset)")?;
    if let Some(dir) = &args.viewer {
        let viewer = radveil_web::viewer::Viewer::open(dir)
            .with_context(|| format!("the viewer (--viewer {})", dir.display()))?;
        portal.viewer = Some(std::sync::Arc::new(viewer));
        eprintln!(
            "radveil serve: the viewer (OHIF) under /viewer, from {}",
            dir.display()
        );
    }
    let state = radveil_web::AppState {
        store,
        limits,
        metrics: Default::default(),
        access,
        // Filled from the index by radveil_web::serve before it listens.
        catalogue: Default::default(),
        auditor: Some(auditor),
        ingest: Some(ingest),
        https: listening.tls.is_some(),
        disk: Some(std::sync::Arc::new(radveil_web::disk::DiskReserve {
            dir: args.data.clone(),
            min_free: args
                .min_free_disk
                .unwrap_or(radveil_web::disk::DEFAULT_MIN_FREE),
        })),
        portal,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let served = runtime.block_on(radveil_web::serve(listen, state, listening, |addr| {
        eprintln!("radveil serve: DICOMweb on {scheme}://{addr}/dicom-web");
    }));
    // Every auditor handle is gone with the server: the writer signs its last checkpoint.
    drop(runtime);
    let closed = writer.finish();
    let logged = ledger_writer.finish();
    served?;
    closed.context("signing the audit log's last checkpoint")?;
    logged.context("signing the ledger's last checkpoint")?;
    // The checkpoints just signed are kept apart: the next start refuses a trail that does
    // not extend them.
    if let Some(kept) = &args.kept_checkpoints {
        let key = crate::auditing::audit_key(
            &args.data,
            args.audit_key_file.as_deref(),
            args.keys,
            false,
        )?;
        trail::keep_audit(&args.data, kept, &key)
            .context("keeping the audit trail's checkpoint")?;
        trail::keep_ledger(&args.data, kept, permissions(args.keys))
            .context("keeping the ledger's checkpoint")?;
    }
    eprintln!("radveil serve: stopped");
    Ok(ExitCode::SUCCESS)
}

pub fn keys(cmd: KeysCommand) -> Result<ExitCode> {
    match cmd {
        KeysCommand::Rotate {
            data,
            kek_file,
            new_kek_file,
            keys,
        } => {
            let old = load_kek(&data, kek_file.as_deref(), keys, false)?;
            let new = key::key_file(&new_kek_file, "new key-encryption key", keys, false)?;
            let n = radveil_store::rotate_kek(&Layout::under(&data), old, new)?;
            eprintln!(
                "radveil keys rotate: {n} patient keys and the index key re-wrapped; use {} from now on",
                new_kek_file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(clap::Args)]
pub struct TokenArgs {
    /// The data directory of a server started with --dev (its dev issuer signs).
    #[arg(long)]
    data: PathBuf,
    /// The `patient` claim: a DICOM Patient ID (0010,0020). Without --scope, the token gets
    /// patient/ImagingStudy.rs.
    #[arg(long)]
    patient: Option<String>,
    /// Issuer of Patient ID (0010,0021) for --patient, where the site uses it.
    #[arg(long, requires = "patient")]
    issuer_of_patient_id: Option<String>,
    /// A SMART scope (repeatable), like patient/ImagingStudy.rs or user/ImagingStudy.cruds.
    /// Default: patient/ImagingStudy.rs with --patient, else user/ImagingStudy.rs.
    #[arg(long = "scope", value_name = "S")]
    scopes: Vec<String>,
    /// A role (repeatable): admin, clinician, researcher, auditor, privacy-officer.
    #[arg(long = "role", value_name = "R")]
    roles: Vec<String>,
    /// How long the token lives: like 90s, 10m, 2h (at most 24h).
    #[arg(long, default_value = "10m", value_parser = parse_lifetime)]
    expires: u64,
    /// The subject (`sub`).
    #[arg(long, default_value = "dev-user")]
    subject: String,
    /// The audience (`aud`).
    #[arg(long, default_value = radveil_web::access::dev::DEFAULT_AUDIENCE)]
    audience: String,
    #[command(flatten)]
    keys: KeyPolicy,
}

/// Parses `--expires`: a number with s, m or h (seconds without a unit).
fn parse_lifetime(text: &str) -> std::result::Result<u64, String> {
    let (n, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = n.parse().map_err(|_| "like 90s, 10m or 2h".to_string())?;
    let mul = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err("like 90s, 10m or 2h".into()),
    };
    n.checked_mul(mul).ok_or_else(|| "too long".into())
}

/// `radveil token`: prints a token from the dev issuer of DATA.
pub fn token(args: TokenArgs) -> Result<ExitCode> {
    for r in &args.roles {
        if radveil_web::access::Role::from_name(r).is_none() {
            bail!(
                "unknown role (admin, clinician, researcher, auditor or privacy-officer expected)"
            );
        }
    }
    for s in &args.scopes {
        radveil_web::access::smart::SmartScope::parse(s)
            .map_err(|e| anyhow::anyhow!("--scope: {e} (like patient/ImagingStudy.rs)"))?;
    }
    let patient = match &args.patient {
        None => None,
        Some(id) => Some(
            radveil_web::access::PatientRef::new(
                id,
                args.issuer_of_patient_id.as_deref().unwrap_or(""),
            )
            .context(
                "--patient: a Patient ID of 1 to 64 characters, no backslash or control character",
            )?,
        ),
    };
    let scopes = if !args.scopes.is_empty() {
        args.scopes
    } else if patient.is_some() {
        vec!["patient/ImagingStudy.rs".into()]
    } else {
        vec!["user/ImagingStudy.rs".into()]
    };
    let issuer = dev_issuer(&args.data, args.keys, false)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let token = issuer.token(
        &radveil_web::access::dev::TokenRequest {
            subject: args.subject,
            audience: args.audience,
            scopes,
            roles: args.roles,
            patient,
            lifetime: args.expires,
        },
        now,
    )?;
    outln!("{token}");
    Ok(ExitCode::SUCCESS)
}

/// A `--min-free-disk` size: like 256M, or 0 for no reserve.
fn parse_free_disk(text: &str) -> std::result::Result<u64, String> {
    if text.trim() == "0" {
        return Ok(0);
    }
    radveil_pipeline::memory::parse_size(text).map_err(|e| format!("free disk: {e}"))
}

/// The portal's OpenID client, when `--portal-client-id` (or `[portal] client_id`) is set:
/// the provider is --oidc-issuer's, found by discovery now (a provider that cannot be
/// reached stops the start, as for token verification).
fn portal_signin(
    args: &ServeArgs,
) -> Result<Option<std::sync::Arc<radveil_web::portal::signin::SignIn>>> {
    let Some(client_id) = &args.portal_client_id else {
        return Ok(None);
    };
    let Some(issuer) = &args.oidc_issuer else {
        bail!("the portal's sign-in needs --oidc-issuer (the provider the portal client is registered with)");
    };
    let Some(public) = &args.public_url else {
        bail!("the portal's sign-in needs --public-url (the URL browsers reach this gateway at)");
    };
    let Some(secret_file) = &args.portal_client_secret_file else {
        bail!("the portal's sign-in needs --portal-client-secret-file");
    };
    let bytes = key::read_secret(secret_file, "the portal client's secret", args.keys)?;
    let text = std::str::from_utf8(&bytes)
        .map(str::trim)
        .ok()
        .filter(|t| !t.is_empty())
        .with_context(|| {
            format!(
                "{}: the portal client's secret is not text",
                secret_file.display()
            )
        })?;
    let secret = Zeroizing::new(text.to_string());
    let config = radveil_web::access::oidc::ClientConfig {
        issuer: issuer.clone(),
        client_id: client_id.clone(),
        client_secret: secret,
        redirect_uri: format!("{}/portal/callback", public.trim_end_matches('/')),
        scope: args
            .portal_scope
            .clone()
            .unwrap_or_else(|| "openid patient/ImagingStudy.rs".into()),
        resource: args.portal_resource.clone(),
    };
    let fetch: std::sync::Arc<dyn radveil_web::access::Fetch> =
        std::sync::Arc::new(radveil_web::access::HttpFetch::default());
    let rp = radveil_web::access::oidc::RelyingParty::discover(config, fetch.as_ref())
        .context("setting up the portal's sign-in")?;
    Ok(Some(std::sync::Arc::new(
        radveil_web::portal::signin::SignIn { rp, fetch },
    )))
}

/// The lineage of research exports from DATA (its key made on first use), for the
/// withdrawal notices the server writes when a patient withdraws consent.
fn open_lineage(args: &ServeArgs) -> Result<radveil_export::lineage::Lineage> {
    use radveil_export::lineage::{Lineage, LINEAGE_DB, LINEAGE_KEY_FILE};
    let key = key::key_file(
        &args.data.join(LINEAGE_KEY_FILE),
        "lineage key",
        args.keys,
        true,
    )?;
    let path = args.data.join(LINEAGE_DB);
    Lineage::open(&path, key).with_context(|| format!("opening {}", path.display()))
}

/// The quarantine of images patients send through the portal (DATA/uploads.db), its key
/// made on first use.
fn open_uploads(args: &ServeArgs) -> Result<std::sync::Arc<radveil_web::portal::upload::Uploads>> {
    use radveil_web::portal::upload::{Uploads, UPLOADS_DB, UPLOAD_KEY_FILE};
    let key = key::key_file(
        &args.data.join(UPLOAD_KEY_FILE),
        "upload key",
        args.keys,
        true,
    )?;
    let path = args.data.join(UPLOADS_DB);
    let uploads =
        Uploads::open(&path, key).with_context(|| format!("opening {}", path.display()))?;
    Ok(std::sync::Arc::new(uploads))
}

/// The care teams the EHR records (`DATA/careteam.db`), its key made on first use.
fn open_careteams(
    args: &ServeArgs,
) -> Result<std::sync::Arc<radveil_consent::careteam::CareTeams>> {
    use radveil_consent::careteam::{CareTeams, CARETEAM_DB, CARETEAM_KEY_FILE};
    let key = key::key_file(
        &args.data.join(CARETEAM_KEY_FILE),
        "care-team key",
        args.keys,
        true,
    )?;
    let path = args.data.join(CARETEAM_DB);
    let teams =
        CareTeams::open(&path, key).with_context(|| format!("opening {}", path.display()))?;
    Ok(std::sync::Arc::new(teams))
}

/// The privacy officer's exports (`--export-profile`), or `None` without a profile.
fn open_exports(
    args: &ServeArgs,
) -> Result<Option<std::sync::Arc<radveil_web::portal::research::ExportSite>>> {
    use radveil_export::lineage::{LINEAGE_DB, LINEAGE_KEY_FILE};
    use radveil_web::portal::research::{ExportSite, SiteSettings, EXPORTS_DIR};
    let Some(profile) = &args.export_profile else {
        return Ok(None);
    };
    let text = radveil_pipeline::input::read_regular(profile, 1 << 20)
        .with_context(|| format!("reading the export profile {}", profile.display()))?;
    let key = key::load_with(args.export_key_file.as_deref(), args.keys)
        .context("the export's de-identification key (--export-key-file or RADVEIL_KEY)")?;
    let lineage_key = key::key_file(
        &args.data.join(LINEAGE_KEY_FILE),
        "lineage key",
        args.keys,
        true,
    )?;
    let site = ExportSite::new(SiteSettings {
        profile: text.to_vec(),
        options: args.export_options.clone(),
        key,
        out: args.data.join(EXPORTS_DIR),
        lineage: (args.data.join(LINEAGE_DB), lineage_key),
        memory_limit: radveil_pipeline::memory::default_limit(),
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
    })
    .with_context(|| format!("the export profile {}", profile.display()))?;
    Ok(Some(std::sync::Arc::new(site)))
}

/// The share links of DATA (`DATA/shares.db`, its key made on first use).
fn open_shares(args: &ServeArgs) -> Result<std::sync::Arc<radveil_web::portal::share::Shares>> {
    use radveil_web::portal::share::{Shares, SHARES_DB, SHARE_KEY_FILE};
    let key = key::key_file(
        &args.data.join(SHARE_KEY_FILE),
        "share key",
        args.keys,
        true,
    )?;
    let path = args.data.join(SHARES_DB);
    let shares = Shares::open(&path, key).with_context(|| format!("opening {}", path.display()))?;
    Ok(std::sync::Arc::new(shares))
}
