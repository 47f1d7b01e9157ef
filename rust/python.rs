//! Python bindings: the `Registry` class and identifier functions of `juki_engine._core`.
//!
//! Arrow crosses the boundary through the C Data / PyCapsule interface (no Python lists); every
//! build, scan and lookup of more than a few hundred rows runs with the GIL released. One claim
//! of a typed call crosses as Python values instead (`verify_one`): for one row, the Arrow
//! interface costs more than the check.

use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt8Type};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, UInt8Array,
};
use arrow_cast::cast;
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_data::ArrayData;
use arrow_pyarrow::{PyArrowType, Table};
use arrow_schema::{ArrowError, DataType, Field, Schema};
use arrow_select::concat::concat_batches;
use pyo3::marker::Ungil;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error::{JukiError, Result};
use crate::generate::{self, Plan};
use crate::ids::{self, IdKind};
use crate::query::{self, ExactMatch};
use crate::snapshot;
use crate::storage::{schema_of, Column, RegistryData, Rows};

fn one_batch(table: Table, what: &str) -> Result<RecordBatch> {
    let (batches, schema) = table.into_inner();
    concat_batches(&schema, &batches).map_err(|e| JukiError::InvalidInput(format!("{what}: {e}")))
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

/// Run `f`, releasing the GIL only when `rows` make the work worth a thread switch.
fn run_sized<T: Ungil>(py: Python<'_>, rows: usize, f: impl Ungil + FnOnce() -> T) -> T {
    if rows < KEEP_GIL_ROWS {
        f()
    } else {
        py.detach(f)
    }
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
}

#[pymethods]
impl PyRegistry {
    /// Draw a synthetic registry from a plan (see `juki_engine.synthetic`).
    #[staticmethod]
    #[pyo3(signature = (municipalities, towns, family_names, given_names, seed = 0))]
    fn generate(
        py: Python<'_>,
        municipalities: PyArrowType<Table>,
        towns: PyArrowType<Table>,
        family_names: PyArrowType<Table>,
        given_names: PyArrowType<Table>,
        seed: u64,
    ) -> PyResult<PyRegistry> {
        let plan = Plan {
            municipalities: one_batch(municipalities.0, "municipalities")?,
            towns: one_batch(towns.0, "towns")?,
            family_names: one_batch(family_names.0, "family_names")?,
            given_names: one_batch(given_names.0, "given_names")?,
        };
        let data = py.detach(|| generate::generate(&plan, seed))?;
        Ok(PyRegistry {
            data: Arc::new(data),
        })
    }

    /// Open a snapshot directory written by `save`.
    #[staticmethod]
    #[pyo3(signature = (path, mmap = false))]
    fn open(py: Python<'_>, path: PathBuf, mmap: bool) -> PyResult<PyRegistry> {
        let data = py.detach(|| snapshot::open(&path, mmap))?;
        Ok(PyRegistry {
            data: Arc::new(data),
        })
    }

    /// Save atomically to a snapshot directory.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        py.detach(|| snapshot::save(&self.data, &path))?;
        Ok(())
    }

    /// Build from an Arrow table of the public schema.
    #[staticmethod]
    fn from_arrow(py: Python<'_>, table: PyArrowType<Table>) -> PyResult<PyRegistry> {
        let batch = one_batch(table.0, "registry table")?;
        let data = py.detach(|| crate::import::from_batch(&batch))?;
        Ok(PyRegistry {
            data: Arc::new(data),
        })
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
        let batch = py.detach(|| {
            let arrays: Vec<ArrayRef> = cols
                .iter()
                .map(|&c| self.data.column(c, Rows::All))
                .collect();
            RecordBatch::try_new(schema.clone(), arrays).map_err(JukiError::from)
        })?;
        to_table(vec![batch], schema)
    }

    /// Look keys up; see `juki_engine.Registry.lookup`.
    #[pyo3(signature = (keys, by = "my_number", columns = None))]
    fn lookup(
        &self,
        py: Python<'_>,
        keys: PyArrowType<ArrayData>,
        by: &str,
        columns: Option<Vec<String>>,
    ) -> PyResult<PyArrowType<Table>> {
        let kind = IdKind::from_name(by)?;
        let cols = columns_of(columns)?;
        let keys = arrow_array::make_array(keys.0);
        let batch = run_sized(py, keys.len(), || {
            query::lookup(&self.data, keys.as_ref(), kind, &cols)
        })?;
        let schema = batch.schema();
        to_table(vec![batch], schema)
    }

    /// Verify one claim given as Python values; see `juki_engine.Registry.verify_one`.
    #[pyo3(signature = (by, key, claims, columns = Vec::new()))]
    fn verify_one<'py>(
        &self,
        py: Python<'py>,
        by: &str,
        key: &str,
        claims: Vec<(String, Bound<'py, PyAny>)>,
        columns: Vec<String>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let kind = IdKind::from_name(by)?;
        let cols = columns_of(Some(columns))?;
        let mut fields = vec![Field::new(kind.name(), DataType::Utf8, true)];
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec![key]))];
        for (name, value) in &claims {
            let array: ArrayRef = if let Ok(text) = value.extract::<&str>() {
                Arc::new(StringArray::from(vec![text]))
            } else if let Ok(number) = value.extract::<i64>() {
                Arc::new(Int64Array::from(vec![number]))
            } else {
                return Err(JukiError::InvalidInput(format!(
                    "claim '{name}' must be a string or an integer, not {}",
                    value.get_type().name()?
                ))
                .into());
            };
            fields.push(Field::new(name, array.data_type().clone(), true));
            arrays.push(array);
        }
        let claims = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
            .map_err(|e| JukiError::InvalidInput(format!("claims: {e}")))?;
        let out = query::verify(&self.data, &claims, kind, &ExactMatch, 0, &cols)?;
        let row = PyDict::new(py);
        for (field, array) in out.schema().fields().iter().zip(out.columns()) {
            row.set_item(field.name(), python_value(py, array.as_ref())?)?;
        }
        Ok(row)
    }

    /// Verify claims; see `juki_engine.Registry.verify`.
    #[pyo3(signature = (claims, by = "my_number", first_row = 0, columns = Vec::new()))]
    fn verify(
        &self,
        py: Python<'_>,
        claims: PyArrowType<Table>,
        by: &str,
        first_row: usize,
        columns: Vec<String>,
    ) -> PyResult<PyArrowType<Table>> {
        let kind = IdKind::from_name(by)?;
        let cols = columns_of(Some(columns))?;
        let (mut batches, schema) = claims.0.into_inner();
        if batches.is_empty() {
            batches.push(RecordBatch::new_empty(schema));
        }
        let rows = batches.iter().map(|b| b.num_rows()).sum();
        let results = run_sized(py, rows, || {
            let mut first_row = first_row;
            let mut out = Vec::with_capacity(batches.len());
            for b in &batches {
                out.push(query::verify(
                    &self.data,
                    b,
                    kind,
                    &ExactMatch,
                    first_row,
                    &cols,
                )?);
                first_row += b.num_rows();
            }
            Ok::<_, JukiError>(out)
        })?;
        let schema = results[0].schema();
        to_table(results, schema)
    }

    fn __len__(&self) -> usize {
        self.data.len()
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

    fn __repr__(&self) -> String {
        format!("Registry({} residents)", self.data.len())
    }
}

/// Whether `value` is a valid identifier of `kind` (strict: exact ASCII digits).
#[pyfunction]
fn is_valid(kind: &str, value: &str) -> PyResult<bool> {
    Ok(IdKind::from_name(kind)?.parse(value).is_ok())
}

/// Check the identifier strictly, raising `InvalidIdentifier` naming the value if it is not valid.
#[pyfunction]
fn validate(kind: &str, value: &str) -> PyResult<()> {
    IdKind::from_name(kind)?.parse(value)?;
    Ok(())
}

/// The check digit for a base (the identifier's digits without its check digit).
#[pyfunction]
fn check_digit(kind: &str, base: &str) -> PyResult<u8> {
    let k = IdKind::from_name(kind)?;
    let value = k.parse_base(base.as_bytes()).ok_or_else(|| {
        JukiError::InvalidIdentifier(format!(
            "{} base '{base}': must be exactly {} ASCII digits",
            k.name(),
            k.base_len()
        ))
    })?;
    Ok(k.check_digit(value))
}

/// Lenient parsing: returns (canonical value, folded full-width digits, removed separators).
#[pyfunction]
fn normalize(kind: &str, value: &str) -> PyResult<(String, bool, bool)> {
    let n = ids::normalize(IdKind::from_name(kind)?, value)?;
    Ok((n.value, n.folded_full_width, n.removed_separators))
}

/// Vectorised `is_valid` over an Arrow array of strings or integers; null stays null.
#[pyfunction]
fn is_valid_array(
    py: Python<'_>,
    kind: &str,
    values: PyArrowType<ArrayData>,
) -> PyResult<PyArrowType<ArrayData>> {
    let k = IdKind::from_name(kind)?;
    let array = arrow_array::make_array(values.0);
    let out = py.detach(|| -> Result<BooleanArray> {
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
    bases: PyArrowType<ArrayData>,
) -> PyResult<PyArrowType<ArrayData>> {
    let k = IdKind::from_name(kind)?;
    let array = arrow_array::make_array(bases.0);
    let out = py.detach(|| -> Result<UInt8Array> {
        if array.data_type().is_integer() {
            let ints = cast(array.as_ref(), &DataType::Int64)
                .map_err(|e| JukiError::InvalidInput(format!("bases: {e}")))?;
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
        let strings = cast(array.as_ref(), &DataType::Utf8View).map_err(|e| {
            JukiError::InvalidInput(format!("bases must be strings or integers: {e}"))
        })?;
        Ok(strings
            .as_string_view()
            .iter()
            .map(|s| k.parse_base(s?.as_bytes()).map(|b| k.check_digit(b)))
            .collect())
    })?;
    Ok(PyArrowType(out.into_data()))
}

/// Register the module's contents.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<PyRegistry>()?;
    m.add_function(wrap_pyfunction!(is_valid, m)?)?;
    m.add_function(wrap_pyfunction!(validate, m)?)?;
    m.add_function(wrap_pyfunction!(check_digit, m)?)?;
    m.add_function(wrap_pyfunction!(normalize, m)?)?;
    m.add_function(wrap_pyfunction!(is_valid_array, m)?)?;
    m.add_function(wrap_pyfunction!(check_digit_array, m)?)?;
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
    m.add("REFERENCE_DATE", generate::REFERENCE_DATE)?;
    m.add("MAX_ROWS", crate::index::MAX_ROWS)?;
    Ok(())
}
