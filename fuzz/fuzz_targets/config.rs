//! Any configuration bytes: compiled or refused with an error, never a panic.
#![no_main]

use gateway_aggregator::plan::Plan;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(error) = Plan::compile(data) {
        // The error must be printable as one line.
        assert!(!error.to_string().contains('\n'));
    }
});
