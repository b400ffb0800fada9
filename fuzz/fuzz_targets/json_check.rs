//! The splice-path JSON validator against serde_json, byte for byte: whatever it accepts a
//! client's parser (serde_json's `Value`) accepts, and every JSON text serde_json accepts
//! within the depth limit it accepts too — but for objects that repeat a key, which the
//! validator refuses (SPEC §4): the oracle is serde_json's parse plus an independent check,
//! a serde visitor keeping each object's keys (tests/common/unique_keys.rs). One difference
//! is by design: numbers beyond an f64's range are valid JSON (RFC 8259) and pass unchanged,
//! as serde's ignoring deserializer passed them before; serde_json's `Value` refuses them.
#![no_main]

#[path = "../../tests/common/unique_keys.rs"]
mod unique_keys;

use gateway_aggregator::json_check;
use libfuzzer_sys::fuzz_target;

/// serde_json refuses more than 128 levels by itself; the filter's limit is 127.
const DEPTH: usize = 127;

fuzz_target!(|data: &[u8]| {
    let ours = json_check::check(data, DEPTH);
    let serde = unique_keys::parse_unique_keys(data);
    match (&ours, &serde) {
        (Ok(()), Err(e)) if e.to_string().starts_with("number out of range") => {}
        (Ok(()), Err(e)) => panic!("accepted what serde_json refuses ({e})"),
        (Err(invalid), Ok(_)) => {
            let deep = matches!(invalid.problem, json_check::Problem::TooDeep(_));
            assert!(deep, "refused valid JSON: {invalid}");
        }
        _ => {}
    }
});
