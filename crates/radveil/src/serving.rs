//! `radveil serve` and `radveil keys rotate`: the gateway's wiring (the data directory, the
//! key-encryption key, the runtime); the store and the service are `radveil-store`'s and
//! `radveil-web`'s.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use radveil_store::{Key, Layout, Store};
use zeroize::Zeroizing;

use crate::key::{self, KeyPolicy};

/// The environment variable that may hold the key-encryption key (64 hex digits).
const KEK_ENV: &str = "RADVEIL_KEK";

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The data directory (made on first run): the index, the encrypted objects and, in
    /// `keys/`, the key store and (unless given otherwise) the key-encryption key. Back up
    /// `keys/` apart from the rest: deleting a study destroys its keys there.
    #[arg(long)]
    data: PathBuf,
    /// Address and port to listen on (loopback only until access control is built).
    #[arg(long, default_value = "127.0.0.1:8042")]
    listen: SocketAddr,
    /// File holding the key-encryption key (64 hex digits). Default: RADVEIL_KEK, else
    /// DATA/keys/kek, made (mode 0600) on first run.
    #[arg(long)]
    kek_file: Option<PathBuf>,
    /// Largest request body, like 512M or 2G.
    #[arg(long, value_name = "SIZE", value_parser = crate::parse_memory_size, default_value = "512M")]
    max_request: u64,
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

/// Decodes a key-encryption key: 64 hex digits, surrounding whitespace ignored.
fn decode_kek(text: &[u8]) -> Result<Key> {
    let text = text.trim_ascii();
    if text.len() != 64 {
        bail!("a key-encryption key is 64 hex digits (make one with `radveil keygen FILE`)");
    }
    let mut raw = Zeroizing::new([0u8; 32]);
    for (i, pair) in text.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok();
        raw[i] = s
            .and_then(|s| u8::from_str_radix(s, 16).ok())
            .context("a key-encryption key is 64 hex digits")?;
    }
    Ok(Key::from_slice(raw.as_ref())?)
}

/// The KEK from `file`, or the environment, or `DATA/keys/kek` (made when `create`).
fn load_kek(data: &Path, file: Option<&Path>, policy: KeyPolicy, create: bool) -> Result<Key> {
    if let Some(f) = file {
        return decode_kek(&key::read_secret(f, "key-encryption key", policy)?);
    }
    if let Some(v) = std::env::var_os(KEK_ENV) {
        return decode_kek(&Zeroizing::new(v.into_encoded_bytes())).context(KEK_ENV);
    }
    let default = Layout::under(data).keys.with_file_name("kek");
    if !default.exists() {
        if !create {
            bail!(
                "no key-encryption key: {} does not exist",
                default.display()
            );
        }
        Layout::under(data).create_dirs()?;
        let fresh = Key::random()?;
        let hex = Zeroizing::new(radveil_store::Handle::hex_of(fresh.expose()) + "\n");
        key::write_private(&default, |f| {
            use std::io::Write;
            f.write_all(hex.as_bytes())
        })?;
        eprintln!(
            "radveil serve: made a key-encryption key in {} (mode 0600); keep a copy apart from the data",
            default.display()
        );
    }
    decode_kek(&key::read_secret(&default, "key-encryption key", policy)?)
}

pub fn serve(args: ServeArgs) -> Result<ExitCode> {
    // Whatever the store writes (databases, objects, their folders) is the owner's alone.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let kek = load_kek(&args.data, args.kek_file.as_deref(), args.keys, true)?;
    let store = Store::open(&Layout::under(&args.data), kek)
        .with_context(|| format!("opening the store in {}", args.data.display()))?;
    let state = radveil_web::AppState {
        store,
        limits: radveil_web::Limits {
            max_request: usize::try_from(args.max_request).unwrap_or(usize::MAX),
            ..radveil_web::Limits::default()
        },
        metrics: Default::default(),
        // Filled from the index by radveil_web::serve before it listens.
        catalogue: Default::default(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(radveil_web::serve(args.listen, state, |addr| {
        eprintln!("radveil serve: DICOMweb on http://{addr}/dicom-web");
    }))?;
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
            let new = decode_kek(&key::read_secret(
                &new_kek_file,
                "new key-encryption key",
                keys,
            )?)?;
            let n = radveil_store::rotate_kek(&Layout::under(&data), old, new)?;
            eprintln!(
                "radveil keys rotate: {n} patient keys and the index key re-wrapped; use {} from now on",
                new_kek_file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
