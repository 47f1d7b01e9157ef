//! Identifiers and their check digits: My Number (個人番号), resident code (住民票コード),
//! local-government code (全国地方公共団体コード) and corporate number (法人番号).
//!
//! Identifiers are strings at every boundary (leading zeros are significant); inside the engine a
//! valid identifier is held as the `u64` of its digits. Parsing is strict — exactly the right
//! number of ASCII digits with a valid check digit. [`normalize`] is the one lenient entry point:
//! it folds full-width digits and drops hyphen/space separators, and says what it changed.

use crate::error::{echo, JukiError, Result, ECHO_CHARS};

/// The kinds of identifier the registry knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    /// 個人番号: 11 digits + check digit (総務省令第85号 第5条).
    MyNumber,
    /// 住民票コード: 10 digits + check digit, same modulus-11 scheme as My Number.
    ResidentCode,
    /// 全国地方公共団体コード: 5 digits + check digit.
    LocalGovernment,
    /// 法人番号: check digit first, then 12 digits.
    Corporate,
}

impl IdKind {
    /// The field name used in messages and column names.
    pub fn name(self) -> &'static str {
        match self {
            IdKind::MyNumber => "my_number",
            IdKind::ResidentCode => "resident_code",
            IdKind::LocalGovernment => "local_government_code",
            IdKind::Corporate => "corporate_number",
        }
    }

    /// Total number of digits, check digit included.
    pub fn digits(self) -> usize {
        match self {
            IdKind::MyNumber => 12,
            IdKind::ResidentCode => 11,
            IdKind::LocalGovernment => 6,
            IdKind::Corporate => 13,
        }
    }

    /// Parse a kind from its field name (as used by `by=` arguments).
    pub fn from_name(name: &str) -> Result<IdKind> {
        match name {
            "my_number" => Ok(IdKind::MyNumber),
            "resident_code" => Ok(IdKind::ResidentCode),
            "local_government_code" | "municipality_code" => Ok(IdKind::LocalGovernment),
            "corporate_number" => Ok(IdKind::Corporate),
            other => Err(JukiError::InvalidInput(format!(
                "unknown identifier kind '{}': expected my_number, resident_code, \
                 local_government_code or corporate_number",
                echo(other.as_bytes())
            ))),
        }
    }

    /// Number of base digits (the identifier without its check digit).
    pub fn base_len(self) -> usize {
        self.digits() - 1
    }

    /// The weights of the base digits, most significant first. Every kind's check digit is a
    /// function ([`IdKind::finish`]) of the weighted digit sum.
    pub fn weights(self) -> &'static [u32] {
        // My Number: 6,5,4,3,2,7,6,5,4,3,2 (総務省令第85号 第5条); the resident code uses the same
        // modulus-11 scheme over its 10 digits, i.e. the last ten of those weights.
        const MOD11: [u32; 11] = [6, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2];
        // Corporate number: Q = 1 for odd n, 2 for even n, n counted from the rightmost digit.
        const CORPORATE: [u32; 12] = [2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1];
        match self {
            IdKind::MyNumber => &MOD11,
            IdKind::ResidentCode => &MOD11[1..],
            IdKind::LocalGovernment => &[6, 5, 4, 3, 2],
            IdKind::Corporate => &CORPORATE,
        }
    }

    /// The check digit for a weighted digit sum.
    #[inline(always)]
    pub fn finish(self, sum: u32) -> u8 {
        match self {
            IdKind::MyNumber | IdKind::ResidentCode => {
                let r = sum % 11;
                if r <= 1 {
                    0
                } else {
                    (11 - r) as u8
                }
            }
            IdKind::LocalGovernment => ((11 - sum % 11) % 10) as u8,
            IdKind::Corporate => (9 - sum % 9) as u8,
        }
    }

    /// The value of a base given as exactly `base_len()` ASCII digits, or None.
    pub fn parse_base(self, b: &[u8]) -> Option<u64> {
        (b.len() == self.base_len() && b.iter().all(u8::is_ascii_digit))
            .then(|| b.iter().fold(0u64, |v, &c| v * 10 + (c - b'0') as u64))
    }

    /// The check digit for `base`, given as its base digits (most significant first).
    pub fn check_digit_of_digits(self, digits: &[u8]) -> u8 {
        debug_assert_eq!(digits.len(), self.base_len());
        self.finish(
            digits
                .iter()
                .zip(self.weights())
                .map(|(&d, &w)| d as u32 * w)
                .sum(),
        )
    }

    /// The check digit for a base held as an integer (`0 <= base < 10^base_len`).
    #[inline]
    pub fn check_digit(self, base: u64) -> u8 {
        let sum = match self {
            // Three digits at a time from tables: 3 dependent divisions instead of 11.
            IdKind::MyNumber | IdKind::ResidentCode => {
                let top = if self == IdKind::MyNumber {
                    &MOD11_TOP2
                } else {
                    &MOD11_TOP1
                };
                let (lo, mid, hi) = (base % 1000, base / 1000 % 1000, base / 1_000_000 % 1000);
                MOD11_432[lo as usize] as u32
                    + MOD11_765[mid as usize] as u32
                    + MOD11_432[hi as usize] as u32
                    + top[(base / 1_000_000_000) as usize % 1000] as u32
            }
            _ => {
                let mut x = base;
                let mut sum = 0;
                for &w in self.weights().iter().rev() {
                    sum += (x % 10) as u32 * w;
                    x /= 10;
                }
                sum
            }
        };
        self.finish(sum)
    }

    /// The full identifier value for a base: the check digit appended (or, for corporate
    /// numbers, prepended).
    pub fn with_check_digit(self, base: u64) -> u64 {
        let c = self.check_digit(base) as u64;
        match self {
            IdKind::Corporate => c * 10u64.pow(12) + base,
            _ => base * 10 + c,
        }
    }

    /// Whether an integer value is a valid identifier of this kind.
    pub fn is_valid_value(self, value: u64) -> bool {
        self.check_value(value).is_ok()
    }

    /// The base of a valid value (the value without its check digit); the index key.
    pub fn base_of(self, value: u64) -> u64 {
        match self {
            IdKind::Corporate => value % 10u64.pow(12),
            _ => value / 10,
        }
    }

    /// Render a value with its leading zeros.
    pub fn format(self, value: u64) -> String {
        format!("{:0width$}", value, width = self.digits())
    }

    /// Parse strictly: exactly `digits()` ASCII digits with a valid check digit.
    pub fn parse(self, s: &str) -> Result<u64> {
        self.parse_bytes(s.as_bytes())
            .map_err(|why| self.error(s, why))
    }

    /// Parse strictly in one pass over the bytes (digits, value and weighted sum together);
    /// returns a short reason on failure, allocating nothing.
    #[inline(always)]
    pub fn parse_bytes(self, b: &[u8]) -> std::result::Result<u64, Reason> {
        if b.len() != self.digits() {
            return Err(Reason::Length(b.len()));
        }
        let (check_at, base) = match self {
            IdKind::Corporate => (0, &b[1..]),
            _ => (b.len() - 1, &b[..b.len() - 1]),
        };
        let mut v = 0u64;
        let mut sum = 0u32;
        for (&c, &w) in base.iter().zip(self.weights()) {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                return Err(Reason::NotDigit);
            }
            v = v * 10 + d as u64;
            sum += d as u32 * w;
        }
        let check = b[check_at].wrapping_sub(b'0');
        if check > 9 {
            return Err(Reason::NotDigit);
        }
        let expected = self.finish(sum);
        if check != expected {
            return Err(Reason::CheckDigit(expected));
        }
        Ok(match self {
            IdKind::Corporate => check as u64 * 10u64.pow(12) + v,
            _ => v * 10 + check as u64,
        })
    }

    /// Validate an integer key (as from a numpy array).
    #[inline]
    pub fn check_value(self, v: u64) -> std::result::Result<u64, Reason> {
        if v >= 10u64.pow(self.digits() as u32) {
            return Err(Reason::TooLarge);
        }
        let (base, check) = match self {
            IdKind::Corporate => (v % 10u64.pow(12), v / 10u64.pow(12)),
            _ => (v / 10, v % 10),
        };
        let expected = self.check_digit(base);
        if check != expected as u64 {
            return Err(Reason::CheckDigit(expected));
        }
        Ok(v)
    }

    /// A full error for a rejected value.
    pub fn error(self, value: &str, why: Reason) -> JukiError {
        JukiError::InvalidIdentifier(self.describe(value.as_bytes(), why))
    }

    /// The message naming the value (as [`echo`] shows it: at most a few dozen characters)
    /// and the reason it was rejected. Reads a bounded prefix of `value`, whatever its length.
    pub fn describe(self, value: &[u8], why: Reason) -> String {
        let name = self.name();
        let n = self.digits();
        let shown = echo(value);
        // Whole values this short are counted in characters; a longer one in bytes, unread.
        let short = value.len() <= 4 * ECHO_CHARS;
        match why {
            Reason::Length(_) if short && !value.is_ascii() => {
                self.describe(value, Reason::NotDigit)
            }
            Reason::Length(got) if short => {
                format!("{name} '{shown}': must be exactly {n} ASCII digits, got {got} characters")
            }
            Reason::Length(got) => {
                format!("{name} '{shown}': must be exactly {n} ASCII digits, got {got} bytes")
            }
            Reason::NotDigit => format!(
                "{name} '{shown}': must be exactly {n} ASCII digits \
                 (full-width digits and separators are not accepted; use normalize)"
            ),
            Reason::CheckDigit(expected) => {
                format!("{name} '{shown}': wrong check digit, expected {expected}")
            }
            Reason::TooLarge => format!("{name} {shown}: more than {n} digits"),
            Reason::Negative => format!("{name} {shown}: negative"),
            Reason::Null => format!("{name} is null"),
        }
    }
}

/// Weighted sums of three digits (most significant first) for each value 000–999.
const fn group_sums(w: [u32; 3]) -> [u16; 1000] {
    let mut t = [0u16; 1000];
    let mut i = 0;
    while i < 1000 {
        t[i] =
            ((i / 100) as u32 * w[0] + (i / 10 % 10) as u32 * w[1] + (i % 10) as u32 * w[2]) as u16;
        i += 1;
    }
    t
}

// The modulus-11 weights 6,5 | 4,3,2 | 7,6,5 | 4,3,2 in groups of three digits from the right;
// the resident code's 10 digits drop the leading 6.
static MOD11_432: [u16; 1000] = group_sums([4, 3, 2]);
static MOD11_765: [u16; 1000] = group_sums([7, 6, 5]);
static MOD11_TOP2: [u16; 1000] = group_sums([0, 6, 5]);
static MOD11_TOP1: [u16; 1000] = group_sums([0, 0, 5]);

/// Why an identifier was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Wrong number of bytes.
    Length(usize),
    /// A byte that is not an ASCII digit.
    NotDigit,
    /// The check digit does not match; holds the expected one.
    CheckDigit(u8),
    /// An integer key with more digits than the identifier has.
    TooLarge,
    /// A negative integer key.
    Negative,
    /// A null key.
    Null,
}

/// What [`normalize`] changed, so callers can say so.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Normalized {
    /// The canonical identifier: ASCII digits only.
    pub value: String,
    /// Full-width digits were folded to ASCII.
    pub folded_full_width: bool,
    /// Hyphens or spaces were removed.
    pub removed_separators: bool,
}

/// Lenient parsing for human-typed identifiers: full-width digits (０–９) become ASCII, hyphens
/// (-, ‐, −, －, ー) and spaces (ASCII, full-width) are dropped; the result must then be a valid
/// identifier. Anything else is rejected with the value named.
pub fn normalize(kind: IdKind, s: &str) -> Result<Normalized> {
    let mut out = Normalized::default();
    for ch in s.chars() {
        match ch {
            '0'..='9' => out.value.push(ch),
            '０'..='９' => {
                out.value
                    .push(char::from(b'0' + (ch as u32 - '０' as u32) as u8));
                out.folded_full_width = true;
            }
            '-' | '‐' | '−' | '－' | 'ー' | ' ' | '\u{3000}' => out.removed_separators = true,
            other => {
                return Err(JukiError::InvalidIdentifier(format!(
                    "{} '{s}': character '{other}' is neither a digit nor a separator",
                    kind.name()
                )))
            }
        }
    }
    kind.parse_bytes(out.value.as_bytes())
        .map_err(|why| kind.error(s, why))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn my_number_vectors() {
        for ok in ["123456789018", "023456789013", "614106526000"] {
            assert!(IdKind::MyNumber.parse(ok).is_ok(), "{ok}");
        }
        for bad in ["123456789010", "111111111111"] {
            let e = IdKind::MyNumber.parse(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
            assert!(e.to_string().contains("check digit"), "{e}");
        }
        assert_eq!(IdKind::MyNumber.check_digit(12345678901), 8);
    }

    #[test]
    fn resident_code_weights_are_the_documented_ones() {
        // weights 5,4,3,2,7,6,5,4,3,2 left to right
        let digits = [1u8, 2, 3, 4, 5, 6, 7, 8, 9, 0];
        let sum: u32 = digits
            .iter()
            .zip([5u32, 4, 3, 2, 7, 6, 5, 4, 3, 2])
            .map(|(&d, w)| d as u32 * w)
            .sum();
        let r = sum % 11;
        let expected = if r <= 1 { 0 } else { 11 - r } as u8;
        assert_eq!(
            IdKind::ResidentCode.check_digit_of_digits(&digits),
            expected
        );
    }

    #[test]
    fn table_sums_equal_digit_sums() {
        for kind in [IdKind::MyNumber, IdKind::ResidentCode] {
            let mut x = 0x2545_F491_4F6C_DD1Du64;
            for _ in 0..10_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let base = x % 10u64.pow(kind.base_len() as u32);
                let s = format!("{:0w$}", base, w = kind.base_len());
                let digits: Vec<u8> = s.bytes().map(|b| b - b'0').collect();
                assert_eq!(
                    kind.check_digit(base),
                    kind.check_digit_of_digits(&digits),
                    "{s}"
                );
            }
        }
    }

    #[test]
    fn local_government_and_corporate() {
        assert_eq!(IdKind::LocalGovernment.check_digit(16201), 9);
        assert!(IdKind::LocalGovernment.parse("162019").is_ok());
        assert!(IdKind::LocalGovernment.parse("162018").is_err());
        // 国税庁's corporate number
        assert_eq!(IdKind::Corporate.check_digit(12050002), 7);
        assert!(IdKind::Corporate.parse("7000012050002").is_ok());
        assert!(IdKind::Corporate.parse("6000012050002").is_err());
    }

    #[test]
    fn strictness_and_normalize() {
        assert!(matches!(
            IdKind::MyNumber.parse_bytes(b"12345678901"),
            Err(Reason::Length(11))
        ));
        assert!(IdKind::MyNumber
            .parse_bytes("１２３４５６７８９０１８".as_bytes())
            .is_err());
        let n = normalize(IdKind::MyNumber, "１２３４-５６７８-９０１８").unwrap();
        assert_eq!(n.value, "123456789018");
        assert!(n.folded_full_width && n.removed_separators);
        assert!(normalize(IdKind::MyNumber, "1234a5678901").is_err());
        assert!(normalize(IdKind::MyNumber, "1234 5678 9010").is_err());
    }

    #[test]
    fn leading_zeros_round_trip() {
        let v = IdKind::MyNumber.parse("023456789013").unwrap();
        assert_eq!(IdKind::MyNumber.format(v), "023456789013");
    }
}
