//! Building a registry from an Arrow table of the public schema (`Registry.from_arrow`).
//!
//! Identifiers are parsed strictly, names and address parts are dictionary-encoded, and every
//! rejection names the row and the value. Duplicate identifiers are caught by the index build.

use std::collections::HashMap;

use arrow_array::{
    Array, ArrayRef, Date32Array, RecordBatch, StringArray, StringViewArray, UInt8Array,
};
use arrow_buffer::ScalarBuffer;
use arrow_cast::{cast_with_options, CastOptions};
use arrow_schema::DataType;

use crate::error::{echo, JukiError, Result};
use crate::ids::IdKind;
use crate::index::MAX_ROWS;
use crate::query::{is_text, parse_keys, shown_type};
use crate::storage::{Columns, Dictionaries, RegistryData, CARD_VALUES, STATUS_VALUES};

const REQUIRED: [&str; 9] = [
    "resident_code",
    "my_number",
    "family_name",
    "family_name_kana",
    "given_name",
    "given_name_kana",
    "birth_date",
    "sex",
    "municipality_code",
];

fn cast_to(array: &ArrayRef, to: &DataType, name: &str) -> Result<ArrayRef> {
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    cast_with_options(array, to, &options)
        .map_err(|e| JukiError::InvalidInput(format!("column '{name}': {e}")))
}

/// A string column (any Arrow string type), or None when the table lacks it.
fn text(batch: &RecordBatch, name: &str) -> Result<Option<StringViewArray>> {
    match batch.column_by_name(name) {
        Some(col) => text_of(col, name).map(Some),
        None => Ok(None),
    }
}

/// A string column (any Arrow string type, or a dictionary of one) as views.
fn text_of(col: &ArrayRef, name: &str) -> Result<StringViewArray> {
    if !is_text(col.data_type()) {
        return Err(JukiError::InvalidInput(format!(
            "column '{name}' must hold strings (utf8, large_utf8, utf8_view or a dictionary of \
             them), not {}",
            shown_type(col.data_type())
        )));
    }
    let cast = cast_to(col, &DataType::Utf8View, name)?;
    Ok(cast
        .as_any()
        .downcast_ref::<StringViewArray>()
        .expect("cast")
        .clone())
}

fn required_text(batch: &RecordBatch, name: &str) -> Result<StringViewArray> {
    let col = text(batch, name)?.expect("required columns are checked first");
    if let Some(row) = (0..col.len()).find(|&i| col.is_null(i)) {
        return Err(JukiError::InvalidInput(format!(
            "row {row}: {name} is null"
        )));
    }
    Ok(col)
}

/// A date column: `date32`, any type Arrow casts to it (dates, timestamps), or ISO 8601 text,
/// where text that is not a date is refused naming its row and (cut) value.
fn dates(col: &ArrayRef, name: &str) -> Result<Date32Array> {
    if !is_text(col.data_type()) {
        let cast = cast_to(col, &DataType::Date32, name)?;
        return Ok(cast
            .as_any()
            .downcast_ref::<Date32Array>()
            .expect("cast")
            .clone());
    }
    // Text: cast leniently (not a date -> null), then name the first row that failed.
    let cast = cast_with_options(col, &DataType::Date32, &CastOptions::default())
        .map_err(|e| JukiError::InvalidInput(format!("column '{name}': {e}")))?;
    let cast = cast
        .as_any()
        .downcast_ref::<Date32Array>()
        .expect("cast")
        .clone();
    if cast.null_count() > col.null_count() {
        let text = text_of(col, name)?;
        if let Some(row) = (0..cast.len()).find(|&i| cast.is_null(i) && text.is_valid(i)) {
            return Err(JukiError::InvalidInput(format!(
                "row {row}: column '{name}': '{}' is not a date (YYYY-MM-DD)",
                echo(text.value(row).as_bytes())
            )));
        }
    }
    Ok(cast)
}

/// Dictionary-encode tuples of strings, in first-seen order.
struct Encoder<'a, const N: usize> {
    ids: HashMap<[&'a str; N], u32>,
    values: Vec<[&'a str; N]>,
}

impl<'a, const N: usize> Encoder<'a, N> {
    fn new() -> Self {
        Encoder {
            ids: HashMap::new(),
            values: Vec::new(),
        }
    }

    fn id(&mut self, key: [&'a str; N]) -> u32 {
        let next = self.values.len() as u32;
        *self.ids.entry(key).or_insert_with(|| {
            self.values.push(key);
            next
        })
    }

    fn dictionary(&self, part: usize) -> StringArray {
        StringArray::from_iter_values(self.values.iter().map(|v| v[part]))
    }
}

fn identifiers(batch: &RecordBatch, kind: IdKind) -> Result<ScalarBuffer<u64>> {
    let col = batch
        .column_by_name(kind.name())
        .expect("required columns are checked first");
    let parsed = parse_keys(kind, col.as_ref(), 0)?;
    if let Some((_, msg)) = parsed.errors.first() {
        return Err(JukiError::InvalidIdentifier(msg.clone()));
    }
    Ok(parsed
        .bases
        .into_iter()
        .map(|b| kind.with_check_digit(b))
        .collect())
}

/// Codes of an optional enumerated column (null or absent: `default`).
fn coded(col: Option<StringViewArray>, n: usize, values: &[&str], name: &str) -> Result<Vec<u8>> {
    let default = 0;
    let Some(col) = col else {
        return Ok(vec![default; n]);
    };
    col.iter()
        .enumerate()
        .map(|(row, v)| match v {
            None => Ok(default),
            Some(s) => values
                .iter()
                .position(|&x| x == s)
                .map(|p| p as u8)
                .ok_or_else(|| {
                    JukiError::InvalidInput(format!(
                        "row {row}: {name} '{}' is not one of {}",
                        echo(s.as_bytes()),
                        values.join(", ")
                    ))
                }),
        })
        .collect()
}

/// The value of an optional column, "" where it is absent or null.
fn opt(c: &Option<StringViewArray>, i: usize) -> &str {
    c.as_ref()
        .and_then(|a| (!a.is_null(i)).then(|| a.value(i)))
        .unwrap_or("")
}

/// Build a registry from a record batch of the public schema.
pub fn from_batch(batch: &RecordBatch) -> Result<RegistryData> {
    let n = batch.num_rows();
    for name in REQUIRED {
        if batch.column_by_name(name).is_none() {
            return Err(JukiError::InvalidInput(format!(
                "registry table has no '{name}' column (required: {})",
                REQUIRED.join(", ")
            )));
        }
    }
    if n > MAX_ROWS {
        return Err(JukiError::InvalidInput(format!(
            "{n} rows exceed the limit of {MAX_ROWS}"
        )));
    }
    let resident_code = identifiers(batch, IdKind::ResidentCode)?;
    let my_number = identifiers(batch, IdKind::MyNumber)?;

    let family_name = required_text(batch, "family_name")?;
    let family_kana = required_text(batch, "family_name_kana")?;
    let given_name = required_text(batch, "given_name")?;
    let given_kana = required_text(batch, "given_name_kana")?;
    let muni_code = required_text(batch, "municipality_code")?;
    let muni_name = text(batch, "municipality_name")?;
    let prefecture = text(batch, "prefecture")?;
    let town = text(batch, "address_town")?;
    let block = text(batch, "address_block")?;

    let mut families = Encoder::<2>::new();
    let mut givens = Encoder::<2>::new();
    let mut munis = Encoder::<1>::new();
    let mut muni_attrs: Vec<[&str; 2]> = Vec::new();
    let mut towns = Encoder::<1>::new();
    let mut blocks = Encoder::<1>::new();
    let (mut fam, mut giv, mut mun, mut tow, mut blo) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for i in 0..n {
        fam.push(families.id([family_name.value(i), family_kana.value(i)]));
        giv.push(givens.id([given_name.value(i), given_kana.value(i)]));
        let code = muni_code.value(i);
        IdKind::LocalGovernment
            .parse(code)
            .map_err(|e| JukiError::InvalidIdentifier(format!("row {i}: {e}")))?;
        let m = munis.id([code]);
        let attrs = [opt(&muni_name, i), opt(&prefecture, i)];
        if m as usize == muni_attrs.len() {
            muni_attrs.push(attrs);
        } else if muni_attrs[m as usize] != attrs {
            let [here, earlier] = [attrs, muni_attrs[m as usize]].map(|[name, prefecture]| {
                format!(
                    "'{}' ({})",
                    echo(name.as_bytes()),
                    echo(prefecture.as_bytes())
                )
            });
            return Err(JukiError::InvalidInput(format!(
                "row {i}: municipality {code} is named {here} here but {earlier} earlier"
            )));
        }
        if m > u16::MAX as u32 {
            return Err(JukiError::InvalidInput(format!(
                "row {i}: more than {} municipalities",
                u16::MAX
            )));
        }
        mun.push(m as u16);
        tow.push(towns.id([opt(&town, i)]));
        blo.push(blocks.id([opt(&block, i)]));
    }

    let birth = dates(
        batch.column_by_name("birth_date").expect("required"),
        "birth_date",
    )?;
    if let Some(row) = (0..n).find(|&i| birth.is_null(i)) {
        return Err(JukiError::InvalidInput(format!(
            "row {row}: birth_date is null"
        )));
    }
    let sex_col = batch.column_by_name("sex").expect("required");
    if !sex_col.data_type().is_integer() {
        return Err(JukiError::InvalidInput(format!(
            "column 'sex' must hold integers (1 = male, 2 = female), not {}",
            sex_col.data_type()
        )));
    }
    let sex = cast_to(sex_col, &DataType::Int64, "sex")?;
    let sex = sex
        .as_any()
        .downcast_ref::<arrow_array::Int64Array>()
        .expect("cast");
    let mut sexes = Vec::with_capacity(n);
    for (row, v) in sex.iter().enumerate() {
        match v {
            Some(s @ (1 | 2)) => sexes.push(s as u8),
            Some(s) => {
                return Err(JukiError::InvalidInput(format!(
                    "row {row}: sex {s} is not 1 (male) or 2 (female)"
                )))
            }
            None => return Err(JukiError::InvalidInput(format!("row {row}: sex is null"))),
        }
    }
    let status = coded(text(batch, "status")?, n, &STATUS_VALUES, "status")?;
    let card = coded(text(batch, "card_state")?, n, &CARD_VALUES, "card_state")?;
    let status_date = match batch.column_by_name("status_date") {
        Some(c) => dates(c, "status_date")?,
        None => Date32Array::new_null(n),
    };

    let cols = Columns {
        resident_code,
        my_number,
        family: fam.into(),
        given: giv.into(),
        birth_date: birth.values().clone(),
        sex: UInt8Array::from(sexes).values().clone(),
        municipality: mun.into(),
        town: tow.into(),
        block: blo.into(),
        status: status.into(),
        status_date,
        card: card.into(),
    };
    let dicts = Dictionaries {
        family_name: families.dictionary(0),
        family_name_kana: families.dictionary(1),
        given_name: givens.dictionary(0),
        given_name_kana: givens.dictionary(1),
        municipality_code: munis.dictionary(0),
        municipality_name: StringArray::from_iter_values(muni_attrs.iter().map(|a| a[0])),
        prefecture: StringArray::from_iter_values(muni_attrs.iter().map(|a| a[1])),
        address_town: towns.dictionary(0),
        address_block: blocks.dictionary(0),
    };
    RegistryData::new(cols, dicts)
}
