//! Bulk lookup and verification kernels (照会・本人確認).
//!
//! Both run in two passes over a batch: parse and probe the keys (one index miss each, prefetched),
//! then touch only the stored columns that the request needs, fused in one prefetched pass so
//! the misses for different fields of one row overlap. An invalid key never fails the batch: its
//! row comes back not found, with the reason in the `error` column.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt64Type};
use arrow_array::{
    new_null_array, Array, ArrayRef, BooleanArray, Date32Array, RecordBatch, StringArray,
    StringViewArray, UInt8Array,
};
use arrow_buffer::{BooleanBuffer, NullBuffer};
use arrow_cast::{cast_with_options, CastOptions};
use arrow_schema::{DataType, Field, Schema};
use rayon::prelude::*;

use crate::error::{JukiError, Result};
use crate::ids::{IdKind, Reason};
use crate::index::{INVALID_KEY, NOT_FOUND};
use crate::memory::prefetch;
use crate::storage::{Column, RegistryData};

const CHUNK: usize = 1 << 14;
const AHEAD: usize = 16;

/// Keys parsed for probing: one base per input row ([`INVALID_KEY`] where the key was rejected)
/// and, for rejected rows, the reason.
pub struct ParsedKeys {
    /// Identifier bases, in input order.
    pub bases: Vec<u64>,
    /// (row, message) for each rejected key, in row order.
    pub errors: Vec<(usize, String)>,
}

fn strict_cast(array: &dyn Array, to: &DataType, what: &str) -> Result<ArrayRef> {
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    cast_with_options(array, to, &options)
        .map_err(|e| JukiError::InvalidInput(format!("{what}: {e}")))
}

/// Parse a key column: strings (any Arrow string type or a dictionary of them) must be exactly the
/// identifier's ASCII digits; integers are taken as the identifier's value. Messages name rows
/// counting from `first_row` (the batch's place in a larger job).
pub fn parse_keys(kind: IdKind, keys: &dyn Array, first_row: usize) -> Result<ParsedKeys> {
    let n = keys.len();
    let mut bases = vec![INVALID_KEY; n];
    let null = || kind.describe("", Reason::Null);
    let errors: Vec<(usize, String)> = match keys.data_type() {
        DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Dictionary(_, _)
        | DataType::Null => {
            let owned = strict_cast(keys, &DataType::Utf8View, kind.name())?;
            let strings = owned.as_string_view();
            parse_chunks(kind, &mut bases, first_row, |i| {
                if strings.is_null(i) {
                    return Err(null());
                }
                let s = strings.value(i);
                kind.parse_bytes(s.as_bytes())
                    .map_err(|why| kind.describe(s, why))
            })
        }
        DataType::UInt64 => {
            let ints = keys.as_primitive::<UInt64Type>();
            parse_chunks(kind, &mut bases, first_row, |i| {
                if ints.is_null(i) {
                    return Err(null());
                }
                let v = ints.value(i);
                kind.check_value(v)
                    .map_err(|why| kind.describe(&v.to_string(), why))
            })
        }
        t if t.is_integer() => {
            let owned = strict_cast(keys, &DataType::Int64, kind.name())?;
            let ints = owned.as_primitive::<Int64Type>();
            parse_chunks(kind, &mut bases, first_row, |i| {
                if ints.is_null(i) {
                    return Err(null());
                }
                let v = ints.value(i);
                let checked = match u64::try_from(v) {
                    Ok(u) => kind.check_value(u),
                    Err(_) => Err(Reason::Negative),
                };
                checked.map_err(|why| kind.describe(&v.to_string(), why))
            })
        }
        other => {
            return Err(JukiError::InvalidInput(format!(
                "{} keys must be strings or integers, not {other}",
                kind.name()
            )))
        }
    };
    Ok(ParsedKeys { bases, errors })
}

/// Run `parse` (row → identifier value) over all rows on all cores, storing each valid value's
/// base and collecting the messages of rejected rows.
fn parse_chunks(
    kind: IdKind,
    out: &mut [u64],
    first_row: usize,
    parse: impl Fn(usize) -> std::result::Result<u64, String> + Sync,
) -> Vec<(usize, String)> {
    let per_chunk: Vec<Vec<(usize, String)>> = out
        .par_chunks_mut(CHUNK)
        .enumerate()
        .map(|(c, chunk)| {
            let mut errs = Vec::new();
            for (j, slot) in chunk.iter_mut().enumerate() {
                let i = c * CHUNK + j;
                match parse(i) {
                    Ok(v) => *slot = kind.base_of(v),
                    Err(msg) => errs.push((i, format!("row {}: {msg}", first_row + i))),
                }
            }
            errs
        })
        .collect();
    per_chunk.into_iter().flatten().collect()
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

/// Parse and probe: the row of each key, or [`NOT_FOUND`].
fn resolve(
    data: &RegistryData,
    by: IdKind,
    keys: &dyn Array,
    first_row: usize,
) -> Result<(Vec<u32>, ArrayRef)> {
    let index = data.index(by)?;
    let parsed = parse_keys(by, keys, first_row)?;
    let mut rows = vec![NOT_FOUND; parsed.bases.len()];
    index.probe(&parsed.bases, &mut rows);
    Ok((rows, error_column(keys.len(), &parsed.errors)))
}

/// Look keys up: one output row per key, in input order, with `found`, `error` and the requested
/// columns (null where not found).
pub fn lookup(
    data: &RegistryData,
    keys: &dyn Array,
    by: IdKind,
    columns: &[Column],
) -> Result<RecordBatch> {
    let (rows, errors) = resolve(data, by, keys, 0)?;
    let mut fields = vec![Field::new("found", DataType::Boolean, false), error_field()];
    let mut arrays: Vec<ArrayRef> = vec![Arc::new(RegistryData::found_column(&rows)), errors];
    for &c in columns {
        fields.push(c.field());
        arrays.push(data.column(c, Some(&rows)));
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
}

fn error_field() -> Field {
    Field::new("error", DataType::Utf8, true)
}

/// How a claimed text is compared with the stored one. Exact today; a normalising comparison
/// (異体字, kana folding) implements the same trait.
pub trait TextMatch: Sync {
    /// Whether the claimed value matches the stored value.
    fn matches(&self, claimed: &str, stored: &str) -> bool;
}

/// Byte-for-byte equality.
pub struct ExactMatch;

impl TextMatch for ExactMatch {
    #[inline]
    fn matches(&self, claimed: &str, stored: &str) -> bool {
        claimed == stored
    }
}

/// A field that claims may carry, and how it is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimField {
    /// 氏.
    FamilyName,
    /// 氏の振り仮名.
    FamilyNameKana,
    /// 名.
    GivenName,
    /// 名の振り仮名.
    GivenNameKana,
    /// 生年月日.
    BirthDate,
    /// 性別.
    Sex,
    /// 住所の市区町村コード.
    MunicipalityCode,
}

impl ClaimField {
    /// Every claimable field.
    pub const ALL: [ClaimField; 7] = [
        ClaimField::FamilyName,
        ClaimField::FamilyNameKana,
        ClaimField::GivenName,
        ClaimField::GivenNameKana,
        ClaimField::BirthDate,
        ClaimField::Sex,
        ClaimField::MunicipalityCode,
    ];

    /// The claim column's name (the public column it is compared with).
    pub fn name(self) -> &'static str {
        self.column().name()
    }

    fn column(self) -> Column {
        match self {
            ClaimField::FamilyName => Column::FamilyName,
            ClaimField::FamilyNameKana => Column::FamilyNameKana,
            ClaimField::GivenName => Column::GivenName,
            ClaimField::GivenNameKana => Column::GivenNameKana,
            ClaimField::BirthDate => Column::BirthDate,
            ClaimField::Sex => Column::Sex,
            ClaimField::MunicipalityCode => Column::MunicipalityCode,
        }
    }
}

/// One claimed column, prepared for the kernel.
enum Check<'a> {
    Text {
        claims: StringViewArray,
        keys: Keys<'a>,
        dict: &'a StringArray,
    },
    Date {
        claims: Date32Array,
        stored: &'a [i32],
    },
    Sex {
        claims: UInt8Array,
        stored: &'a [u8],
    },
}

#[derive(Clone, Copy)]
enum Keys<'a> {
    U32(&'a [u32]),
    U16(&'a [u16]),
}

impl Keys<'_> {
    #[inline(always)]
    fn get(self, row: usize) -> usize {
        match self {
            Keys::U32(k) => k[row] as usize,
            Keys::U16(k) => k[row] as usize,
        }
    }

    #[inline(always)]
    fn prefetch(self, row: usize) {
        match self {
            Keys::U32(k) => prefetch(&k[row]),
            Keys::U16(k) => prefetch(&k[row]),
        }
    }
}

const YES: u8 = 1;
const UNCLAIMED: u8 = 2;

impl Check<'_> {
    #[inline(always)]
    fn prefetch(&self, row: usize) {
        match self {
            Check::Text { keys, .. } => keys.prefetch(row),
            Check::Date { stored, .. } => prefetch(&stored[row]),
            Check::Sex { stored, .. } => prefetch(&stored[row]),
        }
    }

    #[inline(always)]
    fn check(&self, i: usize, row: usize, text: &dyn TextMatch) -> u8 {
        match self {
            Check::Text { claims, keys, dict } => {
                if claims.is_null(i) {
                    UNCLAIMED
                } else {
                    text.matches(claims.value(i), dict.value(keys.get(row))) as u8
                }
            }
            Check::Date { claims, stored } => {
                if claims.is_null(i) {
                    UNCLAIMED
                } else {
                    (claims.value(i) == stored[row]) as u8
                }
            }
            Check::Sex { claims, stored } => {
                if claims.is_null(i) {
                    UNCLAIMED
                } else {
                    (claims.value(i) == stored[row]) as u8
                }
            }
        }
    }
}

fn prepare<'a>(
    data: &'a RegistryData,
    field: ClaimField,
    claimed: &dyn Array,
) -> Result<Check<'a>> {
    let c = &data.cols;
    let d = &data.dicts;
    let what = format!("claims column '{}'", field.name());
    let text = |keys: Keys<'a>, dict: &'a StringArray| -> Result<Check<'a>> {
        if !matches!(
            claimed.data_type(),
            DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Dictionary(_, _)
                | DataType::Null
        ) {
            return Err(JukiError::InvalidInput(format!(
                "{what} must hold strings, not {}",
                claimed.data_type()
            )));
        }
        let cast = strict_cast(claimed, &DataType::Utf8View, &what)?;
        let claims = cast
            .as_any()
            .downcast_ref::<StringViewArray>()
            .expect("cast")
            .clone();
        Ok(Check::Text { claims, keys, dict })
    };
    match field {
        ClaimField::FamilyName => text(Keys::U32(&c.family), &d.family_name),
        ClaimField::FamilyNameKana => text(Keys::U32(&c.family), &d.family_name_kana),
        ClaimField::GivenName => text(Keys::U32(&c.given), &d.given_name),
        ClaimField::GivenNameKana => text(Keys::U32(&c.given), &d.given_name_kana),
        ClaimField::MunicipalityCode => text(Keys::U16(&c.municipality), &d.municipality_code),
        ClaimField::BirthDate => {
            let cast = strict_cast(claimed, &DataType::Date32, &what)?;
            let claims = cast
                .as_any()
                .downcast_ref::<Date32Array>()
                .expect("cast")
                .clone();
            Ok(Check::Date {
                claims,
                stored: &c.birth_date,
            })
        }
        ClaimField::Sex => {
            if !claimed.data_type().is_integer() && claimed.data_type() != &DataType::Null {
                return Err(JukiError::InvalidInput(format!(
                    "{what} must hold integers (1 = male, 2 = female), not {}",
                    claimed.data_type()
                )));
            }
            let cast = strict_cast(claimed, &DataType::UInt8, &what)?;
            let claims = cast
                .as_any()
                .downcast_ref::<UInt8Array>()
                .expect("cast")
                .clone();
            Ok(Check::Sex {
                claims,
                stored: &c.sex,
            })
        }
    }
}

/// Verify claims (本人確認): for each claim row, in input order, whether the key was found, the
/// resident's status, the key's error (if rejected) and one `<field>_match` per claimed field
/// (null where not found or not claimed in that row). `first_row` is the batch's first row in
/// the whole job, for messages.
pub fn verify(
    data: &RegistryData,
    claims: &RecordBatch,
    by: IdKind,
    text: &dyn TextMatch,
    first_row: usize,
) -> Result<RecordBatch> {
    let schema = claims.schema();
    let key_col = claims.column_by_name(by.name()).ok_or_else(|| {
        JukiError::InvalidInput(format!("claims have no '{}' column (the key)", by.name()))
    })?;
    let mut checks = Vec::new();
    let mut names = Vec::new();
    for (f, array) in schema.fields().iter().zip(claims.columns()) {
        if f.name() == by.name() {
            continue;
        }
        let field = ClaimField::ALL
            .into_iter()
            .find(|c| c.name() == f.name())
            .ok_or_else(|| {
                let known: Vec<&str> = ClaimField::ALL.iter().map(|c| c.name()).collect();
                JukiError::InvalidInput(format!(
                    "claims column '{}' cannot be verified: expected the key '{}' and any of {}",
                    f.name(),
                    by.name(),
                    known.join(", ")
                ))
            })?;
        checks.push(prepare(data, field, array.as_ref())?);
        names.push(format!("{}_match", field.name()));
    }
    let (rows, errors) = resolve(data, by, key_col.as_ref(), first_row)?;
    let k = checks.len();
    let n = rows.len();
    let mut out = vec![UNCLAIMED; n * k];
    if k > 0 {
        out.par_chunks_mut(CHUNK * k)
            .enumerate()
            .for_each(|(c, o)| {
                let start = c * CHUNK;
                let r = &rows[start..(start + CHUNK).min(n)];
                for i in 0..r.len() {
                    if let Some(&ahead) = r.get(i + AHEAD) {
                        if ahead != NOT_FOUND {
                            checks.iter().for_each(|ch| ch.prefetch(ahead as usize));
                        }
                    }
                    if r[i] == NOT_FOUND {
                        continue;
                    }
                    for (j, ch) in checks.iter().enumerate() {
                        o[i * k + j] = ch.check(start + i, r[i] as usize, text);
                    }
                }
            });
    }
    let mut fields = vec![
        Field::new("found", DataType::Boolean, false),
        Column::Status.field(),
        error_field(),
    ];
    let status = data.column(Column::Status, Some(&rows));
    let mut arrays: Vec<ArrayRef> =
        vec![Arc::new(RegistryData::found_column(&rows)), status, errors];
    for (j, name) in names.into_iter().enumerate() {
        let values = BooleanBuffer::collect_bool(n, |i| out[i * k + j] == YES);
        let valid = BooleanBuffer::collect_bool(n, |i| out[i * k + j] != UNCLAIMED);
        fields.push(Field::new(name, DataType::Boolean, true));
        arrays.push(Arc::new(BooleanArray::new(
            values,
            Some(NullBuffer::from(valid)),
        )));
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
}
