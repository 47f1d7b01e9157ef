//! The change feed of subscribed agencies: the changes of the persons a subscription watches,
//! in the order applied, numbered as notices are (change numbers, which restarts and checkpoints
//! keep), each with the fields it set and their values after it. The front end masks them to
//! the affair's fields, audits and delivers them.
//!
//! Watching costs nothing at apply: a subscription is a bitmap over person ids, read only when
//! its feed is read, from its cursor onwards.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use arrow_array::builder::{
    Date32Builder, ListBuilder, StringBuilder, StructBuilder, TimestampMicrosecondBuilder,
    UInt32Builder, UInt64Builder,
};
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::{DataType, Field, Fields, Schema, TimeUnit};

use crate::error::Result;
use crate::history::{group, group_fields, Reason, View};
use crate::ids::IdKind;
use crate::index::INVALID_KEY;
use crate::index::NOT_FOUND;
use crate::notices::{change_number, first_after, with_scanned};
use crate::storage::Column;

/// The person ids `keys` (identifiers of `kind`, current or former) name, null where a key is
/// invalid or names no one this view sees (what a subscription's watch list holds), and
/// whether each key is a valid identifier at all.
pub fn persons(view: &View, kind: IdKind, keys: &dyn Array) -> Result<RecordBatch> {
    let parsed = crate::query::parse_keys(kind, keys, 0)?;
    let mut out = UInt32Builder::with_capacity(parsed.bases.len());
    let valid = BooleanArray::from_iter(parsed.bases.iter().map(|&b| Some(b != INVALID_KEY)));
    for &base in &parsed.bases {
        let person = (base != INVALID_KEY)
            .then(|| view.person_of(kind, kind.with_check_digit(base)))
            .flatten()
            .filter(|&p| view.resolve_parts(p, crate::history::NONE).is_some());
        out.append_option(person);
    }
    let schema = Schema::new(vec![
        Field::new("person", DataType::UInt32, true),
        Field::new("valid", DataType::Boolean, false),
    ]);
    Ok(RecordBatch::try_new(
        Arc::new(schema),
        vec![Arc::new(out.finish()), Arc::new(valid)],
    )?)
}

/// The public `columns` of persons by id, as `view` sees them (null where an id names no one:
/// past the last person, or a person whose creation was cancelled). The residents' view reads
/// its caller's own record this way: the person a certificate was issued to, whatever their
/// identifiers are now.
pub fn by_person(view: &View, persons: &[u32], columns: &[Column]) -> Result<RecordBatch> {
    let n = view.live.base_len as u64 + view.live.created.load(Ordering::Acquire) as u64;
    let mut rows: Vec<u32> = persons
        .iter()
        .map(|&p| if (p as u64) < n { p } else { NOT_FOUND })
        .collect();
    let data = view.data;
    let view = Some(view).filter(|v| !v.plain());
    let changed = view.map_or_else(Vec::new, |v| v.resolve_rows(&mut rows));
    let arrays = crate::query::disclose(data, view, columns, &rows, &changed)?;
    let fields: Vec<Field> = columns.iter().map(|c| c.field()).collect();
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
}

/// Whether bit `person` of `watch` (packed, least significant bit first) is set.
fn watched(watch: &[u8], person: u32) -> bool {
    watch
        .get(person as usize / 8)
        .is_some_and(|b| b & (1 << (person % 8)) != 0)
}

/// The changes `view` sees of the persons `watch` holds, numbered after `after`, oldest first,
/// at most `limit`: those whose reason is in `reasons` (a bit per reason code), and the cancels
/// of such changes (reason `cancel`, `cancels` naming the change undone).
pub fn watched_changes(
    view: &View,
    watch: &[u8],
    reasons: u32,
    after: u64,
    limit: usize,
) -> Result<RecordBatch> {
    let live = view.live;
    let pair = Fields::from(vec![
        Field::new("field", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, true),
    ]);
    let mut number = UInt64Builder::new();
    let mut reason_b = StringBuilder::new();
    let mut cancels_b = UInt64Builder::new();
    let mut effective_b = Date32Builder::new();
    let mut reported_b = Date32Builder::new();
    let mut recorded_b = TimestampMicrosecondBuilder::new();
    let mut rc_b = StringBuilder::new();
    let mut mn_b = StringBuilder::new();
    let mut fields_b = ListBuilder::new(StructBuilder::from_fields(pair.clone(), 0));
    let mut at = first_after(live, after);
    let mut found = 0;
    let mut scanned = after;
    while found < limit {
        let Some(e) = live.entries.get(at as usize) else {
            break;
        };
        // Entries are in batch order: the first one this view does not see ends the walk.
        if e.batch > view.cut.batch {
            break;
        }
        let here = at;
        at += 1;
        if e.reason != Reason::Origin {
            scanned = change_number(live, here);
        }
        if e.reason == Reason::Origin || !watched(watch, e.person) {
            continue;
        }
        // A cancel is delivered where the change it undoes would be, with the fields it
        // restored.
        let (subject, mask, cancels) = if e.reason == Reason::Cancel {
            match live.entries.get(e.cancels() as usize) {
                Some(t) => (t.reason, t.mask, Some(change_number(live, e.cancels()))),
                None => continue,
            }
        } else {
            (e.reason, e.mask, None)
        };
        if reasons & (1 << subject as u32) == 0 {
            continue;
        }
        let Some(values) = view.resolve_below(e.person, here + 1) else {
            continue;
        };
        number.append_value(change_number(live, here));
        reason_b.append_value(e.reason.name());
        cancels_b.append_option(cancels);
        effective_b.append_value(e.effective);
        reported_b.append_value(e.reported);
        recorded_b.append_value(live.recorded_at(e.batch));
        rc_b.append_value(IdKind::ResidentCode.format(values.resident_code));
        mn_b.append_value(IdKind::MyNumber.format(values.my_number));
        let pairs = fields_b.values();
        for g in 0..9 {
            let bit = 1u16 << g;
            if mask & bit == 0 || bit == group::PENDING {
                continue;
            }
            let mut set = group_fields(view, bit, &values);
            if bit == group::ADDRESS {
                let m = values.resident.person.municipality as usize;
                let d = &view.data.dicts;
                set.push((
                    "municipality_name",
                    Some(d.municipality_name.value(m).into()),
                ));
                set.push(("prefecture", Some(d.prefecture.value(m).into())));
            }
            for (field, value) in set {
                pairs
                    .field_builder::<StringBuilder>(0)
                    .expect("field")
                    .append_value(field);
                pairs
                    .field_builder::<StringBuilder>(1)
                    .expect("value")
                    .append_option(value);
                pairs.append(true);
            }
        }
        fields_b.append(true);
        found += 1;
    }
    let schema = Schema::new(vec![
        Field::new("change", DataType::UInt64, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("cancels", DataType::UInt64, true),
        Field::new("effective_date", DataType::Date32, false),
        Field::new("reported_date", DataType::Date32, false),
        Field::new(
            "recorded_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("resident_code", DataType::Utf8, false),
        Field::new("my_number", DataType::Utf8, false),
        Field::new(
            "fields",
            DataType::List(Arc::new(Field::new("item", DataType::Struct(pair), true))),
            false,
        ),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(number.finish()),
        Arc::new(reason_b.finish()),
        Arc::new(cancels_b.finish()),
        Arc::new(effective_b.finish()),
        Arc::new(reported_b.finish()),
        Arc::new(recorded_b.finish().with_timezone("UTC")),
        Arc::new(rc_b.finish()),
        Arc::new(mn_b.finish()),
        Arc::new(fields_b.finish()),
    ];
    with_scanned(RecordBatch::try_new(Arc::new(schema), columns)?, scanned)
}

/// Every identifier a person held before their current one, as this registry's history shows
/// (origins' and changes' values that differ from the person's row): `kind`
/// (`resident_code`, `my_number`), `value`, `person`, each pair once. What the routes of a
/// registry split with history must still send to the person's shard (which answers
/// `replaced`), and what no shard may issue again. Read from a checkpoint's rows (current).
pub fn former_identifiers(view: &View) -> Result<RecordBatch> {
    let live = view.live;
    let cols = &view.data.cols;
    let mut found: Vec<(u8, u64, u32)> = Vec::new();
    for e in live.entries.iter() {
        let p = e.person as usize;
        if p >= cols.resident_code.len() || e.reason == Reason::Cancel {
            continue;
        }
        let v = live.values_of(e);
        if e.mask & group::RESIDENT_CODE != 0 && v.resident_code != cols.resident_code[p] {
            found.push((0, v.resident_code, e.person));
        }
        if e.mask & group::MY_NUMBER != 0 && v.my_number != cols.my_number[p] {
            found.push((1, v.my_number, e.person));
        }
    }
    found.sort_unstable();
    found.dedup();
    let names = ["resident_code", "my_number"];
    let schema = Schema::new(vec![
        Field::new("kind", DataType::Utf8, false),
        Field::new("value", DataType::UInt64, false),
        Field::new("person", DataType::UInt32, false),
    ]);
    Ok(RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(arrow_array::StringArray::from_iter_values(
                found.iter().map(|f| names[f.0 as usize]),
            )),
            Arc::new(arrow_array::UInt64Array::from_iter_values(
                found.iter().map(|f| f.1),
            )),
            Arc::new(arrow_array::UInt32Array::from_iter_values(
                found.iter().map(|f| f.2),
            )),
        ],
    )?)
}
