//! Strict validation of JSON that is spliced into the answer byte for byte: RFC 8259 grammar,
//! UTF-8 throughout, surrogate pairs in `\u` escapes, and a nesting limit, in one pass with no
//! allocation. What it accepts, serde_json's `Value` accepts too, but for numbers beyond an
//! f64's range: valid JSON, passed on as written (JavaScript reads them as `Infinity`).
//!
//! Built for the hot path: every upstream answer in the default layout goes through here and
//! nowhere else, so it replaces a serde pass plus a separate depth pass (and catches invalid
//! UTF-8 inside strings, which serde's ignoring deserializer lets through).

use std::fmt;

/// Why a body is not acceptable JSON, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub problem: Problem,
    /// Byte offset of the problem.
    pub at: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    NotUtf8,
    TooDeep(usize),
    ExpectedValue,
    ExpectedKey,
    ExpectedColon,
    ExpectedCommaOrBrace,
    ExpectedCommaOrBracket,
    UnexpectedEnd,
    ControlCharacter,
    InvalidEscape,
    LoneSurrogate,
    InvalidNumber,
    TrailingCharacters,
}

impl Problem {
    fn text(self) -> &'static str {
        match self {
            Problem::NotUtf8 => "invalid UTF-8",
            Problem::TooDeep(_) => "nesting too deep",
            Problem::ExpectedValue => "expected value",
            Problem::ExpectedKey => "expected a string key",
            Problem::ExpectedColon => "expected `:`",
            Problem::ExpectedCommaOrBrace => "expected `,` or `}`",
            Problem::ExpectedCommaOrBracket => "expected `,` or `]`",
            Problem::UnexpectedEnd => "unexpected end of input",
            Problem::ControlCharacter => "control character in a string",
            Problem::InvalidEscape => "invalid escape",
            Problem::LoneSurrogate => "lone surrogate in a \\u escape",
            Problem::InvalidNumber => "invalid number",
            Problem::TrailingCharacters => "trailing characters",
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problem {
            Problem::TooDeep(limit) => write!(f, "body nests deeper than {limit} levels"),
            problem => write!(
                f,
                "body is not JSON: {} at byte {}",
                problem.text(),
                self.at
            ),
        }
    }
}

/// The deepest nesting [`check`] can follow: one bit per open container.
pub const DEPTH_CAPACITY: usize = 128;

/// Whether `json` is one complete JSON text nesting at most `max_depth` (capped at
/// [`DEPTH_CAPACITY`]) arrays and objects.
pub fn check(json: &[u8], max_depth: usize) -> Result<(), Invalid> {
    if let Err(e) = std::str::from_utf8(json) {
        return Err(Invalid {
            problem: Problem::NotUtf8,
            at: e.valid_up_to(),
        });
    }
    Checker {
        json,
        at: 0,
        open: Open::default(),
        max_depth: max_depth.min(DEPTH_CAPACITY),
    }
    .run()
}

/// The open containers as a bit stack (1 = object, 0 = array).
#[derive(Default)]
struct Open {
    bits: u128,
    depth: usize,
}

impl Open {
    fn in_object(&self) -> bool {
        self.bits & 1 == 1
    }
}

struct Checker<'a> {
    json: &'a [u8],
    at: usize,
    open: Open,
    max_depth: usize,
}

/// Whether a byte ends a run of plain string content: `"`, `\` or a control character.
#[inline(always)]
fn ends_plain_run(byte: u8) -> bool {
    byte == b'"' || byte == b'\\' || byte < 0x20
}

/// Where the plain content of a string starting at `at` ends: the first `"`, `\` or control
/// character, or the end of the text. Eight bytes at a time while none of them ends it (the
/// `.wasm` is built for size, so this loop is written to be cheap as it stands).
#[inline(always)]
fn plain_run_end(json: &[u8], mut at: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = json.get(at..at + 8) {
        let word = u64::from_le_bytes(<[u8; 8]>::try_from(chunk).unwrap_or_default());
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        // Per byte: zero after the XOR means that byte matched; below 0x20 is a control
        // character. Each term is non-zero in HIGHS exactly when some byte qualifies.
        let stops = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (word.wrapping_sub(ONES * 0x20) & !word);
        if stops & HIGHS != 0 {
            break;
        }
        at += 8;
    }
    while let Some(&byte) = json.get(at) {
        if ends_plain_run(byte) {
            break;
        }
        at += 1;
    }
    at
}

impl Checker<'_> {
    fn run(mut self) -> Result<(), Invalid> {
        self.skip_whitespace();
        'value: loop {
            match self.peek() {
                Some(b'{') => {
                    self.push(true)?;
                    self.skip_whitespace();
                    if self.peek() == Some(b'}') {
                        self.at += 1;
                        self.pop();
                    } else {
                        self.key()?;
                        continue 'value;
                    }
                }
                Some(b'[') => {
                    self.push(false)?;
                    self.skip_whitespace();
                    if self.peek() == Some(b']') {
                        self.at += 1;
                        self.pop();
                    } else {
                        continue 'value;
                    }
                }
                Some(b'"') => self.string()?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(_) => return Err(self.fail(Problem::ExpectedValue)),
                None => return Err(self.fail(Problem::UnexpectedEnd)),
            }
            // After a value: close containers until a `,` asks for the next value.
            loop {
                self.skip_whitespace();
                if self.open.depth == 0 {
                    return match self.peek() {
                        None => Ok(()),
                        Some(_) => Err(self.fail(Problem::TrailingCharacters)),
                    };
                }
                let object = self.open.in_object();
                match self.peek() {
                    Some(b',') => {
                        self.at += 1;
                        self.skip_whitespace();
                        if object {
                            self.key()?;
                        }
                        continue 'value;
                    }
                    Some(b'}') if object => {
                        self.at += 1;
                        self.pop();
                    }
                    Some(b']') if !object => {
                        self.at += 1;
                        self.pop();
                    }
                    None => return Err(self.fail(Problem::UnexpectedEnd)),
                    Some(_) if object => return Err(self.fail(Problem::ExpectedCommaOrBrace)),
                    Some(_) => return Err(self.fail(Problem::ExpectedCommaOrBracket)),
                }
            }
        }
    }

    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.json.get(self.at).copied()
    }

    fn fail(&self, problem: Problem) -> Invalid {
        Invalid {
            problem,
            at: self.at,
        }
    }

    #[inline(always)]
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    #[inline(always)]
    fn push(&mut self, object: bool) -> Result<(), Invalid> {
        if self.open.depth >= self.max_depth {
            return Err(self.fail(Problem::TooDeep(self.max_depth)));
        }
        self.open.bits = (self.open.bits << 1) | u128::from(object);
        self.open.depth += 1;
        self.at += 1;
        Ok(())
    }

    #[inline(always)]
    fn pop(&mut self) {
        self.open.bits >>= 1;
        self.open.depth = self.open.depth.saturating_sub(1);
    }

    /// An object key and its colon, leaving `at` on the value.
    fn key(&mut self) -> Result<(), Invalid> {
        if self.peek() != Some(b'"') {
            return Err(self.fail(match self.peek() {
                None => Problem::UnexpectedEnd,
                Some(_) => Problem::ExpectedKey,
            }));
        }
        self.string()?;
        self.skip_whitespace();
        match self.peek() {
            Some(b':') => self.at += 1,
            None => return Err(self.fail(Problem::UnexpectedEnd)),
            Some(_) => return Err(self.fail(Problem::ExpectedColon)),
        }
        self.skip_whitespace();
        Ok(())
    }

    /// A string from its opening quote. UTF-8 was checked for the whole text already.
    fn string(&mut self) -> Result<(), Invalid> {
        self.at += 1;
        loop {
            self.at = plain_run_end(self.json, self.at);
            match self.peek() {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(());
                }
                Some(b'\\') => self.escape()?,
                Some(_) => return Err(self.fail(Problem::ControlCharacter)),
                None => return Err(self.fail(Problem::UnexpectedEnd)),
            }
        }
    }

    /// One escape from its backslash; a high surrogate must be followed by a low one.
    fn escape(&mut self) -> Result<(), Invalid> {
        let start = self.at;
        self.at += 1;
        match self.peek() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.at += 1;
                Ok(())
            }
            Some(b'u') => {
                let unit = self.hex4(start)?;
                match unit {
                    0xD800..=0xDBFF => {
                        let low_start = self.at;
                        if self.json.get(self.at..self.at + 2) != Some(b"\\u") {
                            return Err(Invalid {
                                problem: Problem::LoneSurrogate,
                                at: start,
                            });
                        }
                        self.at += 1;
                        match self.hex4(low_start)? {
                            0xDC00..=0xDFFF => Ok(()),
                            _ => Err(Invalid {
                                problem: Problem::LoneSurrogate,
                                at: start,
                            }),
                        }
                    }
                    0xDC00..=0xDFFF => Err(Invalid {
                        problem: Problem::LoneSurrogate,
                        at: start,
                    }),
                    _ => Ok(()),
                }
            }
            None => Err(self.fail(Problem::UnexpectedEnd)),
            Some(_) => Err(Invalid {
                problem: Problem::InvalidEscape,
                at: start,
            }),
        }
    }

    /// The four hex digits after `u` (with `at` on the `u`), as a UTF-16 code unit.
    fn hex4(&mut self, escape_start: usize) -> Result<u32, Invalid> {
        let digits = self.json.get(self.at + 1..self.at + 5).ok_or(Invalid {
            problem: Problem::UnexpectedEnd,
            at: self.json.len(),
        })?;
        let mut unit = 0u32;
        for &d in digits {
            let value = char::from(d).to_digit(16).ok_or(Invalid {
                problem: Problem::InvalidEscape,
                at: escape_start,
            })?;
            unit = unit * 16 + value;
        }
        self.at += 5;
        Ok(unit)
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Result<(), Invalid> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.digits(),
            None => return Err(self.fail(Problem::UnexpectedEnd)),
            Some(_) => return Err(self.fail(Problem::InvalidNumber)),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.required_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.required_digits()?;
        }
        Ok(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
    }

    fn required_digits(&mut self) -> Result<(), Invalid> {
        match self.peek() {
            Some(b'0'..=b'9') => {
                self.digits();
                Ok(())
            }
            None => Err(self.fail(Problem::UnexpectedEnd)),
            Some(_) => Err(self.fail(Problem::InvalidNumber)),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Invalid> {
        let end = self.at + word.len();
        match self.json.get(self.at..end) {
            Some(found) if found == word => {
                self.at = end;
                Ok(())
            }
            _ => Err(self.fail(Problem::ExpectedValue)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn ok(text: &str) -> bool {
        check(text.as_bytes(), 127).is_ok()
    }

    #[test]
    fn accepts_what_rfc_8259_allows() {
        for text in [
            "null",
            " true ",
            "false",
            "0",
            "-0",
            "12.5e-3",
            "1E+9",
            "-7.0",
            r#""""#,
            r#""a\"b\\c\/d\b\f\n\r\t""#,
            r#""\u00e9\u20AC\ud83d\ude00""#,
            "\"é € 😀\"",
            "[]",
            "{}",
            "[ 1 , [ ] , { } ]",
            r#"{"a":{"b":[1,{"c":null}]},"d":"e"}"#,
            "\n\t\r {\"k\" : [true,false] } \n",
        ] {
            assert!(ok(text), "{text:?} should be accepted");
        }
    }

    #[test]
    fn refuses_what_it_does_not() {
        for text in [
            "",
            " ",
            "nul",
            "True",
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "+1",
            "0x10",
            "NaN",
            "[1,]",
            "[,1]",
            "{,}",
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{a:1}"#,
            r#"{"a":}"#,
            "[1 2]",
            "[1}",
            r#"{"a":1]"#,
            "[",
            "{",
            r#""abc"#,
            "\"tab\there\"",
            r#""\x""#,
            r#""\u12""#,
            r#""\u12G4""#,
            r#""\ud800""#,
            r#""\ud800x""#,
            r#""\ud800\u0041""#,
            r#""\udc00""#,
            "1 2",
            "{} x",
            "[]]",
        ] {
            assert!(!ok(text), "{text:?} should be refused");
        }
    }

    #[test]
    fn refuses_invalid_utf8_inside_strings() {
        let error = check(b"{\"a\":\"\xff\xfe\"}", 127).unwrap_err();
        assert_eq!(error.problem, Problem::NotUtf8);
        assert_eq!(error.at, 6);
    }

    #[test]
    fn nesting_is_limited() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(check(deep(127).as_bytes(), 127).is_ok());
        let error = check(deep(128).as_bytes(), 127).unwrap_err();
        assert_eq!(error.problem, Problem::TooDeep(127));
        assert_eq!(error.to_string(), "body nests deeper than 127 levels");
        let objects = format!("{}1{}", r#"{"a":"#.repeat(128), "}".repeat(128));
        assert!(check(objects.as_bytes(), 128).is_ok());
        assert!(
            check(objects.as_bytes(), 1000).is_ok(),
            "capped at capacity"
        );
        let too_many = format!("{}1{}", r#"{"a":"#.repeat(129), "}".repeat(129));
        assert!(check(too_many.as_bytes(), 1000).is_err());
    }

    #[test]
    fn string_stops_are_found_at_every_offset_of_a_word() {
        for len in 0..20 {
            for stop in ["\"", "\\n", "\u{1}", "\t", "\u{1f}"] {
                let content = format!("{}{}{}", "é".repeat(len / 2), "x".repeat(len % 2), stop);
                let text = format!("[\"{content}\"]");
                let expected = stop == "\\n";
                assert_eq!(ok(&text), expected, "{text:?}");
            }
            let clean = format!("[\"{}\u{7f}\u{20}~\"]", "a".repeat(len));
            assert!(ok(&clean), "{clean:?}");
        }
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        let text = format!(r#"["{}"]"#, "[{".repeat(200));
        assert!(ok(&text));
    }

    #[test]
    fn errors_say_what_and_where() {
        let error = check(br#"{"a":1,}"#, 127).unwrap_err();
        assert_eq!(
            error.to_string(),
            "body is not JSON: expected a string key at byte 7"
        );
        let error = check(b"[1 2]", 127).unwrap_err();
        assert_eq!(
            error.to_string(),
            "body is not JSON: expected `,` or `]` at byte 3"
        );
    }

    #[test]
    fn agrees_with_serde_json_on_what_it_accepts() {
        // Whatever passes here must parse as a serde_json Value: the client's parser.
        for text in [
            r#"{"a":[1,2.5,-3e2,"x\u0041\ud834\udd1e"],"b":{"c":null}}"#,
            r#"[[[[["deep"]]]]]"#,
        ] {
            assert!(ok(text));
            assert!(serde_json::from_str::<serde_json::Value>(text).is_ok());
        }
    }
}
