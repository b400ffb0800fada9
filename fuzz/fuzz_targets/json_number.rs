//! `json_number`: the one JSON parse keeps every number's spelling, and exact comparison and
//! sums agree with `bigdecimal` (the oracle) on whatever numbers the input holds.
//!
//! - Any bytes that serde_json accepts parse with `json_number::parse` to the same numbers in
//!   the same places, each spelled exactly as in the input when no object repeats a key
//!   (serde_json's own text differs only in the exponent marker), and nothing else parses.
//! - Every pair of numbers compares as bigdecimal compares them; their sum, when it fits the
//!   digit limit, equals bigdecimal's (exponents kept small so the oracle stays quick).
#![no_main]

use bigdecimal::BigDecimal;
use gateway_aggregator::json_number;
use libfuzzer_sys::fuzz_target;
use serde_json::{Number, Value};
use std::str::FromStr;

fn numbers(value: &Value, out: &mut Vec<Number>) {
    match value {
        Value::Number(n) => out.push(n.clone()),
        Value::Array(items) => items.iter().for_each(|v| numbers(v, out)),
        Value::Object(map) => map.values().for_each(|v| numbers(v, out)),
        _ => {}
    }
}

/// serde_json's spelling of a number: `e`, and a sign after it.
fn normalized(text: &str) -> String {
    match text.find(['e', 'E']) {
        None => text.to_string(),
        Some(at) => {
            let (mantissa, exponent) = text.split_at(at);
            let exponent = &exponent[1..];
            let signed = if exponent.starts_with(['+', '-']) {
                exponent.to_string()
            } else {
                format!("+{exponent}")
            };
            format!("{mantissa}e{signed}")
        }
    }
}

fn small_exponent(n: &Number) -> bool {
    match n.as_str().find(['e', 'E']) {
        None => true,
        Some(at) => n.as_str()[at + 1..]
            .trim_start_matches(['+', '-'])
            .parse::<u32>()
            .is_ok_and(|e| e < 200),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(plain) = serde_json::from_slice::<Value>(data) else {
        assert!(json_number::parse(data).is_err());
        return;
    };
    let exact = json_number::parse(data).expect("serde_json accepted it");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    numbers(&exact, &mut ours);
    numbers(&plain, &mut theirs);
    assert_eq!(ours.len(), theirs.len());
    // Spellings are promised for text with unique keys (`parse`'s contract; other text goes
    // through `parse_unique`, which refuses it); values always.
    let unique = json_number::parse_unique(data).is_ok();
    for (a, b) in ours.iter().zip(&theirs) {
        assert_eq!(normalized(a.as_str()), b.as_str(), "only the exponent marker may differ");
        let text = std::str::from_utf8(data).unwrap_or("");
        assert!(!unique || text.contains(a.as_str()), "{a} is not spelled as in the input");
    }
    let usable: Vec<&Number> = ours.iter().filter(|n| small_exponent(n)).take(16).collect();
    for pair in usable.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let (x, y) = (
            BigDecimal::from_str(a.as_str()).unwrap(),
            BigDecimal::from_str(b.as_str()).unwrap(),
        );
        assert_eq!(json_number::compare(a, b), x.cmp(&y), "{a} vs {b}");
        if let Ok(Some(sum)) = json_number::sum([a, b].into_iter()) {
            assert_eq!(BigDecimal::from_str(sum.as_str()).unwrap(), x + y, "{a} + {b} = {sum}");
        }
    }
});
