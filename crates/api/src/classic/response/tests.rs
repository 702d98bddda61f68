use super::*;
use localgem_wire::Interaction;
use serde_json::json;

fn answer(include_thoughts: bool) -> Answer {
    Answer {
        model: "m".into(),
        response_id: "r".into(),
        include_thoughts,
    }
}

fn delta(delta: Delta) -> StreamEvent {
    StreamEvent::StepDelta {
        index: 0,
        delta,
        event_id: None,
    }
}

fn parts(c: Option<Chunk>) -> Value {
    match c {
        Some(Chunk::Response(r)) => {
            serde_json::to_value(&r.candidates[0].content.as_ref().unwrap().parts).unwrap()
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_streamed_thought_call_and_end_become_chunks() {
    let mut c = Chunker::new(answer(true));
    let thought = delta(Delta::ThoughtSummary {
        content: Content::text("hmm"),
    });
    assert_eq!(
        parts(c.on(&thought)),
        json!([{"text": "hmm", "thought": true}])
    );
    // The signature waits for the next part: here a call.
    assert!(c
        .on(&delta(Delta::ThoughtSignature {
            signature: "a+b/".into()
        }))
        .is_none());
    let start = StreamEvent::StepStart {
        index: 1,
        step: json!({"type": "function_call", "id": "call_1", "name": "f", "arguments": {}}),
        event_id: None,
    };
    assert!(c.on(&start).is_none());
    assert_eq!(
        parts(c.on(&delta(Delta::ArgumentsDelta {
            arguments: "{\"x\":1}".into()
        }))),
        json!([{"functionCall": {"id": "call_1", "name": "f", "args": {"x": 1}}, "thoughtSignature": "a-b_"}])
    );
    let mut it = Interaction {
        id: String::new(),
        object: "interaction".into(),
        model: None,
        status: Status::RequiresAction,
        created: None,
        updated: None,
        steps: None,
        usage: Some(Usage::text(7, 1, 3)),
        service_tier: None,
        previous_interaction_id: None,
    };
    let Some(Chunk::Response(end)) = c.on(&StreamEvent::Completed {
        interaction: it.clone(),
        event_id: None,
    }) else {
        panic!()
    };
    assert_eq!(end.candidates[0].finish_reason.as_deref(), Some("STOP"));
    let u = end.usage_metadata.unwrap();
    assert_eq!(
        (
            u.prompt_token_count,
            u.candidates_token_count,
            u.cached_content_token_count,
            u.total_token_count
        ),
        (7, Some(1), Some(3), 8)
    );
    it.status = Status::Incomplete;
    let Some(Chunk::Response(end)) = c.on(&StreamEvent::Completed {
        interaction: it,
        event_id: None,
    }) else {
        panic!()
    };
    assert_eq!(
        end.candidates[0].finish_reason.as_deref(),
        Some("MAX_TOKENS")
    );
}

#[test]
fn hidden_thoughts_send_nothing_but_their_signature() {
    let mut c = Chunker::new(answer(false));
    assert!(c
        .on(&delta(Delta::ThoughtSummary {
            content: Content::text("hmm")
        }))
        .is_none());
    c.on(&delta(Delta::ThoughtSignature {
        signature: "c2ln".into(),
    }));
    assert_eq!(
        parts(c.on(&delta(Delta::Text { text: "hi".into() }))),
        json!([{"text": "hi", "thoughtSignature": "c2ln"}])
    );
    assert_eq!(
        parts(c.on(&delta(Delta::Text { text: "!".into() }))),
        json!([{"text": "!"}])
    );
}
