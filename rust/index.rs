//! Hash indexes on My Number and resident code.
//!
//! One flat open-addressing table per identifier: linear probing, 8-byte slots, 2^q slots at
//! load ≤ 9/16. Keys are quotiented. An identifier's base (its digits without the check digit:
//! below 2^37 for My Number and for the resident code) goes through [`mix`], a bijection on 37
//! bits; the top q bits of the mixed value are the key's home slot, and the slot keeps only the
//! other 37 − q bits, its remainder: home and remainder give the mixed value, hence the base,
//! back. A slot packs, from the top bit down:
//!
//! | displacement from the home slot, plus one | remainder  | row id  |
//! | ----------------------------------------- | ---------- | ------- |
//! | q − 1 bits                                | 37 − q bits | 28 bits |
//!
//! Zero is the empty slot: an occupied one has a displacement field of at least one. 28 row bits
//! address 268,435,456 rows; the nation's 128,066,211 residents and 150 M both take 2^28 slots
//! (2 GiB a table, on huge pages: see `memory`). A probe never touches the key column and tests
//! a slot with one shift and one comparison (the expected bits above the row id advance by one
//! displacement unit a step): one cache miss per lookup, hidden by software prefetch over a
//! batch. A key that would land further from home than its field records fails the build.

use std::sync::atomic::{AtomicU64, Ordering};

use arrow_buffer::ScalarBuffer;
use rayon::prelude::*;

use crate::error::{JukiError, Result};
use crate::ids::IdKind;
use crate::memory::{prefetch, HugeVec};

/// Row id meaning "no such key".
pub const NOT_FOUND: u32 = u32::MAX;
/// Key meaning "invalid key: do not probe".
pub const INVALID_KEY: u64 = u64::MAX;
/// Bits of a slot that hold the row id.
pub const ROW_BITS: u32 = 28;
/// The most rows an index can address.
pub const MAX_ROWS: usize = 1 << ROW_BITS;
const ROW_MASK: u64 = (1 << ROW_BITS) - 1;
/// Width of the domain [`mix`] permutes: every base of both identifiers (< 10^11) fits.
const KEY_BITS: u32 = 37;
const KEY_MASK: u64 = (1 << KEY_BITS) - 1;
const EMPTY: u64 = 0;
/// The smallest table. Its displacement field (9 bits) then records 510 slots, far beyond any
/// probe at load ≤ 9/16; smaller tables would leave a few bits, which a small cluster overflows.
const MIN_SLOTS: usize = 1 << 10;
/// How many probes ahead the prefetch runs: enough to cover memory latency on this machine.
const PREFETCH_DISTANCE: usize = 32;
/// Values one build task inserts in order, prefetching ahead.
const BUILD_CHUNK: usize = 1 << 14;

/// The mixer's multiplier: the golden ratio's 64-bit constant cut to 37 bits (odd).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15 & KEY_MASK;

/// A bijection on 37-bit values: `x ^ (x >> 18)` and multiplying by an odd constant mod 2^37
/// both invert, so distinct bases mix to distinct values. The xorshift folds a base's high bits
/// into its low ones; the multiplication carries every bit into the top ones, which pick the
/// home slot (Fibonacci hashing, which spreads runs of consecutive numbers evenly). Keyless:
/// identifiers are issued by the state, not chosen by whoever is looked up. One multiplication:
/// BENCHMARKS.md has what a second round cost.
#[inline(always)]
fn mix(base: u64) -> u64 {
    (base ^ (base >> 18)).wrapping_mul(GOLDEN) & KEY_MASK
}

/// Where a slot's fields lie in a table of 2^q slots.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// 37 − q: the bits of a mixed base that a slot keeps.
    rem_bits: u32,
    /// Width of the displacement field: q − 1, the rest of the slot (narrower only in tests).
    disp_bits: u32,
}

impl Layout {
    fn for_capacity(cap: usize) -> Layout {
        let rem_bits = KEY_BITS - cap.trailing_zeros();
        Layout {
            rem_bits,
            disp_bits: 64 - ROW_BITS - rem_bits,
        }
    }

    /// The furthest from home a key can be recorded: the field holds the displacement plus one
    /// (zero only in the empty slot, which is all zeros).
    fn max_displacement(self) -> u64 {
        (1 << self.disp_bits) - 2
    }

    /// What one step along the probe sequence adds to a tag.
    fn unit(self) -> u64 {
        1 << self.rem_bits
    }

    /// A mixed base's home slot, and its tag there: the bits a slot holding it at displacement
    /// zero has above the row id. Each further step adds [`Layout::unit`]; past the field's
    /// width the tag exceeds every slot's, so an over-long probe never matches by accident.
    #[inline(always)]
    fn home_and_tag(self, mixed: u64) -> (usize, u64) {
        let remainder = mixed & (self.unit() - 1);
        ((mixed >> self.rem_bits) as usize, self.unit() | remainder)
    }
}

/// A slot holding `row` under `tag`.
#[inline(always)]
fn pack(tag: u64, row: usize) -> u64 {
    (tag << ROW_BITS) | row as u64
}

/// Why a build stopped.
enum Failure {
    /// Two rows carry the same identifier.
    Duplicate(usize, usize),
    /// A row's value is not an identifier of the index's kind.
    OutOfDomain(usize),
    /// A row's key lies beyond the displacement field's reach.
    TooFar(usize),
}

/// An index from identifier to row.
#[derive(Clone, Debug)]
pub struct HashIndex {
    kind: IdKind,
    slots: ScalarBuffer<u64>,
    layout: Layout,
    len: usize,
}

/// Table capacity (a power of two, at least [`MIN_SLOTS`]) for `n` keys at load ≤ 9/16: 2^28
/// slots from 75.5 M keys up to 150,994,944, so for the nation today and at 150 M.
pub fn capacity_for(n: usize) -> usize {
    n.saturating_mul(16)
        .div_ceil(9)
        .max(MIN_SLOTS)
        .next_power_of_two()
}

impl HashIndex {
    /// Build an index over `values` (full identifier values, check digit included). Every value
    /// must be valid; a value seen twice is an error naming both rows.
    pub fn build(kind: IdKind, values: &[u64]) -> Result<HashIndex> {
        HashIndex::build_by(kind, values.len(), |row| values[row])
    }

    /// [`build`](Self::build) over `rows` values given by `value` (row → value), for a caller
    /// that does not hold them as one column (a checkpoint: the base's, except where changed).
    pub fn build_by(
        kind: IdKind,
        rows: usize,
        value: impl Fn(usize) -> u64 + Sync,
    ) -> Result<HashIndex> {
        let layout = Layout::for_capacity(capacity_for(rows));
        HashIndex::build_with(kind, rows, value, layout)
    }

    fn build_with(
        kind: IdKind,
        rows: usize,
        value: impl Fn(usize) -> u64 + Sync,
        layout: Layout,
    ) -> Result<HashIndex> {
        if rows > MAX_ROWS {
            return Err(JukiError::InvalidInput(format!(
                "{rows} rows exceed the index's limit of {MAX_ROWS}"
            )));
        }
        let cap = 1usize << (KEY_BITS - layout.rem_bits);
        // Zeroed memory is a table of empty slots.
        let mut table: HugeVec<u64> = HugeVec::zeroed(cap)?;
        let failure = {
            let slots = table.as_mut_slice();
            // SAFETY: AtomicU64 has the same size and alignment as u64, and the exclusive borrow
            // of `slots` is held for as long as `atomics` lives.
            let atomics: &[AtomicU64] = unsafe {
                std::slice::from_raw_parts(slots.as_ptr() as *const AtomicU64, slots.len())
            };
            let mask = cap - 1;
            let reach = layout.max_displacement();
            let home = |value: u64| layout.home_and_tag(mix(kind.base_of(value))).0 & mask;
            let insert = |row: usize, value: u64| -> Option<Failure> {
                let base = kind.base_of(value);
                if base > KEY_MASK {
                    return Some(Failure::OutOfDomain(row));
                }
                let (mut i, mut tag) = layout.home_and_tag(mix(base));
                for _ in 0..=reach {
                    match atomics[i].compare_exchange(
                        EMPTY,
                        pack(tag, row),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => return None,
                        Err(existing) if existing >> ROW_BITS == tag => {
                            return Some(Failure::Duplicate((existing & ROW_MASK) as usize, row));
                        }
                        Err(_) => {
                            i = (i + 1) & mask;
                            tag += layout.unit();
                        }
                    }
                }
                Some(Failure::TooFar(row))
            };
            // Each insertion's slot is prefetched PREFETCH_DISTANCE insertions ahead, as probes
            // do, so that the misses of one thread's inserts overlap.
            (0..rows.div_ceil(BUILD_CHUNK))
                .into_par_iter()
                .find_map_any(|c| {
                    let chunk = c * BUILD_CHUNK..((c + 1) * BUILD_CHUNK).min(rows);
                    for row in chunk.clone().take(PREFETCH_DISTANCE) {
                        prefetch(&atomics[home(value(row))]);
                    }
                    for row in chunk.clone() {
                        if row + PREFETCH_DISTANCE < chunk.end {
                            prefetch(&atomics[home(value(row + PREFETCH_DISTANCE))]);
                        }
                        if let Some(failure) = insert(row, value(row)) {
                            return Some(failure);
                        }
                    }
                    None
                })
        };
        match failure {
            None => Ok(HashIndex {
                kind,
                slots: table.into_buffer(),
                layout,
                len: rows,
            }),
            Some(Failure::Duplicate(a, b)) => {
                let (a, b) = (a.min(b), a.max(b));
                Err(JukiError::DuplicateIdentifier(format!(
                    "{} {} appears in rows {a} and {b}",
                    kind.name(),
                    kind.format(value(a))
                )))
            }
            Some(Failure::OutOfDomain(row)) => Err(JukiError::InvalidInput(format!(
                "row {row}: {} is not a {}",
                value(row),
                kind.name()
            ))),
            Some(Failure::TooFar(row)) => Err(JukiError::ResourceExhausted(format!(
                "index on {}: row {row}'s key lies more than {} slots past its home slot, beyond \
                 what a slot's {}-bit displacement field records ({} keys in {cap} slots)",
                kind.name(),
                layout.max_displacement(),
                layout.disp_bits,
                rows
            ))),
        }
    }

    /// Rebuild from persisted slots (see `snapshot`): checks the table's shape, that it holds
    /// exactly `len` keys (so empty slots end every probe) and that every row id is below `len`.
    pub fn from_slots(kind: IdKind, slots: ScalarBuffer<u64>, len: usize) -> Result<HashIndex> {
        let cap = slots.len();
        let corrupt =
            |why: String| JukiError::SnapshotCorrupt(format!("index on {}: {why}", kind.name()));
        if len > MAX_ROWS
            || !cap.is_power_of_two()
            || cap < capacity_for(len)
            || cap.trailing_zeros() > KEY_BITS
        {
            return Err(corrupt(format!("{cap} slots cannot hold {len} keys")));
        }
        // An empty slot's row bits are zero too, so the largest over all slots is the largest
        // over the occupied ones (or zero).
        let (occupied, top_row) = slots
            .par_chunks(1 << 16)
            .map(|chunk| {
                chunk.iter().fold((0usize, 0u64), |(n, top), &s| {
                    (n + usize::from(s != EMPTY), top.max(s & ROW_MASK))
                })
            })
            .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1.max(b.1)));
        if occupied != len {
            return Err(corrupt(format!("{occupied} occupied slots for {len} rows")));
        }
        if len > 0 && top_row >= len as u64 {
            return Err(corrupt(format!("row id {top_row} beyond the {len} rows")));
        }
        Ok(HashIndex {
            kind,
            slots,
            layout: Layout::for_capacity(cap),
            len,
        })
    }

    /// The identifier this index is on.
    pub fn kind(&self) -> IdKind {
        self.kind
    }

    /// The raw slots, for persisting.
    pub fn slots(&self) -> &ScalarBuffer<u64> {
        &self.slots
    }

    /// Number of keys indexed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index holds no keys.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held by the table.
    pub fn memory_bytes(&self) -> usize {
        self.slots.len() * 8
    }

    /// The row of one identifier value (check digit included), if present.
    pub fn get(&self, value: u64) -> Option<u32> {
        let mut out = [NOT_FOUND];
        self.probe_chunk(&[self.kind.base_of(value)], &mut out);
        (out[0] != NOT_FOUND).then_some(out[0])
    }

    /// Probe a slice of bases (identifiers without check digit; [`INVALID_KEY`] for keys that
    /// must not be probed), writing each one's row or [`NOT_FOUND`]. Runs on the calling thread:
    /// the query kernels give each core its own chunks.
    pub fn probe_chunk(&self, bases: &[u64], rows: &mut [u32]) {
        self.probe_chunk_with(bases, rows, |_| {});
    }

    /// Probe one slice of bases, calling `on_hit(row)` as soon as each key's row is known — e.g.
    /// to prefetch the row's data so that its miss overlaps the probes still in flight.
    #[inline(always)]
    pub fn probe_chunk_with(&self, bases: &[u64], rows: &mut [u32], on_hit: impl Fn(u32)) {
        let slots: &[u64] = &self.slots;
        let mask = slots.len() - 1;
        let layout = self.layout;
        let unit = layout.unit();
        // Each base is mixed once, when its home slot is prefetched, and kept in `ahead` until
        // its probe. A base above the domain (INVALID_KEY among them) is in no table: it is
        // neither prefetched nor probed.
        let mut ahead = [INVALID_KEY; PREFETCH_DISTANCE];
        let prefetched = |base: u64| {
            if base > KEY_MASK {
                return INVALID_KEY;
            }
            let mixed = mix(base);
            prefetch(slots.as_ptr().wrapping_add(layout.home_and_tag(mixed).0));
            mixed
        };
        for (m, &b) in ahead.iter_mut().zip(bases) {
            *m = prefetched(b);
        }
        for i in 0..bases.len() {
            let m = &mut ahead[i % PREFETCH_DISTANCE];
            let mixed = *m;
            if let Some(&b) = bases.get(i + PREFETCH_DISTANCE) {
                *m = prefetched(b);
            }
            rows[i] = if mixed == INVALID_KEY {
                NOT_FOUND
            } else {
                let (mut s, mut tag) = layout.home_and_tag(mixed);
                loop {
                    let slot = slots[s];
                    if slot >> ROW_BITS == tag {
                        let row = (slot & ROW_MASK) as u32;
                        on_hit(row);
                        break row;
                    }
                    if slot == EMPTY {
                        break NOT_FOUND;
                    }
                    tag += unit;
                    s = (s + 1) & mask;
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u64) -> Vec<u64> {
        (0..n)
            .map(|i| IdKind::MyNumber.with_check_digit(i * 7_919 + 13))
            .collect()
    }

    /// splitmix64: a reproducible stream of pseudo-random words for the tests.
    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `n` distinct identifiers of `kind` in random order.
    fn random_ids(kind: IdKind, n: usize, seed: u64) -> Vec<u64> {
        let bound = 10u64.pow(kind.digits() as u32 - 1);
        let mut state = seed;
        let mut bases: Vec<u64> = (0..n + n / 64 + 16)
            .map(|_| splitmix(&mut state) % bound)
            .collect();
        bases.par_sort_unstable();
        bases.dedup();
        bases.truncate(n);
        assert_eq!(bases.len(), n);
        for i in (1..n).rev() {
            bases.swap(i, (splitmix(&mut state) % (i as u64 + 1)) as usize);
        }
        bases
            .into_par_iter()
            .map(|b| kind.with_check_digit(b))
            .collect()
    }

    /// The furthest any key lies from its home slot.
    fn max_displacement(index: &HashIndex) -> u64 {
        let shift = ROW_BITS + index.layout.rem_bits;
        index
            .slots()
            .iter()
            .filter(|&&s| s != EMPTY)
            .map(|&s| (s >> shift) - 1)
            .max()
            .unwrap_or(0)
    }

    /// Every `present` value is found at its row and no `absent` one, by `get` and by one
    /// `probe_chunk`, which also skips `INVALID_KEY` and a base above the domain.
    fn check(index: &HashIndex, present: &[u64], absent: &[u64]) {
        for (row, &v) in present.iter().enumerate() {
            assert_eq!(index.get(v), Some(row as u32), "value {v}");
        }
        for &v in absent {
            assert_eq!(index.get(v), None, "value {v}");
        }
        let kind = index.kind();
        let mut bases: Vec<u64> = present
            .iter()
            .chain(absent)
            .map(|&v| kind.base_of(v))
            .collect();
        bases.extend([INVALID_KEY, KEY_MASK + 1]);
        let mut rows = vec![0u32; bases.len()];
        index.probe_chunk(&bases, &mut rows);
        let expected: Vec<u32> = (0..present.len() as u32)
            .chain(std::iter::repeat_n(NOT_FOUND, absent.len() + 2))
            .collect();
        assert!(
            rows == expected,
            "{} keys: probe_chunk disagrees",
            present.len()
        );
    }

    /// Inverse of [`mix`]: the multiplier's inverse mod 2^37 by Newton's iteration, then
    /// `x ^ (x >> 18) ^ (x >> 36)` undoing the xorshift on 37 bits.
    fn unmix(mixed: u64) -> u64 {
        let mut inverse = GOLDEN;
        for _ in 0..6 {
            inverse = inverse.wrapping_mul(2u64.wrapping_sub(GOLDEN.wrapping_mul(inverse)));
        }
        let x = mixed.wrapping_mul(inverse) & KEY_MASK;
        x ^ (x >> 18) ^ (x >> 36)
    }

    #[test]
    fn the_mixer_is_a_bijection_on_37_bits() {
        let mut state = 3;
        let edges = [0, 1, 2, 99_999_999_999, KEY_MASK - 1, KEY_MASK];
        for b in edges
            .into_iter()
            .chain((0..100_000).map(|_| splitmix(&mut state) & KEY_MASK))
        {
            assert!(mix(b) <= KEY_MASK);
            assert_eq!(unmix(mix(b)), b);
        }
    }

    #[test]
    fn capacity_holds_the_nation_in_two_tables_of_two_gib() {
        assert_eq!(capacity_for(0), MIN_SLOTS);
        assert_eq!(capacity_for(576), MIN_SLOTS);
        assert_eq!(capacity_for(577), 2 * MIN_SLOTS);
        for n in [128_066_211, 150_000_000, 150_994_944] {
            assert_eq!(capacity_for(n), 1 << 28, "{n} keys");
        }
        assert_eq!(capacity_for(150_994_945), 1 << 29);
        assert_eq!(capacity_for(MAX_ROWS), 1 << 29);
        // Both tables at 150 M keys: 2 × 2^28 slots × 8 bytes = 4 GiB, within 5 GiB.
        assert!(2 * capacity_for(150_000_000) * 8 <= 5 << 30);
        for q in MIN_SLOTS.trailing_zeros()..=capacity_for(MAX_ROWS).trailing_zeros() {
            let layout = Layout::for_capacity(1 << q);
            assert_eq!(layout.rem_bits + layout.disp_bits + ROW_BITS, 64);
            assert!(layout.max_displacement() >= 510);
        }
    }

    #[test]
    fn random_keys_at_several_sizes() {
        // 576 and 147,456 keys fill 2^10 and 2^18 slots to 9/16, the most `capacity_for` allows.
        for (kind, n) in [
            (IdKind::MyNumber, 0),
            (IdKind::MyNumber, 1),
            (IdKind::MyNumber, 7),
            (IdKind::MyNumber, 576),
            (IdKind::ResidentCode, 577),
            (IdKind::MyNumber, 10_000),
            (IdKind::MyNumber, 147_456),
            (IdKind::ResidentCode, 147_456),
        ] {
            let all = random_ids(kind, 2 * n, n as u64);
            let (present, absent) = all.split_at(n);
            let index = HashIndex::build(kind, present).unwrap();
            assert_eq!(index.slots().len(), capacity_for(n));
            assert!(n * 16 <= index.slots().len() * 9);
            assert!(
                max_displacement(&index) < 200,
                "{}",
                max_displacement(&index)
            );
            check(&index, present, absent);
            let again = HashIndex::from_slots(kind, index.slots().clone(), n).unwrap();
            assert_eq!(again.slots(), index.slots());
            check(&again, present, absent);
        }
    }

    #[test]
    fn consecutive_identifiers_spread() {
        // Issued numbers may run in sequence: the mixer must scatter them all the same.
        let kind = IdKind::ResidentCode;
        let values: Vec<u64> = (0..147_456).map(|b| kind.with_check_digit(b)).collect();
        let index = HashIndex::build(kind, &values).unwrap();
        assert!(
            max_displacement(&index) < 200,
            "{}",
            max_displacement(&index)
        );
        check(&index, &values, &[kind.with_check_digit(147_456)]);
    }

    #[test]
    fn finds_every_key_and_misses_others() {
        let values = ids(10_000);
        let index = HashIndex::build(IdKind::MyNumber, &values).unwrap();
        check(&index, &values, &[IdKind::MyNumber.with_check_digit(5)]);
    }

    #[test]
    fn duplicates_are_named() {
        let mut values = ids(100);
        values[70] = values[3];
        let err = HashIndex::build(IdKind::MyNumber, &values).unwrap_err();
        assert!(matches!(err, JukiError::DuplicateIdentifier(_)));
        assert!(err.to_string().contains("rows 3 and 70"), "{err}");

        let mut values = random_ids(IdKind::ResidentCode, 147_456, 9);
        values[140_000] = values[12_345];
        let err = HashIndex::build(IdKind::ResidentCode, &values).unwrap_err();
        assert!(err.to_string().contains("rows 12345 and 140000"), "{err}");
    }

    #[test]
    fn a_value_outside_the_domain_is_refused() {
        let mut values = ids(10);
        values[4] = 10u64.pow(13);
        let err = HashIndex::build(IdKind::MyNumber, &values).unwrap_err();
        assert!(matches!(err, JukiError::InvalidInput(_)));
        assert!(err.to_string().contains("row 4"), "{err}");
    }

    /// `count` bases whose home is slot `home` of a table of `cap` slots.
    fn bases_at_home(cap: usize, home: usize, count: usize) -> Vec<u64> {
        let layout = Layout::for_capacity(cap);
        (0..)
            .filter(|&b| layout.home_and_tag(mix(b)).0 == home)
            .take(count)
            .collect()
    }

    #[test]
    fn a_displacement_beyond_the_field_fails_the_build() {
        // A field narrowed to 2 bits records displacements 0 to 2: four keys with one home
        // cannot all be placed.
        let kind = IdKind::MyNumber;
        let narrow = Layout {
            disp_bits: 2,
            ..Layout::for_capacity(MIN_SLOTS)
        };
        let with_check = |bases: Vec<u64>| -> Vec<u64> {
            bases
                .into_iter()
                .map(|b| kind.with_check_digit(b))
                .collect()
        };
        let crowd = with_check(bases_at_home(MIN_SLOTS, 5, 4));
        let err = HashIndex::build_with(kind, crowd.len(), |r| crowd[r], narrow).unwrap_err();
        assert!(matches!(err, JukiError::ResourceExhausted(_)), "{err}");
        assert!(
            err.to_string().contains("2-bit displacement field"),
            "{err}"
        );
        check(&HashIndex::build(kind, &crowd).unwrap(), &crowd, &[]);

        // Three fit; with keys at home in slots 8 and 9 the run from slot 5 is longer than the
        // field reaches, and the fourth key's probe walks it to the end without a false match.
        let mut values = crowd[..3].to_vec();
        values.extend(with_check(bases_at_home(MIN_SLOTS, 8, 1)));
        values.extend(with_check(bases_at_home(MIN_SLOTS, 9, 1)));
        let index = HashIndex::build_with(kind, values.len(), |r| values[r], narrow).unwrap();
        check(&index, &values, &crowd[3..]);
    }

    #[test]
    fn row_ids_up_to_the_limit() {
        // A table of 2^28 rows is too big for a unit test: the packing is checked directly, at
        // the extremes of every field, for the nation's table sizes.
        for cap in [MIN_SLOTS, 1 << 28, 1 << 29] {
            let layout = Layout::for_capacity(cap);
            let top_tag = (1 << (layout.disp_bits + layout.rem_bits)) - 1;
            for row in [0, 1 << 27, MAX_ROWS - 1] {
                for tag in [layout.unit(), layout.unit() | 1, top_tag] {
                    let slot = pack(tag, row);
                    assert_ne!(slot, EMPTY);
                    assert_eq!(slot >> ROW_BITS, tag);
                    assert_eq!(slot & ROW_MASK, row as u64);
                }
            }
        }
        // A slot holding row 2^28 − 1, placed by hand, is found by a probe.
        let layout = Layout::for_capacity(MIN_SLOTS);
        let value = IdKind::MyNumber.with_check_digit(123_456_789);
        let (home, tag) = layout.home_and_tag(mix(value / 10));
        let mut slots = vec![EMPTY; MIN_SLOTS];
        slots[home] = pack(tag, MAX_ROWS - 1);
        let index = HashIndex {
            kind: IdKind::MyNumber,
            slots: ScalarBuffer::from(slots),
            layout,
            len: MAX_ROWS,
        };
        assert_eq!(index.get(value), Some((MAX_ROWS - 1) as u32));
        assert_eq!(
            index.get(IdKind::MyNumber.with_check_digit(123_456_788)),
            None
        );
    }

    #[test]
    fn persisted_slots_round_trip() {
        let values = ids(1000);
        let index = HashIndex::build(IdKind::MyNumber, &values).unwrap();
        let again =
            HashIndex::from_slots(IdKind::MyNumber, index.slots().clone(), values.len()).unwrap();
        assert_eq!(again.get(values[500]), Some(500));
        let slots = index.slots().to_vec();
        let rejected = |slots: Vec<u64>, len: usize| {
            let err = HashIndex::from_slots(IdKind::MyNumber, ScalarBuffer::from(slots), len);
            match err {
                Err(JukiError::SnapshotCorrupt(why)) => why,
                other => panic!("{other:?}"),
            }
        };
        assert!(rejected(vec![EMPTY; 8], 1000).contains("cannot hold"));
        assert!(rejected(slots[..1500].to_vec(), 1000).contains("cannot hold"));
        assert!(rejected(slots.clone(), 999).contains("occupied slots"));
        let mut beyond = slots.clone();
        let at = beyond.iter().position(|&s| s & ROW_MASK == 999).unwrap();
        beyond[at] += 1000;
        assert!(rejected(beyond, 1000).contains("row id 1999"));
    }

    /// Build and probe throughput (BENCHMARKS.md): `JUKI_INDEX_BENCH_KEYS` keys (default 20 M),
    /// probed in random order on one core and on all, a tenth of the probes absent.
    #[test]
    #[ignore = "benchmark: cargo test --release index::tests::bench -- --ignored --nocapture"]
    fn bench() {
        let n: usize = std::env::var("JUKI_INDEX_BENCH_KEYS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20_000_000);
        let repeats = 5;
        let values = random_ids(IdKind::MyNumber, n, 42);
        let mut state = 7u64;
        let mut probes: Vec<u64> = (0..n)
            .map(|_| {
                let r = splitmix(&mut state);
                if r.is_multiple_of(10) {
                    r % 100_000_000_000
                } else {
                    values[(r >> 8) as usize % n] / 10
                }
            })
            .collect();
        probes.truncate(n);
        let median = |mut xs: Vec<f64>| {
            xs.sort_by(|a, b| a.total_cmp(b));
            xs[xs.len() / 2]
        };
        let mut builds = Vec::new();
        let mut index = None;
        for _ in 0..repeats {
            drop(index.take());
            let t = std::time::Instant::now();
            index = Some(HashIndex::build(IdKind::MyNumber, &values).unwrap());
            builds.push(t.elapsed().as_secs_f64());
        }
        let index = index.unwrap();
        let mut rows = vec![0u32; n];
        let (mut one, mut all) = (Vec::new(), Vec::new());
        for _ in 0..repeats {
            let t = std::time::Instant::now();
            for (b, r) in probes.chunks(2048).zip(rows.chunks_mut(2048)) {
                index.probe_chunk(b, r);
            }
            one.push(n as f64 / t.elapsed().as_secs_f64() / 1e6);
            let t = std::time::Instant::now();
            probes
                .par_chunks(2048)
                .zip(rows.par_chunks_mut(2048))
                .for_each(|(b, r)| index.probe_chunk(b, r));
            all.push(n as f64 / t.elapsed().as_secs_f64() / 1e6);
        }
        let found = rows.iter().filter(|&&r| r != NOT_FOUND).count();
        let mut checks = Vec::new();
        for _ in 0..repeats {
            let t = std::time::Instant::now();
            HashIndex::from_slots(IdKind::MyNumber, index.slots().clone(), n).unwrap();
            checks.push(t.elapsed().as_secs_f64());
        }
        println!(
            "{n} keys, {} slots ({:.2} GiB, load {:.3}): build median {:.3} s {builds:.3?}; \
             probe M/s median one core {:.1} {one:.1?}, all cores {:.1} {all:.1?}; {found} found; \
             furthest from home {}; from_slots check median {:.3} s",
            index.slots().len(),
            index.memory_bytes() as f64 / (1u64 << 30) as f64,
            n as f64 / index.slots().len() as f64,
            median(builds.clone()),
            median(one.clone()),
            median(all.clone()),
            max_displacement(&index),
            median(checks),
        );
    }
}
