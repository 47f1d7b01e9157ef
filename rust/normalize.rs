//! Names as Japan writes them: the comparison levels of a claimed name or reading.
//!
//! - **exact**: the bytes are equal.
//! - **normalised** (names and readings): both sides are folded, then compared. Folding is
//!   Unicode NFKC (width and compatibility forms), then every space removed (NFKC has made the
//!   full-width U+3000 a U+0020), then each character mapped through the [`Folding`] table: 異体字
//!   to the first candidate of the MJ縮退マップ, then old forms to new (旧字体→新字体). The table
//!   is built from published data (`juki_engine.names`), never typed by hand, and resolved to a
//!   fixed point when it is loaded, so folding is one pass.
//! - **reading** (readings only): the normalised fold, then kana folded: hiragana to katakana,
//!   small kana to large (ァ→ア, ッ→ツ, ャ→ヤ, ヮ→ワ, ヵ→カ, ヶ→ケ), ヂ→ジ and ヅ→ズ (the 四つ仮名,
//!   which 現代仮名遣い writes alike in most words). The long-vowel mark ー is kept: whether オー
//!   stands for オウ or オオ depends on the word, so no rule folds it without a dictionary.
//!
//! A level holds two names equal when their folds at that level are equal. Folding allocates into
//! a caller's buffer only; the registry's side is folded once per dictionary value.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;

use arrow_array::{Array, StringArray};
use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};

use crate::error::{JukiError, Result};
use crate::storage::{Column, Dictionaries};

/// How closely a claimed text must agree with the stored one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Byte-for-byte equal.
    Exact,
    /// Equal once both are folded for width, spaces and character variants.
    Normalised,
    /// Readings: equal once both are also folded for kana forms.
    Reading,
}

impl Level {
    /// The levels by name, as the API and the contract spell them.
    pub const NAMES: [&'static str; 3] = ["exact", "normalised", "reading"];

    pub fn from_name(name: &str) -> Result<Level> {
        match name {
            "exact" => Ok(Level::Exact),
            "normalised" | "normalized" => Ok(Level::Normalised),
            "reading" => Ok(Level::Reading),
            other => Err(JukiError::InvalidInput(format!(
                "match level '{}' is not one of {}",
                crate::error::echo(other.as_bytes()),
                Level::NAMES.join(", ")
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        Level::NAMES[self as usize]
    }
}

/// A character folding table: each mapped character to the one it folds to. Characters of the
/// Basic Multilingual Plane (every 常用漢字, kana, and most variants) are looked up in a dense
/// table, one load each; the rest in a hash map.
#[derive(Debug, Default)]
pub struct Folding {
    /// Per BMP code point, the code point it folds to, or 0 where it does not fold.
    bmp: Vec<u32>,
    map: HashMap<char, char>,
    /// A hash of the resolved table: what a search index saved in a snapshot was folded with.
    fingerprint: u64,
}

/// The longest chain of mappings a table may hold (the published tables chain at most 3).
const MAX_CHAIN: usize = 16;

impl Folding {
    /// A table from pairs of code points (`from[i]` folds to `to[i]`), resolved to a fixed point
    /// so that one lookup folds a character all the way (a cycle folds to its least code point).
    /// Refused: a value that is not a Unicode scalar, a character mapped twice.
    pub fn new(from: &[u32], to: &[u32]) -> Result<Folding> {
        if from.len() != to.len() {
            return Err(JukiError::InvalidInput(format!(
                "a folding table needs as many targets as sources ({} and {})",
                from.len(),
                to.len()
            )));
        }
        let scalar = |cp: u32| {
            char::from_u32(cp).ok_or_else(|| {
                JukiError::InvalidInput(format!("U+{cp:04X} is not a Unicode scalar value"))
            })
        };
        let mut direct = HashMap::with_capacity(from.len());
        for (&f, &t) in from.iter().zip(to) {
            let (f, t) = (scalar(f)?, scalar(t)?);
            if f == t {
                continue;
            }
            if direct.insert(f, t).is_some() {
                return Err(JukiError::InvalidInput(format!(
                    "U+{:04X} is mapped twice in the folding table",
                    f as u32
                )));
            }
        }
        // Each character to the end of its chain. Where the published tables map characters
        // round in a cycle (one table's target is the other's source), the characters are one
        // another's variants: the cycle folds to its least code point.
        let mut map = HashMap::with_capacity(direct.len());
        for &start in direct.keys() {
            let mut path = vec![start];
            let mut at = start;
            let end = loop {
                match direct.get(&at) {
                    None => break at,
                    Some(&next) => {
                        if let Some(pos) = path.iter().position(|&c| c == next) {
                            break *path[pos..].iter().min().expect("a cycle has members");
                        }
                        if path.len() > MAX_CHAIN {
                            return Err(JukiError::InvalidInput(format!(
                                "the folding table chains U+{:04X} through more than {MAX_CHAIN} \
                                 characters",
                                start as u32
                            )));
                        }
                        path.push(next);
                        at = next;
                    }
                }
            };
            if end != start {
                map.insert(start, end);
            }
        }
        let mut bmp = vec![0u32; 0x1_0000];
        map.retain(|&from, &mut to| {
            let dense = (from as u32) < 0x1_0000;
            if dense {
                bmp[from as usize] = to as u32;
            }
            !dense
        });
        let mut rest: Vec<(u32, u32)> = map.iter().map(|(&f, &t)| (f as u32, t as u32)).collect();
        rest.sort_unstable();
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for v in bmp.iter().chain(rest.iter().flat_map(|(f, t)| [f, t])) {
            hasher.update(&v.to_le_bytes());
        }
        Ok(Folding {
            bmp,
            map,
            fingerprint: hasher.digest(),
        })
    }

    /// A hash of the table as resolved: two tables fold every text alike when it is equal.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    pub fn len(&self) -> usize {
        self.map.len() + self.bmp.iter().filter(|&&to| to != 0).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The character `c` folds to through the table (itself where it does not fold).
    #[inline(always)]
    fn char_of(&self, c: char) -> char {
        match self.bmp.get(c as usize) {
            Some(&0) => c,
            Some(&to) => char::from_u32(to).expect("built from chars"),
            None => self.map.get(&c).copied().unwrap_or(c),
        }
    }

    /// Fold `text` at `level` (see the module's documentation), appending it to `out`.
    /// [`Level::Exact`] copies the text as it is.
    pub fn fold(&self, text: &str, level: Level, out: &mut String) {
        if level == Level::Exact {
            out.push_str(text);
            return;
        }
        let start = out.len();
        let mut push = |c: char| {
            if c.is_whitespace() {
                return;
            }
            let c = self.char_of(c);
            out.push(if level == Level::Reading { kana(c) } else { c });
        };
        // Most names are NFKC already (the quick check says so from tables): no need to
        // decompose and recompose them.
        if is_nfkc_quick(text.chars()) == IsNormalized::Yes {
            text.chars().for_each(&mut push);
        } else {
            text.nfkc().for_each(&mut push);
        }
        // NFKC turns a spacing voiced mark (゛, ゜) into a space and a combining mark, which the
        // space keeps from composing: with the space gone, compose (カ゛ = ガ).
        // The composed kana is folded again (ち゛ → ヂ → ジ): the table and the kana fold are
        // fixed points, so what was folded before stays as it is.
        if out[start..].contains(['\u{3099}', '\u{309A}']) {
            let composed: String = out[start..].nfc().collect();
            out.truncate(start);
            for c in composed.chars() {
                let c = self.char_of(c);
                out.push(if level == Level::Reading { kana(c) } else { c });
            }
        }
    }
}

static FOLDING: OnceLock<Folding> = OnceLock::new();

/// Install the process's folding table (`juki_engine.names` builds it from the published
/// tables); a second install is ignored. Returns the table in force.
pub fn install(folding: Folding) -> &'static Folding {
    FOLDING.get_or_init(|| folding)
}

/// The process's folding table, or an error saying that levels above exact need one.
pub fn installed() -> Result<&'static Folding> {
    FOLDING.get().ok_or_else(|| {
        JukiError::InvalidInput(
            "no folding table is installed: juki_engine.names.install() builds it".into(),
        )
    })
}

thread_local! {
    static CLAIM: RefCell<String> = const { RefCell::new(String::new()) };
}

/// The registry's text dictionaries that claims are compared with, folded at one level: built
/// once per registry and level, read by the kernel without allocating.
pub struct FoldedText {
    pub level: Level,
    pub family_name: StringArray,
    pub family_name_kana: StringArray,
    pub given_name: StringArray,
    pub given_name_kana: StringArray,
    pub municipality_code: StringArray,
}

impl FoldedText {
    /// The folded dictionary a claimed `field` is compared with; None for a field that is not
    /// text.
    pub fn of(&self, field: Column) -> Option<&StringArray> {
        Some(match field {
            Column::FamilyName => &self.family_name,
            Column::FamilyNameKana => &self.family_name_kana,
            Column::GivenName => &self.given_name,
            Column::GivenNameKana => &self.given_name_kana,
            Column::MunicipalityCode => &self.municipality_code,
            _ => return None,
        })
    }

    pub fn build(dicts: &Dictionaries, folding: &Folding, level: Level) -> FoldedText {
        let fold = |dict: &StringArray| -> StringArray {
            let mut out = String::new();
            (0..dict.len())
                .map(|i| {
                    out.clear();
                    folding.fold(dict.value(i), level, &mut out);
                    Some(out.clone())
                })
                .collect()
        };
        FoldedText {
            level,
            family_name: fold(&dicts.family_name),
            family_name_kana: fold(&dicts.family_name_kana),
            given_name: fold(&dicts.given_name),
            given_name_kana: fold(&dicts.given_name_kana),
            municipality_code: fold(&dicts.municipality_code),
        }
    }
}

/// What a comparison above the exact level needs: the folding table and the registry's
/// dictionaries folded at each level up to the one asked for (in order).
pub struct Matching<'a> {
    pub folding: &'a Folding,
    pub folded: Vec<&'a FoldedText>,
}

/// A registry's folded dictionaries, built on first use per level and kept.
#[derive(Default)]
pub struct FoldedCache {
    levels: [OnceLock<FoldedText>; 3],
}

impl FoldedCache {
    /// Whether the dictionaries folded at `level` are built already.
    pub fn has(&self, level: Level) -> bool {
        self.levels[level as usize].get().is_some()
    }

    /// The registry's dictionaries folded at `level` (at the exact level, as they are: the same
    /// arrays, shared).
    pub fn text(&self, dicts: &Dictionaries, level: Level) -> Result<&FoldedText> {
        if level == Level::Exact {
            return Ok(self.levels[0].get_or_init(|| FoldedText {
                level,
                family_name: dicts.family_name.clone(),
                family_name_kana: dicts.family_name_kana.clone(),
                given_name: dicts.given_name.clone(),
                given_name_kana: dicts.given_name_kana.clone(),
                municipality_code: dicts.municipality_code.clone(),
            }));
        }
        let folding = installed()?;
        Ok(self.levels[level as usize].get_or_init(|| FoldedText::build(dicts, folding, level)))
    }

    /// What verify at `level` needs (None at the exact level, which folds nothing).
    pub fn matching(&self, dicts: &Dictionaries, level: Level) -> Result<Option<Matching<'_>>> {
        if level == Level::Exact {
            return Ok(None);
        }
        let folding = installed()?;
        let folded = [Level::Normalised, Level::Reading]
            .into_iter()
            .filter(|&l| l <= level)
            .map(|l| self.text(dicts, l))
            .collect::<Result<_>>()?;
        Ok(Some(Matching { folding, folded }))
    }
}

/// Whether `claimed` (bytes: a claim from this process need not be UTF-8) folds at `level` to
/// `folded` (a stored value already folded at that level). A claim that is not UTF-8 folds to
/// nothing and agrees with nothing.
pub fn folds_to(folding: &Folding, claimed: &[u8], level: Level, folded: &str) -> bool {
    let Ok(text) = std::str::from_utf8(claimed) else {
        return false;
    };
    CLAIM.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.clear();
        folding.fold(text, level, &mut buf);
        *buf == folded
    })
}

/// One character's kana fold (see [`Level::Reading`]); any other character as it is.
fn kana(c: char) -> char {
    // Hiragana ぁ..ゖ sit 0x60 below their katakana.
    let c = match c {
        '\u{3041}'..='\u{3096}' => char::from_u32(c as u32 + 0x60).expect("katakana"),
        _ => c,
    };
    match c {
        'ァ' => 'ア',
        'ィ' => 'イ',
        'ゥ' => 'ウ',
        'ェ' => 'エ',
        'ォ' => 'オ',
        'ッ' => 'ツ',
        'ャ' => 'ヤ',
        'ュ' => 'ユ',
        'ョ' => 'ヨ',
        'ヮ' => 'ワ',
        'ヵ' => 'カ',
        'ヶ' => 'ケ',
        'ヂ' => 'ジ',
        'ヅ' => 'ズ',
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pairs the published tables give for the test's names (MJ縮退マップ, first candidate,
    /// every scheme; then 旧字体→新字体).
    fn table() -> Folding {
        let pairs = [
            ('髙', '高'),
            ('﨑', '崎'),
            ('邉', '辺'),
            ('邊', '辺'),
            ('齋', '斎'),
            ('齊', '斉'),
            ('濵', '浜'),
            ('𠮷', '吉'),
            // A chain (甲→乙→丙): resolved when the table loads.
            ('甲', '乙'),
            ('乙', '丙'),
        ];
        let (from, to): (Vec<u32>, Vec<u32>) =
            pairs.iter().map(|&(f, t)| (f as u32, t as u32)).unzip();
        Folding::new(&from, &to).unwrap()
    }

    fn same(f: &Folding, level: Level, a: &str, b: &str) -> bool {
        let (mut x, mut y) = (String::new(), String::new());
        f.fold(a, level, &mut x);
        f.fold(b, level, &mut y);
        x == y
    }

    #[test]
    fn normalised_names_fold_variants_widths_and_spaces() {
        let f = table();
        let n = Level::Normalised;
        for (a, b) in [
            ("髙橋", "高橋"),
            ("山﨑", "山崎"),
            ("渡邉", "渡辺"),
            ("渡邊", "渡辺"),
            ("齋藤", "斎藤"),
            ("齊藤", "斉藤"),
            ("山田 太郎", "山田　太郎"),
            ("山田　太郎", "山田太郎"),
            ("ＡＢＣ", "ABC"),
            ("ｻﾄｳ", "サトウ"),
        ] {
            assert!(same(&f, n, a, b), "{a} = {b}");
            assert!(!same(&f, Level::Exact, a, b), "{a} ≠ {b} exactly");
        }
        assert!(
            !same(&f, n, "斎藤", "斉藤"),
            "斎藤 and 斉藤 are different names"
        );
        assert!(same(&f, n, "甲", "丙") && same(&f, n, "𠮷田", "吉田"));
        assert!(
            !same(&f, n, "さとう", "サトウ"),
            "kana forms are the reading level's"
        );
    }

    #[test]
    fn readings_fold_kana_forms_but_not_the_long_vowel_mark() {
        let f = table();
        let r = Level::Reading;
        for (a, b) in [
            ("さとう", "サトウ"),
            ("ｻﾄｳ", "さとう"),
            ("キャ", "キヤ"),
            ("ハットリ", "ハツトリ"),
            ("ちぢみ", "チジミ"),
            ("つづき", "ツズキ"),
            ("ヶ", "ケ"),
            // A spacing voiced mark, composed, then folded: ち゛ = ぢ = ジ.
            ("ち\u{309B}み", "ぢみ"),
            ("ち\u{309B}み", "ジミ"),
        ] {
            assert!(same(&f, r, a, b), "{a} = {b}");
        }
        assert!(!same(&f, r, "オーノ", "オオノ"));
        assert!(!same(&f, r, "サトウ", "サイトウ"));
    }

    #[test]
    fn a_cycle_folds_to_its_least_character_and_a_double_mapping_is_refused() {
        let cycle = Folding::new(&['乙' as u32, '甲' as u32], &['甲' as u32, '乙' as u32]).unwrap();
        // 乙 (U+4E59) is the lesser code point of the two.
        let least = "乙".to_string();
        for c in ["乙", "甲"] {
            let mut out = String::new();
            cycle.fold(c, Level::Normalised, &mut out);
            assert_eq!(out, least);
        }
        let twice = Folding::new(&['甲' as u32, '甲' as u32], &['乙' as u32, '丙' as u32]);
        assert!(matches!(twice, Err(JukiError::InvalidInput(m)) if m.contains("twice")));
        let bad = Folding::new(&[0xD800], &['甲' as u32]);
        assert!(bad.is_err());
        assert_eq!(Level::from_name("normalized").unwrap(), Level::Normalised);
        assert!(Level::from_name("fuzzy").is_err());
    }
}
