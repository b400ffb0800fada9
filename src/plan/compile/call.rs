//! One call (SPEC §2.3), compiled section by section in the order of the configuration
//! reference: name, output key, fan-out and join (first: a batch join changes what its
//! templates' keys placeholder means), target, headers and forwarding, limits, fallback and
//! body, condition, dependencies; then its resilience (`resilience.rs`) and shaping.

use super::checks::{check_header_name, check_method, check_name, check_output_key, named_once};
use super::checks::{lower_header_list, may_repeat};
use super::limits::{self, BATCH, FAN_OUT, MAX_BODY, TIMEOUT_MS};
use super::{CallCompiler, Context};
use crate::config::{CallConfig, ConditionConfig, ConfigError, Format, JoinConfig, Layout};
use crate::json_path::JsonPath;
use crate::plan::body::BodyTemplate;
use crate::plan::condition::Condition;
use crate::plan::template::{parse_reference, Resolve, Source, Template};
use crate::plan::{Batch, Call, CallId, CallResilience, Fallback, FanOut, Join};
use crate::shape::CallShape;
use std::rc::Rc;

/// The headers a call sets: lowercase name and value template.
type Headers = Vec<(Rc<str>, Template)>;
/// The client headers a call forwards: lowercase name and slot in `Route::headers`.
type Forward = Vec<(Rc<str>, usize)>;

/// Where a call goes, besides its cluster: `method` (upper-cased), `path`, `authority`.
struct Target {
    method: String,
    path: Template,
    authority: String,
}

impl Call {
    /// Compiles the call at `index` of its route (SPEC §2.3) in the route's context. Its
    /// templates add the client inputs they read to `cx.inputs`; dependencies on later calls
    /// are allowed (the route orders the calls afterwards).
    ///
    /// Errors name the route, the call and the key, e.g. `route "page" call "reviews" key
    /// "path": must start with "/"`.
    pub(super) fn compile<'c>(
        config: &'c CallConfig,
        index: usize,
        cx: &mut Context<'c>,
    ) -> Result<Call, ConfigError> {
        cx.inputs.current_call = index;
        cx.inputs.item_allowed = config.for_each.is_some();
        cx.inputs.batch_keys = None;
        let mut c = CallCompiler {
            config,
            index,
            place: cx.place.call(&config.name),
            cx,
        };
        c.name()?;
        let output_key = c.output_key()?;
        let fan_out = c.fan_out()?;
        let (join, batch) = c.join(fan_out.as_ref())?;
        // Before the templates are parsed: in a batch join, the placeholder that reads the keys
        // sends one chunk of them (`Source::Batch`).
        c.cx.inputs.batch_keys = batch.as_ref().map(|b| (b.source, b.keys.clone()));
        let target = c.target()?;
        let (headers, forward) = c.headers_and_forwarding()?;
        let (timeout_ms, max_body_bytes) = c.limits()?;
        let fallback = c.fallback()?;
        let body = c.body()?;
        let when = c.when()?;
        let dependencies = c.after()?;
        let mut call = Call {
            name: config.name.clone(),
            cluster: config.cluster.as_str().into(),
            may_repeat: may_repeat(&target.method, config.unsafe_repeat),
            method: target.method.into(),
            authority: target.authority.into(),
            path: target.path,
            headers,
            forward,
            timeout_ms,
            required: config.required,
            fallback,
            format: config.format,
            max_body_bytes,
            dependencies,
            // Known once every call of the route is compiled (`mark_bodies_needed`).
            body_needed: false,
            body,
            fan_out,
            batch,
            join,
            when,
            shape: None,
            keyed: config.output_key.is_some(),
            output_key,
            copy_headers: Vec::new(),
            resilience: CallResilience::default(),
        };
        // Resilience depends on what the call sends (method, headers, forwarded credentials):
        // it is compiled from the call itself.
        call.resilience = CallResilience::compile(&call, &mut c)?;
        call.shape = CallShape::compile(config).map_err(|e| c.place.locate(e))?;
        c.implied_dependencies(&mut call)?;
        c.batch_sends_its_keys(&call)?;
        Ok(call)
    }
}

impl CallCompiler<'_, '_> {
    /// The calls before this one in the route.
    fn earlier(&self) -> &[CallConfig] {
        self.cx.route.calls.get(..self.index).unwrap_or_default()
    }

    /// `name` (SPEC §2.3): valid and unique in the route; neither it nor `as` may be the
    /// completeness object's key.
    fn name(&self) -> Result<(), ConfigError> {
        let (config, place) = (self.config, &self.place);
        check_name(&config.name).map_err(|why| place.error(Some("name"), why))?;
        if self.earlier().iter().any(|c| c.name == config.name) {
            return Err(place.error(Some("name"), "another call of this route has the same name"));
        }
        if let Some(which) = self.meta_clash() {
            return Err(place.error(
                Some(which),
                "clashes with the completeness object's key (response.meta)",
            ));
        }
        Ok(())
    }

    /// `as` (SPEC §5), or the name: the key the client sees the call under, valid, meaningful
    /// in the layout, and unlike every earlier call's.
    fn output_key(&self) -> Result<String, ConfigError> {
        let (config, place) = (self.config, &self.place);
        let key = output_key(config);
        check_output_key(key).map_err(|why| place.error(Some("as"), why))?;
        if config.output_key.is_some() {
            if config.join.is_some() {
                return Err(place.error(
                    Some("as"),
                    "a joined call shows inside its target: as has no effect",
                ));
            }
            if self.cx.route.response.layout == Layout::Concat {
                return Err(place.error(
                    Some("as"),
                    "the concat layout has no keys: as has no effect",
                ));
            }
        }
        let clash = self.earlier().iter().find(|earlier| {
            output_key(earlier) == key || earlier.name == key || output_key(earlier) == config.name
        });
        if let Some(earlier) = clash {
            return Err(place.error(
                Some("as"),
                format!(
                    "output key \"{key}\" is already used by call \"{}\"",
                    earlier.name
                ),
            ));
        }
        Ok(key.to_string())
    }

    /// The key of the call that clashes with the completeness object's (`response.meta`, SPEC
    /// §5), if one does: its name, or the `as` it is shown under.
    fn meta_clash(&self) -> Option<&'static str> {
        let meta = self.cx.route.response.meta.as_deref()?;
        if self.config.name == meta {
            Some("name")
        } else if output_key(self.config) == meta {
            Some("as")
        } else {
            None
        }
    }

    /// `cluster`, `method`, `path`, `authority`.
    fn target(&mut self) -> Result<Target, ConfigError> {
        let (config, place) = (self.config, &self.place);
        if config.cluster.is_empty() || config.cluster.chars().any(char::is_control) {
            return Err(place.error(Some("cluster"), "must be the name of an Envoy cluster"));
        }
        let method =
            check_method(&config.method).map_err(|why| place.error(Some("method"), why))?;
        if !config.path.starts_with('/') {
            return Err(place.error(Some("path"), "must start with \"/\""));
        }
        let path = Template::parse(&config.path, &mut self.cx.inputs)
            .map_err(|why| place.error(Some("path"), why))?;
        let unsafe_char = |c: char| c == '#' || c.is_whitespace() || c.is_control();
        if path.literals().any(|text| text.chars().any(unsafe_char)) {
            return Err(place.error(
                Some("path"),
                "must not contain whitespace, control characters or '#'",
            ));
        }
        let authority = config
            .authority
            .clone()
            .unwrap_or_else(|| config.cluster.clone());
        if authority.is_empty()
            || authority
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(place.error(
                Some("authority"),
                "must be a host name (optionally with a port)",
            ));
        }
        Ok(Target {
            method,
            path,
            authority,
        })
    }

    /// `headers` (templates) and `forward_headers` (added to the inherited ones; a header the
    /// call sets is not forwarded).
    fn headers_and_forwarding(&mut self) -> Result<(Headers, Forward), ConfigError> {
        let (config, place) = (self.config, &self.place);
        let mut headers: Headers = Vec::with_capacity(config.headers.len());
        let mut seen = Vec::with_capacity(config.headers.len());
        for (name, value) in &config.headers {
            let key = format!("headers.{name}");
            let lower = check_header_name(name).map_err(|why| place.error(Some(&key), why))?;
            named_once(&mut seen, &lower).map_err(|why| place.error(Some(&key), why))?;
            let template = Template::parse(value, &mut self.cx.inputs)
                .map_err(|why| place.error(Some(&key), why))?;
            let defaults = template.placeholders().filter_map(|p| p.default.as_deref());
            if template
                .literals()
                .chain(defaults)
                .any(|t| t.contains(['\r', '\n', '\0']))
            {
                return Err(place.error(Some(&key), "must not contain CR, LF or NUL"));
            }
            headers.push((lower.into(), template));
        }
        let mut names = self.cx.forward.clone();
        for name in lower_header_list(&config.forward_headers, place, "forward_headers", true)? {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let forward = names
            .into_iter()
            .filter(|name| !headers.iter().any(|(set, _)| **set == **name))
            .map(|name| {
                let slot = self.cx.inputs.header(&name);
                (name.into(), slot)
            })
            .collect();
        Ok((headers, forward))
    }

    /// `timeout_ms` and `max_body_bytes`, checked as written, then inherited.
    fn limits(&self) -> Result<(u64, u64), ConfigError> {
        let (config, route, defaults) = (self.config, self.cx.route, self.cx.defaults);
        limits::check(
            &[
                (TIMEOUT_MS, config.timeout_ms),
                (MAX_BODY, config.max_body_bytes),
            ],
            &self.place,
            "",
        )?;
        let timeout_ms = config
            .timeout_ms
            .or(route.timeout_ms)
            .unwrap_or(defaults.timeout_ms);
        let max_body_bytes = config
            .max_body_bytes
            .or(route.max_body_bytes)
            .unwrap_or(defaults.max_body_bytes);
        Ok((timeout_ms, max_body_bytes))
    }

    /// `fallback`: any JSON value, serialised once; never on a required call.
    fn fallback(&self) -> Result<Option<Fallback>, ConfigError> {
        let Some(value) = &self.config.fallback else {
            return Ok(None);
        };
        if self.config.required {
            return Err(self.place.error(
                Some("fallback"),
                "a required call never uses a fallback: remove one of the two",
            ));
        }
        let json = serde_json::to_vec(value)
            .map_err(|e| self.place.error(Some("fallback"), e.to_string()))?;
        Ok(Some(Fallback {
            json,
            value: value.clone(),
        }))
    }

    /// `body` (SPEC §3.4): the client's body, or a JSON template.
    fn body(&mut self) -> Result<Option<BodyTemplate>, ConfigError> {
        let Some(value) = &self.config.body else {
            return Ok(None);
        };
        BodyTemplate::compile(value, &mut self.cx.inputs)
            .map(Some)
            .map_err(|why| self.place.error(Some("body"), why))
    }

    /// `for_each: "calls.X.path[*].field"` and `max_fan_out` (SPEC §3.5).
    fn fan_out(&mut self) -> Result<Option<FanOut>, ConfigError> {
        let (config, place) = (self.config, &self.place);
        let Some(text) = &config.for_each else {
            let batch = config.join.as_ref().is_some_and(|j| j.matches.is_some());
            if config.max_fan_out.is_some() && !batch {
                return Err(place.error(
                    Some("max_fan_out"),
                    "only applies to a call with for_each, or to a batch join (join with match)",
                ));
            }
            return Ok(None);
        };
        let key = Some("for_each");
        let Some(reference) = text.strip_prefix("calls.") else {
            return Err(place.error(
                key,
                "must read an earlier call: \"calls.<call>.<path>[*].<field>\"",
            ));
        };
        let (name, path) = reference.split_once('.').unwrap_or((reference, ""));
        let source = self
            .cx
            .inputs
            .call(name)
            .map_err(|why| place.error(key, why))?;
        let path = JsonPath::parse(path).map_err(|why| place.error(key, why))?;
        if !path.has_wildcard() {
            return Err(place.error(key, "needs [*] to say which array to take the items from"));
        }
        Ok(Some(FanOut {
            source,
            path,
            max_items: self.max_fan_out()?,
        }))
    }

    /// `max_fan_out`, checked as written, then inherited: most items of a `for_each` call,
    /// most requests of a batch join.
    fn max_fan_out(&self) -> Result<usize, ConfigError> {
        let config = self.config;
        limits::check(&[(FAN_OUT, config.max_fan_out)], &self.place, "")?;
        let max = config
            .max_fan_out
            .or(self.cx.route.max_fan_out)
            .unwrap_or(self.cx.defaults.max_fan_out);
        Ok(usize::try_from(max).unwrap_or(usize::MAX))
    }

    /// `join` (SPEC §3.5): into the array of the call `for_each` reads; or, with `match`, a
    /// batch join into the array whose keys the call sends (with `max_batch`).
    fn join(
        &mut self,
        fan_out: Option<&FanOut>,
    ) -> Result<(Option<Join>, Option<Batch>), ConfigError> {
        let (config, place) = (self.config, &self.place);
        let batch = config.join.as_ref().and_then(|j| j.matches.as_ref());
        if config.max_batch.is_some() && batch.is_none() {
            return Err(place.error(
                Some("max_batch"),
                "only applies to a batch join (join with match)",
            ));
        }
        let Some(join) = &config.join else {
            return Ok((None, None));
        };
        match (fan_out, batch) {
            (None, None) => {
                return Err(place.error(
                    Some("join"),
                    "needs for_each (one request per item), or match for a batch join (the keys sent together through a [*] placeholder)",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(place.error(
                    Some("join.match"),
                    "a for_each join matches each element with its item: match is for a batch join, without for_each",
                ))
            }
            _ => {}
        }
        let JoinConfig {
            into,
            on,
            matches,
            key,
        } = join;
        let (target_name, into) = into.split_once('.').unwrap_or((into.as_str(), ""));
        let target = self
            .cx
            .inputs
            .call(target_name)
            .map_err(|why| place.error(Some("join.into"), why))?;
        if fan_out.is_some_and(|f| target != f.source) {
            return Err(place.error(
                Some("join.into"),
                "must be in the body of the call for_each reads (\"<that call>.<path to array>\")",
            ));
        }
        let plain_path = |text: &str, key: &str| -> Result<JsonPath, ConfigError> {
            let path = JsonPath::parse(text).map_err(|why| place.error(Some(key), why))?;
            if path.has_wildcard() || text.is_empty() {
                return Err(place.error(Some(key), "must be a non-empty dot path without [*]"));
            }
            Ok(path)
        };
        if key.is_empty() {
            return Err(place.error(Some("join.as"), "must be a non-empty key"));
        }
        let join = Join {
            target,
            into: plain_path(into, "join.into")?,
            on: plain_path(on, "join.on")?,
            key: key.clone(),
        };
        let Some(matches) = matches else {
            return Ok((Some(join), None));
        };
        if config.format == Format::Text {
            return Err(place.error(
                Some("format"),
                "a batch join reads an array of objects: its answers must be JSON",
            ));
        }
        limits::check(&[(BATCH, config.max_batch)], place, "")?;
        let max_keys = config
            .max_batch
            .or(self.cx.route.max_batch)
            .unwrap_or(self.cx.defaults.max_batch);
        let keys = JsonPath::parse(&format!("{}[*].{}", join.into.as_str(), join.on.as_str()))
            .map_err(|why| place.error(Some("join"), why))?;
        let batch = Batch {
            source: target,
            keys,
            matches: plain_path(matches, "join.match")?,
            max_keys: usize::try_from(max_keys).unwrap_or(usize::MAX),
            max_requests: self.max_fan_out()?,
        };
        Ok((Some(join), Some(batch)))
    }

    /// A batch join must send its keys: some placeholder reads exactly the keys it joins on
    /// (`{calls.posts.items[*].author}` for `"into": "posts.items", "on": "author"`).
    fn batch_sends_its_keys(&self, call: &Call) -> Result<(), ConfigError> {
        let Some(batch) = &call.batch else {
            return Ok(());
        };
        if call.placeholders().any(|p| p.source == Source::Batch) {
            return Ok(());
        }
        let source = self
            .cx
            .inputs
            .call_names
            .get(batch.source.index())
            .copied()
            .unwrap_or_default();
        Err(self.place.error(
            Some("join"),
            format!(
                "a batch join sends the keys it joins on: put {{calls.{source}.{}}} in the path (or a header or the body)",
                batch.keys.as_str()
            ),
        ))
    }

    /// `when` (SPEC §3.6): every reference resolved like a template's (a call it reads becomes
    /// a dependency); each error names the operator's key, e.g. `when.all[1].equals`.
    fn when(&mut self) -> Result<Option<Condition>, ConfigError> {
        let Some(when) = &self.config.when else {
            return Ok(None);
        };
        self.condition(when, "when".to_string()).map(Some)
    }

    fn condition(&mut self, when: &ConditionConfig, key: String) -> Result<Condition, ConfigError> {
        let list = |c: &mut Self, list: &[ConditionConfig], op: &str| {
            list.iter()
                .enumerate()
                .map(|(i, inner)| c.condition(inner, format!("{key}.{op}[{i}]")))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(match when {
            ConditionConfig::Present(reference) => {
                Condition::Present(self.reference(reference, &format!("{key}.present"))?)
            }
            ConditionConfig::Equals(reference, literal) => Condition::Equals(
                self.reference(reference, &format!("{key}.equals"))?,
                literal.clone(),
            ),
            ConditionConfig::In(reference, literals) => Condition::In(
                self.reference(reference, &format!("{key}.in"))?,
                literals.clone(),
            ),
            ConditionConfig::All(conditions) => Condition::All(list(self, conditions, "all")?),
            ConditionConfig::Any(conditions) => Condition::Any(list(self, conditions, "any")?),
            ConditionConfig::Not(inner) => {
                Condition::Not(Box::new(self.condition(inner, format!("{key}.not"))?))
            }
        })
    }

    /// One reference of a condition: a template source without braces or default, naming one
    /// value.
    fn reference(
        &mut self,
        reference: &str,
        key: &str,
    ) -> Result<crate::plan::template::Placeholder, ConfigError> {
        let place = &self.place;
        let bad = |why: &str| place.error(Some(key), format!("reference \"{reference}\": {why}"));
        if reference == "item" {
            return Err(bad(
                "when is judged once for the whole call, before any item: it cannot read item",
            ));
        }
        if reference.contains(['{', '}', '|']) {
            return Err(bad(
                "write the source alone, as in \"query.page\": no braces and no default",
            ));
        }
        let placeholder =
            parse_reference(reference, &mut self.cx.inputs).map_err(|why| bad(&why))?;
        let wildcard = match &placeholder.source {
            Source::Call { path, .. } | Source::RequestBody(path) => path.has_wildcard(),
            Source::Batch => true,
            _ => false,
        };
        if wildcard {
            return Err(bad("a condition reads one value: [*] is not allowed"));
        }
        Ok(placeholder)
    }

    /// `after` (SPEC §3.2): names of calls that must finish first, each once.
    fn after(&mut self) -> Result<Vec<CallId>, ConfigError> {
        let mut dependencies = Vec::new();
        for name in &self.config.after {
            let dependency = self
                .cx
                .inputs
                .call(name)
                .map_err(|why| self.place.error(Some("after"), why))?;
            if !dependencies.contains(&dependency) {
                dependencies.push(dependency);
            }
        }
        Ok(dependencies)
    }

    /// The dependencies the templates, `when`, `for_each` and `join` imply (SPEC §3.2, §3.6),
    /// added to `after`'s; and a `for_each` call must use `{item}`, or every item would make the
    /// same call.
    fn implied_dependencies(&self, call: &mut Call) -> Result<(), ConfigError> {
        let implied: Vec<CallId> = call
            .references()
            .filter_map(|p| match p.source {
                Source::Call { call, .. } => Some(call),
                _ => None,
            })
            .chain(call.fan_out.as_ref().map(|f| f.source))
            .chain(call.join.as_ref().map(|j| j.target))
            .collect();
        for dependency in implied {
            if !call.dependencies.contains(&dependency) {
                call.dependencies.push(dependency);
            }
        }
        if call.fan_out.is_some() && !call.placeholders().any(|p| p.source == Source::Item) {
            return Err(self.place.error(
                Some("for_each"),
                "the call never uses {item}, so every item would make the same call",
            ));
        }
        Ok(())
    }
}

/// The key the client sees the call under: `as`, or its name.
fn output_key(call: &CallConfig) -> &str {
    call.output_key.as_deref().unwrap_or(&call.name)
}
