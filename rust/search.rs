//! Search by the four basic facts (4情報): name, birth date, sex, address — how 本人確認 is done
//! when the caller holds no identifier.
//!
//! The index holds one `u64` a resident, sorted: the top bits of a hash of the resident's family
//! name and given name (folded at the index's level, see [`crate::normalize`]) and birth date,
//! above the resident's row id. A directory of the entries' top bits narrows a probe to about one
//! cache line of entries, so the nation's index takes 1 GiB (and a 64 MiB directory). Claims are
//! searched in chunks whose phases prefetch what the next phase reads. A hash is only a filter: every candidate's folded names and birth date are
//! compared before it counts, so a collision can never make a false candidate.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Date32Type;
use arrow_array::{
    Array, ArrayRef, DictionaryArray, RecordBatch, StringArray, UInt16Array, UInt32Array,
    UInt8Array,
};
use arrow_buffer::{Buffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Schema};
use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_64;

use crate::error::{JukiError, Result};
use crate::history::{dict_text, group, Dict, Reason, View};
use crate::index::{NOT_FOUND, ROW_BITS};
use crate::memory::prefetch;
use crate::normalize::{FoldedText, Folding, Level};
use crate::query::{sex_claims, shown_type, TextColumn};
use crate::storage::{inline_key, Column, Person, RegistryData};

const ROW_MASK: u64 = (1 << ROW_BITS) - 1;
/// Bits of an entry's hash prefix that index the directory.
/// About 8 entries (one cache line) a directory slot, within these bounds: the nation's directory
/// is 2^24 slots (64 MiB), and a probe's binary search reads one prefetched line, not a
/// kilobyte of entries.
fn directory_bits(entries: usize) -> u32 {
    (usize::BITS - entries.leading_zeros())
        .saturating_sub(3)
        .clamp(10, 24)
}
/// Claims searched in one pass of phases: enough misses in flight to cover memory latency, few
/// enough that what the phases prefetched is still in cache (a few hundred KiB).
const CHUNK: usize = 512;

/// What a search found for one claim.
pub const OUTCOMES: [&str; 3] = ["unique", "ambiguous", "not_found"];
const UNIQUE: u8 = 0;
const AMBIGUOUS: u8 = 1;
const NOT_FOUND_OUTCOME: u8 = 2;

/// The claim columns a search takes: required first.
pub const REQUIRED: [Column; 3] = [Column::FamilyName, Column::GivenName, Column::BirthDate];
pub const OPTIONAL: [Column; 2] = [Column::Sex, Column::MunicipalityCode];

/// One resident's name-and-birth-date hash, from its names' hashes.
#[inline(always)]
fn key(family: u64, given: u64, birth_date: i32) -> u64 {
    let mut h = family
        ^ given.rotate_left(29)
        ^ (birth_date as u32 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // splitmix64's finaliser: every input bit moves the top bits the index sorts on.
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

fn hashes(values: &StringArray) -> Vec<u64> {
    (0..values.len())
        .into_par_iter()
        .map(|i| xxh3_64(values.value(i).as_bytes()))
        .collect()
}

/// A name dictionary as the search reads it: each value's folded hash and canonical id (the
/// first value with the same fold), and an open-addressing table of the values by the hash of
/// their raw bytes, each slot holding what a claim spelled as that value needs (its inline key
/// to compare it, its folded hash and canonical id), so that resolving such a claim is one
/// prefetched cache line and no folding.
struct Names {
    canonical: Vec<u32>,
    slots: Vec<Slot>,
    mask: usize,
}

/// One value of a [`Names`] table (`hash` 0: empty).
#[derive(Clone, Copy, Default)]
struct Slot {
    hash: u64,
    folded_hash: u64,
    inline: u128,
    id: u32,
    canonical: u32,
}

impl Names {
    /// The table of `raw` (a registry name dictionary), whose values fold to `folded`, with
    /// the hashes `folded_hash` of those.
    fn build(raw: &StringArray, folded: &StringArray, folded_hash: &[u64]) -> Names {
        let mut first: HashMap<&str, u32> = HashMap::with_capacity(folded.len());
        let canonical: Vec<u32> = (0..folded.len())
            .map(|i| *first.entry(folded.value(i)).or_insert(i as u32))
            .collect();
        let capacity = (raw.len().max(8) * 2).next_power_of_two();
        let mask = capacity - 1;
        let mut slots = vec![Slot::default(); capacity];
        for i in 0..raw.len() {
            let text = raw.value(i).as_bytes();
            let hash = raw_hash(text);
            let mut at = hash as usize & mask;
            loop {
                let slot = &mut slots[at];
                if slot.hash == 0 {
                    *slot = Slot {
                        hash,
                        folded_hash: folded_hash[i],
                        inline: inline_key(text),
                        id: i as u32,
                        canonical: canonical[i],
                    };
                    break;
                }
                if slot.hash == hash && raw.value(slot.id as usize).as_bytes() == text {
                    break; // the same spelling twice (a name with two readings): the first serves
                }
                at = (at + 1) & mask;
            }
        }
        Names {
            canonical,
            slots,
            mask,
        }
    }

    /// The slot a claim's raw hash starts probing at (to prefetch).
    #[inline(always)]
    fn home(&self, hash: u64) -> *const Slot {
        &self.slots[hash as usize & self.mask]
    }

    /// The registry value spelled as `text` (whose raw hash is `hash`), if any.
    #[inline(always)]
    fn find(&self, text: &[u8], hash: u64, raw: &StringArray) -> Option<&Slot> {
        let mut at = hash as usize & self.mask;
        let inline = inline_key(text);
        loop {
            let slot = &self.slots[at];
            if slot.hash == 0 {
                return None;
            }
            // A value of at most 12 bytes is equal when its inline key is; a longer one is
            // compared in the dictionary.
            if slot.hash == hash
                && slot.inline == inline
                && (text.len() <= 12 || raw.value(slot.id as usize).as_bytes() == text)
            {
                return Some(slot);
            }
            at = (at + 1) & self.mask;
        }
    }

    fn memory_bytes(&self) -> usize {
        self.canonical.len() * 4 + self.slots.len() * std::mem::size_of::<Slot>()
    }
}

/// A raw name's hash for a [`Names`] table: never 0 (an empty slot).
#[inline(always)]
fn raw_hash(text: &[u8]) -> u64 {
    xxh3_64(text) | 1
}

/// A claimed name, resolved: its folded hash, and either the registry value it is spelled as
/// (whose canonical id stands for its fold) or where its fold lies in the chunk's arena.
#[derive(Clone, Copy)]
struct Name {
    hash: u64,
    canonical: Option<u32>,
    span: (usize, usize),
}

/// The 4情報 index of one registry at one level.
pub struct SearchIndex {
    level: Level,
    /// Per resident, sorted: the hash's top bits above the row id (built, or read from a
    /// snapshot's [`SEARCH_FILE`]).
    entries: ScalarBuffer<u64>,
    /// For each value of an entry's top `64 - shift` bits ([`directory_bits`]), the first entry
    /// at or above it; one more at the end.
    directory: Vec<u32>,
    shift: u32,
    family: Names,
    given: Names,
}

/// The snapshot file of the normalised level's entries (see [`write_entries`]): the level
/// searches use unless told otherwise. The exact level's index is built at its first use.
pub const SEARCH_FILE: &str = "search_normalised.u64";
/// The file's first 8 bytes; the next 8 are the fingerprint of the folding table its names were
/// folded with ([`Folding::fingerprint`]), then the entries.
const SEARCH_MAGIC: &[u8; 8] = b"juki4jo1";

/// The sorted entries of `rows` rows whose names (dictionary keys) and birth date `row` gives,
/// the dictionaries folded as `folded`.
pub fn entries_by(
    rows: usize,
    folded: &FoldedText,
    row: impl Fn(usize) -> (u32, u32, i32) + Sync,
) -> Vec<u64> {
    let (fh, gh) = (hashes(&folded.family_name), hashes(&folded.given_name));
    let mut entries: Vec<u64> = (0..rows)
        .into_par_iter()
        .map(|r| {
            let (family, given, birth_date) = row(r);
            let k = key(fh[family as usize], gh[given as usize], birth_date);
            (k & !ROW_MASK) | r as u64
        })
        .collect();
    entries.par_sort_unstable();
    entries
}

/// The sorted entries of every row of `data`, names folded as `folded`.
pub fn registry_entries(data: &RegistryData, folded: &FoldedText) -> Vec<u64> {
    let p = data.persons.rows();
    entries_by(data.len(), folded, |row| {
        (p[row].family, p[row].given, p[row].birth_date)
    })
}

/// Write `entries` (of the normalised level, folded with `folding`) as a snapshot's
/// [`SEARCH_FILE`].
pub fn write_entries(
    entries: &[u64],
    folding: &Folding,
    w: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    w.write_all(SEARCH_MAGIC)?;
    w.write_all(&folding.fingerprint().to_le_bytes())?;
    // SAFETY: u64 has no padding; the file is little-endian, as every supported target.
    let bytes =
        unsafe { std::slice::from_raw_parts(entries.as_ptr() as *const u8, entries.len() * 8) };
    w.write_all(bytes)
}

/// The entries a [`SEARCH_FILE`] holds for a registry of `rows` rows, if they were folded with
/// `folding` (None if with another table: they are then built again). Checked, since a file
/// is outside input: sorted, and each row exactly once; a hash that is not its row's can only
/// hide a resident from a search, never make a false candidate (every candidate is compared).
pub fn read_entries(
    buf: &Buffer,
    rows: usize,
    folding: &Folding,
    name: &str,
) -> Result<Option<ScalarBuffer<u64>>> {
    let corrupt = |why: String| {
        JukiError::SnapshotCorrupt(format!("snapshot file '{name}' is corrupt: {why}"))
    };
    if buf.len() < 16 || &buf[..8] != SEARCH_MAGIC {
        return Err(corrupt("not a 4情報 index".into()));
    }
    if buf[8..16] != folding.fingerprint().to_le_bytes() {
        return Ok(None);
    }
    if buf.len() != 16 + rows * 8 {
        return Err(corrupt(format!("{} bytes for {rows} rows", buf.len())));
    }
    // Offset and length in entries: the 16-byte header is two.
    let entries = ScalarBuffer::<u64>::new(buf.clone(), 2, rows);
    let mut seen = vec![0u64; rows.div_ceil(64)];
    let mut previous = 0u64;
    for (i, &e) in entries.iter().enumerate() {
        let row = (e & ROW_MASK) as usize;
        if (i > 0 && e < previous) || row >= rows || seen[row / 64] & (1 << (row % 64)) != 0 {
            return Err(corrupt(format!(
                "entry {i} is out of order, out of range or repeated"
            )));
        }
        seen[row / 64] |= 1 << (row % 64);
        previous = e;
    }
    Ok(Some(entries))
}

impl SearchIndex {
    /// Build the index of `data` with its dictionaries folded at `folded.level`.
    pub fn build(data: &RegistryData, folded: &FoldedText) -> SearchIndex {
        SearchIndex::from_entries(
            data,
            folded,
            ScalarBuffer::from(registry_entries(data, folded)),
        )
    }

    /// The index of `data` over its sorted `entries` (built, or read from its snapshot).
    pub fn from_entries(
        data: &RegistryData,
        folded: &FoldedText,
        entries: ScalarBuffer<u64>,
    ) -> SearchIndex {
        let (family, given) = (hashes(&folded.family_name), hashes(&folded.given_name));
        let family_names = Names::build(&data.dicts.family_name, &folded.family_name, &family);
        let given_names = Names::build(&data.dicts.given_name, &folded.given_name, &given);
        let shift = 64 - directory_bits(entries.len());
        let slots = 1usize << (64 - shift);
        let mut directory = vec![0u32; slots + 1];
        let mut at = 0usize;
        for (slot, first) in directory.iter_mut().enumerate() {
            while at < entries.len() && ((entries[at] >> shift) as usize) < slot {
                at += 1;
            }
            *first = at as u32;
        }
        SearchIndex {
            level: folded.level,
            entries,
            directory,
            shift,
            family: family_names,
            given: given_names,
        }
    }

    pub fn level(&self) -> Level {
        self.level
    }

    pub fn memory_bytes(&self) -> usize {
        self.entries.len() * 8
            + self.directory.len() * 4
            + self.family.memory_bytes()
            + self.given.memory_bytes()
    }

    /// The directory slot a key starts from (to prefetch).
    #[inline]
    fn slot(&self, key: u64) -> *const u32 {
        &self.directory[(key >> self.shift) as usize]
    }

    /// The first entry at or above `key`'s prefix within its directory slot's range.
    #[inline]
    fn first_entry(&self, key: u64) -> usize {
        let slot = (key >> self.shift) as usize;
        let (lo, hi) = (
            self.directory[slot] as usize,
            self.directory[slot + 1] as usize,
        );
        let prefix = key & !ROW_MASK;
        lo + self.entries[lo..hi].partition_point(|&e| e < prefix)
    }

    /// The rows whose hash shares `key`'s prefix (a superset of the residents it names), from
    /// `start` ([`first_entry`](Self::first_entry)).
    #[inline]
    fn rows_from(&self, start: usize, key: u64) -> impl Iterator<Item = u32> + '_ {
        let prefix = key & !ROW_MASK;
        self.entries[start..]
            .iter()
            .take_while(move |&&e| e & !ROW_MASK == prefix)
            .map(|&e| (e & ROW_MASK) as u32)
    }
}

/// The persons whose current names or birth date are not the snapshot's — renamed, corrected,
/// born since — by the prefix of the key the index sorts on: what the index alone would miss.
/// Kept current by catching up on the entries applied since it last looked, so a search costs
/// one map probe a claim more, whatever the changes.
#[derive(Default)]
pub struct Delta {
    /// Entries examined.
    through: usize,
    by_key: HashMap<u64, Vec<u32>>,
    key_of: HashMap<u32, u64>,
}

impl Delta {
    /// Take in the entries `view` sees that were applied since the last call.
    pub fn catch_up(&mut self, view: &View, folded: &FoldedText, folding: Option<&Folding>) {
        let live = view.live;
        let persons = view.data.persons.rows();
        let mut text = String::new();
        let mut hash_of = |dict: Dict, k: u32, base: &StringArray| -> u64 {
            if (k as usize) < base.len() {
                return xxh3_64(base.value(k as usize).as_bytes());
            }
            let raw = dict_text(view, dict, k, false);
            text.clear();
            match folding {
                Some(f) => f.fold(&raw, folded.level, &mut text),
                None => text.push_str(&raw),
            }
            xxh3_64(text.as_bytes())
        };
        while let Some(e) = live.entries.get(self.through) {
            if e.batch > view.cut.batch {
                break;
            }
            self.through += 1;
            let names = e.mask & (group::NAME | group::BIRTH) != 0 || e.reason == Reason::Cancel;
            if !names || e.reason == Reason::Origin {
                continue;
            }
            let p = e.person;
            let current = view.resolve(p).map(|v| {
                let q = v.resident.person;
                let f = hash_of(Dict::Family, q.family, &folded.family_name);
                let g = hash_of(Dict::Given, q.given, &folded.given_name);
                key(f, g, q.birth_date) & !ROW_MASK
            });
            let base = persons.get(p as usize).map(|q| {
                let f = hash_of(Dict::Family, q.family, &folded.family_name);
                let g = hash_of(Dict::Given, q.given, &folded.given_name);
                key(f, g, q.birth_date) & !ROW_MASK
            });
            if let Some(old) = self.key_of.remove(&p) {
                if let Some(rows) = self.by_key.get_mut(&old) {
                    rows.retain(|&x| x != p);
                }
            }
            if let Some(k) = current.filter(|&k| Some(k) != base) {
                self.by_key.entry(k).or_default().push(p);
                self.key_of.insert(p, k);
            }
        }
    }

    fn rows(&self, key: u64) -> &[u32] {
        self.by_key
            .get(&(key & !ROW_MASK))
            .map_or(&[], |v| v.as_slice())
    }
}

/// A claim's optional facts, prepared.
struct Optional {
    sex: Option<UInt16Array>,
    municipality: Option<TextColumn>,
}

/// One candidate of one claim: its row and how many of the claim's supplied facts it agrees on.
#[derive(Clone, Copy)]
struct Candidate {
    claim: u32,
    row: u32,
    agreed: u8,
    outcome: u8,
    candidates: u32,
}

fn text_column(claims: &RecordBatch, c: Column) -> Result<Option<TextColumn>> {
    claims
        .column_by_name(c.name())
        .map(|a| TextColumn::new(a.as_ref(), &format!("claims column '{}'", c.name())))
        .transpose()
}

/// Search `claims` (family_name, given_name, birth_date; optionally sex, municipality_code) in
/// `index`. One output row per candidate (claims with none get one row without a resident), in
/// claim order and, within a claim, most facts agreeing first: `claim` (the claim's row),
/// `outcome` (unique: exactly one resident agrees on every supplied fact; ambiguous: two or
/// more, all listed; not_found: none, the partial candidates listed), `candidates` (how many
/// agree on every fact), `agreed` (how many of the claim's supplied facts this one agrees on),
/// then `columns` of the candidate.
#[allow(clippy::too_many_arguments)]
pub fn search(
    data: &RegistryData,
    view: Option<(&View, &Delta)>,
    index: &SearchIndex,
    folded: &FoldedText,
    folding: Option<&Folding>,
    claims: &RecordBatch,
    first_claim: usize,
    columns: &[Column],
) -> Result<RecordBatch> {
    for c in REQUIRED {
        if claims.column_by_name(c.name()).is_none() {
            return Err(JukiError::InvalidInput(format!(
                "a 4情報 search needs the claims columns {} (and may add {})",
                REQUIRED.map(|c| c.name()).join(", "),
                OPTIONAL.map(|c| c.name()).join(", ")
            )));
        }
    }
    for f in claims.schema().fields() {
        if !REQUIRED
            .iter()
            .chain(&OPTIONAL)
            .any(|c| c.name() == f.name())
        {
            return Err(JukiError::InvalidInput(format!(
                "claims column '{}' is not one of the 4情報 search's: {}, {}",
                crate::error::echo(f.name().as_bytes()),
                REQUIRED.map(|c| c.name()).join(", "),
                OPTIONAL.map(|c| c.name()).join(", ")
            )));
        }
    }
    let family = text_column(claims, Column::FamilyName)?.expect("checked");
    let given = text_column(claims, Column::GivenName)?.expect("checked");
    let birth = claims.column_by_name("birth_date").expect("checked");
    if birth.data_type() != &DataType::Date32 {
        return Err(JukiError::InvalidInput(format!(
            "claims column 'birth_date' must hold dates (date32), not {}",
            shown_type(birth.data_type())
        )));
    }
    let birth = birth.as_primitive::<Date32Type>().clone();
    let sex = claims
        .column_by_name("sex")
        .map(|a| sex_claims(a.as_ref(), "claims column 'sex'"))
        .transpose()?;
    let optional = Optional {
        sex,
        municipality: text_column(claims, Column::MunicipalityCode)?,
    };
    let level = index.level();
    let persons = data.persons.rows();
    let n = claims.num_rows();
    // Names are UTF-8 by here (phase 1 sets the others aside); a municipality code that is not
    // folds to nothing, which no stored code equals.
    let fold = |text: &[u8], into: &mut String| match (std::str::from_utf8(text), folding) {
        (Ok(text), Some(folding)) => folding.fold(text, level, into),
        (Ok(text), None) => into.push_str(text),
        (Err(_), _) => {}
    };
    // A chunk of claims at a time, in phases, each prefetching what the next one reads: a
    // search is a few dependent cache misses (directory, entries, resident, names), and the
    // phases overlap the chunk's misses rather than waiting on each (as the verify kernel does).
    let search_chunk = |first: usize, len: usize| -> Vec<Candidate> {
        // Phase 1: hash each claim's raw names; prefetch their name-table slots.
        let d = &data.dicts;
        let mut raw: Vec<Option<(u64, u64)>> = Vec::with_capacity(len);
        for i in first..first + len {
            raw.push(match (family.get(i), given.get(i), birth.is_null(i)) {
                // A name that is not UTF-8 (a claim from this process) names no one.
                (Some(f), Some(g), false)
                    if std::str::from_utf8(f).is_ok() && std::str::from_utf8(g).is_ok() =>
                {
                    let (hf, hg) = (raw_hash(f), raw_hash(g));
                    prefetch(index.family.home(hf));
                    prefetch(index.given.home(hg));
                    Some((hf, hg))
                }
                _ => None,
            });
        }
        // Phase 2: resolve each name (to the registry value it is spelled as, else folded into
        // one arena); hash them with the birth date; prefetch the directory slot.
        let mut arena = String::new();
        let mut resolve = |text: &[u8], hash: u64, raw: &StringArray, names: &Names| -> Name {
            if let Some(slot) = names.find(text, hash, raw) {
                return Name {
                    hash: slot.folded_hash,
                    canonical: Some(slot.canonical),
                    span: (0, 0),
                };
            }
            let start = arena.len();
            fold(text, &mut arena);
            let span = (start, arena.len());
            Name {
                hash: xxh3_64(&arena.as_bytes()[span.0..span.1]),
                canonical: None,
                span,
            }
        };
        let mut spans: Vec<Option<(Name, Name)>> = Vec::with_capacity(len);
        let mut keys = Vec::with_capacity(len);
        for (j, hashes) in raw.iter().enumerate() {
            let i = first + j;
            let Some((hf, hg)) = *hashes else {
                spans.push(None);
                keys.push(0);
                continue;
            };
            let (f, g) = (
                family.get(i).expect("claimed"),
                given.get(i).expect("claimed"),
            );
            let (f, g) = (
                resolve(f, hf, &d.family_name, &index.family),
                resolve(g, hg, &d.given_name, &index.given),
            );
            let k = key(f.hash, g.hash, birth.value(i));
            spans.push(Some((f, g)));
            keys.push(k);
            prefetch(index.slot(k));
        }
        // Phase 3: read each directory slot; prefetch the first entry of its range.
        let starts: Vec<usize> = keys
            .iter()
            .zip(&spans)
            .map(|(&k, span)| match span {
                Some(_) => {
                    let at = index.first_entry(k);
                    prefetch(index.entries.as_ptr().wrapping_add(at));
                    at
                }
                None => 0,
            })
            .collect();
        // Phase 4: each claim's candidate rows from its entries; prefetch the residents.
        let mut hits: Vec<(u32, u32)> = Vec::with_capacity(len + len / 8);
        for (j, &k) in keys.iter().enumerate() {
            if spans[j].is_some() {
                for row in index.rows_from(starts[j], k) {
                    prefetch(&persons[row as usize]);
                    hits.push((j as u32, row));
                }
                // And those whose current names or birth date a change made the claim's.
                if let Some((_, delta)) = view {
                    hits.extend(delta.rows(k).iter().map(|&p| (j as u32, p)));
                }
            }
        }
        // Phase 5: prefetch what each candidate's names are compared through.
        for &(j, row) in &hits {
            // A candidate a change touched is resolved in phase 6: its chain head first.
            if let Some((v, _)) = view.filter(|(v, _)| v.changed(row)) {
                v.prefetch_head(row);
            }
            let Some(p) = persons.get(row as usize) else {
                continue;
            };
            if let Some((f, g)) = &spans[j as usize] {
                if f.canonical.is_some() {
                    prefetch(
                        index
                            .family
                            .canonical
                            .as_ptr()
                            .wrapping_add(p.family as usize),
                    );
                }
                if g.canonical.is_some() {
                    prefetch(
                        index
                            .given
                            .canonical
                            .as_ptr()
                            .wrapping_add(p.given as usize),
                    );
                }
            }
        }
        // Phase 6: keep the candidates whose folded names and birth date agree (the hash is only
        // a filter), counting the optional facts they also agree on.
        let mut out = Vec::with_capacity(len);
        let mut municipality_folded = String::new();
        let mut h = 0;
        for (j, span) in spans.iter().enumerate() {
            let i = first + j;
            let claim = (first_claim + i) as u32;
            let start = out.len();
            let none = Candidate {
                claim,
                row: NOT_FOUND,
                agreed: 0,
                outcome: NOT_FOUND_OUTCOME,
                candidates: 0,
            };
            let Some((f, g)) = *span else {
                out.push(none);
                continue;
            };
            // Whether a stored name folds as the claimed one does: one integer compare where the
            // claim is spelled as a registry value, a string compare where it is not.
            let same =
                |name: &Name, id: u32, names: &Names, folded: &StringArray| match name.canonical {
                    Some(c) => names.canonical[id as usize] == c,
                    None => folded.value(id as usize) == &arena[name.span.0..name.span.1],
                };
            let municipality = optional
                .municipality
                .as_ref()
                .and_then(|m| m.get(i))
                .map(|m| {
                    municipality_folded.clear();
                    fold(m, &mut municipality_folded);
                    municipality_folded.as_str()
                });
            let supplied = 3
                + optional.sex.as_ref().is_some_and(|s| s.is_valid(i)) as u8
                + municipality.is_some() as u8;
            let date = birth.value(i);
            while h < hits.len() && hits[h].0 == j as u32 {
                let row = hits[h].1;
                h += 1;
                // A person a change touched is compared as they are now, not as the snapshot
                // has them (which the index was built from).
                let resolved;
                let touched = view.filter(|(v, _)| v.changed(row));
                let p: &Person = match touched {
                    None => &persons[row as usize],
                    Some((v, _)) => {
                        // The person's facts only: no identifier is read.
                        let Some((values, _)) = v.resolve_parts(row, crate::history::NONE) else {
                            continue; // a birth since cancelled
                        };
                        resolved = values.resident.person;
                        if out[start..].iter().any(|c| c.row == row) {
                            continue; // found by both its old and its new key's prefix
                        }
                        let names_agree = |name: &Name, dict: Dict, k: u32, base: &StringArray| {
                            let claimed = match name.canonical {
                                Some(c) => base.value(c as usize),
                                None => &arena[name.span.0..name.span.1],
                            };
                            if (k as usize) < base.len() {
                                return base.value(k as usize) == claimed;
                            }
                            let mut now = String::new();
                            let raw = dict_text(v, dict, k, false);
                            match folding {
                                Some(fo) => fo.fold(&raw, level, &mut now),
                                None => now.push_str(&raw),
                            }
                            now == claimed
                        };
                        if resolved.birth_date != date
                            || !names_agree(&f, Dict::Family, resolved.family, &folded.family_name)
                            || !names_agree(&g, Dict::Given, resolved.given, &folded.given_name)
                        {
                            continue;
                        }
                        &resolved
                    }
                };
                if touched.is_none()
                    && (p.birth_date != date
                        || !same(&f, p.family, &index.family, &folded.family_name)
                        || !same(&g, p.given, &index.given, &folded.given_name))
                {
                    continue; // a hash collision
                }
                let mut agreed = 3u8;
                if let Some(s) = optional.sex.as_ref().filter(|s| s.is_valid(i)) {
                    agreed += (s.value(i) == p.sex as u16) as u8;
                }
                if let Some(m) = municipality {
                    agreed += (folded.municipality_code.value(p.municipality as usize) == m) as u8;
                }
                out.push(Candidate {
                    claim,
                    row,
                    agreed,
                    outcome: 0,
                    candidates: 0,
                });
            }
            let found = &mut out[start..];
            if found.is_empty() {
                out.push(none);
                continue;
            }
            found.sort_by(|a, b| b.agreed.cmp(&a.agreed).then(a.row.cmp(&b.row)));
            let full = found.iter().filter(|c| c.agreed == supplied).count() as u32;
            let outcome = match full {
                0 => NOT_FOUND_OUTCOME,
                1 => UNIQUE,
                _ => AMBIGUOUS,
            };
            for c in found {
                c.outcome = outcome;
                c.candidates = full;
            }
        }
        out
    };
    let chunks: Vec<usize> = (0..n).step_by(CHUNK).collect();
    let found: Vec<Candidate> = chunks
        .par_iter()
        .map(|&first| search_chunk(first, CHUNK.min(n - first)))
        .collect::<Vec<_>>()
        .into_iter()
        .flatten()
        .collect();
    let mut rows: Vec<u32> = found.iter().map(|c| c.row).collect();
    let outcome = UInt8Array::from_iter_values(found.iter().map(|c| c.outcome));
    // SAFETY: every code is < OUTCOMES.len().
    let outcome = unsafe {
        DictionaryArray::<arrow_array::types::UInt8Type>::new_unchecked(
            outcome,
            Arc::new(StringArray::from(OUTCOMES.to_vec())),
        )
    };
    let mut fields = vec![
        Field::new("claim", DataType::UInt32, false),
        Field::new("outcome", outcome.data_type().clone(), false),
        Field::new("candidates", DataType::UInt32, false),
        Field::new("agreed", DataType::UInt8, false),
    ];
    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(found.iter().map(|c| c.claim))),
        Arc::new(outcome),
        Arc::new(UInt32Array::from_iter_values(
            found.iter().map(|c| c.candidates),
        )),
        Arc::new(UInt8Array::from_iter_values(found.iter().map(|c| c.agreed))),
    ];
    fields.extend(columns.iter().map(|c| c.field()));
    // The index holds the snapshot's names and birth dates; a candidate a change touched
    // discloses its current values, never the snapshot's.
    let view = view.map(|(v, _)| v).filter(|v| !v.plain());
    let changed = view.map_or_else(Vec::new, |v| v.resolve_rows(&mut rows));
    arrays.extend(crate::query::disclose(
        data, view, columns, &rows, &changed,
    )?);
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
}
