//! Changes (異動): a table of change records checked row by row and applied to the living
//! registry (see `history`), with the durable log's record of what each batch did.
//!
//! The contract (columns, reasons, their rules and effects) is docs/changes.md. One writer at a
//! time checks a batch against the registry as the batches before it left it (its own earlier
//! rows included), appends an entry per applied row, logs the batch and, once the log is durable,
//! publishes it; a rejected row changes nothing and the rest of the batch applies. What a batch
//! did is logged physically (entries with the identifiers they issued, new dictionary values,
//! rejections, code counters), so replaying the log redoes it without checking it again.
//!
//! # Identifiers issued
//! - 住民票コード: each municipality is designated its own codes by the national body
//!   (住基法 第30条の2–3). Here municipality key m's designated codes are the images of
//!   `m, m + M, m + 2M, …` (M municipalities) under a keyed permutation of the 10-digit bases;
//!   the engine keeps the next unused one per municipality and skips any code already held.
//! - 個人番号: converted from the 住民票コード by a keyed permutation of `code × 10 + generation`
//!   over the 11-digit bases: deterministic and collision-free (a bijection). A replacement
//!   (個人番号変更, 番号法 第8条第2項) takes the next generation, so it differs from every former
//!   number; after it, the number no longer follows from the code alone. A number already held
//!   (the synthetic registry's were drawn independently) is skipped to the next generation.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Int64Type};
use arrow_array::{Array, ArrayRef, Date32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};

use crate::error::{echo, JukiError, Result};
use crate::generate::Permutation;
use crate::history::{group, Dict, Entry, Live, Reason, Values, View, NONE, NO_DATE};
use crate::ids::IdKind;
use crate::storage::{RegistryData, STATUS_VALUES};

const RESIDENT: u8 = 0;
const MOVED_ABROAD: u8 = 1;
const DECEASED: u8 = 2;
const REMOVED: u8 = 3;
const CARD_NONE: u8 = 0;
const CARD_APPLIED: u8 = 1;
const CARD_ISSUED: u8 = 2;

/// Sequence numbers must be below this (they share a 64-bit key with the municipality code).
pub const MAX_SEQUENCE: u64 = 1 << 43;
/// How many times a 個人番号 may be replaced (the conversion's generation is one digit).
const MAX_GENERATION: u8 = 9;

/// The most characters a name, reading or address part may hold.
pub const MAX_TEXT_CHARS: usize = 128;

/// Outcomes of a change row, as the result table spells them.
pub const OUTCOMES: [&str; 3] = ["applied", "duplicate", "rejected"];

fn seen_key(municipality: u32, sequence: u64) -> u64 {
    (municipality as u64) << 43 | sequence
}

/// A (municipality, sequence) seen before: the entry it applied, or the rejection's message.
#[derive(Clone)]
enum Seen {
    Applied(u32),
    Rejected(Refusal, Box<str>),
}

/// The 住民票コード bases (ten digits before the check digit) that designation shares out.
const CODE_SPACE: u64 = 10_000_000_000;

/// How many code positions the designation gives municipality key `mkey` of `m`: its bases
/// are the positions `mkey + m·j` below [`CODE_SPACE`], each permuted.
fn designated(m: u64, mkey: u16) -> u64 {
    (CODE_SPACE - mkey as u64).div_ceil(m)
}

/// Every (municipality, sequence) seen: applied ones by an open-addressing table of entry
/// indices (4 bytes a slot; the key is the entry's own, read back to compare), rejected ones
/// (few) in a map to their message.
#[derive(Default)]
struct SeenIndex {
    slots: Vec<u32>,
    applied: usize,
    rejected: HashMap<u64, (Refusal, Box<str>)>,
}

impl SeenIndex {
    fn home(&self, key: u64) -> usize {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - self.slots.len().trailing_zeros()))
            as usize
    }

    fn get(&self, key: u64, live: &Live) -> Option<Seen> {
        if let Some((code, m)) = self.rejected.get(&key) {
            return Some(Seen::Rejected(*code, m.clone()));
        }
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        loop {
            let at = self.slots[i];
            if at == NONE {
                return None;
            }
            if live.entries.get(at as usize).is_some_and(|e| e.key == key) {
                return Some(Seen::Applied(at));
            }
            i = (i + 1) & mask;
        }
    }

    fn insert(&mut self, key: u64, seen: Seen, live: &Live) {
        match seen {
            Seen::Rejected(code, message) => {
                self.rejected.insert(key, (code, message));
            }
            Seen::Applied(at) => {
                if (self.applied + 1) * 2 > self.slots.len() {
                    let old = std::mem::take(&mut self.slots);
                    self.slots = vec![NONE; (old.len() * 2).max(1 << 12)];
                    self.applied = 0;
                    for at in old.into_iter().filter(|&a| a != NONE) {
                        let k = live.entries.get(at as usize).map_or(0, |e| e.key);
                        self.place(k, at);
                    }
                }
                self.place(key, at);
            }
        }
    }

    fn place(&mut self, key: u64, at: u32) {
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        while self.slots[i] != NONE {
            i = (i + 1) & mask;
        }
        self.slots[i] = at;
        self.applied += 1;
    }

    fn len(&self) -> usize {
        self.applied + self.rejected.len()
    }
}

/// A dictionary's (value, reading) → key, for the writer to reuse keys.
type DictMap = HashMap<(Box<str>, Box<str>), u32>;

/// The writer's state: what only `apply` reads and writes (under the registry's writer lock).
pub struct Writer {
    /// The next batch number.
    pub next_batch: u32,
    seen: SeenIndex,
    /// Per municipality key: the next designated-code position.
    issued: Vec<u64>,
    municipalities: HashMap<Box<str>, u16>,
    dicts: Option<[DictMap; 4]>,
    codes: Permutation,
    numbers: Permutation,
    /// Where this registry is one shard of several, its share of identifier issuance.
    pub part: Option<Part>,
}

/// A shard's share of identifier issuance (docs/sharding.md): of each municipality's designated
/// code positions it issues only `k, k + of, k + 2·of, …`, so no two shards issue one code; and
/// it skips every identifier any person held when the registry was split (`held`, sorted), not
/// only those of its own persons, so no shard issues one another shard's resident holds.
/// A 個人番号 is converted from a code unique to its shard, so it is unique as well once the
/// numbers held at the split are skipped.
pub struct Part {
    pub k: u64,
    pub of: u64,
    /// Per identifier kind (My Number, resident code), every one held at the split, ascending.
    pub held: [arrow_buffer::ScalarBuffer<u64>; 2],
}

impl Part {
    /// A share checked: `k < of`; `held` as [`read_held`] gave them.
    pub fn new(k: u64, of: u64, held: [arrow_buffer::ScalarBuffer<u64>; 2]) -> Result<Part> {
        if of == 0 || k >= of {
            return Err(JukiError::InvalidInput(format!(
                "shard {k} of {of}: a shard is one of 1 or more, numbered from 0"
            )));
        }
        Ok(Part { k, of, held })
    }

    fn held(&self, kind: IdKind, value: u64) -> bool {
        let values = match kind {
            IdKind::MyNumber => &self.held[0],
            _ => &self.held[1],
        };
        values.binary_search(&value).is_ok()
    }
}

/// The identifiers of a `held_<kind>.u64` file (ascending little-endian uint64s), mapped. The
/// file is read through once to check that they ascend strictly (a damaged file is refused,
/// naming it), then mapped: the mapping's pages are touched only by the few binary searches
/// issuing an identifier, so the process holds almost none of them.
pub fn read_held(path: &std::path::Path) -> Result<arrow_buffer::ScalarBuffer<u64>> {
    use std::io::Read;
    let io = |e: std::io::Error| JukiError::Io(format!("{}: {e}", path.display()));
    let corrupt = |why: String| JukiError::SnapshotCorrupt(format!("{}: {why}", path.display()));
    let mut file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len % 8 != 0 {
        return Err(corrupt(format!("{len} bytes, not whole uint64s")));
    }
    let mut chunk = vec![0u8; 1 << 23];
    let (mut left, mut last, mut at) = (len, None, 0u64);
    while left > 0 {
        let n = chunk.len().min(left as usize);
        file.read_exact(&mut chunk[..n]).map_err(io)?;
        left -= n as u64;
        for v in chunk[..n].chunks_exact(8) {
            let v = u64::from_le_bytes(v.try_into().expect("8 bytes"));
            if last.is_some_and(|last| v <= last) {
                return Err(corrupt(format!(
                    "identifiers not in ascending order at {at}"
                )));
            }
            (last, at) = (Some(v), at + 1);
        }
    }
    if len == 0 {
        return Ok(arrow_buffer::ScalarBuffer::from(Vec::<u64>::new()));
    }
    let buffer = crate::memory::map_file(path).map_err(io)?;
    if buffer.len() as u64 != len {
        return Err(corrupt("changed while it was read".into()));
    }
    let n = buffer.len() / 8;
    Ok(arrow_buffer::ScalarBuffer::new(buffer, 0, n))
}

impl Writer {
    /// A writer over `data` with no change applied; `key` keys the identifier permutations.
    pub fn new(data: &RegistryData, key: u64) -> Writer {
        let municipalities = data
            .dicts
            .municipality_code
            .iter()
            .enumerate()
            .filter_map(|(k, c)| Some((c?.into(), k as u16)))
            .collect();
        Writer {
            next_batch: 1,
            seen: SeenIndex::default(),
            issued: vec![0; data.dicts.municipality_code.len()],
            municipalities,
            dicts: None,
            codes: Permutation::new(CODE_SPACE, key ^ 0x7263_6f64),
            numbers: Permutation::new(100_000_000_000, key ^ 0x6d6e_756d),
            part: None,
        }
    }

    /// How many changes (applied or rejected) the writer has seen.
    pub fn seen_len(&self) -> usize {
        self.seen.len()
    }

    /// Whether the change (`municipality` code, `sequence`) was seen: 1 applied, 2 rejected,
    /// 0 not seen (or not a change this registry could remember).
    pub fn seen(&self, live: &Live, municipality: &str, sequence: i64) -> u8 {
        let Ok(code) = IdKind::LocalGovernment.parse(municipality) else {
            return 0;
        };
        let Some(sequence) = u64::try_from(sequence).ok().filter(|&s| s < MAX_SEQUENCE) else {
            return 0;
        };
        match self.seen.get(seen_key(code as u32, sequence), live) {
            Some(Seen::Applied(_)) => 1,
            Some(Seen::Rejected(..)) => 2,
            None => 0,
        }
    }
}

/// A change table's columns, each of its documented type (null where absent).
struct Table {
    n: usize,
    municipality: StringArray,
    sequence: Int64Array,
    reason: StringArray,
    effective: Date32Array,
    reported: Date32Array,
    resident_code: StringArray,
    my_number: StringArray,
    family_name: StringArray,
    family_name_kana: StringArray,
    given_name: StringArray,
    given_name_kana: StringArray,
    birth_date: Date32Array,
    sex: Int64Array,
    address_town: StringArray,
    address_block: StringArray,
    moving_to: StringArray,
    cancels: Int64Array,
}

/// The change table's columns and their kinds.
const TEXT: [&str; 11] = [
    "municipality",
    "reason",
    "resident_code",
    "my_number",
    "family_name",
    "family_name_kana",
    "given_name",
    "given_name_kana",
    "address_town",
    "address_block",
    "moving_to",
];
const DATES: [&str; 3] = ["effective_date", "reported_date", "birth_date"];
const INTS: [&str; 3] = ["sequence", "sex", "cancels"];
const REQUIRED: [&str; 5] = [
    "municipality",
    "sequence",
    "reason",
    "effective_date",
    "reported_date",
];

fn strict(array: &dyn Array, to: &DataType, name: &str) -> Result<ArrayRef> {
    let options = arrow_cast::CastOptions {
        safe: false,
        ..Default::default()
    };
    arrow_cast::cast_with_options(array, to, &options)
        .map_err(|e| JukiError::InvalidInput(format!("changes column '{name}': {e}")))
}

impl Table {
    fn new(batch: &RecordBatch) -> Result<Table> {
        let schema = batch.schema();
        for f in schema.fields() {
            let known = TEXT.contains(&f.name().as_str())
                || DATES.contains(&f.name().as_str())
                || INTS.contains(&f.name().as_str());
            if !known {
                return Err(JukiError::InvalidInput(format!(
                    "changes column '{}' is not part of a change record (docs/changes.md): \
                     expected {}, {}, {}",
                    echo(f.name().as_bytes()),
                    TEXT.join(", "),
                    DATES.join(", "),
                    INTS.join(", ")
                )));
            }
        }
        for name in REQUIRED {
            if batch.column_by_name(name).is_none() {
                return Err(JukiError::InvalidInput(format!(
                    "changes have no '{name}' column"
                )));
            }
        }
        let n = batch.num_rows();
        let text = |name: &str| -> Result<StringArray> {
            match batch.column_by_name(name) {
                None => Ok(StringArray::new_null(n)),
                Some(a)
                    if crate::query::is_text(a.data_type()) || a.data_type() == &DataType::Null =>
                {
                    Ok(strict(a, &DataType::Utf8, name)?.as_string::<i32>().clone())
                }
                Some(a) => Err(JukiError::InvalidInput(format!(
                    "changes column '{name}' must hold strings, not {}",
                    crate::query::shown_type(a.data_type())
                ))),
            }
        };
        let date = |name: &str| -> Result<Date32Array> {
            match batch.column_by_name(name) {
                None => Ok(Date32Array::new_null(n)),
                Some(a) => match a.data_type() {
                    DataType::Date32
                    | DataType::Null
                    | DataType::Date64
                    | DataType::Timestamp(..) => Ok(strict(a, &DataType::Date32, name)?
                        .as_primitive::<Date32Type>()
                        .clone()),
                    t if crate::query::is_text(t) => Ok(strict(a, &DataType::Date32, name)?
                        .as_primitive::<Date32Type>()
                        .clone()),
                    other => Err(JukiError::InvalidInput(format!(
                        "changes column '{name}' must hold dates (date32), not {}",
                        crate::query::shown_type(other)
                    ))),
                },
            }
        };
        let int = |name: &str| -> Result<Int64Array> {
            match batch.column_by_name(name) {
                None => Ok(Int64Array::new_null(n)),
                Some(a) if a.data_type().is_integer() || a.data_type() == &DataType::Null => {
                    Ok(strict(a, &DataType::Int64, name)?
                        .as_primitive::<Int64Type>()
                        .clone())
                }
                Some(a) => Err(JukiError::InvalidInput(format!(
                    "changes column '{name}' must hold integers, not {}",
                    crate::query::shown_type(a.data_type())
                ))),
            }
        };
        Ok(Table {
            n,
            municipality: text("municipality")?,
            sequence: int("sequence")?,
            reason: text("reason")?,
            effective: date("effective_date")?,
            reported: date("reported_date")?,
            resident_code: text("resident_code")?,
            my_number: text("my_number")?,
            family_name: text("family_name")?,
            family_name_kana: text("family_name_kana")?,
            given_name: text("given_name")?,
            given_name_kana: text("given_name_kana")?,
            birth_date: date("birth_date")?,
            sex: int("sex")?,
            address_town: text("address_town")?,
            address_block: text("address_block")?,
            moving_to: text("moving_to")?,
            cancels: int("cancels")?,
        })
    }
}

fn get_text(a: &StringArray, i: usize) -> Option<&str> {
    (!a.is_null(i)).then(|| a.value(i))
}

fn get_date(a: &Date32Array, i: usize) -> Option<i32> {
    (!a.is_null(i)).then(|| a.value(i))
}

fn get_int(a: &Int64Array, i: usize) -> Option<i64> {
    (!a.is_null(i)).then(|| a.value(i))
}

use crate::history::iso;

/// What one batch did, as the log records it and replay redoes it.
#[derive(Default)]
pub struct BatchRecord {
    /// The batch number.
    pub batch: u32,
    /// Its commit time (µs since the epoch).
    pub recorded: i64,
    /// New dictionary values: (dictionary, value, reading), in key order per dictionary.
    pub ext: Vec<(Dict, String, String)>,
    /// Entries appended, in order (`prev` is recomputed on replay).
    pub entries: Vec<Entry>,
    /// Identifiers issued: (kind, value, person).
    pub ids: Vec<(IdKind, u64, u32)>,
    /// Rejected rows: (municipality, sequence, message).
    pub rejections: Vec<(u32, u64, Refusal, String)>,
    /// Designated-code counters moved: (municipality key, next position).
    pub issued: Vec<(u16, u64)>,
    /// Persons created.
    pub created: u32,
    /// Each entry's change number where a front end numbers them (a shard's); else empty.
    pub numbers: Vec<u64>,
}

/// Per-row outcome of `apply`.
pub struct RowResult {
    /// Index into [`OUTCOMES`].
    pub outcome: u8,
    /// Why a row was rejected.
    pub error: Option<(Refusal, String)>,
    /// The person the row is about (after it), where known.
    pub person: u32,
    /// The entry the row applied (or the duplicate's first), or [`NONE`].
    pub entry: u32,
}

/// One row's reading: the validated change, before it touches the registry.
struct Change {
    municipality: u32,
    mkey: u16,
    sequence: u64,
    reason: Reason,
    effective: i32,
    reported: i32,
}

struct Ctx<'a> {
    data: &'a RegistryData,
    live: &'a Live,
    w: &'a mut Writer,
    rec: &'a mut BatchRecord,
    today: i32,
}

/// Why a row was rejected, as a machine reads it; the message says it for people, naming only
/// what the submitter sent or holds (never another municipality's resident's facts).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Refusal {
    /// The row itself is malformed or contradicts itself.
    Invalid = 0,
    /// No resident (or no change to cancel) has the identifier the row names.
    NotFound = 1,
    /// The submitting municipality may not make this change: it does not hold the resident,
    /// or a move_in has no pending move_out (転出証明書) to stand on.
    NotPermitted = 2,
    /// The resident's state does not allow it (already deceased, a card state out of order…).
    Conflict = 3,
}

/// The names of [`Refusal`]s, by code.
pub const REFUSALS: [&str; 4] = ["invalid", "not_found", "not_permitted", "conflict"];

impl Refusal {
    fn from_code(code: u8) -> Option<Refusal> {
        [
            Refusal::Invalid,
            Refusal::NotFound,
            Refusal::NotPermitted,
            Refusal::Conflict,
        ]
        .get(code as usize)
        .copied()
    }
}

/// A row's rejection.
struct RowErr {
    code: Refusal,
    message: String,
}

impl From<String> for RowErr {
    fn from(message: String) -> RowErr {
        RowErr {
            code: Refusal::Invalid,
            message,
        }
    }
}

impl std::fmt::Display for RowErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<&str> for RowErr {
    fn from(message: &str) -> RowErr {
        message.to_string().into()
    }
}

fn refuse(code: Refusal, message: String) -> RowErr {
    RowErr { code, message }
}

impl Ctx<'_> {
    fn view(&self) -> View<'_> {
        View::new(
            self.data,
            self.live,
            crate::history::Cut {
                batch: self.rec.batch,
                recorded: i64::MAX,
                effective: i32::MAX,
            },
        )
    }

    fn in_use(&self, kind: IdKind, value: u64) -> bool {
        self.view().person_of(kind, value).is_some()
            || self.w.part.as_ref().is_some_and(|p| p.held(kind, value))
    }

    /// The next unused 住民票コード designated to municipality `mkey`; an error once all of them
    /// have been issued.
    fn issue_code(&mut self, mkey: u16) -> std::result::Result<u64, RowErr> {
        let m = self.w.issued.len() as u64;
        let (k, of) = self.w.part.as_ref().map_or((0, 1), |p| (p.k, p.of));
        loop {
            // A shard's counter counts its own positions: k, k + of, …
            let j = self.w.issued[mkey as usize] * of + k;
            if j >= designated(m, mkey) {
                return Err(refuse(
                    Refusal::Conflict,
                    format!(
                        "municipality {}: every 住民票コード designated to it has been issued",
                        self.data.dicts.municipality_code.value(mkey as usize)
                    ),
                ));
            }
            self.w.issued[mkey as usize] += 1;
            let base = self.w.codes.apply(mkey as u64 + m * j);
            let code = IdKind::ResidentCode.with_check_digit(base);
            if !self.in_use(IdKind::ResidentCode, code) {
                self.rec.issued.retain(|(k, _)| *k != mkey);
                self.rec.issued.push((mkey, self.w.issued[mkey as usize]));
                return Ok(code);
            }
        }
    }

    /// The 個人番号 converted from `code` at the first free generation from `generation`.
    fn convert(&self, code: u64, generation: u8) -> std::result::Result<(u64, u8), RowErr> {
        let base = IdKind::ResidentCode.base_of(code);
        for g in generation..=MAX_GENERATION {
            let n = IdKind::MyNumber.with_check_digit(self.w.numbers.apply(base * 10 + g as u64));
            if !self.in_use(IdKind::MyNumber, n) {
                return Ok((n, g));
            }
        }
        Err(format!(
            "my_number: the 個人番号 was replaced {MAX_GENERATION} times, the most the conversion allows"
        ).into())
    }

    fn dict_key(&mut self, dict: Dict, value: &str, reading: &str) -> u32 {
        if self.w.dicts.is_none() {
            let d = &self.data.dicts;
            let pairs = |a: &StringArray, b: Option<&StringArray>| {
                let mut m = HashMap::with_capacity(a.len());
                for i in 0..a.len() {
                    let r = b.map_or("", |b| b.value(i));
                    m.entry((a.value(i).into(), r.into())).or_insert(i as u32);
                }
                m
            };
            let mut maps = [
                pairs(&d.family_name, Some(&d.family_name_kana)),
                pairs(&d.given_name, Some(&d.given_name_kana)),
                pairs(&d.address_town, None),
                pairs(&d.address_block, None),
            ];
            for (k, m) in maps.iter_mut().enumerate() {
                let base = self.live.base_dicts[k];
                for (j, (v, r)) in self.live.ext[k].values.iter() {
                    m.entry((v.clone(), r.clone())).or_insert(base + j as u32);
                }
            }
            self.w.dicts = Some(maps);
        }
        let maps = self.w.dicts.as_mut().expect("built above");
        let key: (Box<str>, Box<str>) = (value.into(), reading.into());
        if let Some(&k) = maps[dict as usize].get(&key) {
            return k;
        }
        let k = self.live.extend(dict, value, reading);
        maps[dict as usize].insert(key, k);
        self.rec
            .ext
            .push((dict, value.to_string(), reading.to_string()));
        k
    }

    /// Set `v`'s address to (`town`, `block`) in municipality `mkey`.
    fn set_address(&mut self, v: &mut Values, mkey: u16, (town, block): (&str, &str)) {
        v.resident.place.town = self.dict_key(Dict::Town, town, "");
        v.resident.place.block = self.dict_key(Dict::Block, block, "");
        v.resident.person.municipality = mkey;
    }

    /// The stored (value, reading) of key `k` of `dict`.
    fn dict_value(&self, dict: Dict, k: u32) -> (String, String) {
        let d = &self.data.dicts;
        let base = self.live.base_dicts[dict as usize];
        if k < base {
            let k = k as usize;
            return match dict {
                Dict::Family => (
                    d.family_name.value(k).into(),
                    d.family_name_kana.value(k).into(),
                ),
                Dict::Given => (
                    d.given_name.value(k).into(),
                    d.given_name_kana.value(k).into(),
                ),
                Dict::Town => (d.address_town.value(k).into(), String::new()),
                Dict::Block => (d.address_block.value(k).into(), String::new()),
            };
        }
        self.live
            .ext_value(dict, k as usize)
            .map(|(v, r)| (v.to_string(), r.to_string()))
            .unwrap_or_default()
    }
}

/// Apply one row: the entry to append, or why the row is rejected.
fn check_row(ctx: &mut Ctx, t: &Table, i: usize, c: &Change) -> std::result::Result<Entry, RowErr> {
    let reason = c.reason;
    let mut entry = Entry {
        person: NONE,
        prev: NONE,
        batch: ctx.rec.batch,
        mask: 0,
        reason,
        cancels: NONE,
        municipality: c.municipality,
        sequence: c.sequence,
        effective: c.effective,
        reported: c.reported,
        recorded: ctx.rec.recorded,
        set: Values::default(),
    };
    let r = reason.name();
    if c.effective > ctx.today && reason != Reason::MoveOut {
        return Err(format!(
            "{r}: effective_date {} lies in the future (only a move_out's 転出予定日 may)",
            iso(c.effective)
        )
        .into());
    }
    if c.reported > ctx.today {
        return Err(format!("{r}: reported_date {} lies in the future", iso(c.reported)).into());
    }
    // A 転出届 and a 国外転出届 are filed ahead of the move (住基法 第24条); nothing else is.
    if c.reported < c.effective && !matches!(reason, Reason::MoveOut | Reason::MoveAbroad) {
        return Err(format!(
            "{r}: reported_date {} is before the effective_date {} (only a move_out or a \
             move_abroad is reported ahead)",
            iso(c.reported),
            iso(c.effective)
        )
        .into());
    }
    if reason == Reason::Cancel {
        let Some(target) = get_int(&t.cancels, i) else {
            return Err(
                "cancel: the cancels column must name the sequence number to cancel".into(),
            );
        };
        let target_seq =
            u64::try_from(target).map_err(|_| format!("cancel: cancels {target} is negative"))?;
        let entry_at = match ctx
            .w
            .seen
            .get(seen_key(c.municipality, target_seq), ctx.live)
        {
            Some(Seen::Applied(e)) => e,
            Some(Seen::Rejected(..)) => {
                return Err(refuse(
                    Refusal::Conflict,
                    format!(
                    "cancel: change {target_seq} of {} was rejected: there is nothing to cancel",
                    c.municipality
                ),
                ))
            }
            None => {
                return Err(refuse(
                    Refusal::NotFound,
                    format!("cancel: {} has no change {target_seq}", c.municipality),
                ))
            }
        };
        let e = *ctx
            .live
            .entries
            .get(entry_at as usize)
            .expect("seen entries exist");
        if e.reason == Reason::Cancel {
            return Err(format!("cancel: change {target_seq} is itself a cancel").into());
        }
        let view = ctx.view();
        let chain = view.chain(e.person);
        if chain.first().map(|(at, _)| *at) != Some(entry_at) {
            return Err(refuse(
                Refusal::Conflict,
                format!("cancel: a later change touched the resident of change {target_seq} (or it was cancelled already)"),
            ));
        }
        entry.person = e.person;
        entry.cancels = entry_at;
        return Ok(entry);
    }
    let rc = get_text(&t.resident_code, i);
    let mn = get_text(&t.my_number, i);
    let named = match (rc, mn) {
        (Some(_), Some(_)) => {
            return Err(format!("{r}: give resident_code or my_number, not both").into());
        }
        (Some(v), None) => Some((IdKind::ResidentCode, v)),
        (None, Some(v)) => Some((IdKind::MyNumber, v)),
        (None, None) => None,
    };
    let creates = matches!(reason, Reason::Birth)
        || (matches!(reason, Reason::ReturnFromAbroad | Reason::OfficialEntry) && named.is_none());
    let names = [
        get_text(&t.family_name, i),
        get_text(&t.family_name_kana, i),
        get_text(&t.given_name, i),
        get_text(&t.given_name_kana, i),
    ];
    let address = (get_text(&t.address_town, i), get_text(&t.address_block, i));
    // A value becomes a dictionary value every reply may carry: bounded, and never empty.
    for (field, value) in [
        ("family_name", names[0]),
        ("family_name_kana", names[1]),
        ("given_name", names[2]),
        ("given_name_kana", names[3]),
        ("address_town", address.0),
        ("address_block", address.1),
    ] {
        if let Some(v) = value {
            let chars = v.chars().count();
            if chars == 0 || chars > MAX_TEXT_CHARS {
                return Err(format!(
                    "{r}: {field} must hold 1 to {MAX_TEXT_CHARS} characters, not {chars} ('{}')",
                    echo(v.as_bytes())
                )
                .into());
            }
        }
    }
    let birth = get_date(&t.birth_date, i);
    let sex = get_int(&t.sex, i);
    let check_sex = |s: i64| -> std::result::Result<u8, RowErr> {
        if s == 1 || s == 2 {
            Ok(s as u8)
        } else {
            Err(format!("{r}: sex {s} is not 1 (male) or 2 (female)").into())
        }
    };
    let need_address = || -> std::result::Result<(&str, &str), RowErr> {
        match address {
            (Some(town), Some(block)) => Ok((town, block)),
            _ => Err(format!("{r}: address_town and address_block are required").into()),
        }
    };
    if creates {
        if named.is_some() && reason == Reason::Birth {
            return Err("birth: a new person has no identifier yet (resident_code and my_number must be null)".into());
        }
        let [Some(fam), Some(fam_k), Some(giv), Some(giv_k)] = names else {
            return Err(format!(
                "{r}: family_name, family_name_kana, given_name and given_name_kana are required"
            )
            .into());
        };
        let Some(birth) = birth else {
            return Err(format!("{r}: birth_date is required").into());
        };
        let Some(sex) = sex else {
            return Err(format!("{r}: sex is required").into());
        };
        let sex = check_sex(sex)?;
        if reason == Reason::Birth && birth != c.effective {
            return Err(format!(
                "birth: effective_date {} is not the birth_date {}",
                iso(c.effective),
                iso(birth)
            )
            .into());
        }
        if birth > c.effective {
            return Err(
                (format!("{r}: birth_date {} is after the effective_date", iso(birth))).into(),
            );
        }
        let address = need_address()?;
        let s = &mut entry.set;
        ctx.set_address(s, c.mkey, address);
        let family = ctx.dict_key(Dict::Family, fam, fam_k);
        let given = ctx.dict_key(Dict::Given, giv, giv_k);
        let code = ctx.issue_code(c.mkey)?;
        let (number, generation) = ctx.convert(code, 0)?;
        let p = &mut s.resident.person;
        p.family = family;
        p.given = given;
        p.birth_date = birth;
        p.sex = sex;
        p.status = RESIDENT;
        s.resident.place.card = CARD_NONE;
        s.resident_code = code;
        s.my_number = number;
        s.generation = generation;
        s.moving_out = NO_DATE;
        s.moving_to = u16::MAX;
        entry.mask = group::ALL;
        entry.person =
            ctx.live.base_len + ctx.live.created.load(std::sync::atomic::Ordering::Relaxed);
        ctx.live
            .created
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ctx.rec.created += 1;
        ctx.rec.ids.push((IdKind::ResidentCode, code, entry.person));
        ctx.rec.ids.push((IdKind::MyNumber, number, entry.person));
        return Ok(entry);
    }
    let Some((kind, text)) = named else {
        return Err(format!("{r}: resident_code or my_number is required").into());
    };
    let value = kind.parse(text).map_err(|e| format!("{r}: {e}"))?;
    let view = ctx.view();
    let not_found = || {
        refuse(
            Refusal::NotFound,
            format!("{r}: no resident has {} {text}", kind.name()),
        )
    };
    let person = view.person_of(kind, value).ok_or_else(not_found)?;
    let cur = view.resolve(person).ok_or_else(not_found)?;
    drop(view);
    entry.person = person;
    let p = cur.resident.person;
    let status = STATUS_VALUES[p.status as usize];
    let holds = p.municipality == c.mkey;
    // Whether this municipality may make the change at all comes first, and its refusal names
    // nothing of the resident: every later check reads facts only the holder may learn.
    let permitted = match reason {
        // 転入: against a pending 転出 (the 転出証明書), from another municipality.
        Reason::MoveIn => p.status == RESIDENT && (holds || cur.moving_out != NO_DATE),
        // A return or an official entry registers the person here: any municipality may.
        Reason::ReturnFromAbroad | Reason::OfficialEntry => true,
        _ => holds,
    };
    if !permitted {
        return Err(refuse(
            Refusal::NotPermitted,
            if reason == Reason::MoveIn {
                format!(
                    "move_in: municipality {} cannot take in this resident: no move_out \
                     (転出証明書) of a living resident is pending",
                    c.municipality
                )
            } else {
                format!(
                    "{r}: municipality {} does not hold this resident{}",
                    c.municipality,
                    if reason == Reason::MoveWithin {
                        " (a move across municipalities is move_out then move_in)"
                    } else {
                        ""
                    }
                )
            },
        ));
    }
    let conflict = |message: String| refuse(Refusal::Conflict, message);
    if c.effective < p.birth_date {
        return Err(format!(
            "{r}: effective_date {} is before the birth_date {}",
            iso(c.effective),
            iso(p.birth_date)
        )
        .into());
    }
    let resident_only = |what: &str| -> std::result::Result<(), RowErr> {
        if p.status == RESIDENT {
            Ok(())
        } else {
            Err(conflict(format!(
                "{r}: the resident's status is {status}; {what}"
            )))
        }
    };
    let s = &mut entry.set;
    match reason {
        Reason::ReturnFromAbroad | Reason::OfficialEntry => {
            let (expected, word) = if reason == Reason::ReturnFromAbroad {
                (MOVED_ABROAD, "moved_abroad")
            } else {
                (REMOVED, "removed")
            };
            // Any municipality may register a return: its refusal says no more than that the
            // resident is not recorded so (not their status, which the holder alone may learn).
            if p.status != expected {
                return Err(conflict(format!(
                    "{r}: the resident is not recorded as {word}"
                )));
            }
            ctx.set_address(s, c.mkey, need_address()?);
            s.resident.person.status = RESIDENT;
            s.moving_out = NO_DATE;
            s.moving_to = u16::MAX;
            entry.mask = group::ADDRESS | group::STATUS | group::PENDING;
        }
        Reason::MoveOut => {
            resident_only("only a resident moves out")?;
            if cur.moving_out != NO_DATE {
                return Err(conflict(format!(
                    "move_out: a move_out dated {} is pending already",
                    iso(cur.moving_out)
                )));
            }
            s.moving_out = c.effective;
            s.moving_to = match get_text(&t.moving_to, i) {
                None => u16::MAX,
                Some(code) => *ctx.w.municipalities.get(code).ok_or_else(|| {
                    format!(
                        "move_out: moving_to {} is not a municipality of the registry",
                        echo(code.as_bytes())
                    )
                })?,
            };
            if s.moving_to == c.mkey {
                return Err("move_out: moving_to is the municipality itself (a move within it is move_within)".into());
            }
            entry.mask = group::PENDING;
        }
        Reason::MoveIn => {
            if holds {
                return Err(conflict("move_in: the resident lives in this municipality already (a move within it is move_within)".into()));
            }
            ctx.set_address(s, c.mkey, need_address()?);
            s.moving_out = NO_DATE;
            s.moving_to = u16::MAX;
            entry.mask = group::ADDRESS | group::PENDING;
        }
        Reason::MoveWithin => {
            resident_only("only a resident moves")?;
            ctx.set_address(s, c.mkey, need_address()?);
            entry.mask = group::ADDRESS;
        }
        Reason::MoveAbroad | Reason::Death | Reason::OfficialRemoval => {
            let to = match reason {
                Reason::MoveAbroad => MOVED_ABROAD,
                Reason::Death => DECEASED,
                _ => REMOVED,
            };
            if p.status == DECEASED && to == DECEASED {
                return Err(conflict("death: the resident is already deceased".into()));
            }
            resident_only("the change needs a resident")?;
            s.resident.person.status = to;
            s.resident.place.status_date = c.effective;
            s.resident.place.dated = 1;
            s.moving_out = NO_DATE;
            s.moving_to = u16::MAX;
            entry.mask = group::STATUS | group::PENDING;
        }
        Reason::NameChange | Reason::OfficialCorrection => {
            if reason == Reason::NameChange {
                resident_only("only a resident's name changes")?;
            }
            let any_name = names.iter().any(|n| n.is_some());
            let correction = reason == Reason::OfficialCorrection;
            let any_other = correction
                && (birth.is_some() || sex.is_some() || address.0.is_some() || address.1.is_some());
            if !any_name && !any_other {
                return Err(if correction {
                    "official_correction: give a name, a reading, birth_date, sex or an address"
                } else {
                    "name_change: give family_name, given_name or a reading"
                }
                .into());
            }
            if any_name {
                let (fam, fam_k) = ctx.dict_value(Dict::Family, p.family);
                let (giv, giv_k) = ctx.dict_value(Dict::Given, p.given);
                s.resident.person.family = ctx.dict_key(
                    Dict::Family,
                    names[0].unwrap_or(&fam),
                    names[1].unwrap_or(&fam_k),
                );
                s.resident.person.given = ctx.dict_key(
                    Dict::Given,
                    names[2].unwrap_or(&giv),
                    names[3].unwrap_or(&giv_k),
                );
                entry.mask |= group::NAME;
            }
            if correction {
                if let Some(b) = birth {
                    if b > c.effective.max(ctx.today) {
                        return Err(format!(
                            "official_correction: birth_date {} lies in the future",
                            iso(b)
                        )
                        .into());
                    }
                    s.resident.person.birth_date = b;
                    entry.mask |= group::BIRTH;
                }
                if let Some(x) = sex {
                    s.resident.person.sex = check_sex(x)?;
                    entry.mask |= group::SEX;
                }
                if address.0.is_some() || address.1.is_some() {
                    ctx.set_address(s, c.mkey, need_address()?);
                    entry.mask |= group::ADDRESS;
                }
            }
        }
        Reason::ResidentCodeChange => {
            resident_only("only a resident's code changes")?;
            let code = ctx.issue_code(c.mkey)?;
            entry.set.resident_code = code;
            entry.mask = group::RESIDENT_CODE;
            ctx.rec.ids.push((IdKind::ResidentCode, code, person));
        }
        Reason::MyNumberChange => {
            resident_only("only a resident's number changes")?;
            if cur.generation >= MAX_GENERATION {
                return Err(conflict(format!("my_number_change: the 個人番号 was replaced {MAX_GENERATION} times, the most the conversion allows")));
            }
            let (number, generation) = ctx.convert(cur.resident_code, cur.generation + 1)?;
            entry.set.my_number = number;
            entry.set.generation = generation;
            entry.mask = group::MY_NUMBER;
            ctx.rec.ids.push((IdKind::MyNumber, number, person));
        }
        Reason::CardApplied | Reason::CardIssued | Reason::CardReturned => {
            resident_only("only a resident holds a card")?;
            let card = cur.resident.place.card;
            let (from_ok, to) = match reason {
                Reason::CardApplied => (card == CARD_NONE, CARD_APPLIED),
                Reason::CardIssued => (card == CARD_APPLIED, CARD_ISSUED),
                _ => (card != CARD_NONE, CARD_NONE),
            };
            if !from_ok {
                return Err(conflict(format!(
                    "{r}: the card state is {}",
                    crate::storage::CARD_VALUES[card as usize]
                )));
            }
            entry.set.resident.place.card = to;
            entry.mask = group::CARD;
        }
        Reason::Origin | Reason::Birth | Reason::Cancel => unreachable!("handled above"),
    }
    Ok(entry)
}

/// Read row `i`'s submitter, sequence, reason and dates.
fn read_change(w: &Writer, t: &Table, i: usize) -> std::result::Result<Change, RowErr> {
    let text = get_text(&t.municipality, i).ok_or("municipality is required")?;
    let code = IdKind::LocalGovernment
        .parse(text)
        .map_err(|e| format!("municipality: {e}"))?;
    let mkey = *w
        .municipalities
        .get(text)
        .ok_or_else(|| format!("municipality {text} is not a municipality of the registry"))?;
    let sequence = get_int(&t.sequence, i).ok_or("sequence is required")?;
    let sequence = u64::try_from(sequence)
        .ok()
        .filter(|&s| s < MAX_SEQUENCE)
        .ok_or_else(|| format!("sequence {sequence} is outside 0..2^43"))?;
    let name = get_text(&t.reason, i).ok_or("reason is required")?;
    let reason = Reason::ALL[1..]
        .iter()
        .copied()
        .find(|r| r.name() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = Reason::ALL[1..].iter().map(|r| r.name()).collect();
            format!(
                "reason '{}' is not one of {}",
                echo(name.as_bytes()),
                names.join(", ")
            )
        })?;
    let effective =
        get_date(&t.effective, i).ok_or_else(|| format!("{name}: effective_date is required"))?;
    let reported =
        get_date(&t.reported, i).ok_or_else(|| format!("{name}: reported_date is required"))?;
    Ok(Change {
        municipality: code as u32,
        mkey,
        sequence,
        reason,
        effective,
        reported,
    })
}

/// How a batch's rows are numbered: in messages, and as changes.
#[derive(Clone, Copy, Default)]
pub struct Numbering<'a> {
    /// The caller's number of the batch's first row (a stream's rows after its earlier ones').
    pub first_row: usize,
    /// Where a front end split the caller's rows (a shard's): each row's number in the
    /// caller's table, which messages name instead.
    pub rows: Option<&'a [u64]>,
    /// Where a front end numbers the changes (a shard's): each row's change number, ascending
    /// and past every change the registry holds; a registry takes numbered batches only or
    /// unnumbered ones only.
    pub numbers: Option<&'a [u64]>,
}

impl Numbering<'_> {
    /// The caller's number of row `i`.
    fn row(&self, i: usize) -> u64 {
        self.rows
            .and_then(|r| r.get(i).copied())
            .unwrap_or((self.first_row + i) as u64)
    }
}

/// Check and apply a batch of change rows (the writer lock held): entries appended (not yet
/// published), the batch's record filled for the log, one result per row.
pub fn apply(
    data: &RegistryData,
    live: &Live,
    w: &mut Writer,
    batch: &RecordBatch,
    rec: &mut BatchRecord,
    today: i32,
    numbering: Numbering,
) -> Result<Vec<RowResult>> {
    let t = Table::new(batch)?;
    let numbers = numbering.numbers;
    check_numbers(live, numbers, t.n, "numbers").map_err(JukiError::InvalidInput)?;
    if let Some(rows) = numbering.rows.filter(|r| r.len() != t.n) {
        return Err(JukiError::InvalidInput(format!(
            "rows: {} row numbers for {} rows",
            rows.len(),
            t.n
        )));
    }
    let mut ctx = Ctx {
        data,
        live,
        w,
        rec,
        today,
    };
    let mut out = Vec::with_capacity(t.n);
    for i in 0..t.n {
        let change = match read_change(ctx.w, &t, i) {
            Ok(c) => c,
            Err(e) => {
                // A row without a usable (municipality, sequence) cannot be remembered.
                out.push(RowResult {
                    outcome: 2,
                    error: Some((e.code, format!("row {}: {e}", numbering.row(i)))),
                    person: NONE,
                    entry: NONE,
                });
                continue;
            }
        };
        let key = seen_key(change.municipality, change.sequence);
        if let Some(seen) = ctx.w.seen.get(key, ctx.live) {
            out.push(match seen {
                Seen::Applied(e) => RowResult {
                    outcome: 1,
                    error: None,
                    person: ctx.live.entries.get(e as usize).map_or(NONE, |e| e.person),
                    entry: e,
                },
                Seen::Rejected(code, m) => RowResult {
                    outcome: 1,
                    error: Some((code, m.to_string())),
                    person: NONE,
                    entry: NONE,
                },
            });
            continue;
        }
        let ids_before = ctx.rec.ids.len();
        match check_row(&mut ctx, &t, i, &change) {
            Ok(entry) => {
                let number = numbers.map(|n| n[i]);
                let at = crate::notices::push(ctx.data, ctx.live, entry, false, number);
                ctx.rec.entries.push(entry);
                ctx.rec.numbers.extend(number);
                // Identifiers issued become findable at once: later rows of the batch may
                // name the person (readers see them only once the batch is published).
                for &(kind, value, person) in &ctx.rec.ids[ids_before..] {
                    ctx.live.add_id(kind, value, person, ctx.rec.batch);
                }
                ctx.w.seen.insert(key, Seen::Applied(at), ctx.live);
                out.push(RowResult {
                    outcome: 0,
                    error: None,
                    person: entry.person,
                    entry: at,
                });
            }
            Err(e) => {
                ctx.rec.ids.truncate(ids_before);
                let msg = format!("row {}: {e}", numbering.row(i));
                ctx.w
                    .seen
                    .insert(key, Seen::Rejected(e.code, msg.as_str().into()), ctx.live);
                ctx.rec.rejections.push((
                    change.municipality,
                    change.sequence,
                    e.code,
                    msg.clone(),
                ));
                out.push(RowResult {
                    outcome: 2,
                    error: Some((e.code, msg)),
                    person: NONE,
                    entry: NONE,
                });
            }
        }
    }
    Ok(out)
}

/// Redo a logged batch (replay at open): no checks, the record is what the writer did.
pub fn redo(data: &RegistryData, live: &Live, w: &mut Writer, rec: &BatchRecord) {
    for (dict, value, reading) in &rec.ext {
        live.extend(*dict, value, reading);
        if let Some(maps) = w.dicts.as_mut() {
            let k = live.base_dicts[*dict as usize]
                + live.ext[*dict as usize].values.count() as u32
                - 1;
            maps[*dict as usize].insert((value.as_str().into(), reading.as_str().into()), k);
        }
    }
    for (i, e) in rec.entries.iter().enumerate() {
        let at = crate::notices::push(data, live, *e, false, rec.numbers.get(i).copied());
        w.seen.insert(
            seen_key(e.municipality, e.sequence),
            Seen::Applied(at),
            live,
        );
    }
    for &(kind, value, person) in &rec.ids {
        live.add_id(kind, value, person, rec.batch);
    }
    for (m, s, code, msg) in &rec.rejections {
        w.seen.insert(
            seen_key(*m, *s),
            Seen::Rejected(*code, msg.as_str().into()),
            live,
        );
    }
    for &(k, next) in &rec.issued {
        w.issued[k as usize] = next;
    }
    live.created
        .fetch_add(rec.created, std::sync::atomic::Ordering::Relaxed);
    w.next_batch = w.next_batch.max(rec.batch + 1);
}

/// Whether `numbers` (for `rows` entries, or none) may number the next changes of `live`: one
/// per row, ascending, past its newest change, and given exactly where its changes so far were
/// numbered (by a front end) or there were none. Says what is wrong, naming `what`.
fn check_numbers(
    live: &Live,
    numbers: Option<&[u64]>,
    rows: usize,
    what: &str,
) -> std::result::Result<(), String> {
    let origins = live.origins.load(std::sync::atomic::Ordering::Acquire) as usize;
    let changes = live.entries.count() - origins;
    let numbered = live.numbered.load(std::sync::atomic::Ordering::Acquire);
    let Some(numbers) = numbers else {
        return match numbered {
            true => Err(format!(
                "{what}: this registry's changes are numbered by its front end (a shard's), \
                 and a batch without numbers would break their order"
            )),
            false => Ok(()),
        };
    };
    if changes > 0 && !numbered {
        return Err(format!(
            "{what}: this registry numbers its {changes} changes by position, so it takes no \
             numbered batch (only a shard's registry, numbered from its first change, does)"
        ));
    }
    if numbers.len() != rows {
        return Err(format!("{what}: {} numbers for {rows} rows", numbers.len()));
    }
    if let Some(i) = numbers.windows(2).position(|p| p[0] >= p[1]) {
        return Err(format!(
            "{what}: not ascending at {}: {} then {}",
            i + 1,
            numbers[i],
            numbers[i + 1]
        ));
    }
    let last = crate::notices::last_number(live);
    match numbers.first() {
        Some(&first) if first <= last => Err(format!(
            "{what}: {first} does not follow the newest change, {last}"
        )),
        _ => Ok(()),
    }
}

/// The result table of `apply`: outcome, error, and the person's identifiers after the row.
pub fn results(view: &View, rows: &[RowResult]) -> Result<RecordBatch> {
    let mut outcome = Vec::with_capacity(rows.len());
    let mut code = Vec::with_capacity(rows.len());
    let mut error = Vec::with_capacity(rows.len());
    let mut rc = Vec::with_capacity(rows.len());
    let mut mn = Vec::with_capacity(rows.len());
    for r in rows {
        outcome.push(OUTCOMES[r.outcome as usize]);
        code.push(r.error.as_ref().map(|e| REFUSALS[e.0 as usize]));
        error.push(r.error.as_ref().map(|e| e.1.clone()));
        let values = (r.person != NONE).then(|| view.resolve(r.person)).flatten();
        rc.push(values.map(|v| IdKind::ResidentCode.format(v.resident_code)));
        mn.push(values.map(|v| IdKind::MyNumber.format(v.my_number)));
    }
    let schema = Schema::new(vec![
        Field::new("outcome", DataType::Utf8, false),
        Field::new("code", DataType::Utf8, true),
        Field::new("error", DataType::Utf8, true),
        Field::new("resident_code", DataType::Utf8, true),
        Field::new("my_number", DataType::Utf8, true),
    ]);
    Ok(RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from(outcome)),
            Arc::new(StringArray::from(code)),
            Arc::new(StringArray::from(error)),
            Arc::new(StringArray::from(rc)),
            Arc::new(StringArray::from(mn)),
        ],
    )?)
}

/// The log's encoding of a [`BatchRecord`] (little-endian, length-prefixed strings); the log
/// frames and checksums it.
pub fn encode(rec: &BatchRecord) -> Vec<u8> {
    let mut b = Vec::with_capacity(64 + rec.entries.len() * 112);
    let put_str = |b: &mut Vec<u8>, s: &str| {
        b.extend_from_slice(&(s.len() as u32).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    };
    b.extend_from_slice(&RECORD_VERSION.to_le_bytes());
    b.extend_from_slice(&rec.batch.to_le_bytes());
    b.extend_from_slice(&rec.recorded.to_le_bytes());
    b.extend_from_slice(&rec.created.to_le_bytes());
    b.extend_from_slice(&(rec.ext.len() as u32).to_le_bytes());
    for (d, v, r) in &rec.ext {
        b.push(*d as u8);
        put_str(&mut b, v);
        put_str(&mut b, r);
    }
    b.extend_from_slice(&(rec.entries.len() as u32).to_le_bytes());
    for e in &rec.entries {
        encode_entry(&mut b, e);
    }
    b.extend_from_slice(&(rec.ids.len() as u32).to_le_bytes());
    for (k, v, p) in &rec.ids {
        b.push((*k == IdKind::MyNumber) as u8);
        b.extend_from_slice(&v.to_le_bytes());
        b.extend_from_slice(&p.to_le_bytes());
    }
    b.extend_from_slice(&(rec.rejections.len() as u32).to_le_bytes());
    for (m, s, code, msg) in &rec.rejections {
        b.extend_from_slice(&m.to_le_bytes());
        b.extend_from_slice(&s.to_le_bytes());
        b.push(*code as u8);
        put_str(&mut b, msg);
    }
    b.extend_from_slice(&(rec.issued.len() as u32).to_le_bytes());
    for (k, n) in &rec.issued {
        b.extend_from_slice(&k.to_le_bytes());
        b.extend_from_slice(&n.to_le_bytes());
    }
    b.extend_from_slice(&(rec.numbers.len() as u32).to_le_bytes());
    for n in &rec.numbers {
        b.extend_from_slice(&n.to_le_bytes());
    }
    b
}

/// Version 3 records the entries' change numbers (a shard's; none elsewhere); version 2 each
/// rejection's [`Refusal`]; version 1 records are read with every rejection `invalid`.
const RECORD_VERSION: u32 = 3;

/// One entry's fixed encoding (`prev` is not stored: replay recomputes it).
pub fn encode_entry(b: &mut Vec<u8>, e: &Entry) {
    let p = &e.set.resident.person;
    let q = &e.set.resident.place;
    b.extend_from_slice(&e.person.to_le_bytes());
    b.extend_from_slice(&e.batch.to_le_bytes());
    b.extend_from_slice(&e.mask.to_le_bytes());
    b.push(e.reason as u8);
    b.extend_from_slice(&e.cancels.to_le_bytes());
    b.extend_from_slice(&e.municipality.to_le_bytes());
    b.extend_from_slice(&e.sequence.to_le_bytes());
    b.extend_from_slice(&e.effective.to_le_bytes());
    b.extend_from_slice(&e.reported.to_le_bytes());
    b.extend_from_slice(&e.recorded.to_le_bytes());
    b.extend_from_slice(&p.family.to_le_bytes());
    b.extend_from_slice(&p.given.to_le_bytes());
    b.extend_from_slice(&p.birth_date.to_le_bytes());
    b.extend_from_slice(&p.municipality.to_le_bytes());
    b.push(p.sex);
    b.push(p.status);
    b.extend_from_slice(&q.town.to_le_bytes());
    b.extend_from_slice(&q.block.to_le_bytes());
    b.extend_from_slice(&q.status_date.to_le_bytes());
    b.push(q.card);
    b.push(q.dated);
    b.extend_from_slice(&e.set.resident_code.to_le_bytes());
    b.extend_from_slice(&e.set.my_number.to_le_bytes());
    b.extend_from_slice(&e.set.moving_out.to_le_bytes());
    b.extend_from_slice(&e.set.moving_to.to_le_bytes());
    b.push(e.set.generation);
}

/// A reader over a record's bytes; running past the end is an error naming `what`.
pub struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    what: &'a str,
}

macro_rules! take_le {
    ($name:ident, $t:ty) => {
        fn $name(&mut self) -> Result<$t> {
            let n = std::mem::size_of::<$t>();
            let s = self.take(n)?;
            Ok(<$t>::from_le_bytes(s.try_into().expect("sized")))
        }
    };
}

impl<'a> Cursor<'a> {
    /// Read `bytes`, naming them `what` in errors.
    pub fn new(bytes: &'a [u8], what: &'a str) -> Cursor<'a> {
        Cursor { bytes, at: 0, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(JukiError::SnapshotCorrupt(format!(
                "{}: a record ends early (at byte {} of {})",
                self.what,
                self.at,
                self.bytes.len()
            )));
        };
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    take_le!(u8, u8);
    take_le!(u16, u16);
    take_le!(u32, u32);
    take_le!(i32, i32);
    take_le!(u64, u64);
    take_le!(i64, i64);

    fn string(&mut self) -> Result<String> {
        let n = self.u32()? as usize;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|e| {
            JukiError::SnapshotCorrupt(format!("{}: a string is not UTF-8: {e}", self.what))
        })
    }

    fn count(&mut self, each: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(each) > self.bytes.len() - self.at {
            return Err(JukiError::SnapshotCorrupt(format!(
                "{}: a count of {n} exceeds the record",
                self.what
            )));
        }
        Ok(n)
    }

    /// One entry as [`encode_entry`] wrote it.
    pub fn entry(&mut self) -> Result<Entry> {
        let person = self.u32()?;
        let batch = self.u32()?;
        let mask = self.u16()?;
        let code = self.u8()?;
        let reason = Reason::from_code(code).ok_or_else(|| {
            JukiError::SnapshotCorrupt(format!("{}: unknown reason code {code}", self.what))
        })?;
        let cancels = self.u32()?;
        let municipality = self.u32()?;
        let sequence = self.u64()?;
        let effective = self.i32()?;
        let reported = self.i32()?;
        let recorded = self.i64()?;
        let mut set = Values::default();
        {
            let p = &mut set.resident.person;
            p.family = self.u32()?;
            p.given = self.u32()?;
            p.birth_date = self.i32()?;
            p.municipality = self.u16()?;
            p.sex = self.u8()?;
            p.status = self.u8()?;
            let q = &mut set.resident.place;
            q.town = self.u32()?;
            q.block = self.u32()?;
            q.status_date = self.i32()?;
            q.card = self.u8()?;
            q.dated = self.u8()?;
        }
        set.resident_code = self.u64()?;
        set.my_number = self.u64()?;
        set.moving_out = self.i32()?;
        set.moving_to = self.u16()?;
        set.generation = self.u8()?;
        Ok(Entry {
            person,
            prev: NONE,
            batch,
            mask,
            reason,
            cancels,
            municipality,
            sequence,
            effective,
            reported,
            recorded,
            set,
        })
    }
}

/// Decode a logged batch; `what` names the log and the record's offset in errors.
pub fn decode(bytes: &[u8], what: &str) -> Result<BatchRecord> {
    let mut c = Cursor::new(bytes, what);
    let version = c.u32()?;
    if !(1..=RECORD_VERSION).contains(&version) {
        return Err(JukiError::SnapshotCorrupt(format!(
            "{what}: record version {version}, this build reads 1 to {RECORD_VERSION}"
        )));
    }
    let mut rec = BatchRecord {
        batch: c.u32()?,
        recorded: c.i64()?,
        created: c.u32()?,
        ..Default::default()
    };
    for _ in 0..c.count(9)? {
        let d = c.u8()?;
        let dict = [Dict::Family, Dict::Given, Dict::Town, Dict::Block]
            .get(d as usize)
            .copied()
            .ok_or_else(|| JukiError::SnapshotCorrupt(format!("{what}: unknown dictionary {d}")))?;
        rec.ext.push((dict, c.string()?, c.string()?));
    }
    for _ in 0..c.count(64)? {
        rec.entries.push(c.entry()?);
    }
    for _ in 0..c.count(13)? {
        let kind = if c.u8()? == 1 {
            IdKind::MyNumber
        } else {
            IdKind::ResidentCode
        };
        rec.ids.push((kind, c.u64()?, c.u32()?));
    }
    for _ in 0..c.count(16)? {
        let (m, s) = (c.u32()?, c.u64()?);
        let code = if version >= 2 {
            let code = c.u8()?;
            Refusal::from_code(code)
                .ok_or_else(|| JukiError::SnapshotCorrupt(format!("{what}: refusal code {code}")))?
        } else {
            Refusal::Invalid
        };
        rec.rejections.push((m, s, code, c.string()?));
    }
    for _ in 0..c.count(10)? {
        rec.issued.push((c.u16()?, c.u64()?));
    }
    if version >= 3 {
        for _ in 0..c.count(8)? {
            rec.numbers.push(c.u64()?);
        }
    }
    Ok(rec)
}

/// Check a decoded record before redoing it: every person, key and code it names must exist
/// (or be one it creates), so that a damaged log cannot make the kernels read out of bounds.
pub fn check_record(
    data: &RegistryData,
    live: &Live,
    w: &Writer,
    rec: &BatchRecord,
    what: &str,
) -> Result<()> {
    check_entries(data, live, w.next_batch, rec, what, false)?;
    let numbers = (!rec.numbers.is_empty()).then_some(rec.numbers.as_slice());
    // A record of rejections only numbers nothing, in a numbered registry too.
    if !rec.entries.is_empty() || numbers.is_some() {
        check_numbers(live, numbers, rec.entries.len(), what)
            .map_err(JukiError::SnapshotCorrupt)?;
    }
    Ok(())
}

/// [`check_record`], the record's batch no older than `first_batch`; `historic`: entries of a
/// snapshot's history, whose created persons are rows of the snapshot by now.
fn check_entries(
    data: &RegistryData,
    live: &Live,
    first_batch: u32,
    rec: &BatchRecord,
    what: &str,
    historic: bool,
) -> Result<()> {
    let bad = |why: String| Err(JukiError::SnapshotCorrupt(format!("{what}: {why}")));
    let mut ext = [0u32; 4];
    for (d, _, _) in &rec.ext {
        ext[*d as usize] += 1;
    }
    let persons = live.base_len as u64
        + live.created.load(std::sync::atomic::Ordering::Relaxed) as u64
        + rec.created as u64;
    let dict_len = |d: Dict| {
        live.base_dicts[d as usize] as u64
            + live.ext[d as usize].values.count() as u64
            + ext[d as usize] as u64
    };
    let municipalities = data.dicts.municipality_code.len() as u64;
    if rec.batch < first_batch {
        return bad(format!(
            "batch {} follows batch {}",
            rec.batch,
            first_batch - 1
        ));
    }
    for e in &rec.entries {
        let p = &e.set.resident.person;
        let q = &e.set.resident.place;
        let all = e.mask == group::ALL;
        let ok = (e.person as u64) < persons
            && e.batch == rec.batch
            && e.mask <= group::ALL
            && (e.mask & group::NAME == 0
                || ((p.family as u64) < dict_len(Dict::Family)
                    && (p.given as u64) < dict_len(Dict::Given)))
            && (e.mask & group::ADDRESS == 0
                || ((p.municipality as u64) < municipalities
                    && (q.town as u64) < dict_len(Dict::Town)
                    && (q.block as u64) < dict_len(Dict::Block)))
            && (e.mask & group::STATUS == 0 || (p.status as usize) < STATUS_VALUES.len())
            && (e.mask & group::CARD == 0 || (q.card as usize) < crate::storage::CARD_VALUES.len())
            && (e.mask & group::PENDING == 0
                || e.set.moving_to == u16::MAX
                || (e.set.moving_to as u64) < municipalities)
            && (e.mask & group::RESIDENT_CODE == 0
                || IdKind::ResidentCode.is_valid_value(e.set.resident_code))
            && (e.mask & group::MY_NUMBER == 0 || IdKind::MyNumber.is_valid_value(e.set.my_number))
            && (e.reason != Reason::Cancel
                || (e.cancels as usize) < live.entries.count() + rec.entries.len())
            && (!all || historic || e.person >= live.base_len || e.reason == Reason::Origin);
        if !ok {
            return bad(format!(
                "entry for person {} ({} {} of {}) names something that does not exist",
                e.person,
                e.reason.name(),
                e.sequence,
                e.municipality
            ));
        }
    }
    for (kind, value, person) in &rec.ids {
        if !kind.is_valid_value(*value) || *person as u64 >= persons {
            return bad(format!(
                "identifier {value} for person {person} is not valid"
            ));
        }
    }
    for (m, s, _, message) in &rec.rejections {
        if message.len() > MAX_MESSAGE_BYTES {
            return bad(format!(
                "the rejection of ({m}, {s}) has a message of {} bytes (at most {MAX_MESSAGE_BYTES})",
                message.len()
            ));
        }
    }
    for &(k, next) in &rec.issued {
        if k as u64 >= municipalities {
            return bad(format!("municipality key {k} does not exist"));
        }
        if next > designated(municipalities, k) {
            return bad(format!(
                "municipality key {k}: code position {next} lies beyond its designated codes"
            ));
        }
    }
    Ok(())
}

/// What a checkpoint keeps of the writer beside the history (`changes.json`).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct WriterState {
    /// `juki-changes/1`.
    pub format: String,
    /// The next batch number.
    pub next_batch: u32,
    /// The change log generation the snapshot covers (its records are in the snapshot).
    pub log_generation: u64,
    /// Per municipality key: the next designated-code position.
    pub issued: Vec<u64>,
    /// Rejected changes: (municipality << 43 | sequence, message), for idempotency.
    pub rejections: Vec<(u64, String)>,
    /// Each rejection's [`Refusal`] code, in the order of `rejections`; absent (every one
    /// `invalid`) in states written by the build before.
    #[serde(default)]
    pub rejection_codes: Vec<u8>,
}

const STATE_FORMAT: &str = "juki-changes/1";

/// The longest rejection message a log record or a snapshot may hold (ours are far shorter).
const MAX_MESSAGE_BYTES: usize = 4096;

impl WriterState {
    /// Whether this state, read from the file `what`, fits writer `w`'s registry.
    fn check(&self, w: &Writer, what: &str) -> Result<()> {
        let bad = |why: String| Err(JukiError::SnapshotCorrupt(format!("{what}: {why}")));
        if self.format != STATE_FORMAT {
            return bad(format!(
                "format '{}', expected '{STATE_FORMAT}'",
                self.format
            ));
        }
        let m = w.issued.len();
        if self.issued.len() != m {
            return bad(format!(
                "{} designated-code counters for {m} municipalities",
                self.issued.len()
            ));
        }
        for (k, &next) in self.issued.iter().enumerate() {
            if next > designated(m as u64, k as u16) {
                return bad(format!(
                    "municipality key {k}: code position {next} lies beyond its designated codes"
                ));
            }
        }
        if !self.rejection_codes.is_empty() && self.rejection_codes.len() != self.rejections.len() {
            return bad(format!(
                "{} refusal codes for {} rejections",
                self.rejection_codes.len(),
                self.rejections.len()
            ));
        }
        if let Some(code) = self
            .rejection_codes
            .iter()
            .find(|&&c| Refusal::from_code(c).is_none())
        {
            return bad(format!("refusal code {code}"));
        }
        for (_, message) in &self.rejections {
            if message.len() > MAX_MESSAGE_BYTES {
                return bad(format!(
                    "a rejection message of {} bytes (at most {MAX_MESSAGE_BYTES})",
                    message.len()
                ));
            }
        }
        Ok(())
    }
}

impl Writer {
    /// The state a checkpoint keeps, covering change log generation `log_generation`.
    pub fn state(&self, log_generation: u64) -> WriterState {
        let mut rejected: Vec<(u64, Refusal, &str)> = self
            .seen
            .rejected
            .iter()
            .map(|(k, (code, m))| (*k, *code, &**m))
            .collect();
        rejected.sort_by_key(|r| r.0);
        WriterState {
            format: STATE_FORMAT.to_string(),
            next_batch: self.next_batch,
            log_generation,
            issued: self.issued.clone(),
            rejections: rejected.iter().map(|r| (r.0, r.2.to_string())).collect(),
            rejection_codes: rejected.iter().map(|r| r.1 as u8).collect(),
        }
    }
}

/// Load a snapshot's history (`history.arrow`, see `history::write_history`) and writer state
/// into a registry opened over it: every entry is checked (persons, keys, codes within the
/// snapshot), pushed as history, and the former identifiers registered, so a lookup by one
/// still finds the person (replaced). Returns the log generation the snapshot covers.
pub fn load_history(
    data: &RegistryData,
    live: &Live,
    w: &mut Writer,
    batches: &[RecordBatch],
    state: &WriterState,
    (what, state_what): (&str, &str),
) -> Result<u64> {
    use arrow_array::types::{
        Int32Type, Int64Type as I64, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
    };
    use arrow_array::PrimitiveArray;

    state.check(w, state_what)?;
    let bad = |why: String| JukiError::SnapshotCorrupt(format!("{what}: {why}"));
    fn col<'b, T: arrow_array::ArrowPrimitiveType>(
        batch: &'b RecordBatch,
        name: &str,
        what: &str,
    ) -> Result<&'b PrimitiveArray<T>> {
        batch
            .column_by_name(name)
            .and_then(|a| a.as_any().downcast_ref::<PrimitiveArray<T>>())
            .filter(|a| a.null_count() == 0)
            .ok_or_else(|| {
                JukiError::SnapshotCorrupt(format!(
                    "{what}: column '{name}' is missing, has nulls or the wrong type"
                ))
            })
    }
    let mut last_batch = 0;
    let mut cancelled_creations = Vec::new();
    let first = live.entries.count() as u32;
    let mut offset = 0;
    for batch in batches {
        let person = col::<UInt32Type>(batch, "person", what)?;
        let batch_no = col::<UInt32Type>(batch, "batch", what)?;
        let recorded = col::<I64>(batch, "recorded", what)?;
        let effective = col::<Int32Type>(batch, "effective", what)?;
        let reported = col::<Int32Type>(batch, "reported", what)?;
        let mask = col::<UInt16Type>(batch, "mask", what)?;
        let reason = col::<UInt8Type>(batch, "reason", what)?;
        let key = col::<UInt64Type>(batch, "key", what)?;
        let cancels = col::<UInt32Type>(batch, "cancels", what)?;
        let family = col::<UInt32Type>(batch, "family", what)?;
        let given = col::<UInt32Type>(batch, "given", what)?;
        let birth = col::<Int32Type>(batch, "birth_date", what)?;
        let sex = col::<UInt8Type>(batch, "sex", what)?;
        let municipality = col::<UInt16Type>(batch, "municipality", what)?;
        let town = col::<UInt32Type>(batch, "town", what)?;
        let block = col::<UInt32Type>(batch, "block", what)?;
        let status = col::<UInt8Type>(batch, "status", what)?;
        let status_date = col::<Int32Type>(batch, "status_date", what)?;
        let dated = col::<UInt8Type>(batch, "dated", what)?;
        let card = col::<UInt8Type>(batch, "card", what)?;
        let rc = col::<UInt64Type>(batch, "resident_code", what)?;
        let mn = col::<UInt64Type>(batch, "my_number", what)?;
        let generation = col::<UInt8Type>(batch, "generation", what)?;
        let moving_out = col::<Int32Type>(batch, "moving_out", what)?;
        let moving_to = col::<UInt16Type>(batch, "moving_to", what)?;
        // A shard's history keeps its changes' numbers (null for origins).
        let numbers = match batch.column_by_name("number") {
            None => None,
            Some(a) => Some(
                a.as_any()
                    .downcast_ref::<PrimitiveArray<UInt64Type>>()
                    .ok_or_else(|| bad("column 'number' is not uint64".into()))?,
            ),
        };
        for (i, j) in (offset..).zip(0..batch.num_rows()) {
            let code = reason.value(j);
            let reason =
                Reason::from_code(code).ok_or_else(|| bad(format!("row {i}: reason {code}")))?;
            let mut set = Values::default();
            {
                let (p, q) = (&mut set.resident.person, &mut set.resident.place);
                (p.family, p.given, p.birth_date) =
                    (family.value(j), given.value(j), birth.value(j));
                (p.sex, p.municipality, p.status) =
                    (sex.value(j), municipality.value(j), status.value(j));
                (q.town, q.block, q.status_date) =
                    (town.value(j), block.value(j), status_date.value(j));
                (q.dated, q.card) = (dated.value(j), card.value(j));
            }
            (set.resident_code, set.my_number, set.generation) =
                (rc.value(j), mn.value(j), generation.value(j));
            (set.moving_out, set.moving_to) = (moving_out.value(j), moving_to.value(j));
            let k = key.value(j);
            let entry = Entry {
                person: person.value(j),
                prev: NONE,
                batch: batch_no.value(j),
                mask: mask.value(j),
                reason,
                cancels: cancels.value(j),
                municipality: (k >> 43) as u32,
                sequence: k & (MAX_SEQUENCE - 1),
                effective: effective.value(j),
                reported: reported.value(j),
                recorded: recorded.value(j),
                set,
            };
            // The snapshot's rows are every person now: checks as for a logged batch, with
            // nothing created and no dictionary value added.
            let rec = BatchRecord {
                batch: entry.batch,
                entries: vec![entry],
                ..Default::default()
            };
            check_entries(data, live, 0, &rec, what, true)
                .map_err(|e| bad(format!("row {i}: {e}")))?;
            if entry.cancels != NONE && entry.cancels >= first + i as u32 {
                return Err(bad(format!("row {i}: cancels a later entry")));
            }
            if reason == Reason::Cancel {
                if let Some(target) = live.entries.get(entry.cancels as usize) {
                    if target.mask == group::ALL && target.reason != Reason::Origin {
                        cancelled_creations.push(target.person);
                    }
                }
            }
            // Origins lead the history (change numbers count the entries after them).
            if reason == Reason::Origin
                && live.entries.count() as u32
                    != live.origins.load(std::sync::atomic::Ordering::Acquire)
            {
                return Err(bad(format!("row {i}: an origin after a change")));
            }
            let number = numbers.and_then(|n| n.is_valid(j).then(|| n.value(j)));
            if (reason == Reason::Origin) == number.is_some() && numbers.is_some() {
                return Err(bad(format!(
                    "row {i}: a number where the entry is an origin, or none where it is a change"
                )));
            }
            if reason != Reason::Origin {
                check_numbers(live, number.as_ref().map(std::slice::from_ref), 1, "number")
                    .map_err(|e| bad(format!("row {i}: {e}")))?;
            }
            let at = crate::notices::push(data, live, entry, true, number);
            if reason != Reason::Origin {
                w.seen.insert(k, Seen::Applied(at), live);
            }
            last_batch = last_batch.max(entry.batch);
            // A former identifier still names the person (answered as replaced).
            let p = entry.person as usize;
            if entry.mask & group::RESIDENT_CODE != 0
                && entry.set.resident_code != data.cols.resident_code[p]
            {
                live.add_id(
                    IdKind::ResidentCode,
                    entry.set.resident_code,
                    entry.person,
                    0,
                );
            }
            if entry.mask & group::MY_NUMBER != 0 && entry.set.my_number != data.cols.my_number[p] {
                live.add_id(IdKind::MyNumber, entry.set.my_number, entry.person, 0);
            }
        }
        offset += batch.num_rows();
    }
    for (i, (k, message)) in state.rejections.iter().enumerate() {
        let code = state
            .rejection_codes
            .get(i)
            .and_then(|&c| Refusal::from_code(c))
            .unwrap_or(Refusal::Invalid);
        w.seen
            .insert(*k, Seen::Rejected(code, message.as_str().into()), live);
    }
    w.issued.clone_from(&state.issued);
    w.next_batch = state.next_batch.max(last_batch + 1);
    live.publish(last_batch);
    for person in &cancelled_creations {
        live.mark(*person);
    }
    if cancelled_creations.is_empty() {
        live.base_batch
            .store(last_batch, std::sync::atomic::Ordering::Release);
    }
    Ok(state.log_generation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_identifiers_must_ascend_and_be_whole() {
        let dir = std::env::temp_dir().join(format!("juki-held-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, values: &[u64], extra: &[u8]| {
            let path = dir.join(name);
            let mut bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            bytes.extend_from_slice(extra);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        let many: Vec<u64> = (0..2_000_000u64).map(|i| i * 3 + 1).collect();
        let held = read_held(&write("ok", &many, &[])).unwrap();
        assert_eq!(held.len(), many.len());
        let part = Part::new(1, 3, [held.clone(), held]).unwrap();
        assert!(part.held(IdKind::MyNumber, 4) && !part.held(IdKind::ResidentCode, 5));
        let mut unsorted = many.clone();
        unsorted.swap(1_500_000, 1_500_001);
        let e = read_held(&write("unsorted", &unsorted, &[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unsorted: identifiers not in ascending order at 1500001"),
            "{e}"
        );
        let e = read_held(&write("torn", &many[..3], &[1, 2]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("26 bytes, not whole uint64s"), "{e}");
        assert!(read_held(&dir.join("absent")).is_err());
        let empty = read_held(&write("empty", &[], &[])).unwrap();
        assert!(Part::new(3, 3, [empty.clone(), empty]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn record() -> BatchRecord {
        BatchRecord {
            batch: 7,
            recorded: 1_700_000_000_000_000,
            rejections: vec![
                (162_019, 4, Refusal::NotPermitted, "row 0: no".into()),
                (162_019, 5, Refusal::Conflict, "row 1: dead".into()),
            ],
            issued: vec![(3, 11)],
            ..Default::default()
        }
    }

    #[test]
    fn a_record_keeps_its_refusal_codes() {
        let back = decode(&encode(&record()), "test").unwrap();
        assert_eq!(back.batch, 7);
        assert_eq!(back.rejections, record().rejections);
        assert_eq!(back.issued, vec![(3, 11)]);
    }

    #[test]
    fn a_record_keeps_its_change_numbers_and_a_version_2_one_has_none() {
        let numbered = BatchRecord {
            numbers: vec![5, 9, 1 << 40],
            ..record()
        };
        assert_eq!(
            decode(&encode(&numbered), "test").unwrap().numbers,
            numbered.numbers
        );
        // Version 2 ended with the issued counters: no count of numbers.
        let mut bytes = encode(&record());
        bytes[..4].copy_from_slice(&2u32.to_le_bytes());
        bytes.truncate(bytes.len() - 4);
        let back = decode(&bytes, "test").unwrap();
        assert!(back.numbers.is_empty());
        assert_eq!(back.issued, vec![(3, 11)]);
        // A count of numbers past the record's end is damage, not an allocation.
        let mut bytes = encode(&record());
        let at = bytes.len() - 4;
        bytes[at..].copy_from_slice(&1000u32.to_le_bytes());
        let err = decode(&bytes, "log at 40").err().unwrap().to_string();
        assert!(err.contains("count of 1000 exceeds"), "{err}");
    }

    #[test]
    fn a_version_1_record_reads_with_every_rejection_invalid() {
        // Version 1 wrote each rejection as municipality, sequence, message: no code byte.
        let mut bytes = encode(&record());
        bytes.truncate(bytes.len() - 4);
        bytes[..4].copy_from_slice(&1u32.to_le_bytes());
        let first = 4 + 4 + 8 + 4 + 4 + 4 + 4 + 4 + 4 + 8;
        assert_eq!(bytes[first], Refusal::NotPermitted as u8);
        bytes.remove(first);
        let second = first + 4 + "row 0: no".len() + 4 + 8;
        assert_eq!(bytes[second], Refusal::Conflict as u8);
        bytes.remove(second);
        let back = decode(&bytes, "test").unwrap();
        let codes: Vec<Refusal> = back.rejections.iter().map(|r| r.2).collect();
        assert_eq!(codes, vec![Refusal::Invalid, Refusal::Invalid]);
        assert_eq!(back.rejections[1].3, "row 1: dead");
    }

    #[test]
    fn an_unknown_version_or_refusal_code_is_corrupt() {
        let mut bytes = encode(&record());
        bytes[..4].copy_from_slice(&4u32.to_le_bytes());
        let err = decode(&bytes, "log at 40").err().unwrap().to_string();
        assert!(err.contains("record version 4"), "{err}");
        let mut bytes = encode(&record());
        let first = 4 + 4 + 8 + 4 + 4 + 4 + 4 + 4 + 4 + 8;
        bytes[first] = 9;
        let err = decode(&bytes, "log at 40").err().unwrap().to_string();
        assert!(err.contains("refusal code 9"), "{err}");
    }
}
