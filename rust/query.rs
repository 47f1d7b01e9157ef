//! Bulk lookup and verification kernels (照会・本人確認).
//!
//! A batch is cut into chunks that the cores share. Each chunk runs its whole pipeline while its
//! rows are hot: parse the keys, probe the index (one miss per key, prefetched ahead), then — for
//! verification — read each found resident's packed [`Person`] (one more miss, prefetched),
//! write the result bits and, when a message-sized batch discloses columns, copy the Person
//! and its [`Place`](crate::storage::Place) (prefetched with it), so disclosing costs one more
//! miss per record rather than one per field. Nothing batch-sized is allocated but the outputs.
//! An invalid key never fails the batch: its row comes back not found, with the reason in the
//! `error` column.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Int64Type, UInt64Type, UInt8Type};
use arrow_array::{
    new_null_array, Array, ArrayRef, BinaryArray, BinaryViewArray, BooleanArray, Date32Array,
    DictionaryArray, Int64Array, LargeBinaryArray, RecordBatch, StringArray, UInt16Array,
    UInt64Array, UInt8Array,
};
use arrow_buffer::{BooleanBuffer, Buffer, NullBuffer};
use arrow_cast::{cast_with_options, CastOptions};
use arrow_schema::{DataType, Field, Schema};
use rayon::prelude::*;

use crate::error::{echo, JukiError, Result};
use crate::history::{group, Dict, Live, Resolved, View};
use crate::ids::{IdKind, Reason};
use crate::index::{HashIndex, INVALID_KEY, NOT_FOUND};
use crate::memory::{filled, prefetch, PARALLEL_MIN};
use crate::normalize::{folds_to, FoldedText, Folding, Level, Matching};
use crate::storage::{inline_key, Column, Person, RegistryData, Resident, Rows, STATUS_VALUES};

/// Rows per chunk: a multiple of 64 (result bits fill whole words), small enough that a chunk's
/// scratch and the lines its probe prefetches stay in L2 until the chunk's check pass reads
/// them. That is a cache line per index slot, per `Person` and per `Place`: 384 KiB at 2 K
/// rows. At 8 K rows (1.5 MiB) the check pass found a third of them evicted and one thread ran
/// the pension job's messages at 3.3 M/s, against 5.3 M/s now (BENCHMARKS.md).
const CHUNK: usize = 1 << 11;
const WORDS: usize = CHUNK / 64;

fn strict_cast(array: &dyn Array, to: &DataType, what: &str) -> Result<ArrayRef> {
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    cast_with_options(array, to, &options)
        .map_err(|e| JukiError::InvalidInput(format!("{what}: {e}")))
}

/// Whether `t` is one of Arrow's string layouts (utf8, large_utf8, utf8_view) or a dictionary
/// of one: the types the contract names for keys and text claims.
pub fn is_text(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, values) => matches!(
            values.as_ref(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ),
        _ => false,
    }
}

/// A type as an error message shows it: a nested type's display repeats its fields' names,
/// which a client chose, so it is cut as [`echo`] cuts a value.
pub fn shown_type(t: &DataType) -> String {
    echo(t.to_string().as_bytes())
}

/// A string column in any of Arrow's string layouts, read in place (no conversion copy) and only
/// as bytes, never as `str`: a column from this process is validated as bytes only (see
/// `wire::Strings::Bytes`), so its strings need not be UTF-8 for the kernels to be sound.
#[derive(Clone)]
pub enum TextColumn {
    /// `Utf8`, as binary.
    Offsets(BinaryArray),
    /// `LargeUtf8`, as large binary.
    Large(LargeBinaryArray),
    /// `Utf8View`, as a binary view.
    View(BinaryViewArray),
}

impl TextColumn {
    /// Wrap a text column (see [`TextColumn::accepts`]); dictionaries and all-null columns are
    /// converted to a binary view.
    pub fn new(array: &dyn Array, what: &str) -> Result<TextColumn> {
        Ok(match array.data_type() {
            DataType::Utf8 => TextColumn::Offsets(array.as_string::<i32>().clone().into()),
            DataType::LargeUtf8 => TextColumn::Large(array.as_string::<i64>().clone().into()),
            DataType::Utf8View => TextColumn::View(array.as_string_view().clone().to_binary_view()),
            // A dictionary is unpacked from its binary twin: arrow's casts of a string
            // dictionary read its values as `str`, which bytes validated only as bytes
            // (`wire::Strings::Bytes`) must never be.
            t if TextColumn::accepts(t) => {
                let twin = arrow_array::make_array(crate::wire::as_bytes(&array.to_data()));
                TextColumn::View(
                    strict_cast(twin.as_ref(), &DataType::BinaryView, what)?
                        .as_binary_view()
                        .clone(),
                )
            }
            other => {
                return Err(JukiError::InvalidInput(format!(
                    "{what} must hold strings (utf8, large_utf8, utf8_view or a dictionary of \
                     them), not {}",
                    shown_type(other)
                )))
            }
        })
    }

    /// Whether a claimed text column of this type is accepted: strings, a dictionary of
    /// strings, or the null type (a column claiming nothing).
    pub fn accepts(t: &DataType) -> bool {
        is_text(t) || t == &DataType::Null
    }

    /// The inline key (see [`inline_key`]) of row `i`, whose bytes `b` (at most 12) the caller
    /// has already read: one unaligned load where the buffer allows, no copy loop.
    #[inline(always)]
    pub fn inline_key_at(&self, i: usize, b: &[u8]) -> u128 {
        debug_assert!(b.len() <= 12);
        let load = |values: &[u8], start: usize| -> Option<u128> {
            let raw = values.get(start..start + 16)?;
            let raw = u128::from_le_bytes(raw.try_into().expect("16 bytes"));
            let mask = (1u128 << (b.len() * 8)) - 1;
            Some(((raw & mask) << 32) | b.len() as u128)
        };
        let fast = match self {
            // A short string's view is its inline key (masked, should a producer not zero the
            // padding).
            TextColumn::View(a) => Some(a.views()[i] & (u128::MAX >> (96 - b.len() * 8))),
            TextColumn::Offsets(a) => load(a.values(), a.value_offsets()[i] as usize),
            TextColumn::Large(a) => load(a.values(), a.value_offsets()[i] as usize),
        };
        fast.unwrap_or_else(|| inline_key(b))
    }

    /// The bytes of row `i`, or None where null.
    #[inline(always)]
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        match self {
            TextColumn::Offsets(a) => (!a.is_null(i)).then(|| a.value(i)),
            TextColumn::Large(a) => (!a.is_null(i)).then(|| a.value(i)),
            TextColumn::View(a) => (!a.is_null(i)).then(|| a.value(i)),
        }
    }
}

/// A key column: strings (any Arrow string layout, or a dictionary of them) must be exactly the
/// identifier's ASCII digits; integers are taken as the identifier's value.
pub enum KeyColumn {
    /// Digit strings.
    Text(TextColumn),
    /// Unsigned integers (numpy's uint64 fast path).
    U64(UInt64Array),
    /// Any other integers, widened.
    I64(Int64Array),
}

impl KeyColumn {
    /// Wrap a key column of `kind`: strings (utf8, large_utf8, utf8_view or a dictionary of
    /// them) or integers of any width.
    pub fn new(kind: IdKind, keys: &dyn Array) -> Result<KeyColumn> {
        Ok(match keys.data_type() {
            t if is_text(t) => KeyColumn::Text(TextColumn::new(keys, kind.name())?),
            DataType::UInt64 => KeyColumn::U64(keys.as_primitive::<UInt64Type>().clone()),
            t if t.is_integer() => KeyColumn::I64(
                strict_cast(keys, &DataType::Int64, kind.name())?
                    .as_primitive::<Int64Type>()
                    .clone(),
            ),
            other => {
                return Err(JukiError::InvalidInput(format!(
                    "{} keys must be strings (utf8, large_utf8, utf8_view or a dictionary of \
                     them) or integers, not {}",
                    kind.name(),
                    shown_type(other)
                )))
            }
        })
    }

    /// The identifier value of row `i`, or the message saying why it is rejected.
    #[inline(always)]
    fn parse(&self, kind: IdKind, i: usize) -> std::result::Result<u64, String> {
        let null = || kind.describe(b"", Reason::Null);
        match self {
            KeyColumn::Text(t) => {
                let b = t.get(i).ok_or_else(null)?;
                kind.parse_bytes(b).map_err(|why| kind.describe(b, why))
            }
            KeyColumn::U64(a) => {
                if a.is_null(i) {
                    return Err(null());
                }
                let v = a.value(i);
                kind.check_value(v)
                    .map_err(|why| kind.describe(v.to_string().as_bytes(), why))
            }
            KeyColumn::I64(a) => {
                if a.is_null(i) {
                    return Err(null());
                }
                let v = a.value(i);
                let checked = match u64::try_from(v) {
                    Ok(u) => kind.check_value(u),
                    Err(_) => Err(Reason::Negative),
                };
                checked.map_err(|why| kind.describe(v.to_string().as_bytes(), why))
            }
        }
    }

    /// Parse rows `start..start + bases.len()` into identifier bases ([`INVALID_KEY`] where
    /// rejected), adding the rejections to `errors` with rows counted from `first_row`.
    fn parse_into(
        &self,
        kind: IdKind,
        start: usize,
        first_row: usize,
        bases: &mut [u64],
        errors: &mut Vec<(usize, String)>,
    ) {
        for (j, b) in bases.iter_mut().enumerate() {
            let i = start + j;
            match self.parse(kind, i) {
                Ok(v) => *b = kind.base_of(v),
                Err(msg) => {
                    *b = INVALID_KEY;
                    errors.push((i, format!("row {}: {msg}", first_row + i)));
                }
            }
        }
    }
}

/// Run `f(first index, chunk, errors)` over `out` in [`CHUNK`]s, on all cores when `out` is
/// large; returns the errors the chunks reported, in row order.
fn for_chunks<T: Send>(
    out: &mut [T],
    f: impl Fn(usize, &mut [T], &mut Vec<(usize, String)>) + Sync,
) -> Vec<(usize, String)> {
    if out.len() <= PARALLEL_MIN {
        let mut errs = Vec::new();
        for (c, chunk) in out.chunks_mut(CHUNK).enumerate() {
            f(c * CHUNK, chunk, &mut errs);
        }
        return errs;
    }
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .map(|(c, chunk)| {
            let mut errs = Vec::new();
            f(c * CHUNK, chunk, &mut errs);
            errs
        })
        .collect::<Vec<_>>()
        .into_iter()
        .flatten()
        .collect()
}

/// Keys parsed for probing: one base per input row ([`INVALID_KEY`] where the key was rejected)
/// and, for rejected rows, the reason.
pub struct ParsedKeys {
    /// Identifier bases, in input order.
    pub bases: Vec<u64>,
    /// (row, message) for each rejected key, in row order.
    pub errors: Vec<(usize, String)>,
}

/// Parse a whole key column (see [`KeyColumn`]) on all cores.
pub fn parse_keys(kind: IdKind, keys: &dyn Array, first_row: usize) -> Result<ParsedKeys> {
    let column = KeyColumn::new(kind, keys)?;
    let mut bases = vec![INVALID_KEY; keys.len()];
    let errors = for_chunks(&mut bases, |start, b, errs| {
        column.parse_into(kind, start, first_row, b, errs)
    });
    Ok(ParsedKeys { bases, errors })
}

/// Parse and probe one chunk: `rows` gets the row of each key at `start..`, or [`NOT_FOUND`];
/// `on_hit` sees each row as soon as the probe finds it.
#[allow(clippy::too_many_arguments)]
fn resolve_chunk(
    keys: &KeyColumn,
    index: &HashIndex,
    start: usize,
    first_row: usize,
    rows: &mut [u32],
    errors: &mut Vec<(usize, String)>,
    on_hit: impl Fn(u32),
    changed: Option<(&View, &mut Vec<(u32, Resolved)>)>,
) {
    let mut bases = [INVALID_KEY; CHUNK];
    let bases = &mut bases[..rows.len()];
    keys.parse_into(index.kind(), start, first_row, bases, errors);
    index.probe_chunk_with(bases, rows, on_hit);
    if let Some((view, out)) = changed {
        view.patch(index.kind(), bases, rows, out);
    }
}

/// The view a kernel must consult, or None where the base alone answers.
fn live<'v, 'a>(view: Option<&'v View<'a>>) -> Option<&'v View<'a>> {
    view.filter(|v| !v.plain())
}

/// Each row's packed resident and identifiers, from the base or from what changes resolved
/// (`changed`: (row index, values), in row order), for disclosing rows a view resolved.
fn read_rows(
    data: &RegistryData,
    rows: &[u32],
    changed: &[(u32, Resolved)],
) -> (Vec<Resident>, Vec<[u64; 2]>) {
    let mut people = vec![Resident::default(); rows.len()];
    let mut ids = vec![[0u64; 2]; rows.len()];
    let persons = data.persons.rows();
    let places = data.persons.places();
    let mut it = changed.iter().peekable();
    for (i, &row) in rows.iter().enumerate() {
        match it.peek() {
            Some((at, r)) if *at as usize == i => {
                people[i] = r.values.resident;
                let base = |col: &arrow_buffer::ScalarBuffer<u64>, group: u16, own: u64| {
                    if r.set & group != 0 {
                        own
                    } else {
                        col[row as usize]
                    }
                };
                ids[i] = [
                    base(
                        &data.cols.resident_code,
                        group::RESIDENT_CODE,
                        r.values.resident_code,
                    ),
                    base(&data.cols.my_number, group::MY_NUMBER, r.values.my_number),
                ];
                it.next();
            }
            _ if row != NOT_FOUND => {
                let r = row as usize;
                people[i] = Resident {
                    person: persons[r],
                    place: places[r],
                };
                ids[i] = [data.cols.resident_code[r], data.cols.my_number[r]];
            }
            _ => {}
        }
    }
    (people, ids)
}

/// The `replaced` column: whether a found row's key is an identifier the person no longer
/// holds (住民票コード変更, 個人番号変更); null where not found.
fn replaced_column(rows: &[u32], changed: &[(u32, Resolved)]) -> ArrayRef {
    let mut bits = vec![false; rows.len()];
    for (i, r) in changed {
        bits[*i as usize] = r.replaced;
    }
    Arc::new(BooleanArray::new(
        BooleanBuffer::from(bits),
        Some(NullBuffer::from(
            RegistryData::found_column(rows).values().clone(),
        )),
    ))
}

fn replaced_field() -> Field {
    Field::new("replaced", DataType::Boolean, true)
}

/// The `error` column: null where the key was accepted.
fn error_column(n: usize, errors: &[(usize, String)]) -> ArrayRef {
    if errors.is_empty() {
        return new_null_array(&DataType::Utf8, n);
    }
    let mut it = errors.iter().peekable();
    let values: StringArray = (0..n)
        .map(|i| match it.peek() {
            Some((row, msg)) if *row == i => {
                it.next();
                Some(msg.as_str())
            }
            _ => None,
        })
        .collect();
    Arc::new(values)
}

fn error_field() -> Field {
    Field::new("error", DataType::Utf8, true)
}

/// Look keys up: one output row per key, in input order, with `found`, `error` and the requested
/// columns (null where not found).
pub fn lookup(
    data: &RegistryData,
    view: Option<&View>,
    keys: &dyn Array,
    by: IdKind,
    columns: &[Column],
) -> Result<RecordBatch> {
    let index = data.index(by)?;
    let column = KeyColumn::new(by, keys)?;
    let view = live(view);
    // Every row is written by the probe, so the buffer needs no initial fill.
    let mut errors = Vec::new();
    let mut changed = Vec::new();
    let rows = filled(keys.len(), |rows: &mut [u32]| {
        if let Some(view) = view {
            // Rows changes touched are resolved chunk by chunk (on all cores when large), and
            // gathered in row order.
            let chunk = |c: usize, r: &mut [u32]| {
                let (mut errs, mut out) = (Vec::new(), Vec::new());
                let on_hit = |row: u32| view.prefetch_changed(row);
                let changed = Some((view, &mut out));
                resolve_chunk(&column, index, c * CHUNK, 0, r, &mut errs, on_hit, changed);
                (errs, out)
            };
            let parts: Vec<_> = if rows.len() <= PARALLEL_MIN {
                rows.chunks_mut(CHUNK)
                    .enumerate()
                    .map(|(c, r)| chunk(c, r))
                    .collect()
            } else {
                rows.par_chunks_mut(CHUNK)
                    .enumerate()
                    .map(|(c, r)| chunk(c, r))
                    .collect()
            };
            for (c, (errs, out)) in parts.into_iter().enumerate() {
                errors.extend(errs);
                changed.extend(out.into_iter().map(|(i, v)| (i + (c * CHUNK) as u32, v)));
            }
        } else {
            errors = for_chunks(rows, |start, r, errs| {
                resolve_chunk(&column, index, start, 0, r, errs, |_| {}, None)
            });
        }
    })?;
    let mut fields = vec![
        Field::new("found", DataType::Boolean, false),
        error_field(),
        replaced_field(),
    ];
    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(RegistryData::found_column(&rows)),
        error_column(rows.len(), &errors),
        replaced_column(&rows, &changed),
    ];
    fields.extend(columns.iter().map(|c| c.field()));
    arrays.extend(disclose(data, view, columns, &rows, &changed)?);
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
}

/// The public `columns` of `rows`: from the base, or where `view` applies changes, through the
/// rows it resolved (`changed`, see [`View::patch`]).
pub fn disclose(
    data: &RegistryData,
    view: Option<&View>,
    columns: &[Column],
    rows: &[u32],
    changed: &[(u32, Resolved)],
) -> Result<Vec<ArrayRef>> {
    match view {
        None => data.columns(columns, Rows::At(rows)),
        Some(view) => {
            let (people, ids) = read_rows(data, rows, changed);
            data.columns(
                columns,
                Rows::Read {
                    rows,
                    people: &people,
                    ids: Some(&ids),
                    live: Some(view.live),
                },
            )
        }
    }
}

/// How a claimed text is compared with the stored one. Exact today; a normalising comparison
/// (異体字, kana folding) implements the same trait.
pub trait TextMatch: Sync {
    /// Whether the claimed value matches the stored value (both UTF-8 bytes).
    fn matches(&self, claimed: &[u8], stored: &[u8]) -> bool;

    /// A shortcut on the two values' inline keys (both values at most 12 bytes long, see
    /// [`inline_key`]): `Some(answer)` where the keys decide, `None` to fall back to `matches`.
    #[inline(always)]
    fn matches_inline(&self, _claimed: u128, _stored: u128) -> Option<bool> {
        None
    }
}

/// Byte-for-byte equality.
pub struct ExactMatch;

impl TextMatch for ExactMatch {
    #[inline(always)]
    fn matches(&self, claimed: &[u8], stored: &[u8]) -> bool {
        // Names are a few bytes: an inline loop beats a call to memcmp.
        claimed.len() == stored.len() && claimed.iter().zip(stored).all(|(a, b)| a == b)
    }

    #[inline(always)]
    fn matches_inline(&self, claimed: u128, stored: u128) -> Option<bool> {
        // A short claim equals the stored value exactly when the inline keys are equal (a stored
        // value over 12 bytes has a different length field).
        Some(claimed == stored)
    }
}

/// The public columns that claims may carry for verification.
pub const CLAIMABLE: [Column; 7] = [
    Column::FamilyName,
    Column::FamilyNameKana,
    Column::GivenName,
    Column::GivenNameKana,
    Column::BirthDate,
    Column::Sex,
    Column::MunicipalityCode,
];

/// A claimed column, prepared for the kernel: what it is compared with in a [`Person`].
enum Check<'a> {
    Text {
        claims: TextColumn,
        key: PersonKey,
        dict: &'a StringArray,
        inline: &'a [u128],
        /// Values changes added to the dictionary (keys from its length on), and whether the
        /// claim is compared with their reading.
        ext: Option<(&'a Live, Dict, bool)>,
        /// Above the exact level: the same dictionary folded at each level up to the one asked
        /// for, tried in order when the exact comparison fails.
        folded: Vec<(Level, &'a StringArray)>,
    },
    Date {
        claims: Date32Array,
    },
    /// A claimed sex per row: the value where it is 0..=255, [`SEX_OUT_OF_RANGE`] where it
    /// is outside (a claim that cannot match).
    Sex {
        claims: UInt16Array,
    },
}

/// Which dictionary key of a [`Person`] a text claim is compared through.
#[derive(Clone, Copy)]
enum PersonKey {
    Family,
    Given,
    Municipality,
}

impl PersonKey {
    #[inline(always)]
    fn of(self, p: &Person) -> usize {
        match self {
            PersonKey::Family => p.family as usize,
            PersonKey::Given => p.given as usize,
            PersonKey::Municipality => p.municipality as usize,
        }
    }
}

/// What [`Check::check`] found for one claimed value: how closely it agrees ([`AGREES_NOT`], or
/// 1 + the [`Level`] it agrees at), or [`UNCLAIMED`].
const AGREES_NOT: u8 = 0;
const UNCLAIMED: u8 = u8::MAX;

fn agrees_at(level: Level) -> u8 {
    1 + level as u8
}

/// The `<field>_level` column's values, by the codes [`Check::check`] gives.
pub const LEVEL_VALUES: [&str; 4] = ["none", "exact", "normalised", "reading"];

/// A claimed sex no stored one equals (stored values are `u8`).
const SEX_OUT_OF_RANGE: u16 = 256;

impl Check<'_> {
    /// How closely claim `i` agrees with resident `p` (see [`agrees_at`]).
    #[inline(always)]
    fn check<M: TextMatch>(&self, i: usize, p: &Person, text: &M, folding: Option<&Folding>) -> u8 {
        let exact = |same: bool| {
            if same {
                agrees_at(Level::Exact)
            } else {
                AGREES_NOT
            }
        };
        match self {
            Check::Text {
                claims,
                key,
                dict,
                inline,
                folded,
                ext,
            } => match claims.get(i) {
                None => UNCLAIMED,
                Some(c) => {
                    let k = key.of(p);
                    if k >= inline.len() {
                        return added_value_agrees(*ext, k, c, text, folding, folded);
                    }
                    let shortcut = if c.len() <= 12 {
                        text.matches_inline(claims.inline_key_at(i, c), inline[k])
                    } else {
                        None
                    };
                    if shortcut.unwrap_or_else(|| text.matches(c, dict.value(k).as_bytes())) {
                        return agrees_at(Level::Exact);
                    }
                    // Folding costs only where the exact comparison fails.
                    let Some(folding) = folding else {
                        return AGREES_NOT;
                    };
                    folded
                        .iter()
                        .find(|(level, values)| folds_to(folding, c, *level, values.value(k)))
                        .map_or(AGREES_NOT, |(level, _)| agrees_at(*level))
                }
            },
            Check::Date { claims } => {
                if claims.is_null(i) {
                    UNCLAIMED
                } else {
                    exact(claims.value(i) == p.birth_date)
                }
            }
            Check::Sex { claims } => {
                if claims.is_null(i) {
                    UNCLAIMED
                } else {
                    exact(claims.value(i) == p.sex as u16)
                }
            }
        }
    }
}

/// How closely claim `c` agrees with a dictionary value a change added (key `k`): as
/// [`Check::check`] for a stored value, the stored side folded here (such values are few).
#[cold]
fn added_value_agrees<M: TextMatch>(
    ext: Option<(&Live, Dict, bool)>,
    k: usize,
    c: &[u8],
    text: &M,
    folding: Option<&Folding>,
    folded: &[(Level, &StringArray)],
) -> u8 {
    let Some((live, dict, reading)) = ext else {
        return AGREES_NOT;
    };
    let Some((value, kana)) = live.ext_value(dict, k) else {
        return AGREES_NOT;
    };
    let stored: &str = if reading { kana } else { value };
    if text.matches(c, stored.as_bytes()) {
        return agrees_at(Level::Exact);
    }
    let Some(folding) = folding else {
        return AGREES_NOT;
    };
    let mut buf = String::new();
    for (level, _) in folded {
        buf.clear();
        folding.fold(stored, *level, &mut buf);
        if folds_to(folding, c, *level, &buf) {
            return agrees_at(*level);
        }
    }
    AGREES_NOT
}

/// A claimed sex column: integers of any width, or the null type (claims nothing). Any integer
/// is a claim: one outside 0..=255 agrees with no resident ([`SEX_OUT_OF_RANGE`]), it does not
/// fail the batch.
pub fn sex_claims(claimed: &dyn Array, what: &str) -> Result<UInt16Array> {
    if !claimed.data_type().is_integer() && claimed.data_type() != &DataType::Null {
        return Err(JukiError::InvalidInput(format!(
            "{what} must hold integers (1 = male, 2 = female), not {}",
            shown_type(claimed.data_type())
        )));
    }
    let in_range = |v: u64| v.min(SEX_OUT_OF_RANGE as u64) as u16;
    Ok(match claimed.data_type() {
        DataType::Null => UInt16Array::new_null(claimed.len()),
        DataType::UInt64 => claimed.as_primitive::<UInt64Type>().unary(in_range),
        _ => strict_cast(claimed, &DataType::Int64, what)?
            .as_primitive::<Int64Type>()
            .unary(|v| u64::try_from(v).map_or(SEX_OUT_OF_RANGE, in_range)),
    })
}

fn prepare<'a>(
    data: &'a RegistryData,
    live: Option<&'a Live>,
    field: Column,
    claimed: &dyn Array,
    folded: &[&'a FoldedText],
) -> Result<Check<'a>> {
    let d = &data.dicts;
    let what = format!("claims column '{}'", field.name());
    let t = &data.text_keys;
    let ext = |d: Dict, reading: bool| live.map(|l| (l, d, reading));
    let text = |key: PersonKey,
                dict: &'a StringArray,
                inline: &'a [u128],
                ext: Option<(&'a Live, Dict, bool)>|
     -> Result<Check<'a>> {
        Ok(Check::Text {
            claims: TextColumn::new(claimed, &what)?,
            key,
            dict,
            inline,
            ext,
            folded: folded
                .iter()
                .filter_map(|f| Some((f.level, f.of(field)?)))
                .collect(),
        })
    };
    match field {
        Column::FamilyName => text(
            PersonKey::Family,
            &d.family_name,
            &t.family_name,
            ext(Dict::Family, false),
        ),
        Column::FamilyNameKana => text(
            PersonKey::Family,
            &d.family_name_kana,
            &t.family_name_kana,
            ext(Dict::Family, true),
        ),
        Column::GivenName => text(
            PersonKey::Given,
            &d.given_name,
            &t.given_name,
            ext(Dict::Given, false),
        ),
        Column::GivenNameKana => text(
            PersonKey::Given,
            &d.given_name_kana,
            &t.given_name_kana,
            ext(Dict::Given, true),
        ),
        Column::MunicipalityCode => text(
            PersonKey::Municipality,
            &d.municipality_code,
            &t.municipality_code,
            None,
        ),
        Column::BirthDate => Ok(Check::Date {
            claims: match claimed.data_type() {
                DataType::Date32 => claimed.as_primitive::<Date32Type>().clone(),
                DataType::Null => Date32Array::new_null(claimed.len()),
                other => {
                    return Err(JukiError::InvalidInput(format!(
                        "{what} must hold dates (date32), not {}",
                        shown_type(other)
                    )))
                }
            },
        }),
        Column::Sex => Ok(Check::Sex {
            claims: sex_claims(claimed, &what)?,
        }),
        other => Err(JukiError::InvalidInput(format!(
            "column '{}' cannot be verified",
            other.name()
        ))),
    }
}

/// Verify claims (本人確認): for each claim row, in input order, whether the key was found, the
/// resident's status, the key's error (if rejected) and one `<field>_match` per claimed field
/// (null where not found or not claimed in that row), then the requested `columns` of each found
/// resident, gathered with the rows the same probe found (a server auditing and disclosing in one
/// pass probes once). `first_row` is the batch's first row in the whole job, for messages.
#[allow(clippy::too_many_arguments)]
pub fn verify<M: TextMatch>(
    data: &RegistryData,
    view: Option<&View>,
    claims: &RecordBatch,
    by: IdKind,
    text: &M,
    matching: Option<&Matching>,
    first_row: usize,
    columns: &[Column],
) -> Result<RecordBatch> {
    let schema = claims.schema();
    let folded: &[&FoldedText] = matching.map_or(&[], |m| &m.folded);
    let folding = matching.map(|m| m.folding);
    let key_col = claims.column_by_name(by.name()).ok_or_else(|| {
        JukiError::InvalidInput(format!("claims have no '{}' column (the key)", by.name()))
    })?;
    let mut checks = Vec::new();
    let mut names = Vec::new();
    for (f, array) in schema.fields().iter().zip(claims.columns()) {
        if f.name() == by.name() {
            continue;
        }
        let field = CLAIMABLE
            .into_iter()
            .find(|c| c.name() == f.name())
            .ok_or_else(|| {
                let known: Vec<&str> = CLAIMABLE.iter().map(|c| c.name()).collect();
                JukiError::InvalidInput(format!(
                    "claims column '{}' cannot be verified: expected the key '{}' and any of {}",
                    echo(f.name().as_bytes()),
                    by.name(),
                    known.join(", ")
                ))
            })?;
        checks.push(prepare(
            data,
            view.map(|v| v.live),
            field,
            array.as_ref(),
            folded,
        )?);
        names.push(field.name());
    }
    let index = data.index(by)?;
    let keys = KeyColumn::new(by, key_col.as_ref())?;
    let view = live(view);
    let persons = data.persons.rows();
    let places = data.persons.places();
    let n = claims.num_rows();
    let k = checks.len();
    // Per chunk: WORDS words of found bits, then per field WORDS of match bits and WORDS of
    // validity bits (claimed and found).
    let stride = WORDS * (1 + 2 * k);
    let mut bits = vec![0u64; n.div_ceil(CHUNK) * stride];
    let mut status = vec![0u8; n];
    // Above the exact level, each claimed value's level too (see `agrees_at`): per chunk, a
    // chunk's rows of each field in turn.
    let with_levels = matching.is_some();
    let mut levels = vec![AGREES_NOT; if with_levels { n * k } else { 0 }];
    // Disclosed columns are gathered with the rows the probe found. A batch of a server
    // message's size also copies each found Person and Place while in cache and builds every
    // column but the identifiers from those copies, which stay in cache (the pension job's
    // messages: 1.3 -> 2.2 M/s on one thread). A large batch gathers per column instead: a
    // batch-sized copy streams through memory twice and measured no faster on 20 M claims.
    // Without columns, each chunk's rows live on the stack.
    // Where changes apply, the rows they touched are resolved per chunk, and a disclosure reads
    // every row through them (`read_rows`).
    let keep = !columns.is_empty();
    let copy = keep && n <= PARALLEL_MIN && view.is_none();
    let mut rows = vec![NOT_FOUND; if keep { n } else { 0 }];
    let mut people = vec![Resident::default(); if copy { n } else { 0 }];
    let verify_chunk = |c: usize,
                        b: &mut [u64],
                        st: &mut [u8],
                        lv: &mut [u8],
                        kept: (&mut [u32], &mut [Resident])| {
        let start = c * CHUNK;
        let mut errs = Vec::new();
        let mut local = [NOT_FOUND; CHUNK];
        let rows = if keep { kept.0 } else { &mut local[..st.len()] };
        // The probe prefetches each found resident's packed rows, so their misses overlap the
        // probes still in flight and the pass below finds them in cache (a chunk's rows fit
        // L2).
        let mut changed = Vec::new();
        resolve_chunk(
            &keys,
            index,
            start,
            first_row,
            rows,
            &mut errs,
            |row| {
                if let Some(p) = persons.get(row as usize) {
                    prefetch(p);
                    if copy {
                        prefetch(&places[row as usize]);
                    }
                }
                if let Some(view) = view {
                    view.prefetch_changed(row);
                }
            },
            view.map(|v| (v, &mut changed)),
        );
        let mut next = changed.iter().peekable();
        for (i, &row) in rows.iter().enumerate() {
            if row == NOT_FOUND {
                continue;
            }
            let (word, bit) = (i / 64, 1u64 << (i % 64));
            b[word] |= bit;
            let p = match next.peek() {
                Some((at, r)) if *at as usize == i => {
                    next.next();
                    &r.values.resident.person
                }
                _ => &persons[row as usize],
            };
            st[i] = p.status;
            if copy {
                kept.1[i] = Resident {
                    person: *p,
                    place: places[row as usize],
                };
            }
            for (j, ch) in checks.iter().enumerate() {
                let r = ch.check(start + i, p, text, folding);
                if r != UNCLAIMED {
                    let at = WORDS * (1 + 2 * j) + word;
                    b[at] |= bit * (r != AGREES_NOT) as u64;
                    b[at + WORDS] |= bit;
                    if with_levels {
                        lv[j * st.len() + i] = r;
                    }
                }
            }
        }
        (errs, changed)
    };
    // Each chunk's share of `rows` and `people` (empty slices where not kept).
    let mut kept: Vec<(&mut [u32], &mut [Resident])> =
        (0..n.div_ceil(CHUNK)).map(|_| Default::default()).collect();
    for (k, r) in kept.iter_mut().zip(rows.chunks_mut(CHUNK)) {
        k.0 = r;
    }
    for (k, p) in kept.iter_mut().zip(people.chunks_mut(CHUNK)) {
        k.1 = p;
    }
    // Each chunk's share of `levels` (empty where levels are not kept).
    let mut chunk_levels: Vec<&mut [u8]> =
        (0..n.div_ceil(CHUNK)).map(|_| Default::default()).collect();
    if !levels.is_empty() {
        for (l, c) in chunk_levels.iter_mut().zip(levels.chunks_mut(CHUNK * k)) {
            *l = c;
        }
    }
    let parts: Vec<_> = if n <= PARALLEL_MIN {
        bits.chunks_mut(stride)
            .zip(status.chunks_mut(CHUNK))
            .zip(chunk_levels)
            .zip(kept)
            .enumerate()
            .map(|(c, (((b, st), lv), k))| verify_chunk(c, b, st, lv, k))
            .collect()
    } else {
        bits.par_chunks_mut(stride)
            .zip(status.par_chunks_mut(CHUNK))
            .zip(chunk_levels)
            .zip(kept)
            .enumerate()
            .map(|(c, (((b, st), lv), k))| verify_chunk(c, b, st, lv, k))
            .collect()
    };
    let mut errors = Vec::new();
    let mut changed = Vec::new();
    for (c, (errs, ch)) in parts.into_iter().enumerate() {
        errors.extend(errs);
        changed.extend(ch.into_iter().map(|(i, r)| (i + (c * CHUNK) as u32, r)));
    }
    // Reassemble each bit plane from its per-chunk words.
    let plane = |p: usize| -> BooleanBuffer {
        let words: Vec<u64> = bits
            .chunks(stride)
            .flat_map(|b| &b[WORDS * p..WORDS * (p + 1)])
            .copied()
            .collect();
        BooleanBuffer::new(Buffer::from_vec(words), 0, n)
    };
    let found = plane(0);
    let status_keys = UInt8Array::new(status.into(), Some(NullBuffer::from(found.clone())));
    // SAFETY: stored status codes are < STATUS_VALUES.len() (checked when built or opened).
    let status = unsafe {
        DictionaryArray::<UInt8Type>::new_unchecked(
            status_keys,
            Arc::new(StringArray::from(STATUS_VALUES.to_vec())),
        )
    };
    let replaced = {
        let mut bits = vec![false; n];
        for (i, r) in &changed {
            bits[*i as usize] = r.replaced;
        }
        BooleanArray::new(
            BooleanBuffer::from(bits),
            Some(NullBuffer::from(found.clone())),
        )
    };
    let mut fields = vec![
        Field::new("found", DataType::Boolean, false),
        Column::Status.field(),
        error_field(),
        replaced_field(),
    ];
    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(BooleanArray::new(found, None)),
        Arc::new(status),
        error_column(n, &errors),
        Arc::new(replaced),
    ];
    for (j, name) in names.into_iter().enumerate() {
        let (values, valid) = (plane(1 + 2 * j), plane(2 + 2 * j));
        fields.push(Field::new(format!("{name}_match"), DataType::Boolean, true));
        arrays.push(Arc::new(BooleanArray::new(
            values,
            Some(NullBuffer::from(valid.clone())),
        )));
        if with_levels {
            // Field j's levels, chunk by chunk (each chunk holds its rows of every field).
            let keys: Vec<u8> = levels
                .chunks(CHUNK * k)
                .flat_map(|c| {
                    let rows = c.len() / k;
                    &c[j * rows..(j + 1) * rows]
                })
                .copied()
                .collect();
            let keys = UInt8Array::new(keys.into(), Some(NullBuffer::from(valid)));
            // SAFETY: every code is `AGREES_NOT` or `agrees_at(level)`, < LEVEL_VALUES.len().
            let level = unsafe {
                DictionaryArray::<UInt8Type>::new_unchecked(
                    keys,
                    Arc::new(StringArray::from(LEVEL_VALUES.to_vec())),
                )
            };
            fields.push(Field::new(
                format!("{name}_level"),
                level.data_type().clone(),
                true,
            ));
            arrays.push(Arc::new(level));
        }
    }
    // `status` is always in the result already.
    let disclosed: Vec<Column> = columns
        .iter()
        .copied()
        .filter(|&c| c != Column::Status)
        .collect();
    fields.extend(disclosed.iter().map(|c| c.field()));
    if copy {
        let at = Rows::Read {
            rows: &rows,
            people: &people,
            ids: None,
            live: None,
        };
        arrays.extend(data.columns(&disclosed, at)?);
    } else if keep {
        arrays.extend(disclose(data, view, &disclosed, &rows, &changed)?);
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_keys_agree_across_layouts() {
        let values = vec!["渡邉", "", "abcdefghijkl", "高橋", "x"];
        let utf8 = StringArray::from(values.clone());
        let view = arrow_array::StringViewArray::from(values.clone());
        let large = arrow_array::LargeStringArray::from(values.clone());
        for col in [
            TextColumn::new(&utf8, "utf8").unwrap(),
            TextColumn::new(&view, "view").unwrap(),
            TextColumn::new(&large, "large").unwrap(),
        ] {
            for (i, v) in values.iter().enumerate() {
                let b = col.get(i).unwrap();
                assert_eq!(col.inline_key_at(i, b), inline_key(v.as_bytes()), "{v}");
            }
        }
        assert_ne!(inline_key("渡辺".as_bytes()), inline_key("渡邉".as_bytes()));
        assert_ne!(inline_key(b"ab"), inline_key(b"ab\0"));
    }

    #[test]
    fn exact_match_shortcut_agrees_with_bytes() {
        let m = ExactMatch;
        for (a, b) in [
            ("高橋", "髙橋"),
            ("サトウ", "サトウ"),
            ("", ""),
            ("a", "ab"),
        ] {
            let (a, b) = (a.as_bytes(), b.as_bytes());
            assert_eq!(
                m.matches_inline(inline_key(a), inline_key(b)),
                Some(m.matches(a, b))
            );
        }
    }
}
