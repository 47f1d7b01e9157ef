//! The trust boundary for Arrow data from outside the process: decoding Arrow IPC streams from
//! the wire (`read_ipc_stream`) and validating every array that enters the core.
//!
//! Nothing from outside is read before it is checked. An IPC stream's message headers are
//! walked first and every length they declare (rows, body bytes, each compressed buffer's
//! decoded size) is checked against the payload and the caller's caps, so a hostile message
//! cannot make the decoder allocate or decompress more than the caps allow. Every decoded or
//! imported column is then validated in full (offsets, UTF-8, dictionary keys, views; see
//! [`validate_array`]) before any kernel reads it. Every failure is `InvalidInput` naming the
//! column.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use arrow_array::{Array, RecordBatch};
use arrow_data::ArrayData;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::{root_as_message, CompressionType, MessageHeader};
use arrow_schema::{ArrowError, DataType, SchemaRef};

use crate::error::{echo, panic_message, JukiError, Result};

/// How error messages call the stream `read_ipc_stream` decodes: the wire carries claims.
const STREAM: &str = "claims";

/// `n` with thousands separators, as the caps' messages show sizes.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

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

/// A stream's decoded-size budget, charged as each message's buffers are declared.
struct Budget {
    max_rows: u64,
    max_bytes: u64,
    rows: u64,
    bytes: u64,
}

impl Budget {
    fn rows(&mut self, n: u64) -> Result<()> {
        self.rows = self.rows.saturating_add(n);
        if self.rows > self.max_rows {
            return Err(JukiError::InvalidInput(format!(
                "{STREAM} stream declares {} rows, at most {}",
                thousands(self.rows),
                thousands(self.max_rows)
            )));
        }
        Ok(())
    }

    fn bytes(&mut self, n: u64) -> Result<()> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > self.max_bytes {
            return Err(JukiError::InvalidInput(format!(
                "{STREAM} stream declares {} bytes decoded, at most {}",
                thousands(self.bytes),
                thousands(self.max_bytes)
            )));
        }
        Ok(())
    }
}

fn not_ipc(why: impl std::fmt::Display) -> JukiError {
    JukiError::InvalidInput(format!("{STREAM} are not an Arrow IPC stream: {why}"))
}

/// Check one record batch header (of a record batch or a dictionary batch) against its body
/// `body` and charge its rows (for a record batch) and decoded bytes to `budget`.
fn check_batch_header(
    batch: arrow_ipc::RecordBatch<'_>,
    body: &[u8],
    is_dictionary: bool,
    budget: &mut Budget,
) -> Result<()> {
    let length = u64::try_from(batch.length())
        .map_err(|_| not_ipc(format!("a batch declares {} rows", batch.length())))?;
    if is_dictionary {
        // A dictionary has no more values than a stream may have rows.
        if length > budget.max_rows {
            return Err(JukiError::InvalidInput(format!(
                "{STREAM} stream declares a dictionary of {} values, at most {}",
                thousands(length),
                thousands(budget.max_rows)
            )));
        }
    } else {
        budget.rows(length)?;
    }
    let compressed = match batch.compression() {
        None => false,
        Some(c)
            if matches!(
                c.codec(),
                CompressionType::LZ4_FRAME | CompressionType::ZSTD
            ) =>
        {
            true
        }
        Some(c) => {
            return Err(not_ipc(format!(
                "unknown compression codec {:?}",
                c.codec()
            )))
        }
    };
    for b in batch.buffers().iter().flatten() {
        let (offset, len) = (b.offset(), b.length());
        let end = offset.checked_add(len);
        let Some(bytes) = (offset >= 0 && len >= 0)
            .then_some(end)
            .flatten()
            .and_then(|end| body.get(offset as usize..end as usize))
        else {
            return Err(not_ipc(format!(
                "a buffer at {offset} of {len} bytes lies outside its message body of {} bytes",
                body.len()
            )));
        };
        // The format aligns every buffer to 8 bytes; a misaligned one is not this format's
        // (and would be read misaligned).
        if offset % 8 != 0 {
            return Err(not_ipc(format!(
                "a buffer at {offset} is not 8-byte aligned"
            )));
        }
        if !compressed || bytes.is_empty() {
            budget.bytes(bytes.len() as u64)?;
            continue;
        }
        // A compressed buffer starts with its decoded length (-1: stored as is).
        let Some(prefix) = bytes.get(..8) else {
            return Err(not_ipc(format!(
                "a compressed buffer of {} bytes has no length prefix",
                bytes.len()
            )));
        };
        let declared = i64::from_le_bytes(prefix.try_into().expect("8 bytes"));
        match declared {
            -1 => budget.bytes(bytes.len() as u64 - 8)?,
            d if d >= 0 => budget.bytes(d as u64)?,
            d => return Err(not_ipc(format!("a compressed buffer declares {d} bytes"))),
        }
    }
    Ok(())
}

/// Walk the stream's framing and message headers without decoding any body: one schema
/// first, then dictionary and record batches whose declared rows, body lengths and decoded
/// buffer sizes are within the payload and the caps; an end-of-stream marker (or the payload's
/// end) last, with nothing after it.
fn check_stream(payload: &[u8], budget: &mut Budget) -> Result<()> {
    let mut at = 0usize;
    let mut schemas = 0;
    let word = |at: usize| -> Option<u32> {
        payload
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    while at < payload.len() {
        // A message: [0xFFFFFFFF] <metadata length: i32> <metadata, padded to 8> <body>.
        let Some(mut len) = word(at) else {
            return Err(not_ipc(format!(
                "{} stray bytes at the end",
                payload.len() - at
            )));
        };
        at += 4;
        if len == 0xFFFF_FFFF {
            len = word(at).ok_or_else(|| not_ipc("truncated after a continuation marker"))?;
            at += 4;
        }
        if len == 0 {
            // End of stream: nothing may follow.
            if at != payload.len() {
                return Err(not_ipc(format!(
                    "{} bytes after the end-of-stream marker",
                    payload.len() - at
                )));
            }
            break;
        }
        let len = len as usize;
        // Messages start 8-byte aligned and the metadata is padded so that the body is too.
        if len > i32::MAX as usize || !(at + len).is_multiple_of(8) {
            return Err(not_ipc(format!(
                "message metadata of {len} bytes at {at} does not end 8-byte aligned"
            )));
        }
        let meta = payload.get(at..at + len).ok_or_else(|| {
            not_ipc(format!(
                "message metadata of {len} bytes at {at} runs past the payload's {} bytes",
                payload.len()
            ))
        })?;
        at += len;
        let message = root_as_message(meta).map_err(not_ipc)?;
        let body_len = usize::try_from(message.bodyLength())
            .map_err(|_| not_ipc(format!("a message body of {} bytes", message.bodyLength())))?;
        let body = at
            .checked_add(body_len)
            .and_then(|end| payload.get(at..end))
            .ok_or_else(|| {
                not_ipc(format!(
                    "a message body of {body_len} bytes at {at} runs past the payload's {} bytes",
                    payload.len()
                ))
            })?;
        if !body_len.is_multiple_of(8) {
            return Err(not_ipc(format!(
                "a message body of {body_len} bytes is not padded to 8 bytes"
            )));
        }
        at += body_len;
        match message.header_type() {
            MessageHeader::Schema => {
                schemas += 1;
                if schemas > 1 {
                    return Err(not_ipc("more than one schema message"));
                }
                if body_len != 0 {
                    return Err(not_ipc("a schema message with a body"));
                }
            }
            MessageHeader::DictionaryBatch if schemas == 1 => {
                let dict = message
                    .header_as_dictionary_batch()
                    .ok_or_else(|| not_ipc("a dictionary batch without its header"))?;
                let data = dict
                    .data()
                    .ok_or_else(|| not_ipc("a dictionary batch without data"))?;
                check_batch_header(data, body, true, budget)?;
            }
            MessageHeader::RecordBatch if schemas == 1 => {
                let batch = message
                    .header_as_record_batch()
                    .ok_or_else(|| not_ipc("a record batch without its header"))?;
                check_batch_header(batch, body, false, budget)?;
            }
            MessageHeader::DictionaryBatch | MessageHeader::RecordBatch => {
                return Err(not_ipc("a batch before the schema"));
            }
            other => return Err(not_ipc(format!("unexpected {other:?} message"))),
        }
    }
    if schemas == 0 {
        return Err(not_ipc("no schema message"));
    }
    Ok(())
}

/// Decode an Arrow IPC stream from the wire, with caps: at most `max_rows` rows over all record
/// batches and at most `max_bytes` bytes of decoded buffers over the whole stream (a compressed
/// buffer counts the size it declares it decodes to), checked from the message headers before
/// any body is decoded; then every column (dictionaries included) validated in full. A string
/// view column may also refer to at most `max_bytes` bytes of strings, since validating each
/// view reads the string it refers to.
pub fn read_ipc_stream(
    payload: &[u8],
    max_rows: usize,
    max_bytes: usize,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let mut budget = Budget {
        max_rows: max_rows as u64,
        max_bytes: max_bytes as u64,
        rows: 0,
        bytes: 0,
    };
    check_stream(payload, &mut budget)?;
    // The headers are checked; what remains malformed in a body (a buffer too short for its
    // type, say) fails the decoder, and arrow's decoder asserts on some such buffers rather
    // than returning an error: a panic here is the stream's fault, refused like any other.
    let decoded = catch_unwind(AssertUnwindSafe(|| {
        let reader = StreamReader::try_new(Cursor::new(payload), None)?;
        let schema = reader.schema();
        let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
        Ok::<_, ArrowError>((schema, batches))
    }));
    let (schema, batches) = match decoded {
        Ok(decoded) => decoded.map_err(not_ipc)?,
        Err(panic) => {
            return Err(not_ipc(format!(
                "the decoder refused it: {}",
                panic_message(panic.as_ref())
            )))
        }
    };
    for batch in &batches {
        for (field, column) in schema.fields().iter().zip(batch.columns()) {
            let views = view_bytes(&column.to_data());
            if views > budget.max_bytes {
                return Err(JukiError::InvalidInput(format!(
                    "{} refers to {} bytes of strings, at most {}",
                    column_what(STREAM, field.name()),
                    thousands(views),
                    thousands(budget.max_bytes)
                )));
            }
        }
        validate_batch(batch, STREAM)?;
    }
    Ok((schema, batches))
}

/// The bytes that the out-of-line views of a view column (and of its children) refer to, read
/// from the views' length fields only.
fn view_bytes(data: &ArrayData) -> u64 {
    let own = match data.data_type() {
        DataType::Utf8View | DataType::BinaryView => data
            .buffers()
            .first()
            .map(|views| {
                let start = data.offset() * 16;
                let end = (start + data.len() * 16).min(views.len());
                views
                    .as_slice()
                    .get(start..end)
                    .unwrap_or_default()
                    .chunks_exact(16)
                    .map(|v| u32::from_le_bytes(v[..4].try_into().expect("4 bytes")) as u64)
                    .filter(|&len| len > 12)
                    .sum()
            })
            .unwrap_or(0),
        _ => 0,
    };
    own + data.child_data().iter().map(view_bytes).sum::<u64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separates() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(123_456_789), "123,456,789");
    }
}
