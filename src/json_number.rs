//! JSON numbers read exactly, as the upstream wrote them (SPEC §4: a value keeps its meaning
//! and its spelling).
//!
//! serde_json's `arbitrary_precision` keeps each number's text, so a number passes through the
//! filter with the digits it arrived with. Where the filter must *compute* with numbers —
//! `sort_by` and `min`/`max` compare them, `for_each` and `join` match them, `sum` adds them —
//! this module does it on the decimal text itself, never through an `f64`: a 30-digit id
//! compares, matches and adds exactly, and `1.10`, `11E-1` and `1.1` are the same value.
//!
//! serde_json keeps a number's digits but writes its exponent marker its own way (`1E+2` and
//! `1e2` both become `1e+2`); [`parse`] puts back the spelling the body used, so every body the
//! filter parses keeps every number exactly as written.
//!
//! It exists because the usual crates do not fit a filter that reads untrusted bodies:
//! `rust_decimal` stops at 28 digits, and `bigdecimal` would allocate `10^exponent`-sized
//! integers for `1e999999999` (a one-line denial of service). Here comparing allocates
//! nothing and adding is bounded by [`MAX_SUM_DIGITS`]; `bigdecimal` is the oracle of the tests.

use serde_json::{Number, Value};
use std::cmp::Ordering;

/// Parses JSON text into a [`Value`] whose numbers are spelled exactly as in `text`: object
/// keys in their order (serde_json's `preserve_order`), numbers with their digits
/// (`arbitrary_precision`) and their exponent marker as written. Every body the filter
/// parses (upstream bodies, the client's body, the configuration) is read through here.
///
/// `text` must not repeat a key in one object: serde_json keeps one of the two values, and the
/// exponent markers are put back by position, so a number after a repeated key may keep
/// serde_json's spelling (`1e+2` for `1E+2`; never another value). Upstream bodies are checked
/// by [`crate::json_check::check`] first; other text goes through [`parse_unique`].
///
/// # Errors
/// serde_json's, when `text` is not JSON.
pub fn parse(text: &[u8]) -> Result<Value, serde_json::Error> {
    let mut value: Value = serde_json::from_slice(text)?;
    if has_exponent(&value) {
        restore_exponents(&mut value, text);
    }
    Ok(value)
}

/// [`parse`] for text nothing has checked yet (the client's body, the configuration): a key
/// repeated in one object is refused, as it is in upstream bodies (SPEC §4: parsers disagree on
/// which of two equal keys counts, so the filter would read one value and the client's service
/// another), and only then is every number's spelling guaranteed.
///
/// # Errors
/// serde_json's message when `text` is not JSON; `duplicate key "a" at byte 7` (the repeat's
/// offset) when an object repeats a key.
pub fn parse_unique(text: &[u8]) -> Result<Value, String> {
    let value = parse(text).map_err(|e| e.to_string())?;
    match crate::json_check::check(text, crate::json_check::DEPTH_CAPACITY) {
        Ok(()) => Ok(value),
        Err(invalid) => Err(match invalid.problem {
            crate::json_check::Problem::DuplicateKey(key) => {
                format!("duplicate key {key:?} at byte {}", invalid.at)
            }
            _ => invalid.to_string(),
        }),
    }
}

/// Whether some number is in exponent notation (the only spelling serde_json rewrites).
fn has_exponent(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.as_str().contains('e'),
        Value::Array(items) => items.iter().any(has_exponent),
        Value::Object(map) => map.values().any(has_exponent),
        _ => false,
    }
}

/// Gives each number of `value` the text it has in `text`: the numbers of both come in
/// document order (objects keep their order), so the n-th number of one is the n-th of the
/// other. A number is replaced only when serde_json reads its original text as the value it
/// holds, so nothing but the spelling can change.
fn restore_exponents(value: &mut Value, text: &[u8]) {
    let mut originals = number_tokens(text);
    visit_numbers(value, &mut |number| {
        let Some(original) = originals.next() else {
            return;
        };
        if original.contains(['e', 'E']) && original != number.as_str() {
            let reread = original.parse::<Number>().ok();
            if reread.as_ref() == Some(&*number) {
                // The constructor is serde_json's own (doc-hidden; its tests use it): the only
                // way to hold a spelling serde_json would not write itself. The text was just
                // read back as this very number, so it is a valid JSON number.
                *number = Number::from_string_unchecked(original.to_string());
            }
        }
    });
}

fn visit_numbers(value: &mut Value, f: &mut impl FnMut(&mut Number)) {
    match value {
        Value::Number(n) => f(n),
        Value::Array(items) => items.iter_mut().for_each(|item| visit_numbers(item, f)),
        Value::Object(map) => map.values_mut().for_each(|item| visit_numbers(item, f)),
        _ => {}
    }
}

/// The number tokens of JSON text in document order (strings skipped).
fn number_tokens(text: &[u8]) -> impl Iterator<Item = &str> {
    let mut at = 0;
    std::iter::from_fn(move || {
        while let Some(&byte) = text.get(at) {
            match byte {
                b'"' => {
                    at += 1;
                    while let Some(&b) = text.get(at) {
                        at += if b == b'\\' { 2 } else { 1 };
                        if b == b'"' {
                            break;
                        }
                    }
                }
                b'-' | b'0'..=b'9' => {
                    let start = at;
                    while text
                        .get(at)
                        .is_some_and(|b| b.is_ascii_digit() || b"+-.eE".contains(b))
                    {
                        at += 1;
                    }
                    return text
                        .get(start..at)
                        .and_then(|t| std::str::from_utf8(t).ok());
                }
                _ => at += 1,
            }
        }
        None
    })
}

/// The longest exact sum `sum` writes, in digits; a longer one is not computed (a sum of
/// `1e400` and `1e-400` would need 801). Far beyond any real amount or id.
pub const MAX_SUM_DIGITS: usize = 1000;

/// A JSON number's text read as `±digits × 10^exponent`, without copying the digits.
#[derive(Debug, Clone, Copy)]
struct Decimal<'a> {
    negative: bool,
    /// Integer and fraction digits as written, leading zeros included (`0.05` → `005`).
    int: &'a [u8],
    frac: &'a [u8],
    /// The written exponent (`1E+2` → 2), clamped to ±[`EXPONENT_LIMIT`].
    exponent: i64,
}

/// Exponents beyond this are clamped: far outside what any upstream sends, and small enough
/// that exponent arithmetic never overflows.
const EXPONENT_LIMIT: i64 = 1 << 40;

impl<'a> Decimal<'a> {
    /// Reads JSON number text (`-?int(.frac)?([eE][+-]?exp)?`); `None` if it is not one.
    fn parse(text: &'a str) -> Option<Decimal<'a>> {
        let bytes = text.as_bytes();
        let (negative, rest) = match bytes.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, bytes),
        };
        let int_len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let (int, rest) = rest.split_at(int_len);
        let (frac, rest) = match rest.split_first() {
            Some((b'.', after)) => {
                let len = after.iter().take_while(|b| b.is_ascii_digit()).count();
                after.split_at(len)
            }
            _ => (&[][..], rest),
        };
        let exponent = match rest.split_first() {
            None => 0,
            Some((b'e' | b'E', after)) => {
                let (negative, digits) = match after.split_first() {
                    Some((b'-', d)) => (true, d),
                    Some((b'+', d)) => (false, d),
                    _ => (false, after),
                };
                if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                    return None;
                }
                let magnitude = digits.iter().try_fold(0i64, |n, d| {
                    Some((n * 10 + i64::from(d - b'0')).min(EXPONENT_LIMIT))
                })?;
                if negative {
                    -magnitude
                } else {
                    magnitude
                }
            }
            Some(_) => return None,
        };
        if int.is_empty() {
            return None;
        }
        Some(Decimal {
            negative,
            int,
            frac,
            exponent,
        })
    }

    /// Every written digit, most significant first.
    fn digits(&self) -> impl Iterator<Item = u8> + Clone + 'a {
        self.int.iter().chain(self.frac).map(|d| d - b'0')
    }

    /// The significant digits: no leading or trailing zeros (empty for zero).
    fn significant(&self) -> impl Iterator<Item = u8> + Clone + 'a {
        let leading = self.digits().take_while(|d| *d == 0).count();
        let trailing = self
            .int
            .iter()
            .chain(self.frac)
            .rev()
            .take_while(|d| **d == b'0')
            .count();
        let total = self.int.len() + self.frac.len();
        let keep = total.saturating_sub(leading + trailing);
        self.digits().skip(leading).take(keep)
    }

    fn is_zero(&self) -> bool {
        self.digits().all(|d| d == 0)
    }

    /// The power of ten of the most significant digit, plus one: `123` → 3, `0.05` → -1.
    fn magnitude(&self) -> i64 {
        let leading = self.digits().take_while(|d| *d == 0).count();
        let int_len = i64::try_from(self.int.len()).unwrap_or(i64::MAX);
        let leading = i64::try_from(leading).unwrap_or(i64::MAX);
        int_len - leading + self.exponent
    }

    /// The power of ten of the last written digit: `1.10` → -2, `1E+2` → 2.
    fn last_place(&self) -> i64 {
        self.exponent - i64::try_from(self.frac.len()).unwrap_or(i64::MAX)
    }

    fn compare_magnitude(&self, other: &Decimal<'_>) -> Ordering {
        match (self.is_zero(), other.is_zero()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            (false, false) => {}
        }
        self.magnitude()
            .cmp(&other.magnitude())
            // Same magnitude: digit by digit; with trailing zeros gone, the longer is larger.
            .then_with(|| self.significant().cmp(other.significant()))
    }

    fn compare(&self, other: &Decimal<'_>) -> Ordering {
        let sign = |d: &Decimal<'_>| match (d.is_zero(), d.negative) {
            (true, _) => 0,
            (false, true) => -1,
            (false, false) => 1,
        };
        match sign(self).cmp(&sign(other)) {
            Ordering::Equal if sign(self) < 0 => other.compare_magnitude(self),
            Ordering::Equal => self.compare_magnitude(other),
            different => different,
        }
    }
}

/// Compares two JSON numbers by value, exactly, whatever their size or spelling (`-0` = `0`,
/// `1.10` = `11E-1`). A text that is not a JSON number (never the case for a parsed
/// [`Number`]) sorts after every number.
pub fn compare(a: &Number, b: &Number) -> Ordering {
    compare_text(a.as_str(), b.as_str())
}

fn compare_text(a: &str, b: &str) -> Ordering {
    match (Decimal::parse(a), Decimal::parse(b)) {
        (Some(a), Some(b)) => a.compare(&b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// JSON equality as `for_each` and `join` use it: numbers by value (a 30-digit id matches
/// itself and only itself, `7` matches `7.0`), anything else as serde_json compares it, so
/// `7` and `"7"` stay different.
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => compare(a, b) == Ordering::Equal,
        _ => a == b,
    }
}

/// Why a sum has no exact value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inexact {
    /// The exact result would need more than [`MAX_SUM_DIGITS`] digits.
    TooManyDigits,
}

impl Inexact {
    /// The reason `_meta.derive` reports (README: derived fields).
    pub fn reason(self) -> &'static str {
        match self {
            Inexact::TooManyDigits => "not_exact",
        }
    }
}

/// The exact sum of JSON numbers, in plain decimal notation with as many fraction digits as
/// the input with the most (`1.10 + 2` → `3.10`, `1E+2 + 1` → `101`); integers of any size
/// add exactly. `Ok(None)` for no numbers.
///
/// # Errors
/// [`Inexact::TooManyDigits`] when the result would be longer than [`MAX_SUM_DIGITS`]: the
/// sum is then not written at all rather than rounded.
pub fn sum<'a>(numbers: impl Iterator<Item = &'a Number>) -> Result<Option<Number>, Inexact> {
    let decimals: Vec<Decimal<'a>> = numbers.filter_map(|n| Decimal::parse(n.as_str())).collect();
    if decimals.is_empty() {
        return Ok(None);
    }
    // Every written digit lands in a column between the lowest written place and the place
    // above the highest written digit; carries grow the result past it.
    let low = decimals.iter().map(Decimal::last_place).min().unwrap_or(0);
    let high = decimals
        .iter()
        .map(|d| d.exponent + i64::try_from(d.int.len()).unwrap_or(i64::MAX))
        .max()
        .unwrap_or(0);
    // Digits the written result spans: integer places (at least one) and fraction places.
    let extent = high.max(1).saturating_sub(low.min(0));
    if extent >= i64::try_from(MAX_SUM_DIGITS).unwrap_or(i64::MAX) {
        return Err(Inexact::TooManyDigits);
    }
    let width = usize::try_from(high.saturating_sub(low)).unwrap_or(0);
    let mut positive = vec![0u64; width];
    let mut negative = vec![0u64; width];
    for decimal in &decimals {
        let columns = if decimal.negative {
            &mut negative
        } else {
            &mut positive
        };
        // Least significant digit first; its column is its place above `low`.
        let first = usize::try_from(decimal.last_place() - low).unwrap_or(0);
        let digits: Vec<u8> = decimal.digits().collect();
        for (offset, digit) in digits.iter().rev().enumerate() {
            if let Some(column) = columns.get_mut(first + offset) {
                *column += u64::from(*digit);
            }
        }
    }
    let positive = carry(positive);
    let negative = carry(negative);
    let (is_negative, magnitude) = match compare_digits(&positive, &negative) {
        Ordering::Less => (true, subtract(&negative, &positive)),
        _ => (false, subtract(&positive, &negative)),
    };
    let scale = usize::try_from(-low.min(0)).unwrap_or(0);
    let text = write_plain(is_negative, &magnitude, low.max(0), scale);
    Ok(text.parse::<Number>().ok())
}

/// Column sums to digits (least significant first); the carry grows the number.
fn carry(columns: Vec<u64>) -> Vec<u8> {
    let mut digits = Vec::with_capacity(columns.len() + 2);
    let mut carry = 0u64;
    for column in columns {
        let value = column + carry;
        digits.push(u8::try_from(value % 10).unwrap_or(0));
        carry = value / 10;
    }
    while carry > 0 {
        digits.push(u8::try_from(carry % 10).unwrap_or(0));
        carry /= 10;
    }
    digits
}

/// Compares little-endian digit vectors by value.
fn compare_digits(a: &[u8], b: &[u8]) -> Ordering {
    let len = a.len().max(b.len());
    (0..len)
        .rev()
        .map(|i| {
            let x = a.get(i).copied().unwrap_or(0);
            let y = b.get(i).copied().unwrap_or(0);
            x.cmp(&y)
        })
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// `a - b` for little-endian digits with `a >= b`.
fn subtract(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len());
    let mut borrow = 0u8;
    for (i, &x) in a.iter().enumerate() {
        let y = b.get(i).copied().unwrap_or(0) + borrow;
        if x >= y {
            out.push(x - y);
            borrow = 0;
        } else {
            out.push(x + 10 - y);
            borrow = 1;
        }
    }
    out
}

/// `±digits × 10^zeros` written with `scale` fraction digits (the digits' lowest places are
/// the fraction when `scale > 0`), no leading zeros, and `0` rather than `-0`.
fn write_plain(negative: bool, digits: &[u8], zeros: i64, scale: usize) -> String {
    let mut written: Vec<u8> = digits.iter().rev().map(|d| b'0' + d).collect();
    written.extend(std::iter::repeat_n(
        b'0',
        usize::try_from(zeros).unwrap_or(0),
    ));
    // At least one integer digit before the point.
    while written.len() < scale + 1 {
        written.insert(0, b'0');
    }
    let int_len = written.len() - scale;
    let leading = written
        .iter()
        .take(int_len.saturating_sub(1))
        .take_while(|d| **d == b'0')
        .count();
    let (int, frac) = written.split_at(int_len);
    let int = int.get(leading..).unwrap_or(int);
    let zero = written.iter().all(|d| *d == b'0');
    let mut text = String::with_capacity(written.len() + 2);
    if negative && !zero {
        text.push('-');
    }
    text.push_str(std::str::from_utf8(int).unwrap_or("0"));
    if !frac.is_empty() {
        text.push('.');
        text.push_str(std::str::from_utf8(frac).unwrap_or(""));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use bigdecimal::BigDecimal;
    use std::str::FromStr;

    fn number(text: &str) -> Number {
        serde_json::from_str(text).unwrap()
    }

    fn cmp(a: &str, b: &str) -> Ordering {
        compare(&number(a), &number(b))
    }

    fn add(texts: &[&str]) -> Result<Option<String>, Inexact> {
        let numbers: Vec<Number> = texts.iter().map(|t| number(t)).collect();
        sum(numbers.iter()).map(|n| n.map(|n| n.to_string()))
    }

    #[test]
    fn numbers_keep_their_digits_through_serde() {
        for text in [
            "1.10",
            "1e+2",
            "-0",
            "123456789012345678901234567890",
            "1e-7",
        ] {
            assert_eq!(number(text).to_string(), text);
        }
    }

    #[test]
    fn parsing_keeps_every_spelling_and_key_order() {
        let text = r#"{"z":1,"a":[1E+2,"1E+2 in a \"string\" 5e5",-2.50e-3,1e5,{"k":7E1}],"id":123456789012345678901234567890,"p":1.10,"x":1e+2}"#;
        let value = parse(text.as_bytes()).unwrap();
        assert_eq!(serde_json::to_string(&value).unwrap(), text);
        // serde_json alone rewrites exponent markers.
        let plain: Value = serde_json::from_str(text).unwrap();
        assert!(serde_json::to_string(&plain).unwrap().contains("1e+2,"));
        assert!(parse(b"{").is_err());
    }

    #[test]
    fn unchecked_text_with_a_repeated_key_is_refused_and_spellings_hold_without_one() {
        // A repeated key drops a value, so exponent markers could no longer be matched to
        // their numbers by position (found by the json_number fuzz target).
        let repeated = br#"{"k":[1E+2,5E-3],"k":[7E-3],"n":2E+1}"#;
        assert_eq!(
            parse_unique(repeated).unwrap_err(),
            r#"duplicate key "k" at byte 17"#
        );
        let unique = br#"{"k":[1E+2,5E-3],"j":[7E-3],"n":2E+1}"#;
        assert_eq!(
            serde_json::to_vec(&parse_unique(unique).unwrap()).unwrap(),
            unique
        );
        assert!(parse_unique(b"{").unwrap_err().contains("EOF"));
    }

    #[test]
    fn comparison_is_exact_for_big_and_differently_spelled_numbers() {
        assert_eq!(
            cmp(
                "123456789012345678901234567890",
                "123456789012345678901234567891"
            ),
            Ordering::Less
        );
        assert_eq!(
            cmp("9007199254740993", "9007199254740992"),
            Ordering::Greater
        );
        assert_eq!(cmp("1.10", "1.1"), Ordering::Equal);
        assert_eq!(cmp("1E+2", "100"), Ordering::Equal);
        assert_eq!(cmp("100", "1000e-1"), Ordering::Equal);
        assert_eq!(cmp("-0", "0.000"), Ordering::Equal);
        assert_eq!(
            cmp("-9223372036854775809", "-9223372036854775808"),
            Ordering::Less
        );
        assert_eq!(cmp("-1", "0"), Ordering::Less);
        assert_eq!(cmp("0.05", "0.5"), Ordering::Less);
        assert_eq!(cmp("-0.05", "-0.5"), Ordering::Greater);
        assert_eq!(cmp("1e999999999999999999", "1e5"), Ordering::Greater);
        assert_eq!(cmp("1e-999999999999999999", "0"), Ordering::Greater);
    }

    #[test]
    fn equality_is_by_value_for_numbers_only() {
        let same = |a: &str, b: &str| {
            same_value(
                &serde_json::from_str(a).unwrap(),
                &serde_json::from_str(b).unwrap(),
            )
        };
        assert!(same(
            "123456789012345678901234567890",
            "123456789012345678901234567890"
        ));
        assert!(!same(
            "123456789012345678901234567890",
            "123456789012345678901234567891"
        ));
        assert!(same("7", "7.0"));
        assert!(!same("7", "\"7\""));
        assert!(same("\"a\"", "\"a\""));
        assert!(!same("true", "1"));
    }

    #[test]
    fn sums_are_exact_and_keep_the_finest_scale() {
        assert_eq!(add(&[]).unwrap(), None);
        assert_eq!(
            add(&["123456789012345678901234567890", "1"])
                .unwrap()
                .unwrap(),
            "123456789012345678901234567891"
        );
        assert_eq!(
            add(&["18446744073709551616", "-9223372036854775809"])
                .unwrap()
                .unwrap(),
            "9223372036854775807"
        );
        assert_eq!(add(&["1.10", "2"]).unwrap().unwrap(), "3.10");
        assert_eq!(add(&["0.1", "0.2"]).unwrap().unwrap(), "0.3");
        assert_eq!(add(&["1E+2", "1"]).unwrap().unwrap(), "101");
        assert_eq!(add(&["1.5e-3", "1"]).unwrap().unwrap(), "1.0015");
        assert_eq!(add(&["-1.25", "1.25"]).unwrap().unwrap(), "0.00");
        assert_eq!(add(&["-3", "1"]).unwrap().unwrap(), "-2");
        assert_eq!(add(&["-0"]).unwrap().unwrap(), "0");
        assert_eq!(add(&["0.5", "-0.75"]).unwrap().unwrap(), "-0.25");
        assert_eq!(
            add(&["1e600", "1e-600"]).unwrap_err(),
            Inexact::TooManyDigits
        );
        assert_eq!(
            add(&["1e999999999999", "1"]).unwrap_err(),
            Inexact::TooManyDigits
        );
    }

    /// A small deterministic generator, so the differential tests need no extra crate.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self, below: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % below
        }

        fn number(&mut self) -> String {
            let mut text = String::new();
            if self.next(2) == 0 {
                text.push('-');
            }
            let int_digits = 1 + self.next(25);
            for i in 0..int_digits {
                let digit = if i == 0 && int_digits > 1 {
                    1 + self.next(9)
                } else {
                    self.next(10)
                };
                text.push(char::from(b'0' + digit as u8));
            }
            if self.next(2) == 0 {
                text.push('.');
                for _ in 0..1 + self.next(12) {
                    text.push(char::from(b'0' + self.next(10) as u8));
                }
            }
            if self.next(3) == 0 {
                text.push(if self.next(2) == 0 { 'e' } else { 'E' });
                match self.next(3) {
                    0 => text.push('-'),
                    1 => text.push('+'),
                    _ => {}
                }
                text.push_str(&self.next(40).to_string());
            }
            text
        }
    }

    #[test]
    fn comparison_and_sum_agree_with_bigdecimal() {
        let mut random = Lcg(42);
        for _ in 0..5000 {
            let (a, b, c) = (random.number(), random.number(), random.number());
            let (x, y, z) = (
                BigDecimal::from_str(&a).unwrap(),
                BigDecimal::from_str(&b).unwrap(),
                BigDecimal::from_str(&c).unwrap(),
            );
            assert_eq!(cmp(&a, &b), x.cmp(&y), "{a} vs {b}");
            let total = add(&[&a, &b, &c]).unwrap().unwrap();
            assert_eq!(
                BigDecimal::from_str(&total).unwrap(),
                &(&x + &y) + &z,
                "{a} + {b} + {c} = {total}"
            );
        }
    }
}
