//! Reading one input: opened once (without blocking, so a FIFO named as an input cannot hang
//! the run), accepted only when it is a regular file, read into a worker's buffer under the
//! memory budget, and checked after use: the tail copied from the same descriptor, and the
//! file's size, times and header bytes compared with what was parsed.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use radveil_part10::{BudgetError, Grant, MemoryBudget, DEFAULT_WAIT};

/// What kind of file system object a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file: the only kind that is read.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link (not followed).
    Symlink,
    /// A FIFO (named pipe): reading it would wait for a writer.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A character device (`/dev/zero` reads forever).
    CharDevice,
    /// A block device.
    BlockDevice,
    /// Anything else.
    Other,
}

impl FileKind {
    /// The kind of a file type.
    pub fn of(t: std::fs::FileType) -> FileKind {
        use std::os::unix::fs::FileTypeExt;
        if t.is_file() {
            FileKind::Regular
        } else if t.is_dir() {
            FileKind::Directory
        } else if t.is_symlink() {
            FileKind::Symlink
        } else if t.is_fifo() {
            FileKind::Fifo
        } else if t.is_socket() {
            FileKind::Socket
        } else if t.is_char_device() {
            FileKind::CharDevice
        } else if t.is_block_device() {
            FileKind::BlockDevice
        } else {
            FileKind::Other
        }
    }
}

impl std::fmt::Display for FileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileKind::Regular => "a regular file",
            FileKind::Directory => "a directory",
            FileKind::Symlink => "a symbolic link",
            FileKind::Fifo => "a FIFO (named pipe)",
            FileKind::Socket => "a socket",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Other => "a special file",
        })
    }
}

/// Why an input was not read, or its output was dropped.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file could not be opened or its status read.
    #[error("cannot read: {0}")]
    Open(std::io::Error),
    /// Not a regular file: only regular files are read.
    #[error("not a regular file but {0}; not read")]
    NotRegular(FileKind),
    /// Reading failed.
    #[error("cannot read: {0}")]
    Read(std::io::Error),
    /// The file is empty.
    #[error("empty file")]
    Empty,
    /// The memory budget cannot hold what this file needs.
    #[error("{0}")]
    Memory(#[from] BudgetError),
    /// The file was written to while it was read or copied: the output is dropped, since
    /// what was parsed is no longer what would be copied.
    #[error("the input changed while it was being de-identified; its output was dropped")]
    Changed,
}

/// Files at least this large are read in two steps: the part before the pixel data, then
/// (when the pixel data ends the file) the pixel data copied file to file by the kernel.
pub const SPLIT_READ_MIN: u64 = 512 * 1024;
/// How much of a large file is read to find its pixel data: a little first (most headers
/// are a few kilobytes), then more.
const PREFIX_LENS: [usize; 2] = [16 * 1024, 256 * 1024];

/// What identifies the state of a file: when any of it changes, the content may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Snapshot {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Snapshot {
    fn of(f: &File) -> std::io::Result<Snapshot> {
        Ok(Snapshot::from_metadata(&f.metadata()?))
    }

    fn from_metadata(m: &std::fs::Metadata) -> Snapshot {
        Snapshot {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// An opened regular file.
#[derive(Debug)]
pub struct Input {
    file: File,
    snapshot: Snapshot,
}

/// Opens `path` for reading without blocking (a FIFO opens at once and is then refused) and
/// without becoming its controlling terminal; only a regular file is accepted.
pub fn open_regular(path: &Path) -> Result<File, InputError> {
    open_regular_with_metadata(path).map(|(f, _)| f)
}

/// [`open_regular`], with the file's status as read when it was accepted.
fn open_regular_with_metadata(path: &Path) -> Result<(File, std::fs::Metadata), InputError> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| InputError::Open(e.into()))?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(InputError::Open)?;
    let kind = FileKind::of(meta.file_type());
    if kind != FileKind::Regular {
        return Err(InputError::NotRegular(kind));
    }
    Ok((file, meta))
}

/// Reads a whole regular file of at most `max` bytes (see [`open_regular`]): for readers
/// that take a file's bytes, with the caller holding a grant for `max`.
pub fn read_regular(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let file = open_regular(path).map_err(|e| match e {
        InputError::Open(e) | InputError::Read(e) => e,
        e => std::io::Error::other(e.to_string()),
    })?;
    let len = file.metadata()?.len();
    if len > max {
        return Err(std::io::Error::other(format!(
            "{len} bytes, more than the {max} bytes granted"
        )));
    }
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(len as usize)
        .map_err(|_| std::io::Error::other(format!("cannot allocate {len} bytes")))?;
    file.take(len.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 != len {
        return Err(std::io::Error::other(InputError::Changed.to_string()));
    }
    Ok(bytes)
}

impl Input {
    /// Opens an input (see [`open_regular`]).
    pub fn open(path: &Path) -> Result<Input, InputError> {
        let (file, meta) = open_regular_with_metadata(path)?;
        Ok(Input {
            file,
            snapshot: Snapshot::from_metadata(&meta),
        })
    }

    /// The file's size when it was opened.
    pub fn len(&self) -> u64 {
        self.snapshot.len
    }

    /// Whether the file was empty when it was opened.
    pub fn is_empty(&self) -> bool {
        self.snapshot.len == 0
    }

    /// Whether the file is as it was when opened.
    fn unchanged(&self) -> Result<(), InputError> {
        match Snapshot::of(&self.file) {
            Ok(s) if s == self.snapshot => Ok(()),
            Ok(_) => Err(InputError::Changed),
            Err(e) => Err(InputError::Read(e)),
        }
    }
}

/// A worker's reusable input buffer. Its memory is counted in the budget while a file is
/// being worked on ([`Loaded`] holds the grant); a worker that must wait for memory first
/// gives its buffer back, so it never waits while holding memory.
#[derive(Debug, Default)]
pub struct Scratch {
    buf: Vec<u8>,
}

/// Buffers larger than this are not kept for the next file.
const KEEP_BUFFER: usize = 64 << 20;

impl Scratch {
    /// An empty buffer.
    pub fn new() -> Scratch {
        Scratch::default()
    }

    /// Memory for the buffer to hold `bytes` plus `extra` bytes of work, counting the
    /// capacity the buffer already has. Waits (holding nothing) when the memory is in use.
    fn reserve<'b>(
        &mut self,
        budget: &'b MemoryBudget,
        bytes: u64,
        extra: u64,
    ) -> Result<Grant<'b>, BudgetError> {
        let cap = self.buf.capacity() as u64;
        let need = bytes.saturating_add(extra);
        if let Ok(g) = budget.try_reserve(need.saturating_add(cap.saturating_sub(bytes))) {
            return Ok(g);
        }
        self.buf = Vec::new();
        budget.reserve(need, DEFAULT_WAIT)
    }

    /// Called when a file is done: a very large buffer is not kept.
    pub fn release(&mut self) {
        if self.buf.capacity() > KEEP_BUFFER {
            self.buf = Vec::new();
        }
    }

    /// Gives the buffer's memory back (before waiting for memory).
    pub fn free(&mut self) {
        self.buf = Vec::new();
    }
}

/// An input read into a worker's buffer, with the memory it is granted.
#[derive(Debug)]
pub struct Loaded<'s, 'b> {
    /// The bytes read: the whole file, or the part before a trailing Pixel Data element.
    pub bytes: &'s [u8],
    /// Where the rest of the file is to be copied from, when `bytes` stop short of it.
    pub tail: Option<Tail>,
    input: Input,
    /// The memory granted for this file: the buffer and the work on it.
    pub grant: Grant<'b>,
}

/// A byte range at the end of the input, copied verbatim after the de-identified part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tail {
    /// Where it starts in the input.
    pub offset: u64,
    /// Its length.
    pub len: u64,
}

impl Loaded<'_, '_> {
    /// Copies the tail (`copy_file_range` where the kernel has it) into `out`, from the
    /// descriptor that was parsed, then checks that the input did not change meanwhile.
    pub fn copy_tail(&self, out: &mut File) -> Result<(), InputError> {
        // File to file, `std::io::copy` uses `copy_file_range`.
        self.write_tail(out)
    }

    /// Streams the tail into any writer (used to compare with an existing output).
    pub fn write_tail(&self, out: &mut impl std::io::Write) -> Result<(), InputError> {
        if let Some(tail) = self.tail {
            let mut f = &self.input.file;
            f.seek(SeekFrom::Start(tail.offset))
                .map_err(InputError::Read)?;
            let copied = std::io::copy(&mut f.take(tail.len), out).map_err(InputError::Read)?;
            if copied != tail.len {
                return Err(InputError::Changed);
            }
        }
        self.check_unchanged()
    }

    /// Whether the input is still the one that was parsed: same size, times and inode, and
    /// (when only its head was read) the same head bytes.
    pub fn check_unchanged(&self) -> Result<(), InputError> {
        self.input.unchanged()?;
        if self.tail.is_some() {
            // Times can be coarse: compare the parsed bytes too (a few kilobytes, cached).
            let mut again = vec![0; self.bytes.len()];
            self.input
                .file
                .read_exact_at(&mut again, 0)
                .map_err(|_| InputError::Changed)?;
            if again != self.bytes {
                return Err(InputError::Changed);
            }
        }
        Ok(())
    }
}

/// Reads `input` into `scratch` under `budget`, with `extra` bytes more granted beside the
/// bytes read (the de-identifier charges what it allocates to the grant as it goes). A large file whose pixel data ends it is read only up to the pixel data: the
/// element is copied to the output later without passing through memory (pixel data is never
/// changed by de-identification). A file that does not fit the budget is refused before it
/// is read.
pub fn load<'s, 'b>(
    input: Input,
    scratch: &'s mut Scratch,
    budget: &'b MemoryBudget,
    extra: u64,
) -> Result<Loaded<'s, 'b>, InputError> {
    let len = input.len();
    if len == 0 {
        return Err(InputError::Empty);
    }
    let mut grant = None;
    if len >= SPLIT_READ_MIN {
        let first = PREFIX_LENS[PREFIX_LENS.len() - 1] as u64;
        let g = scratch.reserve(budget, first, extra)?;
        let buf = &mut scratch.buf;
        buf.clear();
        let f = &input.file;
        for prefix in PREFIX_LENS {
            buf.reserve(prefix.saturating_sub(buf.len()));
            f.take((prefix - buf.len().min(prefix)) as u64)
                .read_to_end(buf)
                .map_err(InputError::Read)?;
            if let Some(at) = radveil_part10::trailing_pixel_data(buf, len) {
                buf.truncate(at);
                let tail = Tail {
                    offset: at as u64,
                    len: len - at as u64,
                };
                return Ok(Loaded {
                    bytes: &scratch.buf,
                    tail: Some(tail),
                    input,
                    grant: g,
                });
            }
        }
        grant = Some(g);
    }
    // The whole file: its size plus one byte (to see that it did not grow), and the work.
    let whole = len.saturating_add(1);
    let need = whole.saturating_add(extra);
    let g = match grant {
        Some(mut g) => match g.grow(need.saturating_sub(g.bytes())) {
            Ok(()) => g,
            Err(_) => {
                drop(g);
                scratch.buf = Vec::new();
                budget.reserve(need, DEFAULT_WAIT)?
            }
        },
        None => scratch.reserve(budget, whole, extra)?,
    };
    let buf = &mut scratch.buf;
    buf.clear();
    let cap = usize::try_from(whole).map_err(|_| {
        InputError::Memory(BudgetError::TooLarge {
            requested: whole,
            limit: budget.limit(),
        })
    })?;
    buf.try_reserve_exact(cap).map_err(|_| {
        InputError::Memory(BudgetError::TooLarge {
            requested: whole,
            limit: budget.limit(),
        })
    })?;
    let mut f = &input.file;
    f.seek(SeekFrom::Start(0)).map_err(InputError::Read)?;
    f.take(whole).read_to_end(buf).map_err(InputError::Read)?;
    if buf.len() as u64 != len {
        return Err(InputError::Changed);
    }
    input.unchanged()?;
    Ok(Loaded {
        bytes: &scratch.buf,
        tail: None,
        input,
        grant: g,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn only_regular_files_open_and_a_fifo_does_not_block() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        assert!(matches!(
            Input::open(&fifo),
            Err(InputError::NotRegular(FileKind::Fifo))
        ));
        assert!(matches!(
            Input::open(Path::new("/dev/zero")),
            Err(InputError::NotRegular(FileKind::CharDevice))
        ));
        assert!(matches!(
            Input::open(d.path()),
            Err(InputError::NotRegular(FileKind::Directory))
        ));
        let p = file_with(d.path(), "f", b"abc");
        assert_eq!(Input::open(&p).unwrap().len(), 3);
        assert_eq!(read_regular(&p, 3).unwrap(), b"abc");
        assert!(read_regular(&p, 2).is_err());
        assert!(read_regular(&fifo, 100).is_err());
    }

    #[test]
    fn a_file_larger_than_the_budget_is_refused_before_it_is_read() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big");
        let f = File::create(&p).unwrap();
        f.set_len(3 << 30).unwrap(); // sparse: nothing is on disk
        let budget = MemoryBudget::new(64 << 20);
        let mut scratch = Scratch::new();
        let err = load(Input::open(&p).unwrap(), &mut scratch, &budget, 0).unwrap_err();
        assert!(matches!(
            err,
            InputError::Memory(BudgetError::TooLarge { .. })
        ));
        assert!(err.to_string().contains("memory"));
        assert_eq!(budget.in_use(), 0);
        assert!(scratch.buf.capacity() < 1 << 20);
    }

    #[test]
    fn a_small_file_is_read_whole_and_its_memory_counted() {
        let d = tempfile::tempdir().unwrap();
        let p = file_with(d.path(), "f", &[7u8; 1000]);
        let budget = MemoryBudget::new(1 << 30);
        let mut scratch = Scratch::new();
        let l = load(Input::open(&p).unwrap(), &mut scratch, &budget, 0).unwrap();
        assert_eq!(l.bytes, &[7u8; 1000][..]);
        assert!(l.tail.is_none());
        assert!(budget.in_use() >= 1000);
        drop(l);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_file_rewritten_after_it_was_read_is_detected() {
        let d = tempfile::tempdir().unwrap();
        let p = file_with(d.path(), "f", &[1u8; 4000]);
        let budget = MemoryBudget::unlimited();
        let mut scratch = Scratch::new();
        let l = load(Input::open(&p).unwrap(), &mut scratch, &budget, 0).unwrap();
        l.check_unchanged().unwrap();
        // Rewritten in place (same inode, same size), as an editor or a second transfer might.
        let mut w = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        w.write_all(&[2u8; 10]).unwrap();
        w.flush().unwrap();
        drop(w);
        // The times may not move within one clock tick; make sure they do.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert!(matches!(l.check_unchanged(), Err(InputError::Changed)));
    }
}
