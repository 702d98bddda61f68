//! Speculative decoding from the conversation (`--draft-max`) on the real models: the
//! answers are the tokens decoding without drafts gives, drafts are accepted where the
//! answer repeats its input, and `/metrics` reports it.

mod common;

use common::*;
use serde_json::{json, Value};

const DOCUMENT: &str = "The lighthouse on Gull Rock was built in 1871 by the harbour board of \
Port Elliot. Its lamp burned whale oil until 1904, then kerosene until 1938, when the keeper, \
Margaret Hale, oversaw the change to electric light. The tower is 31 metres tall and its beam \
reaches 22 nautical miles. The last keeper left in 1989, and the station has been automatic \
since then.";

/// Answers that repeat their input (a quote, an edit, an extraction into JSON), one that
/// does not, one under a JSON schema, and one sampled with a seed.
fn requests(model: &str) -> Vec<Value> {
    let g = |input: String, max: u32| {
        json!({"model": model, "input": input,
               "generation_config": {"temperature": 0, "max_output_tokens": max}})
    };
    let schema = json!({"type": "object", "properties": {
        "built": {"type": "integer"}, "keeper": {"type": "string"},
        "height_m": {"type": "number"}}, "required": ["built", "keeper", "height_m"]});
    vec![
        g(
            format!("Repeat this text exactly, word for word:\n\n{DOCUMENT}"),
            120,
        ),
        g(
            format!("Rewrite this text with \"lighthouse\" replaced by \"beacon\":\n\n{DOCUMENT}"),
            120,
        ),
        g(
            format!(
                "From this text, give a JSON object with the year it was built, the keeper's \
                 name and the height in metres.\n\n{DOCUMENT}"
            ),
            80,
        ),
        g("Write a short poem about the sea.".into(), 60),
        json!({"model": model,
               "input": format!("Extract the facts as JSON.\n\n{DOCUMENT}"),
               "response_format": {"type": "text", "mime_type": "application/json",
                                   "schema": schema},
               "generation_config": {"temperature": 0, "max_output_tokens": 80}}),
        json!({"model": model,
               "input": format!("Quote the second sentence of this text.\n\n{DOCUMENT}"),
               "generation_config": {"temperature": 0.8, "seed": 7, "max_output_tokens": 60}}),
    ]
}

fn answers(s: &Server, model: &str) -> Vec<(String, u64)> {
    requests(model)
        .into_iter()
        .map(|r| {
            let (st, v) = s.post(r);
            assert_eq!(st, 200, "{v}");
            (
                text(&v),
                v["usage"]["total_output_tokens"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// With the defaults, speculation is on where the check at load found it exact, and then
/// every answer is the one `--draft-max 0` gives; where it is off by default, `--draft-max`
/// turns it on and it drafts and accepts.
fn same_tokens_with_and_without_drafts(model: &str, expect_on: bool) {
    let dir = tempfile::tempdir().unwrap();
    // Drafts on whatever they cost here: what is checked is that they never change a token
    // (on a CPU where a draft token costs nearly a step, the cost-aware default drafts
    // little; `bench/bench.py`'s spec scenario measures that).
    let models = ["--default-model", model, "--draft-always"];
    let plain = {
        let off = [&models[..], &["--draft-max", "0"]].concat();
        let s = start_default(dir.path(), &off);
        let a = answers(&s, model);
        assert_eq!(
            metric(&s.url, "localgem_spec_draft_tokens_total"),
            0.0,
            "--draft-max 0 drafted"
        );
        a
    };
    let dir = tempfile::tempdir().unwrap();
    let s = start_default(dir.path(), &models);
    let fast = answers(&s, model);
    let drafted = metric(&s.url, "localgem_spec_draft_tokens_total");
    if drafted == 0.0 {
        assert!(
            !expect_on,
            "{model}: speculation is off by default on this machine (see the server log)"
        );
        // Off by default here; asked for, it runs (answers may differ at near ties).
        drop(s);
        let dir = tempfile::tempdir().unwrap();
        let s = start_default(dir.path(), &[&models[..], &["--draft-max", "8"]].concat());
        let asked = answers(&s, model);
        assert_eq!(asked.len(), plain.len());
        let accepted = metric(&s.url, "localgem_spec_accepted_tokens_total");
        eprintln!("{model}: off by default; with --draft-max 8 accepted {accepted}");
        assert!(accepted > 20.0, "accepted {accepted}");
        return;
    }
    for (k, (a, b)) in plain.iter().zip(&fast).enumerate() {
        assert_eq!(a, b, "request {k}: speculation changed the answer");
    }
    let accepted = metric(&s.url, "localgem_spec_accepted_tokens_total");
    let rate = metric(&s.url, "localgem_spec_acceptance_rate");
    eprintln!("{model}: drafted {drafted}, accepted {accepted} ({rate:.2})");
    assert!(accepted > 20.0, "drafted {drafted}, accepted {accepted}");
    assert!(accepted <= drafted);
    assert!((rate - accepted / drafted).abs() < 1e-6, "rate {rate}");
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn speculation_keeps_every_token_smollm2() {
    // On x86 CPUs its weights' kernels and flash attention treat each row alike.
    same_tokens_with_and_without_drafts("smollm2-135m", cfg!(target_arch = "x86_64"));
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn speculation_on_gemma_sliding_window() {
    same_tokens_with_and_without_drafts("gemma-3-270m", false);
}
