//! Loading and making secret keys: the de-identification key, signing private keys and the
//! ledger's checkpoint signer key. Secrets come from a file (or, for the de-identification
//! key, the environment), are zeroized when dropped, and are never printed. A key file that
//! group or others may read or write is warned about, as ssh does, and refused under
//! `--strict`; key files radveil creates are mode 0600.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use radveil_deid::{Key, MIN_KEY_LEN};
use zeroize::Zeroizing;

const HOW: &str = "make one with `radveil keygen KEYFILE` and pass `--key-file KEYFILE`, \
                   or set RADVEIL_KEY to at least 32 secret bytes";

/// The largest key file read: keys are a few hundred bytes, PEM RSA keys a few kilobytes.
const MAX_KEY_FILE: u64 = 1 << 20;

/// How key files' permissions are treated.
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub struct KeyPolicy {
    /// Refuse key files that group or others may read or write (default: warn).
    #[arg(long)]
    pub strict: bool,
}

/// Reads a secret key file (`what` names it in messages). Its permissions are checked on
/// the opened file: any group or other bit draws a warning, or an error under `strict`.
pub fn read_secret(path: &Path, what: &str, policy: KeyPolicy) -> Result<Zeroizing<Vec<u8>>> {
    let f =
        std::fs::File::open(path).with_context(|| format!("reading {what} {}", path.display()))?;
    let meta = f
        .metadata()
        .with_context(|| format!("reading {what} {}", path.display()))?;
    if !meta.is_file() {
        bail!("{what} {} is not a regular file", path.display());
    }
    check_permissions(path, what, &meta, policy)?;
    let mut bytes = Zeroizing::new(Vec::new());
    f.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {what} {}", path.display()))?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        bail!(
            "{what} {} is larger than {MAX_KEY_FILE} bytes: not a key",
            path.display()
        );
    }
    Ok(bytes)
}

#[cfg(unix)]
fn check_permissions(
    path: &Path,
    what: &str,
    meta: &std::fs::Metadata,
    policy: KeyPolicy,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    let problem = format!(
        "{what} {} has permissions {mode:04o}: group or others may read or change it; \
         it should be 0600 (chmod 600 {})",
        path.display(),
        path.display()
    );
    if policy.strict {
        bail!("{problem}; refused under --strict");
    }
    eprintln!("radveil: warning: {problem}");
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_: &Path, _: &str, _: &std::fs::Metadata, _: KeyPolicy) -> Result<()> {
    Ok(())
}

/// Reads the key from `file` under `policy`, or from `RADVEIL_KEY` when no file is given.
pub fn load_with(file: Option<&Path>, policy: KeyPolicy) -> Result<Key> {
    let bytes = match file {
        Some(f) => read_secret(f, "key file", policy).with_context(|| HOW.to_string())?,
        None => match std::env::var_os("RADVEIL_KEY") {
            Some(v) => Zeroizing::new(v.into_encoded_bytes()),
            None => bail!("no de-identification key: {HOW}"),
        },
    };
    Key::new(bytes).map_err(|e| anyhow::anyhow!("{e}: {HOW}"))
}

/// Writes a fresh key of 32 random bytes, hex-encoded, to a new file of mode 0600.
pub fn keygen(file: &Path) -> Result<()> {
    let mut raw = Zeroizing::new([0u8; MIN_KEY_LEN]);
    getrandom::getrandom(raw.as_mut())
        .map_err(|e| anyhow::anyhow!("reading the system random source: {e}"))?;
    let mut hex = Zeroizing::new(String::with_capacity(2 * MIN_KEY_LEN + 1));
    for b in raw.iter() {
        hex.push_str(&format!("{b:02x}"));
    }
    hex.push('\n');
    write_private(file, |f| f.write_all(hex.as_bytes()))?;
    eprintln!("radveil: wrote a new key to {} (mode 0600); keep it secret and backed up: the same key gives the same pseudonyms", file.display());
    Ok(())
}

/// Writes the new secret file `path` (mode 0600) with what `fill` writes: into a temporary
/// beside it, created mode 0600 and exclusively (never through a link), made durable, then
/// moved into place only if the name is still free (`radveil_pipeline::Dir::write_new`). A
/// key file appears whole or not at all, and an existing one (or a link at its name) is
/// never replaced. The mode is set again on the open file, so a umask cannot change it.
pub fn write_private(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    let what = || {
        format!(
            "creating {} (an existing key is never overwritten)",
            path.display()
        )
    };
    let name = path
        .file_name()
        .with_context(|| format!("{} does not name a file", path.display()))?;
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = radveil_pipeline::Dir::open(parent).with_context(what)?;
    dir.write_new(name, "", |f| {
        let written = set_private(f)
            .and_then(|()| fill(f))
            .and_then(|()| f.sync_all());
        written.map_err(|e| radveil_pipeline::OutputError::Content(format!("writing the key: {e}")))
    })
    .with_context(what)?;
    Ok(())
}

#[cfg(unix)]
fn set_private(f: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn set_private(_: &std::fs::File) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_others_can_read_are_refused_when_strict() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        keygen(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let strict = KeyPolicy { strict: true };
        assert!(load_with(Some(&path), strict).is_ok());
        for mode in [0o640, 0o604, 0o620, 0o644] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = load_with(Some(&path), strict).unwrap_err();
            assert!(
                format!("{err:#}").contains(&format!("{mode:04o}")),
                "{err:#}"
            );
            assert!(load_with(Some(&path), KeyPolicy::default()).is_ok());
        }
    }

    #[test]
    fn oversized_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![b'a'; MAX_KEY_FILE as usize + 1]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_secret(&path, "key file", KeyPolicy::default()).is_err());
    }

    #[test]
    fn a_key_file_appears_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        // A writer failing half way (a full disk, a crash) leaves no key behind.
        let err = write_private(&path, |f| {
            f.write_all(b"0123456789abcdef")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("disk full"), "{err:#}");
        assert!(
            std::fs::symlink_metadata(&path).is_err(),
            "a partial key was left"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "a temporary was left"
        );
        // A whole one appears, mode 0600.
        write_private(&path, |f| f.write_all(b"secret\n")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"secret\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // An existing key, or a link planted at its name, is never written through.
        let err = write_private(&path, |f| f.write_all(b"other\n")).unwrap_err();
        assert!(format!("{err:#}").contains("never overwritten"), "{err:#}");
        assert_eq!(std::fs::read(&path).unwrap(), b"secret\n");
        let target = dir.path().join("target");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(write_private(&link, |f| f.write_all(b"other\n")).is_err());
        assert!(!target.exists(), "written through a link");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
