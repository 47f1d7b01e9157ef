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

use std::cell::Cell;
use std::collections::HashSet;
use std::io::{Cursor, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use arrow_array::{Array, RecordBatch};
use arrow_data::ArrayData;
use arrow_ipc::convert::try_fb_to_schema;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::{root_as_message, CompressionType, MessageHeader, MetadataVersion};
use arrow_schema::{ArrowError, DataType, Schema, SchemaRef, UnionMode};
use rayon::prelude::*;

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

thread_local! {
    /// Set while this thread runs code whose panics the boundary catches (see [`quietly`]).
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Run `f`, catching a panic, with the process's panic hook silent for it: arrow's decoder and
/// validation assert on some malformed input, which the boundary refuses as invalid, and a
/// hostile client must not be able to fill the server's log with a "thread panicked" report per
/// message. A panic anywhere else (another thread, or this one outside `f`) still reaches the
/// hook that was installed before.
fn quietly<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info)
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let out = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    out
}

/// The bytes of strings a view array (with its children) may refer to at least: validating a
/// view reads the string it refers to, so a few views of one long string would otherwise make
/// validation read terabytes. An array may refer to more where its own buffers are large (see
/// [`validate_array`]).
pub const MAX_VIEW_BYTES: u64 = 1 << 30;

/// How many times the bytes of its own buffers a view array may refer to beyond
/// [`MAX_VIEW_BYTES`]: validation then reads at most this multiple of what the caller holds.
const VIEW_FANOUT: u64 = 16;

/// An array's identity: its type, offset, length, and the address and length of each buffer
/// (Arrow buffers are immutable, and the caller holds them while it validates).
#[derive(Hash, PartialEq, Eq)]
struct Identity {
    data_type: DataType,
    offset: usize,
    len: usize,
    buffers: Vec<(usize, usize)>,
    nulls: Option<(usize, usize, usize)>,
}

impl Identity {
    fn of(data: &ArrayData) -> Identity {
        Identity {
            data_type: data.data_type().clone(),
            offset: data.offset(),
            len: data.len(),
            buffers: data
                .buffers()
                .iter()
                .map(|b| (b.as_ptr() as usize, b.len()))
                .collect(),
            nulls: data
                .nulls()
                .map(|n| (n.buffer().as_ptr() as usize, n.offset(), n.null_count())),
        }
    }
}

/// Dictionary values validated already: the values of a dictionary that several batches share
/// (every batch of an IPC stream after its dictionary message) are validated once, not once per
/// batch.
type Validated = HashSet<Identity>;

/// `data.validate_full()`, but a leaf dictionary values array in `seen` is not validated again
/// (and one validated now is added). Errors read as `validate_full`'s.
fn validate_tree(data: &ArrayData, seen: &mut Validated) -> std::result::Result<(), ArrowError> {
    validate_node(data)?;
    let dictionary = matches!(data.data_type(), DataType::Dictionary(..));
    for (i, child) in data.child_data().iter().enumerate() {
        if dictionary && child.child_data().is_empty() && !seen.insert(Identity::of(child)) {
            continue;
        }
        validate_tree(child, seen).map_err(|e| {
            ArrowError::InvalidArgumentError(format!(
                "{} child #{} invalid: {}",
                data.data_type(),
                i,
                e
            ))
        })?;
    }
    Ok(())
}

/// Rows of a flat array above which its values are validated on all cores, in slices of at
/// least this many rows: UTF-8 checks of a national job's 40 M claims cost ~0.3 s on one core.
const VALIDATE_SLICE_ROWS: usize = 1 << 20;

/// Validate one node of an array tree (not its children). A large flat array is first checked
/// whole for its buffers' sizes, then its values (offsets, UTF-8, views, nulls) slice by slice
/// on all cores: the slices cover every row, and each slice's check reads only its own values.
fn validate_node(data: &ArrayData) -> std::result::Result<(), ArrowError> {
    if data.len() < 2 * VALIDATE_SLICE_ROWS || !data.child_data().is_empty() {
        return data.validate_data();
    }
    data.validate()?;
    let slices = data.len().div_ceil(VALIDATE_SLICE_ROWS);
    (0..slices).into_par_iter().try_for_each(|i| {
        let start = i * VALIDATE_SLICE_ROWS;
        let len = VALIDATE_SLICE_ROWS.min(data.len() - start);
        // Each worker keeps its own panics quiet and refused, as the calling thread does.
        quietly(|| data.slice(start, len).validate_data())
            .unwrap_or_else(|panic| Err(ArrowError::InvalidArgumentError(panic_message(&*panic))))
    })
}

/// The bytes of an array's own buffers and its children's.
fn held_bytes(data: &ArrayData) -> u64 {
    let own: usize = data.buffers().iter().map(|b| b.len()).sum();
    own as u64 + data.child_data().iter().map(held_bytes).sum::<u64>()
}

/// Validate one array in full before anything reads it: buffer sizes, offsets (in bounds and
/// monotonic), UTF-8 of every string, dictionary keys within their dictionary, views within
/// their buffers (with valid UTF-8 and matching prefixes), null counts, and the same for every
/// child (a dictionary's values included). `what` names the array in the error.
///
/// A view array may refer to at most [`MAX_VIEW_BYTES`] of strings, or [`VIEW_FANOUT`] times
/// the bytes of its buffers where that is more, read from the views' length fields before any
/// string is: validation reads every string a view refers to.
///
/// Arrow's validation asserts (panics) on some malformed buffers rather than returning an error
/// (a buffer whose length is not a whole number of its values): that is refused as invalid too.
///
/// With [`Strings::Bytes`], strings are checked as the bytes they are read as, not as UTF-8.
pub fn validate_array(data: &ArrayData, what: &str, strings: Strings) -> Result<()> {
    validate_with(data, what, strings, &mut Validated::new())
}

/// What validation takes a string to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strings {
    /// Text: every string must be valid UTF-8. For data the core keeps or hands back as text (a
    /// registry table, decoded claims), and for anything from outside the process.
    Text,
    /// Bytes: offsets, views and dictionary keys are checked against their buffers (all that
    /// memory safety needs) but not the bytes themselves. Only for arrays from this process that
    /// the core reads as bytes and never as text: claims and keys, which the kernels read
    /// through `query::TextColumn` as binary. The UTF-8 check was a quarter of `verify`'s time.
    Bytes,
}

/// The binary twin of a string type, or of a dictionary of one: the same buffers, read as bytes.
fn binary_twin(t: &DataType) -> Option<DataType> {
    Some(match t {
        DataType::Utf8 => DataType::Binary,
        DataType::LargeUtf8 => DataType::LargeBinary,
        DataType::Utf8View => DataType::BinaryView,
        DataType::Dictionary(k, v) => DataType::Dictionary(k.clone(), Box::new(binary_twin(v)?)),
        _ => return None,
    })
}

/// `data` read as its binary twin (see [`binary_twin`]), or as it is where it has none (numbers,
/// and nested types, which the contract refuses anyway and which are then checked in full).
pub fn as_bytes(data: &ArrayData) -> ArrayData {
    let Some(twin) = binary_twin(data.data_type()) else {
        return data.clone();
    };
    let children = data.child_data().iter().map(as_bytes).collect();
    let builder = data
        .clone()
        .into_builder()
        .data_type(twin)
        .child_data(children);
    // SAFETY: a string type and its binary twin have the same buffers and layout, and binary
    // asks less of them; the result is only validated, and validation checks everything else.
    unsafe { builder.build_unchecked() }
}

fn validate_with(
    data: &ArrayData,
    what: &str,
    strings: Strings,
    seen: &mut Validated,
) -> Result<()> {
    let invalid =
        |why: String| JukiError::InvalidInput(format!("{what}: invalid Arrow data: {why}"));
    let bytes;
    let data = match strings {
        Strings::Text => data,
        Strings::Bytes => {
            bytes = as_bytes(data);
            &bytes
        }
    };
    let referred = view_bytes(data, seen);
    if referred > MAX_VIEW_BYTES {
        let cap = MAX_VIEW_BYTES.max(held_bytes(data).saturating_mul(VIEW_FANOUT));
        if referred > cap {
            return Err(JukiError::InvalidInput(format!(
                "{what} refers to {} bytes of strings, at most {}",
                thousands(referred),
                thousands(cap)
            )));
        }
    }
    match quietly(|| validate_tree(data, seen)) {
        Ok(checked) => checked.map_err(|e| invalid(e.to_string())),
        Err(panic) => Err(invalid(panic_message(panic.as_ref()))),
    }
}

/// How an error names column `name` of a table called `table` ("claims", "registry table").
pub fn column_what(table: &str, name: &str) -> String {
    format!("{table} column '{}'", echo(name.as_bytes()))
}

/// Validate every column of `batch` (see [`validate_array`]); the error names the column.
pub fn validate_batch(batch: &RecordBatch, table: &str, strings: Strings) -> Result<()> {
    validate_batches(std::slice::from_ref(batch), table, strings)
}

/// Validate every column of every batch (see [`validate_array`]); a dictionary that batches
/// share is validated once. The error names the column.
pub fn validate_batches(batches: &[RecordBatch], table: &str, strings: Strings) -> Result<()> {
    let mut seen = Validated::new();
    for batch in batches {
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
            validate_with(
                &column.to_data(),
                &column_what(table, field.name()),
                strings,
                &mut seen,
            )?;
        }
    }
    Ok(())
}

/// A stream's decoded-size budget, charged as each message's buffers are declared.
struct Budget {
    max_rows: u64,
    max_bytes: u64,
    rows: u64,
    bytes: u64,
    /// Bytes of strings that the stream's view columns refer to, over all its batches.
    views: u64,
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

impl Budget {
    /// Charge the `n` bytes of strings that the views of column `name` in one batch refer to:
    /// at most `max_bytes` per column and batch, and over the whole stream.
    fn views(&mut self, name: &str, n: u64) -> Result<()> {
        if n > self.max_bytes {
            return Err(JukiError::InvalidInput(format!(
                "{} refers to {} bytes of strings, at most {}",
                column_what(STREAM, name),
                thousands(n),
                thousands(self.max_bytes)
            )));
        }
        self.views = self.views.saturating_add(n);
        if self.views > self.max_bytes {
            return Err(JukiError::InvalidInput(format!(
                "{STREAM} stream's view columns refer to {} bytes of strings, at most {}",
                thousands(self.views),
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

/// One batch's field nodes and buffers, taken in the order arrow-ipc's decoder takes them
/// (`RecordBatchDecoder::create_array`): the schema's field tree in pre-order, each field's node,
/// then its buffers (its validity first), then its children's. Only the lengths that view
/// columns' views declare are read, straight from the body, so what the decoder would read to
/// validate them is known before it runs.
struct Walk<'a> {
    /// Each field node's length, in order.
    nodes: std::vec::IntoIter<i64>,
    /// Each buffer's (offset, length) in the body, in order.
    buffers: std::vec::IntoIter<(i64, i64)>,
    /// The number of data buffers of each view column, in order.
    variadic: std::vec::IntoIter<i64>,
    body: &'a [u8],
    codec: Option<CompressionType>,
    version: MetadataVersion,
}

impl<'a> Walk<'a> {
    fn new(
        batch: arrow_ipc::RecordBatch<'_>,
        body: &'a [u8],
        version: MetadataVersion,
    ) -> Result<Walk<'a>> {
        let nodes = batch
            .nodes()
            .ok_or_else(|| not_ipc("a batch without field nodes"))?;
        let buffers = batch
            .buffers()
            .ok_or_else(|| not_ipc("a batch without buffers"))?;
        Ok(Walk {
            nodes: nodes
                .iter()
                .map(|n| n.length())
                .collect::<Vec<_>>()
                .into_iter(),
            buffers: buffers
                .iter()
                .map(|b| (b.offset(), b.length()))
                .collect::<Vec<_>>()
                .into_iter(),
            variadic: batch
                .variadicBufferCounts()
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .into_iter(),
            body,
            codec: batch.compression().map(|c| c.codec()),
            version,
        })
    }

    fn node(&mut self) -> Result<i64> {
        self.nodes
            .next()
            .ok_or_else(|| not_ipc("a batch has fewer field nodes than its schema needs"))
    }

    fn buffer(&mut self) -> Result<(i64, i64)> {
        self.buffers
            .next()
            .ok_or_else(|| not_ipc("a batch has fewer buffers than its schema needs"))
    }

    fn skip(&mut self, buffers: usize) -> Result<()> {
        for _ in 0..buffers {
            self.buffer()?;
        }
        Ok(())
    }

    /// Walk one field of type `t` (and its children): the bytes of strings its views refer to.
    fn field(&mut self, t: &DataType) -> Result<u64> {
        use DataType::*;
        Ok(match t {
            Utf8 | Binary | LargeBinary | LargeUtf8 => {
                self.node()?;
                self.skip(3)?;
                0
            }
            Utf8View | BinaryView => {
                let count = self
                    .variadic
                    .next()
                    .ok_or_else(|| not_ipc(format!("no variadic buffer count for a {t} column")))?;
                let data = usize::try_from(count)
                    .ok()
                    .filter(|&c| c <= self.buffers.len().saturating_sub(2))
                    .ok_or_else(|| {
                        not_ipc(format!("a {t} column declares {count} data buffers"))
                    })?;
                let rows = self.node()?;
                self.skip(1)?;
                let views = self.buffer()?;
                self.skip(data)?;
                self.view_bytes(views, rows)?
            }
            FixedSizeBinary(_) => {
                self.node()?;
                self.skip(2)?;
                0
            }
            List(f) | LargeList(f) | Map(f, _) => {
                self.node()?;
                self.skip(2)?;
                self.field(f.data_type())?
            }
            ListView(f) | LargeListView(f) => {
                self.node()?;
                self.skip(3)?;
                self.field(f.data_type())?
            }
            FixedSizeList(f, _) => {
                self.node()?;
                self.skip(1)?;
                self.field(f.data_type())?
            }
            Struct(fields) => {
                self.node()?;
                self.skip(1)?;
                let mut sum = 0u64;
                for f in fields {
                    sum = sum.saturating_add(self.field(f.data_type())?);
                }
                sum
            }
            RunEndEncoded(run_ends, values) => {
                self.node()?;
                let ends = self.field(run_ends.data_type())?;
                ends.saturating_add(self.field(values.data_type())?)
            }
            // A dictionary's values come in their own dictionary batch.
            Dictionary(..) => {
                self.node()?;
                self.skip(2)?;
                0
            }
            Union(fields, mode) => {
                self.node()?;
                if self.version < MetadataVersion::V5 {
                    self.skip(1)?;
                }
                self.skip(1)?;
                if *mode == UnionMode::Dense {
                    self.skip(1)?;
                }
                let mut sum = 0u64;
                for (_, f) in fields.iter() {
                    sum = sum.saturating_add(self.field(f.data_type())?);
                }
                sum
            }
            Null => {
                self.node()?;
                0
            }
            _ => {
                self.node()?;
                self.skip(2)?;
                0
            }
        })
    }

    /// The bytes of strings that the first `rows` views of the views buffer at `(offset,
    /// length)` refer to: the sum of the lengths of the out-of-line views (longer than 12
    /// bytes), which validation reads. A compressed views buffer is decompressed here first; its
    /// declared size is within the caps already ([`check_batch_header`]).
    fn view_bytes(&self, (offset, length): (i64, i64), rows: i64) -> Result<u64> {
        let raw = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(length).ok())
            .and_then(|(o, l)| self.body.get(o..o.checked_add(l)?))
            .ok_or_else(|| not_ipc("a views buffer lies outside its message body"))?;
        let decoded;
        let views: &[u8] = match self.codec {
            Some(codec) if !raw.is_empty() => {
                let (prefix, compressed) = raw
                    .split_first_chunk::<8>()
                    .ok_or_else(|| not_ipc("a compressed buffer has no length prefix"))?;
                match i64::from_le_bytes(*prefix) {
                    -1 => compressed,
                    0 => &[],
                    n => {
                        decoded = decompress(codec, compressed, n)?;
                        &decoded
                    }
                }
            }
            _ => raw,
        };
        let rows = usize::try_from(rows).unwrap_or(0);
        Ok(views
            .chunks_exact(16)
            .take(rows)
            .map(|v| u32::from_le_bytes(v[..4].try_into().expect("4 bytes")) as u64)
            .filter(|&len| len > 12)
            .sum())
    }
}

/// Decompress one buffer of `declared` bytes (the caller has checked that size against its
/// caps) as arrow-ipc does; the decoder refuses a buffer that does not decode to its size.
fn decompress(codec: CompressionType, compressed: &[u8], declared: i64) -> Result<Vec<u8>> {
    let size = usize::try_from(declared)
        .map_err(|_| not_ipc(format!("a compressed buffer declares {declared} bytes")))?;
    let bad = |e: std::io::Error| not_ipc(format!("a compressed views buffer: {e}"));
    let out = match codec {
        CompressionType::LZ4_FRAME => {
            let mut out = Vec::with_capacity(size);
            lz4_flex::frame::FrameDecoder::new(compressed)
                .take(size as u64)
                .read_to_end(&mut out)
                .map_err(bad)?;
            out
        }
        CompressionType::ZSTD => zstd::bulk::decompress(compressed, size).map_err(bad)?,
        other => return Err(not_ipc(format!("unknown compression codec {other:?}"))),
    };
    if out.len() != size {
        return Err(not_ipc(format!(
            "a compressed views buffer decodes to {} bytes, not the {size} it declares",
            out.len()
        )));
    }
    Ok(out)
}

/// Walk the views of one batch (a record batch, or with `dictionary` the dictionary batch of
/// that id) and charge what its view columns refer to, per column, to `budget`.
fn check_batch_views(
    schema: &Schema,
    batch: arrow_ipc::RecordBatch<'_>,
    body: &[u8],
    version: MetadataVersion,
    dictionary: Option<i64>,
    budget: &mut Budget,
) -> Result<()> {
    let mut walk = Walk::new(batch, body, version)?;
    match dictionary {
        None => {
            for field in schema.fields() {
                let n = walk.field(field.data_type())?;
                budget.views(field.name(), n)?;
            }
        }
        Some(id) => {
            // The decoder reads a dictionary batch as a batch of one column, of the values type
            // of the first field with its id.
            #[allow(deprecated)]
            let fields = schema.fields_with_dict_id(id);
            let Some(field) = fields.first() else {
                return Err(not_ipc(format!("dictionary id {id} is not in the schema")));
            };
            let DataType::Dictionary(_, values) = field.data_type() else {
                return Err(not_ipc(format!("dictionary id {id} is not a dictionary's")));
            };
            let n = walk.field(values)?;
            budget.views(field.name(), n)?;
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
    let mut schema = Schema::empty();
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
                let fb = message
                    .header_as_schema()
                    .ok_or_else(|| not_ipc("a schema message without its schema"))?;
                schema = try_fb_to_schema(fb).map_err(not_ipc)?;
            }
            MessageHeader::DictionaryBatch if schemas == 1 => {
                let dict = message
                    .header_as_dictionary_batch()
                    .ok_or_else(|| not_ipc("a dictionary batch without its header"))?;
                let data = dict
                    .data()
                    .ok_or_else(|| not_ipc("a dictionary batch without data"))?;
                // A delta is concatenated onto the dictionary so far: a stream of small deltas
                // onto a large dictionary would copy it once per delta.
                if dict.isDelta() {
                    return Err(not_ipc("a delta dictionary batch (not supported)"));
                }
                check_batch_header(data, body, true, budget)?;
                let version = message.version();
                check_batch_views(&schema, data, body, version, Some(dict.id()), budget)?;
            }
            MessageHeader::RecordBatch if schemas == 1 => {
                let batch = message
                    .header_as_record_batch()
                    .ok_or_else(|| not_ipc("a record batch without its header"))?;
                check_batch_header(batch, body, false, budget)?;
                check_batch_views(&schema, batch, body, message.version(), None, budget)?;
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
/// any body is decoded. A string view column may also refer to at most `max_bytes` bytes of
/// strings per batch, and all view columns together at most `max_bytes` over the stream, read
/// from the views' lengths before any body is decoded too, since the decoder validates each view
/// by reading the string it refers to. The decoder then validates every array in full as it
/// builds it.
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
        views: 0,
    };
    // The headers are checked first; what remains malformed in a body (a buffer too short for
    // its type, say) fails the decoder, and arrow's decoder asserts on some such buffers rather
    // than returning an error: a panic here is the stream's fault, refused like any other.
    let decoded = quietly(|| {
        check_stream(payload, &mut budget)?;
        let reader = StreamReader::try_new(Cursor::new(payload), None).map_err(not_ipc)?;
        let schema = reader.schema();
        let batches = reader
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(not_ipc)?;
        Ok::<_, JukiError>((schema, batches))
    });
    let (schema, batches) = match decoded {
        Ok(decoded) => decoded?,
        Err(panic) => {
            return Err(not_ipc(format!(
                "the decoder refused it: {}",
                panic_message(panic.as_ref())
            )))
        }
    };
    // No second pass: the decoder validated every array in full as it built it (arrow's
    // `ArrayDataBuilder::build`, children first, dictionaries in their own batches), and the
    // contract's types are checked where the columns are used.
    Ok((schema, batches))
}

/// The bytes that the out-of-line views of a view column (and of its children) refer to, read
/// from the views' length fields only; a dictionary's values in `seen` (validated already, and
/// not read again) count nothing.
fn view_bytes(data: &ArrayData, seen: &Validated) -> u64 {
    let own = match data.data_type() {
        DataType::Utf8View | DataType::BinaryView => data
            .buffers()
            .first()
            .map(|views| {
                let start = data.offset().saturating_mul(16);
                let end = start
                    .saturating_add(data.len().saturating_mul(16))
                    .min(views.len());
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
    let dictionary = matches!(data.data_type(), DataType::Dictionary(..));
    data.child_data()
        .iter()
        .filter(|c| !(dictionary && c.child_data().is_empty() && seen.contains(&Identity::of(c))))
        .map(|c| view_bytes(c, seen))
        .fold(own, u64::saturating_add)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, OnceLock};

    use arrow_array::types::{Int32Type, Int8Type, UInt32Type};
    use arrow_array::{
        ArrayRef, BinaryArray, Date32Array, DictionaryArray, Float64Array, Int64Array,
        LargeStringArray, NullArray, StringArray, StringViewArray, UInt64Array, UInt8Array,
    };
    use arrow_buffer::{Buffer, OffsetBuffer, ScalarBuffer};
    use arrow_schema::{Field, Schema};
    use proptest::prelude::*;

    use super::*;
    use crate::ids::IdKind;
    use crate::query::{self, ExactMatch, CLAIMABLE};
    use crate::storage::{Column, RegistryData};

    #[test]
    fn thousands_separates() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(123_456_789), "123,456,789");
    }

    /// `rows` views of one `len`-byte string, as one IPC stream (compressed with `codec`).
    fn views_stream(len: usize, rows: usize, codec: Option<CompressionType>) -> Vec<u8> {
        let value = vec![b'9'; len];
        let mut view = [0u8; 16];
        view[..4].copy_from_slice(&(len as u32).to_le_bytes());
        view[4..8].copy_from_slice(&value[..4]);
        let views: Vec<u128> = vec![u128::from_le_bytes(view); rows];
        let array =
            StringViewArray::try_new(views.into(), vec![Buffer::from_vec(value)], None).unwrap();
        let batch =
            RecordBatch::try_from_iter([("family_name", Arc::new(array) as ArrayRef)]).unwrap();
        let options = arrow_ipc::writer::IpcWriteOptions::default()
            .try_with_compression(codec)
            .unwrap();
        let mut out = Vec::new();
        let mut writer = arrow_ipc::writer::StreamWriter::try_new_with_options(
            &mut out,
            &batch.schema(),
            options,
        )
        .unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        drop(writer);
        out
    }

    #[test]
    fn views_referring_to_more_than_the_cap_are_refused_before_decoding() {
        for codec in [
            None,
            Some(CompressionType::ZSTD),
            Some(CompressionType::LZ4_FRAME),
        ] {
            // 20,000 views of one 64 KiB string: 1.3 GB for the decoder to validate.
            let payload = views_stream(64 << 10, 20_000, codec);
            let mut budget = Budget {
                max_rows: 1 << 20,
                max_bytes: 16 << 20,
                rows: 0,
                bytes: 0,
                views: 0,
            };
            let err = check_stream(&payload, &mut budget).unwrap_err();
            assert_eq!(
                err.to_string(),
                "claims column 'family_name' refers to 1,310,720,000 bytes of strings, at most \
                 16,777,216",
                "{codec:?}"
            );
            // Within the cap, the same layout decodes.
            let payload = views_stream(64 << 10, 100, codec);
            let (_, batches) = read_ipc_stream(&payload, 1 << 20, 16 << 20).unwrap();
            assert_eq!(batches[0].num_rows(), 100);
        }
    }

    #[test]
    fn a_caught_panic_is_quiet_and_the_flag_restored() {
        let out = quietly(|| quietly(|| panic!("boundary")).is_err());
        assert!(matches!(out, Ok(true)));
        assert!(!QUIET.with(Cell::get));
    }

    const RESIDENTS: u64 = 8;
    const NAMES: [&str; 4] = ["佐藤", "鈴木", "ワタナベ", "abcdefghijklmnopqrstu"];

    fn my_number(i: u64) -> String {
        let kind = IdKind::MyNumber;
        kind.format(kind.with_check_digit(10_000_000_000 + i))
    }

    /// Eight residents, built through the same import as `Registry.from_arrow`.
    fn registry() -> &'static RegistryData {
        static REGISTRY: OnceLock<RegistryData> = OnceLock::new();
        REGISTRY.get_or_init(|| {
            let n = RESIDENTS;
            let rc = IdKind::ResidentCode;
            let muni = IdKind::LocalGovernment;
            let text = |f: &dyn Fn(u64) -> String| -> ArrayRef {
                Arc::new(StringArray::from_iter_values((0..n).map(f)))
            };
            let name = |i: u64| NAMES[i as usize % NAMES.len()].to_string();
            let batch = RecordBatch::try_from_iter([
                (
                    "resident_code",
                    text(&|i| rc.format(rc.with_check_digit(i + 1))),
                ),
                ("my_number", text(&my_number)),
                ("family_name", text(&name)),
                ("family_name_kana", text(&name)),
                ("given_name", text(&|i| name(i + 1))),
                ("given_name_kana", text(&|i| name(i + 2))),
                (
                    "birth_date",
                    Arc::new(Date32Array::from_iter_values((0..n).map(|i| i as i32))),
                ),
                (
                    "sex",
                    Arc::new(UInt8Array::from_iter_values(
                        (0..n).map(|i| 1 + i as u8 % 2),
                    )),
                ),
                (
                    "municipality_code",
                    text(&|_| muni.format(muni.with_check_digit(16201))),
                ),
            ])
            .unwrap();
            crate::import::from_batch(&batch).unwrap()
        })
    }

    /// How a generated column is laid out, valid or broken on purpose.
    #[derive(Debug, Clone, Copy)]
    enum Layout {
        Utf8,
        LargeUtf8,
        View,
        DictInt8,
        DictUInt32,
        Int64,
        UInt64,
        UInt8,
        Date32,
        Null,
        Float64,
        Binary,
        // Invalid data, built with unchecked constructors.
        OffsetsPastEnd,
        OffsetsBackwards,
        NonUtf8,
        DictKeyOutOfRange,
        ViewBadBuffer,
        ViewPastEnd,
        ViewBadPrefix,
        ViewPadding,
        ViewNonUtf8,
    }

    const LAYOUTS: [Layout; 21] = [
        Layout::Utf8,
        Layout::LargeUtf8,
        Layout::View,
        Layout::DictInt8,
        Layout::DictUInt32,
        Layout::Int64,
        Layout::UInt64,
        Layout::UInt8,
        Layout::Date32,
        Layout::Null,
        Layout::Float64,
        Layout::Binary,
        Layout::OffsetsPastEnd,
        Layout::OffsetsBackwards,
        Layout::NonUtf8,
        Layout::DictKeyOutOfRange,
        Layout::ViewBadBuffer,
        Layout::ViewPastEnd,
        Layout::ViewBadPrefix,
        Layout::ViewPadding,
        Layout::ViewNonUtf8,
    ];

    impl Layout {
        fn is_valid(self) -> bool {
            (self as usize) < (Layout::OffsetsPastEnd as usize)
        }

        /// Whether validation taking strings as `strings` accepts this layout: read as bytes,
        /// strings that are not UTF-8 are sound.
        fn is_valid_as(self, strings: Strings) -> bool {
            self.is_valid()
                || strings == Strings::Bytes
                    && matches!(self, Layout::NonUtf8 | Layout::ViewNonUtf8)
        }
    }

    /// One generated value: a resident's key, a name, a number or arbitrary text (spelled from
    /// its seed). Plain data (`Copy`), so filling a column copies it.
    #[derive(Debug, Clone, Copy)]
    enum Value {
        Null,
        Key(u64),
        Name(usize),
        Int(i64),
        Text(u64),
    }

    /// Up to 15 characters, some multi-byte, some NUL, spelled from `seed`.
    fn spelled(seed: u64) -> String {
        const CHARS: [char; 8] = ['0', '1', '9', 'a', '佐', 'ー', ' ', '\u{0}'];
        (0..seed % 16)
            .map(|i| CHARS[(seed >> (4 + 3 * i)) as usize % CHARS.len()])
            .collect()
    }

    impl Value {
        fn text(&self) -> Option<String> {
            match self {
                Value::Null => None,
                Value::Key(i) => Some(my_number(*i)),
                Value::Name(i) => Some(NAMES[*i % NAMES.len()].to_string()),
                Value::Int(v) => Some(v.to_string()),
                Value::Text(seed) => Some(spelled(*seed)),
            }
        }

        fn int(&self) -> Option<i64> {
            match self {
                Value::Null => None,
                Value::Key(i) => Some(my_number(*i).parse().unwrap()),
                Value::Name(i) => Some(*i as i64),
                Value::Int(v) => Some(*v),
                Value::Text(seed) => Some(*seed as i64),
            }
        }
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            (0..RESIDENTS + 2).prop_map(Value::Key),
            (0..NAMES.len()).prop_map(Value::Name),
            any::<i64>().prop_map(Value::Int),
            any::<u64>().prop_map(Value::Text),
        ]
    }

    fn texts(values: &[Value]) -> Vec<Option<String>> {
        values.iter().map(Value::text).collect()
    }

    /// A StringArray's parts, with row `at` made non-empty (so a corruption has bytes to hit).
    fn utf8_parts(values: &[Value], at: usize) -> (Vec<i32>, Vec<u8>) {
        let mut offsets = vec![0i32];
        let mut bytes = Vec::new();
        for (i, v) in texts(values).into_iter().enumerate() {
            let v = v.unwrap_or_default();
            bytes.extend(
                if i == at && v.is_empty() {
                    "x"
                } else {
                    v.as_str()
                }
                .bytes(),
            );
            offsets.push(bytes.len() as i32);
        }
        (offsets, bytes)
    }

    fn views_of(values: &[Value], at: usize, long: bool) -> StringViewArray {
        let mut t = texts(values);
        t[at] = Some(if long { NAMES[3] } else { "ab" }.to_string());
        StringViewArray::from(t)
    }

    /// `views` with view `at` rewritten by `edit`, unchecked.
    fn edit_view(views: StringViewArray, at: usize, edit: impl Fn(u128) -> u128) -> ArrayRef {
        let (v, buffers, nulls) = views.into_parts();
        let mut raw: Vec<u128> = v.to_vec();
        raw[at] = edit(raw[at]);
        // SAFETY: deliberately invalid views; only `validate_array` reads them, and it checks
        // every view against its buffers before reading one.
        Arc::new(unsafe { StringViewArray::new_unchecked(raw.into(), buffers, nulls) })
    }

    fn column(layout: Layout, values: &[Value], at: usize) -> ArrayRef {
        let n = values.len();
        let ints = || values.iter().map(Value::int);
        match layout {
            Layout::Utf8 => Arc::new(StringArray::from(texts(values))),
            Layout::LargeUtf8 => Arc::new(LargeStringArray::from(texts(values))),
            Layout::View => Arc::new(StringViewArray::from(texts(values))),
            Layout::DictInt8 => Arc::new(
                texts(values)
                    .iter()
                    .map(|v| v.as_deref())
                    .collect::<DictionaryArray<Int8Type>>(),
            ),
            Layout::DictUInt32 => Arc::new(
                texts(values)
                    .iter()
                    .map(|v| v.as_deref())
                    .collect::<DictionaryArray<UInt32Type>>(),
            ),
            Layout::Int64 => Arc::new(Int64Array::from_iter(ints())),
            Layout::UInt64 => Arc::new(UInt64Array::from_iter(ints().map(|v| v.map(|v| v as u64)))),
            Layout::UInt8 => Arc::new(UInt8Array::from_iter(ints().map(|v| v.map(|v| v as u8)))),
            Layout::Date32 => Arc::new(Date32Array::from_iter(ints().map(|v| v.map(|v| v as i32)))),
            Layout::Null => Arc::new(NullArray::new(n)),
            Layout::Float64 => {
                Arc::new(Float64Array::from_iter(ints().map(|v| v.map(|v| v as f64))))
            }
            Layout::Binary => Arc::new(BinaryArray::from_iter(texts(values))),
            Layout::OffsetsPastEnd | Layout::OffsetsBackwards | Layout::NonUtf8 => {
                let (mut offsets, mut bytes) = utf8_parts(values, at);
                match layout {
                    Layout::OffsetsPastEnd => {
                        for o in &mut offsets[at + 1..] {
                            *o += 1 + bytes.len() as i32;
                        }
                    }
                    Layout::OffsetsBackwards => offsets[at + 1] = offsets[at] - 1,
                    _ => bytes[offsets[at] as usize] = 0xff,
                }
                // SAFETY: deliberately invalid offsets or bytes, built only for
                // `validate_array`, which checks offsets and UTF-8 before reading a value.
                Arc::new(unsafe {
                    StringArray::new_unchecked(
                        OffsetBuffer::new_unchecked(ScalarBuffer::from(offsets)),
                        Buffer::from_vec(bytes),
                        None,
                    )
                })
            }
            Layout::DictKeyOutOfRange => {
                let dict = StringArray::from(vec!["佐藤", "鈴木"]);
                let keys: Vec<i32> = (0..n)
                    .map(|i| if i == at { 2 } else { i as i32 % 2 })
                    .collect();
                // SAFETY: a deliberately out-of-range key, for `validate_array`, which checks
                // every key against the dictionary before any is used.
                Arc::new(unsafe {
                    DictionaryArray::<Int32Type>::new_unchecked(keys.into(), Arc::new(dict))
                })
            }
            Layout::ViewBadBuffer => edit_view(views_of(values, at, true), at, |v| v | 7 << 64),
            Layout::ViewPastEnd => {
                edit_view(views_of(values, at, true), at, |v| v | (1u128 << 30) << 96)
            }
            Layout::ViewBadPrefix => edit_view(views_of(values, at, true), at, |v| v ^ 1 << 32),
            Layout::ViewPadding => edit_view(views_of(values, at, false), at, |v| v | 1 << 120),
            Layout::ViewNonUtf8 => edit_view(views_of(values, at, false), at, |v| v | 0xff << 32),
        }
    }

    /// Whether verify takes a valid column of `layout` as claimed column `field` (or the key).
    fn contract_accepts(field: Option<Column>, layout: Layout) -> bool {
        // The layouts whose strings are not UTF-8 have string types: they reach verify only
        // when validated as bytes.
        let text = matches!(
            layout,
            Layout::Utf8
                | Layout::LargeUtf8
                | Layout::View
                | Layout::DictInt8
                | Layout::DictUInt32
                | Layout::NonUtf8
                | Layout::ViewNonUtf8
        );
        let integer = matches!(layout, Layout::Int64 | Layout::UInt64 | Layout::UInt8);
        match field {
            None => text || integer,
            Some(Column::BirthDate) => matches!(layout, Layout::Date32 | Layout::Null),
            Some(Column::Sex) => integer || matches!(layout, Layout::Null),
            Some(_) => text || matches!(layout, Layout::Null),
        }
    }

    fn claim() -> impl Strategy<Value = (usize, usize, Vec<Value>)> {
        (
            0..LAYOUTS.len(),
            0..CLAIMABLE.len(),
            prop::collection::vec(value(), 1..40),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Arbitrary claims, valid or not: invalid data is refused as `InvalidInput` naming the
        /// column, before verify reads it; valid data of the contract's types is verified (and
        /// of other types refused), never with a panic.
        #[test]
        fn the_boundary_refuses_invalid_arrays_and_verifies_valid_ones(
            key_layout in 0..LAYOUTS.len(),
            keys in prop::collection::vec(value(), 1..40),
            claims in prop::collection::vec(claim(), 0..3),
            at in any::<prop::sample::Index>(),
            disclose in prop::collection::vec(0..Column::ALL.len(), 0..4),
            strings in prop_oneof![Just(Strings::Text), Just(Strings::Bytes)],
        ) {
            let n = keys.len();
            let key_layout = LAYOUTS[key_layout];
            let mut fields = vec![Field::new("my_number", DataType::Utf8, true)];
            let mut columns = vec![column(key_layout, &keys, at.index(n))];
            let mut layouts = vec![(None, key_layout)];
            for (layout, field, values) in claims {
                let field = CLAIMABLE[field];
                if layouts.iter().any(|(f, _)| *f == Some(field)) {
                    continue;
                }
                let mut values = values;
                values.resize(n, Value::Null);
                let layout = LAYOUTS[layout];
                fields.push(Field::new(field.name(), DataType::Utf8, true));
                columns.push(column(layout, &values, at.index(n)));
                layouts.push((Some(field), layout));
            }
            let fields: Vec<Field> = fields
                .iter()
                .zip(&columns)
                .map(|(f, c)| f.clone().with_data_type(c.data_type().clone()))
                .collect();
            let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
            let disclose: Vec<Column> = disclose.into_iter().map(|c| Column::ALL[c]).collect();

            match validate_batch(&batch, "claims", strings) {
                Err(JukiError::InvalidInput(m)) => {
                    prop_assert!(m.contains(": invalid Arrow data: "), "{}", m);
                    let (bad, _) = layouts.iter().find(|(_, l)| !l.is_valid_as(strings)).unwrap();
                    let name = bad.map_or("my_number", |c| c.name());
                    prop_assert!(
                        layouts.iter().any(|(f, l)| !l.is_valid_as(strings) && m.contains(&format!(
                            "claims column '{}'",
                            f.map_or("my_number", |c| c.name())
                        ))),
                        "{} (first invalid: {})", m, name
                    );
                }
                Err(other) => prop_assert!(false, "{:?}", other),
                Ok(()) => {
                    prop_assert!(layouts.iter().all(|(_, l)| l.is_valid_as(strings)), "{:?}", layouts);
                    let data = registry();
                    let accepted = layouts.iter().all(|&(f, l)| contract_accepts(f, l));
                    let out = query::verify(data, None, &batch, IdKind::MyNumber, &ExactMatch, None, 0, &disclose);
                    match out {
                        Ok(out) => {
                            prop_assert!(accepted, "{:?}", layouts);
                            prop_assert_eq!(out.num_rows(), n);
                        }
                        // A sex outside 0..=255 is a claim that cannot match, not an error.
                        Err(JukiError::InvalidInput(m)) => prop_assert!(!accepted, "{}", m),
                        Err(other) => prop_assert!(false, "{:?}", other),
                    }
                    let looked = query::lookup(data, None, batch.column(0).as_ref(), IdKind::MyNumber, &disclose);
                    prop_assert_eq!(looked.is_ok(), contract_accepts(None, key_layout));
                }
            }
        }
    }

    #[test]
    fn every_invalid_layout_is_refused() {
        let values: Vec<Value> = (0..20).map(|i| Value::Name(i % 4)).collect();
        for strings in [Strings::Text, Strings::Bytes] {
            for layout in LAYOUTS.into_iter().filter(|l| !l.is_valid()) {
                for at in [0, 7, 19] {
                    let col = column(layout, &values, at);
                    let checked = validate_array(&col.to_data(), "c", strings);
                    if layout.is_valid_as(strings) {
                        assert!(checked.is_ok(), "{layout:?} at {at}: {checked:?}");
                        continue;
                    }
                    let err = checked.unwrap_err();
                    assert!(
                        matches!(&err, JukiError::InvalidInput(m) if m.starts_with("c: invalid Arrow data: ")),
                        "{layout:?} at {at} as {strings:?}: {err:?}"
                    );
                }
            }
        }
        // Data only raw ArrayData can carry (an array type slices its buffers to size, and
        // panics when they are too short): keys whose buffer is not a whole number of i32s
        // (arrow's validation asserts on these; refused all the same), a values buffer one
        // value short.
        let dict = StringArray::from(vec!["佐藤"]).into_data();
        let ragged = ArrayData::builder(DataType::Dictionary(
            Box::new(DataType::Int32),
            Box::new(DataType::Utf8),
        ))
        .len(2)
        .add_buffer(Buffer::from_vec(vec![0u8; 11]))
        .add_child_data(dict);
        let short_values = ArrayData::builder(DataType::Int64)
            .len(3)
            .add_buffer(Buffer::from_vec(vec![0i64; 2]));
        for data in [ragged, short_values] {
            // SAFETY: deliberately malformed, handed to `validate_array` only.
            let data = unsafe { data.build_unchecked() };
            for strings in [Strings::Text, Strings::Bytes] {
                let err = validate_array(&data, "c", strings).unwrap_err();
                assert!(
                    matches!(&err, JukiError::InvalidInput(m) if m.starts_with("c: invalid")),
                    "{err:?}"
                );
            }
        }
    }
}
