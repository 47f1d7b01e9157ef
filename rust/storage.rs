//! The registry's storage: 本人確認情報 held column-wise as Arrow buffers, and the public schema.
//!
//! Storage is narrower than the public schema: names, readings, municipalities and address parts
//! repeat, so each is a small dictionary plus a key column, and one key column serves several
//! public columns (family name and its reading share `family`; municipality code, name and
//! prefecture share `municipality`). Identifiers are held as `u64` and rendered as 11/12-digit
//! strings (fixed-width `Utf8`) at the boundary.

use std::cell::RefCell;
use std::sync::Arc;

use arrow_array::types::{UInt16Type, UInt32Type, UInt8Type};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Date32Array, DictionaryArray, PrimitiveArray, StringArray,
    UInt32Array, UInt8Array,
};
use arrow_buffer::{ArrowNativeType, BooleanBuffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use rayon::prelude::*;

use crate::error::{echo, JukiError, Result};
use crate::history::{Dict, Live};
use crate::ids::IdKind;
use crate::index::{HashIndex, NOT_FOUND};
use crate::memory::{filled, filled_from, prefetch, HugeVec, PARALLEL_MIN};

/// Registry status codes (the order is the stored code).
pub const STATUS_VALUES: [&str; 4] = ["resident", "moved_abroad", "deceased", "removed"];
/// My Number card states (the order is the stored code).
pub const CARD_VALUES: [&str; 3] = ["none", "applied", "issued"];

/// The dictionaries behind the key columns.
#[derive(Clone)]
pub struct Dictionaries {
    /// 氏 (kanji) per family key.
    pub family_name: StringArray,
    /// 氏の振り仮名 (katakana) per family key.
    pub family_name_kana: StringArray,
    /// 名 per given key.
    pub given_name: StringArray,
    /// 名の振り仮名 per given key.
    pub given_name_kana: StringArray,
    /// 全国地方公共団体コード per municipality key.
    pub municipality_code: StringArray,
    /// 市区町村名 per municipality key.
    pub municipality_name: StringArray,
    /// 都道府県名 per municipality key.
    pub prefecture: StringArray,
    /// 町域 per town key.
    pub address_town: StringArray,
    /// 番地 per block key.
    pub address_block: StringArray,
}

/// The row columns, all of the registry's length.
#[derive(Clone)]
pub struct Columns {
    /// 住民票コード (full value with check digit).
    pub resident_code: ScalarBuffer<u64>,
    /// 個人番号 (full value with check digit).
    pub my_number: ScalarBuffer<u64>,
    /// Key into the family-name dictionaries.
    pub family: ScalarBuffer<u32>,
    /// Key into the given-name dictionaries.
    pub given: ScalarBuffer<u32>,
    /// 生年月日, days since 1970-01-01.
    pub birth_date: ScalarBuffer<i32>,
    /// 性別: 1 = male, 2 = female.
    pub sex: ScalarBuffer<u8>,
    /// Key into the municipality dictionaries.
    pub municipality: ScalarBuffer<u16>,
    /// Key into the town dictionary.
    pub town: ScalarBuffer<u32>,
    /// Key into the block dictionary.
    pub block: ScalarBuffer<u32>,
    /// Index into [`STATUS_VALUES`].
    pub status: ScalarBuffer<u8>,
    /// Date the status took effect; null while resident.
    pub status_date: Date32Array,
    /// Index into [`CARD_VALUES`].
    pub card: ScalarBuffer<u8>,
}

impl Columns {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.resident_code.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the row columns.
    pub fn memory_bytes(&self) -> usize {
        self.len() * (8 + 8 + 4 + 4 + 4 + 1 + 2 + 4 + 4 + 1 + 4 + 1) + self.len() / 8
    }
}

/// The fields a verification compares, packed in 16 bytes per resident so one cache miss brings
/// all of them (four per cache line). Derived from the columns when a registry is built or opened;
/// it trades 2 GiB at national scale for one random miss per claim instead of one per field.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Person {
    /// Family-name key.
    pub family: u32,
    /// Given-name key.
    pub given: u32,
    /// Birth date (days since 1970-01-01).
    pub birth_date: i32,
    /// Municipality key.
    pub municipality: u16,
    /// 1 = male, 2 = female.
    pub sex: u8,
    /// Status code.
    pub status: u8,
}

// SAFETY: Person is integers only, with no padding (4 + 4 + 4 + 2 + 1 + 1 = 16 bytes).
unsafe impl crate::memory::Zeroable for Person {}

/// The disclosed fields a [`Person`] lacks (address, status date, card), packed in 16 bytes, so
/// disclosing them costs one more random miss per record instead of one per field. Kept apart
/// from `Person`, so a verification that discloses nothing touches 2 GiB of rows at national
/// scale, not 4 (BENCHMARKS.md, issue 3).
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Place {
    /// Town key.
    pub town: u32,
    /// Block key.
    pub block: u32,
    /// Status date (days since 1970-01-01); meaningful only when `dated` is 1.
    pub status_date: i32,
    /// Card state code.
    pub card: u8,
    /// 1 when the status date is known (it is null while resident).
    pub dated: u8,
    /// Explicit padding, always zero.
    pub pad: [u8; 2],
}

// SAFETY: Place is integers only, with no implicit padding (4 + 4 + 4 + 1 + 1 + 2 = 16 bytes).
unsafe impl crate::memory::Zeroable for Place {}

/// A resident's [`Person`] and [`Place`], as a verification that discloses copies them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Resident {
    /// Compared fields.
    pub person: Person,
    /// Other disclosed fields.
    pub place: Place,
}

/// One [`Person`] and one [`Place`] per row, on huge pages.
pub struct PersonTable {
    persons: HugeVec<Person>,
    places: HugeVec<Place>,
}

impl PersonTable {
    /// Pack the fields of every row, on all cores.
    pub fn build(c: &Columns) -> Result<PersonTable> {
        let mut persons: HugeVec<Person> = HugeVec::zeroed(c.len())?;
        let mut places: HugeVec<Place> = HugeVec::zeroed(c.len())?;
        const CHUNK: usize = 1 << 16;
        let dates = c.status_date.values();
        persons
            .as_mut_slice()
            .par_chunks_mut(CHUNK)
            .zip(places.as_mut_slice().par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(k, (persons, places))| {
                let start = k * CHUNK;
                for (j, (p, q)) in persons.iter_mut().zip(places).enumerate() {
                    let i = start + j;
                    *p = Person {
                        family: c.family[i],
                        given: c.given[i],
                        birth_date: c.birth_date[i],
                        municipality: c.municipality[i],
                        sex: c.sex[i],
                        status: c.status[i],
                    };
                    *q = Place {
                        town: c.town[i],
                        block: c.block[i],
                        status_date: dates[i],
                        card: c.card[i],
                        dated: c.status_date.is_valid(i) as u8,
                        pad: [0; 2],
                    };
                }
            });
        Ok(PersonTable { persons, places })
    }

    /// The packed compared fields.
    pub fn rows(&self) -> &[Person] {
        self.persons.as_slice()
    }

    /// The packed other disclosed fields.
    pub fn places(&self) -> &[Place] {
        self.places.as_slice()
    }

    /// Bytes held.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(self.rows()) + std::mem::size_of_val(self.places())
    }
}

/// A string's 16-byte inline key: its length in the low 32 bits, then its first 12 bytes (zero
/// padded) — the layout of an Arrow `Utf8View` view of a short string. Two strings of at most 12
/// bytes are equal exactly when their inline keys are; most names and readings are that short.
#[inline(always)]
pub fn inline_key(b: &[u8]) -> u128 {
    let mut buf = [0u8; 16];
    let n = b.len().min(12);
    buf[4..4 + n].copy_from_slice(&b[..n]);
    u128::from_le_bytes(buf) | b.len() as u128
}

/// Inline keys of the dictionaries that claims are compared with (see [`inline_key`]).
pub struct TextKeys {
    /// Per family key: the name's inline key.
    pub family_name: Vec<u128>,
    /// Per family key: the reading's inline key.
    pub family_name_kana: Vec<u128>,
    /// Per given key: the name's inline key.
    pub given_name: Vec<u128>,
    /// Per given key: the reading's inline key.
    pub given_name_kana: Vec<u128>,
    /// Per municipality key: the code's inline key.
    pub municipality_code: Vec<u128>,
}

impl TextKeys {
    fn build(d: &Dictionaries) -> TextKeys {
        let keys = |a: &StringArray| {
            a.iter()
                .map(|v| inline_key(v.unwrap_or("").as_bytes()))
                .collect()
        };
        TextKeys {
            family_name: keys(&d.family_name),
            family_name_kana: keys(&d.family_name_kana),
            given_name: keys(&d.given_name),
            given_name_kana: keys(&d.given_name_kana),
            municipality_code: keys(&d.municipality_code),
        }
    }
}

/// A whole registry: rows, dictionaries, the two indexes and the packed per-resident rows.
pub struct RegistryData {
    /// Row columns.
    pub cols: Columns,
    /// Dictionaries behind the key columns.
    pub dicts: Dictionaries,
    /// Index on My Number.
    pub by_my_number: HashIndex,
    /// Index on resident code.
    pub by_resident_code: HashIndex,
    /// Every field but the identifiers, packed per row.
    pub persons: PersonTable,
    /// Inline keys of the compared dictionaries.
    pub text_keys: TextKeys,
}

/// A public column of 本人確認情報.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// 住民票コード.
    ResidentCode,
    /// 個人番号.
    MyNumber,
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
    /// 全国地方公共団体コード.
    MunicipalityCode,
    /// 市区町村名.
    MunicipalityName,
    /// 都道府県.
    Prefecture,
    /// 町域.
    AddressTown,
    /// 番地.
    AddressBlock,
    /// 状態 (resident / moved_abroad / deceased / removed).
    Status,
    /// 状態の日付.
    StatusDate,
    /// 個人番号カードの状態.
    CardState,
    /// The internal person id: immutable through every change of identifier, never disclosed
    /// (not a public column, so no policy can grant it). The audit trail keys records on it.
    Person,
}

impl Column {
    /// Every public column, in schema order.
    pub const ALL: [Column; 16] = [
        Column::ResidentCode,
        Column::MyNumber,
        Column::FamilyName,
        Column::FamilyNameKana,
        Column::GivenName,
        Column::GivenNameKana,
        Column::BirthDate,
        Column::Sex,
        Column::MunicipalityCode,
        Column::MunicipalityName,
        Column::Prefecture,
        Column::AddressTown,
        Column::AddressBlock,
        Column::Status,
        Column::StatusDate,
        Column::CardState,
    ];

    /// The column's name in the public schema.
    pub fn name(self) -> &'static str {
        match self {
            Column::ResidentCode => "resident_code",
            Column::MyNumber => "my_number",
            Column::FamilyName => "family_name",
            Column::FamilyNameKana => "family_name_kana",
            Column::GivenName => "given_name",
            Column::GivenNameKana => "given_name_kana",
            Column::BirthDate => "birth_date",
            Column::Sex => "sex",
            Column::MunicipalityCode => "municipality_code",
            Column::MunicipalityName => "municipality_name",
            Column::Prefecture => "prefecture",
            Column::AddressTown => "address_town",
            Column::AddressBlock => "address_block",
            Column::Status => "status",
            Column::StatusDate => "status_date",
            Column::CardState => "card_state",
            Column::Person => "person",
        }
    }

    /// Look a column up by name; the error lists the valid names.
    pub fn from_name(name: &str) -> Result<Column> {
        Column::ALL
            .into_iter()
            .chain([Column::Person])
            .find(|c| c.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Column::ALL.iter().map(|c| c.name()).collect();
                JukiError::InvalidInput(format!(
                    "unknown column '{}': expected one of {}",
                    echo(name.as_bytes()),
                    names.join(", ")
                ))
            })
    }

    /// The column's Arrow type.
    pub fn data_type(self) -> DataType {
        let dict = |k: DataType| DataType::Dictionary(Box::new(k), Box::new(DataType::Utf8));
        match self {
            Column::ResidentCode | Column::MyNumber => DataType::Utf8,
            Column::FamilyName
            | Column::FamilyNameKana
            | Column::GivenName
            | Column::GivenNameKana
            | Column::AddressTown
            | Column::AddressBlock => dict(DataType::UInt32),
            Column::MunicipalityCode | Column::MunicipalityName | Column::Prefecture => {
                dict(DataType::UInt16)
            }
            Column::Status | Column::CardState => dict(DataType::UInt8),
            Column::BirthDate | Column::StatusDate => DataType::Date32,
            Column::Sex => DataType::UInt8,
            Column::Person => DataType::UInt32,
        }
    }

    /// The Arrow field (nullable: rows not found come back null).
    pub fn field(self) -> Field {
        Field::new(self.name(), self.data_type(), true)
    }
}

/// The public schema of the given columns.
pub fn schema_of(columns: &[Column]) -> SchemaRef {
    Arc::new(Schema::new(
        columns.iter().map(|c| c.field()).collect::<Vec<_>>(),
    ))
}

/// Which rows of a gather were found, as Arrow validity (None when all were).
pub fn found_validity(rows: &[u32]) -> Option<NullBuffer> {
    let bits = BooleanBuffer::collect_bool(rows.len(), |i| rows[i] != NOT_FOUND);
    NullBuffer::from(bits).into()
}

/// Gather `src[rows[i]]` for each i on all cores, prefetching ahead; missing rows give zero.
pub fn gather<T: ArrowNativeType + Send + Sync>(
    src: &[T],
    rows: &[u32],
) -> Result<ScalarBuffer<T>> {
    const AHEAD: usize = 16;
    filled_from(rows, 1, |o: &mut [T], r: &[u32]| {
        for i in 0..r.len() {
            if let Some(&ahead) = r.get(i + AHEAD) {
                if ahead != NOT_FOUND {
                    prefetch(&src[ahead as usize]);
                }
            }
            let row = r[i];
            if row != NOT_FOUND {
                o[i] = src[row as usize];
            }
        }
    })
}

/// One field of residents already read, in their order.
fn project<T: ArrowNativeType>(
    people: &[Resident],
    f: impl Fn(&Resident) -> T + Sync,
) -> Result<ScalarBuffer<T>> {
    filled_from(people, 1, |o: &mut [T], ps: &[Resident]| {
        for (o, p) in o.iter_mut().zip(ps) {
            *o = f(p);
        }
    })
}

/// Render identifier values as fixed-width digit strings (leading zeros kept). Plain `Utf8`
/// rather than `Utf8View`: every consumer (pyarrow compute included) supports it, and at a fixed
/// width the offsets cost no more than views would.
pub fn render_ids(kind: IdKind, values: &[u64], nulls: Option<NullBuffer>) -> Result<StringArray> {
    let n = kind.digits();
    let bytes = filled_from(values, n, |out: &mut [u8], vals: &[u64]| {
        for (o, &v) in out.chunks_exact_mut(n).zip(vals) {
            let mut x = v;
            for d in o.iter_mut().rev() {
                *d = b'0' + (x % 10) as u8;
                x /= 10;
            }
        }
    })?;
    let offsets = OffsetBuffer::from_lengths(std::iter::repeat_n(n, values.len()));
    // SAFETY: the offsets step by n over a buffer of values.len() * n ASCII digits, so every value
    // is in bounds and valid UTF-8; nulls has values.len() entries.
    Ok(unsafe { StringArray::new_unchecked(offsets, bytes.into_inner(), nulls) })
}

/// Which rows a column is built for.
#[derive(Clone, Copy)]
pub enum Rows<'a> {
    /// Every row, in storage order (zero-copy where storage allows).
    All,
    /// These rows, gathered from the columns; [`NOT_FOUND`] gives null.
    At(&'a [u32]),
    /// These rows, whose [`Resident`]s a probe has read already (`people[i]` belongs to `rows[i]`,
    /// zeroed where not found): every field but the identifiers comes from them, without
    /// another random read.
    Read {
        /// Row per output, [`NOT_FOUND`] where none.
        rows: &'a [u32],
        /// The packed residents of `rows`.
        people: &'a [Resident],
        /// The identifiers (resident code, My Number) of `rows`, where changes may have given
        /// rows the base does not hold; None to gather them from the columns.
        ids: Option<&'a [[u64; 2]]>,
        /// The dictionary values changes added (keys past the base's dictionaries).
        live: Option<&'a Live>,
    },
}

/// A reply's dictionary keys remapped onto the values its found rows reference, so a reply
/// discloses no name or address beyond its own answers (the registry's dictionary holds every
/// resident's). New keys are given in first-seen order of the reply's rows: the reply's dictionary
/// then says nothing about the registry's dictionary order or size, and one pass assigns them.
pub struct Compaction<K: ArrowNativeType> {
    /// Per reply row, its key into the kept values (0 where not found).
    pub keys: ScalarBuffer<K>,
    /// Per kept value, its key in the registry's dictionary.
    pub kept: UInt32Array,
}

/// A thread's remap table: per key of a dictionary, the reply key it was given, stamped with
/// the compaction that gave it (`stamp << 32 | new key`). A compaction takes a fresh stamp, so the
/// table is never cleared (only when the stamp wraps, once in 2^32 compactions) and never
/// reallocated but to grow: a reply pays one load per row, nothing per dictionary value. It
/// holds 8 bytes per value of the largest dictionary its thread has remapped.
struct Remap {
    stamp: u32,
    slots: Vec<u64>,
}

thread_local! {
    static REMAP: RefCell<Remap> = const {
        RefCell::new(Remap {
            stamp: 0,
            slots: Vec::new(),
        })
    };
}

/// Run `f` with this thread's [`Remap`] table (a fresh one should the table be in use: not
/// reentered today).
fn with_remap<T>(f: impl FnOnce(&mut Remap) -> T) -> T {
    REMAP.with(|remap| match remap.try_borrow_mut() {
        Ok(mut remap) => f(&mut remap),
        Err(_) => f(&mut Remap {
            stamp: 0,
            slots: Vec::new(),
        }),
    })
}

impl<K: ArrowNativeType> Compaction<K> {
    /// Remap `keys` (keys into a dictionary of `dict_len` values; rows null in `found` are
    /// skipped) through the thread's [`Remap`] table: one load per row, whatever the
    /// dictionary's size.
    ///
    /// A large reply is compacted on all cores: each slice finds its own first-seen values (as
    /// above), the slices' lists are merged in row order into the reply's keys (work per
    /// distinct value of a slice, not per row), and every row is then remapped in parallel. The
    /// keys come out as a single pass would give them.
    pub fn of(keys: &[K], found: Option<&NullBuffer>, dict_len: usize) -> Result<Compaction<K>> {
        if keys.len() <= PARALLEL_MIN {
            return with_remap(|remap| Compaction::through(remap, keys, found, dict_len));
        }
        let slices: Vec<(usize, usize)> = (0..keys.len())
            .step_by(PARALLEL_MIN)
            .map(|start| (start, PARALLEL_MIN.min(keys.len() - start)))
            .collect();
        let firsts = slices
            .par_iter()
            .map(|&(start, len)| {
                let found = found.map(|f| f.slice(start, len));
                with_remap(|remap| {
                    Compaction::through(remap, &keys[start..start + len], found.as_ref(), dict_len)
                })
                .map(|c| c.kept)
            })
            .collect::<Result<Vec<_>>>()?;
        const UNSEEN: u32 = u32::MAX;
        let mut reply_key = Vec::new();
        reply_key.try_reserve_exact(dict_len).map_err(|e| {
            JukiError::ResourceExhausted(format!(
                "cannot allocate a remap table of {dict_len} values: {e}"
            ))
        })?;
        reply_key.resize(dict_len, UNSEEN);
        let mut kept: Vec<u32> = Vec::new();
        for old in firsts.iter().flat_map(|f| f.values().iter()) {
            let slot = &mut reply_key[*old as usize];
            if *slot == UNSEEN {
                *slot = kept.len() as u32;
                kept.push(*old);
            }
        }
        // Rows not found keep key 0, as a single pass leaves them; every found row's value
        // was seen by its slice.
        let keys = filled_from(keys, 1, |out: &mut [K], src: &[K]| {
            for (o, k) in out.iter_mut().zip(src) {
                let new = reply_key.get(k.as_usize()).copied().unwrap_or(UNSEEN);
                *o = K::usize_as(if new == UNSEEN { 0 } else { new as usize });
            }
        })?;
        Ok(Compaction {
            keys,
            kept: UInt32Array::from(kept),
        })
    }

    fn through(
        remap: &mut Remap,
        keys: &[K],
        found: Option<&NullBuffer>,
        dict_len: usize,
    ) -> Result<Compaction<K>> {
        let n = keys.len();
        if remap.slots.len() < dict_len {
            let more = dict_len - remap.slots.len();
            remap.slots.try_reserve_exact(more).map_err(|e| {
                JukiError::ResourceExhausted(format!(
                    "cannot allocate a remap table of {dict_len} values: {e}"
                ))
            })?;
            remap.slots.resize(dict_len, 0);
        }
        remap.stamp = remap.stamp.wrapping_add(1);
        if remap.stamp == 0 {
            remap.slots.fill(0);
            remap.stamp = 1;
        }
        let stamp = remap.stamp;
        let slots = &mut remap.slots[..dict_len];
        let mut kept: Vec<u32> = Vec::with_capacity(n.min(dict_len));
        let keys = filled(n, |out: &mut [K]| {
            let mut remap_one = |o: &mut K, old: usize| {
                let slot = &mut slots[old];
                if (*slot >> 32) as u32 != stamp {
                    *slot = (stamp as u64) << 32 | kept.len() as u64;
                    kept.push(old as u32);
                }
                *o = K::usize_as(*slot as u32 as usize);
            };
            match found {
                None => {
                    for (o, k) in out.iter_mut().zip(keys) {
                        remap_one(o, k.as_usize());
                    }
                }
                Some(found) => {
                    for ((o, k), f) in out.iter_mut().zip(keys).zip(found.iter()) {
                        if f {
                            remap_one(o, k.as_usize());
                        }
                    }
                }
            }
        })?;
        Ok(Compaction {
            keys,
            kept: UInt32Array::from(kept),
        })
    }

    /// The kept values, in their new keys' order: of `dictionary` below its length, of `more`
    /// (keys from the dictionary's length on, which changes added) above it.
    pub fn values_with<'s>(
        &self,
        dictionary: &StringArray,
        more: impl Fn(usize) -> Option<&'s str>,
    ) -> Result<StringArray> {
        let n = dictionary.len();
        Ok(self
            .kept
            .values()
            .iter()
            .map(|&k| {
                let k = k as usize;
                if k < n {
                    Some(dictionary.value(k))
                } else {
                    more(k)
                }
            })
            .collect())
    }

    /// The kept values of `dictionary`, in their new keys' order.
    pub fn values(&self, dictionary: &StringArray) -> Result<StringArray> {
        let taken = arrow_select::take::take(dictionary, &self.kept, None)?;
        Ok(taken
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("take keeps the type")
            .clone())
    }
}

/// The compactions of one reply, one per key that dictionary columns share.
#[derive(Default)]
struct Compacted {
    family: Option<Compaction<u32>>,
    given: Option<Compaction<u32>>,
    municipality: Option<Compaction<u16>>,
    town: Option<Compaction<u32>>,
    block: Option<Compaction<u32>>,
}

fn small_dict(values: &[&str]) -> StringArray {
    StringArray::from(values.to_vec())
}

impl RegistryData {
    /// Assemble a registry, building both indexes (in parallel with each other).
    pub fn new(cols: Columns, dicts: Dictionaries) -> Result<RegistryData> {
        let (by_my_number, by_resident_code) = rayon::join(
            || HashIndex::build(IdKind::MyNumber, &cols.my_number),
            || HashIndex::build(IdKind::ResidentCode, &cols.resident_code),
        );
        RegistryData::with_indexes(cols, dicts, by_my_number?, by_resident_code?)
    }

    /// Assemble a registry whose indexes exist already (opened from a snapshot).
    pub fn with_indexes(
        cols: Columns,
        dicts: Dictionaries,
        by_my_number: HashIndex,
        by_resident_code: HashIndex,
    ) -> Result<RegistryData> {
        let persons = PersonTable::build(&cols)?;
        let text_keys = TextKeys::build(&dicts);
        Ok(RegistryData {
            text_keys,
            cols,
            dicts,
            by_my_number,
            by_resident_code,
            persons,
        })
    }

    /// Number of residents.
    pub fn len(&self) -> usize {
        self.cols.len()
    }

    /// Whether the registry is empty.
    pub fn is_empty(&self) -> bool {
        self.cols.is_empty()
    }

    /// The index for a key kind.
    pub fn index(&self, kind: IdKind) -> Result<&HashIndex> {
        match kind {
            IdKind::MyNumber => Ok(&self.by_my_number),
            IdKind::ResidentCode => Ok(&self.by_resident_code),
            other => Err(JukiError::InvalidInput(format!(
                "the registry is not indexed by {}: use my_number or resident_code",
                other.name()
            ))),
        }
    }

    /// Bytes held by rows, indexes and packed rows (dictionaries are small and not counted).
    pub fn memory_bytes(&self) -> usize {
        self.cols.memory_bytes()
            + self.persons.memory_bytes()
            + self.by_my_number.memory_bytes()
            + self.by_resident_code.memory_bytes()
    }

    /// A public column for `rows`; rows not found come back null.
    pub fn column(&self, col: Column, rows: Rows) -> Result<ArrayRef> {
        column_with(
            &self.cols,
            &self.dicts,
            col,
            rows,
            &mut Compacted::default(),
        )
    }

    /// Public columns for `rows`, each as [`column`](Self::column) builds it; columns that share
    /// a key (a name and its reading; a municipality's code, name and prefecture) share the work
    /// of their reply's dictionary.
    pub fn columns(&self, cols: &[Column], rows: Rows) -> Result<Vec<ArrayRef>> {
        public_columns(&self.cols, &self.dicts, cols, rows)
    }

    /// Whether each row was found, as a boolean column.
    pub fn found_column(rows: &[u32]) -> BooleanArray {
        BooleanArray::new(
            BooleanBuffer::collect_bool(rows.len(), |i| rows[i] != NOT_FOUND),
            None,
        )
    }
}

/// Public columns `which` of the rows `cols` holds (keys into `dicts`), for `rows`: each as
/// [`RegistryData::column`] builds it; columns that share a key (a name and its reading; a
/// municipality's code, name and prefecture) share the work of their reply's dictionary.
pub fn public_columns(
    cols: &Columns,
    dicts: &Dictionaries,
    which: &[Column],
    rows: Rows,
) -> Result<Vec<ArrayRef>> {
    let mut compacted = Compacted::default();
    which
        .iter()
        .map(|&c| column_with(cols, dicts, c, rows, &mut compacted))
        .collect()
}

fn column_with(
    c: &Columns,
    d: &Dictionaries,
    col: Column,
    rows: Rows,
    done: &mut Compacted,
) -> Result<ArrayRef> {
    let nulls = match rows {
        Rows::All => None,
        Rows::At(r) | Rows::Read { rows: r, .. } => found_validity(r),
    };
    // Identifiers are not packed in a Resident: they are gathered, or come with the rows.
    let ids = |src: &ScalarBuffer<u64>, which: usize| match rows {
        Rows::All => Ok(src.clone()),
        Rows::Read { ids: Some(ids), .. } => Ok(ScalarBuffer::from(
            ids.iter().map(|x| x[which]).collect::<Vec<u64>>(),
        )),
        Rows::At(r) | Rows::Read { rows: r, .. } => gather(src, r),
    };
    let live = match rows {
        Rows::Read { live, .. } => live,
        _ => None,
    };
    // The values of a field that the columns and a Resident's `$part` hold under one name.
    macro_rules! values {
        ($part:ident . $f:ident) => {
            match rows {
                Rows::All => c.$f.clone(),
                Rows::At(r) => gather(&c.$f, r)?,
                Rows::Read { people, .. } => project(people, |p| p.$part.$f)?,
            }
        };
    }
    // A dictionary column of resident data. The whole registry (`Rows::All`) carries the
    // whole dictionary; a reply carries only the values its found rows reference (see
    // [`Compaction`]), computed once per key for the columns that share it.
    macro_rules! dict {
        ($kt:ty, $part:ident . $f:ident, $values:expr, $ext:expr) => {{
            let (keys, values) = match rows {
                Rows::All => (c.$f.clone(), $values.clone()),
                _ => {
                    let ext: Option<(Dict, bool)> = $ext;
                    let ext = ext.and_then(|(d, r)| Some((live?, d, r)));
                    let more = ext.map_or(0, |(l, d, _)| l.ext[d as usize].values.count());
                    if done.$f.is_none() {
                        let keys = values!($part.$f);
                        done.$f =
                            Some(Compaction::of(&keys, nulls.as_ref(), $values.len() + more)?);
                    }
                    let compaction = done.$f.as_ref().expect("computed above");
                    let values = match ext {
                        Some((l, d, reading)) if more > 0 => {
                            compaction.values_with(&$values, |k| {
                                l.ext_value(d, k)
                                    .map(|(v, r)| if reading { &**r } else { &**v })
                            })?
                        }
                        _ => compaction.values(&$values)?,
                    };
                    (compaction.keys.clone(), values)
                }
            };
            let k = PrimitiveArray::<$kt>::new(keys, nulls);
            // SAFETY: stored keys are always < the length of their dictionary: the builders
            // (generation, import, snapshot checks) guarantee it, and a compaction's keys are
            // < the number of values it keeps (`Compaction::of`).
            Arc::new(unsafe { DictionaryArray::<$kt>::new_unchecked(k, Arc::new(values)) })
                as ArrayRef
        }};
    }
    // The fixed enumerations (status, card state) are the schema's, not resident data: a
    // reply carries them whole.
    macro_rules! enumeration {
        ($part:ident . $f:ident, $values:expr) => {{
            let k = PrimitiveArray::<UInt8Type>::new(values!($part.$f), nulls);
            // SAFETY: stored codes are < the length of their enumeration (checked when built
            // or opened).
            Arc::new(unsafe {
                DictionaryArray::<UInt8Type>::new_unchecked(k, Arc::new(small_dict(&$values)))
            }) as ArrayRef
        }};
    }
    Ok(match col {
        Column::ResidentCode => Arc::new(render_ids(
            IdKind::ResidentCode,
            &ids(&c.resident_code, 0)?,
            nulls,
        )?),
        Column::MyNumber => Arc::new(render_ids(IdKind::MyNumber, &ids(&c.my_number, 1)?, nulls)?),
        Column::FamilyName => dict!(
            UInt32Type,
            person.family,
            d.family_name,
            Some((Dict::Family, false))
        ),
        Column::FamilyNameKana => dict!(
            UInt32Type,
            person.family,
            d.family_name_kana,
            Some((Dict::Family, true))
        ),
        Column::GivenName => dict!(
            UInt32Type,
            person.given,
            d.given_name,
            Some((Dict::Given, false))
        ),
        Column::GivenNameKana => dict!(
            UInt32Type,
            person.given,
            d.given_name_kana,
            Some((Dict::Given, true))
        ),
        Column::MunicipalityCode => {
            dict!(UInt16Type, person.municipality, d.municipality_code, None)
        }
        Column::MunicipalityName => {
            dict!(UInt16Type, person.municipality, d.municipality_name, None)
        }
        Column::Prefecture => dict!(UInt16Type, person.municipality, d.prefecture, None),
        Column::AddressTown => dict!(
            UInt32Type,
            place.town,
            d.address_town,
            Some((Dict::Town, false))
        ),
        Column::AddressBlock => dict!(
            UInt32Type,
            place.block,
            d.address_block,
            Some((Dict::Block, false))
        ),
        Column::Status => enumeration!(person.status, STATUS_VALUES),
        Column::CardState => enumeration!(place.card, CARD_VALUES),
        Column::BirthDate => Arc::new(Date32Array::new(values!(person.birth_date), nulls)),
        // A row is a person id (persons changes create take rows past the base's).
        Column::Person => Arc::new(UInt32Array::new(
            match rows {
                Rows::All => (0..c.resident_code.len() as u32).collect(),
                Rows::At(r) | Rows::Read { rows: r, .. } => ScalarBuffer::from(
                    r.iter()
                        .map(|&x| if x == NOT_FOUND { 0 } else { x })
                        .collect::<Vec<u32>>(),
                ),
            },
            nulls,
        )),
        Column::Sex => Arc::new(UInt8Array::new(values!(person.sex), nulls)),
        Column::StatusDate => {
            let stored = c.status_date.nulls();
            let (values, known) = match rows {
                Rows::All => (c.status_date.values().clone(), stored.cloned()),
                Rows::At(r) => (
                    gather(c.status_date.values(), r)?,
                    stored.map(|n| {
                        NullBuffer::from(BooleanBuffer::collect_bool(r.len(), |i| {
                            r[i] != NOT_FOUND && n.is_valid(r[i] as usize)
                        }))
                    }),
                ),
                Rows::Read { people, .. } => (
                    project(people, |p| p.place.status_date)?,
                    Some(NullBuffer::from(BooleanBuffer::collect_bool(
                        people.len(),
                        |i| people[i].place.dated == 1,
                    ))),
                ),
            };
            Arc::new(Date32Array::new(
                values,
                NullBuffer::union(known.as_ref(), nulls.as_ref()),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_names_round_trip() {
        for c in Column::ALL {
            assert_eq!(Column::from_name(c.name()).unwrap(), c);
        }
        let e = Column::from_name("nope").unwrap_err();
        assert!(e.to_string().contains("'nope'") && e.to_string().contains("my_number"));
    }

    #[test]
    fn render_keeps_leading_zeros() {
        let a = render_ids(IdKind::MyNumber, &[23456789013, 123456789018], None).unwrap();
        assert_eq!(a.value(0), "023456789013");
        assert_eq!(a.value(1), "123456789018");
    }

    #[test]
    fn gather_nulls_missing_rows() {
        let src = vec![10u32, 11, 12, 13];
        let rows = [3, NOT_FOUND, 0];
        assert_eq!(&gather(&src, &rows).unwrap()[..], &[13, 0, 10]);
        let v = found_validity(&rows).unwrap();
        assert!(v.is_valid(0) && v.is_null(1) && v.is_valid(2));
    }

    #[test]
    fn compaction_keeps_only_referenced_values_in_first_seen_order() {
        let dict = StringArray::from(vec!["a", "b", "c", "d", "e"]);
        let keys = [3u32, 0, 3, 4, 1];
        let found = NullBuffer::from(vec![true, false, true, true, true]);
        // Dense (a small dictionary) and hashed (a dictionary far larger than the reply).
        for dict_len in [dict.len(), 1 << 20] {
            let c = Compaction::of(&keys, Some(&found), dict_len).unwrap();
            assert_eq!(c.kept.values(), &[3, 4, 1]);
            assert_eq!(&c.keys[..], &[0, 0, 0, 1, 2]);
        }
        let c = Compaction::of(&keys, Some(&found), dict.len()).unwrap();
        let values = c.values(&dict).unwrap();
        assert_eq!(values.iter().flatten().collect::<Vec<_>>(), ["d", "e", "b"]);
        let none = Compaction::<u16>::of(&[], None, 9).unwrap();
        assert_eq!(none.kept.len(), 0);
    }

    #[test]
    fn a_large_compaction_on_all_cores_gives_the_single_pass_keys() {
        // Values first seen in late slices, rows not found (key 0, whose value no found row
        // references), and a value seen in several slices.
        let n = 5 * PARALLEL_MIN + 17;
        let dict_len = 70_000;
        let keys: Vec<u32> = (0..n as u64)
            .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as u32 % (dict_len - 1) + 1)
            .collect();
        let found = NullBuffer::from((0..n).map(|i| i % 7 != 3).collect::<Vec<_>>());
        let mut keys = keys;
        keys[3] = 0;
        for found in [None, Some(&found)] {
            let parallel = Compaction::of(&keys, found, dict_len as usize).unwrap();
            let single =
                with_remap(|r| Compaction::through(r, &keys, found, dict_len as usize)).unwrap();
            assert_eq!(parallel.kept.values(), single.kept.values());
            for (i, (p, s)) in parallel.keys.iter().zip(single.keys.iter()).enumerate() {
                if found.is_none_or(|f| f.is_valid(i)) {
                    assert_eq!(p, s, "row {i}");
                }
            }
            assert_eq!(found.is_none(), parallel.kept.values().contains(&0));
        }
    }
}
