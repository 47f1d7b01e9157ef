//! The change log (変更ログ): the durable, append-only record of the changes a living registry
//! accepts between snapshots.
//!
//! `Registry.apply` appends a batch as one record and returns once [`ChangeLog::sync_through`]
//! says it is durable; after a restart, the snapshot plus the log's records are the registry. The
//! log stores opaque byte records: what a record means belongs to the batch codec.
//!
//! # Format
//!
//! All integers are little-endian. The file starts with a 28-byte header:
//! `JUKILOG\0` | u32 format version (1) | u64 generation | u64 xxh3-64 of the 20 bytes before it.
//! Records follow, each framed as
//! `u32 length | u32 length check | u64 xxh3-64 of the payload | payload`, where the length check
//! is the low 32 bits of the xxh3-64 of the length's four bytes: a reader trusts a length only
//! when its check holds, so a damaged length is recognised as damage before it is used, and a
//! record's start can be recognised when scanning for one. A payload is at most [`MAX_RECORD`]
//! bytes.
//!
//! The generation tells checkpoints apart: a new log is generation 1 and [`ChangeLog::reset`]
//! writes generation + 1. A checkpoint records the generation its snapshot covers, so that after
//! a crash between saving the snapshot and resetting the log, a log whose records the snapshot
//! already holds is recognised and not applied twice.
//!
//! # Torn and damaged
//!
//! A record is intact when its 16-byte frame header is complete, its length check holds, its
//! length is within the cap, its payload lies inside the file and its checksum matches. Reading
//! stops at the first record that is not intact, at byte offset X. Then:
//!
//! - if an intact record begins at any byte offset after X, the log is **damaged**: opening and
//!   reading refuse with `SnapshotCorrupt` naming the file, X and the intact record's offset.
//!   The log cannot tell which records after X were acknowledged, so it drops none.
//! - otherwise the bytes from X to the end are a **torn tail**: what a crash in the middle of
//!   appending leaves (a prefix of the last writes, possibly followed by zeros where the file's
//!   size reached the disk before its data). Opening truncates the file to X and syncs it;
//!   reading only reports it. [`Recovered::dropped_tail`] says where, how many bytes and why.
//!
//! So a short frame header, a length past the end of the file and a bad checksum are each torn
//! when nothing intact follows them and damage when something does. The scan for an intact
//! record tries every byte offset after X, since a damaged length cannot say where the next
//! record starts; the length check makes a try cost a few nanoseconds (only a start whose check
//! holds has its payload hashed). So a damaged length can neither hide the records after it nor
//! make the reader allocate: the file is read once, at its own size.
//!
//! What no format can tell apart, the rule decides towards keeping data: damage to the last
//! record, with nothing after it, reads as a torn tail and is dropped (with the message); an
//! unsynced record whose pages a crash lost out of order, with a later record intact, reads as
//! damage and refuses (an operator decides). A file header that is short or has a wrong magic,
//! version or checksum is `SnapshotCorrupt`: the file is not a change log.
//!
//! # Durability
//!
//! [`ChangeLog::append`] writes a record with one positioned write, under the lock that orders
//! appends; [`ChangeLog::sync_through`] makes it durable with `fdatasync`, by group commit: one
//! fsync runs at a time, callers arriving meanwhile wait, and the next fsync covers every record
//! written before it starts. A failed write, fsync or reset fails the log for good: after a
//! failed fsync the kernel may have dropped the dirty pages, so retrying could acknowledge data
//! that is not on disk; only reopening (which reads what is really there) is safe.
//!
//! Opening syncs the file before returning its records, so nothing is applied that a power loss
//! could still undo. A new log is written aside, fsynced, linked into place and its directory
//! fsynced, so the log never exists without its header; a reset writes the empty log aside,
//! fsyncs it, renames it over the log and fsyncs the directory. One process writes: opening takes
//! an exclusive `flock` on the file, and a second open for writing fails while it is held.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};

use xxhash_rust::xxh3::xxh3_64;

use crate::error::{JukiError, Result};

const MAGIC: &[u8; 8] = b"JUKILOG\0";
const VERSION: u32 = 1;
/// Bytes of the file header: magic, version, generation, checksum.
pub const HEADER_LEN: u64 = 28;
/// Bytes of a record's frame before its payload: length, length check, checksum.
const FRAME_LEN: usize = 16;
/// The largest payload a record may carry (1 GiB).
pub const MAX_RECORD: usize = 1 << 30;

/// What reading a log found: its intact records, in order, held in one buffer.
pub struct Recovered {
    data: Vec<u8>,
    records: Vec<Range<usize>>,
    /// The log's generation (see the module docs).
    pub generation: u64,
    /// Set when a torn last record was dropped: the file, the byte offset, the bytes and why.
    pub dropped_tail: Option<String>,
}

impl Recovered {
    /// The number of intact records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The `i`-th record's payload.
    pub fn record(&self, i: usize) -> &[u8] {
        &self.data[self.records[i].clone()]
    }

    /// Every record's payload, in order.
    pub fn records(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.records.iter().map(|r| &self.data[r.clone()])
    }
}

impl std::fmt::Debug for Recovered {
    // The records' bytes may run to gigabytes: show their count.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovered")
            .field("records", &self.records.len())
            .field("generation", &self.generation)
            .field("dropped_tail", &self.dropped_tail)
            .finish()
    }
}

/// The file operations the log needs, so tests can inject failures and watch the order of
/// writes and fsyncs. [`ChangeLog::open`] uses the real file.
pub trait LogFile: Send + Sync {
    /// The file's size in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Fill `buf` from `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Write all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Make every write completed before the call durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Truncate (or extend) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Durably replace the whole file with `contents`: written aside, synced, renamed over the
    /// file, directory synced. Afterwards every other operation addresses the new file.
    fn replace(&mut self, contents: &[u8]) -> io::Result<()>;
}

/// The append-only, durable change log of a living registry (see the module docs).
pub struct ChangeLog {
    path: PathBuf,
    /// Read-locked by writes and fsyncs, which run concurrently; write-locked by a reset.
    file: RwLock<Box<dyn LogFile>>,
    /// The end of the written bytes; held across a write, so appends are ordered.
    tail: Mutex<u64>,
    /// A copy of `tail` for readers that must not wait for a write.
    written: AtomicU64,
    sync: Mutex<SyncState>,
    synced: Condvar,
    /// The first failure; once set, the log accepts nothing more.
    failure: OnceLock<String>,
    generation: AtomicU64,
}

struct SyncState {
    /// Every byte below this offset is durable.
    durable: u64,
    /// An fsync is running; later callers wait for it and the next one.
    syncing: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn io_error(path: &Path, e: io::Error) -> JukiError {
    JukiError::Io(format!("change log '{}': {e}", path.display()))
}

fn not_a_log(path: &Path, why: impl std::fmt::Display) -> JukiError {
    JukiError::SnapshotCorrupt(format!(
        "file '{}' is not a change log: {why}",
        path.display()
    ))
}

fn header_bytes(generation: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN as usize);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&generation.to_le_bytes());
    let sum = xxh3_64(&h);
    h.extend_from_slice(&sum.to_le_bytes());
    h
}

fn length_check(len: u32) -> u32 {
    xxh3_64(&len.to_le_bytes()) as u32
}

/// A record as written: frame header, then payload.
fn frame(payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = Vec::with_capacity(FRAME_LEN + payload.len());
    f.extend_from_slice(&len.to_le_bytes());
    f.extend_from_slice(&length_check(len).to_le_bytes());
    f.extend_from_slice(&xxh3_64(payload).to_le_bytes());
    f.extend_from_slice(payload);
    f
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Why the record at an offset is not intact.
#[derive(Debug)]
enum Flaw {
    ShortFrame(usize),
    BadLengthCheck,
    OverCap(u32),
    PastEnd { len: u32, over: usize },
    BadChecksum(u32),
}

impl std::fmt::Display for Flaw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Flaw::ShortFrame(n) => write!(f, "only {n} of the {FRAME_LEN} frame bytes"),
            Flaw::BadLengthCheck => f.write_str("its length fails its check"),
            Flaw::OverCap(len) => write!(f, "its length {len} is over the {MAX_RECORD}-byte cap"),
            Flaw::PastEnd { len, over } => write!(
                f,
                "its {len}-byte payload runs {over} bytes past the end of the file"
            ),
            Flaw::BadChecksum(len) => write!(f, "its {len}-byte payload fails its checksum"),
        }
    }
}

/// The end of the intact record at `at`, or why there is none.
fn frame_at(b: &[u8], at: usize) -> std::result::Result<usize, Flaw> {
    let left = b.len() - at;
    if left < FRAME_LEN {
        return Err(Flaw::ShortFrame(left));
    }
    let len = u32_at(b, at);
    if u32_at(b, at + 4) != length_check(len) {
        return Err(Flaw::BadLengthCheck);
    }
    if len as usize > MAX_RECORD {
        return Err(Flaw::OverCap(len));
    }
    let end = at + FRAME_LEN + len as usize;
    if end > b.len() {
        return Err(Flaw::PastEnd {
            len,
            over: end - b.len(),
        });
    }
    if xxh3_64(&b[at + FRAME_LEN..end]) != u64_at(b, at + 8) {
        return Err(Flaw::BadChecksum(len));
    }
    Ok(end)
}

/// A torn tail: where it starts, and the message saying what was dropped.
struct Torn {
    at: u64,
    message: String,
}

/// Check the header and split `data` into records by the rule in the module docs.
fn parse(path: &Path, mut data: Vec<u8>) -> Result<(Recovered, Option<Torn>)> {
    let h = HEADER_LEN as usize;
    if data.len() < h {
        return Err(not_a_log(
            path,
            format!("{} bytes, shorter than the {h}-byte header", data.len()),
        ));
    }
    if &data[..8] != MAGIC {
        return Err(not_a_log(path, "wrong magic bytes"));
    }
    let version = u32_at(&data, 8);
    if version != VERSION {
        return Err(not_a_log(
            path,
            format!("format version {version}, expected {VERSION}"),
        ));
    }
    if xxh3_64(&data[..h - 8]) != u64_at(&data, h - 8) {
        return Err(not_a_log(path, "the header fails its checksum"));
    }
    let generation = u64_at(&data, 12);
    let mut records = Vec::new();
    let mut at = h;
    let mut torn = None;
    while at < data.len() {
        match frame_at(&data, at) {
            Ok(end) => {
                records.push(at + FRAME_LEN..end);
                at = end;
            }
            Err(flaw) => {
                let last_start = data.len().saturating_sub(FRAME_LEN);
                if let Some(next) = (at + 1..=last_start).find(|&p| frame_at(&data, p).is_ok()) {
                    return Err(JukiError::SnapshotCorrupt(format!(
                        "change log '{}' is damaged at byte offset {at} ({flaw}), and an intact \
                         record follows at byte offset {next}: the log needs repair",
                        path.display()
                    )));
                }
                torn = Some(Torn {
                    at: at as u64,
                    message: format!(
                        "change log '{}': dropped a torn last record at byte offset {at} \
                         ({} bytes: {flaw})",
                        path.display(),
                        data.len() - at
                    ),
                });
                data.truncate(at);
                break;
            }
        }
    }
    let recovered = Recovered {
        data,
        records,
        generation,
        dropped_tail: torn.as_ref().map(|t| t.message.clone()),
    };
    Ok((recovered, torn))
}

/// Read the whole file and parse it.
fn recover(path: &Path, file: &dyn LogFile) -> Result<(Recovered, Option<Torn>)> {
    let size = file.size().map_err(|e| io_error(path, e))?;
    let size = usize::try_from(size).map_err(|_| {
        JukiError::ResourceExhausted(format!("change log '{}' is too large", path.display()))
    })?;
    let mut data = Vec::new();
    data.try_reserve_exact(size).map_err(|_| {
        JukiError::ResourceExhausted(format!(
            "change log '{}': no memory to read its {size} bytes",
            path.display()
        ))
    })?;
    data.resize(size, 0);
    file.read_exact_at(&mut data, 0)
        .map_err(|e| io_error(path, e))?;
    parse(path, data)
}

/// The log's file on disk.
struct DiskFile {
    file: File,
    path: PathBuf,
}

impl LogFile for DiskFile {
    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.file, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(&self.file, buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn replace(&mut self, contents: &[u8]) -> io::Result<()> {
        // Only the lock's holder resets, so one name aside serves; a crash's leftover is
        // overwritten by the next reset.
        let aside = beside(&self.path, "new");
        let file = write_aside(&aside, contents)?;
        fs::rename(&aside, &self.path)?;
        // The old file, and with it the old lock, goes; the new one was locked before it was
        // visible, so no other writer can take it in between.
        self.file = file;
        sync_dir(&self.path)
    }
}

/// `path` with `.suffix` added to its file name.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}

/// Take the writer's lock on `file` without waiting.
fn lock_writer(file: &File) -> io::Result<()> {
    // SAFETY: flock on a descriptor `file` owns and keeps open for the call; no memory is
    // passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Create `aside` holding `contents`, locked for writing and synced.
fn write_aside(aside: &Path, contents: &[u8]) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(aside)?;
    lock_writer(&file)?;
    file.write_all_at(contents, 0)?;
    file.sync_all()?;
    Ok(file)
}

/// Sync the directory holding `path`, so a name created or replaced in it is durable.
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Create an empty log at `path` unless one appears there first: written aside under a name of
/// this process's, synced, then linked into place (a link never replaces an existing file).
fn create(path: &Path) -> Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let aside = beside(path, &format!("{}-{n}.create", std::process::id()));
    let made =
        write_aside(&aside, &header_bytes(1)).and_then(|_| match fs::hard_link(&aside, path) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        });
    let removed = fs::remove_file(&aside);
    made.and(removed)
        .and_then(|_| sync_dir(path))
        .map_err(|e| io_error(path, e))
}

/// Whether the open `file` is the one `path` names now.
fn is_current(file: &File, path: &Path) -> Result<bool> {
    let held = file.metadata().map_err(|e| io_error(path, e))?;
    match fs::metadata(path) {
        Ok(now) => Ok(now.dev() == held.dev() && now.ino() == held.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error(path, e)),
    }
}

impl ChangeLog {
    /// Open the log at `path` for appending, creating an empty one if absent, and return it with
    /// its intact records. A torn tail is dropped: the file is truncated to the last intact
    /// record and synced, and [`Recovered::dropped_tail`] says what went. A damaged log, or a
    /// file that is not a log, is `SnapshotCorrupt` (see the module docs); a log another writer
    /// holds is `Io`.
    pub fn open(path: &Path) -> Result<(ChangeLog, Recovered)> {
        let file = loop {
            let file = match OpenOptions::new().read(true).write(true).open(path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    create(path)?;
                    continue;
                }
                Err(e) => return Err(io_error(path, e)),
            };
            lock_writer(&file).map_err(|e| {
                if e.kind() == io::ErrorKind::WouldBlock {
                    JukiError::Io(format!(
                        "change log '{}' is already open for writing (its lock is held)",
                        path.display()
                    ))
                } else {
                    io_error(path, e)
                }
            })?;
            // Between opening and locking, the holder may have reset the log: then this file is
            // the old one, and the lock on it protects nothing.
            if is_current(&file, path)? {
                break file;
            }
        };
        let disk = DiskFile {
            file,
            path: path.to_path_buf(),
        };
        Self::open_with(path, Box::new(disk))
    }

    /// [`ChangeLog::open`] over an already open `file` (which must hold a log, header and all);
    /// `path` names it in messages.
    pub fn open_with(path: &Path, file: Box<dyn LogFile>) -> Result<(ChangeLog, Recovered)> {
        let (recovered, torn) = recover(path, file.as_ref())?;
        if let Some(torn) = &torn {
            file.set_len(torn.at).map_err(|e| io_error(path, e))?;
        }
        // The records may still be only in the page cache (a writer that died before its
        // fsync): make them durable before anyone applies them.
        file.sync_data().map_err(|e| io_error(path, e))?;
        // Without its torn tail, if it had one.
        let end = recovered.data.len() as u64;
        let log = ChangeLog {
            path: path.to_path_buf(),
            file: RwLock::new(file),
            tail: Mutex::new(end),
            written: AtomicU64::new(end),
            sync: Mutex::new(SyncState {
                durable: end,
                syncing: false,
            }),
            synced: Condvar::new(),
            failure: OnceLock::new(),
            generation: AtomicU64::new(recovered.generation),
        };
        Ok((log, recovered))
    }

    /// Read the intact records of the log at `path` without opening it for appending (a reader
    /// that does not write). Never changes the file: a torn tail (perhaps a write in progress)
    /// is only reported.
    pub fn read(path: &Path) -> Result<Recovered> {
        let file = File::open(path).map_err(|e| io_error(path, e))?;
        Self::read_with(
            path,
            &DiskFile {
                file,
                path: path.to_path_buf(),
            },
        )
    }

    /// [`ChangeLog::read`] over an already open `file`.
    pub fn read_with(path: &Path, file: &dyn LogFile) -> Result<Recovered> {
        Ok(recover(path, file)?.0)
    }

    /// Append one record with one write (not yet durable: see [`ChangeLog::sync_through`]) and
    /// return the byte offset just past it.
    pub fn append(&self, record: &[u8]) -> Result<u64> {
        if record.len() > MAX_RECORD {
            return Err(JukiError::InvalidInput(format!(
                "a change log record of {} bytes is over the {MAX_RECORD}-byte cap",
                record.len()
            )));
        }
        let framed = frame(record);
        let mut tail = lock(&self.tail);
        self.healthy()?;
        let file = self.file.read().unwrap_or_else(PoisonError::into_inner);
        let at = *tail;
        if let Err(e) = file.write_all_at(&framed, at) {
            return Err(self.fail(
                format!("writing {} bytes at byte offset {at}", framed.len()),
                e,
            ));
        }
        *tail = at + framed.len() as u64;
        self.written.store(*tail, Ordering::Release);
        Ok(*tail)
    }

    /// Return once every byte below `offset` (as [`ChangeLog::append`] returned it) is durable.
    /// Concurrent callers share fsyncs (see the module docs). An error means the log has failed,
    /// or `offset` is past its end.
    pub fn sync_through(&self, offset: u64) -> Result<()> {
        let mut state = lock(&self.sync);
        loop {
            self.healthy()?;
            if offset <= state.durable {
                return Ok(());
            }
            let written = self.written.load(Ordering::Acquire);
            if offset > written {
                return Err(JukiError::InvalidInput(format!(
                    "byte offset {offset} is past the end of change log '{}' ({written} bytes)",
                    self.path.display()
                )));
            }
            if state.syncing {
                state = self
                    .synced
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            state.syncing = true;
            drop(state);
            // The target is read under the file lock, so a reset cannot slip between it and
            // the fsync, nor between the fsync and `durable`.
            let file = self.file.read().unwrap_or_else(PoisonError::into_inner);
            let target = self.written.load(Ordering::Acquire);
            let synced = file.sync_data();
            state = lock(&self.sync);
            state.syncing = false;
            match synced {
                Ok(()) => state.durable = state.durable.max(target),
                Err(e) => {
                    self.fail(format!("fsync through byte offset {target}"), e);
                }
            }
            drop(file);
            self.synced.notify_all();
        }
    }

    /// Replace the log with an empty one of the next generation, durably (see the module docs),
    /// once a checkpoint holds every record. Offsets returned before it mean nothing after it.
    pub fn reset(&self) -> Result<()> {
        let mut tail = lock(&self.tail);
        self.healthy()?;
        let mut file = self.file.write().unwrap_or_else(PoisonError::into_inner);
        let generation = self.generation.load(Ordering::Acquire) + 1;
        if let Err(e) = file.replace(&header_bytes(generation)) {
            // Which file the name holds, and whether durably, is unknown: reopening finds out.
            return Err(self.fail("resetting".to_string(), e));
        }
        *tail = HEADER_LEN;
        self.written.store(HEADER_LEN, Ordering::Release);
        self.generation.store(generation, Ordering::Release);
        lock(&self.sync).durable = HEADER_LEN;
        self.synced.notify_all();
        Ok(())
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bytes written so far, header included (durable or not).
    pub fn len(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Whether the log holds no records.
    pub fn is_empty(&self) -> bool {
        self.len() == HEADER_LEN
    }

    /// The log's generation (see the module docs).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn healthy(&self) -> Result<()> {
        match self.failure.get() {
            None => Ok(()),
            Some(m) => Err(JukiError::Io(m.clone())),
        }
    }

    /// Fail the log for good (the first failure's message stays) and return the error.
    fn fail(&self, what: String, e: io::Error) -> JukiError {
        let message = self.failure.get_or_init(|| {
            format!(
                "change log '{}' failed ({what}: {e}); it accepts no more changes until the \
                 registry is reopened",
                self.path.display()
            )
        });
        JukiError::Io(message.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::sync::Arc;
    use std::time::Duration;

    /// A directory under the system's temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("juki-log-{}-{name}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn log(&self) -> PathBuf {
            self.0.join("changes.log")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A payload of `len` bytes that differs by `seed`.
    fn payload(seed: usize, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i.wrapping_mul(31) ^ seed.wrapping_mul(131)) as u8)
            .collect()
    }

    fn payloads(r: &Recovered) -> Vec<Vec<u8>> {
        r.records().map(|p| p.to_vec()).collect()
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Op {
        Write { end: u64 },
        SyncBegin,
        SyncEnd,
        SetLen(u64),
        Replace,
    }

    /// An in-memory log file that records its operations, keeps the image a power loss would
    /// leave (what the last completed fsync covered), and fails on request.
    #[derive(Default)]
    struct Fake {
        data: Mutex<Vec<u8>>,
        durable: Mutex<Vec<u8>>,
        ops: Mutex<Vec<Op>>,
        syncs: AtomicUsize,
        in_sync: AtomicBool,
        fail_sync: AtomicBool,
        fail_write: AtomicBool,
        sync_delay: Mutex<Duration>,
        /// While true, an fsync waits (tests that need one held open).
        held: Mutex<bool>,
        released: Condvar,
    }

    impl Fake {
        fn with(contents: Vec<u8>) -> Arc<Fake> {
            let f = Fake::default();
            *lock(&f.durable) = contents.clone();
            *lock(&f.data) = contents;
            Arc::new(f)
        }

        fn empty_log() -> Arc<Fake> {
            Fake::with(header_bytes(1))
        }

        fn durable_len(&self) -> u64 {
            lock(&self.durable).len() as u64
        }

        fn writes(&self) -> usize {
            lock(&self.ops)
                .iter()
                .filter(|op| matches!(op, Op::Write { .. }))
                .count()
        }

        fn hold(&self, on: bool) {
            *lock(&self.held) = on;
            self.released.notify_all();
        }
    }

    impl LogFile for Arc<Fake> {
        fn size(&self) -> io::Result<u64> {
            Ok(lock(&self.data).len() as u64)
        }

        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            let data = lock(&self.data);
            let at = offset as usize;
            let src = data
                .get(at..at + buf.len())
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
            buf.copy_from_slice(src);
            Ok(())
        }

        fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            if self.fail_write.load(Ordering::SeqCst) {
                return Err(io::Error::other("injected write failure"));
            }
            let mut data = lock(&self.data);
            let end = offset as usize + buf.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[offset as usize..end].copy_from_slice(buf);
            lock(&self.ops).push(Op::Write { end: end as u64 });
            Ok(())
        }

        fn sync_data(&self) -> io::Result<()> {
            assert!(
                !self.in_sync.swap(true, Ordering::SeqCst),
                "two fsyncs at once"
            );
            lock(&self.ops).push(Op::SyncBegin);
            // fdatasync covers the writes completed before it began.
            let image = lock(&self.data).clone();
            let mut held = lock(&self.held);
            while *held {
                held = self.released.wait(held).unwrap();
            }
            drop(held);
            std::thread::sleep(*lock(&self.sync_delay));
            let result = if self.fail_sync.load(Ordering::SeqCst) {
                Err(io::Error::other("injected fsync failure"))
            } else {
                *lock(&self.durable) = image;
                self.syncs.fetch_add(1, Ordering::SeqCst);
                lock(&self.ops).push(Op::SyncEnd);
                Ok(())
            };
            self.in_sync.store(false, Ordering::SeqCst);
            result
        }

        fn set_len(&self, len: u64) -> io::Result<()> {
            lock(&self.data).resize(len as usize, 0);
            lock(&self.ops).push(Op::SetLen(len));
            Ok(())
        }

        fn replace(&mut self, contents: &[u8]) -> io::Result<()> {
            *lock(&self.data) = contents.to_vec();
            *lock(&self.durable) = contents.to_vec();
            lock(&self.ops).push(Op::Replace);
            Ok(())
        }
    }

    /// Wait for `done`, failing the test after ten seconds rather than hanging it.
    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting until {what}"
            );
            std::thread::yield_now();
        }
    }

    fn open_fake(fake: &Arc<Fake>) -> (ChangeLog, Recovered) {
        ChangeLog::open_with(Path::new("fake.log"), Box::new(fake.clone())).unwrap()
    }

    #[test]
    fn the_log_is_shareable_across_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<ChangeLog>();
    }

    #[test]
    fn records_round_trip_across_reopen() {
        let dir = TempDir::new("round-trip");
        let sizes = [
            0usize, 1, 15, 16, 17, 100, 4095, 4096, 70_000, 3, 0, 250_000,
        ];
        let mut expected = Vec::new();
        {
            let (log, rec) = ChangeLog::open(&dir.log()).unwrap();
            assert!(rec.is_empty() && rec.dropped_tail.is_none());
            assert_eq!((log.generation(), log.len()), (1, HEADER_LEN));
            assert!(log.is_empty());
            let mut last = 0;
            for (i, &n) in sizes.iter().enumerate() {
                let p = payload(i, n);
                last = log.append(&p).unwrap();
                expected.push(p);
            }
            log.sync_through(last).unwrap();
            assert_eq!(log.len(), fs::metadata(dir.log()).unwrap().len());
        }
        let (log, rec) = ChangeLog::open(&dir.log()).unwrap();
        assert_eq!(payloads(&rec), expected);
        assert_eq!(rec.len(), sizes.len());
        assert_eq!(rec.record(4), &expected[4][..]);
        assert!(rec.dropped_tail.is_none());
        // Appending continues after the recovered records.
        for i in 0..50 {
            let p = payload(100 + i, i * 37);
            let end = log.append(&p).unwrap();
            log.sync_through(end).unwrap();
            expected.push(p);
        }
        drop(log);
        let rec = ChangeLog::read(&dir.log()).unwrap();
        assert_eq!(payloads(&rec), expected);
        let (_, rec) = ChangeLog::open(&dir.log()).unwrap();
        assert_eq!(payloads(&rec), expected);
    }

    #[test]
    fn a_torn_tail_is_dropped_at_every_byte() {
        let dir = TempDir::new("torn");
        let first = [payload(1, 10), payload(2, 0), payload(3, 33)];
        let last = payload(4, 24);
        let (intact_end, full) = {
            let (log, _) = ChangeLog::open(&dir.log()).unwrap();
            let mut end = 0;
            for p in &first {
                end = log.append(p).unwrap();
            }
            log.append(&last).unwrap();
            log.sync_through(log.len()).unwrap();
            (end, fs::read(dir.log()).unwrap())
        };
        assert_eq!(
            full.len() as u64,
            intact_end + (FRAME_LEN + last.len()) as u64
        );
        for cut in intact_end as usize + 1..full.len() {
            fs::write(dir.log(), &full[..cut]).unwrap();
            // A reader sees the same records and changes nothing.
            let seen = ChangeLog::read(&dir.log()).unwrap();
            assert_eq!(payloads(&seen), first, "cut at {cut}");
            assert_eq!(fs::metadata(dir.log()).unwrap().len(), cut as u64);
            let (log, rec) = ChangeLog::open(&dir.log()).unwrap();
            assert_eq!(payloads(&rec), first, "cut at {cut}");
            let msg = rec.dropped_tail.expect("a torn tail is reported");
            assert!(msg.contains("changes.log"), "{msg}");
            assert!(msg.contains(&format!("byte offset {intact_end}")), "{msg}");
            assert!(
                msg.contains(&format!("({} bytes", cut as u64 - intact_end)),
                "{msg}"
            );
            assert_eq!(fs::metadata(dir.log()).unwrap().len(), intact_end);
            assert_eq!(log.len(), intact_end);
            let end = log.append(b"after").unwrap();
            log.sync_through(end).unwrap();
            drop(log);
            let (_, rec) = ChangeLog::open(&dir.log()).unwrap();
            assert!(rec.dropped_tail.is_none());
            let mut want = first.to_vec();
            want.push(b"after".to_vec());
            assert_eq!(payloads(&rec), want, "cut at {cut}");
        }
    }

    #[test]
    fn a_damaged_last_record_or_a_zeroed_tail_is_torn() {
        let dir = TempDir::new("torn-kinds");
        let (log, _) = ChangeLog::open(&dir.log()).unwrap();
        let keep = log.append(b"kept").unwrap();
        log.append(&payload(9, 64)).unwrap();
        drop(log);
        let full = fs::read(dir.log()).unwrap();
        // A bad checksum with nothing after it.
        let mut bad = full.clone();
        *bad.last_mut().unwrap() ^= 0x01;
        fs::write(dir.log(), &bad).unwrap();
        let (_, rec) = ChangeLog::open(&dir.log()).unwrap();
        assert_eq!(payloads(&rec), vec![b"kept".to_vec()]);
        assert!(rec.dropped_tail.unwrap().contains("checksum"));
        assert_eq!(fs::metadata(dir.log()).unwrap().len(), keep);
        // The size reached the disk, the data did not: zeros after the last record.
        let mut zeroed = full[..keep as usize].to_vec();
        zeroed.resize(keep as usize + 4096, 0);
        fs::write(dir.log(), &zeroed).unwrap();
        let (_, rec) = ChangeLog::open(&dir.log()).unwrap();
        assert_eq!(payloads(&rec), vec![b"kept".to_vec()]);
        assert!(rec.dropped_tail.is_some());
        assert_eq!(fs::metadata(dir.log()).unwrap().len(), keep);
    }

    #[test]
    fn a_flipped_byte_in_an_earlier_record_refuses_to_open() {
        let dir = TempDir::new("damaged");
        let (log, _) = ChangeLog::open(&dir.log()).unwrap();
        let a = log.append(b"first record").unwrap();
        let b = log.append(&payload(2, 50)).unwrap();
        log.append(b"third").unwrap();
        drop(log);
        let full = fs::read(dir.log()).unwrap();
        // Every byte of the second record: length, length check, checksum, payload.
        for at in a as usize..b as usize {
            let mut bad = full.clone();
            bad[at] ^= 0x10;
            fs::write(dir.log(), &bad).unwrap();
            for err in [
                ChangeLog::open(&dir.log()).map(|_| ()).unwrap_err(),
                ChangeLog::read(&dir.log()).map(|_| ()).unwrap_err(),
            ] {
                let JukiError::SnapshotCorrupt(msg) = err else {
                    panic!("byte {at}: {err:?}")
                };
                assert!(msg.contains("changes.log"), "{msg}");
                assert!(
                    msg.contains(&format!("damaged at byte offset {a} ")),
                    "{msg}"
                );
                assert!(
                    msg.contains(&format!("follows at byte offset {b}")),
                    "{msg}"
                );
            }
            // Nothing was truncated.
            assert_eq!(fs::read(dir.log()).unwrap(), bad);
        }
    }

    #[test]
    fn a_damaged_header_or_a_file_that_is_not_a_log_refuses() {
        let dir = TempDir::new("header");
        let (log, _) = ChangeLog::open(&dir.log()).unwrap();
        log.append(b"x").unwrap();
        drop(log);
        let full = fs::read(dir.log()).unwrap();
        for at in 0..HEADER_LEN as usize {
            let mut bad = full.clone();
            bad[at] ^= 0x01;
            fs::write(dir.log(), &bad).unwrap();
            let err = ChangeLog::open(&dir.log()).map(|_| ()).unwrap_err();
            let JukiError::SnapshotCorrupt(msg) = err else {
                panic!("byte {at}: {err:?}")
            };
            assert!(
                msg.contains("changes.log") && msg.contains("not a change log"),
                "{msg}"
            );
            assert_eq!(fs::read(dir.log()).unwrap(), bad);
        }
        for contents in [
            &b""[..],
            b"JUKILOG",
            &full[..HEADER_LEN as usize - 1],
            b"hello, world, this is a text file",
        ] {
            fs::write(dir.log(), contents).unwrap();
            let err = ChangeLog::open(&dir.log()).map(|_| ()).unwrap_err();
            assert!(
                matches!(&err, JukiError::SnapshotCorrupt(m) if m.contains("changes.log")),
                "{err:?}"
            );
        }
        let mut v2 = full.clone();
        v2[8] = 2;
        fs::write(dir.log(), &v2).unwrap();
        let err = ChangeLog::read(&dir.log()).map(|_| ()).unwrap_err();
        assert!(
            err.to_string().contains("format version 2, expected 1"),
            "{err}"
        );
    }

    #[test]
    fn the_length_check_rejects_zeros_and_damaged_lengths() {
        assert_ne!(length_check(0), 0);
        // A length past the cap whose check holds: torn at the end, damage before a record.
        let over = MAX_RECORD as u32 + 1;
        let mut head = over.to_le_bytes().to_vec();
        head.extend_from_slice(&length_check(over).to_le_bytes());
        head.extend_from_slice(&[0; 8]);
        let mut data = header_bytes(1);
        data.extend_from_slice(&frame(b"a"));
        let at = data.len();
        data.extend_from_slice(&head);
        let (rec, torn) = parse(Path::new("t.log"), data.clone()).unwrap();
        assert_eq!(rec.len(), 1);
        assert_eq!(torn.unwrap().at, at as u64);
        assert!(rec.dropped_tail.unwrap().contains("cap"));
        data.extend_from_slice(&frame(b"b"));
        let err = parse(Path::new("t.log"), data).map(|_| ()).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("damaged at byte offset {at} ")),
            "{err}"
        );
    }

    #[test]
    fn a_second_writer_is_refused_and_a_reader_is_not() {
        let dir = TempDir::new("lock");
        let (log, _) = ChangeLog::open(&dir.log()).unwrap();
        log.append(b"one").unwrap();
        let err = ChangeLog::open(&dir.log()).map(|_| ()).unwrap_err();
        assert!(
            matches!(&err, JukiError::Io(m) if m.contains("already open for writing")),
            "{err:?}"
        );
        assert_eq!(ChangeLog::read(&dir.log()).unwrap().len(), 1);
        drop(log);
        assert!(ChangeLog::open(&dir.log()).is_ok());
        let missing = ChangeLog::read(&dir.0.join("absent.log")).unwrap_err();
        assert!(matches!(&missing, JukiError::Io(m) if m.contains("absent.log")));
    }

    #[test]
    fn sync_through_returns_only_after_an_fsync_that_followed_the_write() {
        let fake = Fake::empty_log();
        let (log, _) = open_fake(&fake);
        for i in 0..20 {
            let end = log.append(&payload(i, i * 10)).unwrap();
            assert!(fake.durable_len() < end, "not durable before its sync");
            log.sync_through(end).unwrap();
            // What a power loss now would leave holds the record ...
            assert!(
                fake.durable_len() >= end,
                "record {i} acknowledged before it was durable"
            );
            // ... by an fsync that began after the write of the record's bytes completed.
            let ops = lock(&fake.ops).clone();
            let written = ops
                .iter()
                .position(|op| matches!(op, Op::Write { end: e } if *e >= end))
                .unwrap();
            let begun = ops[written..]
                .iter()
                .position(|op| *op == Op::SyncBegin)
                .map(|p| p + written)
                .expect("an fsync after the write");
            assert!(ops[begun..].contains(&Op::SyncEnd));
        }
        // Bytes already durable need no further fsync.
        let syncs = fake.syncs.load(Ordering::SeqCst);
        log.sync_through(log.len()).unwrap();
        log.sync_through(HEADER_LEN).unwrap();
        assert_eq!(fake.syncs.load(Ordering::SeqCst), syncs);
        let err = log.sync_through(log.len() + 1).unwrap_err();
        assert!(matches!(err, JukiError::InvalidInput(_)), "{err:?}");
        // The image a crash would leave opens with every record.
        let (_, rec) = open_fake(&Fake::with(lock(&fake.durable).clone()));
        assert_eq!(rec.len(), 20);
    }

    #[test]
    fn concurrent_callers_share_fsyncs_and_all_get_durable_acks() {
        let fake = Fake::empty_log();
        *lock(&fake.sync_delay) = Duration::from_micros(300);
        let (log, _) = open_fake(&fake);
        let (threads, each) = (8, 25);
        std::thread::scope(|s| {
            for t in 0..threads {
                let (log, fake) = (&log, &fake);
                s.spawn(move || {
                    for i in 0..each {
                        let end = log.append(&payload(t * 1000 + i, 1 + i * 7)).unwrap();
                        log.sync_through(end).unwrap();
                        assert!(fake.durable_len() >= end);
                    }
                });
            }
        });
        let syncs = fake.syncs.load(Ordering::SeqCst);
        // One more fsync came from opening.
        assert!(
            syncs - 1 < threads * each,
            "{syncs} fsyncs for {} syncs",
            threads * each
        );
        let (_, rec) = open_fake(&Fake::with(lock(&fake.durable).clone()));
        assert_eq!(rec.len(), threads * each);
        let mut got = payloads(&rec);
        let mut want: Vec<_> = (0..threads)
            .flat_map(|t| (0..each).map(move |i| payload(t * 1000 + i, 1 + i * 7)))
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn callers_arriving_during_an_fsync_share_the_next_one() {
        let fake = Fake::empty_log();
        let (log, _) = open_fake(&fake);
        let before = fake.syncs.load(Ordering::SeqCst);
        let n = 8;
        fake.hold(true);
        std::thread::scope(|s| {
            let first = s.spawn(|| log.sync_through(log.append(b"first").unwrap()));
            wait_until("the first fsync starts", || {
                fake.in_sync.load(Ordering::SeqCst)
            });
            let rest: Vec<_> = (1..n)
                .map(|i| {
                    let log = &log;
                    s.spawn(move || log.sync_through(log.append(&payload(i, 9)).unwrap()))
                })
                .collect();
            // Every later record is written while the first fsync runs.
            wait_until("every record is written", || fake.writes() >= n);
            fake.hold(false);
            first.join().unwrap().unwrap();
            for r in rest {
                r.join().unwrap().unwrap();
            }
        });
        // The first fsync, and one more for the seven that came during it.
        assert_eq!(fake.syncs.load(Ordering::SeqCst) - before, 2);
        assert_eq!(fake.durable_len(), log.len());
    }

    #[test]
    fn a_failed_fsync_fails_the_log_for_good() {
        let fake = Fake::empty_log();
        let (log, _) = open_fake(&fake);
        let early = log.append(b"early").unwrap();
        log.sync_through(early).unwrap();
        let end = log.append(b"lost?").unwrap();
        fake.fail_sync.store(true, Ordering::SeqCst);
        let err = log.sync_through(end).unwrap_err();
        let JukiError::Io(msg) = &err else {
            panic!("{err:?}")
        };
        assert!(
            msg.contains("fake.log") && msg.contains("injected fsync failure"),
            "{msg}"
        );
        assert!(msg.contains("reopened"), "{msg}");
        // Even once fsyncs work again, nothing more is accepted.
        fake.fail_sync.store(false, Ordering::SeqCst);
        for err in [
            log.append(b"more").map(|_| ()).unwrap_err(),
            log.sync_through(end).unwrap_err(),
            log.sync_through(early).unwrap_err(),
            log.reset().unwrap_err(),
        ] {
            assert_eq!(err, JukiError::Io(msg.clone()));
        }
    }

    #[test]
    fn a_failed_write_fails_the_log_for_good() {
        let fake = Fake::empty_log();
        let (log, _) = open_fake(&fake);
        log.append(b"ok").unwrap();
        fake.fail_write.store(true, Ordering::SeqCst);
        let err = log.append(b"fails").unwrap_err();
        assert!(
            matches!(&err, JukiError::Io(m) if m.contains("injected write failure") && m.contains("reopened")),
            "{err:?}"
        );
        fake.fail_write.store(false, Ordering::SeqCst);
        assert_eq!(log.append(b"after").unwrap_err(), err);
        assert_eq!(log.sync_through(log.len()).unwrap_err(), err);
    }

    #[test]
    fn a_torn_tail_is_truncated_durably_before_appending() {
        let mut image = header_bytes(1);
        image.extend_from_slice(&frame(b"kept"));
        let kept = image.len() as u64;
        image.extend_from_slice(&frame(b"torn")[..7]);
        let fake = Fake::with(image);
        let (log, rec) = open_fake(&fake);
        assert_eq!(payloads(&rec), vec![b"kept".to_vec()]);
        let ops = lock(&fake.ops).clone();
        assert_eq!(ops, vec![Op::SetLen(kept), Op::SyncBegin, Op::SyncEnd]);
        assert_eq!(fake.durable_len(), kept);
        assert_eq!(log.append(b"next").unwrap(), kept + FRAME_LEN as u64 + 4);
    }

    #[test]
    fn reset_leaves_an_empty_log_of_the_next_generation() {
        let dir = TempDir::new("reset");
        {
            let (log, _) = ChangeLog::open(&dir.log()).unwrap();
            for i in 0..10 {
                log.append(&payload(i, 100)).unwrap();
            }
            log.sync_through(log.len()).unwrap();
            log.reset().unwrap();
            assert_eq!((log.len(), log.generation()), (HEADER_LEN, 2));
            assert!(log.is_empty());
            // The log is still locked for writing after the file under it changed.
            assert!(ChangeLog::open(&dir.log()).is_err());
        }
        assert_eq!(fs::read(dir.log()).unwrap(), header_bytes(2));
        let (log, rec) = ChangeLog::open(&dir.log()).unwrap();
        assert!(rec.is_empty() && rec.dropped_tail.is_none());
        assert_eq!(rec.generation, 2);
        let end = log.append(b"after the checkpoint").unwrap();
        log.sync_through(end).unwrap();
        log.reset().unwrap();
        let end = log.append(b"after the second").unwrap();
        log.sync_through(end).unwrap();
        drop(log);
        let rec = ChangeLog::read(&dir.log()).unwrap();
        assert_eq!(rec.generation, 3);
        assert_eq!(payloads(&rec), vec![b"after the second".to_vec()]);
        // Nothing is left beside the log.
        let names: Vec<_> = fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["changes.log"]);
    }

    #[test]
    fn reset_through_the_injected_file_restarts_offsets() {
        let fake = Fake::empty_log();
        let (log, _) = open_fake(&fake);
        let old = log.append(&payload(1, 500)).unwrap();
        log.reset().unwrap();
        assert!(lock(&fake.ops).contains(&Op::Replace));
        assert_eq!(*lock(&fake.data), header_bytes(2));
        // An offset from before the reset is past the new end.
        assert!(matches!(
            log.sync_through(old),
            Err(JukiError::InvalidInput(_))
        ));
        let end = log.append(b"new").unwrap();
        assert_eq!(end, HEADER_LEN + FRAME_LEN as u64 + 3);
        log.sync_through(end).unwrap();
        assert_eq!(fake.durable_len(), end);
    }
}
