//! Secret keys on the command line: `--strict`, `RADVEIL_KEY`, and the warnings and notes
//! printed. The work (permission checks, bounded reads, keys written 0600 whole or not at
//! all) is `radveil_pipeline::secret`'s.

use std::path::Path;

use anyhow::{Context, Result};
use radveil_deid::Key;
use radveil_pipeline::secret::{self, LoosePermissions, PermissionPolicy};
use zeroize::Zeroizing;

/// How key files' permissions are treated.
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub struct KeyPolicy {
    /// Refuse key files that group or others may read or write (default: warn).
    #[arg(long)]
    pub strict: bool,
}

impl KeyPolicy {
    fn permissions(self) -> PermissionPolicy {
        if self.strict {
            PermissionPolicy::Refuse
        } else {
            PermissionPolicy::Warn
        }
    }
}

fn warn(w: Option<LoosePermissions>) {
    if let Some(w) = w {
        eprintln!("radveil: warning: {w}");
    }
}

/// Reads a secret key file (`what` names it in messages); loose permissions draw a warning,
/// or an error under `--strict`.
pub fn read_secret(path: &Path, what: &str, policy: KeyPolicy) -> Result<Zeroizing<Vec<u8>>> {
    let s = secret::read_secret(path, what, policy.permissions())?;
    warn(s.warning);
    Ok(s.bytes)
}

/// Reads the key from `file` under `policy`, or from `RADVEIL_KEY` when no file is given.
pub fn load_with(file: Option<&Path>, policy: KeyPolicy) -> Result<Key> {
    let env = if file.is_none() {
        std::env::var_os("RADVEIL_KEY")
    } else {
        None
    };
    let (key, warning) = secret::load_key(file, env, policy.permissions())?;
    warn(warning);
    Ok(key)
}

/// A 256-bit key of radveil's own from its file (64 hex digits), made (mode 0600, with a note
/// on standard error) when `make` and missing; loose permissions draw a warning.
pub fn key_file(
    path: &Path,
    what: &str,
    policy: KeyPolicy,
    make: bool,
) -> Result<radveil_store::Key> {
    let (s, made) = secret::key_file(path, what, policy.permissions(), make)?;
    if made {
        eprintln!("radveil: made {what} {} (mode 0600)", path.display());
    }
    warn(s.warning);
    radveil_store::Key::from_hex(&s.bytes).with_context(|| format!("{what} {}", path.display()))
}

/// Writes a fresh key to a new file of mode 0600.
pub fn keygen(file: &Path) -> Result<()> {
    secret::keygen(file)?;
    eprintln!("radveil: wrote a new key to {} (mode 0600); keep it secret and backed up: the same key gives the same pseudonyms", file.display());
    Ok(())
}
