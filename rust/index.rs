//! Hash indexes on My Number and resident code.
//!
//! One flat open-addressing table per identifier, linear probing, 8-byte slots. A slot packs the
//! identifier's base (its digits without the check digit: 37 bits for My Number, 34 for the
//! resident code) above the row id (27 bits: up to 134,217,728 rows, above the nation's
//! 128,066,211), so a probe never touches the key column: one cache miss per lookup, hidden by
//! software prefetch over a batch. At load ≤ 0.5 the nation's two tables take 2 × 2 GiB, on huge
//! pages (see `memory`).

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
pub const ROW_BITS: u32 = 27;
/// The most rows an index can address.
pub const MAX_ROWS: usize = 1 << ROW_BITS;
const EMPTY: u64 = u64::MAX;
const ROW_MASK: u64 = (1 << ROW_BITS) - 1;
/// How many probes ahead the prefetch runs: enough to cover memory latency on this machine.
const PREFETCH_DISTANCE: usize = 32;

/// An index from identifier to row.
#[derive(Clone, Debug)]
pub struct HashIndex {
    kind: IdKind,
    slots: ScalarBuffer<u64>,
    shift: u32,
    len: usize,
}

#[inline(always)]
fn hash(base: u64, shift: u32) -> usize {
    (base.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> shift) as usize
}

/// Table capacity (a power of two) for `n` keys at load factor ≤ 0.5.
pub fn capacity_for(n: usize) -> usize {
    (n.max(8) * 2).next_power_of_two()
}

impl HashIndex {
    /// Build an index over `values` (full identifier values, check digit included). Every value
    /// must be valid; a value seen twice is an error naming both rows.
    pub fn build(kind: IdKind, values: &[u64]) -> Result<HashIndex> {
        if values.len() > MAX_ROWS {
            return Err(JukiError::InvalidInput(format!(
                "{} rows exceed the index's limit of {MAX_ROWS}",
                values.len()
            )));
        }
        let cap = capacity_for(values.len());
        let shift = 64 - cap.trailing_zeros();
        let mut table: HugeVec<u64> = HugeVec::zeroed(cap)?;
        table
            .as_mut_slice()
            .par_chunks_mut(1 << 16)
            .for_each(|c| c.fill(EMPTY));
        let duplicate = {
            let slots = table.as_mut_slice();
            // SAFETY: AtomicU64 has the same size and alignment as u64, and the exclusive borrow
            // of `slots` is held for as long as `atomics` lives.
            let atomics: &[AtomicU64] = unsafe {
                std::slice::from_raw_parts(slots.as_ptr() as *const AtomicU64, slots.len())
            };
            let mask = cap - 1;
            values.par_iter().enumerate().find_map_any(|(row, &value)| {
                let base = kind.base_of(value);
                let packed = (base << ROW_BITS) | row as u64;
                let mut i = hash(base, shift);
                loop {
                    match atomics[i].compare_exchange(
                        EMPTY,
                        packed,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => return None,
                        Err(existing) if existing >> ROW_BITS == base => {
                            return Some(((existing & ROW_MASK) as usize, row));
                        }
                        Err(_) => i = (i + 1) & mask,
                    }
                }
            })
        };
        if let Some((a, b)) = duplicate {
            let (a, b) = (a.min(b), a.max(b));
            return Err(JukiError::DuplicateIdentifier(format!(
                "{} {} appears in rows {a} and {b}",
                kind.name(),
                kind.format(values[a])
            )));
        }
        Ok(HashIndex {
            kind,
            slots: table.into_buffer(),
            shift,
            len: values.len(),
        })
    }

    /// Rebuild from persisted slots (see `snapshot`); checks the table's shape.
    pub fn from_slots(kind: IdKind, slots: ScalarBuffer<u64>, len: usize) -> Result<HashIndex> {
        let cap = slots.len();
        if !cap.is_power_of_two() || cap < capacity_for(len) {
            return Err(JukiError::SnapshotCorrupt(format!(
                "index on {}: {cap} slots cannot hold {len} keys",
                kind.name()
            )));
        }
        Ok(HashIndex {
            kind,
            slots,
            shift: 64 - cap.trailing_zeros(),
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
        let shift = self.shift;
        for &b in bases.iter().take(PREFETCH_DISTANCE) {
            if b != INVALID_KEY {
                prefetch(&slots[hash(b, shift)]);
            }
        }
        for i in 0..bases.len() {
            if let Some(&ahead) = bases.get(i + PREFETCH_DISTANCE) {
                if ahead != INVALID_KEY {
                    prefetch(&slots[hash(ahead, shift)]);
                }
            }
            let base = bases[i];
            rows[i] = if base == INVALID_KEY {
                NOT_FOUND
            } else {
                let mut s = hash(base, shift);
                loop {
                    let slot = slots[s];
                    if slot == EMPTY {
                        break NOT_FOUND;
                    }
                    if slot >> ROW_BITS == base {
                        let row = (slot & ROW_MASK) as u32;
                        on_hit(row);
                        break row;
                    }
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

    #[test]
    fn finds_every_key_and_misses_others() {
        let values = ids(10_000);
        let index = HashIndex::build(IdKind::MyNumber, &values).unwrap();
        for (row, &v) in values.iter().enumerate() {
            assert_eq!(index.get(v), Some(row as u32));
        }
        let missing = IdKind::MyNumber.with_check_digit(5);
        assert_eq!(index.get(missing), None);
        let mut bases: Vec<u64> = values.iter().map(|&v| v / 10).collect();
        bases.push(INVALID_KEY);
        bases.push(missing / 10);
        let mut rows = vec![0u32; bases.len()];
        index.probe_chunk(&bases, &mut rows);
        assert_eq!(
            rows[..10_000]
                .iter()
                .enumerate()
                .filter(|(i, &r)| *i as u32 != r)
                .count(),
            0
        );
        assert_eq!(&rows[10_000..], &[NOT_FOUND, NOT_FOUND]);
    }

    #[test]
    fn duplicates_are_named() {
        let mut values = ids(100);
        values[70] = values[3];
        let err = HashIndex::build(IdKind::MyNumber, &values).unwrap_err();
        assert!(matches!(err, JukiError::DuplicateIdentifier(_)));
        assert!(err.to_string().contains("rows 3 and 70"), "{err}");
    }

    #[test]
    fn persisted_slots_round_trip() {
        let values = ids(1000);
        let index = HashIndex::build(IdKind::MyNumber, &values).unwrap();
        let again =
            HashIndex::from_slots(IdKind::MyNumber, index.slots().clone(), values.len()).unwrap();
        assert_eq!(again.get(values[500]), Some(500));
        let short = ScalarBuffer::from(vec![EMPTY; 8]);
        assert!(HashIndex::from_slots(IdKind::MyNumber, short, 1000).is_err());
    }
}
