//! `DATA/radveil.toml`: the gateway's settings for one data directory.
//!
//! On first run `radveil serve` writes [`TEMPLATE`] there (mode 0600, never over an existing
//! file): every setting, commented out, with its default and what it means. Later runs read
//! it; a command-line flag overrides the same setting. An unknown key or a bad value stops
//! the start with a message naming the key (the TOML parser's, with its line).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Deserializer};

/// The file's name in the data directory.
pub const FILE_NAME: &str = "radveil.toml";

/// The largest configuration file read.
const MAX_FILE: u64 = 1 << 20;

/// The address served when neither the file nor `--listen` says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8042";

/// The claim holding the roles by default.
pub const DEFAULT_ROLES_CLAIM: &str = "roles";

/// What a new data directory's `radveil.toml` says: every setting with its default,
/// commented out. (A unit test checks that these defaults are the code's.)
pub const TEMPLATE: &str = r#"# radveil serve: the settings of the gateway for this data directory.
#
# Every setting is shown commented out with its default value (or an example, marked so,
# where there is no default). Uncomment a line to change it. A command-line flag of
# `radveil serve` overrides the same setting here. An unknown key is refused. A relative
# path here is relative to this directory.

# The address and port to listen on. Without access control (see [access]) only a
# loopback address is allowed: nothing is served unauthenticated to the network.
# listen = "127.0.0.1:8042"

# The patient's viewer: a folder holding OHIF's prebuilt web app (npm @ohif/app) prepared
# for /viewer by tools/viewer/prepare (tools/setup-peers makes one in .radveil/viewer of the
# source tree), served under /viewer against this gateway's /dicom-web. Without it /viewer
# answers 404. Flag: --viewer. No default; for example:
# viewer = "/usr/share/radveil/viewer"

[tls]
# HTTPS (TLS 1.2 and 1.3 only, the cipher suites of BCP 195 / RFC 9325): the PEM
# certificate chain, the server's certificate first, and its PEM private key. Both or
# neither; without them the gateway speaks plain HTTP. The key file must be readable by its
# owner only (mode 0600): a key that group or others may read is refused.
# Flags: --tls-cert, --tls-key. No default; for example:
# cert = "/etc/radveil/tls/cert.pem"
# key = "/etc/radveil/tls/key.pem"

[access]
# Who may do what. With none of dev, oidc_issuer or jwks there is no access control and
# the gateway listens on loopback only.
#
# Trust the local development issuer, whose key is kept in this directory
# (keys/dev-issuer.key); `radveil token` prints tokens from it. For trying things out:
# whoever can read that key can mint any token. Flag: --dev.
# dev = false
#
# Trust the OpenID Connect issuer at this URL: its keys are found by discovery and cached.
# Flag: --oidc-issuer. No default; for example:
# oidc_issuer = "https://login.example.org/realms/radiology"
#
# Trust tokens whose `iss` is `issuer` and that verify with a key of the JWKS file `jwks`
# (both or neither). Flags: --jwks, --issuer. No default; for example:
# jwks = "/etc/radveil/jwks.json"
# issuer = "https://login.example.org"
#
# The audience (`aud`) every token must name: this service. Flag: --audience.
# audience = "radveil"
#
# The claim holding the roles (admin, clinician, researcher, auditor): a name or a dotted
# path (realm_access.roles for Keycloak). Flag: --roles-claim.
# roles_claim = "roles"

[portal]
# The patient portal (/portal): patients and staff sign in with the OpenID provider of
# [access] oidc_issuer, by the authorization code flow with PKCE, as a confidential client
# registered there with the redirect URI PUBLIC_URL/portal/callback.
#
# The client's id and the file holding its secret (readable by its owner only).
# Flags: --portal-client-id, --portal-client-secret-file. No default; for example:
# client_id = "radveil-portal"
# client_secret_file = "/etc/radveil/portal-client-secret"
#
# The URL browsers reach this gateway at (scheme, host and port, no path).
# Flag: --public-url. No default; for example:
# public_url = "https://imaging.example.org"
#
# The scopes asked of the provider. Flag: --portal-scope.
# scope = "openid patient/ImagingStudy.rs"
#
# The resource indicator (RFC 8707) naming this gateway, for providers that issue access
# tokens per resource. Flag: --portal-resource. No default; for example:
# resource = "urn:radveil:gateway"
#
# Clinicians and administrators reading images within these hours (local to utc_offset)
# are marked "night-time access" in patients' access logs and the auditor's report.
# Flags: --night-hours, --utc-offset.
# night_hours = "22:00-06:00"
# utc_offset = "+00:00"

[consent]
# What is assumed for each use of a patient's images beyond their care when the patient has
# said nothing: "opt-in" (not used unless the patient consented) or "opt-out" (used unless
# the patient withdrew). Patients record and withdraw consent in the portal or through
# /fhir/Consent; `radveil export` checks it per patient. The consents are kept sealed in
# consent.db under keys/consent-key (made on first run; keep a copy apart from the data).
# research = "opt-in"
# ai_training = "opt-in"
# commercial = "opt-in"

[export]
# The privacy officer's research export from the portal (/portal/privacy/export): the
# de-identification profile (TOML, as `radveil deid --profile` reads it) and its options.
# Without a profile the portal makes no exports (`radveil export` still does). Outputs go to
# exports/ in this directory. Flags: --export-profile, --export-option. For example:
# profile = "site-profile.toml"
# options = ["clean-descriptors"]
#
# The de-identification key's file (as `radveil deid --key-file`). Default: the environment
# variable RADVEIL_KEY. Flag: --export-key-file. For example:
# key_file = "/run/secrets/radveil-deid-key"

[keys]
# The key-encryption key's file (64 hex digits). Default: the environment variable
# RADVEIL_KEK, else keys/kek in this directory, made on first run. Flag: --kek-file.
# For example:
# kek_file = "/run/secrets/radveil-kek"
#
# The audit key's file (64 hex digits). Default: RADVEIL_AUDIT_KEY, else keys/audit-key
# in this directory, made on first run. Flag: --audit-key-file. For example:
# audit_key_file = "/run/secrets/radveil-audit-key"
#
# A folder kept apart from the data and its backups (another volume or machine; one per
# data directory) where the gateway keeps the latest signed checkpoint of its audit trail
# and of its ledger, at every start and clean stop; at start each must extend the one kept
# there, so a trail put back from an older copy (a rollback) or deleted stops the start.
# Flag: --kept-checkpoints.
# No default (no rollback check); for example:
# kept_checkpoints = "/var/lib/radveil-checkpoints"

[limits]
# The largest request body (a STOW-RS request with all its parts), like 512M or 2G;
# a larger one is refused with 413 before it is read. Flag: --max-request.
# max_request = "512M"
#
# The most parts in one STOW-RS request. Flag: --max-parts.
# max_parts = 10000
#
# How long a client may take to send a request's headers (and a TLS handshake; and, on a
# kept-alive connection, to start its next request) before the connection is closed, like
# 30s or 2m. Flag: --header-timeout.
# header_timeout = "30s"
#
# How long a request's whole body may take to arrive, counted from its headers; a slower
# client is cut off, however steadily it trickles. Flag: --body-timeout.
# body_timeout = "5m"
#
# How long a response may wait for the client to read it before the connection is cut
# (a client that stops reading cannot hold a connection and its response).
# Flag: --send-timeout.
# send_timeout = "1m"
#
# The most client connections served at once; more wait until one closes.
# Flag: --max-connections.
# max_connections = 512
#
# The space kept free on the data directory's filesystem: a STOW-RS request that would
# leave less is refused (507 Insufficient Storage) before it is read, so that reads,
# searches and deletes (each writes its audit event) go on while the disk is full.
# Flag: --min-free-disk.
# min_free_disk = "256M"
"#;

/// The settings of `radveil.toml`; `None` where the file does not say.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `listen`.
    pub listen: Option<SocketAddr>,
    /// `viewer`: the prepared OHIF folder served under `/viewer`.
    pub viewer: Option<PathBuf>,
    /// `[tls]`.
    #[serde(default)]
    pub tls: TlsSection,
    /// `[access]`.
    #[serde(default)]
    pub access: AccessSection,
    /// `[portal]`.
    #[serde(default)]
    pub portal: PortalSection,
    /// `[consent]`.
    #[serde(default)]
    pub consent: ConsentSection,
    /// `[export]`.
    #[serde(default)]
    pub export: ExportSection,
    /// `[keys]`.
    #[serde(default)]
    pub keys: KeysSection,
    /// `[limits]`.
    #[serde(default)]
    pub limits: LimitsSection,
}

/// `[tls]`.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// The PEM private key.
    pub key: Option<PathBuf>,
}

/// `[access]`.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccessSection {
    /// Trust the dev issuer.
    pub dev: Option<bool>,
    /// An OpenID Connect issuer's URL.
    pub oidc_issuer: Option<String>,
    /// A JWKS file.
    pub jwks: Option<PathBuf>,
    /// The `iss` of the tokens verified with `jwks`.
    pub issuer: Option<String>,
    /// The audience tokens must name.
    pub audience: Option<String>,
    /// The claim holding the roles.
    pub roles_claim: Option<String>,
}

/// `[portal]`.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PortalSection {
    /// The portal's client id at the OpenID provider.
    pub client_id: Option<String>,
    /// The file holding its secret.
    pub client_secret_file: Option<PathBuf>,
    /// The URL browsers reach the gateway at.
    pub public_url: Option<String>,
    /// The scopes asked for.
    pub scope: Option<String>,
    /// The resource indicator of the gateway.
    pub resource: Option<String>,
    /// The site's night hours, `HH:MM-HH:MM`.
    pub night_hours: Option<String>,
    /// The site's offset from UTC, `±HH:MM`.
    pub utc_offset: Option<String>,
}

/// `[consent]`: the site's default per purpose.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConsentSection {
    /// Research.
    pub research: Option<radveil_consent::Policy>,
    /// AI training.
    pub ai_training: Option<radveil_consent::Policy>,
    /// Commercial use.
    pub commercial: Option<radveil_consent::Policy>,
}

impl ConsentSection {
    /// The defaults it sets (opt-in where it says nothing).
    pub fn defaults(&self) -> radveil_consent::Defaults {
        radveil_consent::Defaults {
            research: self.research.unwrap_or_default(),
            ai_training: self.ai_training.unwrap_or_default(),
            commercial: self.commercial.unwrap_or_default(),
        }
    }
}

/// `[export]`: the portal's research exports.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExportSection {
    /// The de-identification profile's file.
    pub profile: Option<PathBuf>,
    /// Annex E options added to it.
    #[serde(default)]
    pub options: Vec<String>,
    /// The de-identification key's file.
    pub key_file: Option<PathBuf>,
}

/// `[keys]`.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeysSection {
    /// The key-encryption key's file.
    pub kek_file: Option<PathBuf>,
    /// The audit key's file.
    pub audit_key_file: Option<PathBuf>,
    /// The folder where the latest checkpoints are kept.
    pub kept_checkpoints: Option<PathBuf>,
}

/// `[limits]`.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Bytes.
    #[serde(default, deserialize_with = "size")]
    pub max_request: Option<u64>,
    /// Parts.
    pub max_parts: Option<std::num::NonZeroUsize>,
    /// Seconds.
    #[serde(default, deserialize_with = "seconds")]
    pub header_timeout: Option<u64>,
    /// Seconds.
    #[serde(default, deserialize_with = "seconds")]
    pub body_timeout: Option<u64>,
    /// Seconds.
    #[serde(default, deserialize_with = "seconds")]
    pub send_timeout: Option<u64>,
    /// Connections.
    pub max_connections: Option<std::num::NonZeroUsize>,
    /// Bytes.
    #[serde(default, deserialize_with = "size_or_zero")]
    pub min_free_disk: Option<u64>,
}

/// A number or a string, as TOML gives it.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(u64),
    Text(String),
}

/// A size: bytes, or a string like "512M"; more than 0.
fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    match size_or_zero(d)? {
        Some(0) => Err(D::Error::custom("must be more than 0")),
        n => Ok(n),
    }
}

/// A size: bytes, or a string like "512M".
fn size_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    let n = match NumberOrText::deserialize(d)
        .map_err(|_| D::Error::custom("a size like \"512M\" or \"2G\" expected"))?
    {
        NumberOrText::Number(n) => n,
        NumberOrText::Text(t) => super::parse_free_disk(&t).map_err(|e| {
            D::Error::custom(format!("{e}: a size like \"512M\" or \"2G\" expected"))
        })?,
    };
    Ok(Some(n))
}

/// A duration: seconds, or a string like "30s", "5m", "1h".
fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    const LIKE: &str = "a duration like \"30s\", \"5m\" or \"1h\" expected";
    let n = match NumberOrText::deserialize(d).map_err(|_| D::Error::custom(LIKE))? {
        NumberOrText::Number(n) => n,
        NumberOrText::Text(t) => {
            super::parse_lifetime(&t).map_err(|e| D::Error::custom(format!("{e}: {LIKE}")))?
        }
    };
    if n == 0 {
        return Err(D::Error::custom("must be at least 1s"));
    }
    Ok(Some(n))
}

/// Parses the text of a configuration file (`path` names it in errors).
pub fn parse(text: &str, path: &Path) -> Result<FileConfig> {
    let config: FileConfig = toml::from_str(text).with_context(|| {
        format!(
            "{}: a setting is unknown or has a bad value (every setting and its meaning is in the file made on first run)",
            path.display()
        )
    })?;
    if config.tls.cert.is_some() != config.tls.key.is_some() {
        anyhow::bail!(
            "{}: [tls] needs both cert and key, or neither",
            path.display()
        );
    }
    if config.access.jwks.is_some() != config.access.issuer.is_some() {
        anyhow::bail!(
            "{}: [access] needs both jwks and issuer, or neither",
            path.display()
        );
    }
    Ok(config)
}

/// Reads `DATA/radveil.toml`, writing [`TEMPLATE`] there first when nothing is at its name
/// (mode 0600, made whole or not at all, never over an existing file).
pub fn load_or_create(data: &Path) -> Result<FileConfig> {
    use std::io::Write;
    let path = data.join(FILE_NAME);
    if std::fs::symlink_metadata(&path).is_err() {
        let written =
            radveil_pipeline::secret::write_private(&path, |f| f.write_all(TEMPLATE.as_bytes()));
        match written {
            Ok(()) => eprintln!(
                "radveil serve: wrote the default settings to {} (every setting commented with its default and meaning)",
                path.display()
            ),
            // Another server starting at the same time wrote it first.
            Err(_) if std::fs::symlink_metadata(&path).is_ok() => {}
            Err(e) => {
                return Err(e).with_context(|| format!("writing {}", path.display()));
            }
        }
    }
    let bytes = radveil_pipeline::input::read_regular(&path, MAX_FILE)
        .with_context(|| format!("reading {}", path.display()))?;
    let text = std::str::from_utf8(&bytes)
        .with_context(|| format!("{}: not UTF-8 text", path.display()))?;
    parse(text, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The template with every `# key = value` line uncommented.
    fn uncommented() -> String {
        TEMPLATE
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.split_once(" = ").is_some_and(|(k, _)| {
                        k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    }) =>
                {
                    rest
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_template_sets_nothing_and_its_commented_defaults_are_the_codes() {
        let p = Path::new("radveil.toml");
        assert_eq!(parse(TEMPLATE, p).unwrap(), FileConfig::default());
        let all = parse(&uncommented(), p).unwrap();
        assert_eq!(all.listen, Some(DEFAULT_LISTEN.parse().unwrap()));
        assert_eq!(all.access.dev, Some(false));
        assert_eq!(
            all.access.audience.as_deref(),
            Some(radveil_web::access::dev::DEFAULT_AUDIENCE)
        );
        assert_eq!(all.access.roles_claim.as_deref(), Some(DEFAULT_ROLES_CLAIM));
        assert_eq!(all.consent.defaults(), radveil_consent::Defaults::default());
        assert_eq!(all.consent.research, Some(radveil_consent::Policy::OptIn));
        let app = radveil_web::Limits::default();
        let conn = radveil_web::ConnectionLimits::default();
        assert_eq!(all.limits.max_request, Some(app.max_request as u64));
        assert_eq!(all.limits.max_parts.map(|n| n.get()), Some(app.max_parts));
        assert_eq!(
            all.limits.header_timeout,
            Some(conn.header_timeout.as_secs())
        );
        assert_eq!(all.limits.body_timeout, Some(conn.body_timeout.as_secs()));
        assert_eq!(all.limits.send_timeout, Some(conn.send_timeout.as_secs()));
        assert_eq!(
            all.limits.max_connections.map(|n| n.get()),
            Some(conn.max_connections)
        );
        assert_eq!(
            all.limits.min_free_disk,
            Some(radveil_web::disk::DEFAULT_MIN_FREE)
        );
        // Every field of the file appears in the template.
        for key in [
            "listen",
            "viewer",
            "cert",
            "key",
            "dev",
            "oidc_issuer",
            "jwks",
            "issuer",
            "audience",
            "roles_claim",
            "client_id",
            "client_secret_file",
            "public_url",
            "scope",
            "resource",
            "research",
            "ai_training",
            "commercial",
            "kek_file",
            "audit_key_file",
            "kept_checkpoints",
            "max_request",
            "max_parts",
            "header_timeout",
            "body_timeout",
            "send_timeout",
            "max_connections",
            "min_free_disk",
        ] {
            assert!(TEMPLATE.contains(&format!("\n# {key} = ")), "{key}");
        }
    }

    #[test]
    fn the_command_line_overrides_the_file_and_the_file_fills_the_rest() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: super::super::ServeArgs,
        }
        let file = parse(
            "listen = \"127.0.0.1:9\"\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n[access]\ndev = true\n\
             audience = \"pacs\"\n[limits]\nmax_request = \"1M\"\nbody_timeout = \"2m\"\n",
            Path::new("radveil.toml"),
        )
        .unwrap();
        let cli = Cli::parse_from([
            "serve",
            "--data",
            "d",
            "--max-request",
            "2M",
            "--tls-cert",
            "c2.pem",
            "--tls-key",
            "k2.pem",
            "--audience",
            "other",
        ]);
        let a = super::super::with_file(cli.serve, file);
        // (The file's relative paths are relative to the data directory.)
        let file_tls = parse(
            "[tls]\ncert = \"c.pem\"\nkey = \"/etc/k.pem\"\n",
            Path::new("radveil.toml"),
        )
        .unwrap();
        let b = super::super::with_file(Cli::parse_from(["serve", "--data", "d"]).serve, file_tls);
        assert_eq!(b.tls_cert.as_deref(), Some(Path::new("d/c.pem")));
        assert_eq!(b.tls_key.as_deref(), Some(Path::new("/etc/k.pem")));
        assert_eq!(a.listen, Some("127.0.0.1:9".parse().unwrap()));
        assert_eq!(a.max_request, Some(2 << 20));
        assert_eq!(a.body_timeout, Some(120));
        assert_eq!(a.header_timeout, None);
        assert!(a.dev);
        assert_eq!(a.audience.as_deref(), Some("other"));
        // The TLS pair comes whole from one place.
        assert_eq!(a.tls_cert.as_deref(), Some(Path::new("c2.pem")));
        assert_eq!(a.tls_key.as_deref(), Some(Path::new("k2.pem")));
    }

    #[test]
    fn values_are_read() {
        let c = parse(
            "listen = \"0.0.0.0:9000\"\n[limits]\nmax_request = \"1M\"\nheader_timeout = 7\nbody_timeout = \"2m\"\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(c.listen, Some("0.0.0.0:9000".parse().unwrap()));
        assert_eq!(c.limits.max_request, Some(1 << 20));
        assert_eq!(c.limits.header_timeout, Some(7));
        assert_eq!(c.limits.body_timeout, Some(120));
    }

    #[test]
    fn an_unknown_key_or_a_bad_value_is_an_error_naming_the_key() {
        let p = Path::new("radveil.toml");
        for (text, key) in [
            ("[limits]\nmax_requst = \"1M\"\n", "max_requst"),
            ("lisen = \"127.0.0.1:1\"\n", "lisen"),
            ("[limit]\nmax_request = \"1M\"\n", "limit"),
            ("[limits]\nmax_request = \"12Q\"\n", "max_request"),
            ("[limits]\nmax_request = 0\n", "max_request"),
            ("[limits]\nbody_timeout = \"soon\"\n", "body_timeout"),
            ("[limits]\nmax_connections = 0\n", "max_connections"),
            ("listen = \"nowhere\"\n", "listen"),
            ("[access]\ndev = \"yes\"\n", "dev"),
            ("[tls]\ncert = \"c.pem\"\n", "key"),
            ("listen = \n", "listen"),
            ("[consent]\nresearch = \"maybe\"\n", "research"),
            ("[consent]\nclinical = \"opt-in\"\n", "clinical"),
        ] {
            let e = format!("{:#}", parse(text, p).unwrap_err());
            assert!(e.contains(key), "{text:?}: {e}");
            assert!(e.contains("radveil.toml"), "{e}");
        }
    }
}
