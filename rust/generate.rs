//! Synthetic registry generation (合成データ), deterministic from a seed and parallel.
//!
//! The Python side prepares a plan (real municipalities and towns, surnames with their real
//! frequencies and readings, popular given names); this module draws every resident from it.
//! Each row draws from its own counter-based random stream, so the result does not depend on the
//! thread count. Identifiers are unique by construction: row r gets the r-th element of a keyed
//! pseudo-random permutation (a Feistel network with cycle walking) of all identifier bases.
//! Card states and statuses are exact per municipality: a permutation of the municipality's rows
//! picks which residents hold them.

use arrow_array::{
    Array, BooleanArray, Date32Array, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow_buffer::{BooleanBuffer, NullBuffer};
use arrow_schema::DataType;
use rayon::prelude::*;

use crate::error::{JukiError, Result};
use crate::ids::IdKind;
use crate::index::MAX_ROWS;
use crate::memory::HugeVec;
use crate::storage::{Columns, Dictionaries, RegistryData};

/// The registry's "today" for ages and status dates: 2026-01-01 (days since 1970-01-01). Fixed so
/// that a seed always gives the same registry.
pub const REFERENCE_DATE: i32 = 20_454;

/// Share of each municipality's rows with each non-resident status.
const DECEASED_RATE: f64 = 0.008;
const ABROAD_RATE: f64 = 0.003;
const REMOVED_RATE: f64 = 0.0005;

/// Japan's age structure (2016, thousands per 5-year band from 0–4 to 100–104).
const AGE_BANDS: [u32; 21] = [
    5000, 5300, 5600, 6000, 6100, 6400, 7200, 8100, 9700, 8700, 7900, 7600, 8600, 9800, 7800, 6300,
    5000, 3300, 1500, 400, 70,
];

/// What the generator draws from (see `juki_engine.synthetic`).
pub struct Plan {
    /// code, name, prefecture, population, card_applied, card_issued, town_start, town_end.
    pub municipalities: RecordBatch,
    /// name, has_chome.
    pub towns: RecordBatch,
    /// name, kana, weight.
    pub family_names: RecordBatch,
    /// name, kana, sex.
    pub given_names: RecordBatch,
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, table: &str, name: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .ok_or_else(|| {
            JukiError::InvalidInput(format!("plan table '{table}' has no column '{name}'"))
        })?
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| {
            JukiError::InvalidInput(format!(
                "plan table '{table}' column '{name}' has the wrong type ({})",
                batch
                    .column_by_name(name)
                    .map(|c| c.data_type().clone())
                    .unwrap_or(DataType::Null)
            ))
        })
}

/// SplitMix64: the per-row counter-based random stream.
struct Rng(u64);

impl Rng {
    fn for_row(seed: u64, stream: u64, row: u64) -> Rng {
        Rng(mix(seed
            ^ mix(
                stream.wrapping_add(row.wrapping_mul(0xD1B5_4A32_D192_ED03))
            )))
    }

    #[inline]
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in [0, n) (n > 0), by multiply-shift.
    #[inline]
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
}

#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A keyed pseudo-random permutation of [0, domain).
pub struct Permutation {
    half_bits: u32,
    keys: [u64; 4],
    domain: u64,
}

impl Permutation {
    /// A permutation of [0, domain) keyed by `key`.
    pub fn new(domain: u64, key: u64) -> Permutation {
        let bits = 64 - domain.saturating_sub(1).leading_zeros();
        let half_bits = bits.div_ceil(2).max(1);
        let keys = [mix(key ^ 1), mix(key ^ 2), mix(key ^ 3), mix(key ^ 4)];
        Permutation {
            half_bits,
            keys,
            domain,
        }
    }

    fn round_trip(&self, v: u64) -> u64 {
        let mask = (1u64 << self.half_bits) - 1;
        let (mut l, mut r) = (v >> self.half_bits, v & mask);
        for k in self.keys {
            (l, r) = (r, l ^ (mix(r ^ k) & mask));
        }
        (l << self.half_bits) | r
    }

    /// The image of `x` (< domain); cycle walking keeps it inside the domain.
    pub fn apply(&self, x: u64) -> u64 {
        let mut v = self.round_trip(x);
        while v >= self.domain {
            v = self.round_trip(v);
        }
        v
    }
}

/// Share `total` out in proportion to `weights` by largest remainder (ties to the lower index),
/// so the shares sum to `total` exactly.
pub fn apportion(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u128 = weights.iter().map(|&w| w as u128).sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let exact: Vec<(u64, u128)> = weights
        .iter()
        .map(|&w| {
            let x = total as u128 * w as u128;
            ((x / sum) as u64, x % sum)
        })
        .collect();
    let mut out: Vec<u64> = exact.iter().map(|e| e.0).collect();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| exact[b].1.cmp(&exact[a].1).then(a.cmp(&b)));
    let leftover = total - out.iter().sum::<u64>();
    for &i in order.iter().take(leftover as usize) {
        out[i] += 1;
    }
    out
}

/// 番地 dictionary: first the 丁目 forms (for towns with 丁目), then the 番地 forms.
fn block_dictionary() -> (StringArray, u32, u32) {
    let mut v = Vec::new();
    for chome in 1..=5 {
        for ban in 1..=25 {
            for go in 1..=20 {
                v.push(format!("{chome}丁目{ban}番{go}号"));
            }
        }
    }
    let chome_forms = v.len() as u32;
    for ban in 1..=300 {
        v.push(format!("{ban}番地"));
        for go in 1..=9 {
            v.push(format!("{ban}番地{go}"));
        }
    }
    let banchi_forms = v.len() as u32 - chome_forms;
    (StringArray::from(v), chome_forms, banchi_forms)
}

/// Per-municipality counts that the permutation turns into statuses and card states.
struct Quota {
    card_issued: u64,
    card_any: u64,
    removed_from: u64,
    abroad_from: u64,
    deceased_from: u64,
}

/// Generate a registry from a plan.
pub fn generate(plan: &Plan, seed: u64) -> Result<RegistryData> {
    let m = &plan.municipalities;
    let code: &StringArray = column(m, "municipalities", "code")?;
    let population: &UInt64Array = column(m, "municipalities", "population")?;
    let applied: &UInt64Array = column(m, "municipalities", "card_applied")?;
    let issued: &UInt64Array = column(m, "municipalities", "card_issued")?;
    let town_start: &UInt32Array = column(m, "municipalities", "town_start")?;
    let town_end: &UInt32Array = column(m, "municipalities", "town_end")?;
    let muni_name: &StringArray = column(m, "municipalities", "name")?;
    let prefecture: &StringArray = column(m, "municipalities", "prefecture")?;
    let town_name: &StringArray = column(&plan.towns, "towns", "name")?;
    let has_chome: &BooleanArray = column(&plan.towns, "towns", "has_chome")?;
    let family_name: &StringArray = column(&plan.family_names, "family_names", "name")?;
    let family_kana: &StringArray = column(&plan.family_names, "family_names", "kana")?;
    let family_weight: &UInt64Array = column(&plan.family_names, "family_names", "weight")?;
    let given_name: &StringArray = column(&plan.given_names, "given_names", "name")?;
    let given_kana: &StringArray = column(&plan.given_names, "given_names", "kana")?;
    let given_sex: &arrow_array::UInt8Array = column(&plan.given_names, "given_names", "sex")?;

    if m.num_rows() > u16::MAX as usize {
        return Err(JukiError::InvalidInput(format!(
            "{} municipalities exceed the limit of {}",
            m.num_rows(),
            u16::MAX
        )));
    }
    let mut starts = Vec::with_capacity(m.num_rows() + 1);
    let mut total = 0u64;
    for i in 0..m.num_rows() {
        IdKind::LocalGovernment
            .parse(code.value(i))
            .map_err(|e| JukiError::InvalidInput(format!("plan municipality row {i}: {e}")))?;
        let (ts, te) = (town_start.value(i), town_end.value(i));
        if ts >= te || te as usize > town_name.len() {
            return Err(JukiError::InvalidInput(format!(
                "plan municipality row {i} ({}): town range {ts}..{te} is empty or outside the \
                 {} towns",
                code.value(i),
                town_name.len()
            )));
        }
        let pop = population.value(i);
        let card_any = issued.value(i) + applied.value(i);
        if card_any > pop {
            return Err(JukiError::InvalidInput(format!(
                "plan municipality row {i} ({}): {card_any} card holders exceed its population {pop}",
                code.value(i)
            )));
        }
        starts.push(total);
        total += pop;
    }
    starts.push(total);
    let n = total as usize;
    if n > MAX_ROWS {
        return Err(JukiError::InvalidInput(format!(
            "population {n} exceeds the registry's limit of {MAX_ROWS}"
        )));
    }
    // Statuses are shared out over the whole registry, so a small registry spread over many
    // municipalities still has its share of each.
    let pops = population.values();
    let share = |rate: f64| apportion((total as f64 * rate).round() as u64, pops);
    let (deceased, abroad, removed) = (
        share(DECEASED_RATE),
        share(ABROAD_RATE),
        share(REMOVED_RATE),
    );
    let quotas: Vec<Quota> = (0..m.num_rows())
        .map(|i| {
            let pop = pops[i];
            let card_any = issued.value(i) + applied.value(i);
            let free = pop - card_any;
            let deceased = deceased[i].min(free);
            let abroad = abroad[i].min(free - deceased);
            let removed = removed[i].min(free - deceased - abroad);
            Quota {
                card_issued: issued.value(i),
                card_any,
                deceased_from: pop - deceased,
                abroad_from: pop - deceased - abroad,
                removed_from: pop - deceased - abroad - removed,
            }
        })
        .collect();
    let mut family_cumulative = Vec::with_capacity(family_weight.len());
    let mut acc = 0u64;
    for w in family_weight.values() {
        acc += w;
        family_cumulative.push(acc);
    }
    if acc == 0 {
        return Err(JukiError::InvalidInput(
            "plan has no surname with a weight".into(),
        ));
    }
    let given_by_sex: [Vec<u32>; 2] = [1u8, 2].map(|s| {
        (0..given_sex.len() as u32)
            .filter(|&i| given_sex.value(i as usize) == s)
            .collect()
    });
    if given_by_sex.iter().any(|v| v.is_empty()) {
        return Err(JukiError::InvalidInput(
            "plan needs given names for both sexes".into(),
        ));
    }
    let age_cumulative: Vec<u32> = AGE_BANDS
        .iter()
        .scan(0u32, |a, &w| {
            *a += w;
            Some(*a)
        })
        .collect();
    let age_total = *age_cumulative.last().expect("bands");
    let (block_dict, chome_forms, banchi_forms) = block_dictionary();

    let my_number_perm = Permutation::new(100_000_000_000, seed ^ 0x6d79);
    let resident_perm = Permutation::new(10_000_000_000, seed ^ 0x7273);
    let muni_perms: Vec<Permutation> = (0..m.num_rows())
        .map(|i| Permutation::new(population.value(i).max(1), seed ^ mix(i as u64 + 0x6361)))
        .collect();

    let mut resident_code: HugeVec<u64> = HugeVec::zeroed(n)?;
    let mut my_number: HugeVec<u64> = HugeVec::zeroed(n)?;
    let mut family: HugeVec<u32> = HugeVec::zeroed(n)?;
    let mut given: HugeVec<u32> = HugeVec::zeroed(n)?;
    let mut birth: HugeVec<i32> = HugeVec::zeroed(n)?;
    let mut sex: HugeVec<u8> = HugeVec::zeroed(n)?;
    let mut muni: HugeVec<u16> = HugeVec::zeroed(n)?;
    let mut town: HugeVec<u32> = HugeVec::zeroed(n)?;
    let mut block: HugeVec<u32> = HugeVec::zeroed(n)?;
    let mut status: HugeVec<u8> = HugeVec::zeroed(n)?;
    let mut status_date: HugeVec<i32> = HugeVec::zeroed(n)?;
    let mut card: HugeVec<u8> = HugeVec::zeroed(n)?;

    const CHUNK: usize = 1 << 15;
    let chunks = resident_code.as_mut_slice().par_chunks_mut(CHUNK).zip(
        my_number.as_mut_slice().par_chunks_mut(CHUNK).zip(
            family.as_mut_slice().par_chunks_mut(CHUNK).zip(
                given.as_mut_slice().par_chunks_mut(CHUNK).zip(
                    birth.as_mut_slice().par_chunks_mut(CHUNK).zip(
                        sex.as_mut_slice().par_chunks_mut(CHUNK).zip(
                            muni.as_mut_slice().par_chunks_mut(CHUNK).zip(
                                town.as_mut_slice().par_chunks_mut(CHUNK).zip(
                                    block.as_mut_slice().par_chunks_mut(CHUNK).zip(
                                        status.as_mut_slice().par_chunks_mut(CHUNK).zip(
                                            status_date
                                                .as_mut_slice()
                                                .par_chunks_mut(CHUNK)
                                                .zip(card.as_mut_slice().par_chunks_mut(CHUNK)),
                                        ),
                                    ),
                                ),
                            ),
                        ),
                    ),
                ),
            ),
        ),
    );
    chunks.enumerate().for_each(
        |(c, (rc, (mn, (fa, (gi, (bi, (sx, (mu, (to, (bl, (st, (sd, ca))))))))))))| {
            let first = (c * CHUNK) as u64;
            let mut mi = starts.partition_point(|&s| s <= first) - 1;
            for j in 0..rc.len() {
                let row = first + j as u64;
                while row >= starts[mi + 1] {
                    mi += 1;
                }
                let mut rng = Rng::for_row(seed, 0x726f_7773, row);
                rc[j] = IdKind::ResidentCode.with_check_digit(resident_perm.apply(row));
                mn[j] = IdKind::MyNumber.with_check_digit(my_number_perm.apply(row));
                let draw = rng.below(age_total as u64) as u32;
                let band = age_cumulative.partition_point(|&a| a <= draw);
                let age_days = (band as u64 * 5 * 365 + rng.below(5 * 365 + 1)) as i32;
                bi[j] = REFERENCE_DATE - age_days - 1;
                let age = age_days / 365;
                let p_male = match age {
                    0..=59 => 0.512,
                    60..=79 => 0.47,
                    80..=89 => 0.38,
                    _ => 0.25,
                };
                let is_male = ((rng.next() >> 11) as f64 / (1u64 << 53) as f64) < p_male;
                sx[j] = if is_male { 1 } else { 2 };
                let pool = &given_by_sex[usize::from(!is_male)];
                gi[j] = pool[rng.below(pool.len() as u64) as usize];
                let pick = rng.below(acc);
                fa[j] = family_cumulative.partition_point(|&c| c <= pick) as u32;
                mu[j] = mi as u16;
                let (ts, te) = (town_start.value(mi), town_end.value(mi));
                let t = ts + rng.below((te - ts) as u64) as u32;
                to[j] = t;
                bl[j] = if has_chome.value(t as usize) {
                    rng.below(chome_forms as u64) as u32
                } else {
                    chome_forms + rng.below(banchi_forms as u64) as u32
                };
                let q = &quotas[mi];
                let p = muni_perms[mi].apply(row - starts[mi]);
                ca[j] = if p < q.card_issued {
                    2
                } else if p < q.card_any {
                    1
                } else {
                    0
                };
                st[j] = if p >= q.deceased_from {
                    2
                } else if p >= q.abroad_from {
                    1
                } else if p >= q.removed_from {
                    3
                } else {
                    0
                };
                if st[j] != 0 {
                    let since = rng.below(5 * 365) as i32 + 1;
                    sd[j] = (REFERENCE_DATE - since).max(bi[j]);
                }
            }
        },
    );
    let status = status.into_buffer();
    let valid = BooleanBuffer::collect_bool(n, |i| status[i] != 0);
    let cols = Columns {
        resident_code: resident_code.into_buffer(),
        my_number: my_number.into_buffer(),
        family: family.into_buffer(),
        given: given.into_buffer(),
        birth_date: birth.into_buffer(),
        sex: sex.into_buffer(),
        municipality: muni.into_buffer(),
        town: town.into_buffer(),
        block: block.into_buffer(),
        status,
        status_date: Date32Array::new(status_date.into_buffer(), Some(NullBuffer::from(valid))),
        card: card.into_buffer(),
    };
    let dicts = Dictionaries {
        family_name: family_name.clone(),
        family_name_kana: family_kana.clone(),
        given_name: given_name.clone(),
        given_name_kana: given_kana.clone(),
        municipality_code: code.clone(),
        municipality_name: muni_name.clone(),
        prefecture: prefecture.clone(),
        address_town: town_name.clone(),
        address_block: block_dict,
    };
    RegistryData::new(cols, dicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_a_bijection() {
        for domain in [1u64, 2, 3, 1000, 4097] {
            let p = Permutation::new(domain, 42);
            let mut seen: Vec<u64> = (0..domain).map(|x| p.apply(x)).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..domain).collect::<Vec<_>>());
        }
    }

    #[test]
    fn apportion_is_exact_and_proportional() {
        assert_eq!(apportion(10, &[1, 1, 1]), vec![4, 3, 3]);
        assert_eq!(apportion(7, &[0, 5, 0, 5]), vec![0, 4, 0, 3]);
        let w: Vec<u64> = (1..=1000).collect();
        assert_eq!(apportion(12_345, &w).iter().sum::<u64>(), 12_345);
        assert_eq!(apportion(5, &[0, 0]), vec![0, 0]);
    }

    #[test]
    fn blocks_have_both_forms() {
        let (d, chome, banchi) = block_dictionary();
        assert_eq!(d.len() as u32, chome + banchi);
        assert_eq!(d.value(0), "1丁目1番1号");
        assert_eq!(d.value(chome as usize), "1番地");
    }
}
