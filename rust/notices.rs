//! 転入通知 (move-in notices): when a municipality records the `move_in` of a resident another
//! municipality held, the former one is owed a notice (住基法 第9条第1項) — who moved, from
//! where to where, and when. A `cancel` of that `move_in` owes it a second notice.
//!
//! A notice is not a second record beside the change: it is the change, noted when its entry is
//! pushed (applied, redone from the log, or loaded from a snapshot's history), so it is created
//! in the same atomic step, is durable exactly when the change is, and is never owed for a change
//! that did not happen. Notices are numbered by their change's number (entries counted from the
//! registry's first change, origins excluded), which stays the same across restarts and
//! checkpoints: a municipality's cursor is the number of the last notice it acknowledged. A
//! shard of a sharded registry numbers its changes as its front end says (numbers of the whole
//! registry's changes, logged with them), so that every shard's notices merge in order.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use arrow_array::builder::{
    Date32Builder, StringBuilder, TimestampMicrosecondBuilder, UInt64Builder, UInt8Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};

use crate::error::Result;
use crate::history::{dict_text, Cut, Dict, Entry, Live, Reason, Values, View, NONE};
use crate::storage::RegistryData;

/// One notice owed: the entry that owes it and the municipality (key) it is owed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notice {
    pub entry: u32,
    pub municipality: u16,
}

/// Push `entry` into `live` (a snapshot's history entry where `historic`), noting the notice it
/// owes: a `move_in` to the municipality that held the resident before it, a `cancel` of one to
/// the same municipality; `number`: its change number where a front end numbers them (checked
/// by the caller to follow the last). Every path that adds an entry goes through here.
pub fn push(
    data: &RegistryData,
    live: &Live,
    entry: Entry,
    historic: bool,
    number: Option<u64>,
) -> u32 {
    let owed = match entry.reason {
        Reason::MoveIn => {
            let cut = Cut {
                batch: entry.batch,
                recorded: i64::MAX,
                effective: i32::MAX,
            };
            View::new(data, live, cut)
                .resolve(entry.person)
                .map(|v| v.resident.person.municipality)
        }
        Reason::Cancel => find(live, entry.cancels).map(|n| n.municipality),
        _ => None,
    };
    if let Some(number) = number {
        // Before the entry: a reader that sees the entry finds its number.
        live.numbers.push(number);
        live.numbered.store(true, Ordering::Release);
    }
    let at = if historic {
        live.push_historic(entry)
    } else {
        live.push(entry)
    };
    if let Some(municipality) = owed {
        live.notices.push(Notice {
            entry: at,
            municipality,
        });
    }
    at
}

/// The position in `live.notices` of the first notice of entry `at` or later.
fn first_at(live: &Live, at: u32) -> usize {
    let (mut lo, mut hi) = (0usize, live.notices.count());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if live.notices.get(mid).is_some_and(|n| n.entry < at) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The notice entry `at` owes, if any.
fn find(live: &Live, at: u32) -> Option<Notice> {
    if at == NONE {
        return None;
    }
    live.notices
        .get(first_at(live, at))
        .copied()
        .filter(|n| n.entry == at)
}

/// The change number of entry `at`: the number its front end gave it, or else entries counted
/// from 1, origins excluded.
pub fn change_number(live: &Live, at: u32) -> u64 {
    let after_origins = at as u64 - live.origins.load(Ordering::Acquire) as u64;
    if live.numbered.load(Ordering::Acquire) {
        return live
            .numbers
            .get(after_origins as usize)
            .copied()
            .unwrap_or(u64::MAX);
    }
    after_origins + 1
}

/// The number of the newest change (0 if none).
pub fn last_number(live: &Live) -> u64 {
    let count = live.entries.count() as u32;
    if count == live.origins.load(Ordering::Acquire) {
        return 0;
    }
    change_number(live, count - 1)
}

/// The position of the first entry whose change number is after `after` (past the last entry
/// where none is).
pub fn first_after(live: &Live, after: u64) -> u32 {
    let origins = live.origins.load(Ordering::Acquire);
    if !live.numbered.load(Ordering::Acquire) {
        return (after + origins as u64).min(u32::MAX as u64) as u32;
    }
    let (mut lo, mut hi) = (0usize, live.numbers.count());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if live.numbers.get(mid).is_some_and(|&n| n <= after) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    origins + lo as u32
}

/// The schema metadata key of a feed's answer: the number of the last change (or notice) it
/// examined, whether it was the caller's or not. A reader with nothing found asks after it next
/// time, so a quiet reader does not scan the same tail again at every wake-up.
pub const SCANNED_THROUGH: &str = "juki.scanned_through";

/// `batch` with [`SCANNED_THROUGH`] set to `scanned`.
pub fn with_scanned(batch: RecordBatch, scanned: u64) -> Result<RecordBatch> {
    let schema = batch.schema().as_ref().clone().with_metadata(
        [(SCANNED_THROUGH.to_string(), scanned.to_string())]
            .into_iter()
            .collect::<std::collections::HashMap<String, String>>(),
    );
    Ok(batch.with_schema(Arc::new(schema))?)
}

/// The notices owed to municipality key `municipality` that `view` sees, numbered after
/// `after`, oldest first, at most `limit` (and [`SCANNED_THROUGH`]).
pub fn notices(view: &View, municipality: u16, after: u64, limit: usize) -> Result<RecordBatch> {
    let live = view.live;
    let mut rows = Builders::default();
    let mut i = first_at(live, first_after(live, after));
    let mut found = 0;
    let mut scanned = after;
    while found < limit {
        let Some(n) = live.notices.get(i).copied() else {
            break;
        };
        i += 1;
        let Some(e) = live.entries.get(n.entry as usize) else {
            break;
        };
        // Entries are in batch order: the first one this view does not see ends the walk.
        if e.batch > view.cut.batch {
            break;
        }
        scanned = change_number(live, n.entry);
        if n.municipality != municipality {
            continue;
        }
        // A cancel's notice describes the move_in it undid.
        let (kind, moved) = if e.reason == Reason::Cancel {
            ("move_in_cancelled", e.cancels())
        } else {
            ("move_in", n.entry)
        };
        let Some(move_in) = live.entries.get(moved as usize) else {
            continue;
        };
        let (Some(before), Some(after)) = (
            view.resolve_below(e.person, moved),
            view.resolve_below(e.person, moved + 1),
        ) else {
            continue;
        };
        rows.push(view, change_number(live, n.entry), kind, &before, &after);
        rows.effective.append_value(move_in.effective);
        rows.reported.append_value(move_in.reported);
        rows.recorded.append_value(live.recorded_at(e.batch));
        rows.by.append_value(format!("{:06}", e.municipality()));
        rows.sequence.append_value(e.sequence());
        found += 1;
    }
    with_scanned(rows.finish()?, scanned)
}

/// How many notices `view` sees owed to each municipality key in `after` (a key's last
/// acknowledged notice number) and numbered after it: the backlog an operator watches. One walk
/// from the smallest cursor.
pub fn backlog(view: &View, after: &[(u16, u64)]) -> Vec<u64> {
    let live = view.live;
    let mut counts = vec![0u64; after.len()];
    let Some(lowest) = after.iter().map(|&(_, a)| a).min() else {
        return counts;
    };
    let mut cursor = std::collections::HashMap::with_capacity(after.len());
    for (slot, &(key, a)) in after.iter().enumerate() {
        cursor.insert(key, (slot, a));
    }
    let mut i = first_at(live, first_after(live, lowest));
    while let Some(n) = live.notices.get(i).copied() {
        i += 1;
        let Some(e) = live.entries.get(n.entry as usize) else {
            break;
        };
        if e.batch > view.cut.batch {
            break;
        }
        if let Some(&(slot, a)) = cursor.get(&n.municipality) {
            if change_number(live, n.entry) > a {
                counts[slot] += 1;
            }
        }
    }
    counts
}

/// The columns of [`notices`].
#[derive(Default)]
struct Builders {
    notice: UInt64Builder,
    kind: StringBuilder,
    resident_code: StringBuilder,
    family_name: StringBuilder,
    family_name_kana: StringBuilder,
    given_name: StringBuilder,
    given_name_kana: StringBuilder,
    birth_date: Date32Builder,
    sex: UInt8Builder,
    from: [StringBuilder; 3],
    to: [StringBuilder; 4],
    effective: Date32Builder,
    reported: Date32Builder,
    recorded: TimestampMicrosecondBuilder,
    by: StringBuilder,
    sequence: UInt64Builder,
}

impl Builders {
    /// The person and the two addresses of one notice.
    fn push(&mut self, view: &View, number: u64, kind: &str, before: &Values, after: &Values) {
        let d = &view.data.dicts;
        let p = &after.resident.person;
        self.notice.append_value(number);
        self.kind.append_value(kind);
        self.resident_code
            .append_value(crate::ids::IdKind::ResidentCode.format(after.resident_code));
        self.family_name
            .append_value(dict_text(view, Dict::Family, p.family, false));
        self.family_name_kana
            .append_value(dict_text(view, Dict::Family, p.family, true));
        self.given_name
            .append_value(dict_text(view, Dict::Given, p.given, false));
        self.given_name_kana
            .append_value(dict_text(view, Dict::Given, p.given, true));
        self.birth_date.append_value(p.birth_date);
        self.sex.append_value(p.sex);
        let place = |v: &Values| {
            (
                d.municipality_code
                    .value(v.resident.person.municipality as usize)
                    .to_string(),
                dict_text(view, Dict::Town, v.resident.place.town, false),
                dict_text(view, Dict::Block, v.resident.place.block, false),
            )
        };
        let (m, town, block) = place(before);
        self.from[0].append_value(m);
        self.from[1].append_value(town);
        self.from[2].append_value(block);
        let (m, town, block) = place(after);
        self.to[0].append_value(m);
        self.to[1].append_value(
            d.municipality_name
                .value(after.resident.person.municipality as usize),
        );
        self.to[2].append_value(town);
        self.to[3].append_value(block);
    }

    fn finish(mut self) -> Result<RecordBatch> {
        let text = |name: &str| Field::new(name, DataType::Utf8, false);
        let date = |name: &str| Field::new(name, DataType::Date32, false);
        let schema = Schema::new(vec![
            Field::new("notice", DataType::UInt64, false),
            text("kind"),
            text("resident_code"),
            text("family_name"),
            text("family_name_kana"),
            text("given_name"),
            text("given_name_kana"),
            date("birth_date"),
            Field::new("sex", DataType::UInt8, false),
            text("from_municipality_code"),
            text("from_address_town"),
            text("from_address_block"),
            text("to_municipality_code"),
            text("to_municipality_name"),
            text("to_address_town"),
            text("to_address_block"),
            date("effective_date"),
            date("reported_date"),
            Field::new(
                "recorded_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            text("recorded_by"),
            Field::new("sequence", DataType::UInt64, false),
        ]);
        let [f0, f1, f2] = &mut self.from;
        let [t0, t1, t2, t3] = &mut self.to;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.notice.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.resident_code.finish()),
            Arc::new(self.family_name.finish()),
            Arc::new(self.family_name_kana.finish()),
            Arc::new(self.given_name.finish()),
            Arc::new(self.given_name_kana.finish()),
            Arc::new(self.birth_date.finish()),
            Arc::new(self.sex.finish()),
            Arc::new(f0.finish()),
            Arc::new(f1.finish()),
            Arc::new(f2.finish()),
            Arc::new(t0.finish()),
            Arc::new(t1.finish()),
            Arc::new(t2.finish()),
            Arc::new(t3.finish()),
            Arc::new(self.effective.finish()),
            Arc::new(self.reported.finish()),
            Arc::new(self.recorded.finish().with_timezone("UTC")),
            Arc::new(self.by.finish()),
            Arc::new(self.sequence.finish()),
        ];
        Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
    }
}
