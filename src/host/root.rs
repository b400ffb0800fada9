//! The root context: compiles the configuration once into the plan every request shares, and
//! drives the worker's timer. Calls made from the timer are answered to this context, which
//! routes each answer to the request that made the call, or to every request sharing it
//! (SPEC §6 `coalesce`).

use super::coalesce;
use super::exchange::Via;
use super::http::Stream;
use super::metrics::EnvoyMetrics;
use super::registry::Exchanges;
use super::worker::Worker;
use crate::plan::Plan;
use crate::resilience::coalesce::Route;
use crate::stats::Stats;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};
use std::rc::Rc;
use std::time::Duration;

/// How often the timer looks for due retries, hedges, coalesced waits, handovers and
/// client-body deadlines, when a route needs it (a late body is then answered within a tick of its deadline); otherwise it only
/// hands the counted stats to Envoy.
const TICK: Duration = Duration::from_millis(5);
const SLOW_TICK: Duration = Duration::from_millis(1000);

#[derive(Default)]
pub struct Root {
    plan: Option<Rc<Plan>>,
    worker: Rc<Worker>,
    exchanges: Rc<Exchanges>,
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let (worker, exchanges) = (&self.worker, &self.exchanges);
        if coalesce::deliver(
            token_id,
            num_headers,
            body_size,
            Route::Root,
            worker,
            exchanges,
        ) {
            return;
        }
        if let Some(context_id) = self.worker.take_root_call(token_id) {
            self.exchanges.with(context_id, |exchange| {
                exchange.on_call_response(token_id, num_headers, body_size, Via::Root)
            });
        }
    }
}

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
                            "{} ({}, {}{body})",
                            r.name,
                            r.describe_match(),
                            counted(r.calls.len(), "call")
                        )
                    })
                    .collect();
                log::info!(
                    "gateway-aggregator: loaded {} and {}: {}",
                    counted(plan.routes.len(), "route"),
                    counted(plan.call_count(), "call"),
                    routes.join("; ")
                );
                match Stats::define(&plan, &EnvoyMetrics) {
                    Ok(stats) => self.worker.set_stats(stats),
                    Err(why) => {
                        log::error!("gateway-aggregator: {why}");
                        return false;
                    }
                }
                let tick = if plan.routes.iter().any(|r| r.needs_timers()) {
                    TICK
                } else {
                    SLOW_TICK
                };
                if let Err(status) = hostcalls::set_tick_period(tick) {
                    log::error!(
                        "gateway-aggregator: no timer for retries, hedges, body deadlines and stats: {status:?}"
                    );
                    return false;
                }
                self.plan = Some(Rc::new(plan));
                true
            }
            Err(error) => {
                log::error!("gateway-aggregator: configuration rejected: {error}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let now = super::now();
        for context_id in self.worker.due(now) {
            self.exchanges
                .with(context_id, |exchange| exchange.on_timer(now));
        }
        // After the timers, so waits that ended now are not sent for again.
        coalesce::hand_over(now, &self.worker, &self.exchanges);
        self.worker.flush_metrics(now);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never None: the SDK traps on it. Without a plan, every request passes through.
        let plan = self
            .plan
            .clone()
            .unwrap_or_else(|| Rc::new(Plan { routes: Vec::new() }));
        Some(Box::new(Stream::new(
            context_id,
            plan,
            Rc::clone(&self.worker),
            Rc::clone(&self.exchanges),
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// `1 call`, `2 calls`: for the log line an operator reads at load.
fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
