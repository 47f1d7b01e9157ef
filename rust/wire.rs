//! The trust boundary for Arrow data from outside the process: validating every array that
//! enters the core.
//!
//! Nothing from outside is read before it is checked: every imported column is validated in
//! full (offsets, UTF-8, dictionary keys, views; see [`validate_array`]) before any kernel reads
//! it. Every failure is `InvalidInput` naming the column.

use arrow_array::{Array, RecordBatch};
use arrow_data::ArrayData;

use crate::error::{echo, JukiError, Result};

/// Validate one array in full before anything reads it: buffer sizes, offsets (in bounds and
/// monotonic), UTF-8 of every string, dictionary keys within their dictionary, views within
/// their buffers (with valid UTF-8 and matching prefixes), null counts, and the same for every
/// child (a dictionary's values included). `what` names the array in the error.
pub fn validate_array(data: &ArrayData, what: &str) -> Result<()> {
    data.validate_full()
        .map_err(|e| JukiError::InvalidInput(format!("{what}: invalid Arrow data: {e}")))
}

/// How an error names column `name` of a table called `table` ("claims", "registry table").
pub fn column_what(table: &str, name: &str) -> String {
    format!("{table} column '{}'", echo(name.as_bytes()))
}

/// Validate every column of `batch` (see [`validate_array`]); the error names the column.
pub fn validate_batch(batch: &RecordBatch, table: &str) -> Result<()> {
    let schema = batch.schema();
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if column.len() != batch.num_rows() {
            return Err(JukiError::InvalidInput(format!(
                "{}: {} rows in a batch of {}",
                column_what(table, field.name()),
                column.len(),
                batch.num_rows()
            )));
        }
        validate_array(&column.to_data(), &column_what(table, field.name()))?;
    }
    Ok(())
}
