//! Routing for a sharded registry (`juki_engine.distributed`): which shard holds the resident an
//! identifier names. The shards hold contiguous ranges of person ids; the router keeps, per
//! identifier kind, a minimal perfect hash of every person's identifier (PHast, the `ph` crate:
//! ~2.2 bits a resident) and one shard byte per slot: ~1.3 bytes a resident and kind, where the
//! registry's own hash index from identifier to person id took ~16. It answers only the shard,
//! never the person, and holds no identifier.
//!
//! Building the hash takes ~45 s a kind for the nation on 2 cores, so `juki shard` builds it
//! once and saves it ([`function`]); the front end reads it and, with the identifiers, fills the
//! shard bytes, checking that every person has a slot of their own (a damaged function, or one
//! built from other identifiers, is refused).
//!
//! A minimal perfect hash gives a key that no one holds some slot: such a key goes to that
//! slot's shard, which answers it as the single engine would (not found); an invalid key goes to
//! shard 0, which says why it is invalid, as the single engine would.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::RwLock;

use arrow_array::Array;
use ph::phast;
use ph::seeds::Bits8;
use ph::GetSize;
use rayon::prelude::*;

use crate::error::{JukiError, Result};
use crate::ids::IdKind;
use crate::index::INVALID_KEY;
use crate::query::parse_keys;

/// Claims routed per parallel task.
const CHUNK: usize = 4096;
/// A slot no person has yet, while the shard bytes are filled.
const UNSET: u8 = u8::MAX;

type Slots = phast::Function<Bits8>;

/// The routing function of `kind`'s identifiers `values` (one a person), as bytes to save: a
/// minimal perfect hash of their bases. An identifier held twice is refused (the hash cannot
/// be built over it, and no shard could answer it right).
pub fn function(kind: IdKind, values: &[u64]) -> Result<Vec<u8>> {
    // Sorted to find a duplicate (the hash's build would never end on one); the build takes
    // its keys in any order.
    let mut bases: Vec<u64> = values.par_iter().map(|&v| kind.base_of(v)).collect();
    bases.par_sort_unstable();
    if bases.windows(2).any(|w| w[0] == w[1]) {
        return Err(duplicate(kind, values));
    }
    let mut bytes = Vec::new();
    if !bases.is_empty() {
        Slots::from_vec_mt(bases)
            .write(&mut bytes)
            .map_err(|e| JukiError::Io(e.to_string()))?;
    }
    Ok(bytes)
}

/// Why `values` cannot be routed: an identifier held by two persons, named as the registry's
/// own index names it.
fn duplicate(kind: IdKind, values: &[u64]) -> JukiError {
    let mut rows: Vec<(u64, usize)> = values
        .par_iter()
        .enumerate()
        .map(|(row, &v)| (kind.base_of(v), row))
        .collect();
    rows.par_sort_unstable();
    match rows.windows(2).find(|w| w[0].0 == w[1].0) {
        Some(w) => JukiError::DuplicateIdentifier(format!(
            "{} {} appears in rows {} and {}",
            kind.name(),
            kind.format(values[w[0].1]),
            w[0].1,
            w[1].1
        )),
        None => JukiError::InvalidInput(format!("routes: no {} is held twice", kind.name())),
    }
}

/// One identifier kind's routes: slot → shard.
struct Routes {
    slots: Option<Slots>,
    shard: Vec<u8>,
}

impl Routes {
    /// Routes of `kind`'s identifiers of persons `0..n` (`values[p]`) to the shards starting at
    /// `firsts`, by `function` (as [`function`] gave it for these values).
    fn new(kind: IdKind, values: &[u64], firsts: &[u32], function: &[u8]) -> Result<Routes> {
        let damaged = |why: &str| {
            JukiError::InvalidInput(format!(
                "routes: the routing function of the {}s {why}",
                kind.name()
            ))
        };
        if values.is_empty() {
            return Ok(Routes {
                slots: None,
                shard: Vec::new(),
            });
        }
        // Read from a file that is checked by its SHA-256 first; a function that still reads
        // wrong is caught below, and one whose reading panics is refused, not a crash.
        let slots = catch_unwind(AssertUnwindSafe(|| Slots::read(&mut &function[..])))
            .map_err(|_| damaged("cannot be read"))?
            .map_err(|e| damaged(&format!("cannot be read: {e}")))?;
        let slot_of: Vec<usize> = values
            .par_iter()
            .map(|&v| slots.get(&kind.base_of(v)))
            .collect();
        let mut shard = vec![UNSET; values.len()];
        for (k, &first) in firsts.iter().enumerate() {
            let end = firsts.get(k + 1).map_or(values.len(), |&f| f as usize);
            for &slot in &slot_of[first as usize..end] {
                match shard.get_mut(slot) {
                    Some(s) if *s == UNSET => *s = k as u8,
                    Some(_) => {
                        return Err(damaged(
                            "gives two persons one slot: it was not built from these routes",
                        ))
                    }
                    None => return Err(damaged("gives a slot past the persons")),
                }
            }
        }
        Ok(Routes {
            slots: Some(slots),
            shard,
        })
    }

    fn shard_of(&self, base: u64) -> u8 {
        match &self.slots {
            Some(slots) if base != INVALID_KEY => self.shard[slots.get(&base)],
            _ => 0,
        }
    }

    fn memory_bytes(&self) -> usize {
        self.slots.as_ref().map_or(0, |s| s.size_bytes()) + self.shard.len()
    }
}

pub struct Router {
    my_number: Routes,
    resident_code: Routes,
    /// Per kind (My Number, resident code), identifiers issued since the split (a birth's, a
    /// new code or number) and their shards: few, looked up before the hash, which does not
    /// know them.
    issued: [RwLock<HashMap<u64, u8>>; 2],
}

impl Router {
    /// A router over the identifiers of persons `0..n` (`my_number[p]`, `resident_code[p]`),
    /// shards starting at `firsts` (ascending, the first 0), by the routing functions built
    /// from them ([`function`]; built here where not given).
    pub fn new(
        my_number: &[u64],
        resident_code: &[u64],
        firsts: Vec<u32>,
        functions: Option<(&[u8], &[u8])>,
    ) -> Result<Router> {
        if my_number.len() != resident_code.len() {
            return Err(JukiError::InvalidInput(format!(
                "routes: {} My Numbers and {} resident codes",
                my_number.len(),
                resident_code.len()
            )));
        }
        if my_number.len() > u32::MAX as usize {
            return Err(JukiError::InvalidInput(format!(
                "routes: {} persons exceed a router's limit of 2^32",
                my_number.len()
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
        let built;
        let (mn, rc) = match functions {
            Some(given) => given,
            None => {
                built = (
                    function(IdKind::MyNumber, my_number)?,
                    function(IdKind::ResidentCode, resident_code)?,
                );
                (&built.0[..], &built.1[..])
            }
        };
        Ok(Router {
            my_number: Routes::new(IdKind::MyNumber, my_number, &firsts, mn)?,
            resident_code: Routes::new(IdKind::ResidentCode, resident_code, &firsts, rc)?,
            issued: Default::default(),
        })
    }

    fn of(&self, kind: IdKind) -> Result<(&Routes, &RwLock<HashMap<u64, u8>>)> {
        match kind {
            IdKind::MyNumber => Ok((&self.my_number, &self.issued[0])),
            IdKind::ResidentCode => Ok((&self.resident_code, &self.issued[1])),
            other => Err(JukiError::InvalidInput(format!(
                "a claim is routed by my_number or resident_code, not {}",
                other.name()
            ))),
        }
    }

    /// Route `kind`'s identifiers `values`, issued since the split, to `shards` from now on.
    pub fn add(&self, kind: IdKind, values: &[u64], shards: &[u8]) -> Result<()> {
        let (_, issued) = self.of(kind)?;
        let mut issued = issued.write().unwrap_or_else(|e| e.into_inner());
        for (&v, &k) in values.iter().zip(shards) {
            issued.insert(kind.base_of(v), k);
        }
        Ok(())
    }

    /// The shard of each key of `keys` (`kind`'s identifiers): its person's, or any shard for
    /// a key of no one (which that shard answers as not found); 0 for an invalid key.
    pub fn route(&self, kind: IdKind, keys: &dyn Array) -> Result<Vec<u8>> {
        let (routes, issued) = self.of(kind)?;
        let issued = issued.read().unwrap_or_else(|e| e.into_inner());
        // Keys of a type the engine does not take are the single engine's to refuse: shard 0.
        let Ok(parsed) = parse_keys(kind, keys, 0) else {
            return Ok(vec![0; keys.len()]);
        };
        let mut out = vec![0u8; keys.len()];
        out.par_chunks_mut(CHUNK)
            .zip(parsed.bases.par_chunks(CHUNK))
            .for_each(|(out, bases)| {
                for (o, &base) in out.iter_mut().zip(bases) {
                    *o = routes.shard_of(base);
                }
                if !issued.is_empty() {
                    for (o, base) in out.iter_mut().zip(bases) {
                        if let Some(&k) = issued.get(base) {
                            *o = k;
                        }
                    }
                }
            });
        Ok(out)
    }

    pub fn memory_bytes(&self) -> usize {
        let issued: usize = self
            .issued
            .iter()
            .map(|m| m.read().unwrap_or_else(|e| e.into_inner()).capacity() * 17)
            .sum();
        self.my_number.memory_bytes() + self.resident_code.memory_bytes() + issued
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::StringArray;

    /// `n` persons' identifiers: distinct bases spread over the space, with check digits.
    fn identifiers(kind: IdKind, n: u64, seed: u64) -> Vec<u64> {
        (0..n)
            .map(|p| kind.with_check_digit((p * 7_919 + seed) % 9_000_000_000 + 1))
            .collect()
    }

    fn text(kind: IdKind, values: &[u64]) -> StringArray {
        StringArray::from_iter_values(values.iter().map(|&v| kind.format(v)))
    }

    #[test]
    fn every_identifier_reaches_its_persons_shard() {
        let n = 50_000;
        let (mn, rc) = (
            identifiers(IdKind::MyNumber, n, 11),
            identifiers(IdKind::ResidentCode, n, 5),
        );
        let firsts = vec![0, 10_000, 30_000, 49_999];
        let router = Router::new(&mn, &rc, firsts.clone(), None).unwrap();
        let expected: Vec<u8> = (0..n as u32)
            .map(|p| (firsts.partition_point(|&f| f <= p) - 1) as u8)
            .collect();
        for (kind, values) in [(IdKind::MyNumber, &mn), (IdKind::ResidentCode, &rc)] {
            assert_eq!(router.route(kind, &text(kind, values)).unwrap(), expected);
        }
        // ~1.3 bytes a person and kind, where an index to person ids took ~16.
        let per_key = router.memory_bytes() as f64 / (2 * n) as f64;
        assert!(per_key < 1.5, "{per_key} bytes a key");
    }

    #[test]
    fn invalid_keys_go_to_shard_0_and_keys_of_no_one_to_some_shard() {
        let kind = IdKind::ResidentCode;
        let rc = identifiers(kind, 1_000, 3);
        let router = Router::new(
            &identifiers(IdKind::MyNumber, 1_000, 1),
            &rc,
            vec![0, 500],
            None,
        )
        .unwrap();
        let v = rc[0];
        let wrong_check = kind.format(v - v % 10 + (v % 10 + 1) % 10);
        let invalid = StringArray::from(vec![Some("x"), None, Some("123"), Some(&wrong_check)]);
        assert_eq!(router.route(kind, &invalid).unwrap(), [0, 0, 0, 0]);
        let strangers: Vec<u64> = identifiers(kind, 1_000, 4_000_000_000);
        let shards = router.route(kind, &text(kind, &strangers)).unwrap();
        assert!(shards.iter().all(|&s| s < 2));
        // A key column of a type the engine does not take: shard 0 refuses it as one engine.
        let numbers = arrow_array::Int32Array::from(vec![1, 2]);
        assert_eq!(router.route(kind, &numbers).unwrap(), [0, 0]);
        assert!(router.route(IdKind::Corporate, &invalid).is_err());
    }

    #[test]
    fn an_identifier_of_two_persons_is_refused_naming_their_rows() {
        let mut mn = identifiers(IdKind::MyNumber, 10_000, 1);
        mn[7_777] = mn[42];
        let rc = identifiers(IdKind::ResidentCode, 10_000, 2);
        let error = Router::new(&mn, &rc, vec![0], None)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("appears in rows 42 and 7777"), "{error}");
        assert!(Router::new(&mn[..5], &rc, vec![0], None).is_err());
        assert!(Router::new(&rc, &rc, vec![0, 0], None).is_err());
        assert!(Router::new(&rc, &rc, vec![1], None).is_err());
    }

    #[test]
    fn a_saved_function_routes_as_a_built_one_and_a_wrong_one_is_refused() {
        let n = 20_000;
        let (mn, rc) = (
            identifiers(IdKind::MyNumber, n, 1),
            identifiers(IdKind::ResidentCode, n, 2),
        );
        let saved = (
            function(IdKind::MyNumber, &mn).unwrap(),
            function(IdKind::ResidentCode, &rc).unwrap(),
        );
        // ~2.2 bits a key.
        assert!(
            saved.0.len() * 8 < 3 * n as usize,
            "{} bytes",
            saved.0.len()
        );
        let firsts = vec![0, 7_000];
        let router = Router::new(&mn, &rc, firsts.clone(), Some((&saved.0, &saved.1))).unwrap();
        let built = Router::new(&mn, &rc, firsts.clone(), None).unwrap();
        let kind = IdKind::ResidentCode;
        assert_eq!(
            router.route(kind, &text(kind, &rc)).unwrap(),
            built.route(kind, &text(kind, &rc)).unwrap()
        );
        // A function of other identifiers gives two persons one slot, or a slot past them.
        let other = function(IdKind::MyNumber, &identifiers(IdKind::MyNumber, n, 99)).unwrap();
        let error = Router::new(&mn, &rc, firsts.clone(), Some((&other, &saved.1)))
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("routing function of the my_numbers"),
            "{error}"
        );
        // Damaged bytes are refused, never a crash.
        for at in [0, 1, 5, saved.1.len() / 2, saved.1.len() - 1] {
            let mut damaged = saved.1.clone();
            damaged[at] ^= 0xFF;
            let routed = Router::new(&mn, &rc, firsts.clone(), Some((&saved.0, &damaged)));
            if let Ok(router) = routed {
                // Still a bijection onto the persons: every identifier reaches its shard.
                assert_eq!(
                    router.route(kind, &text(kind, &rc)).unwrap(),
                    built.route(kind, &text(kind, &rc)).unwrap()
                );
            }
        }
        let cut = &saved.1[..saved.1.len() / 2];
        assert!(Router::new(&mn, &rc, firsts, Some((&saved.0, cut))).is_err());
    }
}
