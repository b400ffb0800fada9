//! Strict validation of JSON that is spliced into the answer byte for byte: RFC 8259 grammar,
//! UTF-8 throughout, surrogate pairs in `\u` escapes, a nesting limit, and unique keys in
//! every object (I-JSON, RFC 7493 §2.3), in one pass. What it accepts, serde_json's `Value`
//! accepts too, but for numbers beyond an f64's range: valid JSON, passed on as written
//! (JavaScript reads them as `Infinity`).
//!
//! Built for the hot path: every upstream answer in the default layout goes through here and
//! nowhere else, so it replaces a serde pass plus a separate depth pass. It also refuses what
//! serde_json's ignoring deserializer (`from_slice::<IgnoredAny>`) lets through: invalid UTF-8
//! inside strings, lone surrogates in `\u` escapes, and nesting of any depth. It allocates
//! nothing unless the objects open at one point hold more than [`INLINE_KEYS`] keys together
//! (counting one entry per open object).
//!
//! Why duplicate keys are refused (SPEC §4, every answer has unique keys): parsers disagree on
//! `{"complete":true,"complete":false}` — some keep the first value, some the last — so a body
//! spliced as it came could mean one thing to the filter and another to the client. Keys are
//! compared after unescaping (`"a"` and `"\u0061"` are the same key), by their raw bytes when
//! neither has an escape, which is the same thing then.

use std::fmt;

/// Why a body is not acceptable JSON, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// What is wrong.
    pub problem: Problem,
    /// Byte offset of the problem.
    pub at: usize,
}

/// What is wrong with a body; [`Invalid`]'s `Display` words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Bytes that are not UTF-8 (anywhere, strings included).
    NotUtf8,
    /// The text starts with a UTF-8 byte order mark, which RFC 8259 §8.1 does not allow.
    ByteOrderMark,
    /// An object repeats a key (after unescaping): the key, unescaped. `at` is the repeat.
    DuplicateKey(Box<str>),
    /// Arrays and objects nest deeper than the limit given (the number).
    TooDeep(usize),
    /// Something other than a value where one belongs.
    ExpectedValue,
    /// Something other than a string where an object's key belongs.
    ExpectedKey,
    /// No `:` after an object's key.
    ExpectedColon,
    /// No `,` or `}` after an object's member.
    ExpectedCommaOrBrace,
    /// No `,` or `]` after an array's element.
    ExpectedCommaOrBracket,
    /// The text ends before its value is complete (or holds no value at all).
    UnexpectedEnd,
    /// An unescaped control character (below U+0020) inside a string.
    ControlCharacter,
    /// A `\` escape JSON does not have, or a `\u` without four hex digits.
    InvalidEscape,
    /// A `\u` escape of half a surrogate pair without its other half.
    LoneSurrogate,
    /// A `-`, `.` or exponent not followed by a digit (`-x`, `1.x`, `1ex`).
    InvalidNumber,
    /// More than whitespace after the value.
    TrailingCharacters,
}

impl Problem {
    fn text(&self) -> &'static str {
        match self {
            Problem::NotUtf8 => "invalid UTF-8",
            Problem::ByteOrderMark => "byte order mark",
            Problem::DuplicateKey(_) => "duplicate key",
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
        match &self.problem {
            Problem::TooDeep(limit) => write!(f, "body nests deeper than {limit} levels"),
            Problem::DuplicateKey(key) => write!(
                f,
                "body is not JSON: duplicate key {} at byte {}",
                shown_key(key),
                self.at
            ),
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
///
/// Errors: the first problem found, with its byte offset; a repeated key is reported at the
/// opening quote of its second occurrence (in an object of more than [`LINEAR_KEYS`] keys,
/// once the object is closed, so a syntax error later inside it may be reported instead).
pub fn check(json: &[u8], max_depth: usize) -> Result<(), Invalid> {
    let text = match std::str::from_utf8(json) {
        Ok(text) => text,
        Err(e) => {
            return Err(Invalid {
                problem: Problem::NotUtf8,
                at: e.valid_up_to(),
            })
        }
    };
    if json.starts_with(b"\xEF\xBB\xBF") {
        return Err(Invalid {
            problem: Problem::ByteOrderMark,
            at: 0,
        });
    }
    // Outside the checker, which stays small enough for its fields to live in registers; the
    // array is not moved after it is filled with zeros.
    let mut inline = [KeySpan::EMPTY; INLINE_KEYS];
    let mut keys = Keys::new(&mut inline);
    Checker {
        json,
        text,
        at: 0,
        open: Open::default(),
        max_depth: max_depth.min(DEPTH_CAPACITY),
        keys: &mut keys,
    }
    .run()
}

/// Keys remembered without allocating, across all the objects open at one point of the text
/// (each open object takes one entry too).
pub const INLINE_KEYS: usize = 32;

/// Up to this many keys, an object compares each new key with the ones before it; a larger
/// object sorts its keys when it closes, so a body cannot make the check quadratic.
pub const LINEAR_KEYS: usize = 32;

/// One key of an open object: where its bytes are, and a fingerprint of the key as unescaped
/// text (its length and first eight bytes) that tells most different keys apart without
/// reading them again. A marker entry (`open_object`) starts each object's keys and keeps
/// what the enclosing object's `base` and `seen` were.
#[derive(Clone, Copy)]
struct KeySpan {
    /// The opening quote.
    quote: usize,
    /// The closing quote. For a marker, where the keys of the enclosing object start.
    end: usize,
    /// Bytes of the unescaped key.
    len: usize,
    /// Its first eight bytes, zero-padded, little-endian.
    prefix: u64,
    escaped: bool,
}

impl KeySpan {
    const EMPTY: KeySpan = KeySpan {
        quote: 0,
        end: 0,
        len: 0,
        prefix: 0,
        escaped: false,
    };

    /// The key from its quotes; `escaped` says whether a backslash is between them.
    #[inline(always)]
    fn new(text: &str, quote: usize, end: usize, escaped: bool) -> KeySpan {
        let (len, prefix) = if escaped {
            // Rare: the fingerprint must be the unescaped key's, as for any other key.
            let mut len = 0;
            let mut head = [0u8; 8];
            for c in Unescaped::new(text.get(quote + 1..end).unwrap_or_default()) {
                let mut utf8 = [0u8; 4];
                for &byte in c.encode_utf8(&mut utf8).as_bytes() {
                    if let Some(slot) = head.get_mut(len) {
                        *slot = byte;
                    }
                    len += 1;
                }
            }
            (len, u64::from_le_bytes(head))
        } else {
            let len = end.saturating_sub(quote + 1);
            (len, prefix_of(text.as_bytes(), quote + 1, len))
        };
        KeySpan {
            quote,
            end,
            len,
            prefix,
            escaped,
        }
    }

    /// One of 64 bits, from the fingerprint: equal keys have the same bit.
    #[inline(always)]
    fn filter_bit(&self) -> u64 {
        let mixed = (self.prefix ^ self.len as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        1 << (mixed >> 58)
    }

    fn raw<'t>(&self, text: &'t str) -> &'t [u8] {
        text.as_bytes()
            .get(self.quote + 1..self.end)
            .unwrap_or_default()
    }

    fn unescaped<'t>(&self, text: &'t str) -> Unescaped<'t> {
        Unescaped::new(text.get(self.quote + 1..self.end).unwrap_or_default())
    }
}

/// The first eight bytes of the `len` bytes at `start`, zero-padded, as a little-endian
/// number. One load when the text goes on for eight bytes, as it does but at its very end.
#[inline(always)]
fn prefix_of(bytes: &[u8], start: usize, len: usize) -> u64 {
    match bytes.get(start..start + 8) {
        Some(word) => {
            let word = u64::from_le_bytes(<[u8; 8]>::try_from(word).unwrap_or_default());
            match len {
                0..=7 => word & ((1u64 << (len * 8)) - 1),
                _ => word,
            }
        }
        None => {
            let mut head = [0u8; 8];
            let raw = bytes.get(start..start + len).unwrap_or_default();
            for (slot, &byte) in head.iter_mut().zip(raw) {
                *slot = byte;
            }
            u64::from_le_bytes(head)
        }
    }
}

/// The keys of every open object, innermost last: a stack that lives on the stack until it
/// outgrows [`INLINE_KEYS`], then on the heap.
struct Keys<'k> {
    inline: &'k mut [KeySpan; INLINE_KEYS],
    len: usize,
    heap: Vec<KeySpan>,
    /// Where the innermost open object's keys start (just after its marker).
    base: usize,
    /// One bit per key of the innermost object, chosen by its fingerprint: a key whose bit is
    /// clear cannot repeat an earlier one, so most keys are compared with none.
    seen: u64,
}

impl<'k> Keys<'k> {
    fn new(inline: &'k mut [KeySpan; INLINE_KEYS]) -> Self {
        Keys {
            inline,
            len: 0,
            heap: Vec::new(),
            base: 0,
            seen: 0,
        }
    }

    #[inline(always)]
    fn all(&self) -> &[KeySpan] {
        if self.heap.is_empty() {
            self.inline.get(..self.len).unwrap_or_default()
        } else {
            &self.heap
        }
    }

    #[inline(always)]
    fn push(&mut self, span: KeySpan) {
        if !self.heap.is_empty() {
            self.heap.push(span);
        } else if let Some(slot) = self.inline.get_mut(self.len) {
            *slot = span;
            self.len += 1;
        } else {
            self.heap.reserve(INLINE_KEYS * 2);
            self.heap.extend_from_slice(self.inline.as_slice());
            self.heap.push(span);
        }
    }

    /// Keeps the first `len` keys; back to the inline space once the heap is empty.
    #[inline(always)]
    fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        self.heap.truncate(len);
    }

    /// The keys of the innermost open object, in document order.
    #[inline(always)]
    fn current(&self) -> &[KeySpan] {
        self.all().get(self.base..).unwrap_or_default()
    }

    #[inline(always)]
    fn open_object(&mut self) {
        self.push(KeySpan {
            end: self.base,
            prefix: self.seen,
            ..KeySpan::EMPTY
        });
        self.base = self.all().len();
        self.seen = 0;
    }

    /// Forgets the innermost object's keys and its marker.
    #[inline(always)]
    fn close_object(&mut self) {
        let marker = self.base.saturating_sub(1);
        let (outer, seen) = self.all().get(marker).map_or((0, 0), |m| (m.end, m.prefix));
        self.truncate(marker);
        self.base = outer;
        self.seen = seen;
    }
}

/// Whether two keys are the same string once unescaped.
#[inline(always)]
fn same_key(text: &str, a: &KeySpan, b: &KeySpan) -> bool {
    a.len == b.len
        && a.prefix == b.prefix
        && (a.len <= 8
            || if a.escaped || b.escaped {
                a.unescaped(text).eq(b.unescaped(text))
            } else {
                // Without escapes the bytes are the string.
                a.raw(text) == b.raw(text)
            })
}

/// A total order of keys as unescaped strings, in which equal keys are neighbours: by
/// fingerprint, then by code point (UTF-8 byte order is code point order, so raw bytes serve
/// when neither key has an escape).
fn key_order(text: &str, a: &KeySpan, b: &KeySpan) -> std::cmp::Ordering {
    a.len
        .cmp(&b.len)
        .then(a.prefix.cmp(&b.prefix))
        .then_with(|| {
            if a.len <= 8 {
                std::cmp::Ordering::Equal
            } else if a.escaped || b.escaped {
                a.unescaped(text).cmp(b.unescaped(text))
            } else {
                a.raw(text).cmp(b.raw(text))
            }
        })
}

/// Sorts in place in O(n log n) whatever the input: a heap sort, a fraction of the `.wasm`
/// size of std's slice sorts, on this cold path.
fn heap_sort<T: Copy>(items: &mut [T], less: impl Fn(&T, &T) -> bool) {
    // Moves the item at `root` down until no child within `..end` is greater.
    let sift_down = |items: &mut [T], mut root: usize, end: usize| {
        while let Some(&left) = items.get(2 * root + 1).filter(|_| 2 * root + 1 < end) {
            let mut child = 2 * root + 1;
            let mut greater = left;
            if let Some(&right) = items.get(child + 1).filter(|_| child + 1 < end) {
                if less(&left, &right) {
                    child += 1;
                    greater = right;
                }
            }
            match items.get(root) {
                Some(top) if less(top, &greater) => items.swap(root, child),
                _ => return,
            }
            root = child;
        }
    };
    let len = items.len();
    for root in (0..len / 2).rev() {
        sift_down(items, root, len);
    }
    for end in (1..len).rev() {
        items.swap(0, end);
        sift_down(items, 0, end);
    }
}

/// The characters of a string's content (between its quotes, already validated) with its
/// escapes decoded; nothing is allocated.
struct Unescaped<'t> {
    chars: std::str::Chars<'t>,
}

impl<'t> Unescaped<'t> {
    fn new(content: &'t str) -> Self {
        Unescaped {
            chars: content.chars(),
        }
    }

    fn hex4(&mut self) -> u32 {
        (0..4).fold(0, |unit, _| {
            let digit = self.chars.next().and_then(|c| c.to_digit(16));
            unit * 16 + digit.unwrap_or(0)
        })
    }
}

impl Iterator for Unescaped<'_> {
    type Item = char;

    fn next(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c != '\\' {
            return Some(c);
        }
        Some(match self.chars.next()? {
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => {
                let unit = self.hex4();
                let code = if (0xD800..0xDC00).contains(&unit) {
                    // Validated: a `\uDC00`..`\uDFFF` escape follows.
                    self.chars.nth(1);
                    let low = self.hex4();
                    0x10000 + ((unit - 0xD800) << 10) + low.wrapping_sub(0xDC00)
                } else {
                    unit
                };
                char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER)
            }
            quoted => quoted,
        })
    }
}

/// A key as an error message shows it: quoted, cut after 64 characters.
fn shown_key(key: &str) -> String {
    // Debug quotes and escapes like JSON for the keys one meets (`"a\"b"`, `"\n"`).
    match key.char_indices().nth(64) {
        Some((cut, _)) => format!("{:?}…", key.get(..cut).unwrap_or_default()),
        None => format!("{key:?}"),
    }
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
    /// The same bytes, known to be UTF-8.
    text: &'a str,
    at: usize,
    open: Open,
    max_depth: usize,
    keys: &'a mut Keys<'a>,
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
                        self.pop()?;
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
                        self.pop()?;
                    } else {
                        continue 'value;
                    }
                }
                Some(b'"') => {
                    self.string()?;
                }
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
                        self.pop()?;
                    }
                    Some(b']') if !object => {
                        self.at += 1;
                        self.pop()?;
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
        if object {
            self.keys.open_object();
        }
        Ok(())
    }

    /// Closes the innermost container.
    #[inline(always)]
    fn pop(&mut self) -> Result<(), Invalid> {
        if self.open.in_object() {
            self.close_object()?;
        }
        self.open.bits >>= 1;
        self.open.depth = self.open.depth.saturating_sub(1);
        Ok(())
    }

    /// Forgets an object's keys; one too large to have been checked key by key is checked now.
    fn close_object(&mut self) -> Result<(), Invalid> {
        if self.keys.current().len() > LINEAR_KEYS {
            self.check_sorted_keys()?;
        }
        self.keys.close_object();
        Ok(())
    }

    /// Remembers a key of the innermost object; while the object is small, refuses it at once
    /// if it repeats an earlier key.
    #[inline(always)]
    fn remember_key(&mut self, key: KeySpan) -> Result<(), Invalid> {
        let bit = key.filter_bit();
        if self.keys.seen & bit != 0 {
            let earlier = self.keys.current();
            if earlier.len() < LINEAR_KEYS && earlier.iter().any(|k| same_key(self.text, k, &key)) {
                return Err(self.duplicate(&key));
            }
        }
        self.keys.seen |= bit;
        self.keys.push(key);
        Ok(())
    }

    /// A large object's keys, sorted so that equal keys are neighbours: the repeat that comes
    /// first in the document is the error. Each key is packed with its position into one
    /// integer, fingerprint (length and first eight bytes) first, and these are sorted; keys
    /// longer than eight bytes whose fingerprints tie are then sorted by the keys themselves.
    #[cold]
    fn check_sorted_keys(&self) -> Result<(), Invalid> {
        let text = self.text;
        let keys = self.keys.current();
        let span = |entry: &u128| keys.get((entry & u128::from(u32::MAX)) as usize);
        // Saturating: past 4 GiB, lengths and positions only lose precision in which repeat
        // is reported; equal keys still get equal fingerprints.
        let mut order: Vec<u128> = keys
            .iter()
            .enumerate()
            .map(|(index, key)| {
                let len = u32::try_from(key.len).unwrap_or(u32::MAX);
                let index = u32::try_from(index).unwrap_or(u32::MAX);
                (u128::from(len) << 96) | (u128::from(key.prefix) << 32) | u128::from(index)
            })
            .collect();
        heap_sort(&mut order, |a, b| a < b);
        let mut first_repeat: Option<&KeySpan> = None;
        for run in order.chunk_by_mut(|a, b| a >> 32 == b >> 32) {
            if run.len() > 1 && run.first().is_some_and(|entry| entry >> 96 > 8) {
                heap_sort(run, |a, b| match (span(a), span(b)) {
                    (Some(x), Some(y)) => key_order(text, x, y).then(a.cmp(b)).is_lt(),
                    _ => a < b,
                });
            }
            for pair in run.windows(2) {
                if let [a, b] = pair {
                    if let (Some(a), Some(b)) = (span(a), span(b)) {
                        if same_key(text, a, b) && first_repeat.is_none_or(|f| b.quote < f.quote) {
                            first_repeat = Some(b);
                        }
                    }
                }
            }
        }
        match first_repeat {
            Some(key) => Err(self.duplicate(key)),
            None => Ok(()),
        }
    }

    #[cold]
    fn duplicate(&self, key: &KeySpan) -> Invalid {
        Invalid {
            problem: Problem::DuplicateKey(key.unescaped(self.text).collect()),
            at: key.quote,
        }
    }

    /// An object key and its colon, leaving `at` on the value.
    fn key(&mut self) -> Result<(), Invalid> {
        if self.peek() != Some(b'"') {
            return Err(self.fail(match self.peek() {
                None => Problem::UnexpectedEnd,
                Some(_) => Problem::ExpectedKey,
            }));
        }
        let quote = self.at;
        let escaped = self.string()?;
        self.remember_key(KeySpan::new(self.text, quote, self.at - 1, escaped))?;
        self.skip_whitespace();
        match self.peek() {
            Some(b':') => self.at += 1,
            None => return Err(self.fail(Problem::UnexpectedEnd)),
            Some(_) => return Err(self.fail(Problem::ExpectedColon)),
        }
        self.skip_whitespace();
        Ok(())
    }

    /// A string from its opening quote; whether it holds an escape. UTF-8 was checked for the
    /// whole text already.
    fn string(&mut self) -> Result<bool, Invalid> {
        self.at += 1;
        let mut escaped = false;
        loop {
            self.at = plain_run_end(self.json, self.at);
            match self.peek() {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    self.escape()?;
                }
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

    fn duplicate(text: &str) -> Option<(String, usize)> {
        match check(text.as_bytes(), 127) {
            Err(Invalid {
                problem: Problem::DuplicateKey(key),
                at,
            }) => Some((key.into(), at)),
            Err(other) => panic!("{text:?}: {other}"),
            Ok(()) => None,
        }
    }

    #[test]
    fn refuses_a_key_repeated_in_one_object() {
        assert_eq!(duplicate(r#"{"a":1,"a":2}"#), Some(("a".into(), 7)));
        assert_eq!(
            check(br#"{"a":1, "b":2, "a":3}"#, 127)
                .unwrap_err()
                .to_string(),
            r#"body is not JSON: duplicate key "a" at byte 15"#
        );
        assert_eq!(duplicate(r#"{"":1,"":2}"#), Some((String::new(), 6)));
        assert_eq!(
            duplicate(r#"{"a":{"x":1},"a":[]}"#),
            Some(("a".into(), 13)),
            "after a nested object"
        );
        assert_eq!(
            duplicate(r#"[1,{"k":{"deep":[{"x":1,"y":2,"x":3}]}}]"#),
            Some(("x".into(), 30)),
            "at any depth"
        );
    }

    #[test]
    fn keys_are_compared_after_unescaping() {
        for (text, key) in [
            (r#"{"a":1,"\u0061":2}"#, "a"),
            (r#"{"\u0061":1,"a":2}"#, "a"),
            (r#"{"\u00e9":1,"\u00E9":2}"#, "é"),
            (r#"{"é":1,"\u00e9":2}"#, "é"),
            ("{\"\u{1f600}\":1,\"\\ud83d\\ude00\":2}", "\u{1f600}"),
            (r#"{"\/":1,"/":2}"#, "/"),
            (r#"{"\n\t":1,"\u000a\u0009":2}"#, "\n\t"),
            (r#"{"a\"b":1,"a\u0022b":2}"#, "a\"b"),
            (r#"{"x\\y":1,"x\u005cy":2}"#, "x\\y"),
        ] {
            assert_eq!(
                duplicate(text).map(|(k, _)| k),
                Some(key.to_string()),
                "{text}"
            );
        }
        assert_eq!(
            check(br#"{"a\"b":1,"a\u0022b":2}"#, 127)
                .unwrap_err()
                .to_string(),
            r#"body is not JSON: duplicate key "a\"b" at byte 10"#,
            "the key is shown as JSON"
        );
    }

    #[test]
    fn different_keys_and_equal_keys_of_different_objects_pass() {
        for text in [
            r#"{"a":1,"A":2,"ab":3,"b":4,"a ":5}"#,
            r#"{"a":1,"b":{"a":2,"b":{"a":3}}}"#,
            r#"[{"a":1},{"a":2},{"a":{"a":{}}}]"#,
            r#"{"o":{"k":1},"k":2,"p":{"k":3}}"#,
            r#"{"\u0061b":1,"a":2,"\u0062":3}"#,
            r#"{"é":1,"e\u0301":2}"#,
            r#"{"\ud83d\ude00":1,"\ud83d\ude01":2}"#,
            r#"{"\n":1,"n":2,"\\n":3}"#,
        ] {
            assert_eq!(duplicate(text), None, "{text}");
        }
    }

    #[test]
    fn large_objects_are_checked_by_sorting() {
        let object = |keys: &[String]| {
            let members: Vec<String> = keys.iter().map(|k| format!(r#""{k}":0"#)).collect();
            format!("{{{}}}", members.join(","))
        };
        let many: Vec<String> = (0..5000).map(|i| format!("k{i}")).collect();
        assert_eq!(duplicate(&object(&many)), None);

        let mut repeated = many.clone();
        repeated.push("k4321".into());
        repeated.push("k17".into());
        let text = object(&repeated);
        let at = text.find(r#""k4321":0,"k17""#).unwrap();
        assert_eq!(
            duplicate(&text),
            Some(("k4321".into(), at)),
            "the first repeat in document order"
        );

        // Long keys that share their first eight bytes, so fingerprints tie.
        let long: Vec<String> = (0..300).map(|i| format!("description_{i}")).collect();
        assert_eq!(duplicate(&object(&long)), None);
        let mut long_repeated = long.clone();
        long_repeated.insert(250, "description_7".into());
        long_repeated.push(r"description_299".into());
        assert_eq!(
            duplicate(&object(&long_repeated)).unwrap().0,
            "description_7"
        );
        long_repeated.remove(250);
        assert_eq!(
            duplicate(&object(&long_repeated)).unwrap().0,
            "description_299"
        );

        let mut escaped = many[..40].to_vec();
        escaped.push(r"\u006b39".into());
        assert_eq!(duplicate(&object(&escaped)).unwrap().0, "k39");

        // Just past the linear limit: the first keys were checked one by one, the rest when
        // the object closes.
        for len in [LINEAR_KEYS, LINEAR_KEYS + 1, INLINE_KEYS, INLINE_KEYS + 1] {
            let mut keys: Vec<String> = (0..len).map(|i| format!("k{i}")).collect();
            assert_eq!(duplicate(&object(&keys)), None, "{len} keys");
            keys.push("k0".into());
            assert_eq!(duplicate(&object(&keys)).unwrap().0, "k0", "{len} keys");
        }
    }

    #[test]
    fn keys_of_open_objects_outgrow_the_inline_space() {
        // 30 keys open outside, an inner object of 30 more: the stack moves to the heap and
        // the outer object's keys are still known after the inner one closes.
        let outer: Vec<String> = (0..30).map(|i| format!(r#""o{i}":0"#)).collect();
        let inner: Vec<String> = (0..30).map(|i| format!(r#""i{i}":0"#)).collect();
        let text = |tail: &str| {
            format!(
                r#"{{{},"inner":{{{}}},{tail}}}"#,
                outer.join(","),
                inner.join(",")
            )
        };
        assert_eq!(duplicate(&text(r#""i0":1"#)), None);
        assert_eq!(duplicate(&text(r#""o29":1"#)).unwrap().0, "o29");
        assert_eq!(duplicate(&text(r#""inner":1"#)).unwrap().0, "inner");
        // Back to the inline space after a large object closes at the top.
        let big = format!("{{{}}}", outer.join(","));
        for (tail, repeated) in [(r#"{"a":1,"b":2}"#, None), (r#"{"a":1,"a":2}"#, Some("a"))] {
            let text = format!("[{big},{tail},{big}]");
            assert_eq!(duplicate(&text).map(|(k, _)| k), repeated.map(String::from));
        }
    }

    #[test]
    fn a_byte_order_mark_is_refused_with_a_clear_detail() {
        let error = check(b"\xEF\xBB\xBF{\"a\":1}", 127).unwrap_err();
        assert_eq!(error.problem, Problem::ByteOrderMark);
        assert_eq!(
            error.to_string(),
            "body is not JSON: byte order mark at byte 0"
        );
        assert!(
            serde_json::from_slice::<serde_json::Value>(b"\xEF\xBB\xBF{}").is_err(),
            "clients' parsers refuse it too"
        );
        assert!(ok("[\"\u{feff}\"]"), "U+FEFF inside a string is text");
    }

    #[test]
    fn long_keys_are_cut_in_the_message() {
        let key = "x".repeat(500);
        let text = format!(r#"{{"{key}":1,"{key}":2}}"#);
        let message = check(text.as_bytes(), 127).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!(
                r#"body is not JSON: duplicate key "{}"… at byte "#,
                "x".repeat(64)
            )),
            "{message}"
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
