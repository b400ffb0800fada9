//! Percent-encoding rules of SPEC §3.1: client values are decoded once when read and encoded
//! again when written into a path or query, so they are always data, never syntax.

/// Decodes `%XX` escapes once. A `%` not followed by two hex digits is kept as is (it is
/// encoded again on the way out, so it stays data). `None` when the result is not UTF-8.
pub fn percent_decode(input: &str, plus_as_space: bool) -> Option<String> {
    if !input
        .bytes()
        .any(|b| b == b'%' || (plus_as_space && b == b'+'))
    {
        return Some(input.to_string());
    }
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let high = bytes.get(i + 1).and_then(|h| hex_value(*h));
                let low = bytes.get(i + 2).and_then(|l| hex_value(*l));
                if let (Some(high), Some(low)) = (high, low) {
                    out.push(high * 16 + low);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' if plus_as_space => out.push(b' '),
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Appends `value` percent-encoded: everything but RFC 3986 unreserved characters is escaped,
/// so the value can never add a path segment, a query parameter or a fragment.
pub fn percent_encode_into(value: &str, out: &mut String) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b & 0x0f));
        }
    }
}

fn hex_digit(nibble: u8) -> char {
    char::from_digit(u32::from(nibble), 16)
        .map(|c| c.to_ascii_uppercase())
        .unwrap_or('0')
}

/// The value of the first query parameter called `name`, decoded (`+` is a space).
/// Outer `None`: parameter absent; inner `None`: present but not valid UTF-8 once decoded.
pub fn query_param(query: &str, name: &str) -> Option<Option<String>> {
    for pair in query.split('&') {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        if raw_name == name || percent_decode(raw_name, true).as_deref() == Some(name) {
            return Some(percent_decode(raw_value, true));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(value: &str) -> String {
        let mut out = String::new();
        percent_encode_into(value, &mut out);
        out
    }

    #[test]
    fn decoding_is_done_once() {
        assert_eq!(percent_decode("a%2Fb", false).as_deref(), Some("a/b"));
        assert_eq!(percent_decode("%252F", false).as_deref(), Some("%2F"));
        assert_eq!(percent_decode("caf%C3%A9", false).as_deref(), Some("café"));
        assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(percent_decode("a+b", true).as_deref(), Some("a b"));
    }

    #[test]
    fn malformed_escapes_stay_literal_and_bad_utf8_is_refused() {
        assert_eq!(percent_decode("100%", false).as_deref(), Some("100%"));
        assert_eq!(percent_decode("%zz%4", false).as_deref(), Some("%zz%4"));
        assert_eq!(percent_decode("%ff", false), None);
    }

    #[test]
    fn encoding_escapes_everything_but_unreserved() {
        assert_eq!(encode("AZaz09-._~"), "AZaz09-._~");
        assert_eq!(encode("../x?y=1&z#f"), "..%2Fx%3Fy%3D1%26z%23f");
        assert_eq!(encode("a b/é"), "a%20b%2F%C3%A9");
        assert_eq!(encode("%2F"), "%252F");
        assert_eq!(encode("\r\n\0"), "%0D%0A%00");
    }

    #[test]
    fn query_params_are_found_and_decoded() {
        let q = "a=1&currency=US%44&b&sp=x+y&currency=EUR";
        assert_eq!(query_param(q, "currency"), Some(Some("USD".to_string())));
        assert_eq!(query_param(q, "b"), Some(Some(String::new())));
        assert_eq!(query_param(q, "sp"), Some(Some("x y".to_string())));
        assert_eq!(query_param(q, "missing"), None);
        assert_eq!(
            query_param("my%20key=v", "my key"),
            Some(Some("v".to_string()))
        );
        assert_eq!(query_param("", "a"), None);
    }
}
