//! Stream events built from arbitrary text: each encodes to one line of JSON (so SSE framing
//! holds) that parses back to the same event, and resuming a replay after any event id never
//! panics and never repeats or loses text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use localgem_api::events::{replay, resume_after, Cursor};
use localgem_core::InteractionRecord;
use localgem_wire::{Content, Delta, Status, Step, StreamEvent, Usage};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    let ev = StreamEvent::StepDelta {
        index: 0,
        delta: Delta::Text { text: text.clone() },
        event_id: Some("2.0.1.5".into()),
    };
    let line = serde_json::to_string(&ev).unwrap();
    assert!(!line.contains('\n') && !line.contains('\r'), "a data line must be one line");
    let back: StreamEvent = serde_json::from_str(&line).unwrap();
    assert_eq!(back, ev);

    let r = InteractionRecord {
        id: "v1_x".into(),
        tenant: "t".into(),
        model: "m".into(),
        status: Status::Completed,
        created: 0,
        updated: 0,
        previous_interaction_id: None,
        input: vec![],
        output: vec![Step::ModelOutput { content: vec![Content::text(text.clone())], error: None }],
        usage: Usage::text(1, 1, 0),
        error: None,
        resolved_input: None,
    };
    let events = replay(&r, true);
    // A cursor inside the text: the resumed text is exactly the rest.
    let cut = data.first().map_or(0, |b| *b as usize) % (text.len() + 1);
    if text.is_char_boundary(cut) {
        if let Some(c) = Cursor::parse(&format!("2.0.1.{cut}")) {
            let rest: String = resume_after(events.clone(), c)
                .iter()
                .filter_map(|e| match e {
                    StreamEvent::StepDelta { delta: Delta::Text { text }, .. } => Some(text.as_str()),
                    _ => None,
                })
                .collect();
            assert_eq!(rest, &text[cut..]);
        }
    }
    // Any string as an event id: parsed or refused, never a panic.
    if let Some(c) = Cursor::parse(&text) {
        let _ = resume_after(events, c);
    }
});
