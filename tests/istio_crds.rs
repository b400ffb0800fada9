//! The Istio manifests in `envoy/istio/` checked as the Kubernetes API server checks them under
//! strict field validation (`kubectl apply --validate=strict`), against Istio's published
//! CustomResourceDefinitions. Those live outside the repository, in
//! `../shared/vendor/istio/customresourcedefinitions.gen.yaml`; where that file is absent, the
//! tests that need it say so on stderr and pass.
//!
//! - Every YAML document of every file, read as Kubernetes reads YAML (YAML 1.1 booleans;
//!   `tests/yaml/mod.rs`), names a CRD that exists (apiVersion group and kind) in a version that
//!   the CRD defines and serves.
//! - It passes that version's `openAPIV3Schema`: types, enums, required keys, patterns, bounds,
//!   `oneOf`/`anyOf`/`not`, `nullable`, `x-kubernetes-int-or-string`, and map lists
//!   (`x-kubernetes-list-type: map`) without two items of the same key.
//! - No key is unknown, at any level. The schema becomes a JSON Schema (draft 4, the closest
//!   to the dialect OpenAPI v3.0 schemas extend) with `additionalProperties: false` on every object it
//!   describes, except where the CRD keeps unknown fields (`x-kubernetes-preserve-unknown-fields`:
//!   WasmPlugin's `pluginConfig`, EnvoyFilter's `patch.value`, `status`) or declares a map
//!   (`additionalProperties: {…}`, e.g. `matchLabels`). `oneOf`/`anyOf`/`allOf`/`not` branches
//!   only constrain values, as in a structural schema, so they are not closed.
//! - `metadata` is an ObjectMeta: a name (a DNS subdomain), a namespace where one is set (a DNS
//!   label), labels and annotations as maps of strings, no unknown key.
//! - The strictness itself is tested: manifests made wrong on purpose from the shipped ones (an
//!   unknown key, a wrong enum value, a wrong type, ...) are rejected for that reason, and what
//!   the CRDs leave free passes.
//!
//! Not evaluated: the CRDs' CEL rules (`x-kubernetes-validations`; those that apply to a shipped
//! manifest are printed) and `format`. istiod's validating webhook checks more than the schema;
//! that needs a running Istio.

// The checks are helpers outside #[test] functions, which clippy does not count as tests,
// and they fail a test the way a test does: by panicking with the file and the place.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

mod yaml;

use jsonschema::error::ValidationErrorKind;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::PathBuf;
use std::sync::OnceLock;

/// Istio's CRDs, relative to the repository. Read from there, never copied into the project.
const CRDS: &str = "../shared/vendor/istio/customresourcedefinitions.gen.yaml";
const MANIFESTS: &str = "envoy/istio";

/// Kubernetes' name rules (k8s.io/apimachinery validation): object names are DNS subdomains,
/// namespaces DNS labels, label values at most 63 characters of this form.
const DNS_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const DNS_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
const LABEL_VALUE: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------------
// The CRDs

struct Version {
    name: String,
    served: bool,
    schema: Value,
}

struct Crd {
    group: String,
    kind: String,
    namespaced: bool,
    versions: Vec<Version>,
}

fn text(value: &Value, what: &str) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{CRDS}: {what} is not a string: {value}"))
        .to_string()
}

fn crd_from(document: &Value) -> Crd {
    let spec = &document["spec"];
    let versions = spec["versions"]
        .as_array()
        .unwrap_or_else(|| panic!("{CRDS}: {} has no versions", spec["names"]["kind"]))
        .iter()
        .map(|version| Version {
            name: text(&version["name"], "a version's name"),
            served: version["served"] == true,
            schema: version["schema"]["openAPIV3Schema"].clone(),
        })
        .collect();
    Crd {
        group: text(&spec["group"], "spec.group"),
        kind: text(&spec["names"]["kind"], "spec.names.kind"),
        namespaced: spec["scope"] == "Namespaced",
        versions,
    }
}

/// Istio's CRDs, read once per run; `None` (and a line on stderr, which `cargo test` shows
/// whether or not the test passes) when the file is not there.
fn crds() -> Option<&'static [Crd]> {
    static READ: OnceLock<Option<Vec<Crd>>> = OnceLock::new();
    let path = repo().join(CRDS);
    let crds = READ.get_or_init(|| {
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => return None,
            Err(e) => panic!("{}: {e}", path.display()),
        };
        let documents = yaml::documents(&text, yaml::Reading::Kubernetes)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let crds: Vec<Crd> = documents
            .iter()
            .filter(|d| d["kind"] == "CustomResourceDefinition")
            .map(crd_from)
            .collect();
        assert!(
            !crds.is_empty(),
            "{}: no CustomResourceDefinition",
            path.display()
        );
        Some(crds)
    });
    if crds.is_none() {
        // Straight to stderr: the test harness captures print! and eprint!, not this.
        let message = format!(
            "SKIPPED: Istio's CRDs are not at {} ({CRDS} from the repository), so the manifests \
             in {MANIFESTS}/ were not checked against them\n",
            path.display()
        );
        std::io::stderr().write_all(message.as_bytes()).unwrap();
    }
    crds.as_deref()
}

/// The CRD and the served version an object's apiVersion and kind name.
fn find<'a>(crds: &'a [Crd], document: &Value) -> Result<(&'a Crd, &'a Version), String> {
    let api_version = document["apiVersion"]
        .as_str()
        .ok_or("apiVersion: missing or not a string")?;
    let kind = document["kind"]
        .as_str()
        .ok_or("kind: missing or not a string")?;
    let (group, version) = api_version
        .split_once('/')
        .ok_or_else(|| format!("apiVersion {api_version:?}: not <group>/<version>"))?;
    let list = |names: Vec<&str>| {
        names
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join(", ")
    };
    let in_group: Vec<&Crd> = crds.iter().filter(|crd| crd.group == group).collect();
    if in_group.is_empty() {
        return Err(format!(
            "apiVersion {api_version:?}: no CRD of group {group:?} (groups: {})",
            list(crds.iter().map(|crd| crd.group.as_str()).collect())
        ));
    }
    let crd = in_group
        .iter()
        .find(|crd| crd.kind == kind)
        .ok_or_else(|| {
            format!(
                "kind {kind:?}: no such kind in {group} (kinds: {})",
                list(in_group.iter().map(|crd| crd.kind.as_str()).collect())
            )
        })?;
    let served = || {
        list(
            crd.versions
                .iter()
                .filter(|v| v.served)
                .map(|v| v.name.as_str())
                .collect(),
        )
    };
    let found = crd
        .versions
        .iter()
        .find(|v| v.name == version)
        .ok_or_else(|| {
            format!(
                "apiVersion {api_version:?}: {kind} has no version {version:?} (served: {})",
                served()
            )
        })?;
    if !found.served {
        return Err(format!(
            "apiVersion {api_version:?}: {kind} {version} is not served (served: {})",
            served()
        ));
    }
    Ok((crd, found))
}

// ---------------------------------------------------------------------------------------------
// openAPIV3Schema -> JSON Schema with strict field validation

/// The JSON Schema (draft 4) of an openAPIV3Schema node, closed like strict field validation.
/// `structural` is false inside `oneOf`/`anyOf`/`allOf`/`not`, which in a structural schema only
/// constrain values: closing them would reject the keys their siblings declare.
fn strict(node: &Value, structural: bool) -> Value {
    let Value::Object(schema) = node else {
        return node.clone();
    };
    let mut out = Map::new();
    for (keyword, value) in schema {
        let converted = match keyword.as_str() {
            "properties" => Value::Object(
                value
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(name, property)| (name.clone(), strict(property, structural)))
                    .collect(),
            ),
            "items" | "additionalProperties" => strict(value, structural),
            "not" => strict(value, false),
            "oneOf" | "anyOf" | "allOf" => Value::Array(
                value
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|branch| strict(branch, false))
                    .collect(),
            ),
            // Kubernetes' own keywords are applied below or by `kubernetes_checks`; `format` is
            // not checked (see the top of the file).
            "nullable" | "format" => continue,
            other if other.starts_with("x-kubernetes-") => continue,
            _ => value.clone(),
        };
        out.insert(keyword.clone(), converted);
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        && !out.contains_key("type")
    {
        out.insert("type".into(), json!(["integer", "string"]));
    }
    if schema.get("nullable") == Some(&Value::Bool(true)) {
        if let Some(Value::String(single)) = out.get("type") {
            let both = json!([single, "null"]);
            out.insert("type".into(), both);
        }
        if let Some(Value::Array(options)) = out.get_mut("enum") {
            options.push(Value::Null);
        }
    }
    let describes_an_object =
        schema.get("type") == Some(&json!("object")) || schema.contains_key("properties");
    let preserves_unknown_fields =
        schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if structural
        && describes_an_object
        && !preserves_unknown_fields
        && !schema.contains_key("additionalProperties")
    {
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    Value::Object(out)
}

/// ObjectMeta as the API server reads it from a manifest: the fields a client may write, those
/// the server fills in, nothing else.
fn object_meta(namespaced: bool) -> Value {
    let namespace = if namespaced {
        json!({"type": "string", "maxLength": 63, "pattern": DNS_LABEL})
    } else {
        // A cluster-scoped object has no namespace.
        json!({"not": {}})
    };
    json!({
        "type": "object",
        "required": ["name"],
        "additionalProperties": false,
        "properties": {
            "name": {"type": "string", "maxLength": 253, "pattern": DNS_SUBDOMAIN},
            "generateName": {"type": "string"},
            "namespace": namespace,
            "labels": {
                "type": "object",
                "additionalProperties": {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE}
            },
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            "finalizers": {"type": "array", "items": {"type": "string"}},
            "ownerReferences": {"type": "array", "items": {
                "type": "object",
                "required": ["apiVersion", "kind", "name", "uid"],
                "additionalProperties": false,
                "properties": {
                    "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                    "name": {"type": "string"}, "uid": {"type": "string"},
                    "controller": {"type": "boolean"}, "blockOwnerDeletion": {"type": "boolean"}
                }
            }},
            "uid": {"type": "string"},
            "resourceVersion": {"type": "string"},
            "generation": {"type": "integer"},
            "creationTimestamp": {"type": ["string", "null"]},
            "deletionTimestamp": {"type": "string"},
            "deletionGracePeriodSeconds": {"type": "integer"},
            "selfLink": {"type": "string"},
            "managedFields": {"type": "array", "items": {"type": "object"}}
        }
    })
}

/// The whole object's schema: the CRD's, closed, with the fields every object has.
fn object_schema(crd: &Crd, version: &Version) -> Value {
    let mut schema = strict(&version.schema, true);
    let root = schema.as_object_mut().unwrap();
    let properties = root
        .entry("properties")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .unwrap();
    properties.insert("apiVersion".into(), json!({"type": "string"}));
    properties.insert("kind".into(), json!({"type": "string"}));
    properties.insert("metadata".into(), object_meta(crd.namespaced));
    let required = root
        .entry("required")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .unwrap();
    for key in ["apiVersion", "kind", "metadata"] {
        if !required.contains(&json!(key)) {
            required.push(json!(key));
        }
    }
    schema
}

// ---------------------------------------------------------------------------------------------
// Checking an object

/// A JSON pointer into `document` as Kubernetes writes a field path: `spec.match[0].mode`.
fn field_path(document: &Value, pointer: &str) -> String {
    let mut node = Some(document);
    let mut path = String::new();
    for segment in pointer.split('/').skip(1) {
        let key = segment.replace("~1", "/").replace("~0", "~");
        match node {
            Some(Value::Array(items)) => {
                path.push_str(&format!("[{key}]"));
                node = key.parse::<usize>().ok().and_then(|i| items.get(i));
            }
            _ => {
                path = join(&path, &key);
                node = node.and_then(|n| n.get(&key));
            }
        }
    }
    path
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn place(path: &str) -> &str {
    if path.is_empty() {
        "(the object)"
    } else {
        path
    }
}

/// What the JSON Schema cannot say: map lists whose keys repeat (an error), and the CEL rules
/// that would apply to the object's fields (not evaluated; listed).
fn kubernetes_checks(
    schema: &Value,
    value: &Value,
    path: &str,
    errors: &mut Vec<String>,
    rules: &mut Vec<String>,
) {
    if let Some(validations) = schema["x-kubernetes-validations"].as_array() {
        for validation in validations {
            let said = validation["message"]
                .as_str()
                .or(validation["rule"].as_str())
                .unwrap_or("?");
            rules.push(format!("{}: {said}", place(path)));
        }
    }
    match value {
        Value::Object(fields) => {
            for (key, child) in fields {
                let child_schema = schema["properties"]
                    .get(key)
                    .or_else(|| schema.get("additionalProperties").filter(|s| s.is_object()));
                if let Some(child_schema) = child_schema {
                    kubernetes_checks(child_schema, child, &join(path, key), errors, rules);
                }
            }
        }
        Value::Array(items) => {
            let mut seen = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let item_path = format!("{path}[{i}]");
                if let Some(id) = list_identity(schema, item) {
                    if seen.contains(&id) {
                        errors.push(format!("{item_path}: Duplicate value: {id}"));
                    }
                    seen.push(id);
                }
                kubernetes_checks(&schema["items"], item, &item_path, errors, rules);
            }
        }
        _ => {}
    }
}

/// What two items of a Kubernetes list may not share: the key fields of a map list, the whole
/// item of a set; `None` for an atomic list.
fn list_identity(schema: &Value, item: &Value) -> Option<Value> {
    match schema["x-kubernetes-list-type"].as_str()? {
        "map" => Some(Value::Object(
            schema["x-kubernetes-list-map-keys"]
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .map(|key| (key.to_string(), item.get(key).cloned().unwrap_or_default()))
                .collect(),
        )),
        "set" => Some(item.clone()),
        _ => None,
    }
}

/// A `oneOf`'s alternatives, short: `none of them | wasm | lua` (its error would print the whole
/// object).
fn alternatives(schema: &Value, one_of: &str) -> String {
    let Some(Value::Array(branches)) = schema.pointer(one_of) else {
        return one_of.to_string();
    };
    branches
        .iter()
        .map(|branch| match (branch.get("required"), branch.get("not")) {
            (Some(Value::Array(keys)), None) => keys
                .iter()
                .map(|k| k.as_str().unwrap_or("?"))
                .collect::<Vec<_>>()
                .join(" and "),
            (None, Some(_)) => "none of the others".to_string(),
            _ => branch.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The verdict on one object.
struct Checked {
    /// `WasmPlugin extensions.istio.io/v1alpha1 istio-system/gateway-aggregator`.
    what: String,
    errors: Vec<String>,
    /// CEL rules of the CRD on fields this object sets: not evaluated here.
    unevaluated: Vec<String>,
}

fn check(crds: &[Crd], document: &Value) -> Checked {
    let mut checked = Checked {
        what: format!(
            "{} {} {}/{}",
            document["kind"].as_str().unwrap_or("?"),
            document["apiVersion"].as_str().unwrap_or("?"),
            document["metadata"]["namespace"].as_str().unwrap_or("-"),
            document["metadata"]["name"].as_str().unwrap_or("?"),
        ),
        errors: Vec::new(),
        unevaluated: Vec::new(),
    };
    let (crd, version) = match find(crds, document) {
        Ok(found) => found,
        Err(e) => {
            checked.errors.push(e);
            return checked;
        }
    };
    let schema = object_schema(crd, version);
    let validator = jsonschema::draft4::new(&schema).unwrap_or_else(|e| {
        panic!(
            "{CRDS}: {} {}: the converted schema does not compile: {e}",
            crd.kind, version.name
        )
    });
    for error in validator.iter_errors(document) {
        let path = field_path(document, &error.instance_path().to_string());
        match error.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                for key in unexpected {
                    checked
                        .errors
                        .push(format!("unknown field {:?}", join(&path, key)));
                }
            }
            ValidationErrorKind::OneOfMultipleValid { .. } => checked.errors.push(format!(
                "{}: more than one holds of the CRD's oneOf: {}",
                place(&path),
                alternatives(&schema, &error.schema_path().to_string())
            )),
            ValidationErrorKind::OneOfNotValid { .. } => checked.errors.push(format!(
                "{}: none holds of the CRD's oneOf: {}",
                place(&path),
                alternatives(&schema, &error.schema_path().to_string())
            )),
            _ => checked.errors.push(format!("{}: {error}", place(&path))),
        }
    }
    kubernetes_checks(
        &version.schema,
        document,
        "",
        &mut checked.errors,
        &mut checked.unevaluated,
    );
    checked
}

// ---------------------------------------------------------------------------------------------
// The manifests

/// `envoy/istio/*.yaml` and `*.yml`, sorted, relative to the repository.
fn manifest_files() -> Vec<String> {
    let mut files: Vec<String> = fs::read_dir(repo().join(MANIFESTS))
        .unwrap_or_else(|e| panic!("cannot list {MANIFESTS}: {e}"))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .map(|p| format!("{MANIFESTS}/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    files.sort();
    files
}

fn read(relative: &str) -> String {
    fs::read_to_string(repo().join(relative))
        .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

fn documents(relative: &str, reading: yaml::Reading) -> Vec<Value> {
    yaml::documents(&read(relative), reading).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

#[test]
fn every_istio_manifest_passes_its_crd_with_strict_field_validation() {
    let Some(crds) = crds() else { return };
    let mut failures = Vec::new();
    let mut kinds = BTreeSet::new();
    for file in manifest_files() {
        let objects = documents(&file, yaml::Reading::Kubernetes);
        assert!(!objects.is_empty(), "{file}: no YAML document");
        for (i, object) in objects.iter().enumerate() {
            let checked = check(crds, object);
            let at = format!("{file} document {}", i + 1);
            println!("{at}: {}", checked.what);
            for rule in &checked.unevaluated {
                println!("  CEL rule, not evaluated here: {rule}");
            }
            if checked.errors.is_empty() {
                kinds.insert(object["kind"].as_str().unwrap().to_string());
            } else {
                failures.push(format!(
                    "{at}: {}:\n    {}",
                    checked.what,
                    checked.errors.join("\n    ")
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "manifests the API server would reject:\n{}",
        failures.join("\n")
    );
    // A file dropped or renamed must not leave a kind unchecked.
    for kind in ["WasmPlugin", "TrafficExtension", "EnvoyFilter"] {
        assert!(
            kinds.contains(kind),
            "no {kind} manifest in {MANIFESTS}/ was checked"
        );
    }
}

/// Where two readings of a document differ, as field paths.
fn differences(a: &Value, b: &Value, path: &str, found: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) if x.keys().eq(y.keys()) => {
            for (key, value) in x {
                differences(value, &y[key], &join(path, key), found);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                differences(p, q, &format!("{path}[{i}]"), found);
            }
        }
        _ if a == b => {}
        (Value::Object(x), Value::Object(y)) => found.push(format!(
            "{}: keys {:?} (YAML 1.2) are {:?} to Kubernetes",
            place(path),
            x.keys().collect::<Vec<_>>(),
            y.keys().collect::<Vec<_>>()
        )),
        _ => found.push(format!(
            "{}: {a} (YAML 1.2) is {b} to Kubernetes",
            place(path)
        )),
    }
}

/// The parser-based counterpart of tests/schema.rs's quoting test, for keys and values, in
/// block and flow style: what Kubernetes (YAML 1.1) reads is what the other tests (YAML 1.2)
/// checked. Needs no CRD.
#[test]
fn kubernetes_reads_the_manifests_as_yaml_1_2_does() {
    let mut failures = Vec::new();
    for file in manifest_files() {
        let as_yaml_1_2 = documents(&file, yaml::Reading::Yaml12);
        let as_kubernetes = documents(&file, yaml::Reading::Kubernetes);
        assert_eq!(as_yaml_1_2.len(), as_kubernetes.len(), "{file}");
        for (i, (a, b)) in as_yaml_1_2.iter().zip(&as_kubernetes).enumerate() {
            let mut found = Vec::new();
            differences(a, b, "", &mut found);
            for difference in found {
                failures.push(format!("{file} document {}: {difference}: quote it", i + 1));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_kubernetes_reading_has_yaml_1_1_booleans() {
    let text =
        "on: yes\n\"off\": No\nflow: {y: n, \"n\": 'y'}\nlist: [ON, Off, true, 'yes']\n80: x\n";
    assert_eq!(
        yaml::documents(text, yaml::Reading::Kubernetes).unwrap(),
        vec![json!({
            "true": true, "off": false, "flow": {"true": false, "n": "y"},
            "list": [true, false, true, "yes"], "80": "x"
        })]
    );
    assert_eq!(
        yaml::documents(text, yaml::Reading::Yaml12).unwrap(),
        vec![json!({
            "on": "yes", "off": "No", "flow": {"y": "n", "n": "y"},
            "list": ["ON", "Off", true, "yes"], "80": "x"
        })]
    );
    for duplicated in ["a: 1\na: 2\n", "a: 1\n\"a\": 2\n", "on: 1\ntrue: 2\n"] {
        let reading = yaml::documents(duplicated, yaml::Reading::Kubernetes);
        assert!(reading.is_err(), "{duplicated:?} was read as {reading:?}");
    }
    // Empty documents are left out; the rest keep their order.
    assert_eq!(
        yaml::documents("# c\n---\na: 1\n---\n---\nb: 2\n", yaml::Reading::Yaml12).unwrap(),
        vec![json!({"a": 1}), json!({"b": 2})]
    );
}

// ---------------------------------------------------------------------------------------------
// The strictness itself

fn manifest(file: &str) -> Value {
    let mut objects = documents(&format!("{MANIFESTS}/{file}"), yaml::Reading::Kubernetes);
    assert_eq!(objects.len(), 1, "{file}: expected one YAML document");
    objects.remove(0)
}

/// A shipped manifest with changes: `Some(value)` sets (or adds) the value at a JSON pointer
/// whose parent exists, `None` removes it.
fn changed(file: &str, changes: &[(&str, Option<Value>)]) -> Value {
    let mut object = manifest(file);
    for (pointer, value) in changes {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let parent = object
            .pointer_mut(parent)
            .unwrap_or_else(|| panic!("{file}: nothing at {parent}"));
        match (parent, value) {
            (Value::Object(map), Some(value)) => {
                map.insert(key.to_string(), value.clone());
            }
            (Value::Object(map), None) => {
                map.remove(key)
                    .unwrap_or_else(|| panic!("{file}: nothing at {pointer}"));
            }
            (Value::Array(items), Some(value)) => {
                items[key.parse::<usize>().unwrap()] = value.clone()
            }
            (other, _) => panic!("{file}: {pointer}: cannot change {other}"),
        }
    }
    object
}

/// A shipped manifest with its text edited, read as Kubernetes reads it.
fn edited(file: &str, from: &str, to: &str) -> Value {
    let text = read(&format!("{MANIFESTS}/{file}"));
    assert!(text.contains(from), "{file}: no {from:?}");
    let mut objects = yaml::documents(&text.replacen(from, to, 1), yaml::Reading::Kubernetes)
        .unwrap_or_else(|e| panic!("{file} edited: {e}"));
    objects.remove(0)
}

const PLUGIN: &str = "wasmplugin.yaml";
const EXTENSION: &str = "trafficextension.yaml";
const FILTER: &str = "envoyfilter-stop-iteration.yaml";

/// Wrong manifests, and a piece of the error each must get (so it is rejected for that reason).
fn wrong_manifests() -> Vec<(&'static str, Value, &'static str)> {
    let set = |pointer, value| (pointer, Some(value));
    vec![
        // Unknown keys, at every level.
        (
            "an unknown top-level key",
            changed(PLUGIN, &[set("/specs", json!({}))]),
            r#"unknown field "specs""#,
        ),
        (
            "an unknown key in spec",
            changed(PLUGIN, &[set("/spec/zz", json!(1))]),
            r#"unknown field "spec.zz""#,
        ),
        (
            "a key in the wrong case",
            changed(PLUGIN, &[set("/spec/failstrategy", json!("FAIL_CLOSE"))]),
            r#"unknown field "spec.failstrategy""#,
        ),
        (
            "an unknown key in a list item",
            changed(PLUGIN, &[set("/spec/match/0/port", json!(8080))]),
            r#"unknown field "spec.match[0].port""#,
        ),
        (
            "an unknown key in metadata",
            changed(PLUGIN, &[set("/metadata/label", json!({"a": "b"}))]),
            r#"unknown field "metadata.label""#,
        ),
        (
            "a WasmPlugin key at the TrafficExtension's spec level (it belongs under wasm)",
            changed(EXTENSION, &[set("/spec/url", json!("oci://x/y:1"))]),
            r#"unknown field "spec.url""#,
        ),
        (
            "an unknown key in TrafficExtension's wasm",
            changed(EXTENSION, &[set("/spec/wasm/rootId", json!("x"))]),
            r#"unknown field "spec.wasm.rootId""#,
        ),
        (
            "an unknown key deep in an EnvoyFilter match",
            changed(
                FILTER,
                &[set(
                    "/spec/configPatches/1/match/listener/filterChain/filter/subFilter/type",
                    json!("x"),
                )],
            ),
            r#"unknown field "spec.configPatches[1].match.listener.filterChain.filter.subFilter.type""#,
        ),
        (
            "an unknown key in an EnvoyFilter patch (beside value)",
            changed(
                FILTER,
                &[set("/spec/configPatches/0/patch/priority", json!(1))],
            ),
            r#"unknown field "spec.configPatches[0].patch.priority""#,
        ),
        // Enums.
        (
            "a phase that does not exist",
            changed(PLUGIN, &[set("/spec/phase", json!("BEFORE_ROUTER"))]),
            "spec.phase: \"BEFORE_ROUTER\" is not one of",
        ),
        (
            "WasmPlugin's spelling of the phase in a TrafficExtension",
            changed(EXTENSION, &[set("/spec/phase", json!("UNSPECIFIED_PHASE"))]),
            "spec.phase: \"UNSPECIFIED_PHASE\" is not one of",
        ),
        (
            "a failStrategy that does not exist",
            changed(
                EXTENSION,
                &[set("/spec/wasm/failStrategy", json!("FAIL_SOMETIMES"))],
            ),
            "spec.wasm.failStrategy: \"FAIL_SOMETIMES\" is not one of",
        ),
        (
            "an EnvoyFilter applyTo that does not exist",
            changed(
                FILTER,
                &[set("/spec/configPatches/0/applyTo", json!("HTTP_FILTERS"))],
            ),
            "spec.configPatches[0].applyTo: \"HTTP_FILTERS\" is not one of",
        ),
        (
            "an EnvoyFilter context in the wrong case",
            changed(
                FILTER,
                &[set("/spec/configPatches/1/match/context", json!("gateway"))],
            ),
            "spec.configPatches[1].match.context: \"gateway\" is not one of",
        ),
        // Types.
        (
            "a string for an integer",
            changed(PLUGIN, &[set("/spec/priority", json!("10"))]),
            "spec.priority: \"10\" is not of type",
        ),
        (
            "an object for a list",
            changed(PLUGIN, &[set("/spec/match", json!({"mode": "CLIENT"}))]),
            "spec.match: {\"mode\":\"CLIENT\"} is not of type \"array\"",
        ),
        (
            "a string for a port number",
            changed(
                FILTER,
                &[set(
                    "/spec/configPatches/1/match/listener/portNumber",
                    json!("8080"),
                )],
            ),
            "spec.configPatches[1].match.listener.portNumber: \"8080\" is not of type \"integer\"",
        ),
        (
            "a label value YAML 1.1 reads as a boolean (istio: yes)",
            edited(PLUGIN, "istio: ingressgateway", "istio: yes"),
            "spec.selector.matchLabels.istio: true is not of type \"string\"",
        ),
        (
            "null where the CRD does not allow it",
            changed(PLUGIN, &[set("/spec/phase", Value::Null)]),
            "spec.phase: null is not",
        ),
        (
            "an int-or-string that is neither",
            changed(
                PLUGIN,
                &[set("/status", json!({"observedGeneration": true}))],
            ),
            "status.observedGeneration: true is not",
        ),
        // Required keys, oneOf, bounds, patterns, map lists.
        (
            "a WasmPlugin without url",
            changed(PLUGIN, &[("/spec/url", None)]),
            "spec: \"url\" is a required property",
        ),
        (
            "an object without spec",
            changed(PLUGIN, &[("/spec", None)]),
            "(the object): \"spec\" is a required property",
        ),
        (
            "a TrafficExtension with both wasm and lua",
            changed(
                EXTENSION,
                &[set("/spec/lua", json!({"inlineCode": "function x() end"}))],
            ),
            "spec: more than one holds of the CRD's oneOf: none of the others | wasm | lua",
        ),
        (
            "an EnvoyFilter match on both a listener and a cluster",
            changed(
                FILTER,
                &[set(
                    "/spec/configPatches/1/match/cluster",
                    json!({"name": "x"}),
                )],
            ),
            "more than one",
        ),
        (
            "a sha256 with the sha256: prefix",
            changed(
                PLUGIN,
                &[set(
                    "/spec/sha256",
                    json!(format!("sha256:{}", "0".repeat(64))),
                )],
            ),
            "spec.sha256: ",
        ),
        (
            "port 0",
            changed(
                PLUGIN,
                &[set("/spec/match/0/ports", json!([{"number": 0}]))],
            ),
            "spec.match[0].ports[0].number: 0 is less than the minimum",
        ),
        (
            "the same port twice in a map list",
            changed(
                PLUGIN,
                &[set(
                    "/spec/match/0/ports",
                    json!([{"number": 8080}, {"number": 8080}]),
                )],
            ),
            "spec.match[0].ports[1]: Duplicate value: {\"number\":8080}",
        ),
        // metadata.
        (
            "an object without a name",
            changed(PLUGIN, &[("/metadata/name", None)]),
            "metadata: \"name\" is a required property",
        ),
        (
            "a name that is not a DNS subdomain",
            changed(
                PLUGIN,
                &[set("/metadata/name", json!("Gateway_Aggregator"))],
            ),
            "metadata.name: ",
        ),
        (
            "an empty namespace",
            changed(PLUGIN, &[set("/metadata/namespace", json!(""))]),
            "metadata.namespace: ",
        ),
        (
            "a namespace that is not a DNS label",
            changed(FILTER, &[set("/metadata/namespace", json!("istio.system"))]),
            "metadata.namespace: ",
        ),
        // apiVersion and kind.
        (
            "a version the CRD does not define",
            changed(
                PLUGIN,
                &[set("/apiVersion", json!("extensions.istio.io/v1beta1"))],
            ),
            "WasmPlugin has no version \"v1beta1\" (served: v1alpha1)",
        ),
        (
            "a kind of another group",
            changed(
                PLUGIN,
                &[set("/apiVersion", json!("networking.istio.io/v1alpha3"))],
            ),
            "kind \"WasmPlugin\": no such kind in networking.istio.io",
        ),
        (
            "a misspelt kind",
            changed(PLUGIN, &[set("/kind", json!("WasmPlugins"))]),
            "kind \"WasmPlugins\": no such kind",
        ),
        (
            "a group that does not exist",
            changed(
                EXTENSION,
                &[set("/apiVersion", json!("extension.istio.io/v1alpha1"))],
            ),
            "no CRD of group \"extension.istio.io\"",
        ),
        (
            "no group",
            changed(FILTER, &[set("/apiVersion", json!("v1alpha3"))]),
            "not <group>/<version>",
        ),
    ]
}

#[test]
fn strict_validation_rejects_wrong_manifests() {
    let Some(crds) = crds() else { return };
    let cases = wrong_manifests();
    let mut failures = Vec::new();
    for (label, object, expected) in &cases {
        let errors = check(crds, object).errors;
        println!(
            "{label}\n  {}",
            errors.first().map_or("accepted", String::as_str)
        );
        if !errors.iter().any(|e| e.contains(expected)) {
            failures.push(format!(
                "{label}: expected an error containing {expected:?}, got {errors:?}"
            ));
        }
    }
    println!("wrong manifests checked: {}", cases.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What the CRDs leave open must stay open: free-form fields, maps, nullable and int-or-string
/// fields, other enum values, the alternative to a selector.
fn free_manifests() -> Vec<(&'static str, Value)> {
    let set = |pointer, value| (pointer, Some(value));
    let anything = json!({"zz": [1, {"deep": {"yy": null}}], "on": true});
    vec![
        (
            "any key inside WasmPlugin's pluginConfig",
            changed(
                PLUGIN,
                &[
                    set("/spec/pluginConfig/zz", anything.clone()),
                    set("/spec/pluginConfig/routes/0/zz", json!(1)),
                ],
            ),
        ),
        (
            "any key inside TrafficExtension's pluginConfig",
            changed(
                EXTENSION,
                &[set("/spec/wasm/pluginConfig/zz", anything.clone())],
            ),
        ),
        (
            "any key inside an EnvoyFilter patch value",
            changed(
                FILTER,
                &[
                    set("/spec/configPatches/0/patch/value/zz", anything.clone()),
                    set(
                        "/spec/configPatches/0/patch/value/typed_config/config/zz",
                        json!(1),
                    ),
                ],
            ),
        ),
        (
            "more selector labels, labels and annotations",
            changed(
                PLUGIN,
                &[
                    set("/spec/selector/matchLabels/app", json!("aggregator")),
                    set(
                        "/metadata/labels",
                        json!({"app.kubernetes.io/name": "aggregator"}),
                    ),
                    set("/metadata/annotations", json!({"note": "any text: at all"})),
                ],
            ),
        ),
        (
            "a nullable priority, null and set",
            changed(PLUGIN, &[set("/spec/priority", Value::Null)]),
        ),
        (
            "a priority",
            changed(PLUGIN, &[set("/spec/priority", json!(10))]),
        ),
        (
            "int-or-string and unknown keys in status",
            changed(
                PLUGIN,
                &[set("/status", json!({"observedGeneration": "3", "zz": 1}))],
            ),
        ),
        (
            "an integer observedGeneration",
            changed(
                EXTENSION,
                &[set("/status", json!({"observedGeneration": 3}))],
            ),
        ),
        (
            "other enum values",
            changed(
                PLUGIN,
                &[
                    set("/spec/phase", json!("AUTHZ")),
                    set("/spec/failStrategy", json!("FAIL_OPEN")),
                    set("/spec/match/0/mode", json!("CLIENT_AND_SERVER")),
                ],
            ),
        ),
        (
            "ports as a map list with distinct keys",
            changed(
                PLUGIN,
                &[set(
                    "/spec/match/0/ports",
                    json!([{"number": 8080}, {"number": 8443}]),
                )],
            ),
        ),
        (
            "targetRefs instead of a selector",
            changed(
                EXTENSION,
                &[
                    ("/spec/selector", None),
                    set(
                        "/spec/targetRefs",
                        json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}]),
                    ),
                ],
            ),
        ),
        (
            "a pinned sha256",
            changed(PLUGIN, &[set("/spec/sha256", json!("0".repeat(64)))]),
        ),
        (
            "a lua TrafficExtension",
            changed(
                EXTENSION,
                &[
                    ("/spec/wasm", None),
                    set("/spec/lua", json!({"inlineCode": "x"})),
                ],
            ),
        ),
        (
            "an EnvoyFilter with a priority and a cluster match",
            changed(
                FILTER,
                &[
                    set("/spec/priority", json!(-1)),
                    set(
                        "/spec/configPatches/0/match/cluster",
                        json!({"service": "x"}),
                    ),
                ],
            ),
        ),
    ]
}

#[test]
fn strict_validation_accepts_what_the_crds_leave_free() {
    let Some(crds) = crds() else { return };
    let mut failures = Vec::new();
    for (label, object) in free_manifests() {
        let errors = check(crds, &object).errors;
        if !errors.is_empty() {
            failures.push(format!("{label}:\n    {}", errors.join("\n    ")));
        }
    }
    assert!(
        failures.is_empty(),
        "rejected, though the CRDs allow it:\n{}",
        failures.join("\n")
    );
}

/// What Istio's file cannot show: a version defined but not served, and a cluster-scoped kind
/// (no namespace). Needs no CRD file.
#[test]
fn unserved_versions_and_namespaces_of_cluster_scoped_kinds_are_refused() {
    let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "a": {"type": "string"}
    }}}});
    let crds = [Crd {
        group: "example.io".into(),
        kind: "Thing".into(),
        namespaced: false,
        versions: vec![
            Version {
                name: "v1".into(),
                served: true,
                schema: schema.clone(),
            },
            Version {
                name: "v1beta1".into(),
                served: false,
                schema,
            },
        ],
    }];
    let thing = |version: &str, metadata: Value| {
        json!({"apiVersion": format!("example.io/{version}"), "kind": "Thing",
               "metadata": metadata, "spec": {"a": "x"}})
    };
    assert_eq!(
        check(&crds, &thing("v1", json!({"name": "t"}))).errors,
        Vec::<String>::new()
    );
    for (object, expected) in [
        (
            thing("v1beta1", json!({"name": "t"})),
            "Thing v1beta1 is not served (served: v1)",
        ),
        (
            thing("v1", json!({"name": "t", "namespace": "n"})),
            "metadata.namespace: ",
        ),
    ] {
        let errors = check(&crds, &object).errors;
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "expected {expected:?}, got {errors:?}"
        );
    }
}
