//! The JSON Schema of the configuration (`schema/config.schema.json`, SPEC §7) agrees with the
//! filter's own parser (`Plan::compile`), and every shipped example passes both:
//!
//! - the schema is a valid draft 2020-12 schema, every key has a description, every object is
//!   closed (`additionalProperties: false`, like the filter);
//! - the schema knows exactly the keys the filter reads, level by level (the filter's own
//!   "unknown key" errors list them);
//! - shipped examples pass both: the Wasm filter configurations in `envoy/*.yaml` and
//!   `envoy/istio/*.yaml`, the `pluginConfig` of the Istio manifests, and the ```json blocks of
//!   README.md (whole configurations; routes and calls wrapped into a minimal configuration);
//! - wrong configurations are rejected by both, and edge cases (nulls that switch things off,
//!   any JSON body or fallback, ...) are accepted by both;
//! - the Istio manifests agree with each other and avoid YAML 1.1 traps.
//!
//! Nothing here starts Envoy: `make test` runs it with the integration tests.

// The checks are helpers outside #[test] functions, which clippy does not count as tests,
// and they fail a test the way a test does: by panicking with the file and the place.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "common/unique_keys.rs"]
mod unique_keys;
mod yaml;

use gateway_aggregator::plan::Plan;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

const SCHEMA: &str = "schema/config.schema.json";
const WASM_FILTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const STRING_VALUE_TYPE: &str = "type.googleapis.com/google.protobuf.StringValue";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    fs::read_to_string(repo().join(relative))
        .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

/// Read with unique keys: a key written twice (two `allOf`s from two branches, say) would
/// otherwise silently drop the first.
fn schema() -> Value {
    unique_keys::parse_unique_keys(read(SCHEMA).as_bytes())
        .unwrap_or_else(|e| panic!("{SCHEMA} is not JSON with unique keys: {e}"))
}

fn validator() -> jsonschema::Validator {
    jsonschema::draft202012::new(&schema())
        .unwrap_or_else(|e| panic!("{SCHEMA} does not compile as a draft 2020-12 schema: {e}"))
}

/// Every schema violation, one line each, with the place in the configuration.
fn schema_errors(validator: &jsonschema::Validator, config: &Value) -> Vec<String> {
    validator
        .iter_errors(config)
        .map(|e| {
            let at = e.instance_path().to_string();
            let at = if at.is_empty() { "/".to_string() } else { at };
            format!("at {at}: {e}")
        })
        .collect()
}

/// The filter's verdict on a configuration: exactly what `on_configure` does with its bytes.
fn filter_verdict(config: &Value) -> Result<(), String> {
    let bytes = serde_json::to_vec(config).unwrap();
    Plan::compile(&bytes).map(|_| ()).map_err(|e| e.to_string())
}

/// A configuration found in a shipped file, and where.
struct Example {
    source: String,
    config: Value,
}

/// Checks examples against both; returns one message per example that fails either.
fn check_examples(examples: &[Example]) -> Vec<String> {
    let validator = validator();
    let mut failures = Vec::new();
    for example in examples {
        let errors = schema_errors(&validator, &example.config);
        if !errors.is_empty() {
            failures.push(format!(
                "{}: the schema rejects it:\n    {}",
                example.source,
                errors.join("\n    ")
            ));
        }
        if let Err(why) = filter_verdict(&example.config) {
            failures.push(format!("{}: the filter rejects it: {why}", example.source));
        }
    }
    failures
}

// ---------------------------------------------------------------------------------------------
// The schema itself

#[test]
fn schema_is_a_valid_draft_2020_12_schema() {
    let schema = schema();
    if let Err(e) = jsonschema::draft202012::meta::validate(&schema) {
        panic!("{SCHEMA} is not a valid draft 2020-12 schema: {e}");
    }
    assert_eq!(
        schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
        "{SCHEMA}: $schema"
    );
    for key in ["$id", "title", "description"] {
        assert!(
            schema[key].as_str().is_some_and(|s| !s.is_empty()),
            "{SCHEMA}: {key} is missing"
        );
    }
    validator();
}

/// Resolves `{"$ref": "#/$defs/x"}` (one level) for the structural checks below.
fn resolve<'a>(schema: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("{SCHEMA}: only local $refs are expected: {reference}"));
            schema
                .pointer(pointer)
                .unwrap_or_else(|| panic!("{SCHEMA}: dangling $ref {reference}"))
        }
        None => node,
    }
}

fn walk_schema<'a>(node: &'a Value, path: String, visit: &mut dyn FnMut(&str, &'a Value)) {
    match node {
        Value::Object(map) => {
            visit(&path, node);
            for (key, child) in map {
                walk_schema(child, format!("{path}/{key}"), visit);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                walk_schema(child, format!("{path}/{i}"), visit);
            }
        }
        _ => {}
    }
}

#[test]
fn every_key_is_described_and_every_object_is_closed() {
    let schema = schema();
    let mut failures = Vec::new();
    walk_schema(&schema, String::new(), &mut |path, node| {
        let Some(properties) = node.get("properties").and_then(Value::as_object) else {
            return;
        };
        // `properties: {x: false}` inside if/then/else only forbids keys; those are not objects
        // of the configuration.
        let describes_an_object = node.get("type") == Some(&json!("object"))
            || node.get("additionalProperties").is_some();
        if !describes_an_object {
            return;
        }
        if node.get("additionalProperties") != Some(&Value::Bool(false)) {
            failures.push(format!(
                "{path}: an object without \"additionalProperties\": false"
            ));
        }
        for (key, property) in properties {
            let described = property.get("description").is_some()
                || resolve(&schema, property).get("description").is_some();
            if !described {
                failures.push(format!("{path}/properties/{key}: no description"));
            }
        }
    });
    assert!(
        failures.is_empty(),
        "{SCHEMA}:\n  {}",
        failures.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// The schema knows the keys the filter reads

fn minimal() -> Value {
    json!({"routes": [{
        "name": "page",
        "match": {"path": "/p/{id}"},
        "calls": [
            {"name": "product", "cluster": "catalog", "path": "/products/{path.id}"},
            {"name": "reviews", "cluster": "reviews", "path": "/reviews/{path.id}"}
        ]
    }]})
}

/// Sets (or adds) the value at a JSON pointer whose parent exists.
fn set(config: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = config
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("no {parent} in the configuration"));
    match parent {
        Value::Object(map) => {
            map.insert(key.to_string(), value);
        }
        Value::Array(items) => {
            let index: usize = key.parse().unwrap();
            if index == items.len() {
                items.push(value);
            } else {
                items[index] = value;
            }
        }
        other => panic!("{pointer}: parent is {other}"),
    }
}

fn remove(config: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = config.pointer_mut(parent).unwrap();
    parent.as_object_mut().unwrap().remove(key).unwrap();
}

/// The minimal configuration with these changes.
fn variant(changes: &[(&str, Value)]) -> Value {
    let mut config = minimal();
    for (pointer, value) in changes {
        set(&mut config, pointer, value.clone());
    }
    config
}

/// The keys the filter knows at a level, from its own error about an unknown key, which has
/// one style at every level: `... key "x.zz": unknown key (did you mean …?); known keys here: a, b`.
fn filter_known_keys(config: &Value) -> BTreeSet<String> {
    let error = filter_verdict(config).expect_err("a configuration with an unknown key passed");
    let (_, list) = error
        .split_once("known keys here: ")
        .filter(|(start, _)| {
            start.contains(".zz\": unknown key") || start.contains("\"zz\": unknown key")
        })
        .unwrap_or_else(|| panic!("not the one unknown-key style: {error}"));
    list.split(", ").map(str::to_string).collect()
}

fn schema_keys(schema: &Value, pointer: &str) -> BTreeSet<String> {
    schema
        .pointer(pointer)
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("{SCHEMA}: nothing at {pointer}"))
        .keys()
        .cloned()
        .collect()
}

#[test]
fn schema_and_filter_know_the_same_keys_at_every_level() {
    let schema = schema();
    let for_each_call = json!({
        "name": "authors", "cluster": "users", "path": "/users/{item}",
        "for_each": "calls.product.items[*].author",
        "join": {"into": "product.items", "on": "author", "as": "detail", "zz": 1}
    });
    let levels: Vec<(&str, Value, &str)> = vec![
        ("top level", variant(&[("/zz", json!(1))]), "/properties"),
        (
            "defaults",
            variant(&[("/defaults", json!({"zz": 1}))]),
            "/$defs/defaults/properties",
        ),
        (
            "routes[]",
            variant(&[("/routes/0/zz", json!(1))]),
            "/$defs/route/properties",
        ),
        (
            "match",
            variant(&[("/routes/0/match/zz", json!(1))]),
            "/$defs/match/properties",
        ),
        (
            "response",
            variant(&[("/routes/0/response", json!({"zz": 1}))]),
            "/$defs/response/properties",
        ),
        (
            "calls[]",
            variant(&[("/routes/0/calls/0/zz", json!(1))]),
            "/$defs/call/properties",
        ),
        (
            "retries",
            variant(&[("/routes/0/retries", json!({"attempts": 2, "zz": 1}))]),
            "/$defs/retries/properties",
        ),
        (
            "cache",
            variant(&[("/routes/0/cache", json!({"ttl_ms": 5, "zz": 1}))]),
            "/$defs/cache/properties",
        ),
        (
            "circuit_breaker",
            variant(&[(
                "/routes/0/circuit_breaker",
                json!({"failures": 1, "open_ms": 1, "zz": 1}),
            )]),
            "/$defs/circuitBreaker/properties",
        ),
        (
            "join",
            variant(&[("/routes/0/calls/1", for_each_call)]),
            "/$defs/call/properties/join/properties",
        ),
        (
            "when",
            variant(&[(
                "/routes/0/calls/1/when",
                json!({"present": "query.x", "zz": 1}),
            )]),
            "/$defs/condition/properties",
        ),
        (
            "response.headers_from[]",
            variant(&[(
                "/routes/0/response",
                json!({"headers_from": [{"call": "product", "name": "set-cookie", "zz": 1}]}),
            )]),
            "/$defs/response/properties/headers_from/items/properties",
        ),
    ];
    let mut failures = Vec::new();
    for (level, config, pointer) in levels {
        let filter = filter_known_keys(&config);
        let schema = schema_keys(&schema, pointer);
        if filter != schema {
            failures.push(format!(
                "{level}: only the filter reads {:?}; only the schema has {:?}",
                filter.difference(&schema).collect::<Vec<_>>(),
                schema.difference(&filter).collect::<Vec<_>>()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{SCHEMA} and the filter (src/config.rs) disagree on keys:\n  {}",
        failures.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// Shipped examples

/// Every YAML document of a file, as JSON values, read as YAML 1.2 (tests/yaml/mod.rs). How
/// Kubernetes (YAML 1.1) reads the Istio manifests is the quoting test's business, below.
fn yaml_documents(relative: &str) -> Vec<Value> {
    yaml::documents(&read(relative), yaml::Reading::Yaml12)
        .unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// The filter configurations in a parsed YAML document: the StringValue `configuration` of every
/// Envoy Wasm filter config, and the `pluginConfig` of Istio WasmPlugin / TrafficExtension.
fn configurations_in(document: &Value, source: &str, found: &mut Vec<Example>) {
    match document.get("kind").and_then(Value::as_str) {
        Some("WasmPlugin") => found.push(Example {
            source: format!("{source} WasmPlugin spec.pluginConfig"),
            config: document["spec"]["pluginConfig"].clone(),
        }),
        Some("TrafficExtension") => found.push(Example {
            source: format!("{source} TrafficExtension spec.wasm.pluginConfig"),
            config: document["spec"]["wasm"]["pluginConfig"].clone(),
        }),
        _ => {}
    }
    walk_wasm_filters(document, source, found);
}

fn walk_wasm_filters(node: &Value, source: &str, found: &mut Vec<Example>) {
    match node {
        Value::Object(map) => {
            if map.get("@type").and_then(Value::as_str) == Some(WASM_FILTER_TYPE) {
                let plugin = &node["config"];
                let configuration = &plugin["configuration"];
                assert_eq!(
                    configuration["@type"], STRING_VALUE_TYPE,
                    "{source}: the Wasm filter {} has no StringValue configuration",
                    plugin["name"]
                );
                let text = configuration["value"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{source}: configuration.value is not a string"));
                let config = serde_json::from_str(text).unwrap_or_else(|e| {
                    panic!(
                        "{source}: the configuration of Wasm filter {} is not JSON: {e}",
                        plugin["name"]
                    )
                });
                found.push(Example {
                    source: format!(
                        "{source} Wasm filter {} configuration.value",
                        plugin["name"]
                    ),
                    config,
                });
            }
            for child in map.values() {
                walk_wasm_filters(child, source, found);
            }
        }
        Value::Array(items) => {
            for child in items {
                walk_wasm_filters(child, source, found);
            }
        }
        _ => {}
    }
}

/// `dir/*.yaml` and `dir/*.yml`, sorted, as paths relative to the repository.
fn yaml_files(dir: &str) -> Vec<String> {
    let mut files: Vec<String> = fs::read_dir(repo().join(dir))
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .map(|entry| entry.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .map(|p| format!("{dir}/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    files.sort();
    files
}

fn file_examples(relative: &str) -> Vec<Example> {
    let mut found = Vec::new();
    for (i, document) in yaml_documents(relative).iter().enumerate() {
        configurations_in(
            document,
            &format!("{relative} (document {})", i + 1),
            &mut found,
        );
    }
    found
}

#[test]
fn envoy_and_istio_configs_pass_the_schema_and_the_filter() {
    let mut examples = Vec::new();
    let mut summary = Vec::new();
    for file in yaml_files("envoy")
        .into_iter()
        .filter(|f| {
            !Path::new(f)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("docker-compose")
        })
        .chain(yaml_files("envoy/istio"))
    {
        let found = file_examples(&file);
        summary.push(format!("{file}: {}", found.len()));
        examples.extend(found);
    }
    println!("configurations checked: {}", summary.join(", "));
    // The files that must carry one (a file dropped or renamed must not go unchecked).
    for (file, at_least) in [
        ("envoy/gateway.yaml", 1),
        ("envoy/istio/wasmplugin.yaml", 1),
        ("envoy/istio/trafficextension.yaml", 1),
        ("envoy/istio/envoyfilter-stop-iteration.yaml", 1),
    ] {
        let count = examples
            .iter()
            .filter(|e| e.source.starts_with(&format!("{file} ")))
            .count();
        assert!(
            count >= at_least,
            "{file}: expected at least {at_least} filter configuration(s), found {count}"
        );
    }
    let failures = check_examples(&examples);
    assert!(
        failures.is_empty(),
        "shipped configurations that fail:\n{}",
        failures.join("\n")
    );
}

/// The ```json blocks of a Markdown file: (line of the opening fence, text).
fn json_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, line) in markdown.lines().enumerate() {
        let fence = line.trim();
        match current.take() {
            None => {
                if fence == "```json" {
                    current = Some((index + 1, String::new()));
                }
            }
            Some((start, mut text)) => {
                if fence == "```" {
                    blocks.push((start, text));
                } else {
                    text.push_str(line);
                    text.push('\n');
                    current = Some((start, text));
                }
            }
        }
    }
    assert!(current.is_none(), "an unterminated ```json block");
    blocks
}

fn is_route(value: &Value) -> bool {
    value.get("match").is_some() && value.get("calls").is_some()
}

fn is_call(value: &Value) -> bool {
    value.get("cluster").is_some() && value.get("path").is_some() && !is_route(value)
}

fn has_config_key(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.iter().any(|(key, child)| {
            ["routes", "calls", "cluster"].contains(&key.as_str()) || has_config_key(child)
        }),
        Value::Array(items) => items.iter().any(has_config_key),
        _ => false,
    }
}

/// The `{path.<capture>}` names the calls read, so a wrapping route can capture them.
fn path_captures(calls: &[Value]) -> Vec<String> {
    let text = serde_json::to_string(calls).unwrap();
    let mut names: Vec<String> = text
        .split("{path.")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                .collect()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// A minimal configuration around README calls: one route that captures what they read and
/// accepts POST when a call has a body.
fn wrap_calls(calls: Vec<Value>, line: usize) -> Value {
    let captures = path_captures(&calls);
    let path: String = std::iter::once("/readme".to_string())
        .chain(captures.iter().map(|c| format!("/{{{c}}}")))
        .collect::<Vec<_>>()
        .join("");
    let methods = if calls.iter().any(|c| c.get("body").is_some()) {
        json!(["POST"])
    } else {
        json!(["GET"])
    };
    json!({"routes": [{
        "name": format!("readme-line-{line}"),
        "match": {"path": path, "methods": methods},
        "calls": calls
    }]})
}

/// What a README block is: a whole configuration, routes, calls, or something else (a response).
enum Block {
    Configuration(Value),
    Routes(Vec<Value>),
    Calls(Vec<Value>),
    Other,
}

fn classify(value: Value) -> Block {
    let list = match value {
        Value::Object(ref map) if map.contains_key("routes") => return Block::Configuration(value),
        Value::Object(_) => vec![value],
        Value::Array(items) => items,
        _ => return Block::Other,
    };
    if !list.is_empty() && list.iter().all(is_route) {
        Block::Routes(list)
    } else if !list.is_empty() && list.iter().all(is_call) {
        Block::Calls(list)
    } else {
        Block::Other
    }
}

/// README blocks as examples. Rule: a block whose object has "routes" is a whole configuration;
/// one route or several (`{...}, {...}`) are wrapped as `{"routes": [...]}`; one call or several
/// are wrapped into a route; anything else (responses, bodies) is skipped, and must not look like
/// configuration (no "routes", "calls" or "cluster" key anywhere).
fn markdown_examples(relative: &str) -> (Vec<Example>, Vec<String>, Vec<String>) {
    let mut examples = Vec::new();
    let mut skipped = Vec::new();
    let mut failures = Vec::new();
    for (line, text) in json_blocks(&read(relative)) {
        let source = format!("{relative} line {line}");
        let parsed = serde_json::from_str::<Value>(&text)
            .or_else(|_| serde_json::from_str::<Value>(&format!("[{text}]")));
        let Ok(value) = parsed else {
            if text.contains("\"routes\"") || text.contains("\"cluster\"") {
                failures.push(format!(
                    "{source}: looks like configuration but is not JSON"
                ));
            } else {
                skipped.push(format!("{source} (not JSON)"));
            }
            continue;
        };
        let looks_like_configuration = has_config_key(&value);
        match classify(value) {
            Block::Configuration(config) => examples.push(Example {
                source: format!("{source} (whole configuration)"),
                config,
            }),
            Block::Routes(routes) => examples.push(Example {
                source: format!("{source} ({} route(s), wrapped)", routes.len()),
                config: json!({ "routes": routes }),
            }),
            Block::Calls(calls) => examples.push(Example {
                source: format!("{source} ({} call(s), wrapped in a route)", calls.len()),
                config: wrap_calls(calls, line),
            }),
            Block::Other if looks_like_configuration => failures.push(format!(
                "{source}: has configuration keys but is neither a configuration, routes nor calls"
            )),
            Block::Other => skipped.push(format!("{source} (not configuration)")),
        }
    }
    (examples, skipped, failures)
}

#[test]
fn readme_json_blocks_pass_the_schema_and_the_filter() {
    let mut examples = Vec::new();
    let mut skipped = Vec::new();
    let mut failures = Vec::new();
    for file in ["README.md", "envoy/istio/README.md"] {
        let (found, skip, fail) = markdown_examples(file);
        examples.extend(found);
        skipped.extend(skip);
        failures.extend(fail);
    }
    let whole = examples
        .iter()
        .filter(|e| {
            e.source.starts_with("README.md ") && e.source.ends_with("(whole configuration)")
        })
        .count();
    println!(
        "README blocks checked: {}\n  {}\nskipped: {}\n  {}",
        examples.len(),
        examples
            .iter()
            .map(|e| e.source.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
        skipped.len(),
        skipped.join("\n  ")
    );
    assert!(
        whole >= 1,
        "README.md: no ```json block with a whole configuration (\"routes\") was found"
    );
    failures.extend(check_examples(&examples));
    assert!(
        failures.is_empty(),
        "README configuration blocks that fail:\n{}",
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The Istio manifests

fn only_document(relative: &str) -> Value {
    let mut documents = yaml_documents(relative);
    assert_eq!(documents.len(), 1, "{relative}: expected one YAML document");
    documents.remove(0)
}

fn reads_client_body(config: &Value) -> bool {
    serde_json::to_string(config)
        .unwrap()
        .contains("{request.body")
}

#[test]
fn istio_manifests_agree_with_each_other() {
    let plugin = only_document("envoy/istio/wasmplugin.yaml");
    let extension = only_document("envoy/istio/trafficextension.yaml");
    let patch = only_document("envoy/istio/envoyfilter-stop-iteration.yaml");
    assert_eq!(plugin["kind"], "WasmPlugin");
    assert_eq!(extension["kind"], "TrafficExtension");
    assert_eq!(patch["kind"], "EnvoyFilter");

    let plugin_config = &plugin["spec"]["pluginConfig"];
    assert_eq!(
        plugin_config, &extension["spec"]["wasm"]["pluginConfig"],
        "wasmplugin.yaml and trafficextension.yaml must carry the same pluginConfig"
    );
    // Without allow_on_headers_stop_iteration (which neither API exposes) such routes hang.
    assert!(
        !reads_client_body(plugin_config),
        "wasmplugin.yaml / trafficextension.yaml: a route reads the client body; move it to \
         envoyfilter-stop-iteration.yaml"
    );

    let mut found = Vec::new();
    walk_wasm_filters(&patch, "envoyfilter-stop-iteration.yaml", &mut found);
    assert_eq!(
        found.len(),
        1,
        "envoyfilter-stop-iteration.yaml: one Wasm filter config"
    );
    let patched = &found[0].config;
    assert_eq!(
        patched["defaults"], plugin_config["defaults"],
        "envoyfilter-stop-iteration.yaml: defaults differ from wasmplugin.yaml"
    );
    for route in plugin_config["routes"].as_array().unwrap() {
        assert!(
            patched["routes"].as_array().unwrap().contains(route),
            "envoyfilter-stop-iteration.yaml: route {} differs from wasmplugin.yaml",
            route["name"]
        );
    }
    assert!(
        reads_client_body(patched),
        "envoyfilter-stop-iteration.yaml should show a route that reads the client body"
    );
    let wasm = patch["spec"]["configPatches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["applyTo"] == "EXTENSION_CONFIG")
        .expect("envoyfilter-stop-iteration.yaml: no EXTENSION_CONFIG patch");
    let plugin_settings = &wasm["patch"]["value"]["typed_config"]["config"];
    assert_eq!(plugin_settings["allow_on_headers_stop_iteration"], true);
    assert_eq!(plugin_settings["failure_policy"], "FAIL_RELOAD");

    // One image, one failure policy, one place in the chain.
    let image = plugin["spec"]["url"].as_str().unwrap();
    assert!(image.starts_with("oci://"), "wasmplugin.yaml url: {image}");
    assert_eq!(extension["spec"]["wasm"]["url"], image);
    assert_eq!(
        plugin_settings["vm_config"]["code"]["remote"]["http_uri"]["uri"],
        image
    );
    assert_eq!(plugin["spec"]["failStrategy"], "FAIL_RELOAD");
    assert_eq!(extension["spec"]["wasm"]["failStrategy"], "FAIL_RELOAD");
    assert_eq!(plugin["spec"]["phase"], "UNSPECIFIED_PHASE");
    assert!(extension["spec"].get("phase").is_none());
}

/// Kubernetes reads manifests as YAML 1.1, where an unquoted `on:` (retries.on), `yes:`, `no:`
/// or `off:` key is a boolean: the filter would get the key "true". The YAML parser of these
/// tests is YAML 1.2 and would not notice, so look at the text.
#[test]
fn istio_manifests_quote_keys_that_yaml_1_1_reads_as_booleans() {
    const BOOLEAN_WORDS: [&str; 11] = [
        "y", "n", "yes", "no", "on", "off", "true", "false", "Y", "N", "ON",
    ];
    let mut failures = Vec::new();
    for file in yaml_files("envoy/istio") {
        for (index, line) in read(&file).lines().enumerate() {
            let content = line.trim_start().trim_start_matches("- ").trim_start();
            if content.starts_with('#') {
                continue;
            }
            let Some((key, _)) = content.split_once(':') else {
                continue;
            };
            let bare = key.trim();
            if BOOLEAN_WORDS.contains(&bare)
                || BOOLEAN_WORDS.contains(&bare.to_lowercase().as_str())
            {
                failures.push(format!(
                    "{file} line {}: quote the key {bare:?} (YAML 1.1 reads it as a boolean)",
                    index + 1
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Wrong configurations: rejected by both

fn for_each_call(extra: Value) -> Value {
    let mut call = json!({
        "name": "authors", "cluster": "users", "path": "/users/{item}",
        "for_each": "calls.product.items[*].author"
    });
    for (key, value) in extra.as_object().unwrap() {
        call[key] = value.clone();
    }
    call
}

fn wrong_configurations() -> Vec<(&'static str, Value)> {
    let long_name = "a".repeat(65);
    let mut cases = vec![
        // Unknown keys, at every level.
        ("unknown top-level key", variant(&[("/route", json!([]))])),
        (
            "unknown key in defaults",
            variant(&[("/defaults", json!({"deadline": 5}))]),
        ),
        (
            "unknown key in a route",
            variant(&[("/routes/0/deadline", json!(300))]),
        ),
        (
            "unknown key in match",
            variant(&[("/routes/0/match/method", json!(["GET"]))]),
        ),
        (
            "unknown key in a call",
            variant(&[("/routes/0/calls/1/timout_ms", json!(100))]),
        ),
        (
            "unknown key in response",
            variant(&[("/routes/0/response", json!({"layouts": "merge"}))]),
        ),
        (
            "unknown key in retries",
            variant(&[(
                "/routes/0/calls/0/retries",
                json!({"attempts": 2, "backof_ms": 10}),
            )]),
        ),
        (
            "unknown key in cache",
            variant(&[("/routes/0/cache", json!({"ttl_ms": 1000, "ttl": 5}))]),
        ),
        (
            "unknown key in circuit_breaker",
            variant(&[(
                "/defaults",
                json!({"circuit_breaker": {"failures": 5, "open_ms": 1000, "half_open": 1}}),
            )]),
        ),
        (
            "unknown key in join",
            variant(&[(
                "/routes/0/calls/1",
                for_each_call(
                    json!({"join": {"into": "product.items", "on": "author", "as": "detail", "how": "left"}}),
                ),
            )]),
        ),
        (
            "unknown key in headers_from",
            variant(&[(
                "/routes/0/response",
                json!({"headers_from": [{"call": "product", "name": "set-cookie", "all": true}]}),
            )]),
        ),
        // Wrong types.
        (
            "timeout_ms is a string",
            variant(&[("/routes/0/calls/0/timeout_ms", json!("fast"))]),
        ),
        (
            "timeout_ms is null",
            variant(&[("/routes/0/calls/0/timeout_ms", Value::Null)]),
        ),
        (
            "required is a string",
            variant(&[("/routes/0/calls/0/required", json!("yes"))]),
        ),
        (
            "methods is a string",
            variant(&[("/routes/0/match/methods", json!("GET"))]),
        ),
        (
            "routes is an object",
            json!({"routes": {"page": minimal()["routes"][0].clone()}}),
        ),
        (
            "forward_headers is a string",
            variant(&[("/defaults", json!({"forward_headers": "x-request-id"}))]),
        ),
        (
            "a call header value is a number",
            variant(&[("/routes/0/calls/0/headers", json!({"x-a": 5}))]),
        ),
        (
            "a match header value is a boolean",
            variant(&[("/routes/0/match/headers", json!({"x-client": true}))]),
        ),
        (
            "defaults.max_inflight is null",
            variant(&[("/defaults", json!({"max_inflight": null}))]),
        ),
        (
            "response.meta is empty",
            variant(&[("/routes/0/response", json!({"meta": ""}))]),
        ),
        (
            "fields_param is empty",
            variant(&[("/routes/0/fields_param", json!(""))]),
        ),
        // Out of range.
        (
            "timeout_ms 0",
            variant(&[("/routes/0/calls/0/timeout_ms", json!(0))]),
        ),
        (
            "deadline_ms over a day",
            variant(&[("/routes/0/deadline_ms", json!(86_400_001))]),
        ),
        (
            "max_body_bytes over 2^30",
            variant(&[("/defaults", json!({"max_body_bytes": (1u64 << 30) + 1}))]),
        ),
        (
            "max_fan_out 1001",
            variant(&[(
                "/routes/0/calls/1",
                for_each_call(json!({"max_fan_out": 1001})),
            )]),
        ),
        (
            "retries.attempts 11",
            variant(&[("/routes/0/calls/0/retries", json!({"attempts": 11}))]),
        ),
        (
            "cache.max_entries 100001",
            variant(&[(
                "/routes/0/calls/0/cache",
                json!({"ttl_ms": 1000, "max_entries": 100_001}),
            )]),
        ),
        (
            "circuit_breaker.failures 0",
            variant(&[(
                "/routes/0/circuit_breaker",
                json!({"failures": 0, "open_ms": 1000}),
            )]),
        ),
        (
            "max_inflight 0",
            variant(&[("/routes/0/max_inflight", json!(0))]),
        ),
        (
            "hedge_after_ms 0",
            variant(&[("/routes/0/calls/0/hedge_after_ms", json!(0))]),
        ),
        // coalesce (SPEC §6): a boolean, only for GET and HEAD calls without a body.
        (
            "coalesce is a string",
            variant(&[("/routes/0/calls/0/coalesce", json!("yes"))]),
        ),
        (
            "coalesce is an object",
            variant(&[(
                "/defaults",
                json!({"coalesce": {"vary": ["authorization"]}}),
            )]),
        ),
        (
            "coalesce on a POST call",
            variant(&[
                ("/routes/0/calls/0/method", json!("post")),
                ("/routes/0/calls/0/coalesce", json!(true)),
            ]),
        ),
        (
            "coalesce on a call with a body",
            variant(&[
                ("/routes/0/calls/0/body", json!({"q": 1})),
                ("/routes/0/calls/0/coalesce", json!(true)),
            ]),
        ),
        ("wait_for 0", variant(&[("/routes/0/wait_for", json!(0))])),
        (
            "limit 0",
            variant(&[(
                "/routes/0/response",
                json!({"layout": "concat", "limit": 0}),
            )]),
        ),
        // Bad names.
        (
            "route name with a space and capitals",
            variant(&[("/routes/0/name", json!("Product Page"))]),
        ),
        (
            "empty route name",
            variant(&[("/routes/0/name", json!(""))]),
        ),
        (
            "call name with a capital",
            variant(&[("/routes/0/calls/1/name", json!("Reviews"))]),
        ),
        (
            "call name of 65 characters",
            variant(&[("/routes/0/calls/1/name", json!(long_name))]),
        ),
        (
            "as with a dot",
            variant(&[("/routes/0/calls/0/as", json!("item.detail"))]),
        ),
        // Bad enum values.
        (
            "layout flat",
            variant(&[("/routes/0/response", json!({"layout": "flat"}))]),
        ),
        (
            "format xml",
            variant(&[("/routes/0/calls/0/format", json!("xml"))]),
        ),
        (
            "order up",
            variant(&[(
                "/routes/0/response",
                json!({"layout": "concat", "order": "up"}),
            )]),
        ),
        (
            "wait_for most",
            variant(&[("/routes/0/wait_for", json!("most"))]),
        ),
        (
            "retries on 4xx",
            variant(&[(
                "/routes/0/calls/0/retries",
                json!({"attempts": 2, "on": ["4xx"]}),
            )]),
        ),
        (
            "retries on nothing",
            variant(&[(
                "/routes/0/calls/0/retries",
                json!({"attempts": 2, "on": []}),
            )]),
        ),
        // Missing required keys.
        ("no routes", json!({"defaults": {}})),
        ("empty routes", json!({"routes": []})),
        (
            "retries without attempts",
            variant(&[("/routes/0/calls/0/retries", json!({"backoff_ms": 10}))]),
        ),
        (
            "circuit_breaker without open_ms",
            variant(&[("/routes/0/circuit_breaker", json!({"failures": 5}))]),
        ),
        (
            "cache without ttl_ms",
            variant(&[("/routes/0/calls/0/cache", json!({"max_entries": 10}))]),
        ),
        (
            "join without as",
            variant(&[(
                "/routes/0/calls/1",
                for_each_call(json!({"join": {"into": "product.items", "on": "author"}})),
            )]),
        ),
        (
            "headers_from without name",
            variant(&[(
                "/routes/0/response",
                json!({"headers_from": [{"call": "product"}]}),
            )]),
        ),
        ("empty calls", variant(&[("/routes/0/calls", json!([]))])),
        (
            "empty methods",
            variant(&[("/routes/0/match/methods", json!([]))]),
        ),
        // Other rules the filter states plainly.
        (
            "required call with a fallback",
            variant(&[
                ("/routes/0/calls/0/required", json!(true)),
                ("/routes/0/calls/0/fallback", json!({})),
            ]),
        ),
        (
            "join without for_each",
            variant(&[(
                "/routes/0/calls/1/join",
                json!({"into": "product.items", "on": "author", "as": "detail"}),
            )]),
        ),
        (
            "max_fan_out on a call without for_each",
            variant(&[("/routes/0/calls/1/max_fan_out", json!(5))]),
        ),
        (
            "join and as together",
            variant(&[(
                "/routes/0/calls/1",
                for_each_call(
                    json!({"as": "x", "join": {"into": "product.items", "on": "author", "as": "detail"}}),
                ),
            )]),
        ),
        (
            "for_each without [*]",
            variant(&[(
                "/routes/0/calls/1",
                for_each_call(json!({"for_each": "calls.product.items"})),
            )]),
        ),
        (
            "sort_by with the nested layout",
            variant(&[("/routes/0/response", json!({"sort_by": "score"}))]),
        ),
        (
            "derive with the concat layout",
            variant(&[(
                "/routes/0/response",
                json!({"layout": "concat", "derive": {"n": {"count": "x"}}}),
            )]),
        ),
        (
            "derive with two operations",
            variant(&[(
                "/routes/0/response",
                json!({"derive": {"n": {"count": "a", "sum": "b"}}}),
            )]),
        ),
        (
            "derive with an unknown operation",
            variant(&[("/routes/0/response", json!({"derive": {"n": {"avg": "a"}}}))]),
        ),
        (
            "a credential in defaults.forward_headers",
            variant(&[("/defaults", json!({"forward_headers": ["Authorization"]}))]),
        ),
        (
            "a credential in a route's forward_headers",
            variant(&[("/routes/0/forward_headers", json!(["cookie"]))]),
        ),
        (
            "a call sets Host",
            variant(&[("/routes/0/calls/0/headers", json!({"Host": "x"}))]),
        ),
        (
            "a call forwards transfer-encoding",
            variant(&[(
                "/routes/0/calls/0/forward_headers",
                json!(["transfer-encoding"]),
            )]),
        ),
        (
            "a header name with a space",
            variant(&[("/routes/0/calls/0/headers", json!({"x a": "1"}))]),
        ),
        (
            "a header value with CR LF",
            variant(&[("/routes/0/calls/0/headers", json!({"x-a": "1\r\nx-b: 2"}))]),
        ),
        (
            "the response sets content-type",
            variant(&[(
                "/routes/0/response",
                json!({"headers": {"Content-Type": "text/plain"}}),
            )]),
        ),
        (
            "headers_from copies server-timing",
            variant(&[(
                "/routes/0/response",
                json!({"headers_from": [{"call": "product", "name": "server-timing"}]}),
            )]),
        ),
        (
            "match.path without a leading slash",
            variant(&[("/routes/0/match/path", json!("p/{id}"))]),
        ),
        (
            "match.path with a query",
            variant(&[("/routes/0/match/path", json!("/p/{id}?x=1"))]),
        ),
        (
            "a call path without a leading slash",
            variant(&[("/routes/0/calls/0/path", json!("products/{path.id}"))]),
        ),
        (
            "an empty cluster",
            variant(&[("/routes/0/calls/0/cluster", json!(""))]),
        ),
        (
            "an authority with a space",
            variant(&[("/routes/0/calls/0/authority", json!("catalog svc"))]),
        ),
        (
            "a method with a digit",
            variant(&[("/routes/0/calls/0/method", json!("GET2"))]),
        ),
        (
            "extract with [*]",
            variant(&[("/routes/0/calls/0/extract", json!("items[*]"))]),
        ),
        // Conditional calls (SPEC §3.6).
        (
            "an unknown operator in when",
            variant(&[("/routes/0/calls/1/when", json!({"presnt": "query.x"}))]),
        ),
        (
            "when with two operators",
            variant(&[(
                "/routes/0/calls/1/when",
                json!({"present": "query.x", "equals": ["query.y", "1"]}),
            )]),
        ),
        (
            "an empty when",
            variant(&[("/routes/0/calls/1/when", json!({}))]),
        ),
        (
            "when is a list",
            variant(&[("/routes/0/calls/1/when", json!([{"present": "query.x"}]))]),
        ),
        (
            "equals with one operand",
            variant(&[("/routes/0/calls/1/when", json!({"equals": ["query.x"]}))]),
        ),
        (
            "equals with three operands",
            variant(&[(
                "/routes/0/calls/1/when",
                json!({"equals": ["query.x", "a", "b"]}),
            )]),
        ),
        (
            "equals null",
            variant(&[(
                "/routes/0/calls/1/when",
                json!({"equals": ["query.x", null]}),
            )]),
        ),
        (
            "equals an object",
            variant(&[(
                "/routes/0/calls/1/when",
                json!({"equals": ["calls.product.x", {"a": 1}]}),
            )]),
        ),
        (
            "in an empty list",
            variant(&[("/routes/0/calls/1/when", json!({"in": ["query.x", []]}))]),
        ),
        (
            "in a string",
            variant(&[("/routes/0/calls/1/when", json!({"in": ["query.x", "a"]}))]),
        ),
        (
            "all of nothing",
            variant(&[("/routes/0/calls/1/when", json!({"all": []}))]),
        ),
        (
            "not of a list",
            variant(&[(
                "/routes/0/calls/1/when",
                json!({"not": [{"present": "query.x"}]}),
            )]),
        ),
        (
            "a nested unknown operator",
            variant(&[(
                "/routes/0/calls/1/when",
                json!({"any": [{"present": "query.x"}, {"not": {"exists": "query.y"}}]}),
            )]),
        ),
        (
            "a condition reference in braces",
            variant(&[("/routes/0/calls/1/when", json!({"present": "{query.x}"}))]),
        ),
        (
            "a condition reference with a default",
            variant(&[("/routes/0/calls/1/when", json!({"present": "query.x|1"}))]),
        ),
        (
            "a condition reading item",
            variant(&[(
                "/routes/0/calls/1",
                for_each_call(json!({"when": {"present": "item"}})),
            )]),
        ),
        (
            "a condition reference with an unknown source",
            variant(&[("/routes/0/calls/1/when", json!({"present": "heade.x"}))]),
        ),
        // Batch joins (SPEC §3.5).
        (
            "max_batch on a call without a batch join",
            variant(&[("/routes/0/calls/1/max_batch", json!(10))]),
        ),
        ("max_batch 0", variant(&[("/routes/0/max_batch", json!(0))])),
        (
            "max_batch 1001",
            variant(&[("/defaults", json!({"max_batch": 1001}))]),
        ),
        (
            "a batch join with for_each",
            variant(&[(
                "/routes/0/calls/1",
                for_each_call(
                    json!({"join": {"into": "product.items", "on": "author", "match": "id", "as": "detail"}}),
                ),
            )]),
        ),
        (
            "a batch join of text answers",
            variant(&[(
                "/routes/0/calls/1",
                json!({"name": "authors", "cluster": "users", "format": "text",
                       "path": "/users?ids={calls.product.items[*].author}",
                       "join": {"into": "product.items", "on": "author", "match": "id", "as": "detail"}}),
            )]),
        ),
        (
            "join.match with [*]",
            variant(&[(
                "/routes/0/calls/1",
                json!({"name": "authors", "cluster": "users",
                       "path": "/users?ids={calls.product.items[*].author}",
                       "join": {"into": "product.items", "on": "author", "match": "items[*].id", "as": "detail"}}),
            )]),
        ),
    ];
    let mut no_calls = minimal();
    remove(&mut no_calls, "/routes/0/calls");
    cases.push(("a route without calls", no_calls));
    let mut no_match = minimal();
    remove(&mut no_match, "/routes/0/match");
    cases.push(("a route without match", no_match));
    let mut no_path = minimal();
    remove(&mut no_path, "/routes/0/match/path");
    cases.push(("match without path", no_path));
    let mut no_cluster = minimal();
    remove(&mut no_cluster, "/routes/0/calls/0/cluster");
    cases.push(("a call without cluster", no_cluster));
    let mut no_name = minimal();
    remove(&mut no_name, "/routes/0/calls/0/name");
    cases.push(("a call without name", no_name));
    cases
}

#[test]
fn wrong_configurations_are_rejected_by_both() {
    let validator = validator();
    let cases = wrong_configurations();
    assert!(cases.len() >= 10);
    let mut failures = Vec::new();
    for (label, config) in &cases {
        let errors = schema_errors(&validator, config);
        let verdict = filter_verdict(config);
        println!(
            "{label}\n  schema: {}\n  filter: {}",
            errors.first().map_or("accepts it", String::as_str),
            verdict.as_ref().err().map_or("accepts it", String::as_str)
        );
        if errors.is_empty() {
            failures.push(format!("{label}: the schema accepts it: {config}"));
        }
        if verdict.is_ok() {
            failures.push(format!("{label}: the filter accepts it: {config}"));
        }
    }
    println!("wrong configurations checked: {}", cases.len());
    assert!(
        failures.is_empty(),
        "wrong configurations not rejected by both:\n{}",
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Edge cases: accepted by both (the schema must not be stricter than the filter where the
// filter's behaviour is intended)

fn edge_configurations() -> Vec<(&'static str, Value)> {
    vec![
        ("minimal", minimal()),
        (
            "every defaults key",
            variant(&[(
                "/defaults",
                json!({
                    "timeout_ms": 1000, "deadline_ms": 3000, "max_body_bytes": 1_048_576,
                    "forward_headers": ["x-request-id"], "expose_errors": true, "max_fan_out": 32,
                    "retries": {"attempts": 3, "backoff_ms": 0, "on": ["connect", "timeout", "5xx"]},
                    "hedge_after_ms": 80,
                    "cache": {"ttl_ms": 5000, "stale_if_error_ms": 60000, "vary": [], "max_entries": 1024},
                    "circuit_breaker": {"failures": 5, "open_ms": 10000},
                    "coalesce": true,
                    "wait_for": "quorum", "max_inflight": 200
                }),
            )]),
        ),
        (
            "null switches inherited options off at route and call level",
            variant(&[
                (
                    "/defaults",
                    json!({
                        "retries": {"attempts": 2},
                        "hedge_after_ms": 50,
                        "cache": {"ttl_ms": 100},
                        "circuit_breaker": {"failures": 1, "open_ms": 1},
                        "coalesce": true,
                        "max_inflight": 5
                    }),
                ),
                ("/routes/0/coalesce", Value::Null),
                ("/routes/0/calls/0/coalesce", Value::Null),
                ("/routes/0/calls/1/coalesce", json!(false)),
                ("/routes/0/retries", Value::Null),
                ("/routes/0/hedge_after_ms", Value::Null),
                ("/routes/0/cache", Value::Null),
                ("/routes/0/circuit_breaker", Value::Null),
                ("/routes/0/max_inflight", Value::Null),
                ("/routes/0/calls/0/retries", Value::Null),
                ("/routes/0/calls/0/hedge_after_ms", Value::Null),
                ("/routes/0/calls/0/cache", Value::Null),
                ("/routes/0/calls/0/circuit_breaker", Value::Null),
            ]),
        ),
        (
            "coalesce inherited by a POST call (not applied), set on a lowercase get and a HEAD",
            variant(&[
                ("/defaults", json!({"coalesce": true})),
                ("/routes/0/calls/0/method", json!("POST")),
                ("/routes/0/calls/1/method", json!("get")),
                ("/routes/0/calls/1/coalesce", json!(true)),
                (
                    "/routes/0/calls/2",
                    json!({"name": "head", "cluster": "c", "method": "HEAD", "path": "/h", "coalesce": true}),
                ),
            ]),
        ),
        (
            "null at defaults level for the four call options",
            variant(&[(
                "/defaults",
                json!({"retries": null, "hedge_after_ms": null, "cache": null, "circuit_breaker": null, "coalesce": null}),
            )]),
        ),
        (
            "meta and fields_param switched off",
            variant(&[
                ("/routes/0/response", json!({"meta": null})),
                ("/routes/0/fields_param", Value::Null),
            ]),
        ),
        (
            "meta and fields_param renamed, wait_for a count",
            variant(&[
                ("/routes/0/response", json!({"meta": "status"})),
                ("/routes/0/fields_param", json!("only")),
                ("/routes/0/wait_for", json!(2)),
            ]),
        ),
        (
            "fallback of every JSON type",
            variant(&[
                ("/routes/0/calls/1/fallback", Value::Null),
                ("/routes/0/calls/0/fallback", json!([1, "a", {"b": null}])),
            ]),
        ),
        (
            "the client body, and JSON body templates",
            variant(&[
                ("/routes/0/match/methods", json!(["post", "PUT"])),
                ("/routes/0/calls/0/method", json!("post")),
                ("/routes/0/calls/0/body", json!("{request.body}")),
                ("/routes/0/calls/1/method", json!("PATCH")),
                (
                    "/routes/0/calls/1/body",
                    json!({"qty": "{request.body.qty}", "ids": [1, true, null], "note": "x {path.id}"}),
                ),
            ]),
        ),
        (
            "retries and hedging of POST with unsafe",
            variant(&[
                ("/routes/0/calls/0/method", json!("POST")),
                ("/routes/0/calls/0/unsafe", json!(true)),
                ("/routes/0/calls/0/retries", json!({"attempts": 10})),
                ("/routes/0/calls/0/hedge_after_ms", json!(86_400_000)),
            ]),
        ),
        (
            "a cache that varies on the credential it forwards",
            variant(&[
                (
                    "/routes/0/calls/0/forward_headers",
                    json!(["Authorization", "cookie"]),
                ),
                (
                    "/routes/0/calls/0/cache",
                    json!({"ttl_ms": 1, "vary": ["authorization", "Cookie"], "max_entries": 100_000}),
                ),
            ]),
        ),
        (
            "for_each with join, max_fan_out at every level",
            variant(&[
                ("/defaults", json!({"max_fan_out": 1})),
                ("/routes/0/max_fan_out", json!(1000)),
                (
                    "/routes/0/calls/1",
                    for_each_call(json!({
                        "max_fan_out": 7,
                        "join": {"into": "product.items", "on": "author", "as": "author_detail"}
                    })),
                ),
            ]),
        ),
        (
            "when with every operator",
            variant(&[
                (
                    "/routes/0/calls/1/when",
                    json!({"all": [
                        {"present": "header.X-User-Id"},
                        {"equals": ["calls.product.kind", "physical"]},
                        {"equals": ["query.page", 2]},
                        {"equals": ["calls.product.id", 123_456_789_012_345_678_u64]},
                        {"in": ["query.include", ["reviews", "all", true, 1.5]]},
                        {"any": [{"not": {"present": "request.body.coupon"}}, {"present": "path.id"}]}
                    ]}),
                ),
                ("/routes/0/match/methods", json!(["POST"])),
            ]),
        ),
        (
            "a batch join with max_batch at every level, keys in a POST body, an extract",
            variant(&[
                ("/defaults", json!({"max_batch": 1, "max_fan_out": 5})),
                ("/routes/0/max_batch", json!(1000)),
                (
                    "/routes/0/calls/1",
                    json!({"name": "authors", "cluster": "users", "method": "POST",
                           "path": "/users/batch", "body": {"ids": "{calls.product.items[*].author}"},
                           "extract": "data", "max_batch": 50, "max_fan_out": 10,
                           "join": {"into": "product.items", "on": "author", "match": "user.id", "as": "detail"}}),
                ),
            ]),
        ),
        (
            "per-call shaping",
            variant(&[
                ("/routes/0/calls/0/extract", json!("data")),
                (
                    "/routes/0/calls/0/select",
                    json!(["name", "price.amount", "images[*].url", ""]),
                ),
                ("/routes/0/calls/0/omit", json!(["internal", "images[*].w"])),
                (
                    "/routes/0/calls/0/rename",
                    json!({"price.amount": "price_eur"}),
                ),
                ("/routes/0/calls/0/as", json!("Item_1")),
                ("/routes/0/calls/0/format", json!("text")),
                ("/routes/0/calls/0/after", json!(["reviews"])),
            ]),
        ),
        (
            "merge layout with derive, headers and headers_from",
            variant(&[(
                "/routes/0/response",
                json!({
                    "layout": "merge", "order": "desc",
                    "derive": {
                        "summary.count": {"count": "reviews.items"}, "s": {"sum": "a[*].n"},
                        "lo": {"min": "a[*].n"}, "hi": {"max": "a[*].n"},
                        "first": {"coalesce": ["a", "b"]}, "all": {"concat": ["a", "b"]}
                    },
                    "headers": {"Cache-Control": "max-age=5", "x-empty": ""},
                    "headers_from": [{"call": "product", "name": "Set-Cookie"}]
                }),
            )]),
        ),
        (
            "concat layout with sort_by, order and limit",
            variant(&[(
                "/routes/0/response",
                json!({"layout": "concat", "sort_by": "score", "order": "desc", "limit": 2, "derive": {}}),
            )]),
        ),
        (
            "match headers, :authority and a rest capture",
            variant(&[
                (
                    "/routes/0/match",
                    json!({
                        "path": "/p/{id}/{rest*}/",
                        "methods": ["GET", "HEAD"],
                        "headers": {":authority": "shop.example", "X-Client": "mobile"}
                    }),
                ),
                (
                    "/routes/0/calls/0/path",
                    json!("/products/{path.id}/{path.rest}?q={query.q|a b}"),
                ),
                (
                    "/routes/0/calls/0/headers",
                    json!({"x-trace": "{header.x-trace|none}"}),
                ),
                (
                    "/routes/0/calls/0/authority",
                    json!("catalog.shop.svc.cluster.local:8080"),
                ),
            ]),
        ),
        (
            "route-level overrides and expose_errors",
            variant(&[
                ("/routes/0/timeout_ms", json!(1)),
                ("/routes/0/max_body_bytes", json!(1u64 << 30)),
                ("/routes/0/expose_errors", json!(false)),
                ("/routes/0/forward_headers", json!(["x-tenant"])),
                ("/routes/0/wait_for", json!("any")),
            ]),
        ),
    ]
}

#[test]
fn edge_configurations_are_accepted_by_both() {
    let validator = validator();
    let mut failures = Vec::new();
    for (label, config) in edge_configurations() {
        let errors = schema_errors(&validator, &config);
        if !errors.is_empty() {
            failures.push(format!(
                "{label}: the schema rejects it:\n    {}",
                errors.join("\n    ")
            ));
        }
        if let Err(why) = filter_verdict(&config) {
            failures.push(format!("{label}: the filter rejects it: {why}"));
        }
    }
    assert!(
        failures.is_empty(),
        "edge configurations not accepted by both:\n{}",
        failures.join("\n")
    );
}
