//! A small JSON Schema checker for the subset docs/openapi.json uses: `$ref` to
//! `#/components/schemas/...`, `type` (one or a list), `properties`, `required`,
//! `additionalProperties: false`, `items`, `enum`, `anyOf`, `minimum`, `maximum`.

use serde_json::Value;

/// The OpenAPI document served by Meridian (the same file the crate embeds).
pub fn spec() -> Value {
    serde_json::from_str(meridian_admin::OPENAPI_JSON).expect("docs/openapi.json is JSON")
}

/// Checks `body` against the response schema of `method path` for `status`; panics with the
/// JSON path of every violation.
pub fn check_response(spec: &Value, method: &str, path: &str, status: u16, body: &Value) {
    let op = &spec["paths"][path][method.to_ascii_lowercase()];
    assert!(
        op.is_object(),
        "{method} {path} is not in the OpenAPI document"
    );
    let schema = &op["responses"][status.to_string()]["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path}: status {status} is not documented (body {body})"
    );
    let mut errors = Vec::new();
    validate(spec, schema, body, "$", &mut errors);
    assert!(
        errors.is_empty(),
        "{method} {path} ({status}) does not match the spec:\n  {}\nbody: {body:#}",
        errors.join("\n  ")
    );
}

fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unsupported $ref {r}"));
            let target = &spec["components"]["schemas"][name];
            assert!(target.is_object(), "dangling $ref {r}");
            resolve(spec, target)
        }
        None => schema,
    }
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Validates `v` against `schema`, collecting violations under `at`.
pub fn validate(spec: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(spec, schema);
    if let Some(any) = schema["anyOf"].as_array() {
        let ok = any.iter().any(|s| {
            let mut e = Vec::new();
            validate(spec, s, v, at, &mut e);
            e.is_empty()
        });
        if !ok {
            errors.push(format!("{at}: matches none of anyOf"));
        }
        return;
    }
    let actual = type_of(v);
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let type_ok = types.is_empty()
        || types.contains(&actual)
        || (actual == "integer" && types.contains(&"number"));
    if !type_ok {
        errors.push(format!("{at}: expected {types:?}, got {actual} ({v})"));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(v) {
            errors.push(format!("{at}: {v} is not one of {allowed:?}"));
        }
    }
    if let (Some(min), Some(x)) = (schema["minimum"].as_f64(), v.as_f64()) {
        if x < min {
            errors.push(format!("{at}: {x} < minimum {min}"));
        }
    }
    if let (Some(max), Some(x)) = (schema["maximum"].as_f64(), v.as_f64()) {
        if x > max {
            errors.push(format!("{at}: {x} > maximum {max}"));
        }
    }
    match v {
        Value::Object(map) => {
            let props = schema["properties"].as_object();
            for req in schema["required"].as_array().into_iter().flatten() {
                let name = req.as_str().unwrap_or_default();
                if !map.contains_key(name) {
                    errors.push(format!("{at}: missing required property {name}"));
                }
            }
            for (k, val) in map {
                match props.and_then(|p| p.get(k)) {
                    Some(s) => validate(spec, s, val, &format!("{at}.{k}"), errors),
                    None if schema["additionalProperties"] == Value::Bool(false) => {
                        errors.push(format!("{at}: undocumented property {k}"))
                    }
                    None => {}
                }
            }
        }
        Value::Array(items) if schema.get("items").is_some() => {
            for (i, item) in items.iter().enumerate() {
                validate(spec, &schema["items"], item, &format!("{at}[{i}]"), errors);
            }
        }
        _ => {}
    }
}

#[test]
fn the_checker_catches_violations() {
    let spec = spec();
    let node = serde_json::json!({"$ref": "#/components/schemas/Event"});
    let mut e = Vec::new();
    validate(
        &spec,
        &node,
        &serde_json::json!({"at_ms": 1, "kind": "x", "node": null, "message": "m"}),
        "$",
        &mut e,
    );
    assert!(e.is_empty(), "{e:?}");
    validate(
        &spec,
        &node,
        &serde_json::json!({"at_ms": "1", "kind": "x", "extra": 1}),
        "$",
        &mut e,
    );
    assert_eq!(e.len(), 4, "{e:?}");
}
