//! The root context: compiles the configuration once into the plan every request shares.

use super::http::Aggregation;
use crate::plan::Plan;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};
use std::rc::Rc;

#[derive(Default)]
pub struct Root {
    plan: Option<Rc<Plan>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _configuration_size: usize) -> bool {
        super::follow_host_log_level();
        let bytes = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        if bytes.is_empty() {
            log::error!("gateway-aggregator: configuration rejected: the plugin configuration is empty; it must be the JSON of SPEC §2");
            return false;
        }
        match Plan::compile(&bytes) {
            Ok(plan) => {
                let routes: Vec<String> = plan
                    .routes
                    .iter()
                    .map(|r| {
                        let body = if r.client_body.needed {
                            ", reads the client body: needs allow_on_headers_stop_iteration"
                        } else {
                            ""
                        };
                        format!(
                            "{} ({}, {} calls{body})",
                            r.name,
                            r.describe_match(),
                            r.calls.len()
                        )
                    })
                    .collect();
                log::info!(
                    "gateway-aggregator: loaded {} routes and {} calls: {}",
                    plan.routes.len(),
                    plan.call_count(),
                    routes.join("; ")
                );
                self.plan = Some(Rc::new(plan));
                true
            }
            Err(error) => {
                log::error!("gateway-aggregator: configuration rejected: {error}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never None: the SDK traps on it. Without a plan, every request passes through.
        let plan = self
            .plan
            .clone()
            .unwrap_or_else(|| Rc::new(Plan { routes: Vec::new() }));
        Some(Box::new(Aggregation::new(plan)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
