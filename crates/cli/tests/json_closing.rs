//! Constrained output on the real bundled model: JSON closes within every output cap (and at
//! the context's end), and schemas written with `$defs`/`$ref` are enforced as the client
//! wrote them, for tools and for `response_format`. Like `real_model.rs` these need the
//! models in `LOCALGEM_MODELS_DIR`, hence `#[ignore]`; `scripts/test.sh` runs them with
//! `--include-ignored`.

mod common;

use common::{post_json, start_default, Server};
use serde_json::{json, Value};

/// `POST /v1beta/interactions`: status and JSON body.
fn post(s: &Server, body: &Value) -> (u16, Value) {
    post_json(&s.url, "test-key", body)
}

/// The answer's text: every text part of its `model_output` steps.
fn output_text(v: &Value) -> String {
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["type"] == "model_output")
        .flat_map(|s| s["content"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["text"].as_str().map(str::to_owned))
        .collect()
}

/// The prompt of Google's cookbook JSON_mode notebook.
const COOKIES: &str = "List a few popular cookie recipes using this JSON schema: Recipe = {'recipe_name': str} Return: list[Recipe]";

fn json_mode(schema: Option<&Value>, seed: u64, max: u32) -> Value {
    let mut format = json!({"type": "text", "mime_type": "application/json"});
    if let Some(s) = schema {
        format["schema"] = s.clone();
    }
    json!({"model": "gemini-3-flash-preview", "input": COOKIES, "response_format": format,
           "generation_config": {"seed": seed, "max_output_tokens": max}})
}

fn recipes_schema() -> Value {
    json!({"type": "array", "items": {"type": "object",
           "properties": {"recipe_name": {"type": "string"}}, "required": ["recipe_name"]}})
}

/// A list of `{"recipe_name": str}` objects and nothing else.
fn recipes_ok(v: &Value) -> bool {
    v.as_array().is_some_and(|items| {
        items.iter().all(|r| {
            r.as_object()
                .is_some_and(|o| o.len() == 1 && o.get("recipe_name").is_some_and(Value::is_string))
        })
    })
}

/// Post `body` and check its answer: a 200, `completed` or `incomplete`, and no more output
/// tokens than the cap. Its text, status and output tokens.
fn answer(s: &Server, body: &Value, what: &str) -> (String, String, u64) {
    let (st, v) = post(s, body);
    assert_eq!(st, 200, "{what}: {v}");
    let status = v["status"].as_str().unwrap().to_owned();
    assert!(
        status == "completed" || status == "incomplete",
        "{what}: {v}"
    );
    let cap = body["generation_config"]["max_output_tokens"].as_u64();
    let used = v["usage"]["total_output_tokens"].as_u64().unwrap_or(0);
    if let Some(cap) = cap {
        assert!(
            used <= cap,
            "{what}: {used} tokens over a cap of {cap}: {v}"
        );
    }
    (output_text(&v), status, used)
}

/// [`answer`], whose text must parse as JSON whatever the status (the cap closes it).
fn parsed(s: &Server, body: &Value, what: &str) -> (Value, String) {
    let (t, status, used) = answer(s, body, what);
    let parsed: Value = serde_json::from_str(&t)
        .unwrap_or_else(|e| panic!("{what} ({status}, {used} tokens): not JSON ({e}): {t:?}"));
    (parsed, status)
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn json_mode_closes_within_every_cap() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_default(dir.path(), &[]);
    // The cookbook request, unchanged.
    parsed(&s, &json_mode(None, 7, 64), "cookbook request");
    // At temperature 1 the model nests `{"}": {"}": …` (seed 4 did, cut at 24 tokens).
    for seed in 0..8 {
        let mut body = json_mode(None, seed, 24);
        body["generation_config"]["temperature"] = json!(1.0);
        parsed(&s, &body, &format!("temperature 1, cap 24, seed {seed}"));
    }
    let schema = recipes_schema();
    for max in [1, 2, 3, 5, 8, 16, 64, 200] {
        let seeds: &[u64] = if max <= 16 { &[1, 7, 42] } else { &[7] };
        for &seed in seeds {
            let what = format!("JSON mode, cap {max}, seed {seed}");
            parsed(&s, &json_mode(None, seed, max), &what);
            let what = format!("schema, cap {max}, seed {seed}");
            if max == 1 {
                // No single token of this vocabulary is a valid answer (`[]` takes two), so
                // the answer is cut at the cap as usual.
                let (t, status, _) = answer(&s, &json_mode(Some(&schema), seed, max), &what);
                match serde_json::from_str::<Value>(&t) {
                    Ok(v) => assert!(recipes_ok(&v), "{what}: {v}"),
                    Err(_) => assert_eq!(status, "incomplete", "{what}: {t:?}"),
                }
                continue;
            }
            let (v, _) = parsed(&s, &json_mode(Some(&schema), seed, max), &what);
            // Bounded, narrowed and closed, the output always validates.
            assert!(recipes_ok(&v), "{what}: {v}");
        }
    }
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn json_mode_closes_at_the_end_of_the_context() {
    let dir = tempfile::tempdir().unwrap();
    // One slot of 256 cells: the context ends long before the output cap.
    let s = start_default(
        dir.path(),
        &["--ctx-size", "256", "--kv-slots", "1", "--parallel", "1"],
    );
    // Padding that leaves the answer about 30 tokens: the most that fits, less 6 × 5.
    let padded = |n: usize| "Cookies are sweet. ".repeat(n) + COOKIES;
    let fits = |n: usize| {
        let mut body = json_mode(None, 0, 1);
        body["input"] = json!(padded(n));
        post(&s, &body).0 == 200
    };
    assert!(fits(0), "the bare prompt is too long");
    let (mut most, mut over) = (0, 64);
    while over - most > 1 {
        let mid = (most + over) / 2;
        if fits(mid) {
            most = mid;
        } else {
            over = mid;
        }
    }
    assert!(most > 6, "the prompt alone nearly fills the context");
    let schema = recipes_schema();
    for temperature in [0.7, 1.0] {
        for seed in 0..6 {
            for schema in [None, Some(&schema)] {
                let what = format!(
                    "context end, temperature {temperature}, seed {seed}, schema {}",
                    schema.is_some()
                );
                let mut body = json_mode(schema, seed, 4000);
                body["input"] = json!(padded(most - 6));
                body["generation_config"]["temperature"] = json!(temperature);
                let (v, _) = parsed(&s, &body, &what);
                if schema.is_some() {
                    assert!(recipes_ok(&v), "{what}: {v}");
                }
            }
        }
    }
}

/// A function as pydantic writes it: the nested model in `$defs`, referenced by pointer.
fn plan_route() -> Value {
    json!({"type": "function", "name": "plan_route", "description": "Plan a route between two stops",
        "parameters": {
            "$defs": {"stop": {"type": "object", "title": "Stop",
                "properties": {"name": {"type": "string", "title": "Name"},
                               "lat": {"type": "number", "title": "Lat"},
                               "lon": {"type": "number", "title": "Lon"}},
                "required": ["name", "lat", "lon"]}},
            "type": "object", "title": "PlanRouteArgs",
            "properties": {"start": {"$ref": "#/$defs/stop"}, "end": {"$ref": "#/$defs/stop"},
                           "mode": {"type": "string", "enum": ["walk", "drive"]}},
            "required": ["start", "end"]}})
}

fn stop_ok(v: &Value) -> bool {
    v.as_object().is_some_and(|o| {
        o.keys()
            .all(|k| ["name", "lat", "lon"].contains(&k.as_str()))
            && o.get("name").is_some_and(Value::is_string)
            && o.get("lat").is_some_and(Value::is_number)
            && o.get("lon").is_some_and(Value::is_number)
    })
}

/// A category tree that refers to its own root (`#`), written with `definitions` and
/// pointers that need escaping (`~1` for `/`, `~0` for `~`, `%25` for `%`).
fn tree_schema() -> Value {
    json!({"type": "object", "properties": {
            "label": {"$ref": "#/definitions/a~1b~0c%25d"},
            "children": {"type": "array", "maxItems": 2, "items": {"$ref": "#"}}},
        "required": ["label", "children"],
        "definitions": {"a/b~c%d": {"type": "string", "maxLength": 12}}})
}

fn tree_ok(v: &Value) -> bool {
    v.as_object().is_some_and(|o| {
        o.len() == 2
            && o["label"].as_str().is_some_and(|l| l.chars().count() <= 12)
            && o["children"]
                .as_array()
                .is_some_and(|c| c.len() <= 2 && c.iter().all(tree_ok))
    })
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn schemas_with_defs_and_refs_are_enforced_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_default(dir.path(), &[]);
    for seed in [0, 1, 2] {
        for mode in ["any", "validated"] {
            let (st, v) = post(
                &s,
                &json!({"model": "gemini-3-flash-preview",
                "input": "Plan a drive from the Louvre (48.8606, 2.3376) to the Eiffel Tower (48.8584, 2.2945).",
                "tools": [plan_route()],
                "generation_config": {"tool_choice": mode, "seed": seed, "temperature": 1.0,
                                      "max_output_tokens": 160}}),
            );
            assert_eq!(st, 200, "{mode} seed {seed}: {v}");
            let calls: Vec<&Value> = v["steps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["type"] == "function_call")
                .collect();
            if mode == "any" {
                assert_eq!(v["status"], "requires_action", "seed {seed}: {v}");
                assert_eq!(calls.len(), 1, "seed {seed}: {v}");
            }
            for call in calls {
                assert_eq!(call["name"], "plan_route", "{v}");
                let args = call["arguments"].as_object().unwrap();
                assert!(
                    args.keys()
                        .all(|k| ["start", "end", "mode"].contains(&k.as_str())),
                    "{v}"
                );
                assert!(stop_ok(&args["start"]) && stop_ok(&args["end"]), "{v}");
                if let Some(m) = args.get("mode") {
                    assert!(m == "walk" || m == "drive", "{v}");
                }
            }
        }
    }
    // response_format: pydantic's list of `$defs` models, and a tree through `#`.
    let recipes = json!({"$defs": {"Recipe": {"type": "object", "title": "Recipe",
            "properties": {"recipe_name": {"type": "string", "title": "Recipe Name"}},
            "required": ["recipe_name"]}},
        "type": "array", "items": {"$ref": "#/$defs/Recipe"}});
    for seed in [1, 7] {
        let (v, _) = parsed(&s, &json_mode(Some(&recipes), seed, 120), "$defs list");
        assert!(recipes_ok(&v), "seed {seed}: {v}");
        let body = json!({"model": "gemini-3-flash-preview", "input": "Sort these into a tree: fruit, apple, pear.",
            "response_format": tree_schema(),
            "generation_config": {"seed": seed, "max_output_tokens": 120}});
        let (v, _) = parsed(&s, &body, "tree through #");
        assert!(tree_ok(&v), "seed {seed}: {v}");
    }
}
