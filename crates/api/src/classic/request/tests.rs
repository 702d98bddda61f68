use super::*;
use serde_json::json;

fn contents(v: Value) -> Vec<ClassicContent> {
    serde_json::from_value(v).unwrap()
}

#[test]
fn results_without_ids_answer_the_oldest_open_call_of_their_name() {
    let steps = to_steps(contents(json!([
        {"role": "user", "parts": [{"text": "two cities"}]},
        {"role": "model", "parts": [
            {"functionCall": {"name": "w", "args": {"c": "a"}}},
            {"functionCall": {"name": "w", "args": {"c": "b"}}},
            {"functionCall": {"id": "t1", "name": "t"}}]},
        {"role": "user", "parts": [
            {"functionResponse": {"id": "t1", "name": "t", "response": {"result": 1}}},
            {"functionResponse": {"name": "w", "response": {"result": "A"}}},
            {"functionResponse": {"name": "w", "response": {"error": "down"}}}]}
    ])))
    .unwrap();
    let ids: Vec<(&str, &str)> = steps
        .iter()
        .filter_map(|s| match s {
            Step::FunctionCall { id, name, .. } => {
                Some(("call", id.as_str())).map(|(_, i)| (name.as_str(), i))
            }
            Step::FunctionResult { call_id, .. } => Some(("result", call_id.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(
        ids,
        [
            ("w", "call_1"),
            ("w", "call_2"),
            ("t", "t1"),
            ("result", "t1"),
            ("result", "call_1"),
            ("result", "call_2")
        ]
    );
    assert!(matches!(
        &steps[6],
        Step::FunctionResult {
            is_error: Some(true),
            ..
        }
    ));
    // Arguments always an object.
    assert!(matches!(&steps[3], Step::FunctionCall { arguments, .. } if *arguments == json!({})));
}

#[test]
fn a_signature_becomes_the_thought_before_its_part_and_thought_text_is_dropped() {
    let steps = to_steps(contents(json!([
        {"role": "user", "parts": [{"text": "q"}]},
        {"role": "model", "parts": [
            {"text": "reasoning", "thought": true},
            {"text": "an", "thoughtSignature": "U0lH"},
            {"text": "swer"}]},
        {"parts": [{"text": "more"}, {"inlineData": {"mimeType": "image/png", "data": "AA"}},
                   {"fileData": {"fileUri": "files/abc", "mimeType": "application/pdf"}}]}
    ])))
    .unwrap();
    assert_eq!(
        steps,
        vec![
            Step::UserInput {
                content: vec![Content::text("q")]
            },
            Step::Thought {
                signature: Some("U0lH".into()),
                summary: None
            },
            Step::ModelOutput {
                content: vec![Content::text("answer")],
                error: None
            },
            Step::UserInput {
                content: vec![
                    Content::text("more"),
                    Content::Image(Media {
                        data: Some("AA".into()),
                        mime_type: Some("image/png".into()),
                        ..Media::default()
                    }),
                    Content::Document(Media {
                        uri: Some("files/abc".into()),
                        mime_type: Some("application/pdf".into()),
                        ..Media::default()
                    }),
                ]
            },
        ]
    );
}

#[test]
fn other_built_in_tools_are_named_in_the_refusal_in_either_spelling() {
    for name in [
        "googleSearch",
        "google_search",
        "codeExecution",
        "url_context",
    ] {
        let tool: Tool = serde_json::from_value(json!({name: {}})).unwrap();
        let e = to_functions(vec![tool]).unwrap_err();
        assert!(e.message.contains("not available"), "{name}: {}", e.message);
    }
    let tool: Tool = serde_json::from_value(json!({"teleport": {}})).unwrap();
    assert!(to_functions(vec![tool])
        .unwrap_err()
        .message
        .contains("unknown tool"));
}
