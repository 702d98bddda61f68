//! The API's `Schema` (an OpenAPI subset: upper-case `type`, `nullable`, int64 bounds as
//! strings, snake_case from the Python SDK) → JSON Schema for constrained decoding.
//!
//! The same walk also tidies schemas sent as JSON Schema (`parametersJsonSchema`,
//! `responseJsonSchema`), where clients write upper-case types too. It knows which keywords
//! hold subschemas, so a property named `type` stays a property.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// Keywords whose value is one subschema.
const ONE: [&str; 5] = [
    "items",
    "additionalProperties",
    "not",
    "contains",
    "propertyNames",
];
/// Keywords whose value is a list of subschemas.
const LIST: [&str; 4] = ["anyOf", "oneOf", "allOf", "prefixItems"];
/// Keywords whose value maps names to subschemas.
const MAP: [&str; 4] = ["properties", "$defs", "definitions", "patternProperties"];
/// int64 keywords, which proto JSON may write as strings.
const INTEGERS: [&str; 6] = [
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minProperties",
    "maxProperties",
];
/// `format` values JSON Schema validators know; the API's numeric formats (`int32`,
/// `double`, …) and `enum` say nothing a JSON Schema can check, and are dropped.
const FORMATS: [&str; 9] = [
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "uuid",
];

/// snake_case spellings of the keywords (the Python SDK's nested dumps) → camelCase.
fn keyword(key: &str) -> std::borrow::Cow<'_, str> {
    if !key.contains('_') || key.starts_with('$') {
        return key.into();
    }
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// Convert a schema (either dialect) to JSON Schema.
///
/// # Errors
/// 400 naming `at` when a schema is not an object, or a keyword has the wrong kind of value.
pub fn to_json_schema(schema: &Value, at: &str) -> Result<Value, ApiError> {
    let Value::Object(o) = schema else {
        return match schema {
            Value::Bool(_) => Ok(schema.clone()),
            _ => Err(ApiError::bad_request(format!(
                "{at} must be a schema object"
            ))),
        };
    };
    let mut out = Map::new();
    let mut nullable = false;
    for (key, value) in o {
        let key = keyword(key);
        let key = key.as_ref();
        let here = format!("{at}.{key}");
        match key {
            "type" => {
                if let Some(t) = json_type(value, &here)? {
                    out.insert("type".into(), t);
                }
            }
            "nullable" => nullable = value.as_bool().unwrap_or(false),
            "propertyOrdering" | "example" => {}
            "format" => {
                if let Some(f) = value.as_str().filter(|f| FORMATS.contains(f)) {
                    out.insert("format".into(), Value::String(f.to_owned()));
                }
            }
            k if INTEGERS.contains(&k) => {
                let n = match value {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.trim().parse::<u64>().ok(),
                    _ => None,
                }
                .ok_or_else(|| {
                    ApiError::bad_request(format!("{here} must be a non-negative integer"))
                })?;
                out.insert(key.into(), Value::from(n));
            }
            "minimum" | "maximum" => {
                let n = match value {
                    Value::Number(_) => value.clone(),
                    Value::String(s) => s
                        .trim()
                        .parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map(Value::Number)
                        .ok_or_else(|| ApiError::bad_request(format!("{here} must be a number")))?,
                    _ => return Err(ApiError::bad_request(format!("{here} must be a number"))),
                };
                out.insert(key.into(), n);
            }
            k if ONE.contains(&k) => {
                out.insert(key.into(), to_json_schema(value, &here)?);
            }
            k if LIST.contains(&k) => {
                let Value::Array(items) = value else {
                    return Err(ApiError::bad_request(format!(
                        "{here} must be a list of schemas"
                    )));
                };
                let items = items
                    .iter()
                    .enumerate()
                    .map(|(i, s)| to_json_schema(s, &format!("{here}[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?;
                out.insert(key.into(), Value::Array(items));
            }
            k if MAP.contains(&k) => {
                let Value::Object(props) = value else {
                    return Err(ApiError::bad_request(format!(
                        "{here} must map names to schemas"
                    )));
                };
                let mut converted = Map::new();
                for (name, s) in props {
                    converted.insert(name.clone(), to_json_schema(s, &format!("{here}.{name}"))?);
                }
                out.insert(key.into(), Value::Object(converted));
            }
            _ => {
                out.insert(key.into(), value.clone());
            }
        }
    }
    if nullable {
        match out.get_mut("type") {
            Some(Value::String(t)) => {
                let t = std::mem::take(t);
                out.insert("type".into(), Value::Array(vec![t.into(), "null".into()]));
                if let Some(Value::Array(values)) = out.get_mut("enum") {
                    values.push(Value::Null);
                }
            }
            Some(_) => {}
            None => {
                return Ok(serde_json::json!({"anyOf": [Value::Object(out), {"type": "null"}]}));
            }
        }
    }
    Ok(Value::Object(out))
}

/// A `type` in either dialect → JSON Schema's (`None` for `TYPE_UNSPECIFIED`).
fn json_type(value: &Value, at: &str) -> Result<Option<Value>, ApiError> {
    let one = |s: &str| -> Result<Option<Value>, ApiError> {
        let lower = s.to_ascii_lowercase();
        match lower.as_str() {
            "type_unspecified" | "" => Ok(None),
            "string" | "number" | "integer" | "boolean" | "array" | "object" | "null" => {
                Ok(Some(Value::String(lower)))
            }
            _ => Err(ApiError::bad_request(format!(
                "{at}: unknown type {s:?} (STRING, NUMBER, INTEGER, BOOLEAN, ARRAY, OBJECT or NULL)"
            ))),
        }
    };
    match value {
        Value::String(s) => one(s),
        Value::Array(items) => {
            let mut types = Vec::new();
            for item in items {
                let s = item.as_str().ok_or_else(|| {
                    ApiError::bad_request(format!("{at} must be a type name or a list of them"))
                })?;
                types.extend(one(s)?);
            }
            Ok(Some(Value::Array(types)))
        }
        _ => Err(ApiError::bad_request(format!(
            "{at} must be a type name or a list of them"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_python_sdks_pydantic_schema_becomes_json_schema() {
        // As google-genai sends `response_schema=Recipe` (snake_case inside).
        let sent = json!({"properties": {
                "name": {"title": "Name", "type": "STRING"},
                "ingredients": {"items": {"type": "STRING"}, "title": "Ingredients", "type": "ARRAY",
                                "min_items": "1"}},
            "property_ordering": ["name", "ingredients"], "required": ["name", "ingredients"],
            "title": "Recipe", "type": "OBJECT"});
        assert_eq!(
            to_json_schema(&sent, "responseSchema").unwrap(),
            json!({"properties": {
                    "name": {"title": "Name", "type": "string"},
                    "ingredients": {"items": {"type": "string"}, "title": "Ingredients",
                                    "type": "array", "minItems": 1}},
                "required": ["name", "ingredients"], "title": "Recipe", "type": "object"})
        );
    }

    #[test]
    fn nullable_becomes_a_null_type_and_properties_keep_their_names() {
        let sent = json!({"type": "OBJECT", "properties": {
            "type": {"type": "STRING", "nullable": true, "enum": ["a", "b"], "format": "enum"},
            "n": {"type": "INTEGER", "format": "int32", "minimum": "2"},
            "any": {"anyOf": [{"type": "STRING"}, {"type": "NUMBER"}], "nullable": true}}});
        assert_eq!(
            to_json_schema(&sent, "s").unwrap(),
            json!({"type": "object", "properties": {
                "type": {"type": ["string", "null"], "enum": ["a", "b", null]},
                "n": {"type": "integer", "minimum": 2.0},
                "any": {"anyOf": [{"anyOf": [{"type": "string"}, {"type": "number"}]}, {"type": "null"}]}}})
        );
    }

    #[test]
    fn json_schema_passes_through_with_its_types_lowered() {
        let sent = json!({"type": "OBJECT", "properties": {"q": {"type": "string", "description": "d"}},
                          "required": ["q"], "additionalProperties": false, "$defs": {"x": {"type": "INTEGER"}}});
        assert_eq!(
            to_json_schema(&sent, "s").unwrap(),
            json!({"type": "object", "properties": {"q": {"type": "string", "description": "d"}},
                   "required": ["q"], "additionalProperties": false, "$defs": {"x": {"type": "integer"}}})
        );
    }

    #[test]
    fn bad_schemas_are_400s_that_say_where() {
        for (bad, needle) in [
            (json!("STRING"), "s must be a schema object"),
            (json!({"type": "TEXT"}), "s.type: unknown type"),
            (json!({"type": "ARRAY", "items": 3}), "s.items"),
            (json!({"properties": []}), "s.properties"),
            (json!({"minItems": "many"}), "s.minItems"),
            (json!({"anyOf": {}}), "s.anyOf"),
        ] {
            let e = to_json_schema(&bad, "s").unwrap_err();
            assert_eq!(e.status.as_u16(), 400);
            assert!(e.message.contains(needle), "{bad}: {}", e.message);
        }
    }
}
