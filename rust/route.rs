//! Routing for a sharded registry (`juki_engine.distributed`): which shard holds the resident an
//! identifier names. The shards hold contiguous ranges of person ids; the router keeps, per
//! identifier kind, the registry's index from identifier to person id (the same quotiented
//! slots as [`HashIndex`]: ~16 bytes a resident and kind at the nation's load) and the first
//! person id of each shard. A key that names no one (or is invalid) goes to shard 0, which
//! answers it as the single engine would: not found, or why it is invalid.

use arrow_array::Array;
use rayon::prelude::*;

use crate::error::{JukiError, Result};
use crate::ids::IdKind;
use crate::index::{HashIndex, NOT_FOUND};
use crate::query::parse_keys;

/// Claims routed per probe pass (as the query kernels chunk theirs).
const CHUNK: usize = 4096;

pub struct Router {
    my_number: HashIndex,
    resident_code: HashIndex,
    /// The first person id of each shard, ascending, from 0.
    firsts: Vec<u32>,
}

impl Router {
    /// A router over the identifiers of persons `0..n` (`my_number[p]`, `resident_code[p]`),
    /// shards starting at `firsts` (ascending, the first 0).
    pub fn new(my_number: &[u64], resident_code: &[u64], firsts: Vec<u32>) -> Result<Router> {
        if my_number.len() != resident_code.len() {
            return Err(JukiError::InvalidInput(format!(
                "routes: {} My Numbers and {} resident codes",
                my_number.len(),
                resident_code.len()
            )));
        }
        if firsts.first() != Some(&0)
            || firsts.windows(2).any(|w| w[0] >= w[1])
            || firsts
                .last()
                .is_some_and(|&f| f as usize >= my_number.len().max(1))
            || firsts.len() > u8::MAX as usize
        {
            return Err(JukiError::InvalidInput(
                "routes: shards must start at person 0, ascending, within the persons".into(),
            ));
        }
        let (mn, rc) = rayon::join(
            || HashIndex::build(IdKind::MyNumber, my_number),
            || HashIndex::build(IdKind::ResidentCode, resident_code),
        );
        Ok(Router {
            my_number: mn?,
            resident_code: rc?,
            firsts,
        })
    }

    /// The shard of each key of `keys` (`kind`'s identifiers); 0 for a key of no one.
    pub fn route(&self, kind: IdKind, keys: &dyn Array) -> Result<Vec<u8>> {
        let index = match kind {
            IdKind::MyNumber => &self.my_number,
            IdKind::ResidentCode => &self.resident_code,
            other => {
                return Err(JukiError::InvalidInput(format!(
                    "a claim is routed by my_number or resident_code, not {}",
                    other.name()
                )))
            }
        };
        // Keys of a type the engine does not take are the single engine's to refuse: shard 0.
        let Ok(parsed) = parse_keys(kind, keys, 0) else {
            return Ok(vec![0; keys.len()]);
        };
        let mut out = vec![0u8; keys.len()];
        out.par_chunks_mut(CHUNK)
            .zip(parsed.bases.par_chunks(CHUNK))
            .for_each(|(out, bases)| {
                let mut rows = [NOT_FOUND; CHUNK];
                let rows = &mut rows[..bases.len()];
                index.probe_chunk(bases, rows);
                for (o, &row) in out.iter_mut().zip(rows.iter()) {
                    if row != NOT_FOUND {
                        *o = (self.firsts.partition_point(|&f| f <= row) - 1) as u8;
                    }
                }
            });
        Ok(out)
    }

    pub fn memory_bytes(&self) -> usize {
        self.my_number.memory_bytes() + self.resident_code.memory_bytes()
    }
}
