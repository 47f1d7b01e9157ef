//! The living registry's versions: every applied change kept beside the rows, never as rows.
//!
//! A registry is its base (the snapshot's columns and indexes, immutable) plus [`Live`]: an
//! append-only arena of [`Entry`]s, one per applied change, each holding the values the change
//! set. A person's entries form a chain (newest first, through `prev`), found by the person's id
//! in `heads`. Readers never lock: a call reads the published batch number once and sees every
//! entry of the batches up to it and none after (snapshot isolation per call); the writer appends
//! entries and moves chain heads before it publishes, and a reader that meets a newer entry walks
//! past it. Nothing of the base is copied or written: rows a change touched are marked in a bitmap
//! (`dirty`) that the kernels test after their probe, so a clean row costs one bit.
//!
//! # Person ids
//! A person's id is their row: the base's rows are `0..base_len`, and a new person (a birth, a
//! first entry from abroad) is given the next id. Ids are immutable and survive every change of
//! identifier; they are never shown to agencies.
//!
//! # Times
//! Each entry has two times: the effective date (異動日) and when it was recorded (the apply's
//! commit time, and its batch number). A value *in force on date D* is, per field group, the one
//! set by the latest-effective entry dated ≤ D (ties: the later recorded); the *current* values
//! are those in force today or later (a 転出予定日 ahead of today is pending now). A view *as
//! recorded at time T* ignores every entry recorded after T, so a late report (届出日 after a
//! later change) changes the past only from the moment it was recorded. The two combine: "what
//! did the registry, as it stood at T, say was in force on D". The base is as old as the
//! registry: recorded before any change, in force since the beginning.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::ids::IdKind;
use crate::index::{INVALID_KEY, NOT_FOUND};
use crate::normalize::FoldedText;
use arrow_array::Array;
use std::collections::HashMap;

use arrow_array::StringArray;

use crate::index::HashIndex;
use crate::storage::{Column, Columns, Dictionaries, RegistryData, Resident};
use arrow_array::ArrayRef;
use rayon::prelude::*;

/// Field groups a change sets (an [`Entry`]'s `mask`).
pub mod group {
    /// 氏名 and readings (family and given keys).
    pub const NAME: u16 = 1;
    /// 生年月日.
    pub const BIRTH: u16 = 1 << 1;
    /// 性別.
    pub const SEX: u16 = 1 << 2;
    /// 住所: municipality, town, block.
    pub const ADDRESS: u16 = 1 << 3;
    /// Status and its date.
    pub const STATUS: u16 = 1 << 4;
    /// 個人番号カード state.
    pub const CARD: u16 = 1 << 5;
    /// 住民票コード.
    pub const RESIDENT_CODE: u16 = 1 << 6;
    /// 個人番号 and its generation.
    pub const MY_NUMBER: u16 = 1 << 7;
    /// A pending 転出 (date and destination).
    pub const PENDING: u16 = 1 << 8;
    /// Every group: a new person, or a person's values before their first change.
    pub const ALL: u16 = (1 << 9) - 1;
    /// Names of the groups, by bit, as `history` reports them.
    pub const NAMES: [&str; 9] = [
        "name",
        "birth_date",
        "sex",
        "address",
        "status",
        "card_state",
        "resident_code",
        "my_number",
        "moving_out",
    ];
}

/// No entry / no person.
pub const NONE: u32 = u32::MAX;
/// No date (a pending move-out that is not pending).
pub const NO_DATE: i32 = i32::MIN;

/// A person's values: everything a change can set.
#[derive(Clone, Copy, Debug, Default)]
pub struct Values {
    /// The fields the kernels compare and disclose.
    pub resident: Resident,
    /// 住民票コード (full value).
    pub resident_code: u64,
    /// 個人番号 (full value).
    pub my_number: u64,
    /// The date of a pending 転出, or [`NO_DATE`].
    pub moving_out: i32,
    /// The pending 転出's destination municipality key, or `u16::MAX` where unknown.
    pub moving_to: u16,
    /// How many times the 個人番号 was replaced (the conversion's further input).
    pub generation: u8,
}

impl Values {
    /// Copy the groups of `mask` from `from`.
    pub fn set_groups(&mut self, from: &Values, mask: u16) {
        let (p, q) = (&mut self.resident.person, &mut self.resident.place);
        let (fp, fq) = (&from.resident.person, &from.resident.place);
        if mask & group::NAME != 0 {
            p.family = fp.family;
            p.given = fp.given;
        }
        if mask & group::BIRTH != 0 {
            p.birth_date = fp.birth_date;
        }
        if mask & group::SEX != 0 {
            p.sex = fp.sex;
        }
        if mask & group::ADDRESS != 0 {
            p.municipality = fp.municipality;
            q.town = fq.town;
            q.block = fq.block;
        }
        if mask & group::STATUS != 0 {
            p.status = fp.status;
            q.status_date = fq.status_date;
            q.dated = fq.dated;
        }
        if mask & group::CARD != 0 {
            q.card = fq.card;
        }
        if mask & group::RESIDENT_CODE != 0 {
            self.resident_code = from.resident_code;
        }
        if mask & group::MY_NUMBER != 0 {
            self.my_number = from.my_number;
            self.generation = from.generation;
        }
        if mask & group::PENDING != 0 {
            self.moving_out = from.moving_out;
            self.moving_to = from.moving_to;
        }
    }

    /// The identifier of `kind` (my_number or resident_code).
    pub fn id(&self, kind: IdKind) -> u64 {
        match kind {
            IdKind::MyNumber => self.my_number,
            _ => self.resident_code,
        }
    }
}

/// Change reasons (異動事由), as stored; the order is the stored code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reason {
    /// A person's values before their first change (kept when a snapshot folds changes in).
    Origin = 0,
    Birth,
    ReturnFromAbroad,
    MoveOut,
    MoveIn,
    MoveWithin,
    MoveAbroad,
    Death,
    NameChange,
    OfficialEntry,
    OfficialRemoval,
    OfficialCorrection,
    ResidentCodeChange,
    MyNumberChange,
    CardApplied,
    CardIssued,
    CardReturned,
    Cancel,
}

impl Reason {
    /// Every reason, by stored code.
    pub const ALL: [Reason; 18] = [
        Reason::Origin,
        Reason::Birth,
        Reason::ReturnFromAbroad,
        Reason::MoveOut,
        Reason::MoveIn,
        Reason::MoveWithin,
        Reason::MoveAbroad,
        Reason::Death,
        Reason::NameChange,
        Reason::OfficialEntry,
        Reason::OfficialRemoval,
        Reason::OfficialCorrection,
        Reason::ResidentCodeChange,
        Reason::MyNumberChange,
        Reason::CardApplied,
        Reason::CardIssued,
        Reason::CardReturned,
        Reason::Cancel,
    ];

    /// The reason's name in the change table (docs/changes.md).
    pub fn name(self) -> &'static str {
        match self {
            Reason::Origin => "origin",
            Reason::Birth => "birth",
            Reason::ReturnFromAbroad => "return_from_abroad",
            Reason::MoveOut => "move_out",
            Reason::MoveIn => "move_in",
            Reason::MoveWithin => "move_within",
            Reason::MoveAbroad => "move_abroad",
            Reason::Death => "death",
            Reason::NameChange => "name_change",
            Reason::OfficialEntry => "official_entry",
            Reason::OfficialRemoval => "official_removal",
            Reason::OfficialCorrection => "official_correction",
            Reason::ResidentCodeChange => "resident_code_change",
            Reason::MyNumberChange => "my_number_change",
            Reason::CardApplied => "card_applied",
            Reason::CardIssued => "card_issued",
            Reason::CardReturned => "card_returned",
            Reason::Cancel => "cancel",
        }
    }

    /// The reason of a stored code.
    pub fn from_code(code: u8) -> Option<Reason> {
        Reason::ALL.get(code as usize).copied()
    }
}

/// One applied change: who recorded it, when, for whom, and the values it set.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    /// The person (their id).
    pub person: u32,
    /// The person's previous entry, or [`NONE`].
    pub prev: u32,
    /// The batch that applied it (visible to calls that read batch ≥ this).
    pub batch: u32,
    /// Field groups set (see [`group`]).
    pub mask: u16,
    /// 異動事由.
    pub reason: Reason,
    /// For a cancel: the entry it cancels; otherwise [`NONE`].
    pub cancels: u32,
    /// The submitting municipality's code (6 digits, as a number).
    pub municipality: u32,
    /// That municipality's sequence number.
    pub sequence: u64,
    /// 異動日 (days since 1970-01-01).
    pub effective: i32,
    /// 届出日.
    pub reported: i32,
    /// When the batch was committed (microseconds since 1970-01-01 UTC).
    pub recorded: i64,
    /// The values of the groups in `mask` (the rest is meaningless).
    pub set: Values,
}

/// An [`Entry`] as the registry keeps it: 48 bytes, one cache line for most. The values it set
/// are packed in `payload` group by group (in [`group`] bit order, each at its size); what does
/// not fit in 16 bytes (a new person's every group, a few corrections) lives in the registry's
/// wide arena and `payload` holds its index. A cancel holds the entry it cancels. Its commit time
/// is its batch's ([`Live::recorded_at`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Stored {
    /// The person (their id).
    pub person: u32,
    /// The person's previous entry, or [`NONE`].
    pub prev: u32,
    /// The batch that applied it.
    pub batch: u32,
    /// 異動日.
    pub effective: i32,
    /// 届出日.
    pub reported: i32,
    /// Field groups set.
    pub mask: u16,
    /// 異動事由.
    pub reason: Reason,
    /// 1 when `payload` holds an index into the wide arena.
    wide: u8,
    /// Municipality code << 43 | sequence number.
    pub key: u64,
    payload: [u8; 16],
}

impl Stored {
    /// The submitting municipality's code.
    pub fn municipality(&self) -> u32 {
        (self.key >> 43) as u32
    }

    /// That municipality's sequence number.
    pub fn sequence(&self) -> u64 {
        self.key & ((1 << 43) - 1)
    }

    /// For a cancel, the entry it cancels.
    pub fn cancels(&self) -> u32 {
        if self.reason == Reason::Cancel {
            u32::from_le_bytes(self.payload[..4].try_into().expect("4 bytes"))
        } else {
            NONE
        }
    }
}

/// Bytes a group's values take in a [`Stored`] payload, by group bit.
const GROUP_BYTES: [usize; 9] = [8, 4, 1, 10, 6, 1, 8, 9, 6];

fn packed_len(mask: u16) -> usize {
    (0..9)
        .filter(|g| mask & (1 << g) != 0)
        .map(|g| GROUP_BYTES[g])
        .sum()
}

/// Write the values of `mask`'s groups, in bit order.
fn pack(mask: u16, v: &Values, out: &mut [u8]) {
    let (p, q) = (&v.resident.person, &v.resident.place);
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    for g in 0..9u16 {
        match 1 << g {
            bit if mask & bit == 0 => {}
            group::NAME => {
                put(&p.family.to_le_bytes());
                put(&p.given.to_le_bytes());
            }
            group::BIRTH => put(&p.birth_date.to_le_bytes()),
            group::SEX => put(&[p.sex]),
            group::ADDRESS => {
                put(&p.municipality.to_le_bytes());
                put(&q.town.to_le_bytes());
                put(&q.block.to_le_bytes());
            }
            group::STATUS => {
                put(&[p.status, q.dated]);
                put(&q.status_date.to_le_bytes());
            }
            group::CARD => put(&[q.card]),
            group::RESIDENT_CODE => put(&v.resident_code.to_le_bytes()),
            group::MY_NUMBER => {
                put(&v.my_number.to_le_bytes());
                put(&[v.generation]);
            }
            _ => {
                put(&v.moving_out.to_le_bytes());
                put(&v.moving_to.to_le_bytes());
            }
        }
    }
}

/// Read back what [`pack`] wrote into `v` (groups of `mask` only).
fn unpack(mask: u16, bytes: &[u8], v: &mut Values) {
    let mut at = 0;
    let mut take = |n: usize| {
        let s = &bytes[at..at + n];
        at += n;
        s
    };
    let u32_ = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes"));
    let i32_ = |b: &[u8]| i32::from_le_bytes(b.try_into().expect("4 bytes"));
    let u64_ = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    let u16_ = |b: &[u8]| u16::from_le_bytes(b.try_into().expect("2 bytes"));
    for g in 0..9u16 {
        let (p, q) = (&mut v.resident.person, &mut v.resident.place);
        match 1 << g {
            bit if mask & bit == 0 => {}
            group::NAME => {
                p.family = u32_(take(4));
                p.given = u32_(take(4));
            }
            group::BIRTH => p.birth_date = i32_(take(4)),
            group::SEX => p.sex = take(1)[0],
            group::ADDRESS => {
                p.municipality = u16_(take(2));
                q.town = u32_(take(4));
                q.block = u32_(take(4));
            }
            group::STATUS => {
                let b = take(2);
                (p.status, q.dated) = (b[0], b[1]);
                q.status_date = i32_(take(4));
            }
            group::CARD => q.card = take(1)[0],
            group::RESIDENT_CODE => v.resident_code = u64_(take(8)),
            group::MY_NUMBER => {
                v.my_number = u64_(take(8));
                v.generation = take(1)[0];
            }
            _ => {
                v.moving_out = i32_(take(4));
                v.moving_to = u16_(take(2));
            }
        }
    }
}

/// A single-writer hash map from u64 keys to u64 values that readers probe without locks. The
/// writer stores a new key's value before the key (release), so a reader that sees the key sees
/// its value; a value replaced later is read old or new, both of which the readers handle (an
/// entry newer than their batch is walked past). Grown by building a larger copy that the next
/// readers load ([`ArcSwap`]); the old one stays valid for the readers that hold it.
pub struct SlotMap {
    /// (key, value) pairs side by side: a probe touches one cache line.
    slots: Box<[[AtomicU64; 2]]>,
    len: AtomicUsize,
    shift: u32,
}

const FREE: u64 = u64::MAX;

impl SlotMap {
    /// A map for about `n` keys (at load ≤ 0.5).
    pub fn with_capacity(n: usize) -> SlotMap {
        let cap = (n.max(8) * 2).next_power_of_two();
        SlotMap {
            slots: (0..cap)
                .map(|_| [AtomicU64::new(FREE), AtomicU64::new(0)])
                .collect(),
            len: AtomicUsize::new(0),
            shift: 64 - cap.trailing_zeros(),
        }
    }

    #[inline(always)]
    fn home(&self, key: u64) -> usize {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// Start loading the slot `key` hashes to.
    #[inline(always)]
    pub fn prefetch(&self, key: u64) {
        crate::memory::prefetch(&self.slots[self.home(key)]);
    }

    /// The value of `key`, if present.
    #[inline]
    pub fn get(&self, key: u64) -> Option<u64> {
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        loop {
            let [k, v] = &self.slots[i];
            let k = k.load(Ordering::Acquire);
            if k == key {
                return Some(v.load(Ordering::Acquire));
            }
            if k == FREE {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    /// Insert or replace (the writer only). `key` must not be [`FREE`].
    pub fn set(&self, key: u64, value: u64) {
        debug_assert_ne!(key, FREE);
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        loop {
            let [k, v] = &self.slots[i];
            let held = k.load(Ordering::Relaxed);
            if held == key {
                v.store(value, Ordering::Release);
                return;
            }
            if held == FREE {
                v.store(value, Ordering::Relaxed);
                k.store(key, Ordering::Release);
                self.len.fetch_add(1, Ordering::Relaxed);
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether one more key would pass load 0.5.
    pub fn full(&self) -> bool {
        (self.len() + 1) * 2 > self.slots.len()
    }

    /// A copy with twice the room.
    pub fn grown(&self) -> SlotMap {
        let bigger = SlotMap::with_capacity(self.slots.len());
        for (k, v) in self.iter() {
            bigger.set(k, v);
        }
        bigger
    }

    /// Bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.slots.len() * 16
    }

    /// Every (key, value), in slot order (the writer, or a quiescent map).
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.slots
            .iter()
            .map(|[k, v]| (k.load(Ordering::Acquire), v.load(Ordering::Acquire)))
            .filter(|(k, _)| *k != FREE)
    }
}

/// The key of an identifier in the identifier map: its kind in the top bit.
pub fn id_key(kind: IdKind, value: u64) -> u64 {
    match kind {
        IdKind::MyNumber => value,
        _ => value | (1 << 63),
    }
}

/// Dictionary values the changes brought that the base's dictionaries lack: keys from the
/// base dictionary's length on.
#[derive(Default)]
pub struct Extension {
    /// (value, reading) per new key; the reading is empty where the dictionary has none.
    pub values: boxcar::Vec<(Box<str>, Box<str>)>,
}

impl Extension {
    /// The value (and reading) of extension key `k` (a key minus the base dictionary's length).
    pub fn get(&self, k: usize) -> Option<&(Box<str>, Box<str>)> {
        self.values.get(k)
    }
}

/// The dictionaries that changes extend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Dict {
    Family = 0,
    Given,
    Town,
    Block,
}

/// An append-only arena of plain values that one writer grows while readers read, lock-free:
/// buckets of doubling size that never move, so a published index's address can be computed
/// (and prefetched) without touching the value. An index is read only after the writer published
/// it (release) and the reader saw the publication (acquire): `len` is the bound checked.
pub struct Arena<T: Copy> {
    buckets: [AtomicPtr<T>; ARENA_BUCKETS],
    len: AtomicUsize,
}

const ARENA_FIRST: usize = 1 << 10;
const ARENA_BUCKETS: usize = 40;

#[inline(always)]
fn arena_slot(i: usize) -> (usize, usize) {
    let b = (usize::BITS - 1 - (i / ARENA_FIRST + 1).leading_zeros()) as usize;
    (b, i - ARENA_FIRST * ((1 << b) - 1))
}

impl<T: Copy> Default for Arena<T> {
    fn default() -> Self {
        Arena {
            buckets: std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut())),
            len: AtomicUsize::new(0),
        }
    }
}

impl<T: Copy> Arena<T> {
    /// Values appended.
    pub fn count(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Append (the writer only); returns the value's index.
    pub fn push(&self, value: T) -> usize {
        let i = self.len.load(Ordering::Relaxed);
        let (b, offset) = arena_slot(i);
        let mut ptr = self.buckets[b].load(Ordering::Acquire);
        if ptr.is_null() {
            let mut bucket: Vec<T> = Vec::with_capacity(ARENA_FIRST << b);
            ptr = bucket.as_mut_ptr();
            std::mem::forget(bucket);
            self.buckets[b].store(ptr, Ordering::Release);
        }
        // SAFETY: bucket b holds ARENA_FIRST << b values and offset is below that; slot i is
        // written once, before `len` publishes it, and no reader reads it before.
        unsafe { ptr.add(offset).write(value) };
        self.len.store(i + 1, Ordering::Release);
        i
    }

    /// The address of value `i`, if appended (for prefetching; nothing is read).
    #[inline(always)]
    pub fn address(&self, i: usize) -> Option<*const T> {
        if i >= self.len.load(Ordering::Acquire) {
            return None;
        }
        let (b, offset) = arena_slot(i);
        let ptr = self.buckets[b].load(Ordering::Acquire);
        // SAFETY: i < len, so bucket b exists and holds offset (see `push`).
        Some(unsafe { ptr.add(offset) } as *const T)
    }

    /// Value `i`, if appended.
    #[inline(always)]
    pub fn get(&self, i: usize) -> Option<&T> {
        // SAFETY: the address of a published value, never written again, alive as long as the
        // arena.
        self.address(i).map(|p| unsafe { &*p })
    }

    /// Every value, in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        (0..self.count()).filter_map(|i| self.get(i))
    }
}

impl<T: Copy> Drop for Arena<T> {
    fn drop(&mut self) {
        for (b, bucket) in self.buckets.iter().enumerate() {
            let ptr = bucket.load(Ordering::Acquire);
            if !ptr.is_null() {
                // SAFETY: allocated in `push` as a Vec of this capacity; T is Copy (no drops).
                drop(unsafe { Vec::from_raw_parts(ptr, 0, ARENA_FIRST << b) });
            }
        }
    }
}

// SAFETY: the arena hands out shared references to T only, and appends through atomics.
unsafe impl<T: Copy + Send> Send for Arena<T> {}
unsafe impl<T: Copy + Sync> Sync for Arena<T> {}

/// The changes applied to a base: entries, chains, the identifier map, dictionary extensions.
pub struct Live {
    /// Rows of the base.
    pub base_len: u32,
    /// Lengths of the base's dictionaries (by [`Dict`]).
    pub base_dicts: [u32; 4],
    /// Every entry, in the order applied.
    pub entries: Arena<Stored>,
    /// The values of entries too wide for their payload.
    wide: Arena<Values>,
    /// Per batch (its number), its commit time (µs since the epoch); batch 0 is the base's.
    batch_times: Arena<i64>,
    /// Person id → their newest entry.
    pub heads: ArcSwap<SlotMap>,
    /// [`id_key`] of an identifier no base index holds → `person | batch << 32`.
    pub ids: ArcSwap<SlotMap>,
    /// One bit per base row: the row has an entry applied since the base was opened.
    dirty: Box<[AtomicU64]>,
    /// The newest batch readers may see.
    published: AtomicU32,
    /// Whether any entry predates the base (history a snapshot kept): as-of reads resolve them.
    pub has_history: AtomicBool,
    /// New dictionary values, by [`Dict`].
    pub ext: [Extension; 4],
    /// Persons created by changes (ids from `base_len`).
    pub created: AtomicU32,
    /// The newest batch the base holds folded in (its history's), when every one of its rows
    /// reads as the base has it: a current read at that batch needs no resolving.
    pub base_batch: AtomicU32,
    /// Entries that are origins (a snapshot's values of a person before its history); they
    /// lead the arena, so entry `at` is change number `at - origins + 1` (see `notices`).
    pub origins: AtomicU32,
    /// 転入通知 owed to former municipalities, in entry order (see `notices`).
    pub notices: Arena<crate::notices::Notice>,
    /// Where a front end numbers the changes (a shard of a sharded registry, whose changes are
    /// numbered across every shard): the number of each entry after the origins, ascending,
    /// with gaps where other shards' changes fall. Empty where entries are numbered by their
    /// position (see `notices::change_number`).
    pub numbers: Arena<u64>,
    /// Whether the changes are numbered by `numbers` (set by the first numbered entry).
    pub numbered: AtomicBool,
}

/// Which entries a read sees, and on which effective date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    /// The newest batch seen.
    pub batch: u32,
    /// Entries recorded after this time (µs since the epoch) are not seen.
    pub recorded: i64,
    /// Values in force on this date (days since the epoch); `i32::MAX` for the current ones.
    pub effective: i32,
}

impl Cut {
    /// Whether this is the current state (no as-of date, no recorded-as-of time).
    pub fn is_now(&self) -> bool {
        self.effective == i32::MAX && self.recorded == i64::MAX
    }

    fn sees(&self, e: &Stored) -> bool {
        e.batch <= self.batch
    }
}

impl Live {
    /// No changes yet, over a base of `data`.
    pub fn new(data: &RegistryData) -> Live {
        let d = &data.dicts;
        let base_len = data.len() as u32;
        Live {
            base_len,
            base_dicts: [
                d.family_name.len() as u32,
                d.given_name.len() as u32,
                d.address_town.len() as u32,
                d.address_block.len() as u32,
            ],
            entries: Arena::default(),
            wide: Arena::default(),
            batch_times: {
                let times = Arena::default();
                times.push(i64::MIN);
                times
            },
            heads: ArcSwap::from_pointee(SlotMap::with_capacity(1 << 12)),
            ids: ArcSwap::from_pointee(SlotMap::with_capacity(1 << 10)),
            dirty: (0..(base_len as usize).div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            published: AtomicU32::new(0),
            has_history: AtomicBool::new(false),
            ext: Default::default(),
            created: AtomicU32::new(0),
            base_batch: AtomicU32::new(0),
            origins: AtomicU32::new(0),
            notices: Arena::default(),
            numbers: Arena::default(),
            numbered: AtomicBool::new(false),
        }
    }

    /// The newest published batch.
    pub fn published(&self) -> u32 {
        self.published.load(Ordering::Acquire)
    }

    /// Make every batch up to `batch` visible (batches become durable in order, so the newest
    /// durable one covers the rest).
    pub fn publish(&self, batch: u32) {
        self.published.fetch_max(batch, Ordering::AcqRel);
    }

    /// The cut of the current state.
    pub fn now(&self) -> Cut {
        Cut {
            batch: self.published(),
            recorded: i64::MAX,
            effective: i32::MAX,
        }
    }

    /// Append `entry` and make it its person's head (the writer only). Visible once its batch
    /// is published.
    pub fn push(&self, entry: Entry) -> u32 {
        self.push_entry(entry, false)
    }

    /// Append an entry of a snapshot's history: the base holds its values already, so its row
    /// is not marked for resolving.
    pub fn push_historic(&self, entry: Entry) -> u32 {
        self.push_entry(entry, true)
    }

    fn push_entry(&self, entry: Entry, historic: bool) -> u32 {
        let heads = self.heads.load();
        let key = entry.person as u64;
        let mut stored = Stored {
            person: entry.person,
            prev: heads.get(key).map_or(NONE, |h| h as u32),
            batch: entry.batch,
            effective: entry.effective,
            reported: entry.reported,
            mask: entry.mask,
            reason: entry.reason,
            wide: 0,
            key: (entry.municipality as u64) << 43 | entry.sequence,
            payload: [0; 16],
        };
        if entry.reason == Reason::Cancel {
            stored.payload[..4].copy_from_slice(&entry.cancels.to_le_bytes());
        } else if packed_len(entry.mask) <= 16 {
            pack(entry.mask, &entry.set, &mut stored.payload);
        } else {
            let at = self.wide.push(entry.set) as u32;
            stored.wide = 1;
            stored.payload[..4].copy_from_slice(&at.to_le_bytes());
        }
        // Batches are numbered densely from 1: the first entry of a batch records its time.
        while self.batch_times.count() <= entry.batch as usize {
            self.batch_times.push(entry.recorded);
        }
        let at = self.entries.push(stored) as u32;
        if entry.reason == Reason::Origin {
            self.origins.fetch_add(1, Ordering::Release);
        }
        if historic || entry.batch == 0 {
            self.has_history.store(true, Ordering::Release);
        } else if entry.person < self.base_len {
            let (w, b) = (entry.person as usize / 64, entry.person % 64);
            self.dirty[w].fetch_or(1 << b, Ordering::Release);
        }
        if heads.full() {
            let grown = heads.grown();
            grown.set(key, at as u64);
            self.heads.store(Arc::new(grown));
        } else {
            heads.set(key, at as u64);
        }
        at
    }

    /// The values a stored entry set (groups of its mask; the rest default).
    pub fn values_of(&self, e: &Stored) -> Values {
        let mut v = Values {
            moving_out: NO_DATE,
            moving_to: u16::MAX,
            ..Values::default()
        };
        if e.reason == Reason::Cancel {
            return v;
        }
        if e.wide == 1 {
            let at = u32::from_le_bytes(e.payload[..4].try_into().expect("4 bytes"));
            if let Some(w) = self.wide.get(at as usize) {
                v.set_groups(w, e.mask);
            }
        } else {
            unpack(e.mask, &e.payload, &mut v);
        }
        v
    }

    /// The commit time of batch `batch` (µs since the epoch; the base's is the earliest).
    pub fn recorded_at(&self, batch: u32) -> i64 {
        self.batch_times
            .get(batch as usize)
            .copied()
            .unwrap_or(i64::MAX)
    }

    /// The newest batch committed at or before `t` (0, the base, if none).
    pub fn batch_at(&self, t: i64) -> u32 {
        let (mut lo, mut hi) = (0usize, self.batch_times.count());
        // Invariant: batch lo's time is ≤ t (batch 0's is i64::MIN); times never go back.
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if self.batch_times.get(mid).is_some_and(|&m| m <= t) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo as u32
    }

    /// Record that `value` (of `kind`) belongs to `person` from `batch` on (the writer only).
    pub fn add_id(&self, kind: IdKind, value: u64, person: u32, batch: u32) {
        let ids = self.ids.load();
        let v = person as u64 | (batch as u64) << 32;
        if ids.full() {
            let grown = ids.grown();
            grown.set(id_key(kind, value), v);
            self.ids.store(Arc::new(grown));
        } else {
            ids.set(id_key(kind, value), v);
        }
    }

    /// Start loading the dirty bit of base row `row`.
    #[inline(always)]
    pub fn prefetch_dirty(&self, row: u32) {
        if let Some(w) = self.dirty.get(row as usize / 64) {
            crate::memory::prefetch(w);
        }
    }

    /// Mark base row `row` for resolving (a person a snapshot's history holds as cancelled).
    pub fn mark(&self, row: u32) {
        if let Some(w) = self.dirty.get(row as usize / 64) {
            w.fetch_or(1 << (row % 64), Ordering::Release);
        }
    }

    /// Whether base row `row` has an entry applied since the base was opened.
    #[inline(always)]
    pub fn is_dirty(&self, row: u32) -> bool {
        let w = self.dirty[row as usize / 64].load(Ordering::Acquire);
        w & (1 << (row % 64)) != 0
    }

    /// Add a dictionary value (the writer only); returns its key (base length + position).
    pub fn extend(&self, dict: Dict, value: &str, reading: &str) -> u32 {
        let at = self.ext[dict as usize]
            .values
            .push((value.into(), reading.into()));
        self.base_dicts[dict as usize] + at as u32
    }

    /// A dictionary value of key `k` beyond the base's.
    pub fn ext_value(&self, dict: Dict, k: usize) -> Option<&(Box<str>, Box<str>)> {
        let base = self.base_dicts[dict as usize] as usize;
        k.checked_sub(base)
            .and_then(|i| self.ext[dict as usize].get(i))
    }

    /// Bytes held by entries and maps.
    pub fn memory_bytes(&self) -> usize {
        self.entries.count() * std::mem::size_of::<Stored>()
            + self.wide.count() * std::mem::size_of::<Values>()
            + self.heads.load().memory_bytes()
            + self.ids.load().memory_bytes()
            + self.dirty.len() * 8
            + self.notices.count() * std::mem::size_of::<crate::notices::Notice>()
    }
}

/// A person's values resolved for a read.
#[derive(Clone, Copy, Debug)]
pub struct Resolved {
    /// The values (identifiers of groups not in `set` are the base's, left 0 here).
    pub values: Values,
    /// Whether the identifier the read used is no longer the person's (replaced).
    pub replaced: bool,
    /// The groups entries set.
    pub set: u16,
}

/// The registry as one read sees it: the base, the changes up to a batch, a date.
pub struct View<'a> {
    /// The base.
    pub data: &'a RegistryData,
    /// The changes.
    pub live: &'a Live,
    heads: Arc<SlotMap>,
    ids: Arc<SlotMap>,
    /// What the read sees.
    pub cut: Cut,
    /// Whether every base row reads as the base has it (the current state, no change applied
    /// since the base): only a key the base lacks may need the changes (a former identifier).
    clean: bool,
}

impl<'a> View<'a> {
    /// The view of `cut` (its batch read by the caller, before this call).
    pub fn new(data: &'a RegistryData, live: &'a Live, mut cut: Cut) -> View<'a> {
        // As recorded at a moment: the batches committed by then.
        if cut.recorded != i64::MAX {
            cut.batch = cut.batch.min(live.batch_at(cut.recorded));
        }
        View {
            data,
            live,
            heads: live.heads.load_full(),
            ids: live.ids.load_full(),
            clean: cut.is_now() && cut.batch <= live.base_batch.load(Ordering::Acquire),
            cut,
        }
    }

    /// Whether the base alone answers: the current state with no change applied since open,
    /// and no former identifier to answer as replaced.
    pub fn plain(&self) -> bool {
        self.clean && self.ids.is_empty()
    }

    /// Whether every row reads as the base holds it (former identifiers aside, which only a
    /// lookup by key needs): what reads the rows in order, such as `to_arrow`, may take them.
    pub fn clean(&self) -> bool {
        self.clean
    }

    /// The base's values of row `row`.
    pub fn base_values(&self, row: u32) -> Values {
        let c = &self.data.cols;
        let r = row as usize;
        Values {
            resident: Resident {
                person: self.data.persons.rows()[r],
                place: self.data.persons.places()[r],
            },
            resident_code: c.resident_code[r],
            my_number: c.my_number[r],
            moving_out: NO_DATE,
            moving_to: u16::MAX,
            generation: 0,
        }
    }

    /// Walk the entries of `person` this view sees, newest first (and only those before entry
    /// `below`), calling `f(at, entry, cancelled)`; a cancel's target is reported cancelled
    /// (the cancel itself too is reported). No allocation unless more than four cancels meet.
    fn walk(&self, person: u32, below: u32, f: impl FnMut(u32, &'a Stored, bool)) {
        if let Some(head) = self.heads.get(person as u64) {
            self.walk_from(head as u32, below, f);
        }
    }

    /// [`View::walk`] from entry `head` (the person's newest).
    fn walk_from(&self, head: u32, below: u32, mut f: impl FnMut(u32, &'a Stored, bool)) {
        let mut at = head;
        let mut cancelled = [NONE; 4];
        let mut more: Vec<u32> = Vec::new();
        let mut n = 0;
        while at != NONE {
            let Some(e) = self.live.entries.get(at as usize) else {
                break;
            };
            if at < below && self.cut.sees(e) {
                let hit = cancelled[..n.min(4)].contains(&at) || more.contains(&at);
                if e.reason == Reason::Cancel && !hit {
                    if n < 4 {
                        cancelled[n] = e.cancels();
                    } else {
                        more.push(e.cancels());
                    }
                    n += 1;
                }
                f(at, e, hit);
            }
            at = e.prev;
        }
    }

    /// The entries of `person` this view sees, newest first, without cancels and the changes
    /// they cancelled.
    pub fn chain(&self, person: u32) -> Vec<(u32, &'a Stored)> {
        let mut out = Vec::new();
        self.walk(person, NONE, |at, e, cancelled| {
            if !cancelled && e.reason != Reason::Cancel {
                out.push((at, e));
            }
        });
        out
    }

    /// The entries of `person` this view sees, newest first, each with whether a cancel this
    /// view sees cancelled it (cancels themselves included).
    pub fn entries_of(&self, person: u32) -> Vec<(u32, &'a Stored, bool)> {
        let mut out = Vec::new();
        self.walk(person, NONE, |at, e, cancelled| {
            out.push((at, e, cancelled))
        });
        out
    }

    /// The values of `person` this view sees, or None where the person does not exist in it
    /// (not yet born or entered, or created by a change it does not see).
    pub fn resolve(&self, person: u32) -> Option<Values> {
        self.resolve_below(person, NONE)
    }

    /// [`View::resolve`] from the entries before entry `below` only (the values a change
    /// found).
    pub fn resolve_below(&self, person: u32, below: u32) -> Option<Values> {
        let (mut values, set) = self.resolve_parts(person, below)?;
        if person < self.live.base_len {
            let c = &self.data.cols;
            if set & group::RESIDENT_CODE == 0 {
                values.resident_code = c.resident_code[person as usize];
            }
            if set & group::MY_NUMBER == 0 {
                values.my_number = c.my_number[person as usize];
            }
        }
        Some(values)
    }

    /// The values of `person` and the groups entries set (the rest from the base), without
    /// reading the base's identifiers: those of groups not set are left 0.
    pub fn resolve_parts(&self, person: u32, below: u32) -> Option<(Values, u16)> {
        let head = self.heads.get(person as u64).map_or(NONE, |h| h as u32);
        self.resolve_from(person, head, below)
    }

    /// [`View::resolve_parts`] with the person's newest entry `head` known ([`NONE`]: none).
    fn resolve_from(&self, person: u32, head: u32, below: u32) -> Option<(Values, u16)> {
        let mut values = Values {
            moving_out: NO_DATE,
            moving_to: u16::MAX,
            ..Values::default()
        };
        let mut set = 0u16;
        // Per group, the effective date of the entry that set it: the walk is newest first, so
        // the first entry met at an effective date wins its ties.
        let mut best = [i32::MIN; 9];
        let day = self.cut.effective;
        self.walk_from(head, below, |_, e, cancelled| {
            if cancelled || e.reason == Reason::Cancel || e.effective > day {
                return;
            }
            // The groups this entry wins: not set yet, or set by an entry effective earlier.
            let mut wins = 0u16;
            let mut mask = e.mask;
            while mask != 0 {
                let g = mask.trailing_zeros() as usize;
                let bit = 1u16 << g;
                mask &= mask - 1;
                if set & bit == 0 || e.effective > best[g] {
                    best[g] = e.effective;
                    wins |= bit;
                }
            }
            if wins != 0 {
                set |= wins;
                values.set_groups(&self.live.values_of(e), wins);
            }
        });
        let in_base = person < self.live.base_len;
        if !in_base && set & group::NAME == 0 {
            return None;
        }
        if in_base && set != group::ALL {
            let base = Values {
                resident: Resident {
                    person: self.data.persons.rows()[person as usize],
                    place: self.data.persons.places()[person as usize],
                },
                ..values
            };
            let mut merged = base;
            merged.set_groups(&values, set);
            values = merged;
        }
        if day != i32::MAX {
            let p = &mut values.resident;
            if p.person.birth_date > day {
                return None;
            }
            // A status dated after the day asked for was not yet in force.
            if p.place.dated == 1 && p.place.status_date > day {
                p.person.status = 0;
                p.place.dated = 0;
                p.place.status_date = 0;
            }
            if values.moving_out != NO_DATE && values.moving_out > day {
                values.moving_out = NO_DATE;
            }
        }
        Some((values, set))
    }

    /// The person an identifier names in this view (current or former identifier).
    pub fn person_of(&self, kind: IdKind, value: u64) -> Option<u32> {
        if let Ok(index) = self.data.index(kind) {
            if let Some(row) = index.get(value) {
                return Some(row);
            }
        }
        let v = self.ids.get(id_key(kind, value))?;
        ((v >> 32) as u32 <= self.cut.batch).then_some(v as u32)
    }

    /// Start loading the chain head of `person` (a read about to resolve it).
    #[inline(always)]
    pub fn prefetch_head(&self, person: u32) {
        self.heads.prefetch(person as u64);
    }

    /// Start loading what [`changed`](Self::changed) of `row` reads: nothing in a clean view,
    /// whose rows all read as the base has them (a prefetch of the 16 MiB dirty map there would
    /// only take memory bandwidth from the probes).
    #[inline(always)]
    pub(crate) fn prefetch_changed(&self, row: u32) {
        if !self.clean {
            self.live.prefetch_dirty(row);
        }
    }

    /// Whether row `row` has entries this view may see (a clean base row reads the base).
    #[inline(always)]
    pub(crate) fn changed(&self, row: u32) -> bool {
        // A clean view (a checkpoint's snapshot reopened, with its former identifiers) reads
        // no bit of the dirty map: at the nation's size it is 16 MiB, a cache miss a claim.
        !self.clean
            && (row >= self.live.base_len
                || (self.cut.batch > 0 && self.live.is_dirty(row))
                || (self.live.has_history.load(Ordering::Relaxed)
                    && !self.cut.is_now()
                    && self.heads.get(row as u64).is_some()))
    }

    /// The rows (base rows or persons) a search found, resolved where changes touched them:
    /// `(i, values)` for every row not read from the base as it is; a row no longer found
    /// becomes [`NOT_FOUND`].
    pub fn resolve_rows(&self, rows: &mut [u32]) -> Vec<(u32, Resolved)> {
        let mut out = Vec::new();
        for (i, row) in rows.iter_mut().enumerate() {
            if *row == NOT_FOUND || !self.changed(*row) {
                continue;
            }
            match self.resolve_parts(*row, NONE) {
                None => *row = NOT_FOUND,
                Some((values, set)) => out.push((
                    i as u32,
                    Resolved {
                        values,
                        replaced: false,
                        set,
                    },
                )),
            }
        }
        out
    }

    /// After a probe of the base index: find the keys only changes know, and resolve the rows
    /// changes touched. `rows[i]` becomes the person or [`NOT_FOUND`]; `out` gets `(i, values)`
    /// for every row not read from the base as it is. On an as-of date, a clean row born after
    /// it is not found, and one whose status is dated after it is resolved (still resident).
    pub fn patch(
        &self,
        kind: IdKind,
        bases: &[u64],
        rows: &mut [u32],
        out: &mut Vec<(u32, Resolved)>,
    ) {
        let with_ids = !self.ids.is_empty();
        let persons = self.data.persons.rows();
        let places = self.data.persons.places();
        let day = self.cut.effective;
        // Rows to resolve, found in a first pass; their chain heads and head entries are
        // prefetched a pass ahead, so their misses overlap (a chunk holds a few thousand rows).
        let mut todo: Vec<u32> = Vec::new();
        for (i, row) in rows.iter_mut().enumerate() {
            // A key only the changes know (a new person's, or a former identifier) is always
            // resolved: whether it is replaced depends on the person's values.
            let mut by_id = false;
            if *row == NOT_FOUND {
                if !with_ids || bases[i] == INVALID_KEY {
                    continue;
                }
                let value = kind.with_check_digit(bases[i]);
                match self.ids.get(id_key(kind, value)) {
                    Some(v) if (v >> 32) as u32 <= self.cut.batch => *row = v as u32,
                    _ => continue,
                }
                by_id = true;
            }
            if !by_id && !self.changed(*row) {
                if day == i32::MAX {
                    continue;
                }
                let (p, q) = (&persons[*row as usize], &places[*row as usize]);
                if p.birth_date > day {
                    *row = NOT_FOUND;
                    continue;
                }
                if !(q.dated == 1 && q.status_date > day) {
                    continue;
                }
            }
            if let Some(q) = places.get(*row as usize) {
                // A resolved row merges its base Place too, which the probe did not fetch.
                crate::memory::prefetch(q);
            }
            todo.push(i as u32);
        }
        // Chain heads, then head entries, each prefetched a fixed distance ahead of its read so
        // that a few misses are in flight at a time (a burst of hundreds would stall).
        const AHEAD: usize = 16;
        let mut heads = vec![NONE; todo.len()];
        for k in 0..todo.len() {
            if let Some(&j) = todo.get(k + AHEAD) {
                self.heads.prefetch(rows[j as usize] as u64);
            }
            heads[k] = self
                .heads
                .get(rows[todo[k] as usize] as u64)
                .map_or(NONE, |h| h as u32);
        }
        let prefetch_entry = |at: u32| {
            if let Some(e) = self.live.entries.address(at as usize) {
                // An entry (48 bytes) may straddle two cache lines.
                crate::memory::prefetch(e);
                crate::memory::prefetch((e as *const u8).wrapping_add(47));
            }
        };
        for (k, &i) in todo.iter().enumerate() {
            if let Some(&h) = heads.get(k + AHEAD) {
                prefetch_entry(h);
            }
            // Half as far ahead, the head entry has arrived: fetch the one before it (a move's
            // move_out before its move_in, an application before its issue).
            if let Some(e) = heads
                .get(k + AHEAD / 2)
                .and_then(|&h| self.live.entries.get(h as usize))
            {
                prefetch_entry(e.prev);
            }
            let i = i as usize;
            match self.resolve_from(rows[i], heads[k], NONE) {
                None => rows[i] = NOT_FOUND,
                Some((values, set)) => {
                    // An identifier no entry set is the base's: the key found it, so it is
                    // the person's still.
                    let group = match kind {
                        IdKind::MyNumber => group::MY_NUMBER,
                        _ => group::RESIDENT_CODE,
                    };
                    let replaced = set & group != 0 && kind.base_of(values.id(kind)) != bases[i];
                    out.push((
                        i as u32,
                        Resolved {
                            values,
                            replaced,
                            set,
                        },
                    ));
                }
            }
        }
    }
}

/// The text of key `k` of a dictionary (its reading with `reading`), base or added.
pub(crate) fn dict_text(view: &View, dict: Dict, k: u32, reading: bool) -> String {
    let d = &view.data.dicts;
    let k = k as usize;
    let base = match (dict, reading) {
        (Dict::Family, false) => &d.family_name,
        (Dict::Family, true) => &d.family_name_kana,
        (Dict::Given, false) => &d.given_name,
        (Dict::Given, true) => &d.given_name_kana,
        (Dict::Town, _) => &d.address_town,
        (Dict::Block, _) => &d.address_block,
    };
    if k < base.len() {
        return base.value(k).to_string();
    }
    view.live
        .ext_value(dict, k)
        .map(|(v, r)| {
            if reading {
                r.to_string()
            } else {
                v.to_string()
            }
        })
        .unwrap_or_default()
}

/// A date as ISO 8601 text.
pub fn iso(days: i32) -> String {
    arrow_array::types::Date32Type::to_naive_date_opt(days)
        .map_or_else(|| format!("day {days}"), |d| d.to_string())
}

/// The public fields of a group's values, as `history` shows them: (field, text).
pub(crate) fn group_fields(view: &View, g: u16, v: &Values) -> Vec<(&'static str, Option<String>)> {
    let (p, q) = (&v.resident.person, &v.resident.place);
    let d = &view.data.dicts;
    match g {
        group::NAME => vec![
            (
                "family_name",
                Some(dict_text(view, Dict::Family, p.family, false)),
            ),
            (
                "family_name_kana",
                Some(dict_text(view, Dict::Family, p.family, true)),
            ),
            (
                "given_name",
                Some(dict_text(view, Dict::Given, p.given, false)),
            ),
            (
                "given_name_kana",
                Some(dict_text(view, Dict::Given, p.given, true)),
            ),
        ],
        group::BIRTH => vec![("birth_date", Some(iso(p.birth_date)))],
        group::SEX => vec![("sex", Some(p.sex.to_string()))],
        group::ADDRESS => vec![
            (
                "municipality_code",
                d.municipality_code
                    .iter()
                    .nth(p.municipality as usize)
                    .flatten()
                    .map(str::to_string),
            ),
            (
                "address_town",
                Some(dict_text(view, Dict::Town, q.town, false)),
            ),
            (
                "address_block",
                Some(dict_text(view, Dict::Block, q.block, false)),
            ),
        ],
        group::STATUS => vec![
            (
                "status",
                crate::storage::STATUS_VALUES
                    .get(p.status as usize)
                    .map(|s| s.to_string()),
            ),
            ("status_date", (q.dated == 1).then(|| iso(q.status_date))),
        ],
        group::CARD => vec![(
            "card_state",
            crate::storage::CARD_VALUES
                .get(q.card as usize)
                .map(|s| s.to_string()),
        )],
        group::RESIDENT_CODE => vec![(
            "resident_code",
            Some(IdKind::ResidentCode.format(v.resident_code)),
        )],
        group::MY_NUMBER => vec![("my_number", Some(IdKind::MyNumber.format(v.my_number)))],
        _ => vec![
            (
                "moving_out",
                (v.moving_out != NO_DATE).then(|| iso(v.moving_out)),
            ),
            (
                "moving_to",
                (v.moving_to != u16::MAX)
                    .then(|| {
                        d.municipality_code
                            .iter()
                            .nth(v.moving_to as usize)
                            .flatten()
                    })
                    .flatten()
                    .map(str::to_string),
            ),
        ],
    }
}

/// The history of the residents `keys` name (current or former identifiers of `kind`): one
/// row per change this view sees, oldest first, with the fields it changed (old and new).
pub fn history_table(
    view: &View,
    kind: IdKind,
    keys: &dyn arrow_array::Array,
) -> crate::error::Result<arrow_array::RecordBatch> {
    use arrow_array::builder::{
        BooleanBuilder, Date32Builder, Int64Builder, ListBuilder, StringBuilder, StructBuilder,
        TimestampMicrosecondBuilder,
    };
    use arrow_schema::{DataType, Field, Fields, Schema, TimeUnit};

    let parsed = crate::query::parse_keys(kind, keys, 0)?;
    let change_fields = Fields::from(vec![
        Field::new("field", DataType::Utf8, false),
        Field::new("old", DataType::Utf8, true),
        Field::new("new", DataType::Utf8, true),
    ]);
    let mut key_b = StringBuilder::new();
    let mut reason_b = StringBuilder::new();
    let mut eff_b = Date32Builder::new();
    let mut rep_b = Date32Builder::new();
    let mut rec_b = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut muni_b = StringBuilder::new();
    let mut seq_b = Int64Builder::new();
    let mut canc_b = BooleanBuilder::new();
    let mut changes_b = ListBuilder::new(StructBuilder::from_fields(change_fields.clone(), 0));
    for &base in &parsed.bases {
        if base == INVALID_KEY {
            continue;
        }
        let value = kind.with_check_digit(base);
        let Some(person) = view.person_of(kind, value) else {
            continue;
        };
        let mut entries = view.entries_of(person);
        entries.reverse();
        for (at, e, cancelled) in entries {
            if e.reason == Reason::Origin {
                continue;
            }
            key_b.append_value(kind.format(value));
            reason_b.append_value(e.reason.name());
            eff_b.append_value(e.effective);
            rep_b.append_value(e.reported);
            rec_b.append_value(view.live.recorded_at(e.batch));
            muni_b.append_value(format!("{:06}", e.municipality()));
            seq_b.append_value(e.sequence() as i64);
            canc_b.append_value(cancelled);
            let old = view.resolve_below(person, at);
            let fields = changes_b.values();
            let mut new = old.unwrap_or_default();
            new.set_groups(&view.live.values_of(e), e.mask);
            for g in 0..9 {
                let bit = 1u16 << g;
                if e.mask & bit == 0 {
                    continue;
                }
                let before = old.map(|o| group_fields(view, bit, &o));
                for (j, (field, after)) in group_fields(view, bit, &new).into_iter().enumerate() {
                    let was = before.as_ref().and_then(|b| b[j].1.clone());
                    if was == after {
                        continue;
                    }
                    fields
                        .field_builder::<StringBuilder>(0)
                        .expect("field")
                        .append_value(field);
                    fields
                        .field_builder::<StringBuilder>(1)
                        .expect("old")
                        .append_option(was);
                    fields
                        .field_builder::<StringBuilder>(2)
                        .expect("new")
                        .append_option(after);
                    fields.append(true);
                }
            }
            changes_b.append(true);
        }
    }
    let schema = Schema::new(vec![
        Field::new(kind.name(), DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("effective_date", DataType::Date32, false),
        Field::new("reported_date", DataType::Date32, false),
        Field::new(
            "recorded_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("municipality", DataType::Utf8, false),
        Field::new("sequence", DataType::Int64, false),
        Field::new("cancelled", DataType::Boolean, false),
        Field::new(
            "changes",
            DataType::List(std::sync::Arc::new(Field::new(
                "item",
                DataType::Struct(change_fields),
                true,
            ))),
            false,
        ),
    ]);
    Ok(arrow_array::RecordBatch::try_new(
        std::sync::Arc::new(schema),
        vec![
            std::sync::Arc::new(key_b.finish()),
            std::sync::Arc::new(reason_b.finish()),
            std::sync::Arc::new(eff_b.finish()),
            std::sync::Arc::new(rep_b.finish()),
            std::sync::Arc::new(rec_b.finish()),
            std::sync::Arc::new(muni_b.finish()),
            std::sync::Arc::new(seq_b.finish()),
            std::sync::Arc::new(canc_b.finish()),
            std::sync::Arc::new(changes_b.finish()),
        ],
    )?)
}

/// The registry as `view` sees it (the current state), folded into row columns and dictionaries
/// for a snapshot (see [`crate::snapshot::Rows`]): the base's rows with the changes applied, then
/// the persons changes created, each at its person id (a row is a person id, so ids stay valid
/// across a checkpoint). A person whose creation was cancelled keeps the row its creation gave
/// (reading it resolves it as not found, see [`Live::load_history`]).
///
/// Each column is folded when the snapshot writes it and dropped after, so a checkpoint holds one
/// column (and one index while that is written) beside the live registry: at the nation's size
/// 1 GiB and 2 GiB, where folding every column first would hold a second registry (~14 GiB). The
/// changed persons are resolved once per column: time (seconds at the nation's size) for memory.
pub struct Folded<'v, 'a> {
    view: &'v View<'a>,
    rows: usize,
    dicts: Dictionaries,
}

impl<'v, 'a> Folded<'v, 'a> {
    pub fn new(view: &'v View<'a>) -> Folded<'v, 'a> {
        let live = view.live;
        let d = &view.data.dicts;
        let extended = |base: &StringArray, dict: Dict, reading: bool| -> StringArray {
            base.iter()
                .map(|v| v.map(str::to_string))
                .chain(live.ext[dict as usize].values.iter().map(|(_, (v, r))| {
                    Some(if reading {
                        r.to_string()
                    } else {
                        v.to_string()
                    })
                }))
                .collect()
        };
        let dicts = Dictionaries {
            family_name: extended(&d.family_name, Dict::Family, false),
            family_name_kana: extended(&d.family_name_kana, Dict::Family, true),
            given_name: extended(&d.given_name, Dict::Given, false),
            given_name_kana: extended(&d.given_name_kana, Dict::Given, true),
            municipality_code: d.municipality_code.clone(),
            municipality_name: d.municipality_name.clone(),
            prefecture: d.prefecture.clone(),
            address_town: extended(&d.address_town, Dict::Town, false),
            address_block: extended(&d.address_block, Dict::Block, false),
        };
        Folded {
            view,
            rows: live.base_len as usize + live.created.load(Ordering::Acquire) as usize,
            dicts,
        }
    }

    /// The dictionaries of the folded rows (the base's, with the values changes added).
    pub fn dicts(&self) -> &Dictionaries {
        &self.dicts
    }

    /// The row columns the public columns `which` read, folded; the others left empty (never
    /// read): what `Registry.to_arrow` of a living registry answers from.
    pub fn columns_for(&self, which: &[Column]) -> crate::error::Result<Columns> {
        use crate::snapshot::Rows;
        use arrow_array::cast::AsArray;
        use arrow_array::types::{Date32Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type};
        let needs = |names: &[&str]| {
            which.iter().any(|&c| {
                let row = match c {
                    Column::ResidentCode => "resident_code",
                    Column::MyNumber => "my_number",
                    Column::FamilyName | Column::FamilyNameKana => "family",
                    Column::GivenName | Column::GivenNameKana => "given",
                    Column::BirthDate => "birth_date",
                    Column::Sex => "sex",
                    Column::MunicipalityCode | Column::MunicipalityName | Column::Prefecture => {
                        "municipality"
                    }
                    Column::AddressTown => "town",
                    Column::AddressBlock => "block",
                    Column::Status => "status",
                    Column::StatusDate => "status_date",
                    Column::CardState => "card",
                    // Numbered 0..rows: its length is the resident codes'.
                    Column::Person => "resident_code",
                };
                names.contains(&row)
            })
        };
        macro_rules! fold {
            ($name:literal, $t:ty) => {
                if needs(&[$name]) {
                    self.column($name)?.as_primitive::<$t>().values().clone()
                } else {
                    Default::default()
                }
            };
        }
        Ok(Columns {
            resident_code: fold!("resident_code", UInt64Type),
            my_number: fold!("my_number", UInt64Type),
            family: fold!("family", UInt32Type),
            given: fold!("given", UInt32Type),
            birth_date: fold!("birth_date", Date32Type),
            sex: fold!("sex", UInt8Type),
            municipality: fold!("municipality", UInt16Type),
            town: fold!("town", UInt32Type),
            block: fold!("block", UInt32Type),
            status: fold!("status", UInt8Type),
            status_date: if needs(&["status_date"]) {
                self.column("status_date")?
                    .as_primitive::<Date32Type>()
                    .clone()
            } else {
                arrow_array::Date32Array::from(Vec::<i32>::new())
            },
            card: fold!("card", UInt8Type),
        })
    }

    /// A person's values, where a change made them differ from the base row (or there is none).
    fn changed(&self, person: u32) -> Option<Values> {
        let (view, live) = (self.view, self.view.live);
        if person < live.base_len && !(view.cut.batch > 0 && live.is_dirty(person)) {
            return None;
        }
        view.resolve(person).or_else(|| {
            // A cancelled creation: its row keeps what the creation set.
            let oldest = view.entries_of(person).into_iter().last()?;
            Some(live.values_of(oldest.1))
        })
    }

    /// One column: the base's values, then each changed person's `pick` of their values.
    fn values<T: Copy + Default + Send + Sync>(
        &self,
        base: &[T],
        pick: impl Fn(&Values) -> T + Sync,
    ) -> Vec<T> {
        let mut out = Vec::with_capacity(self.rows);
        out.extend_from_slice(base);
        out.resize(self.rows, T::default());
        out.par_chunks_mut(1 << 16)
            .enumerate()
            .for_each(|(k, chunk)| {
                let first = (k << 16) as u32;
                for (j, v) in chunk.iter_mut().enumerate() {
                    if let Some(values) = self.changed(first + j as u32) {
                        *v = pick(&values);
                    }
                }
            });
        out
    }

    fn ids(&self, kind: IdKind) -> Vec<u64> {
        let c = &self.view.data.cols;
        match kind {
            IdKind::MyNumber => self.values(&c.my_number, |v| v.my_number),
            _ => self.values(&c.resident_code, |v| v.resident_code),
        }
    }

    /// The rows whose `kind` identifier is not the base's (new persons, replaced numbers): few
    /// beside the rows, so an index is built from the base column and these, not a folded copy.
    fn changed_ids(&self, kind: IdKind) -> HashMap<u32, u64> {
        let base = match kind {
            IdKind::MyNumber => &self.view.data.cols.my_number,
            _ => &self.view.data.cols.resident_code,
        };
        (0..self.rows.div_ceil(1 << 16))
            .into_par_iter()
            .flat_map_iter(|k| {
                let rows = (k << 16)..((k + 1) << 16).min(self.rows);
                rows.filter_map(|row| {
                    let v = self.changed(row as u32)?;
                    let id = match kind {
                        IdKind::MyNumber => v.my_number,
                        _ => v.resident_code,
                    };
                    (base.get(row) != Some(&id)).then_some((row as u32, id))
                })
                .collect::<Vec<_>>()
            })
            .collect()
    }
}

impl crate::snapshot::Rows for Folded<'_, '_> {
    fn rows(&self) -> usize {
        self.rows
    }

    fn dicts(&self) -> &Dictionaries {
        &self.dicts
    }

    fn column(&self, name: &str) -> crate::error::Result<ArrayRef> {
        use arrow_array::types::{Date32Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type};
        use arrow_array::PrimitiveArray;
        use arrow_buffer::{NullBuffer, ScalarBuffer};
        fn array<T: arrow_array::ArrowPrimitiveType>(v: Vec<T::Native>) -> ArrayRef {
            Arc::new(PrimitiveArray::<T>::new(ScalarBuffer::from(v), None))
        }
        let c = &self.view.data.cols;
        Ok(match name {
            "resident_code" => array::<UInt64Type>(self.ids(IdKind::ResidentCode)),
            "my_number" => array::<UInt64Type>(self.ids(IdKind::MyNumber)),
            "family" => array::<UInt32Type>(self.values(&c.family, |v| v.resident.person.family)),
            "given" => array::<UInt32Type>(self.values(&c.given, |v| v.resident.person.given)),
            "birth_date" => {
                array::<Date32Type>(self.values(&c.birth_date, |v| v.resident.person.birth_date))
            }
            "sex" => array::<UInt8Type>(self.values(&c.sex, |v| v.resident.person.sex)),
            "municipality" => array::<UInt16Type>(
                self.values(&c.municipality, |v| v.resident.person.municipality),
            ),
            "town" => array::<UInt32Type>(self.values(&c.town, |v| v.resident.place.town)),
            "block" => array::<UInt32Type>(self.values(&c.block, |v| v.resident.place.block)),
            "status" => array::<UInt8Type>(self.values(&c.status, |v| v.resident.person.status)),
            "status_date" => {
                let dates = self.values(c.status_date.values(), |v| v.resident.place.status_date);
                let base: Vec<bool> = (0..c.status_date.len())
                    .map(|i| c.status_date.is_valid(i))
                    .collect();
                let dated = self.values(&base, |v| v.resident.place.dated == 1);
                Arc::new(arrow_array::Date32Array::new(
                    ScalarBuffer::from(dates),
                    Some(NullBuffer::from(dated)),
                ))
            }
            "card" => array::<UInt8Type>(self.values(&c.card, |v| v.resident.place.card)),
            other => unreachable!("no row column '{other}'"),
        })
    }

    fn with_index(
        &self,
        kind: IdKind,
        f: &mut dyn FnMut(&HashIndex) -> crate::error::Result<crate::snapshot::FileEntry>,
    ) -> crate::error::Result<crate::snapshot::FileEntry> {
        let changed = self.changed_ids(kind);
        let base = match kind {
            IdKind::MyNumber => &self.view.data.cols.my_number,
            _ => &self.view.data.cols.resident_code,
        };
        let index = HashIndex::build_by(kind, self.rows, |row| match changed.get(&(row as u32)) {
            Some(&id) => id,
            None => base[row],
        })?;
        drop(changed);
        f(&index)
    }

    /// Built row by row (the base's, or a changed person's values), never from folded copies
    /// of the columns.
    fn search_entries(&self, folded: &FoldedText) -> Vec<u64> {
        let c = &self.view.data.cols;
        let base = c.len();
        crate::search::entries_by(self.rows, folded, |row| match self.changed(row as u32) {
            Some(v) => {
                let p = &v.resident.person;
                (p.family, p.given, p.birth_date)
            }
            None if row < base => (c.family[row], c.given[row], c.birth_date[row]),
            None => (0, 0, 0), // unreachable: every row past the base is a changed person's
        })
    }

    fn parallel(&self) -> bool {
        false
    }
}

/// The columns of a snapshot's history file (`history.arrow`): every entry, oldest first, with
/// the values it set; a person's first entry is an `origin` holding their values before it.
pub const HISTORY_COLUMNS: [&str; 25] = [
    "person",
    "batch",
    "recorded",
    "effective",
    "reported",
    "mask",
    "reason",
    "key",
    "cancels",
    "family",
    "given",
    "birth_date",
    "sex",
    "municipality",
    "town",
    "block",
    "status",
    "status_date",
    "dated",
    "card",
    "resident_code",
    "my_number",
    "generation",
    "moving_out",
    "moving_to",
];

/// Rows of a history file's record batches: a batch of them in memory while it is written.
const HISTORY_BATCH_ROWS: usize = 1 << 20;

/// Write every entry `view` sees to `w` as the snapshot keeps them (an Arrow IPC file of
/// [`HISTORY_COLUMNS`], in record batches of at most [`HISTORY_BATCH_ROWS`]): the origins of
/// persons first touched since the base was opened (their base values, before any change), then
/// every entry in the order applied (cancel targets renumbered accordingly). A registry whose
/// changes a front end numbers (a shard's) keeps the numbers in one more column, `number`
/// (null for origins). Returns the rows written. Written a batch at a time: the nation's year
/// (~46 M rows with its origins) would be gigabytes as one batch.
pub fn write_history(view: &View, w: &mut dyn std::io::Write) -> crate::error::Result<usize> {
    write_history_of(view, None, w)
}

/// [`write_history`] of the persons `range` only (a shard's, split from this registry): their
/// ids counted from its start, and every change numbered (the registry's change numbers, so
/// that the numbers municipalities and subscribers hold stay right across the split).
pub fn write_history_of(
    view: &View,
    range: Option<std::ops::Range<u32>>,
    w: &mut dyn std::io::Write,
) -> crate::error::Result<usize> {
    let live = view.live;
    let keep = |p: u32| range.as_ref().is_none_or(|r| r.contains(&p));
    let first = range.as_ref().map_or(0, |r| r.start);
    // Persons touched since the base, and those whose history holds an origin already.
    let persons = live.base_len as usize + live.created.load(Ordering::Acquire) as usize;
    let mut has_origin = vec![0u64; persons.div_ceil(64)];
    let mut touched = vec![0u64; persons.div_ceil(64)];
    let bit = |set: &mut [u64], p: u32| set[p as usize / 64] |= 1 << (p % 64);
    let has = |set: &[u64], p: u32| set[p as usize / 64] & (1 << (p % 64)) != 0;
    for e in live.entries.iter() {
        if e.reason == Reason::Origin {
            bit(&mut has_origin, e.person);
        }
    }
    let mut origins: Vec<u32> = Vec::new();
    for e in live.entries.iter() {
        if e.person < live.base_len
            && keep(e.person)
            && !has(&has_origin, e.person)
            && !has(&touched, e.person)
        {
            bit(&mut touched, e.person);
            origins.push(e.person);
        }
    }
    drop((has_origin, touched));
    // Where each kept entry lands: after the new origins, in order (a cancel names its target,
    // of the same person, so kept too, by where it lands).
    let shift = origins.len() as u32;
    let mut landed = Vec::new();
    if range.is_some() {
        let mut next = shift;
        landed = live
            .entries
            .iter()
            .map(|e| {
                let at = next;
                next += keep(e.person) as u32;
                if keep(e.person) {
                    at
                } else {
                    NONE
                }
            })
            .collect();
    }
    let origin = |person: u32| Entry {
        person: person - first,
        prev: NONE,
        batch: 0,
        mask: group::ALL,
        reason: Reason::Origin,
        cancels: NONE,
        municipality: 0,
        sequence: 0,
        effective: i32::MIN,
        reported: i32::MIN,
        recorded: i64::MIN,
        set: view.base_values(person),
    };
    let entry = |e: &Stored| {
        let cancels = e.cancels();
        Entry {
            person: e.person - first,
            prev: NONE,
            batch: e.batch,
            mask: e.mask,
            reason: e.reason,
            cancels: if cancels == NONE {
                NONE
            } else if range.is_some() {
                landed.get(cancels as usize).copied().unwrap_or(NONE)
            } else {
                cancels + shift
            },
            municipality: e.municipality(),
            sequence: e.sequence(),
            effective: e.effective,
            reported: e.reported,
            recorded: if e.batch == 0 {
                i64::MIN
            } else {
                live.recorded_at(e.batch)
            },
            set: live.values_of(e),
        }
    };
    let failed = |e| crate::error::JukiError::arrow("history.arrow", e);
    let numbered = live.numbered.load(Ordering::Acquire) || range.is_some();
    let number = |at: usize, e: &Stored| {
        (numbered && e.reason != Reason::Origin)
            .then(|| crate::notices::change_number(live, at as u32))
    };
    let mut writer =
        arrow_ipc::writer::FileWriter::try_new(w, &history_schema(numbered)).map_err(failed)?;
    let mut rows: Vec<(Entry, Option<u64>)> = Vec::with_capacity(HISTORY_BATCH_ROWS);
    let mut written = 0;
    let all = origins.iter().map(|&p| (origin(p), None)).chain(
        live.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| keep(e.person))
            .map(|(at, e)| (entry(e), number(at, e))),
    );
    for e in all {
        rows.push(e);
        if rows.len() == HISTORY_BATCH_ROWS {
            writer
                .write(&history_batch(&rows, numbered)?)
                .map_err(failed)?;
            written += rows.len();
            rows.clear();
        }
    }
    if !rows.is_empty() || written == 0 {
        writer
            .write(&history_batch(&rows, numbered)?)
            .map_err(failed)?;
        written += rows.len();
    }
    writer.finish().map_err(failed)?;
    Ok(written)
}

/// The schema of [`HISTORY_COLUMNS`] (and `number`, where `numbered`).
fn history_schema(numbered: bool) -> arrow_schema::Schema {
    history_batch(&[], numbered)
        .expect("an empty history batch")
        .schema()
        .as_ref()
        .clone()
}

/// `rows` (entries, and their change numbers where `numbered`) as a record batch of
/// [`HISTORY_COLUMNS`] (and `number`, where `numbered`).
fn history_batch(
    rows: &[(Entry, Option<u64>)],
    numbered: bool,
) -> crate::error::Result<arrow_array::RecordBatch> {
    use arrow_array::{
        ArrayRef, Int32Array, Int64Array, UInt16Array, UInt32Array, UInt64Array, UInt8Array,
    };
    let numbers: ArrayRef = std::sync::Arc::new(UInt64Array::from(
        rows.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
    ));
    let rows: Vec<Entry> = rows.iter().map(|(e, _)| *e).collect();

    let col = |f: &dyn Fn(&Entry) -> u64| -> Vec<u64> { rows.iter().map(f).collect() };
    let u32s = |f: &dyn Fn(&Entry) -> u32| -> ArrayRef {
        std::sync::Arc::new(UInt32Array::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let i32s = |f: &dyn Fn(&Entry) -> i32| -> ArrayRef {
        std::sync::Arc::new(Int32Array::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let u8s = |f: &dyn Fn(&Entry) -> u8| -> ArrayRef {
        std::sync::Arc::new(UInt8Array::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let u16s = |f: &dyn Fn(&Entry) -> u16| -> ArrayRef {
        std::sync::Arc::new(UInt16Array::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let arrays: Vec<ArrayRef> = vec![
        u32s(&|e| e.person),
        u32s(&|e| e.batch),
        std::sync::Arc::new(Int64Array::from(
            rows.iter().map(|e| e.recorded).collect::<Vec<_>>(),
        )),
        i32s(&|e| e.effective),
        i32s(&|e| e.reported),
        u16s(&|e| e.mask),
        u8s(&|e| e.reason as u8),
        std::sync::Arc::new(UInt64Array::from(col(&|e| {
            (e.municipality as u64) << 43 | e.sequence
        }))),
        u32s(&|e| e.cancels),
        u32s(&|e| e.set.resident.person.family),
        u32s(&|e| e.set.resident.person.given),
        i32s(&|e| e.set.resident.person.birth_date),
        u8s(&|e| e.set.resident.person.sex),
        u16s(&|e| e.set.resident.person.municipality),
        u32s(&|e| e.set.resident.place.town),
        u32s(&|e| e.set.resident.place.block),
        u8s(&|e| e.set.resident.person.status),
        i32s(&|e| e.set.resident.place.status_date),
        u8s(&|e| e.set.resident.place.dated),
        u8s(&|e| e.set.resident.place.card),
        std::sync::Arc::new(UInt64Array::from(col(&|e| e.set.resident_code))),
        std::sync::Arc::new(UInt64Array::from(col(&|e| e.set.my_number))),
        u8s(&|e| e.set.generation),
        i32s(&|e| e.set.moving_out),
        u16s(&|e| e.set.moving_to),
    ];
    // Origins have no number: the column is nullable, whatever one batch holds.
    let numbers = numbered.then_some(("number", numbers, true));
    Ok(arrow_array::RecordBatch::try_from_iter_with_nullable(
        HISTORY_COLUMNS
            .iter()
            .zip(arrays)
            .map(|(n, a)| (*n, a, false))
            .chain(numbers),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_arena_keeps_every_value_at_a_fixed_address_across_buckets() {
        let arena: Arena<u64> = Arena::default();
        let n = ARENA_FIRST * 7 + 3;
        let mut addresses = Vec::new();
        for i in 0..n {
            assert_eq!(arena.push(i as u64 * 3), i);
            addresses.push(arena.address(i).unwrap());
        }
        assert_eq!(arena.count(), n);
        for (i, a) in addresses.iter().enumerate() {
            assert_eq!(arena.address(i), Some(*a));
            assert_eq!(arena.get(i), Some(&(i as u64 * 3)));
        }
        assert!(arena.get(n).is_none() && arena.address(n).is_none());
        assert_eq!(arena.iter().count(), n);
        assert_eq!(arena_slot(ARENA_FIRST - 1), (0, ARENA_FIRST - 1));
        assert_eq!(arena_slot(ARENA_FIRST), (1, 0));
        assert_eq!(arena_slot(3 * ARENA_FIRST), (2, 0));
    }

    #[test]
    fn packed_values_read_back_group_by_group() {
        let mut v = Values::default();
        let (p, q) = (&mut v.resident.person, &mut v.resident.place);
        (p.family, p.given, p.birth_date, p.sex) = (7, 9, -4_000, 2);
        (p.municipality, q.town, q.block) = (1_700, 123_456, 98_765);
        (p.status, q.dated, q.status_date, q.card) = (2, 1, 20_000, 1);
        (v.resident_code, v.my_number, v.generation) = (12_345_678_901, 987_654_321_098, 3);
        (v.moving_out, v.moving_to) = (20_100, 42);
        for mask in 1..=group::ALL {
            if packed_len(mask) > 16 {
                continue;
            }
            let mut bytes = [0u8; 16];
            pack(mask, &v, &mut bytes);
            let mut back = Values::default();
            unpack(mask, &bytes, &mut back);
            let mut want = Values::default();
            want.set_groups(&v, mask);
            assert_eq!(format!("{back:?}"), format!("{want:?}"), "mask {mask:#b}");
        }
        assert_eq!(packed_len(group::ALL), GROUP_BYTES.iter().sum::<usize>());
        assert_eq!(std::mem::size_of::<Stored>(), 48);
    }

    #[test]
    fn the_slot_map_replaces_values_and_grows_with_every_key() {
        let map = SlotMap::with_capacity(4);
        for k in 0..6u64 {
            map.set(k * 1_000_003, k);
        }
        map.set(3 * 1_000_003, 33);
        assert_eq!(map.len(), 6);
        assert_eq!(map.get(3 * 1_000_003), Some(33));
        assert_eq!(map.get(7), None);
        let mut map = map;
        while map.full() {
            map = map.grown();
        }
        for k in 6..100u64 {
            if map.full() {
                map = map.grown();
            }
            map.set(k * 1_000_003, k);
        }
        assert_eq!(map.len(), 100);
        assert!((0..100u64).all(|k| map.get(k * 1_000_003) == Some(if k == 3 { 33 } else { k })));
        assert_eq!(map.iter().count(), 100);
    }
}
