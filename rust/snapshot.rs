//! Snapshots (スナップショット): a registry saved as a directory of Arrow IPC files plus its
//! persisted indexes, with a manifest of sizes and checksums.
//!
//! Layout: `<dir>/CURRENT` names the live version directory `<dir>/v-<n>/`, which holds
//! `manifest.json`, `residents_<column>.arrow` (the row columns, a file each), `dict_*.arrow`
//! (the dictionaries) and `index_*.u64` (the hash tables' raw slots, which opening reads back as
//! saved), and any further files a living registry keeps there (its history). Saving writes a
//! new version aside, fsyncs it, then atomically replaces `CURRENT`: a crash at any point leaves
//! the previous snapshot intact and current. Opening checks every file's size and xxh3 checksum
//! and every dictionary key's bounds; anything wrong raises `SnapshotCorrupt` naming the file.
//!
//! A file a column: a checkpoint folds and writes one column at a time, so its memory beside the
//! live registry is one column and one index, never a second registry (see [`Rows`]).
//!
//! The manifest's `format` versions the layout; saving always writes `juki-snapshot/3`.
//! `juki-snapshot/2` held every row column in one `residents.arrow`, and still opens as it is.
//! `juki-snapshot/1`, from builds whose slots packed the whole base above a 27-bit row id, still
//! opens too: its index files are neither read nor trusted, the indexes are rebuilt from the row
//! columns (a note on stderr says so). Any other format is `SnapshotCorrupt` naming it.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::types::{Date32Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type};
use arrow_array::{Array, ArrayRef, ArrowPrimitiveType, PrimitiveArray, RecordBatch, StringArray};
use arrow_buffer::{Buffer, ScalarBuffer};
use arrow_ipc::reader::{read_footer_length, FileDecoder};
use arrow_ipc::writer::FileWriter;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use crate::error::{JukiError, Result};
use crate::ids::IdKind;
use crate::index::HashIndex;
use crate::memory::{map_file, read_file_huge};
use crate::normalize::{FoldedText, Folding, Level};
use crate::search;
use crate::storage::{Columns, Dictionaries, RegistryData, CARD_VALUES, STATUS_VALUES};

/// The format this build writes.
const FORMAT: &str = "juki-snapshot/3";
/// The format before the row columns were saved a file each: one `residents.arrow` held them.
const FORMAT_2: &str = "juki-snapshot/2";
/// The format before the index slots were quotiented: its rows and dictionaries are format 2's.
const FORMAT_1: &str = "juki-snapshot/1";
/// Formats 1 and 2's file of every row column.
const RESIDENTS: &str = "residents.arrow";
const INDEX_MY_NUMBER: &str = "index_my_number.u64";
const INDEX_RESIDENT_CODE: &str = "index_resident_code.u64";

#[derive(Serialize, Deserialize)]
struct Manifest {
    format: String,
    rows: usize,
    files: Vec<FileEntry>,
}

/// A file of a snapshot as its manifest lists it.
#[derive(Serialize, Deserialize, Clone)]
pub struct FileEntry {
    name: String,
    bytes: u64,
    xxh3: String,
}

fn io(path: &Path, e: std::io::Error) -> JukiError {
    JukiError::Io(format!("{}: {e}", path.display()))
}

fn corrupt(file: &str, why: impl std::fmt::Display) -> JukiError {
    JukiError::SnapshotCorrupt(format!("snapshot file '{file}' is corrupt: {why}"))
}

/// A failure to read a snapshot file: a missing one is corruption (`shown` names it in the
/// snapshot); any other (permissions, a failing disk) is `Io` naming the path.
fn unreadable(path: &Path, shown: &str, e: std::io::Error) -> JukiError {
    if e.kind() == std::io::ErrorKind::NotFound {
        corrupt(shown, e)
    } else {
        io(path, e)
    }
}

/// A writer that hashes what passes through it.
struct Hashing<W: Write> {
    inner: W,
    hasher: Xxh3,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Create `dir/name`, let `fill` write it, fsync it, and return its manifest entry.
fn write_file(
    dir: &Path,
    name: &str,
    fill: impl FnOnce(&mut Hashing<BufWriter<File>>) -> Result<()>,
) -> Result<FileEntry> {
    let path = dir.join(name);
    let file = File::create(&path).map_err(|e| io(&path, e))?;
    let mut w = Hashing {
        inner: BufWriter::with_capacity(1 << 22, file),
        hasher: Xxh3::new(),
        bytes: 0,
    };
    fill(&mut w)?;
    w.flush().map_err(|e| io(&path, e))?;
    let entry = FileEntry {
        name: name.to_string(),
        bytes: w.bytes,
        xxh3: format!("{:016x}", w.hasher.digest()),
    };
    let file = w
        .inner
        .into_inner()
        .map_err(|e| io(&path, e.into_error()))?;
    file.sync_all().map_err(|e| io(&path, e))?;
    Ok(entry)
}

fn write_ipc(dir: &Path, name: &str, columns: Vec<(&str, ArrayRef)>) -> Result<FileEntry> {
    let batch = RecordBatch::try_from_iter(columns)?;
    let path = dir.join(name);
    let failed = |e| JukiError::arrow(path.display(), e);
    write_file(dir, name, |w| {
        let mut writer = FileWriter::try_new(w, &batch.schema()).map_err(failed)?;
        writer.write(&batch).map_err(failed)?;
        writer.finish().map_err(failed)?;
        Ok(())
    })
}

fn write_slots(dir: &Path, name: &str, index: &HashIndex) -> Result<FileEntry> {
    let path = dir.join(name);
    write_file(dir, name, |w| {
        w.write_all(index.slots().inner().as_slice())
            .map_err(|e| io(&path, e))
    })
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

fn versions(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let entry = entry.map_err(|e| io(dir, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(n) = name
            .strip_prefix("v-")
            .and_then(|s| s.split('.').next()?.parse().ok())
        {
            out.push((n, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn prim<T: ArrowPrimitiveType>(values: &ScalarBuffer<T::Native>) -> ArrayRef {
    Arc::new(PrimitiveArray::<T>::new(values.clone(), None))
}

/// The row columns, in the order of the registry's schema. Format 3 saves each as a file of its
/// own, `residents_<name>.arrow`, so that a checkpoint writes one folded column at a time.
pub const ROW_COLUMNS: [&str; 12] = [
    "resident_code",
    "my_number",
    "family",
    "given",
    "birth_date",
    "sex",
    "municipality",
    "town",
    "block",
    "status",
    "status_date",
    "card",
];

fn column_file(name: &str) -> String {
    format!("residents_{name}.arrow")
}

/// The named row column of `c` (one of [`ROW_COLUMNS`]), zero-copy.
pub fn column_array(c: &Columns, name: &str) -> ArrayRef {
    match name {
        "resident_code" => prim::<UInt64Type>(&c.resident_code),
        "my_number" => prim::<UInt64Type>(&c.my_number),
        "family" => prim::<UInt32Type>(&c.family),
        "given" => prim::<UInt32Type>(&c.given),
        "birth_date" => prim::<Date32Type>(&c.birth_date),
        "sex" => prim::<UInt8Type>(&c.sex),
        "municipality" => prim::<UInt16Type>(&c.municipality),
        "town" => prim::<UInt32Type>(&c.town),
        "block" => prim::<UInt32Type>(&c.block),
        "status" => prim::<UInt8Type>(&c.status),
        "status_date" => Arc::new(c.status_date.clone()),
        "card" => prim::<UInt8Type>(&c.card),
        other => unreachable!("no row column '{other}'"),
    }
}

/// What a snapshot is saved from: a registry in memory, or a living registry's state folded
/// column by column at a checkpoint (`history::Folded`).
pub trait Rows: Sync {
    /// Number of rows.
    fn rows(&self) -> usize;
    /// The dictionaries behind the key columns.
    fn dicts(&self) -> &Dictionaries;
    /// The named row column (one of [`ROW_COLUMNS`]).
    fn column(&self, name: &str) -> Result<ArrayRef>;
    /// Call `f` with the index on `kind`: the registry's own, or one built for the call.
    fn with_index(
        &self,
        kind: IdKind,
        f: &mut dyn FnMut(&HashIndex) -> Result<FileEntry>,
    ) -> Result<FileEntry>;
    /// The sorted entries of the 4情報 index of the rows, names folded as `folded`.
    fn search_entries(&self, folded: &FoldedText) -> Vec<u64>;
    /// Whether files may be written in parallel: not where each column is built for its write,
    /// whose memory must stay one column's.
    fn parallel(&self) -> bool;
}

impl Rows for RegistryData {
    fn rows(&self) -> usize {
        self.len()
    }

    fn dicts(&self) -> &Dictionaries {
        &self.dicts
    }

    fn column(&self, name: &str) -> Result<ArrayRef> {
        Ok(column_array(&self.cols, name))
    }

    fn with_index(
        &self,
        kind: IdKind,
        f: &mut dyn FnMut(&HashIndex) -> Result<FileEntry>,
    ) -> Result<FileEntry> {
        f(match kind {
            IdKind::MyNumber => &self.by_my_number,
            _ => &self.by_resident_code,
        })
    }

    fn search_entries(&self, folded: &FoldedText) -> Vec<u64> {
        search::registry_entries(self, folded)
    }

    fn parallel(&self) -> bool {
        true
    }
}

/// Rows `start .. start + len` of a registry, saved as a snapshot of their own (a shard, see
/// `juki_engine.distributed`): zero-copy slices of its columns, the whole dictionaries (keys
/// stay valid), and indexes built over the slice (row ids from 0).
pub struct Slice<'a> {
    pub data: &'a RegistryData,
    pub start: usize,
    pub len: usize,
}

impl Rows for Slice<'_> {
    fn rows(&self) -> usize {
        self.len
    }

    fn dicts(&self) -> &Dictionaries {
        &self.data.dicts
    }

    fn column(&self, name: &str) -> Result<ArrayRef> {
        Ok(column_array(&self.data.cols, name).slice(self.start, self.len))
    }

    fn with_index(
        &self,
        kind: IdKind,
        f: &mut dyn FnMut(&HashIndex) -> Result<FileEntry>,
    ) -> Result<FileEntry> {
        let c = &self.data.cols;
        let values = match kind {
            IdKind::MyNumber => &c.my_number[self.start..self.start + self.len],
            _ => &c.resident_code[self.start..self.start + self.len],
        };
        f(&HashIndex::build(kind, values)?)
    }

    fn search_entries(&self, folded: &FoldedText) -> Vec<u64> {
        let p = &self.data.persons.rows()[self.start..self.start + self.len];
        search::entries_by(self.len, folded, |row| {
            (p[row].family, p[row].given, p[row].birth_date)
        })
    }

    fn parallel(&self) -> bool {
        false
    }
}

/// A further file of a snapshot (see [`save_with`]): its name, and what writes its contents.
pub type Extra<'a> = (
    &'a str,
    Box<dyn FnOnce(&mut dyn Write) -> Result<()> + Send + 'a>,
);

/// Save a registry to `dir` atomically (see the module docs).
pub fn save(data: &RegistryData, dir: &Path) -> Result<()> {
    save_with(data, dir, Vec::new())
}

/// [`save`] from any [`Rows`], with further files written into the same version, listed and
/// checksummed in its manifest (a living registry's history, see `history`).
pub fn save_with(rows: &dyn Rows, dir: &Path, extras: Vec<Extra<'_>>) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let next = versions(dir)?.last().map_or(1, |(n, _)| n + 1);
    let final_dir = dir.join(format!("v-{next}"));
    let tmp = dir.join(format!("v-{next}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    fs::create_dir(&tmp).map_err(|e| io(&tmp, e))?;

    let d = rows.dicts();
    let s = |a: &StringArray| Arc::new(a.clone()) as ArrayRef;
    type Job<'j> = Box<dyn FnOnce() -> Result<FileEntry> + Send + 'j>;
    let at = &tmp;
    let mut jobs: Vec<Job<'_>> = ROW_COLUMNS
        .iter()
        .map(|&name| {
            Box::new(move || write_ipc(at, &column_file(name), vec![(name, rows.column(name)?)]))
                as Job<'_>
        })
        .collect();
    jobs.extend([
        Box::new(|| {
            write_ipc(
                &tmp,
                "dict_family.arrow",
                vec![
                    ("name", s(&d.family_name)),
                    ("kana", s(&d.family_name_kana)),
                ],
            )
        }) as Job<'_>,
        Box::new(|| {
            write_ipc(
                &tmp,
                "dict_given.arrow",
                vec![("name", s(&d.given_name)), ("kana", s(&d.given_name_kana))],
            )
        }),
        Box::new(|| {
            write_ipc(
                &tmp,
                "dict_municipality.arrow",
                vec![
                    ("code", s(&d.municipality_code)),
                    ("name", s(&d.municipality_name)),
                    ("prefecture", s(&d.prefecture)),
                ],
            )
        }),
        Box::new(|| write_ipc(&tmp, "dict_town.arrow", vec![("name", s(&d.address_town))])),
        Box::new(|| {
            write_ipc(
                &tmp,
                "dict_block.arrow",
                vec![("name", s(&d.address_block))],
            )
        }),
    ]);
    for (kind, name) in [
        (IdKind::MyNumber, INDEX_MY_NUMBER),
        (IdKind::ResidentCode, INDEX_RESIDENT_CODE),
    ] {
        jobs.push(Box::new(move || {
            rows.with_index(kind, &mut |index| write_slots(at, name, index))
        }));
    }
    // The 4情報 index at the normalised level, where the folding table is installed (the
    // Python API installs it before it saves); without it, the index is built at first use.
    if let Ok(folding) = crate::normalize::installed() {
        jobs.push(Box::new(move || {
            let folded = FoldedText::build(rows.dicts(), folding, Level::Normalised);
            let entries = rows.search_entries(&folded);
            let path = at.join(search::SEARCH_FILE);
            write_file(at, search::SEARCH_FILE, |w| {
                search::write_entries(&entries, folding, w).map_err(|e| io(&path, e))
            })
        }));
    }
    for (name, fill) in extras {
        jobs.push(Box::new(move || write_file(at, name, |w| fill(w))));
    }
    let files: Vec<FileEntry> = if rows.parallel() {
        jobs.into_par_iter()
            .map(|job| job())
            .collect::<Result<Vec<_>>>()?
    } else {
        jobs.into_iter()
            .map(|job| job())
            .collect::<Result<Vec<_>>>()?
    };
    let manifest = Manifest {
        format: FORMAT.to_string(),
        rows: rows.rows(),
        files,
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    write_file(&tmp, "manifest.json", |w| {
        w.write_all(&json).map_err(|e| io(&tmp, e))
    })?;
    sync_dir(&tmp)?;
    fs::rename(&tmp, &final_dir).map_err(|e| io(&final_dir, e))?;
    sync_dir(dir)?;

    let current_tmp = dir.join("CURRENT.tmp");
    let mut f = File::create(&current_tmp).map_err(|e| io(&current_tmp, e))?;
    writeln!(f, "v-{next}").map_err(|e| io(&current_tmp, e))?;
    f.sync_all().map_err(|e| io(&current_tmp, e))?;
    fs::rename(&current_tmp, dir.join("CURRENT")).map_err(|e| io(dir, e))?;
    sync_dir(dir)?;
    // Older versions are now unreachable; a failure to remove one loses nothing.
    for (n, path) in versions(dir)? {
        if n != next {
            let _ = fs::remove_dir_all(path);
        }
    }
    Ok(())
}

/// Parse one IPC file held in `buf` (zero-copy) into its single record batch.
pub fn read_ipc(buf: &Buffer, name: &str) -> Result<RecordBatch> {
    let mut batches = read_ipc_batches(buf, name)?;
    if batches.len() != 1 {
        return Err(corrupt(
            name,
            format!("{} record batches, expected 1", batches.len()),
        ));
    }
    Ok(batches.remove(0))
}

/// Parse one IPC file held in `buf` (zero-copy) into its record batches (at least one).
pub fn read_ipc_batches(buf: &Buffer, name: &str) -> Result<Vec<RecordBatch>> {
    let len = buf.len();
    if len < 10 {
        return Err(corrupt(name, "too short to be an Arrow IPC file"));
    }
    let trailer: [u8; 10] = buf[len - 10..].try_into().expect("10 bytes");
    let footer_len = read_footer_length(trailer).map_err(|e| corrupt(name, e))?;
    if footer_len + 10 > len {
        return Err(corrupt(name, "footer longer than the file"));
    }
    let footer = arrow_ipc::root_as_footer(&buf[len - 10 - footer_len..len - 10])
        .map_err(|e| corrupt(name, e))?;
    let schema = footer.schema().ok_or_else(|| corrupt(name, "no schema"))?;
    let schema = arrow_ipc::convert::try_fb_to_schema(schema).map_err(|e| corrupt(name, e))?;
    let mut decoder = FileDecoder::new(Arc::new(schema), footer.version());
    let slice = |block: &arrow_ipc::Block| -> Result<Buffer> {
        let start = block.offset() as usize;
        let size = block.metaDataLength() as usize + block.bodyLength() as usize;
        if block.offset() < 0 || start.checked_add(size).is_none_or(|end| end > len) {
            return Err(corrupt(name, "a block lies outside the file"));
        }
        Ok(buf.slice_with_length(start, size))
    };
    for block in footer.dictionaries().iter().flatten() {
        decoder
            .read_dictionary(block, &slice(block)?)
            .map_err(|e| corrupt(name, e))?;
    }
    let blocks = footer
        .recordBatches()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| corrupt(name, "no record batch"))?;
    blocks
        .iter()
        .map(|block| {
            decoder
                .read_record_batch(block, &slice(block)?)
                .map_err(|e| corrupt(name, e))?
                .ok_or_else(|| corrupt(name, "empty record batch"))
        })
        .collect()
}

fn values<T: ArrowPrimitiveType>(
    batch: &RecordBatch,
    file: &str,
    col: &str,
) -> Result<PrimitiveArray<T>> {
    batch
        .column_by_name(col)
        .and_then(|a| a.as_any().downcast_ref::<PrimitiveArray<T>>())
        .cloned()
        .ok_or_else(|| {
            corrupt(
                file,
                format!("column '{col}' is missing or has the wrong type"),
            )
        })
}

/// A row column from its file's batch (and the file's name), zero-copy.
fn row_values<T: ArrowPrimitiveType>(
    (batch, file): (RecordBatch, String),
    col: &str,
) -> Result<ScalarBuffer<T::Native>> {
    Ok(values::<T>(&batch, &file, col)?.values().clone())
}

fn strings(batch: &RecordBatch, file: &str, col: &str) -> Result<StringArray> {
    batch
        .column_by_name(col)
        .and_then(|a| a.as_any().downcast_ref::<StringArray>())
        .cloned()
        .ok_or_else(|| {
            corrupt(
                file,
                format!("column '{col}' is missing or has the wrong type"),
            )
        })
}

/// Every key must address its dictionary: the kernels rely on it.
fn check_keys<T: Copy + Into<u64> + Send + Sync>(
    keys: &[T],
    bound: usize,
    what: &str,
    file: &str,
) -> Result<()> {
    let max = keys.par_iter().map(|&k| k.into()).max().unwrap_or(0);
    if !keys.is_empty() && max >= bound as u64 {
        return Err(corrupt(
            file,
            format!("{what} key {max} outside its dictionary of {bound}"),
        ));
    }
    Ok(())
}

/// Open a snapshot. `mmap` maps the column and dictionary files (zero-copy, pages shared with
/// the page cache); otherwise they are read into huge-page memory, which is faster for random
/// lookups. The indexes are read into huge pages either way.
pub fn open(dir: &Path, mmap: bool) -> Result<RegistryData> {
    Ok(open_with(dir, mmap)?.data)
}

/// Files a snapshot holds beside the registry's own (see [`save_with`]), checked like them.
pub type Extras = Vec<(String, Buffer)>;

/// A snapshot opened: the registry, its further files, and its 4情報 index file, read at the
/// first search (a registry that is never searched holds none of it).
pub struct Opened {
    pub data: RegistryData,
    pub extras: Extras,
    pub search: Option<SearchFile>,
}

/// A snapshot's [`search::SEARCH_FILE`], as its manifest lists it.
pub struct SearchFile {
    path: PathBuf,
    entry: FileEntry,
    rows: usize,
}

impl SearchFile {
    /// Its entries, checked like every snapshot file (size and checksum, then the index's own
    /// checks); None where they were folded with another table than `folding`, or the file is
    /// gone (a later save replaced the version): the index is then built.
    pub fn load(&self, folding: &Folding) -> Result<Option<arrow_buffer::ScalarBuffer<u64>>> {
        let shown = format!(
            "{}/{}",
            self.path
                .parent()
                .and_then(|p| p.file_name())
                .map_or(String::new(), |n| n.to_string_lossy().to_string()),
            self.entry.name
        );
        match fs::metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&self.path, e)),
            Ok(m) if m.len() != self.entry.bytes => {
                return Err(corrupt(
                    &shown,
                    format!("{} bytes, the manifest says {}", m.len(), self.entry.bytes),
                ))
            }
            Ok(_) => {}
        }
        let buf = read_file_huge(&self.path)?;
        let sum = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(buf.as_slice()));
        if sum != self.entry.xxh3 {
            return Err(corrupt(
                &shown,
                format!("checksum {sum}, the manifest says {}", self.entry.xxh3),
            ));
        }
        search::read_entries(&buf, self.rows, folding, &shown)
    }
}

/// [`open`], returning the snapshot's further files and its search index file too.
pub fn open_with(dir: &Path, mmap: bool) -> Result<Opened> {
    if !dir.is_dir() {
        return Err(JukiError::Io(format!(
            "snapshot '{}' does not exist",
            dir.display()
        )));
    }
    let current_path = dir.join("CURRENT");
    let current = fs::read_to_string(&current_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidData => {
            JukiError::SnapshotCorrupt(format!("snapshot file 'CURRENT' cannot be read: {e}"))
        }
        _ => io(&current_path, e),
    })?;
    let version = current.trim();
    if !version
        .strip_prefix("v-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(corrupt(
            "CURRENT",
            format!("'{version}' is not a version name"),
        ));
    }
    let vdir = dir.join(version);
    let manifest_path = vdir.join("manifest.json");
    let manifest_name = format!("{version}/manifest.json");
    let raw =
        fs::read(&manifest_path).map_err(|e| unreadable(&manifest_path, &manifest_name, e))?;
    let manifest: Manifest =
        serde_json::from_slice(&raw).map_err(|e| corrupt(&manifest_name, e))?;
    let is_index = |name: &str| [INDEX_MY_NUMBER, INDEX_RESIDENT_CODE].contains(&name);
    let (rebuild_indexes, one_rows_file) = match manifest.format.as_str() {
        FORMAT => (false, false),
        FORMAT_2 => (false, true),
        FORMAT_1 => (true, true),
        other => {
            return Err(corrupt(
                &manifest_name,
                format!(
                    "format '{other}' is not one this build reads ({FORMAT_1}, {FORMAT_2}, \
                     {FORMAT})"
                ),
            ))
        }
    };
    let column_files: Vec<String> = ROW_COLUMNS.iter().map(|c| column_file(c)).collect();
    let is_own = |name: &str| {
        is_index(name)
            || name == RESIDENTS
            || column_files.iter().any(|f| f == name)
            || name.starts_with("dict_")
    };
    let search = manifest
        .files
        .iter()
        .find(|entry| entry.name == search::SEARCH_FILE)
        .map(|entry| SearchFile {
            path: vdir.join(&entry.name),
            entry: entry.clone(),
            rows: manifest.rows,
        });
    let loaded: Vec<(String, Buffer)> = manifest
        .files
        .par_iter()
        // A format-1 index is in the old slot layout: it is rebuilt, so its file is not read.
        .filter(|entry| !(rebuild_indexes && is_index(&entry.name)))
        // The search index is read at the first search.
        .filter(|entry| entry.name != search::SEARCH_FILE)
        .map(|entry| {
            let shown = format!("{version}/{}", entry.name);
            // A listed name is a file of the version directory, never a path out of it.
            if entry.name.is_empty()
                || entry.name.starts_with('.')
                || entry.name.contains(['/', '\\', '\0'])
            {
                return Err(corrupt(
                    &manifest_name,
                    format!(
                        "lists '{}', not a file name",
                        crate::error::echo(entry.name.as_bytes())
                    ),
                ));
            }
            let path = vdir.join(&entry.name);
            let actual = fs::metadata(&path)
                .map_err(|e| unreadable(&path, &shown, e))?
                .len();
            if actual != entry.bytes {
                return Err(corrupt(
                    &shown,
                    format!(
                        "{actual} bytes, the manifest says {} (truncated?)",
                        entry.bytes
                    ),
                ));
            }
            // The indexes are probed at random: on the page cache's 4 KiB pages every probe
            // also walks the page tables, so they are read into huge pages even when the row
            // columns are mapped (the RSS is the same either way: their pages are all touched).
            // Further files (a history) are read once at open: mapped, they leave no copy.
            let buf = if !is_own(&entry.name) || (mmap && !is_index(&entry.name)) {
                map_file(&path).map_err(|e| unreadable(&path, &shown, e))?
            } else {
                read_file_huge(&path)?
            };
            let sum = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(buf.as_slice()));
            if sum != entry.xxh3 {
                return Err(corrupt(
                    &shown,
                    format!("checksum {sum}, the manifest says {}", entry.xxh3),
                ));
            }
            Ok((entry.name.clone(), buf))
        })
        .collect::<Result<_>>()?;
    let get = |name: &str| -> Result<&Buffer> {
        loaded
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b)
            .ok_or_else(|| corrupt(&manifest_name, format!("does not list '{name}'")))
    };
    // Each row column with its file's name: all in one file before format 3.
    let rows = if one_rows_file {
        Some(read_ipc(get(RESIDENTS)?, RESIDENTS)?)
    } else {
        None
    };
    let column = |name: &str| -> Result<(RecordBatch, String)> {
        if let Some(rows) = &rows {
            return Ok((rows.clone(), RESIDENTS.to_string()));
        }
        let file = column_file(name);
        let batch = read_ipc(get(&file)?, &file)?;
        if batch.num_rows() != manifest.rows {
            return Err(corrupt(
                &file,
                format!(
                    "{} rows, the manifest says {}",
                    batch.num_rows(),
                    manifest.rows
                ),
            ));
        }
        Ok((batch, file))
    };
    let fam = read_ipc(get("dict_family.arrow")?, "dict_family.arrow")?;
    let giv = read_ipc(get("dict_given.arrow")?, "dict_given.arrow")?;
    let mun = read_ipc(get("dict_municipality.arrow")?, "dict_municipality.arrow")?;
    let town = read_ipc(get("dict_town.arrow")?, "dict_town.arrow")?;
    let block = read_ipc(get("dict_block.arrow")?, "dict_block.arrow")?;
    if let Some(rows) = rows.as_ref().filter(|r| r.num_rows() != manifest.rows) {
        return Err(corrupt(
            RESIDENTS,
            format!(
                "{} rows, the manifest says {}",
                rows.num_rows(),
                manifest.rows
            ),
        ));
    }
    let cols = Columns {
        resident_code: row_values::<UInt64Type>(column("resident_code")?, "resident_code")?,
        my_number: row_values::<UInt64Type>(column("my_number")?, "my_number")?,
        family: row_values::<UInt32Type>(column("family")?, "family")?,
        given: row_values::<UInt32Type>(column("given")?, "given")?,
        birth_date: row_values::<Date32Type>(column("birth_date")?, "birth_date")?,
        sex: row_values::<UInt8Type>(column("sex")?, "sex")?,
        municipality: row_values::<UInt16Type>(column("municipality")?, "municipality")?,
        town: row_values::<UInt32Type>(column("town")?, "town")?,
        block: row_values::<UInt32Type>(column("block")?, "block")?,
        status: row_values::<UInt8Type>(column("status")?, "status")?,
        status_date: {
            let (batch, file) = column("status_date")?;
            values::<Date32Type>(&batch, &file, "status_date")?
        },
        card: row_values::<UInt8Type>(column("card")?, "card")?,
    };
    let dicts = Dictionaries {
        family_name: strings(&fam, "dict_family.arrow", "name")?,
        family_name_kana: strings(&fam, "dict_family.arrow", "kana")?,
        given_name: strings(&giv, "dict_given.arrow", "name")?,
        given_name_kana: strings(&giv, "dict_given.arrow", "kana")?,
        municipality_code: strings(&mun, "dict_municipality.arrow", "code")?,
        municipality_name: strings(&mun, "dict_municipality.arrow", "name")?,
        prefecture: strings(&mun, "dict_municipality.arrow", "prefecture")?,
        address_town: strings(&town, "dict_town.arrow", "name")?,
        address_block: strings(&block, "dict_block.arrow", "name")?,
    };
    let file_of = |col: &str| {
        if one_rows_file {
            RESIDENTS.to_string()
        } else {
            column_file(col)
        }
    };
    check_keys(
        &cols.family,
        dicts.family_name.len().min(dicts.family_name_kana.len()),
        "family",
        &file_of("family"),
    )?;
    check_keys(
        &cols.given,
        dicts.given_name.len().min(dicts.given_name_kana.len()),
        "given",
        &file_of("given"),
    )?;
    let m = dicts
        .municipality_code
        .len()
        .min(dicts.municipality_name.len())
        .min(dicts.prefecture.len());
    check_keys(
        &cols.municipality,
        m,
        "municipality",
        &file_of("municipality"),
    )?;
    check_keys(
        &cols.town,
        dicts.address_town.len(),
        "town",
        &file_of("town"),
    )?;
    check_keys(
        &cols.block,
        dicts.address_block.len(),
        "block",
        &file_of("block"),
    )?;
    check_keys(
        &cols.status,
        STATUS_VALUES.len(),
        "status",
        &file_of("status"),
    )?;
    check_keys(&cols.card, CARD_VALUES.len(), "card", &file_of("card"))?;
    let extras = loaded.iter().filter(|(n, _)| !is_own(n)).cloned().collect();
    if rebuild_indexes {
        let data = RegistryData::new(cols, dicts).map_err(|e| match e {
            JukiError::DuplicateIdentifier(why) | JukiError::InvalidInput(why) => {
                corrupt(RESIDENTS, why)
            }
            other => other,
        })?;
        eprintln!(
            "juki: snapshot '{}' ({version}) is format {FORMAT_1}: its indexes were rebuilt from \
             the rows; saving it writes {FORMAT}",
            dir.display()
        );
        return Ok(Opened {
            data,
            extras,
            search: None,
        });
    }
    let index = |kind: IdKind, name: &str| -> Result<HashIndex> {
        let buf = get(name)?.clone();
        if buf.len() % 8 != 0 {
            return Err(corrupt(name, "length is not a whole number of slots"));
        }
        let n = buf.len() / 8;
        HashIndex::from_slots(kind, ScalarBuffer::new(buf, 0, n), manifest.rows).map_err(
            |e| match e {
                JukiError::SnapshotCorrupt(why) => corrupt(name, why),
                other => other,
            },
        )
    };
    let (by_my_number, by_resident_code) = rayon::join(
        || index(IdKind::MyNumber, INDEX_MY_NUMBER),
        || index(IdKind::ResidentCode, INDEX_RESIDENT_CODE),
    );
    let data = RegistryData::with_indexes(cols, dicts, by_my_number?, by_resident_code?)?;
    Ok(Opened {
        data,
        extras,
        search,
    })
}
