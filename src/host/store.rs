//! Envoy shared data as the core's [`Store`]: shared by every worker VM with the same vm_id.

use crate::resilience::Store;
use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

pub struct SharedData;

impl Store for SharedData {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(value), cas)) => Some((value, cas.unwrap_or(0))),
            Ok((None, Some(cas))) => Some((Vec::new(), cas)),
            _ => None,
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        match hostcalls::set_shared_data(key, Some(value), cas.filter(|c| *c != 0)) {
            Ok(()) => true,
            Err(Status::CasMismatch) => false,
            Err(status) => {
                log::warn!("gateway-aggregator: shared data write refused: {status:?}");
                false
            }
        }
    }
}
