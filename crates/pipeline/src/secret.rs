//! Secret key files: the de-identification key, signing private keys and the ledger's
//! checkpoint signer key. Secrets are read from a file (or, for the de-identification key,
//! from a value the caller took from the environment), are zeroized when dropped, and are
//! never printed. A key file that group or others may read or write is reported, as ssh
//! does: a warning for the caller to show, or a refusal under [`PermissionPolicy::Refuse`].
//! Key files made here are mode 0600 and appear whole or not at all.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use radveil_deid::{Key, KeyTooShort, MIN_KEY_LEN};
use zeroize::Zeroizing;

use crate::outdir::{Dir, OutputError};

/// How to get a de-identification key, said wherever one is missing or unusable.
pub const HOW: &str = "make one with `radveil keygen KEYFILE` and pass `--key-file KEYFILE`, \
                       or set RADVEIL_KEY to at least 32 secret bytes";

/// The largest key file read: keys are a few hundred bytes, PEM RSA keys a few kilobytes.
pub const MAX_KEY_FILE: u64 = 1 << 20;

/// What to do with a key file that group or others may read or write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PermissionPolicy {
    /// Read it, and return a warning (the default, as ssh-keygen and most tools do).
    #[default]
    Warn,
    /// Refuse it (`--strict`).
    Refuse,
}

/// A key file that group or others may read or write, or that another user owns (as ssh
/// checks its keys: whoever owns a key file can change it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoosePermissions {
    /// What the file is ("key file", "signing key").
    pub what: String,
    /// The file.
    pub path: PathBuf,
    /// Its permission bits.
    pub mode: u32,
    /// The owner's user ID, when it is not this process's effective user.
    pub foreign_owner: Option<u32>,
}

impl std::fmt::Display for LoosePermissions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.path.display();
        if let Some(uid) = self.foreign_owner {
            write!(
                f,
                "{} {path} belongs to another user (uid {uid}), who can change it; \
                 it should belong to the user radveil runs as",
                self.what
            )?;
            if self.mode & 0o077 == 0 {
                return Ok(());
            }
            f.write_str("; and ")?;
        } else {
            write!(f, "{} {path} ", self.what)?;
        }
        write!(
            f,
            "has permissions {:04o}: group or others may read or change it; \
             it should be 0600 (chmod 600 {path})",
            self.mode
        )
    }
}

/// Why a secret could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be opened or read.
    #[error("reading {what} {}", path.display())]
    Read {
        /// What the file is.
        what: String,
        /// The file.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The path names a directory, a FIFO, a device...
    #[error("{what} {} is not a regular file", path.display())]
    NotAFile {
        /// What the file is.
        what: String,
        /// The path.
        path: PathBuf,
    },
    /// The file is larger than [`MAX_KEY_FILE`].
    #[error("{what} {} is larger than {MAX_KEY_FILE} bytes: not a key", path.display())]
    TooLarge {
        /// What the file is.
        what: String,
        /// The file.
        path: PathBuf,
    },
    /// Group or others may read or write the file, under [`PermissionPolicy::Refuse`].
    #[error("{0}; refused under --strict")]
    Refused(LoosePermissions),
    /// The de-identification key file could not be read.
    #[error("{HOW}")]
    KeyFile(#[source] Box<SecretError>),
    /// Neither a key file nor a key in the environment.
    #[error("no de-identification key: {HOW}")]
    NoKey,
    /// The key is too short.
    #[error("{0}: {HOW}")]
    BadKey(KeyTooShort),
    /// The system's random source failed.
    #[error("reading the system random source: {0}")]
    Random(getrandom::Error),
    /// The path has no file name.
    #[error("{} does not name a file", .0.display())]
    NoFileName(PathBuf),
    /// The new key file could not be made (it exists, a link is at its name, a write
    /// failed).
    #[error("creating {} (an existing key is never overwritten)", path.display())]
    Create {
        /// The key file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: OutputError,
    },
}

/// A secret read from a file, with the warning to show when its permissions are loose.
#[derive(Debug)]
pub struct Secret {
    /// The file's bytes (zeroized on drop).
    pub bytes: Zeroizing<Vec<u8>>,
    /// Set when group or others may read or write the file (under
    /// [`PermissionPolicy::Warn`]).
    pub warning: Option<LoosePermissions>,
}

/// A 256-bit key file of radveil's own (64 hex digits, mode 0600): read under `policy`, or,
/// when `make` and nothing is at `path`, made first by [`keygen`]. Returns the secret and whether it was made now. Decoding the digits is
/// the caller's (`radveil_store::Key::from_hex`).
pub fn key_file(
    path: &Path,
    what: &str,
    policy: PermissionPolicy,
    make: bool,
) -> Result<(Secret, bool), SecretError> {
    let made = make && std::fs::symlink_metadata(path).is_err();
    if made {
        keygen(path)?;
    }
    Ok((read_secret(path, what, policy)?, made))
}

/// Reads a secret key file (`what` names it in messages). Its permissions are checked on
/// the opened file, so a file swapped after the check is not read: any group or other bit
/// draws a warning, or an error under [`PermissionPolicy::Refuse`]. At most
/// [`MAX_KEY_FILE`] bytes are read.
pub fn read_secret(
    path: &Path,
    what: &str,
    policy: PermissionPolicy,
) -> Result<Secret, SecretError> {
    let read = |source| SecretError::Read {
        what: what.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(read)?;
    let meta = f.metadata().map_err(read)?;
    if !meta.is_file() {
        return Err(SecretError::NotAFile {
            what: what.to_string(),
            path: path.to_path_buf(),
        });
    }
    let warning = loose_permissions(&meta).map(|(mode, foreign_owner)| LoosePermissions {
        what: what.to_string(),
        path: path.to_path_buf(),
        mode,
        foreign_owner,
    });
    if let (Some(w), PermissionPolicy::Refuse) = (&warning, policy) {
        return Err(SecretError::Refused(w.clone()));
    }
    let mut bytes = Zeroizing::new(Vec::new());
    f.take(MAX_KEY_FILE.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(SecretError::TooLarge {
            what: what.to_string(),
            path: path.to_path_buf(),
        });
    }
    Ok(Secret { bytes, warning })
}

/// The permission bits and a foreign owner's user ID, when group or others have any bit or
/// another user owns the file.
#[cfg(unix)]
fn loose_permissions(meta: &std::fs::Metadata) -> Option<(u32, Option<u32>)> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mode = meta.permissions().mode() & 0o777;
    let me = rustix::process::geteuid().as_raw();
    let foreign = (meta.uid() != me).then_some(meta.uid());
    (mode & 0o077 != 0 || foreign.is_some()).then_some((mode, foreign))
}

#[cfg(not(unix))]
fn loose_permissions(_: &std::fs::Metadata) -> Option<(u32, Option<u32>)> {
    None
}

/// The de-identification key: read from `file` under `policy`, or else taken from `env`
/// (the value of `RADVEIL_KEY`, which the caller reads). Returns the key and the warning
/// about the file's permissions, if any.
pub fn load_key(
    file: Option<&Path>,
    env: Option<OsString>,
    policy: PermissionPolicy,
) -> Result<(Key, Option<LoosePermissions>), SecretError> {
    let (bytes, warning) = match file {
        Some(f) => {
            let s = read_secret(f, "key file", policy)
                .map_err(|e| SecretError::KeyFile(Box::new(e)))?;
            (s.bytes, s.warning)
        }
        None => match env {
            Some(v) => (Zeroizing::new(v.into_encoded_bytes()), None),
            None => return Err(SecretError::NoKey),
        },
    };
    let key = Key::new(bytes).map_err(SecretError::BadKey)?;
    Ok((key, warning))
}

/// Writes a fresh key of [`MIN_KEY_LEN`] random bytes, hex-encoded, to the new file `file`
/// (mode 0600; see [`write_private`]).
pub fn keygen(file: &Path) -> Result<(), SecretError> {
    let mut raw = Zeroizing::new([0u8; MIN_KEY_LEN]);
    getrandom::getrandom(raw.as_mut()).map_err(SecretError::Random)?;
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = Zeroizing::new(Vec::with_capacity(2 * MIN_KEY_LEN + 1));
    for b in raw.iter() {
        hex.push(DIGITS[usize::from(b >> 4)]);
        hex.push(DIGITS[usize::from(b & 0xf)]);
    }
    hex.push(b'\n');
    write_private(file, |f| f.write_all(&hex))
}

/// Writes the new secret file `path` (mode 0600) with what `fill` writes: into a temporary
/// beside it, created mode 0600 and exclusively (never through a link), made durable, then
/// moved into place only if the name is still free ([`Dir::write_new`]). A key file appears
/// whole or not at all, and an existing one (or a link at its name) is never replaced. The
/// mode is set again on the open file, so a umask cannot change it.
pub fn write_private(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<(), SecretError> {
    let create = |source| SecretError::Create {
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .ok_or_else(|| SecretError::NoFileName(path.to_path_buf()))?;
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = Dir::open(parent).map_err(create)?;
    dir.write_new(name, "", |f| {
        let written = set_private(f)
            .and_then(|()| fill(f))
            .and_then(|()| f.sync_all());
        written.map_err(|e| OutputError::Content(format!("writing the key: {e}")))
    })
    .map_err(create)?;
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
    use std::error::Error;
    use std::os::unix::fs::PermissionsExt;

    /// The error and its causes, as the command line prints them.
    fn chain(e: &SecretError) -> String {
        let mut s = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            s.push_str(&format!(": {c}"));
            cause = c.source();
        }
        s
    }

    #[test]
    fn keys_another_user_owns_are_warned_about_and_refused_when_strict() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        keygen(&path).unwrap();
        // Only root can give a file away; elsewhere there is nothing to check.
        let other = rustix::process::geteuid().as_raw().wrapping_add(4242);
        if std::os::unix::fs::chown(&path, Some(other), None).is_err() {
            eprintln!("not root: cannot make a file another user owns; not checked");
            return;
        }
        let err = chain(&load_key(Some(&path), None, PermissionPolicy::Refuse).unwrap_err());
        assert!(err.contains("belongs to another user"), "{err}");
        assert!(err.contains("refused under --strict"), "{err}");
        assert!(!err.contains("has permissions"), "mode 0600 is fine: {err}");
        let (_, warning) = load_key(Some(&path), None, PermissionPolicy::Warn).unwrap();
        let warning = warning.expect("no warning").to_string();
        assert!(warning.contains(&format!("uid {other}")), "{warning}");
    }

    #[test]
    fn keys_others_can_read_are_refused_when_strict() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        keygen(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let strict = PermissionPolicy::Refuse;
        let (_, warning) = load_key(Some(&path), None, strict).unwrap();
        assert_eq!(warning, None);
        for mode in [0o640, 0o604, 0o620, 0o644] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = chain(&load_key(Some(&path), None, strict).unwrap_err());
            assert!(err.contains(&format!("{mode:04o}")), "{err}");
            assert!(err.contains("refused under --strict"), "{err}");
            let (_, warning) = load_key(Some(&path), None, PermissionPolicy::Warn).unwrap();
            let warning = warning.expect("no warning").to_string();
            assert!(warning.contains(&format!("{mode:04o}")), "{warning}");
            assert!(warning.contains("chmod 600"), "{warning}");
        }
    }

    #[test]
    fn a_key_file_is_preferred_and_the_environment_is_the_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        keygen(&path).unwrap();
        let hex = std::fs::read(&path).unwrap();
        assert_eq!(hex.len(), 2 * MIN_KEY_LEN + 1);
        assert!(hex[..2 * MIN_KEY_LEN].iter().all(u8::is_ascii_hexdigit));
        let env = Some(OsString::from("x".repeat(40)));
        assert!(load_key(Some(&path), env.clone(), PermissionPolicy::Refuse).is_ok());
        assert!(load_key(None, env, PermissionPolicy::Refuse).is_ok());
        let none = chain(&load_key(None, None, PermissionPolicy::Warn).unwrap_err());
        assert!(none.contains("radveil keygen"), "{none}");
        let short = Some(OsString::from("tiny7"));
        let err = chain(&load_key(None, short, PermissionPolicy::Warn).unwrap_err());
        assert!(
            err.contains("RADVEIL_KEY") && !err.contains("tiny7"),
            "{err}"
        );
        // A missing file names the file and says how to make one.
        let missing = dir.path().join("missing");
        let err = chain(&load_key(Some(&missing), None, PermissionPolicy::Warn).unwrap_err());
        assert!(
            err.contains("radveil keygen") && err.contains("missing"),
            "{err}"
        );
        // A directory is no key file.
        let err = read_secret(dir.path(), "key file", PermissionPolicy::Warn).unwrap_err();
        assert!(matches!(err, SecretError::NotAFile { .. }), "{err}");
    }

    #[test]
    fn oversized_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![b'a'; MAX_KEY_FILE as usize + 1]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = read_secret(&path, "key file", PermissionPolicy::Warn).unwrap_err();
        assert!(matches!(err, SecretError::TooLarge { .. }), "{err}");
        std::fs::write(&path, vec![b'a'; MAX_KEY_FILE as usize]).unwrap();
        let s = read_secret(&path, "key file", PermissionPolicy::Warn).unwrap();
        assert_eq!(s.bytes.len() as u64, MAX_KEY_FILE);
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
        assert!(chain(&err).contains("disk full"), "{}", chain(&err));
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
        assert!(chain(&err).contains("never overwritten"), "{}", chain(&err));
        assert_eq!(std::fs::read(&path).unwrap(), b"secret\n");
        let target = dir.path().join("target");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(write_private(&link, |f| f.write_all(b"other\n")).is_err());
        assert!(!target.exists(), "written through a link");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
