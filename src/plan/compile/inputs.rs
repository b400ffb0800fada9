//! What a route's templates read (SPEC §3): the slots of the client inputs, interned as the
//! templates are parsed, and the names of the route's calls they may refer to.

use crate::json_path::JsonPath;
use crate::plan::template::Resolve;
use crate::plan::CallId;

/// Slots of the client inputs a route's templates read, and the names of its calls.
pub struct RouteInputs<'a> {
    /// `match.path` captures, in the pattern's order.
    pub captures: Vec<String>,
    /// Query parameters read, by slot (`Route::query_params`).
    pub query_params: Vec<String>,
    /// Request headers read or forwarded, lowercase, by slot (`Route::headers`).
    pub headers: Vec<String>,
    pub call_names: Vec<&'a str>,
    /// The call being compiled: it may not read its own response.
    pub current_call: usize,
    /// The call being compiled has `for_each`, so `{item}` is allowed.
    pub item_allowed: bool,
    /// The call being compiled is a batch join: the source and path of the keys it joins on,
    /// whose placeholder sends a chunk's keys (`Source::Batch`).
    pub batch_keys: Option<(CallId, JsonPath)>,
    /// Some template reads `request.body.<field>`.
    pub reads_body_fields: bool,
}

impl<'a> RouteInputs<'a> {
    pub fn new(captures: &[String], call_names: Vec<&'a str>) -> Self {
        RouteInputs {
            captures: captures.to_vec(),
            query_params: Vec::new(),
            headers: Vec::new(),
            call_names,
            current_call: 0,
            item_allowed: false,
            batch_keys: None,
            reads_body_fields: false,
        }
    }
}

fn intern(list: &mut Vec<String>, name: &str) -> usize {
    match list.iter().position(|n| n == name) {
        Some(slot) => slot,
        None => {
            list.push(name.to_string());
            list.len() - 1
        }
    }
}

impl Resolve for RouteInputs<'_> {
    fn capture(&mut self, name: &str) -> Option<usize> {
        self.captures.iter().position(|n| n == name)
    }

    fn query(&mut self, name: &str) -> usize {
        intern(&mut self.query_params, name)
    }

    fn header(&mut self, name: &str) -> usize {
        intern(&mut self.headers, name)
    }

    fn call(&mut self, name: &str) -> Result<CallId, String> {
        match self.call_names.iter().position(|n| *n == name) {
            Some(call) if call == self.current_call => {
                Err("a call cannot read its own response".to_string())
            }
            Some(call) => Ok(CallId::new(call)),
            None => {
                let hint = crate::config::closest(name, &self.call_names)
                    .map(|known| format!(" (did you mean \"{known}\"?)"))
                    .unwrap_or_default();
                Err(format!("the route has no call named \"{name}\"{hint}"))
            }
        }
    }

    fn batch_keys(&mut self, call: CallId, path: &JsonPath) -> bool {
        self.batch_keys
            .as_ref()
            .is_some_and(|(source, keys)| *source == call && keys.same_path(path))
    }

    fn item(&mut self) -> Result<(), String> {
        if self.item_allowed {
            Ok(())
        } else {
            Err("{item} needs for_each on the call".to_string())
        }
    }

    fn request_body_field(&mut self) {
        self.reads_body_fields = true;
    }
}
