//! Python bindings: the `Registry` class and identifier functions of `juki_engine._core`.
//!
//! Arrow crosses the boundary through the C Data / PyCapsule interface (no Python lists); every
//! build, scan and lookup of more than a few hundred rows runs with the GIL released. One claim
//! of a typed call crosses as Python values instead (`verify_one`): for one row, the Arrow
//! interface costs more than the check.
//!
//! Every array imported from Python is validated in full ([`wire::validate_array`]) before
//! anything reads it; the C Data interface carries no such guarantee. Claims and keys, which the
//! kernels read only as bytes, are validated as bytes (offsets, views and dictionary keys within
//! their buffers; [`Strings::Bytes`]); tables the core keeps, as text. Every call that touches
//! outside data runs under [`guarded`], so a panic in the core reaches Python as
//! `InternalError`, never as an abort or a `PanicException`.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use arrow_array::cast::AsArray;
use arrow_array::ffi_stream::RecordBatchStreamReader;
use arrow_array::types::{Date32Type, Int64Type, UInt32Type, UInt8Type};
use arrow_array::RecordBatchReader;
use arrow_array::{
    Array, ArrayRef, BooleanArray, Date32Array, Int64Array, RecordBatch, StringArray, UInt8Array,
};
use arrow_cast::cast;
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_data::ArrayData;
use arrow_pyarrow::{FromPyArrow, FromPyArrowUnchecked, IntoPyArrow, PyArrowType, Table};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use arrow_select::concat::concat_batches;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3::types::PyDict;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use crate::changes::{self, BatchRecord, Writer};
use crate::error::{echo, guarded, JukiError, Result};
use crate::generate::{self, Plan};
use crate::history::{Live, Reason, View};
use crate::ids::{self, IdKind};
use crate::log::ChangeLog;
use crate::normalize::{self as names, FoldedCache, FoldedText, Folding, Level};
use crate::query::{self, ExactMatch};
use crate::search::{self, SearchIndex};
use crate::snapshot;
use crate::storage::{schema_of, Column, RegistryData, Rows};
use crate::wire::{self, Strings};

/// An array from Python, imported without copying and not yet validated: [`Imported::array`]
/// validates it before anything reads it (with the GIL released, by the caller's choice).
struct Imported {
    data: ArrayData,
    what: &'static str,
}

impl Imported {
    /// Import `ob` (any object with `__arrow_c_array__`, or a pyarrow array), naming it `what`.
    fn from_python(ob: &Bound<'_, PyAny>, what: &'static str) -> Result<Imported> {
        // SAFETY: the import trusts the producer's data only to build the ArrayData; nothing
        // reads its buffers until `array` has validated it in full, which is what
        // arrow-pyarrow's checked import does too (there under the GIL).
        let data = unsafe { ArrayData::from_pyarrow_bound_unchecked(ob) }
            .map_err(|e| JukiError::InvalidInput(format!("{what} must be an Arrow array: {e}")))?;
        Ok(Imported { data, what })
    }

    fn len(&self) -> usize {
        self.data.len()
    }

    /// The array, validated in full, its strings as `strings` (see [`wire::Strings`]).
    fn array(self, strings: Strings) -> Result<ArrayRef> {
        wire::validate_array(&self.data, self.what, strings)?;
        Ok(arrow_array::make_array(self.data))
    }
}

/// A table from Python, imported without copying (through `__arrow_c_stream__`) and not yet
/// validated: [`ImportedTable::batches`] validates it.
struct ImportedTable {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    what: &'static str,
    /// Already validated by the core (claims it decoded itself).
    validated: bool,
}

impl ImportedTable {
    fn from_python(ob: &Bound<'_, PyAny>, what: &'static str) -> Result<ImportedTable> {
        let not_a_table = |e: &dyn std::fmt::Display| {
            JukiError::InvalidInput(format!("{what} must be an Arrow table: {e}"))
        };
        let reader =
            RecordBatchStreamReader::from_pyarrow_bound(ob).map_err(|e| not_a_table(&e))?;
        let schema = reader.schema();
        // Each batch is assembled from the producer's arrays as they come; a malformed one can
        // only fail (or panic, caught), as nothing reads its values before `batches`.
        let batches = guarded(|| {
            reader
                .collect::<std::result::Result<Vec<_>, ArrowError>>()
                .map_err(|e| not_a_table(&e))
        })?;
        Ok(ImportedTable {
            schema,
            batches,
            what,
            validated: false,
        })
    }

    /// Batches the core validated itself (see [`PyClaims`]).
    fn validated(schema: SchemaRef, batches: Vec<RecordBatch>) -> ImportedTable {
        ImportedTable {
            schema,
            batches,
            what: "claims",
            validated: true,
        }
    }

    fn rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    /// The batches, each column validated in full, its strings as `strings` (see
    /// [`wire::Strings`]).
    fn batches(self, strings: Strings) -> Result<(Vec<RecordBatch>, SchemaRef)> {
        if !self.validated {
            wire::validate_batches(&self.batches, self.what, strings)?;
        }
        Ok((self.batches, self.schema))
    }

    /// The batches, validated as text, as one: for tables the core keeps.
    fn one_batch(self) -> Result<RecordBatch> {
        let what = self.what;
        let (batches, schema) = self.batches(Strings::Text)?;
        concat_batches(&schema, &batches).map_err(|e| JukiError::arrow(what, e))
    }
}

fn columns_of(names: Option<Vec<String>>) -> Result<Vec<Column>> {
    match names {
        None => Ok(Column::ALL.to_vec()),
        Some(v) => v.iter().map(|n| Column::from_name(n)).collect(),
    }
}

/// Rows below which a lookup or verification keeps the GIL. Releasing it lets a waiting thread
/// take it, and taking it back is a context switch (tens of µs in this VM): more than the kernel
/// spends on a few hundred rows. A typed call, one row, stays on its thread (BENCHMARKS.md).
const KEEP_GIL_ROWS: usize = 256;

/// Run `f` under [`guarded`], releasing the GIL only when `rows` make the work worth a thread
/// switch.
fn run_sized<T: Send>(
    py: Python<'_>,
    rows: usize,
    f: impl Send + FnOnce() -> Result<T>,
) -> Result<T> {
    if rows < KEEP_GIL_ROWS {
        guarded(f)
    } else {
        py.detach(|| guarded(f))
    }
}

/// Run `f` under [`guarded`] with the GIL released.
fn detached<T: Send>(py: Python<'_>, f: impl Send + FnOnce() -> Result<T>) -> Result<T> {
    py.detach(|| guarded(f))
}

fn to_table(
    batches: Vec<RecordBatch>,
    schema: arrow_schema::SchemaRef,
) -> PyResult<PyArrowType<Table>> {
    let table = Table::try_new(batches, schema)
        .map_err(|e: ArrowError| JukiError::InvalidInput(e.to_string()))?;
    Ok(PyArrowType(table))
}

/// Row 0 of a one-row result column as a Python value: None where null, a bool or an int for
/// those types, and any other value (names, codes, dates) as the text Arrow displays for it
/// (dates as ISO 8601).
fn python_value<'py>(py: Python<'py>, array: &dyn Array) -> PyResult<Bound<'py, PyAny>> {
    if array.is_null(0) {
        return Ok(py.None().into_bound(py));
    }
    Ok(match array.data_type() {
        DataType::Boolean => array
            .as_boolean()
            .value(0)
            .into_pyobject(py)?
            .to_owned()
            .into_any(),
        DataType::UInt8 => array
            .as_primitive::<UInt8Type>()
            .value(0)
            .into_pyobject(py)?
            .into_any(),
        DataType::UInt32 => array
            .as_primitive::<UInt32Type>()
            .value(0)
            .into_pyobject(py)?
            .into_any(),
        _ => {
            let text = ArrayFormatter::try_new(array, &FormatOptions::default())
                .map_err(|e| JukiError::InvalidInput(e.to_string()))?
                .value(0)
                .to_string();
            text.into_pyobject(py)?.into_any()
        }
    })
}

/// The national resident registry held in memory: Arrow columns plus hash indexes on My Number
/// and resident code. Immutable and safe to share between threads.
#[pyclass(frozen, name = "Registry", module = "juki_engine._core")]
pub struct PyRegistry {
    data: Arc<RegistryData>,
    /// The changes applied since the base (see `history`).
    live: Live,
    /// The writer's state: one `apply` checks and logs at a time.
    writer: Mutex<Writer>,
    /// The change log beside the snapshot (None for a registry not opened from one), opened
    /// for appending at the first `apply`.
    log_path: Option<PathBuf>,
    log: OnceLock<ChangeLog>,
    /// Records replayed at open (the log must still hold exactly these when opened to write).
    replayed: usize,
    /// The next batch when the snapshot was opened: a registry past it holds changes no
    /// snapshot holds (`save_rows` refuses to split it).
    opened_batch: u32,
    /// The batch and xxh3 of the last change log record this registry wrote or redid (none
    /// yet since it was opened): what replicas of a shard compare, since in step they log the
    /// same bytes.
    last_record: Mutex<Option<(u32, u64)>>,
    /// The change log generation the snapshot covers (a log of it or older is reset).
    covered: u64,
    /// The newest commit time given (commit times never go back).
    last_recorded: AtomicI64,
    /// The registry's dictionaries folded for verify above the exact level, built on first use.
    folded: FoldedCache,
    /// The 4情報 index at the exact and the normalised level: at first use, read from the
    /// snapshot's file (the normalised level) or built.
    search: [OnceLock<SearchIndex>; 2],
    /// The snapshot's file of the normalised level's index, if it has one.
    search_file: Option<snapshot::SearchFile>,
    /// Held while an index is read or built, so two first searches do it once.
    search_building: Mutex<()>,
    /// Per level, the persons the search index misses since changes renamed them or made them.
    search_delta: [Mutex<search::Delta>; 2],
}

/// The change log's file in a snapshot directory.
const CHANGE_LOG: &str = "changes.log";
/// A snapshot's history of the changes it folds in, and the writer's state (see `checkpoint`).
const HISTORY: &str = "history.arrow";
const STATE: &str = "changes.json";

/// The key of the identifier permutations of a registry: derived from its first identifiers,
/// so it is the same every time the registry is opened.
fn issuance_key(data: &RegistryData) -> u64 {
    let n = data.len().min(64);
    let mut bytes = Vec::with_capacity(n * 8 + 8);
    for v in &data.cols.resident_code[..n] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    bytes.extend_from_slice(&(data.len() as u64).to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl PyRegistry {
    fn new(data: RegistryData) -> PyRegistry {
        let live = Live::new(&data);
        let writer = Writer::new(&data, issuance_key(&data));
        PyRegistry {
            data: Arc::new(data),
            live,
            writer: Mutex::new(writer),
            log_path: None,
            log: OnceLock::new(),
            replayed: 0,
            opened_batch: 1,
            last_record: Mutex::new(None),
            covered: 0,
            last_recorded: AtomicI64::new(0),
            folded: FoldedCache::default(),
            search: Default::default(),
            search_file: None,
            search_building: Mutex::new(()),
            search_delta: Default::default(),
        }
    }

    /// A registry opened from the snapshot at `dir`: the snapshot, then the records of its
    /// change log (`log`, a file in `dir`) redone.
    fn opened(opened: snapshot::Opened, dir: &std::path::Path, log: &str) -> Result<PyRegistry> {
        let snapshot::Opened {
            data,
            extras,
            search,
        } = opened;
        let mut reg = PyRegistry::new(data);
        reg.search_file = search;
        let extra = |name: &str| extras.iter().find(|(n, _)| n == name).map(|(_, b)| b);
        // The changes a checkpoint folded in, kept as history, and the log generation it covers.
        let mut covered = 0;
        match (extra(HISTORY), extra(STATE)) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(JukiError::SnapshotCorrupt(format!(
                    "the manifest lists one of {HISTORY} and {STATE} without the other"
                )))
            }
            _ => {}
        }
        if let (Some(history), Some(state)) = (extra(HISTORY), extra(STATE)) {
            let batches = snapshot::read_ipc_batches(history, HISTORY)?;
            let state: changes::WriterState = serde_json::from_slice(state.as_slice())
                .map_err(|e| JukiError::SnapshotCorrupt(format!("{STATE}: {e}")))?;
            let mut w = reg.writer.lock().unwrap_or_else(|e| e.into_inner());
            covered = changes::load_history(
                &reg.data,
                &reg.live,
                &mut w,
                &batches,
                &state,
                (HISTORY, STATE),
            )?;
        }
        // A checkpoint records the generation of the snapshot's own log that it covers. A
        // replica's log (another file) is told by its records' batches instead: those the
        // snapshot holds (written by the shard's own replica) are skipped.
        let own = log == CHANGE_LOG;
        reg.covered = if own { covered } else { 0 };
        reg.opened_batch = reg
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next_batch;
        let path = dir.join(log);
        if path.exists() {
            let recovered = ChangeLog::read(&path)?;
            if let Some(message) = &recovered.dropped_tail {
                eprintln!("juki: {message}");
            }
            if own && recovered.generation <= covered {
                // A crash between a checkpoint and its reset of the log: the snapshot holds
                // these records already; the first apply resets the log.
                reg.log_path = Some(path);
                return Ok(reg);
            }
            let mut w = reg.writer.lock().unwrap_or_else(|e| e.into_inner());
            let mut last = reg.live.published();
            for (i, bytes) in recovered.records().enumerate() {
                let what = format!("change log '{}' record {i}", path.display());
                let rec = changes::decode(bytes, &what)?;
                if !own && rec.batch < w.next_batch {
                    continue;
                }
                changes::check_record(&reg.data, &reg.live, &w, &rec, &what)?;
                changes::redo(&reg.data, &reg.live, &mut w, &rec);
                reg.logged(rec.batch, bytes);
                last = last.max(rec.batch);
                reg.last_recorded.fetch_max(rec.recorded, Ordering::Relaxed);
            }
            drop(w);
            reg.live.publish(last);
            reg.replayed = recovered.len();
        }
        reg.log_path = Some(path);
        Ok(reg)
    }

    /// The change log of a shard's replica (the calls between replicas need one).
    fn replica_log(&self) -> Result<&ChangeLog> {
        self.log()?.ok_or_else(|| {
            JukiError::InvalidInput(
                "a registry without a change log (not opened from a snapshot) is no shard's \
                 replica: it has no records to ship, take or cover"
                    .into(),
            )
        })
    }

    /// Note `bytes` as the last change log record written or redone, of `batch`.
    fn logged(&self, batch: u32, bytes: &[u8]) {
        *self.last_record.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((batch, xxhash_rust::xxh3::xxh3_64(bytes)));
    }

    /// The view of the current state, or of `as_of` (days since the epoch) and `recorded_as_of`
    /// (µs since the epoch).
    fn view(&self, as_of: Option<i32>, recorded_as_of: Option<i64>) -> View<'_> {
        let mut cut = self.live.now();
        if let Some(day) = as_of {
            cut.effective = day;
        }
        if let Some(t) = recorded_as_of {
            cut.recorded = t;
        }
        View::new(&self.data, &self.live, cut)
    }

    /// `f` over the current state and the identifiers `keys` of kind `by`, the GIL released:
    /// the shape of every per-key read that answers one table.
    fn by_keys(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        by: &str,
        f: impl Fn(&View, IdKind, &dyn Array) -> Result<RecordBatch> + Send + Sync,
    ) -> PyResult<PyArrowType<Table>> {
        let kind = IdKind::from_name(by)?;
        let keys = Imported::from_python(keys, "keys")?;
        let view = self.view(None, None);
        let out = detached(py, || f(&view, kind, keys.array(Strings::Bytes)?.as_ref()))?;
        let schema = out.schema();
        to_table(vec![out], schema)
    }

    /// The change log, opened for appending (and locked) at the first call.
    fn log(&self) -> Result<Option<&ChangeLog>> {
        let Some(path) = &self.log_path else {
            return Ok(None);
        };
        if let Some(log) = self.log.get() {
            return Ok(Some(log));
        }
        let (log, recovered) = ChangeLog::open(path)?;
        if recovered.generation <= self.covered {
            // The snapshot holds these records (a checkpoint ended before its reset).
            log.reset()?;
            return Ok(Some(self.log.get_or_init(|| log)));
        }
        if recovered.len() != self.replayed {
            return Err(JukiError::InvalidInput(format!(
                "change log '{}' holds {} records, {} when the registry was opened: another \
                 process wrote to it; reopen the registry",
                path.display(),
                recovered.len(),
                self.replayed
            )));
        }
        Ok(Some(self.log.get_or_init(|| log)))
    }

    /// Build what a call at `level` needs and does not have yet (the folded dictionaries; with
    /// `search`, the 4情報 index) with the GIL released: the first search of a level builds the
    /// nation's index for seconds, which must not stall every other thread of a server.
    fn prepare(&self, py: Python<'_>, level: Level, search: bool) -> Result<()> {
        let cached = self.folded.has(level)
            && (!search
                || self
                    .search
                    .get(level as usize)
                    .is_some_and(|s| s.get().is_some()));
        if cached {
            return Ok(());
        }
        detached(py, || {
            let folded = self.folded.text(&self.data.dicts, level)?;
            if search {
                self.search_index(folded)?;
            }
            Ok(())
        })
    }

    /// The 4情報 index at `folded.level`: read from the snapshot's file where it has one folded
    /// with the installed table, built otherwise (the first call at a level).
    fn search_index(&self, folded: &FoldedText) -> Result<&SearchIndex> {
        let once = &self.search[folded.level as usize];
        if let Some(index) = once.get() {
            return Ok(index);
        }
        let _building = self
            .search_building
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(index) = once.get() {
            return Ok(index);
        }
        let saved = match (&self.search_file, folded.level) {
            (Some(file), Level::Normalised) => file.load(names::installed()?)?,
            _ => None,
        };
        let index = match saved {
            Some(entries) => SearchIndex::from_entries(&self.data, folded, entries),
            None => SearchIndex::build(&self.data, folded),
        };
        Ok(once.get_or_init(|| index))
    }
}

#[pymethods]
impl PyRegistry {
    /// Draw a synthetic registry from a plan (see `juki_engine.synthetic`).
    #[staticmethod]
    #[pyo3(signature = (municipalities, towns, family_names, given_names, seed = 0))]
    fn generate(
        py: Python<'_>,
        municipalities: &Bound<'_, PyAny>,
        towns: &Bound<'_, PyAny>,
        family_names: &Bound<'_, PyAny>,
        given_names: &Bound<'_, PyAny>,
        seed: u64,
    ) -> PyResult<PyRegistry> {
        let tables = [
            ImportedTable::from_python(municipalities, "municipalities")?,
            ImportedTable::from_python(towns, "towns")?,
            ImportedTable::from_python(family_names, "family_names")?,
            ImportedTable::from_python(given_names, "given_names")?,
        ];
        let data = detached(py, || {
            let [municipalities, towns, family_names, given_names] = tables;
            let plan = Plan {
                municipalities: municipalities.one_batch()?,
                towns: towns.one_batch()?,
                family_names: family_names.one_batch()?,
                given_names: given_names.one_batch()?,
            };
            generate::generate(&plan, seed)
        })?;
        Ok(PyRegistry::new(data))
    }

    /// Open a snapshot directory written by `save`; `log`: the name of its change log there
    /// (a replica's own beside the shard's snapshot), `changes.log` by default.
    #[staticmethod]
    #[pyo3(signature = (path, mmap = false, log = None))]
    fn open(
        py: Python<'_>,
        path: PathBuf,
        mmap: bool,
        log: Option<String>,
    ) -> PyResult<PyRegistry> {
        let log = log.unwrap_or_else(|| CHANGE_LOG.to_string());
        let plain = log.len() <= 64
            && log.ends_with(".log")
            && !log.starts_with('.')
            && log
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !plain {
            return Err(JukiError::InvalidInput(format!(
                "log: {:?} is not a change log's file name (letters, digits, '.', '_', '-', \
                 ending .log, at most 64)",
                log.chars().take(80).collect::<String>()
            ))
            .into());
        }
        Ok(detached(py, || {
            PyRegistry::opened(snapshot::open_with(&path, mmap)?, &path, &log)
        })?)
    }

    /// Save atomically to a snapshot directory.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        if self.live.entries.count() > 0 {
            return Err(JukiError::InvalidInput(format!(
                "this registry has {} applied changes, which save would not write: they are \
                 durable in its change log; use checkpoint",
                self.live.entries.count()
            ))
            .into());
        }
        detached(py, || snapshot::save(&self.data, &path))?;
        Ok(())
    }

    /// Save rows `start .. start + len` as a snapshot of their own, shard `k` of `of`; see
    /// `juki_engine.distributed.shard`. A registry with history (a checkpoint's) gives the
    /// shard its persons' history, numbered as the registry numbers its changes, and the
    /// writer's state: the batch to go on from, its share of each municipality's designated
    /// codes past those issued, and (shard 0) the rejected changes to answer as duplicates.
    fn save_rows(
        &self,
        py: Python<'_>,
        path: PathBuf,
        start: usize,
        len: usize,
        k: u64,
        of: u64,
    ) -> PyResult<()> {
        let w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if self.replayed > 0 || w.next_batch != self.opened_batch {
            return Err(JukiError::InvalidInput(
                "this registry holds changes its snapshot does not (in its change log, or \
                 applied since it was opened): checkpoint it first, then split it"
                    .into(),
            )
            .into());
        }
        if of == 0 || k >= of {
            return Err(JukiError::InvalidInput(format!("shard {k} of {of}: not a shard")).into());
        }
        if start
            .checked_add(len)
            .is_none_or(|end| end > self.data.len())
        {
            return Err(JukiError::InvalidInput(format!(
                "rows {start}..{} lie outside the registry's {} rows",
                start.saturating_add(len),
                self.data.len()
            ))
            .into());
        }
        let rows = snapshot::Slice {
            data: &self.data,
            start,
            len,
        };
        if self.live.entries.count() == 0 {
            drop(w);
            detached(py, || snapshot::save_with(&rows, &path, Vec::new()))?;
            return Ok(());
        }
        let mut state = w.state(0);
        // Shard k's counter counts its own positions k, k + of, …: past every one issued.
        for issued in state.issued.iter_mut() {
            *issued = (*issued + of - 1 - k) / of;
        }
        if k > 0 {
            (state.rejections, state.rejection_codes) = (Vec::new(), Vec::new());
        }
        let state = serde_json::to_vec_pretty(&state).expect("the state serialises");
        drop(w);
        let view = self.view(None, None);
        let range = start as u32..(start + len) as u32;
        let history: snapshot::Extra = (
            HISTORY,
            Box::new(|out| crate::history::write_history_of(&view, Some(range), out).map(|_| ())),
        );
        let state: snapshot::Extra = (
            STATE,
            Box::new(|out| {
                out.write_all(&state)
                    .map_err(|e| JukiError::Io(format!("{STATE}: {e}")))
            }),
        );
        detached(py, || {
            snapshot::save_with(&rows, &path, vec![history, state])
        })?;
        Ok(())
    }

    /// Build from an Arrow table of the public schema.
    #[staticmethod]
    fn from_arrow(py: Python<'_>, table: &Bound<'_, PyAny>) -> PyResult<PyRegistry> {
        let table = ImportedTable::from_python(table, "registry table")?;
        let data = detached(py, || crate::import::from_batch(&table.one_batch()?))?;
        Ok(PyRegistry::new(data))
    }

    /// The registry as an Arrow table of the public schema.
    #[pyo3(signature = (columns = None))]
    fn to_arrow(
        &self,
        py: Python<'_>,
        columns: Option<Vec<String>>,
    ) -> PyResult<PyArrowType<Table>> {
        let cols = columns_of(columns)?;
        let schema = schema_of(&cols);
        let batch = detached(py, || {
            let view = self.view(None, None);
            let arrays = if view.clean() {
                self.data.columns(&cols, Rows::All)?
            } else {
                // The registry as it stands: changes folded in, persons created appended.
                let folded = crate::history::Folded::new(&view);
                let rows = folded.columns_for(&cols)?;
                crate::storage::public_columns(&rows, folded.dicts(), &cols, Rows::All)?
            };
            RecordBatch::try_new(schema.clone(), arrays).map_err(JukiError::from)
        })?;
        to_table(vec![batch], schema)
    }

    /// Look keys up; see `juki_engine.Registry.lookup`.
    #[pyo3(signature = (keys, by = "my_number", columns = None, as_of = None, recorded_as_of = None))]
    fn lookup(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        by: &str,
        columns: Option<Vec<String>>,
        as_of: Option<i32>,
        recorded_as_of: Option<i64>,
    ) -> PyResult<PyArrowType<Table>> {
        let kind = IdKind::from_name(by)?;
        let cols = columns_of(columns)?;
        let keys = Imported::from_python(keys, "keys")?;
        let view = self.view(as_of, recorded_as_of);
        let batch = run_sized(py, keys.len(), || {
            query::lookup(
                &self.data,
                Some(&view),
                keys.array(Strings::Bytes)?.as_ref(),
                kind,
                &cols,
            )
        })?;
        let schema = batch.schema();
        to_table(vec![batch], schema)
    }

    /// Verify one claim given as Python values; see `juki_engine.Registry.verify_one`.
    #[pyo3(signature = (by, key, claims, columns = Vec::new(), level = "exact", as_of = None, recorded_as_of = None))]
    #[allow(clippy::too_many_arguments)]
    fn verify_one<'py>(
        &self,
        py: Python<'py>,
        by: &str,
        key: &str,
        claims: Vec<(String, Bound<'py, PyAny>)>,
        columns: Vec<String>,
        level: &str,
        as_of: Option<i32>,
        recorded_as_of: Option<i64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let kind = IdKind::from_name(by)?;
        let cols = columns_of(Some(columns))?;
        let level = Level::from_name(level)?;
        if level != Level::Exact {
            self.prepare(py, level, false)?;
        }
        let mut fields = vec![Field::new(kind.name(), DataType::Utf8, true)];
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec![key]))];
        for (name, value) in &claims {
            let array: ArrayRef = if let Ok(text) = value.extract::<&str>() {
                if name == Column::BirthDate.name() {
                    Arc::new(claimed_date(text)?)
                } else {
                    Arc::new(StringArray::from(vec![text]))
                }
            } else if let Ok(number) = value.extract::<i64>() {
                Arc::new(Int64Array::from(vec![number]))
            } else {
                return Err(JukiError::InvalidInput(format!(
                    "claim '{}' must be a string or an integer, not {}",
                    echo(name.as_bytes()),
                    value.get_type().name()?
                ))
                .into());
            };
            fields.push(Field::new(name, array.data_type().clone(), true));
            arrays.push(array);
        }
        let out = guarded(|| {
            let claims = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
                .map_err(|e| JukiError::arrow("claims", e))?;
            let matching = self.folded.matching(&self.data.dicts, level)?;
            query::verify(
                &self.data,
                Some(&self.view(as_of, recorded_as_of)),
                &claims,
                kind,
                &ExactMatch,
                matching.as_ref(),
                0,
                &cols,
            )
        })?;
        let row = PyDict::new(py);
        for (field, array) in out.schema().fields().iter().zip(out.columns()) {
            row.set_item(field.name(), python_value(py, array.as_ref())?)?;
        }
        Ok(row)
    }

    /// Verify claims; see `juki_engine.Registry.verify`.
    #[pyo3(signature = (claims, by = "my_number", first_row = 0, columns = Vec::new(), level = "exact", as_of = None, recorded_as_of = None))]
    #[allow(clippy::too_many_arguments)]
    fn verify(
        &self,
        py: Python<'_>,
        claims: &Bound<'_, PyAny>,
        by: &str,
        first_row: usize,
        columns: Vec<String>,
        level: &str,
        as_of: Option<i32>,
        recorded_as_of: Option<i64>,
    ) -> PyResult<PyArrowType<Table>> {
        let kind = IdKind::from_name(by)?;
        let cols = columns_of(Some(columns))?;
        let level = Level::from_name(level)?;
        if level != Level::Exact {
            self.prepare(py, level, false)?;
        }
        // Claims the core decoded were validated as they were decoded; any other table is
        // validated here.
        let claims = match claims.cast::<PyClaims>() {
            Ok(decoded) => {
                let decoded = decoded.get();
                ImportedTable::validated(decoded.schema.clone(), decoded.batches.clone())
            }
            Err(_) => ImportedTable::from_python(claims, "claims")?,
        };
        let rows = claims.rows();
        // One view for the whole call: every batch sees the same moment.
        let view = self.view(as_of, recorded_as_of);
        let results = run_sized(py, rows, || {
            let matching = self.folded.matching(&self.data.dicts, level)?;
            let (mut batches, schema) = claims.batches(Strings::Bytes)?;
            if batches.is_empty() {
                batches.push(RecordBatch::new_empty(schema));
            }
            let mut first_row = first_row;
            let mut out = Vec::with_capacity(batches.len());
            for b in &batches {
                out.push(query::verify(
                    &self.data,
                    Some(&view),
                    b,
                    kind,
                    &ExactMatch,
                    matching.as_ref(),
                    first_row,
                    &cols,
                )?);
                first_row += b.num_rows();
            }
            Ok(out)
        })?;
        let schema = results[0].schema();
        to_table(results, schema)
    }

    /// Search by the four basic facts; see `juki_engine.Registry.search`.
    #[pyo3(signature = (claims, level = "normalised", columns = Vec::new()))]
    fn search(
        &self,
        py: Python<'_>,
        claims: &Bound<'_, PyAny>,
        level: &str,
        columns: Vec<String>,
    ) -> PyResult<PyArrowType<Table>> {
        let level = Level::from_name(level)?;
        if level == Level::Reading {
            return Err(JukiError::InvalidInput(
                "a 4情報 search compares names at the exact or the normalised level".into(),
            )
            .into());
        }
        let cols = columns_of(Some(columns))?;
        let claims = ImportedTable::from_python(claims, "claims")?;
        self.prepare(py, level, true)?;
        let rows = claims.rows();
        let out = run_sized(py, rows, || {
            let folded = self.folded.text(&self.data.dicts, level)?;
            let folding = match level {
                Level::Exact => None,
                _ => Some(names::installed()?),
            };
            let index = self.search_index(folded)?;
            // Batch by batch (claim rows numbered across them): claims from this process are
            // validated as bytes only, and merging their dictionaries would read them as text.
            let (batches, schema) = claims.batches(Strings::Bytes)?;
            let view = self.view(None, None);
            // Persons changes renamed, corrected or created since the index was built: caught
            // up to this call's view, and held for the call.
            let mut delta = self.search_delta[level as usize]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            delta.catch_up(&view, folded, folding);
            // No batches at all still answers: one empty batch gives the reply's schema.
            let empty = [RecordBatch::new_empty(schema)];
            let batches: &[RecordBatch] = if batches.is_empty() { &empty } else { &batches };
            let mut first = 0;
            let mut out = Vec::with_capacity(batches.len());
            for b in batches {
                out.push(search::search(
                    &self.data,
                    Some((&view, &*delta)),
                    index,
                    folded,
                    folding,
                    b,
                    first,
                    &cols,
                )?);
                first += b.num_rows();
            }
            Ok(out)
        })?;
        let schema = out[0].schema();
        to_table(out, schema)
    }

    /// Apply a table of changes; see `juki_engine.Registry.apply`.
    #[pyo3(signature = (changes, today = None, first_row = 0, numbers = None, recorded = None, rows = None))]
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        py: Python<'_>,
        changes: &Bound<'_, PyAny>,
        today: Option<i32>,
        first_row: usize,
        numbers: Option<Vec<u64>>,
        recorded: Option<i64>,
        rows: Option<Vec<u64>>,
    ) -> PyResult<PyArrowType<Table>> {
        let table = ImportedTable::from_python(changes, "changes")?;
        let out = detached(py, || {
            let batch = table.one_batch()?;
            let today = today.unwrap_or_else(|| (now_micros() / 86_400_000_000) as i32);
            let log = self.log()?;
            let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            let recorded = self
                .last_recorded
                .load(Ordering::Relaxed)
                .saturating_add(1)
                .max(recorded.unwrap_or_else(now_micros));
            let mut rec = BatchRecord {
                batch: w.next_batch,
                recorded,
                ..Default::default()
            };
            let rows = changes::apply(
                &self.data,
                &self.live,
                &mut w,
                &batch,
                &mut rec,
                today,
                changes::Numbering {
                    first_row,
                    rows: rows.as_deref(),
                    numbers: numbers.as_deref(),
                },
            )?;
            let changed = !rec.entries.is_empty()
                || !rec.rejections.is_empty()
                || !rec.ext.is_empty()
                || !rec.issued.is_empty();
            let mut durable_at = None;
            if changed {
                w.next_batch += 1;
                self.last_recorded.store(recorded, Ordering::Relaxed);
                if let Some(log) = log {
                    let bytes = changes::encode(&rec);
                    durable_at = Some(log.append(&bytes)?);
                    self.logged(rec.batch, &bytes);
                }
            } else if let Some(log) = log {
                // Only duplicates: their first results must be durable before they are acked.
                durable_at = Some(log.len());
            }
            drop(w);
            // Group commit: the writer lock is free while this batch waits for its fsync.
            if let (Some(log), Some(at)) = (log, durable_at) {
                log.sync_through(at)?;
            }
            if changed {
                self.live.publish(rec.batch);
            }
            let view = View::new(
                &self.data,
                &self.live,
                crate::history::Cut {
                    batch: rec.batch.max(self.live.published()),
                    recorded: i64::MAX,
                    effective: i32::MAX,
                },
            );
            changes::results(&view, &rows)
        })?;
        let schema = out.schema();
        to_table(vec![out], schema)
    }

    /// Identifiers persons held before their current ones; see `feed::former_identifiers`.
    fn _former_identifiers(&self, py: Python<'_>) -> PyResult<PyArrowType<Table>> {
        let view = self.view(None, None);
        let out = detached(py, || crate::feed::former_identifiers(&view))?;
        let schema = out.schema();
        to_table(vec![out], schema)
    }

    /// The number of the newest change (0 if none): where a front end numbering a shard's
    /// changes resumes.
    fn _last_change(&self) -> u64 {
        crate::notices::last_number(&self.live)
    }

    /// The batch and xxh3 of the last change log record written or redone since the registry
    /// was opened (None: none): replicas of a shard in step hold the same.
    fn _last_record(&self) -> Option<(u32, u64)> {
        *self.last_record.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest batch applied (0 if none): how far a replica has come.
    fn _last_batch(&self) -> u32 {
        let w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        w.next_batch.saturating_sub(1)
    }

    /// The change log's records of the batches after `batch`, durable, in order: what a
    /// replica of the same shard that stopped at `batch` lacks (log shipping).
    fn _log_since(&self, py: Python<'_>, batch: u32) -> PyResult<Vec<Vec<u8>>> {
        Ok(detached(py, || {
            let log = self.replica_log()?;
            let w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            log.sync_through(log.len())?;
            let recovered = ChangeLog::read(log.path())?;
            let mut out = Vec::new();
            let mut first = w.next_batch;
            for (i, bytes) in recovered.records().enumerate() {
                let what = format!("change log '{}' record {i}", log.path().display());
                let rec = changes::decode(bytes, &what)?;
                if rec.batch > batch {
                    first = first.min(rec.batch);
                    out.push(bytes.to_vec());
                }
            }
            if first > batch.saturating_add(1) {
                return Err(JukiError::InvalidInput(format!(
                    "this log begins after batch {batch} (a checkpoint holds the batches up to \
                     {}): a replica at batch {batch} reopens from the snapshot",
                    first - 1
                )));
            }
            Ok(out)
        })?)
    }

    /// Empty this replica's change log: the shard's snapshot now holds every batch up to
    /// `batch` (its own replica checkpointed), and this registry holds none past it.
    fn _log_covered(&self, py: Python<'_>, batch: u32) -> PyResult<()> {
        Ok(detached(py, || {
            let log = self.replica_log()?;
            let w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            let last = w.next_batch.saturating_sub(1);
            if last != batch {
                return Err(JukiError::InvalidInput(format!(
                    "this replica's last batch is {last}, not {batch}: its log is not covered \
                     by the snapshot, and is kept"
                )));
            }
            log.reset()
        })?)
    }

    /// Redo `records` shipped from a replica of the same shard (`_log_since`), each checked as
    /// the change log's own are and made durable in this registry's log before it is seen:
    /// they must continue this registry's batches exactly. Returns how many were redone.
    fn _redo_shipped(&self, py: Python<'_>, records: Vec<Vec<u8>>) -> PyResult<usize> {
        Ok(detached(py, || {
            let log = self.replica_log()?;
            let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            let mut last = None;
            for (i, bytes) in records.iter().enumerate() {
                let what = format!("shipped record {i}");
                let rec = changes::decode(bytes, &what)?;
                if rec.batch != w.next_batch {
                    return Err(JukiError::InvalidInput(format!(
                        "{what} is of batch {}, and this registry's next batch is {}: it is \
                         not the record that follows (a replica that diverged, or records \
                         out of order)",
                        rec.batch, w.next_batch
                    )));
                }
                changes::check_record(&self.data, &self.live, &w, &rec, &what)?;
                let at = log.append(bytes)?;
                changes::redo(&self.data, &self.live, &mut w, &rec);
                self.logged(rec.batch, bytes);
                self.last_recorded
                    .fetch_max(rec.recorded, Ordering::Relaxed);
                last = Some((rec.batch, at));
            }
            // Durable, then seen (as an applied batch is).
            if let Some((batch, at)) = last {
                log.sync_through(at)?;
                self.live.publish(batch);
            }
            Ok(records.len())
        })?)
    }

    /// Write a new snapshot holding the changes (folded in, and kept as history) and empty
    /// the change log; see `juki_engine.Registry.checkpoint`.
    fn checkpoint(&self, py: Python<'_>) -> PyResult<usize> {
        let Some(dir) = self
            .log_path
            .as_ref()
            .and_then(|p| p.parent())
            .map(PathBuf::from)
        else {
            return Err(JukiError::InvalidInput(
                "checkpoint needs a registry opened from a snapshot; save a generated one".into(),
            )
            .into());
        };
        Ok(detached(py, || {
            let log = self.log()?.expect("opened from a snapshot");
            // Applies wait while the snapshot is written: it must hold every logged batch.
            let w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            log.sync_through(log.len())?;
            let view = View::new(
                &self.data,
                &self.live,
                crate::history::Cut {
                    batch: w.next_batch.saturating_sub(1).max(self.live.published()),
                    recorded: i64::MAX,
                    effective: i32::MAX,
                },
            );
            let mut entries = 0;
            let state = serde_json::to_vec_pretty(&w.state(log.generation()))
                .expect("the state serialises");
            let history: snapshot::Extra = (
                HISTORY,
                Box::new(|out| {
                    entries = crate::history::write_history(&view, out)?;
                    Ok(())
                }),
            );
            let state: snapshot::Extra = (
                STATE,
                Box::new(|out| {
                    out.write_all(&state)
                        .map_err(|e| JukiError::Io(format!("{STATE}: {e}")))
                }),
            );
            let folded = crate::history::Folded::new(&view);
            snapshot::save_with(&folded, &dir, vec![history, state])?;
            log.reset()?;
            Ok(entries)
        })?)
    }

    /// Each resident's changes, oldest first; see `juki_engine.Registry.history`.
    #[pyo3(signature = (keys, by = "my_number"))]
    fn history(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        by: &str,
    ) -> PyResult<PyArrowType<Table>> {
        self.by_keys(py, keys, by, crate::history::history_table)
    }

    /// 転入通知 owed to `municipality` (its code), numbered after `after`, oldest first, at
    /// most `limit`; see `juki_engine.Registry.notices`.
    #[pyo3(signature = (municipality, after=0, limit=1000))]
    fn notices(
        &self,
        py: Python<'_>,
        municipality: &str,
        after: u64,
        limit: usize,
    ) -> PyResult<PyArrowType<Table>> {
        IdKind::LocalGovernment
            .parse(municipality)
            .map_err(|e| JukiError::InvalidInput(format!("municipality: {e}")))?;
        let codes = &self.data.dicts.municipality_code;
        let key = (0..codes.len())
            .find(|&k| codes.value(k) == municipality)
            .ok_or_else(|| {
                JukiError::InvalidInput(format!(
                    "municipality {municipality} is not a municipality of the registry"
                ))
            })?;
        let view = self.view(None, None);
        let out = detached(py, || {
            crate::notices::notices(&view, key as u16, after, limit)
        })?;
        let schema = out.schema();
        to_table(vec![out], schema)
    }

    /// The person ids `keys` name (null: invalid or no one): a subscription's watch list, held
    /// by the front end and never shown.
    #[pyo3(signature = (keys, by = "my_number"))]
    fn _persons(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        by: &str,
    ) -> PyResult<PyArrowType<Table>> {
        self.by_keys(py, keys, by, crate::feed::persons)
    }

    /// How many notices are owed to each municipality (code → its last acknowledged notice)
    /// after that number: {code: count}; codes of no municipality of the registry count 0.
    fn _notice_backlog(
        &self,
        py: Python<'_>,
        acknowledged: std::collections::HashMap<String, u64>,
    ) -> PyResult<std::collections::HashMap<String, u64>> {
        let codes = &self.data.dicts.municipality_code;
        let keyed: Vec<(String, Option<u16>, u64)> = acknowledged
            .into_iter()
            .map(|(code, after)| {
                let key = (0..codes.len()).find(|&k| codes.value(k) == code);
                (code, key.map(|k| k as u16), after)
            })
            .collect();
        let after: Vec<(u16, u64)> = keyed
            .iter()
            .filter_map(|&(_, key, a)| key.map(|k| (k, a)))
            .collect();
        let view = self.view(None, None);
        let counts = detached(py, || Ok(crate::notices::backlog(&view, &after)))?;
        let mut by_key: std::collections::HashMap<u16, u64> = std::collections::HashMap::new();
        for (&(key, _), &n) in after.iter().zip(&counts) {
            by_key.insert(key, n);
        }
        Ok(keyed
            .into_iter()
            .map(|(code, key, _)| (code, key.and_then(|k| by_key.get(&k).copied()).unwrap_or(0)))
            .collect())
    }

    /// The public `columns` of persons by id (null where an id names no one now): the
    /// residents' view reads its caller's own record by the person its certificate names.
    #[pyo3(signature = (persons, columns = None))]
    fn _by_person(
        &self,
        py: Python<'_>,
        persons: Vec<u32>,
        columns: Option<Vec<String>>,
    ) -> PyResult<PyArrowType<Table>> {
        let cols = columns_of(columns)?;
        let view = self.view(None, None);
        let out = run_sized(py, persons.len(), || {
            crate::feed::by_person(&view, &persons, &cols)
        })?;
        let schema = out.schema();
        to_table(vec![out], schema)
    }

    /// The changes of the persons `watch` holds (a bitmap over person ids, least significant
    /// bit first) whose reason is one of `reasons`, numbered after `after`, oldest first, at
    /// most `limit`; see `feed::watched_changes`.
    #[pyo3(signature = (watch, reasons, after = 0, limit = 1000))]
    fn _watched_changes(
        &self,
        py: Python<'_>,
        watch: &[u8],
        reasons: Vec<String>,
        after: u64,
        limit: usize,
    ) -> PyResult<PyArrowType<Table>> {
        let mut bits = 0u32;
        for name in &reasons {
            let reason = Reason::ALL[1..]
                .iter()
                .find(|r| r.name() == name)
                .ok_or_else(|| {
                    JukiError::InvalidInput(format!("unknown change reason '{name}'"))
                })?;
            bits |= 1 << *reason as u32;
        }
        let view = self.view(None, None);
        let out = detached(py, || {
            crate::feed::watched_changes(&view, watch, bits, after, limit)
        })?;
        let schema = out.schema();
        to_table(vec![out], schema)
    }

    /// Make this registry shard `k` of `of` for identifier issuance: its share of each
    /// municipality's designated codes, and the identifiers every shard held at the split
    /// (`held`: files of ascending little-endian uint64, My Numbers then resident codes), which
    /// it never issues; see `changes::Part`. At every open, before any change is applied.
    fn _as_shard(&self, py: Python<'_>, k: u64, of: u64, held: [PathBuf; 2]) -> PyResult<()> {
        let part = detached(py, || {
            let held = [changes::read_held(&held[0])?, changes::read_held(&held[1])?];
            changes::Part::new(k, of, held)
        })?;
        // Set at every open of the shard, before it serves (changes its log redoes issue
        // nothing: their identifiers are in the log).
        self.writer.lock().unwrap_or_else(|e| e.into_inner()).part = Some(part);
        Ok(())
    }

    /// Per change (`municipalities[i]`, `sequences[i]`): 1 applied, 2 rejected, 0 not seen.
    fn _seen(&self, municipalities: Vec<Option<String>>, sequences: Vec<Option<i64>>) -> Vec<u8> {
        let w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        municipalities
            .iter()
            .zip(&sequences)
            .map(|(m, s)| match (m, s) {
                (Some(m), Some(s)) => w.seen(&self.live, m, *s),
                _ => 0,
            })
            .collect()
    }

    /// Changes applied since the registry was opened (or generated), and persons they created.
    #[getter]
    fn applied_changes(&self) -> usize {
        self.live.entries.count()
    }

    fn __len__(&self) -> usize {
        self.data.len() + self.live.created.load(Ordering::Relaxed) as usize
    }

    /// Bytes held by row columns and indexes.
    #[getter]
    fn memory_bytes(&self) -> usize {
        self.data.memory_bytes()
    }

    /// Names of the public columns, in schema order.
    #[staticmethod]
    fn column_names() -> Vec<&'static str> {
        Column::ALL.iter().map(|c| c.name()).collect()
    }

    /// Names of the columns a claim may carry for `verify`, in schema order.
    #[staticmethod]
    fn claimable_columns() -> Vec<&'static str> {
        query::CLAIMABLE.iter().map(|c| c.name()).collect()
    }

    /// Names of the change reasons (異動事由) of the change table, in code order.
    #[staticmethod]
    fn change_reasons() -> Vec<&'static str> {
        Reason::ALL[1..].iter().map(|r| r.name()).collect()
    }

    /// Names of the facts a 4情報 search compares: the required ones, then the optional.
    #[staticmethod]
    fn search_facts() -> (Vec<&'static str>, Vec<&'static str>) {
        let names = |cols: &[Column]| cols.iter().map(|c| c.name()).collect();
        (names(&search::REQUIRED), names(&search::OPTIONAL))
    }

    fn __repr__(&self) -> String {
        format!("Registry({} residents)", self.data.len())
    }
}

/// A typed call's claimed birth date (ISO 8601 text) as the one-row `date32` column that
/// `verify` takes; text that is not a date is `InvalidInput` naming the claim.
fn claimed_date(text: &str) -> Result<Date32Array> {
    let dates = cast(&StringArray::from(vec![text]), &DataType::Date32)
        .map_err(|e| JukiError::arrow("claims column 'birth_date'", e))?;
    let dates = dates.as_primitive::<Date32Type>().clone();
    if dates.is_null(0) {
        return Err(JukiError::InvalidInput(format!(
            "claims column 'birth_date': '{}' is not a date (YYYY-MM-DD)",
            echo(text.as_bytes())
        )));
    }
    Ok(dates)
}

/// Whether `value` is a valid identifier of `kind` (strict: exact ASCII digits).
#[pyfunction]
fn is_valid(kind: &str, value: &str) -> PyResult<bool> {
    Ok(guarded(|| {
        Ok(IdKind::from_name(kind)?.parse(value).is_ok())
    })?)
}

/// Check the identifier strictly, raising `InvalidIdentifier` naming the value if it is not valid.
#[pyfunction]
fn validate(kind: &str, value: &str) -> PyResult<()> {
    guarded(|| IdKind::from_name(kind)?.parse(value).map(|_| ()))?;
    Ok(())
}

/// The check digit for a base (the identifier's digits without its check digit).
#[pyfunction]
fn check_digit(kind: &str, base: &str) -> PyResult<u8> {
    Ok(guarded(|| {
        let k = IdKind::from_name(kind)?;
        let value = k.parse_base(base.as_bytes()).ok_or_else(|| {
            JukiError::InvalidIdentifier(format!(
                "{} base '{}': must be exactly {} ASCII digits",
                k.name(),
                echo(base.as_bytes()),
                k.base_len()
            ))
        })?;
        Ok(k.check_digit(value))
    })?)
}

/// Lenient parsing: returns (canonical value, folded full-width digits, removed separators).
#[pyfunction]
fn normalize(kind: &str, value: &str) -> PyResult<(String, bool, bool)> {
    let n = guarded(|| ids::normalize(IdKind::from_name(kind)?, value))?;
    Ok((n.value, n.folded_full_width, n.removed_separators))
}

/// A routing table's identifiers: uint64, one a person, no nulls.
fn route_values<'a>(a: &'a ArrayRef, what: &str) -> Result<&'a [u64]> {
    let a = a
        .as_any()
        .downcast_ref::<arrow_array::UInt64Array>()
        .filter(|a| a.null_count() == 0)
        .ok_or_else(|| {
            JukiError::InvalidInput(format!("routes: {what} must be uint64, no nulls"))
        })?;
    Ok(a.values())
}

/// The routing tables of a sharded registry; see `juki_engine.distributed.Routes`.
#[pyclass(name = "Router", module = "juki_engine._core", frozen)]
struct PyRouter {
    router: crate::route::Router,
}

#[pymethods]
impl PyRouter {
    /// A router over the identifiers of persons 0..n (uint64 arrays, in person order) and the
    /// first person id of each shard.
    #[new]
    #[pyo3(signature = (my_number, resident_code, firsts, functions = None))]
    fn new(
        py: Python<'_>,
        my_number: &Bound<'_, PyAny>,
        resident_code: &Bound<'_, PyAny>,
        firsts: Vec<u32>,
        functions: Option<(Vec<u8>, Vec<u8>)>,
    ) -> PyResult<PyRouter> {
        let mn = Imported::from_python(my_number, "my_number")?;
        let rc = Imported::from_python(resident_code, "resident_code")?;
        let router = detached(py, || {
            let (mn, rc) = (mn.array(Strings::Bytes)?, rc.array(Strings::Bytes)?);
            crate::route::Router::new(
                route_values(&mn, "my_number")?,
                route_values(&rc, "resident_code")?,
                firsts,
                functions.as_ref().map(|(m, r)| (&m[..], &r[..])),
            )
        })?;
        Ok(PyRouter { router })
    }

    /// The routing function of one kind's identifiers (uint64, one a person), as bytes to
    /// save beside them: building it takes ~45 s a kind for the nation, reading it a moment.
    #[staticmethod]
    fn function<'py>(
        py: Python<'py>,
        values: &Bound<'py, PyAny>,
        by: &str,
    ) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
        let kind = IdKind::from_name(by)?;
        let values = Imported::from_python(values, "values")?;
        let bytes = detached(py, || {
            let values = values.array(Strings::Bytes)?;
            crate::route::function(kind, route_values(&values, by)?)
        })?;
        Ok(pyo3::types::PyBytes::new(py, &bytes))
    }

    /// The shard of each key (uint8: its person's; any for a key of no one; 0 when invalid).
    #[pyo3(signature = (keys, by = "my_number"))]
    fn route(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        by: &str,
    ) -> PyResult<PyArrowType<ArrayData>> {
        let kind = IdKind::from_name(by)?;
        let keys = Imported::from_python(keys, "keys")?;
        let out = detached(py, || {
            let keys = keys.array(Strings::Bytes)?;
            Ok(arrow_array::UInt8Array::from(
                self.router.route(kind, keys.as_ref())?,
            ))
        })?;
        Ok(PyArrowType(out.into_data()))
    }

    /// Route identifiers issued since the split (`values`: `by`'s, uint64) to `shards`.
    fn add(
        &self,
        py: Python<'_>,
        values: &Bound<'_, PyAny>,
        by: &str,
        shards: Vec<u8>,
    ) -> PyResult<()> {
        let kind = IdKind::from_name(by)?;
        let values = Imported::from_python(values, "values")?;
        Ok(detached(py, || {
            let values = values.array(Strings::Bytes)?;
            let values = route_values(&values, by)?;
            if values.len() != shards.len() {
                return Err(JukiError::InvalidInput(format!(
                    "{} identifiers and {} shards",
                    values.len(),
                    shards.len()
                )));
            }
            self.router.add(kind, values, &shards)
        })?)
    }

    #[getter]
    fn memory_bytes(&self) -> usize {
        self.router.memory_bytes()
    }
}

/// Vectorised `is_valid` over an Arrow array of strings or integers; null stays null.
#[pyfunction]
fn is_valid_array(
    py: Python<'_>,
    kind: &str,
    values: &Bound<'_, PyAny>,
) -> PyResult<PyArrowType<ArrayData>> {
    let k = IdKind::from_name(kind)?;
    let values = Imported::from_python(values, "values")?;
    let out = detached(py, || -> Result<BooleanArray> {
        let array = values.array(Strings::Bytes)?;
        let parsed = query::parse_keys(k, array.as_ref(), 0)?;
        let valid: Vec<Option<bool>> = parsed
            .bases
            .iter()
            .enumerate()
            .map(|(i, &b)| (!array.is_null(i)).then_some(b != crate::index::INVALID_KEY))
            .collect();
        Ok(BooleanArray::from(valid))
    })?;
    Ok(PyArrowType(out.into_data()))
}

/// Vectorised `check_digit` over an Arrow array of bases: strings of the base digits, or
/// integers (the base's value). Malformed bases give null.
#[pyfunction]
fn check_digit_array(
    py: Python<'_>,
    kind: &str,
    bases: &Bound<'_, PyAny>,
) -> PyResult<PyArrowType<ArrayData>> {
    let k = IdKind::from_name(kind)?;
    let bases = Imported::from_python(bases, "bases")?;
    let out = detached(py, || -> Result<UInt8Array> {
        let array = bases.array(Strings::Text)?;
        if array.data_type().is_integer() {
            let ints =
                cast(array.as_ref(), &DataType::Int64).map_err(|e| JukiError::arrow("bases", e))?;
            let limit = 10i64.pow(k.base_len() as u32);
            return Ok(ints
                .as_primitive::<Int64Type>()
                .iter()
                .map(|v| {
                    v.filter(|&b| (0..limit).contains(&b))
                        .map(|b| k.check_digit(b as u64))
                })
                .collect());
        }
        if !query::is_text(array.data_type()) {
            return Err(JukiError::InvalidInput(format!(
                "bases must be strings (utf8, large_utf8, utf8_view or a dictionary of them) \
                 or integers, not {}",
                query::shown_type(array.data_type())
            )));
        }
        let strings =
            cast(array.as_ref(), &DataType::Utf8View).map_err(|e| JukiError::arrow("bases", e))?;
        Ok(strings
            .as_string_view()
            .iter()
            .map(|s| k.parse_base(s?.as_bytes()).map(|b| k.check_digit(b)))
            .collect())
    })?;
    Ok(PyArrowType(out.into_data()))
}

/// Claims decoded from the wire by the core and validated there ([`read_ipc_stream`]): they
/// stay in the core's memory, so `Registry.verify` takes them as they are, where a table from
/// Python is validated again at its import.
#[pyclass(frozen, name = "Claims", module = "juki_engine._core")]
pub struct PyClaims {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
}

#[pymethods]
impl PyClaims {
    /// The claims' column names, in order.
    #[getter]
    fn column_names(&self) -> Vec<String> {
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    /// Rows over all batches.
    #[getter]
    fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    /// The claims as a pyarrow table (zero-copy).
    fn to_arrow<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let table = Table::try_new(self.batches.clone(), self.schema.clone())
            .map_err(|e| JukiError::arrow("claims", e))?;
        // A schema Arrow decodes but pyarrow refuses (a NUL in a name) is the stream's fault.
        table.into_pyarrow(py).map_err(|e| {
            JukiError::InvalidInput(format!("claims cannot be handed to pyarrow: {e}")).into()
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "Claims({} rows: {})",
            self.num_rows(),
            self.column_names().join(", ")
        )
    }
}

/// Decode an Arrow IPC stream from the wire with caps on its rows and decoded bytes, every
/// column validated; see `juki_engine._core.read_ipc_stream`.
#[pyfunction]
fn read_ipc_stream(
    py: Python<'_>,
    payload: &Bound<'_, PyBytes>,
    max_rows: usize,
    max_bytes: usize,
) -> PyResult<PyClaims> {
    let payload = payload.as_bytes();
    let (schema, batches) = detached(py, || wire::read_ipc_stream(payload, max_rows, max_bytes))?;
    Ok(PyClaims { schema, batches })
}

/// Install the process's name-folding table: `sources[i]` folds to `targets[i]` (code points; see
/// `juki_engine.names`). Returns how many characters the table in force maps; a second call
/// keeps the first table.
#[pyfunction]
fn install_folding(sources: Vec<u32>, targets: Vec<u32>) -> PyResult<usize> {
    let folding = guarded(|| Folding::new(&sources, &targets))?;
    Ok(names::install(folding).len())
}

/// `text` folded at `level` with the installed table (what verify compares at that level).
#[pyfunction]
fn fold(text: &str, level: &str) -> PyResult<String> {
    let level = Level::from_name(level)?;
    let mut out = String::new();
    if level != Level::Exact {
        names::installed()?.fold(text, level, &mut out);
    } else {
        out.push_str(text);
    }
    Ok(out)
}

/// Register the module's contents.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<PyRegistry>()?;
    m.add_class::<PyClaims>()?;
    m.add_class::<PyRouter>()?;
    m.add_function(wrap_pyfunction!(is_valid, m)?)?;
    m.add_function(wrap_pyfunction!(validate, m)?)?;
    m.add_function(wrap_pyfunction!(check_digit, m)?)?;
    m.add_function(wrap_pyfunction!(normalize, m)?)?;
    m.add_function(wrap_pyfunction!(is_valid_array, m)?)?;
    m.add_function(wrap_pyfunction!(check_digit_array, m)?)?;
    m.add_function(wrap_pyfunction!(read_ipc_stream, m)?)?;
    m.add_function(wrap_pyfunction!(install_folding, m)?)?;
    m.add_function(wrap_pyfunction!(fold, m)?)?;
    m.add(
        "JukiError",
        py.get_type::<crate::error::exceptions::JukiError>(),
    )?;
    m.add(
        "InvalidIdentifier",
        py.get_type::<crate::error::exceptions::InvalidIdentifier>(),
    )?;
    m.add(
        "InvalidInput",
        py.get_type::<crate::error::exceptions::InvalidInput>(),
    )?;
    m.add(
        "DuplicateIdentifier",
        py.get_type::<crate::error::exceptions::DuplicateIdentifier>(),
    )?;
    m.add(
        "SnapshotCorrupt",
        py.get_type::<crate::error::exceptions::SnapshotCorrupt>(),
    )?;
    m.add(
        "SnapshotIOError",
        py.get_type::<crate::error::exceptions::SnapshotIOError>(),
    )?;
    m.add(
        "ResourceExhausted",
        py.get_type::<crate::error::exceptions::ResourceExhausted>(),
    )?;
    m.add(
        "InternalError",
        py.get_type::<crate::error::exceptions::InternalError>(),
    )?;
    m.add("REFERENCE_DATE", generate::REFERENCE_DATE)?;
    m.add("MAX_ROWS", crate::index::MAX_ROWS)?;
    Ok(())
}
