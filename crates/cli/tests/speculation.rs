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
/// turns it on and it drafts and accepts, and where `short_exact` (these requests stay
/// under 256 positions, where this build's CPU kernels compute a batch's rows as they
/// compute one-token steps: `examples/verify_probe.rs --check`) the answers are still the
/// same, which checks that keeping and rejecting drafts never loses or shifts a token.
fn same_tokens_with_and_without_drafts(model: &str, short_exact: bool) {
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
    let mut s = start_default(dir.path(), &models);
    let mut fast = answers(&s, model);
    let mut drafted = metric(&s.url, "localgem_spec_draft_tokens_total");
    let on_by_default = drafted > 0.0;
    if !on_by_default {
        // Off by default here; asked for, it runs.
        drop(s);
        let dir = tempfile::tempdir().unwrap();
        s = start_default(dir.path(), &[&models[..], &["--draft-max", "8"]].concat());
        fast = answers(&s, model);
        drafted = metric(&s.url, "localgem_spec_draft_tokens_total");
    }
    assert_eq!(fast.len(), plain.len());
    if on_by_default || short_exact {
        for (k, (a, b)) in plain.iter().zip(&fast).enumerate() {
            assert_eq!(a, b, "request {k}: speculation changed the answer");
        }
    }
    let accepted = metric(&s.url, "localgem_spec_accepted_tokens_total");
    let rate = metric(&s.url, "localgem_spec_acceptance_rate");
    eprintln!(
        "{model}: on by default: {on_by_default}; drafted {drafted}, accepted {accepted} \
         ({rate:.2})"
    );
    assert!(accepted > 20.0, "drafted {drafted}, accepted {accepted}");
    assert!(accepted <= drafted);
    assert!((rate - accepted / drafted).abs() < 1e-6, "rate {rate}");
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn speculation_keeps_every_token_smollm2() {
    // On x86 CPUs its weights' kernels treat each row of a batch alike, and so does flash
    // attention short of 512 cells (past them a lone one-token step splits its attention
    // across threads, so speculation is off by default: the check at load finds that).
    same_tokens_with_and_without_drafts("smollm2-135m", cfg!(target_arch = "x86_64"));
}

#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn speculation_on_gemma_sliding_window() {
    // Its Q4_K weights are repacked for batches: a batch's rows round differently.
    same_tokens_with_and_without_drafts("gemma-3-270m", false);
}

/// `--draft-model`: a second model drafts where the conversation offers nothing to copy (a
/// poem); the served model checks its drafts, so the answers are the ones decoding without
/// drafts gives. SmolLM2 drafts for itself here (the bundled models share no vocabulary),
/// so nearly every draft token is accepted.
#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn a_draft_model_drafts_where_the_conversation_has_nothing_to_copy() {
    let model = "smollm2-135m";
    let poem = |topic: &str| {
        json!({"model": model, "input": format!("Write a short poem about {topic}."),
               "generation_config": {"temperature": 0, "max_output_tokens": 64}})
    };
    let run = |extra: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let s = start_default(
            dir.path(),
            &[&["--default-model", model][..], extra].concat(),
        );
        let texts: Vec<String> = ["the sea", "a city at night"]
            .iter()
            .map(|t| {
                let (st, v) = s.post(poem(t));
                assert_eq!(st, 200, "{v}");
                text(&v)
            })
            .collect();
        let drafted = metric(&s.url, "localgem_spec_draft_tokens_total");
        let accepted = metric(&s.url, "localgem_spec_accepted_tokens_total");
        (texts, drafted, accepted)
    };
    let (plain, drafted, _) = run(&["--draft-max", "0"]);
    assert_eq!(drafted, 0.0);
    let (lookup, drafted, lookup_accepted) = run(&["--draft-max", "8", "--draft-always"]);
    let (drafts, model_drafted, accepted) = run(&[
        "--draft-max",
        "8",
        "--draft-always",
        "--draft-model",
        "smollm2-135m=smollm2-135m",
    ]);
    eprintln!(
        "lookup alone drafted {drafted}, accepted {lookup_accepted}; with the draft model \
         {model_drafted}, accepted {accepted}"
    );
    assert_eq!(plain, lookup);
    assert_eq!(plain, drafts, "the draft model changed an answer");
    // Two 64-token answers: the draft model (the same weights) gets most of them right.
    assert!(
        accepted > lookup_accepted + 40.0,
        "accepted {accepted} with the draft model, {lookup_accepted} without"
    );
    // A prompt of over a thousand tokens reaches the draft model over several steps (256
    // tokens a step), after which it drafts for that answer too.
    let long = |extra: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let s = start_default(
            dir.path(),
            &[
                &[
                    "--default-model",
                    model,
                    "--draft-max",
                    "8",
                    "--draft-always",
                ][..],
                extra,
            ]
            .concat(),
        );
        let input = format!("{}\nWrite a short poem about the library.", long_system());
        let (st, v) = s.post(json!({"model": model, "input": input,
            "generation_config": {"temperature": 0, "max_output_tokens": 64}}));
        assert_eq!(st, 200, "{v}");
        assert!(
            v["usage"]["total_input_tokens"].as_u64().unwrap() > 1000,
            "{v}"
        );
        metric(&s.url, "localgem_spec_accepted_tokens_total")
    };
    let (without, with) = (
        long(&[]),
        long(&["--draft-model", "smollm2-135m=smollm2-135m"]),
    );
    assert!(
        with > without + 20.0,
        "after a long prompt: accepted {with} with the draft model, {without} without"
    );
}

/// A draft model whose token ids mean other things fails the model's load, with the reason.
#[test]
#[ignore = "needs the bundled models; run by scripts/test.sh"]
fn a_draft_model_with_another_vocabulary_is_refused() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_localgem"))
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--threads",
            "2",
            "--data-dir",
        ])
        .arg(dir.path())
        .arg("--models-dir")
        .arg(models_dir())
        .args(["--model", "smollm2-135m", "--draft-max", "8"])
        .args(["--draft-model", "smollm2-135m=gemma-3-270m"])
        .env("LOCALGEM_PYTHON", "false")
        .env("LOCALGEM_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start localgem");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let found = stderr
        .lines()
        .map_while(Result::ok)
        .take(2000)
        .find(|l| l.contains("does not fit") || l.contains("model ready"));
    let _ = child.kill();
    let _ = child.wait();
    let line = found.expect("no load outcome logged");
    assert!(
        line.contains("does not fit") && line.contains("vocabulary"),
        "{line}"
    );
}
