//! Response shaping (SPEC §5): per-call transforms, layouts, derived fields and response
//! headers, compiled once. Work happens only where it is configured: a route without shaping
//! keeps the splice path of `render`.

mod derive;
mod layout;
mod transform;

pub use derive::{Derived, Op};
pub use layout::{compare_sort_keys, deep_merge, Sort};
pub use transform::CallShape;

use crate::config::{ConfigError, Layout, ResponseConfig};
use crate::json_path::JsonPath;

/// Route-level shaping (SPEC §5): the route's `response` block, compiled by
/// [`compile_response`].
#[derive(Debug)]
pub struct ResponseShape {
    /// `nested` (the default: `{call: body, …}`), `merge` or `concat`.
    pub layout: Layout,
    /// `concat` only: the order of the concatenated elements.
    pub sort: Option<Sort>,
    /// `concat` only: the most elements kept (at least 1), after sorting.
    pub limit: Option<usize>,
    /// Computed fields, written in configuration order after the layout (not in `concat`).
    pub derive: Vec<Derived>,
    /// Static headers added to every answer of the route.
    pub headers: Vec<(String, String)>,
}

impl ResponseShape {
    /// The default: the `nested` layout, nothing derived, no extra headers.
    pub const fn nested() -> ResponseShape {
        ResponseShape {
            layout: Layout::Nested,
            sort: None,
            limit: None,
            derive: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// Whether the body can be spliced from the calls' bytes as they are.
    pub fn splices(&self) -> bool {
        self.layout == Layout::Nested && self.derive.is_empty()
    }
}

/// Response headers the filter itself sets: configuration may not set or copy them.
pub const CONTRACT_HEADERS: [&str; 4] = [
    "content-type",
    "x-aggregation-complete",
    "server-timing",
    "content-length",
];

/// Compiles the route's `response` block (SPEC §5): layout, `sort_by`/`order`/`limit` (concat
/// only), `derive`; the static headers are kept as written (checked by `plan::compile`).
///
/// Errors name the key (`response.limit`, `response.derive.<out>`, …) but not the route: the
/// caller places them ([`Place::locate`](crate::config::Place::locate)).
pub fn compile_response(config: &ResponseConfig) -> Result<ResponseShape, ConfigError> {
    let concat_only = |key: &str| {
        ConfigError::at(
            format!("response.{key}"),
            "only applies to the concat layout",
        )
    };
    if config.layout != Layout::Concat {
        if config.sort_by.is_some() {
            return Err(concat_only("sort_by"));
        }
        if config.limit.is_some() {
            return Err(concat_only("limit"));
        }
    }
    if config.layout == Layout::Concat && !config.derive.is_empty() {
        return Err(ConfigError::at(
            "response.derive",
            "the concat layout answers an array: there is no object to add fields to",
        ));
    }
    let sort = match &config.sort_by {
        Some(path) => Some(Sort {
            path: JsonPath::parse(path).map_err(|why| ConfigError::at("response.sort_by", why))?,
            order: config.order,
        }),
        None => None,
    };
    let limit = match config.limit {
        Some(0) => return Err(ConfigError::at("response.limit", "must be at least 1")),
        Some(limit) => Some(usize::try_from(limit).unwrap_or(usize::MAX)),
        None => None,
    };
    let derive = config
        .derive
        .iter()
        .map(|(out, op)| Derived::compile(out, op))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ResponseShape {
        layout: config.layout,
        sort,
        limit,
        derive,
        headers: config.headers.clone(),
    })
}
