//! Writing outputs inside an output directory that was opened once: every directory below it
//! is made with `mkdirat` and opened with `O_NOFOLLOW | O_DIRECTORY`, every file is written
//! to a temporary made with `O_CREAT | O_EXCL | O_NOFOLLOW` and then moved into place with
//! `renameat2(RENAME_NOREPLACE)` (or `linkat` where the file system lacks it). No path is
//! ever joined and re-resolved, so a symbolic link planted in the output tree is never
//! followed, readers never see a partial file, and nothing existing is overwritten.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

/// Why an output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The output already exists (it is never overwritten).
    #[error("output {0} exists; not overwritten")]
    Exists(PathBuf),
    /// The output exists with other content than this run computed (a resumed run keeps only
    /// identical outputs).
    #[error("output {0} exists and differs from what this run computes; not overwritten")]
    ExistsDiffers(PathBuf),
    /// A directory on the way is a symbolic link or not a directory.
    #[error("{0} is a symbolic link or not a directory; not followed")]
    NotADirectory(PathBuf),
    /// A name that is not one plain path component.
    #[error("{0:?} is not a plain file name")]
    BadName(String),
    /// Another run holds the output directory.
    #[error("{0} is being written by another radveil run")]
    Locked(PathBuf),
    /// Any other failure of the file system.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// The content could not be produced (the closure's error).
    #[error("{0}")]
    Content(String),
}

fn io(what: &'static str, path: &Path, e: impl Into<std::io::Error>) -> OutputError {
    OutputError::Io {
        what,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// What happened to one output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The file was written.
    New,
    /// An identical file was already there (a resumed run); it was kept.
    Kept,
}

/// A directory opened for writing outputs into.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// Prefix and suffix of every temporary radveil writes.
const TEMP_PREFIX: &str = ".radveil-";
const TEMP_SUFFIX: &str = ".part";

/// A random name for a temporary, tagged with the run that makes it.
fn temp_name(tag: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let mut r = [0u8; 8];
        if getrandom::getrandom(&mut r).is_err() {
            // Unpredictable enough for names that O_EXCL protects anyway.
            let t = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            r = (t ^ u64::from(std::process::id()).rotate_left(32)).to_le_bytes();
        }
        u64::from_le_bytes(r)
    });
    // Distinct for every call in this process (an odd multiplier is a bijection).
    let n = seed
        .wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("{TEMP_PREFIX}{tag}{n:016x}{TEMP_SUFFIX}")
}

/// Checks that `name` is one plain path component.
fn plain(name: &OsStr) -> Result<&OsStr, OutputError> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(OutputError::BadName(name.to_string_lossy().into_owned()));
    }
    Ok(name)
}

impl Dir {
    /// Opens an existing directory named by the operator (symbolic links in this path are
    /// the operator's and are followed).
    pub fn open(path: &Path) -> Result<Dir, OutputError> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io("cannot open directory", path, e))?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Creates the directory named by the operator (and its parents) when missing, then
    /// opens it.
    pub fn create(path: &Path) -> Result<Dir, OutputError> {
        std::fs::create_dir_all(path).map_err(|e| io("cannot create directory", path, e))?;
        Dir::open(path)
    }

    /// The directory's path, for messages and reports.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens (making it when missing, with `mode` less the umask) the subdirectory `name`,
    /// never through a symbolic link. Returns whether it was made now.
    pub fn subdir_mode(&self, name: &OsStr, mode: u32) -> Result<(Dir, bool), OutputError> {
        let name = plain(name)?;
        let path = self.path.join(name);
        let made = match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode)) {
            Ok(()) => true,
            Err(Errno::EXIST) => false,
            Err(e) => return Err(io("cannot create directory", &path, e)),
        };
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::LOOP | Errno::NOTDIR => OutputError::NotADirectory(path.clone()),
            e => io("cannot open directory", &path, e),
        })?;
        Ok((Dir { fd, path }, made))
    }

    /// Opens (making it when missing) the subdirectory `name`, never through a link.
    pub fn subdir(&self, name: &OsStr) -> Result<Dir, OutputError> {
        self.subdir_mode(name, 0o777).map(|(d, _)| d)
    }

    /// Opens (making them when missing) the directories of a relative path, one by one.
    pub fn descend(&self, relative: &Path) -> Result<Dir, OutputError> {
        let comps = relative.components();
        let mut dir: Option<Dir> = None;
        for c in comps {
            let Component::Normal(name) = c else {
                if c == Component::CurDir {
                    continue;
                }
                return Err(OutputError::BadName(relative.display().to_string()));
            };
            let next = dir.as_ref().unwrap_or(self).subdir(name)?;
            dir = Some(next);
        }
        match dir {
            Some(d) => Ok(d),
            None => Dir::open_fd(&self.fd, &self.path),
        }
    }

    fn open_fd(fd: &OwnedFd, path: &Path) -> Result<Dir, OutputError> {
        let fd = fd
            .try_clone()
            .map_err(|e| io("cannot open directory", path, e))?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// A second handle on the same directory.
    pub fn try_clone(&self) -> Result<Dir, OutputError> {
        Dir::open_fd(&self.fd, &self.path)
    }

    /// Whether `name` exists here (a symbolic link counts, and is not followed).
    pub fn exists(&self, name: &OsStr) -> Result<bool, OutputError> {
        match rustix::fs::statat(&self.fd, plain(name)?, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(io("cannot look at", &self.path.join(name), e)),
        }
    }

    /// Creates a temporary file here (mode `mode`), to be moved into place by
    /// [`Pending::commit`]; dropped uncommitted, it is removed.
    pub fn temp(&self, tag: &str, mode: u32) -> Result<Pending<'_>, OutputError> {
        let (name, file) = self.create_temp(tag, mode)?;
        Ok(Pending {
            dir: DirRef::Borrowed(self),
            name,
            file,
        })
    }

    /// [`Dir::temp`], the temporary owning its directory handle.
    pub fn into_temp(self, tag: &str, mode: u32) -> Result<Pending<'static>, OutputError> {
        let (name, file) = self.create_temp(tag, mode)?;
        Ok(Pending {
            dir: DirRef::Owned(self),
            name,
            file,
        })
    }

    fn create_temp(&self, tag: &str, mode: u32) -> Result<(String, File), OutputError> {
        let mut last = None;
        for _ in 0..16 {
            let name = temp_name(tag);
            match rustix::fs::openat(
                &self.fd,
                name.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(mode),
            ) {
                Ok(fd) => return Ok((name, File::from(fd))),
                Err(Errno::EXIST) => last = Some(Errno::EXIST),
                Err(e) => return Err(io("cannot create a temporary file in", &self.path, e)),
            }
        }
        Err(io(
            "cannot create a temporary file in",
            &self.path,
            last.unwrap_or(Errno::EXIST),
        ))
    }

    /// Writes a new file `name` (mode 0600) with what `fill` writes into it: to a
    /// temporary first, moved into place only when `fill` succeeded and the name is free.
    pub fn write_new(
        &self,
        name: &OsStr,
        tag: &str,
        fill: impl FnOnce(&mut File) -> Result<(), OutputError>,
    ) -> Result<PathBuf, OutputError> {
        let name = plain(name)?;
        let target = self.path.join(name);
        if self.exists(name)? {
            return Err(OutputError::Exists(target));
        }
        let mut tmp = self.temp(tag, 0o600)?;
        fill(tmp.file())?;
        tmp.commit(name)?;
        Ok(target)
    }

    /// Writes `bytes` as the new file `relative` below this directory (its directories made
    /// when missing, none of them through a link); see [`Dir::write_new`].
    pub fn write_bytes_at(&self, relative: &Path, bytes: &[u8]) -> Result<PathBuf, OutputError> {
        let name = relative
            .file_name()
            .ok_or_else(|| OutputError::BadName(relative.display().to_string()))?;
        let below;
        let dir = match relative.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(p) => {
                below = self.descend(p)?;
                &below
            }
            None => self,
        };
        let target = dir.path.join(name);
        dir.write_new(name, "", |f| {
            f.write_all(bytes)
                .map_err(|e| io("cannot write", &target, e))
        })
    }

    /// Compares the existing regular file `name` with what `produce` writes, byte for byte,
    /// without holding either in memory. A link or anything but a regular file differs.
    pub fn same_content(
        &self,
        name: &OsStr,
        produce: impl FnOnce(&mut dyn Write) -> Result<(), OutputError>,
    ) -> Result<bool, OutputError> {
        let name = plain(name)?;
        let path = self.path.join(name);
        let fd = match rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::LOOP) => return Ok(false),
            Err(e) => return Err(io("cannot read", &path, e)),
        };
        let file = File::from(fd);
        let meta = file.metadata().map_err(|e| io("cannot read", &path, e))?;
        if !meta.is_file() {
            return Ok(false);
        }
        let mut cmp = Compare {
            existing: std::io::BufReader::with_capacity(256 * 1024, file),
            same: true,
            scratch: Vec::new(),
        };
        let produced = produce(&mut cmp);
        // A comparison that stopped early is a difference, not a failure.
        if !cmp.same {
            return Ok(false);
        }
        produced?;
        let mut one = [0u8; 1];
        let at_end = cmp
            .existing
            .read(&mut one)
            .map_err(|e| io("cannot read", &path, e))?
            == 0;
        Ok(at_end)
    }

    /// Removes the temporaries (`.radveil-*.part`) in this directory that a run killed
    /// before it finished left behind: those not tagged `keep_tag` and last modified before
    /// `before`. Returns how many were removed.
    pub fn remove_stale_temporaries(&self, keep_tag: &str, before: SystemTime) -> usize {
        let Ok(mut entries) = rustix::fs::Dir::read_from(&self.fd) else {
            return 0;
        };
        let mut stale = Vec::new();
        while let Some(Ok(e)) = entries.next() {
            let name = e.file_name().to_bytes();
            let Ok(name) = std::str::from_utf8(name) else {
                continue;
            };
            if !(name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX))
                || name.starts_with(&format!("{TEMP_PREFIX}{keep_tag}"))
            {
                continue;
            }
            stale.push(name.to_string());
        }
        let mut removed = 0;
        for name in stale {
            let Ok(st) = rustix::fs::statat(&self.fd, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
            else {
                continue;
            };
            let is_file = rustix::fs::FileType::from_raw_mode(st.st_mode).is_file();
            let mtime = SystemTime::UNIX_EPOCH
                .checked_add(std::time::Duration::new(
                    u64::try_from(st.st_mtime).unwrap_or(0),
                    u32::try_from(st.st_mtime_nsec).unwrap_or(0),
                ))
                .unwrap_or(SystemTime::UNIX_EPOCH);
            if is_file
                && mtime < before
                && rustix::fs::unlinkat(&self.fd, name.as_str(), AtFlags::empty()).is_ok()
            {
                removed += 1;
            }
        }
        removed
    }

    /// Takes an exclusive lock on this directory (`flock`), held while the `Dir` lives: two
    /// runs into one output directory would each take the other's temporaries for stale.
    pub fn lock(&self) -> Result<(), OutputError> {
        match rustix::fs::flock(
            &self.fd,
            rustix::fs::FlockOperation::NonBlockingLockExclusive,
        ) {
            Ok(()) => Ok(()),
            Err(Errno::WOULDBLOCK) => Err(OutputError::Locked(self.path.clone())),
            Err(e) => Err(io("cannot lock", &self.path, e)),
        }
    }

    /// Sets this directory's permission bits (whatever the umask made of them).
    pub fn set_mode(&self, mode: u32) -> Result<(), OutputError> {
        rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(mode))
            .map_err(|e| io("cannot set the mode of", &self.path, e))
    }
}

/// A writer that compares what is written with an existing file.
struct Compare<R: Read> {
    existing: R,
    same: bool,
    scratch: Vec<u8>,
}

impl<R: Read> Write for Compare<R> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !self.same {
            return Err(std::io::Error::other("differs"));
        }
        self.scratch.resize(buf.len(), 0);
        let mut got = 0;
        while got < buf.len() {
            let n = self.existing.read(&mut self.scratch[got..])?;
            if n == 0 {
                break;
            }
            got += n;
        }
        if got < buf.len() || self.scratch[..got] != buf[..got] {
            self.same = false;
            return Err(std::io::Error::other("differs"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A directory a [`Pending`] lives in: borrowed, or owned by it.
#[derive(Debug)]
enum DirRef<'d> {
    Borrowed(&'d Dir),
    Owned(Dir),
}

impl std::ops::Deref for DirRef<'_> {
    type Target = Dir;
    fn deref(&self) -> &Dir {
        match self {
            DirRef::Borrowed(d) => d,
            DirRef::Owned(d) => d,
        }
    }
}

/// A temporary file in a [`Dir`], removed unless committed.
#[derive(Debug)]
pub struct Pending<'d> {
    dir: DirRef<'d>,
    name: String,
    file: File,
}

impl Pending<'_> {
    /// The open temporary file.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Makes the file durable (`fsync`).
    pub fn sync(&mut self) -> Result<(), OutputError> {
        let path = self.dir.path.join(&self.name);
        self.file()
            .sync_all()
            .map_err(|e| io("cannot write", &path, e))
    }

    /// Moves the temporary to `name` in its directory, only if `name` is free.
    pub fn commit(mut self, name: &OsStr) -> Result<(), OutputError> {
        let name = plain(name)?;
        let target = self.dir.path.join(name);
        let fd = self.dir.fd.as_fd();
        match rustix::fs::renameat_with(fd, self.name.as_str(), fd, name, RenameFlags::NOREPLACE) {
            Ok(()) => {
                self.name.clear();
                Ok(())
            }
            Err(Errno::EXIST) => Err(OutputError::Exists(target)),
            // No renameat2 here (an old kernel or file system): a hard link is atomic and
            // refuses an existing name too.
            Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                match rustix::fs::linkat(fd, self.name.as_str(), fd, name, AtFlags::empty()) {
                    Ok(()) => Ok(()), // the temporary is unlinked on drop
                    Err(Errno::EXIST) => Err(OutputError::Exists(target)),
                    Err(e) => Err(io("cannot move output into place", &target, e)),
                }
            }
            Err(e) => Err(io("cannot move output into place", &target, e)),
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.name.is_empty() {
            let _ = rustix::fs::unlinkat(&self.dir.fd, self.name.as_str(), AtFlags::empty());
        }
    }
}

/// Writes `bytes` to `target`, which must not exist, through a temporary beside it: the
/// simple form for commands that write a few files named by the operator. The parent
/// directory (the operator's path) is made when missing; the file itself is created without
/// following a link.
pub fn write_new_file(target: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    let name = target
        .file_name()
        .ok_or_else(|| OutputError::BadName(target.display().to_string()))?;
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Dir::create(parent)?.write_bytes_at(Path::new(name), bytes)?;
    Ok(())
}

/// The stale temporaries removed from the directories a run wrote into, once per directory.
#[derive(Debug, Default)]
pub struct Sweeper {
    seen: Mutex<std::collections::HashSet<PathBuf>>,
    removed: std::sync::atomic::AtomicUsize,
}

impl Sweeper {
    /// Sweeps `dir` unless it was swept before in this run.
    pub fn sweep(&self, dir: &Dir, keep_tag: &str, before: SystemTime) {
        let first = self
            .seen
            .lock()
            .map(|mut s| s.insert(dir.path.clone()))
            .unwrap_or(false);
        if first {
            let n = dir.remove_stale_temporaries(keep_tag, before);
            self.removed
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// How many stale temporaries were removed.
    pub fn removed(&self) -> usize {
        self.removed.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_new_files_and_never_overwrites() {
        let d = tempfile::tempdir().unwrap();
        let out = Dir::open(d.path()).unwrap();
        let sub = out.descend(Path::new("a/b/c")).unwrap();
        let p = sub
            .write_new(OsStr::new("x.dcm"), "t", |f| {
                f.write_all(b"hello")
                    .map_err(|e| io("w", Path::new("x"), e))
            })
            .unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"hello");
        let again = sub.write_new(OsStr::new("x.dcm"), "t", |f| {
            f.write_all(b"other")
                .map_err(|e| io("w", Path::new("x"), e))
        });
        assert!(matches!(again, Err(OutputError::Exists(_))));
        assert_eq!(std::fs::read(&p).unwrap(), b"hello");
        // no temporary is left behind, whatever happened
        let names: Vec<_> = std::fs::read_dir(d.path().join("a/b/c"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.dcm")]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_failed_fill_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let out = Dir::open(d.path()).unwrap();
        let r = out.write_new(OsStr::new("x"), "t", |_| {
            Err(OutputError::Content("nope".into()))
        });
        assert!(matches!(r, Err(OutputError::Content(_))));
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn planted_links_are_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("a")).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("a/b")).unwrap();
        let out = Dir::open(d.path()).unwrap();
        let r = out.descend(Path::new("a/b/c"));
        assert!(matches!(r, Err(OutputError::NotADirectory(_))), "{r:?}");
        // a link where the file goes, dangling or not
        std::os::unix::fs::symlink(outside.path().join("victim"), d.path().join("a/x")).unwrap();
        let a = out.subdir(OsStr::new("a")).unwrap();
        let r = a.write_new(OsStr::new("x"), "t", |f| {
            f.write_all(b"data").map_err(|e| io("w", Path::new("x"), e))
        });
        assert!(matches!(r, Err(OutputError::Exists(_))), "{r:?}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        for bad in ["..", ".", "", "a/b"] {
            assert!(matches!(
                out.subdir(OsStr::new(bad)),
                Err(OutputError::BadName(_))
            ));
        }
        assert!(matches!(
            out.descend(Path::new("../escape")),
            Err(OutputError::BadName(_))
        ));
    }

    #[test]
    fn compares_with_an_existing_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"abcdef").unwrap();
        std::os::unix::fs::symlink(d.path().join("f"), d.path().join("l")).unwrap();
        let out = Dir::open(d.path()).unwrap();
        let w = |bytes: &'static [u8]| {
            move |w: &mut dyn Write| {
                w.write_all(bytes)
                    .map_err(|e| io("compare", Path::new("f"), e))
            }
        };
        assert!(out.same_content(OsStr::new("f"), w(b"abcdef")).unwrap());
        assert!(!out.same_content(OsStr::new("f"), w(b"abcdeX")).unwrap());
        assert!(!out.same_content(OsStr::new("f"), w(b"abc")).unwrap());
        assert!(!out.same_content(OsStr::new("f"), w(b"abcdefg")).unwrap());
        assert!(!out.same_content(OsStr::new("l"), w(b"abcdef")).unwrap());
    }

    #[test]
    fn stale_temporaries_of_other_runs_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let out = Dir::open(d.path()).unwrap();
        std::fs::write(d.path().join(".radveil-old1234.part"), b"x").unwrap();
        std::fs::write(d.path().join("keep.dcm"), b"x").unwrap();
        std::fs::write(d.path().join(".radveil-old.txt"), b"x").unwrap();
        let before = SystemTime::now() + std::time::Duration::from_secs(1);
        let mine = out.temp("mine-", 0o600).unwrap();
        assert_eq!(out.remove_stale_temporaries("mine-", before), 1);
        let mut names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.iter().any(|n| n.starts_with(".radveil-mine-")));
        drop(mine);
        // a temporary newer than the run's start is not touched
        std::fs::write(d.path().join(".radveil-new.part"), b"x").unwrap();
        assert_eq!(
            out.remove_stale_temporaries("mine-", SystemTime::UNIX_EPOCH),
            0
        );
    }

    #[test]
    fn a_locked_directory_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let a = Dir::open(d.path()).unwrap();
        a.lock().unwrap();
        let b = Dir::open(d.path()).unwrap();
        assert!(matches!(b.lock(), Err(OutputError::Locked(_))));
        drop(a);
        b.lock().unwrap();
    }

    #[test]
    fn write_new_file_makes_the_parent() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("x/y/z.png");
        write_new_file(&t, b"png").unwrap();
        assert_eq!(std::fs::read(&t).unwrap(), b"png");
        assert!(matches!(
            write_new_file(&t, b"png"),
            Err(OutputError::Exists(_))
        ));
    }
}
