//! Building a registry from an Arrow table of the public schema (`Registry.from_arrow`).
use arrow_array::RecordBatch;

use crate::error::{JukiError, Result};
use crate::storage::RegistryData;

/// Build a registry from a record batch of the public schema.
pub fn from_batch(_batch: &RecordBatch) -> Result<RegistryData> {
    Err(JukiError::InvalidInput("from_arrow is being written".into()))
}
