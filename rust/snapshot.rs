//! Snapshots (スナップショット): a registry saved as a directory of Arrow IPC files plus its
//! persisted indexes, with a manifest of sizes and checksums.
//!
//! Layout: `<dir>/CURRENT` names the live version directory `<dir>/v-<n>/`, which holds
//! `manifest.json`, `residents.arrow` (the row columns), `dict_*.arrow` (the dictionaries) and
//! `index_*.u64` (the hash tables' raw slots, which opening reads back as saved). Saving writes a
//! new version aside, fsyncs it, then atomically replaces `CURRENT`: a crash at any point leaves
//! the previous snapshot intact and current. Opening checks every file's size and xxh3 checksum
//! and every dictionary key's bounds; anything wrong raises `SnapshotCorrupt` naming the file.
//!
//! The manifest's `format` versions the layout. `juki-snapshot/2` holds the quotiented index
//! slots of `index`. `juki-snapshot/1`, from builds whose slots packed the whole base above a
//! 27-bit row id, still opens: its index files are neither read nor trusted, the indexes are
//! rebuilt from the row columns (a note on stderr says so), and saving it writes format 2. Any
//! other format is `SnapshotCorrupt` naming it.

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
use crate::storage::{Columns, Dictionaries, RegistryData, CARD_VALUES, STATUS_VALUES};

/// The format this build writes.
const FORMAT: &str = "juki-snapshot/2";
/// The format before the index slots were quotiented: its rows and dictionaries are as today's.
const FORMAT_1: &str = "juki-snapshot/1";
const RESIDENTS: &str = "residents.arrow";
const INDEX_MY_NUMBER: &str = "index_my_number.u64";
const INDEX_RESIDENT_CODE: &str = "index_resident_code.u64";

#[derive(Serialize, Deserialize)]
struct Manifest {
    format: String,
    rows: usize,
    files: Vec<FileEntry>,
}

#[derive(Serialize, Deserialize, Clone)]
struct FileEntry {
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

/// Save a registry to `dir` atomically (see the module docs).
pub fn save(data: &RegistryData, dir: &Path) -> Result<()> {
    save_with(data, dir, &[])
}

/// [`save`], with further files (name, contents) written into the same version, listed and
/// checksummed in its manifest (a living registry's history, see `history`).
pub fn save_with(data: &RegistryData, dir: &Path, extras: &[(&str, &[u8])]) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let next = versions(dir)?.last().map_or(1, |(n, _)| n + 1);
    let final_dir = dir.join(format!("v-{next}"));
    let tmp = dir.join(format!("v-{next}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    fs::create_dir(&tmp).map_err(|e| io(&tmp, e))?;

    let c = &data.cols;
    let d = &data.dicts;
    let s = |a: &StringArray| Arc::new(a.clone()) as ArrayRef;
    let jobs: Vec<Box<dyn FnOnce() -> Result<FileEntry> + Send + '_>> = vec![
        Box::new(|| {
            write_ipc(
                &tmp,
                RESIDENTS,
                vec![
                    ("resident_code", prim::<UInt64Type>(&c.resident_code)),
                    ("my_number", prim::<UInt64Type>(&c.my_number)),
                    ("family", prim::<UInt32Type>(&c.family)),
                    ("given", prim::<UInt32Type>(&c.given)),
                    ("birth_date", prim::<Date32Type>(&c.birth_date)),
                    ("sex", prim::<UInt8Type>(&c.sex)),
                    ("municipality", prim::<UInt16Type>(&c.municipality)),
                    ("town", prim::<UInt32Type>(&c.town)),
                    ("block", prim::<UInt32Type>(&c.block)),
                    ("status", prim::<UInt8Type>(&c.status)),
                    ("status_date", Arc::new(c.status_date.clone())),
                    ("card", prim::<UInt8Type>(&c.card)),
                ],
            )
        }),
        Box::new(|| {
            write_ipc(
                &tmp,
                "dict_family.arrow",
                vec![
                    ("name", s(&d.family_name)),
                    ("kana", s(&d.family_name_kana)),
                ],
            )
        }),
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
        Box::new(|| write_slots(&tmp, INDEX_MY_NUMBER, &data.by_my_number)),
        Box::new(|| write_slots(&tmp, INDEX_RESIDENT_CODE, &data.by_resident_code)),
    ];
    let mut files: Vec<FileEntry> = jobs
        .into_par_iter()
        .map(|job| job())
        .collect::<Result<Vec<_>>>()?;
    for (name, bytes) in extras {
        let path = tmp.join(name);
        files.push(write_file(&tmp, name, |w| {
            w.write_all(bytes).map_err(|e| io(&path, e))
        })?);
    }
    let manifest = Manifest {
        format: FORMAT.to_string(),
        rows: data.len(),
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
    let batches = footer
        .recordBatches()
        .ok_or_else(|| corrupt(name, "no record batch"))?;
    if batches.len() != 1 {
        return Err(corrupt(
            name,
            format!("{} record batches, expected 1", batches.len()),
        ));
    }
    let block = batches.get(0);
    decoder
        .read_record_batch(block, &slice(block)?)
        .map_err(|e| corrupt(name, e))?
        .ok_or_else(|| corrupt(name, "empty record batch"))
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

/// A non-null row column of `residents.arrow`, zero-copy.
fn row_values<T: ArrowPrimitiveType>(
    batch: &RecordBatch,
    col: &str,
) -> Result<ScalarBuffer<T::Native>> {
    Ok(values::<T>(batch, RESIDENTS, col)?.values().clone())
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
) -> Result<()> {
    let max = keys.par_iter().map(|&k| k.into()).max().unwrap_or(0);
    if !keys.is_empty() && max >= bound as u64 {
        return Err(corrupt(
            RESIDENTS,
            format!("{what} key {max} outside its dictionary of {bound}"),
        ));
    }
    Ok(())
}

/// Open a snapshot. `mmap` maps the column and dictionary files (zero-copy, pages shared with
/// the page cache); otherwise they are read into huge-page memory, which is faster for random
/// lookups. The indexes are read into huge pages either way.
pub fn open(dir: &Path, mmap: bool) -> Result<RegistryData> {
    Ok(open_with(dir, mmap)?.0)
}

/// Files a snapshot holds beside the registry's own (see [`save_with`]), checked like them.
pub type Extras = Vec<(String, Buffer)>;

/// [`open`], returning the snapshot's further files too.
pub fn open_with(dir: &Path, mmap: bool) -> Result<(RegistryData, Extras)> {
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
    let rebuild_indexes = match manifest.format.as_str() {
        FORMAT => false,
        FORMAT_1 => true,
        other => {
            return Err(corrupt(
                &manifest_name,
                format!("format '{other}' is not one this build reads ({FORMAT_1}, {FORMAT})"),
            ))
        }
    };
    let loaded: Vec<(String, Buffer)> = manifest
        .files
        .par_iter()
        // A format-1 index is in the old slot layout: it is rebuilt, so its file is not read.
        .filter(|entry| !(rebuild_indexes && is_index(&entry.name)))
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
            let buf = if mmap && !is_index(&entry.name) {
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
    let rows = read_ipc(get(RESIDENTS)?, RESIDENTS)?;
    let fam = read_ipc(get("dict_family.arrow")?, "dict_family.arrow")?;
    let giv = read_ipc(get("dict_given.arrow")?, "dict_given.arrow")?;
    let mun = read_ipc(get("dict_municipality.arrow")?, "dict_municipality.arrow")?;
    let town = read_ipc(get("dict_town.arrow")?, "dict_town.arrow")?;
    let block = read_ipc(get("dict_block.arrow")?, "dict_block.arrow")?;
    if rows.num_rows() != manifest.rows {
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
        resident_code: row_values::<UInt64Type>(&rows, "resident_code")?,
        my_number: row_values::<UInt64Type>(&rows, "my_number")?,
        family: row_values::<UInt32Type>(&rows, "family")?,
        given: row_values::<UInt32Type>(&rows, "given")?,
        birth_date: row_values::<Date32Type>(&rows, "birth_date")?,
        sex: row_values::<UInt8Type>(&rows, "sex")?,
        municipality: row_values::<UInt16Type>(&rows, "municipality")?,
        town: row_values::<UInt32Type>(&rows, "town")?,
        block: row_values::<UInt32Type>(&rows, "block")?,
        status: row_values::<UInt8Type>(&rows, "status")?,
        status_date: values::<Date32Type>(&rows, RESIDENTS, "status_date")?,
        card: row_values::<UInt8Type>(&rows, "card")?,
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
    check_keys(
        &cols.family,
        dicts.family_name.len().min(dicts.family_name_kana.len()),
        "family",
    )?;
    check_keys(
        &cols.given,
        dicts.given_name.len().min(dicts.given_name_kana.len()),
        "given",
    )?;
    let m = dicts
        .municipality_code
        .len()
        .min(dicts.municipality_name.len())
        .min(dicts.prefecture.len());
    check_keys(&cols.municipality, m, "municipality")?;
    check_keys(&cols.town, dicts.address_town.len(), "town")?;
    check_keys(&cols.block, dicts.address_block.len(), "block")?;
    check_keys(&cols.status, STATUS_VALUES.len(), "status")?;
    check_keys(&cols.card, CARD_VALUES.len(), "card")?;
    let own = [
        RESIDENTS,
        "dict_family.arrow",
        "dict_given.arrow",
        "dict_municipality.arrow",
        "dict_town.arrow",
        "dict_block.arrow",
        INDEX_MY_NUMBER,
        INDEX_RESIDENT_CODE,
    ];
    let extras = loaded
        .iter()
        .filter(|(n, _)| !own.contains(&n.as_str()))
        .cloned()
        .collect();
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
        return Ok((data, extras));
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
    Ok((data, extras))
}
