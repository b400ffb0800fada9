//! Checks of single values the configuration names things with: route and call names, HTTP
//! methods, header names. Each returns the reason as a `String`; its caller knows the key.

use super::super::template;
use crate::config::{ConfigError, Place};
use crate::shape;

/// Longest route or call name, and longest output key (`as`).
pub const MAX_NAME_LEN: usize = 64;
/// Headers a call may neither set nor forward: Envoy owns them or they would break framing.
const RESERVED_HEADERS: [&str; 9] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
    "expect",
];
/// Forwarded only by a call that lists them itself (SPEC §2.1), and part of a cache key when
/// sent (SPEC §6).
pub const CREDENTIAL_HEADERS: [&str; 2] = ["authorization", "cookie"];
/// Methods that may be sent twice with the same effect (RFC 9110 §9.2.2).
const IDEMPOTENT_METHODS: [&str; 6] = ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"];

/// A route or call name: 1 to 64 of `[a-z0-9_-]` (SPEC §2.2, §2.3).
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "\"{name}\" is not a valid name: use 1 to {MAX_NAME_LEN} of [a-z0-9_-]"
        ))
    }
}

/// An output key (`as`, or the call's name): 1 to 64 of `[A-Za-z0-9_-]`.
pub fn check_output_key(key: &str) -> Result<(), String> {
    let valid = (1..=MAX_NAME_LEN).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "\"{key}\" is not a valid key: use 1 to {MAX_NAME_LEN} of [A-Za-z0-9_-]"
        ))
    }
}

/// An HTTP method, upper-cased.
pub fn check_method(method: &str) -> Result<String, String> {
    let upper = method.to_ascii_uppercase();
    if !upper.is_empty() && upper.bytes().all(|b| b.is_ascii_uppercase() || b == b'-') {
        Ok(upper)
    } else {
        Err(format!("\"{method}\" is not an HTTP method"))
    }
}

/// Whether retries and hedging may send a call twice (SPEC §6): its (upper-case) method is
/// idempotent, or the call says `"unsafe": true`.
pub fn may_repeat(method: &str, unsafe_repeat: bool) -> bool {
    unsafe_repeat || IDEMPOTENT_METHODS.contains(&method)
}

/// Normalises a header name for forwarding or setting; refuses pseudo and reserved headers.
pub fn check_header_name(name: &str) -> Result<String, String> {
    let lower = name.to_ascii_lowercase();
    if !template::is_header_name(&lower) {
        return Err(format!("\"{name}\" is not a valid header name"));
    }
    if RESERVED_HEADERS.contains(&lower.as_str()) {
        return Err(format!(
            "header \"{name}\" is managed by Envoy and cannot be set or forwarded"
        ));
    }
    Ok(lower)
}

/// Refuses `lower`, a header name already in `seen`: an object naming one header twice in
/// different case (`{"X-A": …, "x-a": …}`) would send both values or lose one, header names
/// being case-insensitive. Adds it to `seen` otherwise.
pub fn named_once(seen: &mut Vec<String>, lower: &str) -> Result<(), String> {
    if seen.iter().any(|name| name == lower) {
        return Err(format!(
            "header \"{lower}\" is named twice (header names are case-insensitive)"
        ));
    }
    seen.push(lower.to_string());
    Ok(())
}

/// A header the configuration may add to the client's response.
pub fn check_response_header(name: &str) -> Result<String, String> {
    let lower = check_header_name(name)?;
    if shape::CONTRACT_HEADERS.contains(&lower.as_str()) {
        return Err(format!("\"{lower}\" is set by the filter itself"));
    }
    Ok(lower)
}

/// A list of header names at `key`, lowercase; credentials only where a call lists them itself.
pub fn lower_header_list(
    names: &[String],
    place: &Place,
    key: &str,
    credentials_allowed: bool,
) -> Result<Vec<String>, ConfigError> {
    names
        .iter()
        .map(|name| {
            let lower = check_header_name(name).map_err(|why| place.error(Some(key), why))?;
            if !credentials_allowed && CREDENTIAL_HEADERS.contains(&lower.as_str()) {
                return Err(place.error(
                    Some(key),
                    format!(
                        "\"{lower}\" is a credential: list it in the forward_headers of each call that needs it"
                    ),
                ));
            }
            Ok(lower)
        })
        .collect()
}
