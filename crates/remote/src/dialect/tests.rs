//! Each dialect against shapes recorded from the engine's documentation and source:
//! llama.cpp `tools/server` (README, `server-context.cpp`, `server-task.cpp`), vLLM
//! (`vllm/entrypoints/openai/completion/protocol.py` and `serving.py`), SGLang
//! (`python/sglang/srt/managers/io_struct.py`, `tokenizer_manager.py`). vLLM and SGLang need a
//! GPU and were not run here; llama-server is also tested live (`tests/remote`).

use super::*;

fn job(schema: Option<Value>) -> Job {
    Job {
        prompt: vec![1, 15043, 3186],
        max_tokens: 64,
        temperature: 0.0,
        top_p: 0.95,
        top_k: 0,
        seed: 7,
        json_schema: schema,
        cache_salt: Some("tenant-a".into()),
    }
}

fn run(d: Dialect, stream: &[&str]) -> Vec<Chunk> {
    let mut st = StreamState::default();
    stream
        .iter()
        .map(|s| d.chunk(s, &mut st).unwrap())
        .collect()
}

#[test]
fn llama_server_request_and_stream() {
    let schema = json!({"type": "object"});
    let b = Dialect::LlamaServer.request(&job(Some(schema.clone())));
    assert_eq!(Dialect::LlamaServer.generate_path(), "/completion");
    assert_eq!(b["prompt"], json!([1, 15043, 3186]));
    assert_eq!(b["stream"], true);
    assert_eq!(b["cache_prompt"], true);
    assert_eq!(b["n_predict"], 64);
    assert_eq!(b["json_schema"], schema);
    // Its defaults (top-k 40, min-p 0.05) would sample differently from localgem's.
    assert_eq!(b["top_k"], 0);
    assert_eq!(b["min_p"], 0.0);
    assert_eq!(b["samplers"], json!(["top_p", "temperature"]));
    assert!(
        b.get("cache_salt").is_none(),
        "llama-server has no cache salt"
    );

    assert_eq!(b["return_progress"], true);
    let chunks = run(
        Dialect::LlamaServer,
        &[
            // Prompt progress (`return_progress`): the placeholder token is no token.
            r#"{"index":0,"content":"","tokens":[0],"stop":false,"id_slot":0,"tokens_predicted":0,"tokens_evaluated":12,"prompt_progress":{"total":12,"cache":9,"processed":0,"time_ms":0}}"#,
            r#"{"index":0,"content":" Hello","tokens":[15043],"stop":false,"id_slot":-1,"tokens_predicted":1,"tokens_evaluated":12}"#,
            // A token that ends inside a UTF-8 character got no chunk: its bytes lead the next.
            r#"{"index":0,"content":"\u00e9t","tokens":[83],"stop":false,"id_slot":-1,"tokens_predicted":3,"tokens_evaluated":12}"#,
            r#"{"index":0,"content":"","tokens":[],"id_slot":0,"stop":true,"model":"m","tokens_predicted":3,"tokens_evaluated":12,"generation_settings":{},"prompt":"","has_new_line":false,"truncated":false,"stop_type":"eos","stopping_word":"","tokens_cached":15,"timings":{"cache_n":9,"prompt_n":3,"predicted_n":3}}"#,
        ],
    );
    assert!(chunks[0].tokens.is_empty());
    assert_eq!(chunks[0].cached_tokens, Some(9));
    assert_eq!(chunks[1].tokens, vec![15043]);
    assert_eq!(chunks[1].generated, Some(1));
    assert_eq!(chunks[2].text.as_deref(), Some("ét"));
    assert_eq!(chunks[2].generated, Some(3));
    assert_eq!(chunks[3].end, Some(EndReason::Eos));
    assert_eq!(chunks[3].cached_tokens, Some(9));
    assert!(chunks[3].last);
    assert!(!chunks[2].last && chunks[2].end.is_none());
    let limit = Dialect::LlamaServer
        .chunk(
            r#"{"content":"","tokens":[],"stop":true,"stop_type":"limit","truncated":true}"#,
            &mut StreamState::default(),
        )
        .unwrap();
    assert_eq!(limit.end, Some(EndReason::Length));
}

#[test]
fn vllm_request_and_stream() {
    let schema = json!({"type": "object"});
    let b = Dialect::Vllm.request(&job(Some(schema.clone())));
    assert_eq!(Dialect::Vllm.generate_path(), "/v1/completions");
    assert_eq!(b["prompt"], json!([1, 15043, 3186]));
    assert_eq!(b["return_token_ids"], true);
    assert_eq!(b["stream_options"]["include_usage"], true);
    assert_eq!(b["max_tokens"], 64);
    assert_eq!(b["structured_outputs"], json!({"json": schema}));
    assert_eq!(b["cache_salt"], "tenant-a");
    assert!(
        b.get("guided_json").is_none(),
        "removed in vLLM 0.12 (and ignored)"
    );

    let chunks = run(
        Dialect::Vllm,
        &[
            r#"{"id":"cmpl-1","object":"text_completion","created":1760000000,"model":"m","choices":[{"index":0,"text":" Hello","logprobs":null,"finish_reason":null,"stop_reason":null,"prompt_token_ids":[1,15043,3186],"token_ids":[15043]}]}"#,
            r#"{"id":"cmpl-1","object":"text_completion","created":1760000000,"model":"m","choices":[{"index":0,"text":"!","logprobs":null,"finish_reason":"length","stop_reason":null,"token_ids":[0]}]}"#,
            r#"{"id":"cmpl-1","object":"text_completion","created":1760000000,"model":"m","choices":[],"usage":{"prompt_tokens":3,"total_tokens":5,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":2}}}"#,
            "[DONE]",
        ],
    );
    assert_eq!(chunks[0].tokens, vec![15043]);
    assert_eq!(chunks[1].end, Some(EndReason::Length));
    assert!(!chunks[1].last, "usage follows the finish");
    assert_eq!(chunks[2].cached_tokens, Some(2));
    assert!(chunks[3].last);
    let stop = Dialect::Vllm
        .chunk(
            r#"{"choices":[{"index":0,"text":"","finish_reason":"stop","token_ids":[2]}]}"#,
            &mut StreamState::default(),
        )
        .unwrap();
    assert_eq!(stop.end, Some(EndReason::Eos));
    let abort = Dialect::Vllm
        .chunk(
            r#"{"choices":[{"index":0,"text":"","finish_reason":"abort","token_ids":[]}]}"#,
            &mut StreamState::default(),
        )
        .unwrap();
    assert!(matches!(abort.end, Some(EndReason::Abort(_))));
}

#[test]
fn sglang_request_and_cumulative_or_incremental_ids() {
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
    let b = Dialect::Sglang.request(&job(Some(schema.clone())));
    assert_eq!(Dialect::Sglang.generate_path(), "/generate");
    assert_eq!(b["input_ids"], json!([1, 15043, 3186]));
    assert_eq!(b["stream"], true);
    let p = &b["sampling_params"];
    assert_eq!(p["max_new_tokens"], 64);
    assert_eq!(p["sampling_seed"], 7);
    // A JSON string, not an object.
    assert_eq!(p["json_schema"], json!(schema.to_string()));

    // Default: cumulative text and ids.
    let chunks = run(
        Dialect::Sglang,
        &[
            r#"{"text":"Hello","output_ids":[9707],"meta_info":{"id":"r","finish_reason":null,"prompt_tokens":5,"completion_tokens":1,"cached_tokens":3}}"#,
            r#"{"text":"Hello world","output_ids":[9707,1879],"meta_info":{"id":"r","finish_reason":null,"prompt_tokens":5,"completion_tokens":2,"cached_tokens":3}}"#,
            r#"{"text":"Hello world!","output_ids":[9707,1879,0],"meta_info":{"id":"r","finish_reason":{"type":"stop","matched":0},"prompt_tokens":5,"completion_tokens":3,"cached_tokens":3,"e2e_latency":0.1}}"#,
            "[DONE]",
        ],
    );
    let ids: Vec<u32> = chunks.iter().flat_map(|c| c.tokens.clone()).collect();
    assert_eq!(ids, vec![9707, 1879, 0]);
    assert_eq!(chunks[0].cached_tokens, Some(3));
    assert_eq!(chunks[2].end, Some(EndReason::Eos));
    assert!(chunks[3].last);
    // `--incremental-streaming-output`: deltas.
    let chunks = run(
        Dialect::Sglang,
        &[
            r#"{"text":"Hello","output_ids":[9707],"meta_info":{"finish_reason":null,"completion_tokens":1}}"#,
            r#"{"text":" world","output_ids":[1879],"meta_info":{"finish_reason":null,"completion_tokens":2}}"#,
            r#"{"text":"!","output_ids":[0],"meta_info":{"finish_reason":{"type":"length","length":3},"completion_tokens":3}}"#,
        ],
    );
    let ids: Vec<u32> = chunks.iter().flat_map(|c| c.tokens.clone()).collect();
    assert_eq!(ids, vec![9707, 1879, 0]);
    assert_eq!(chunks[2].end, Some(EndReason::Length));
}

#[test]
fn errors_in_every_shape_end_the_stream() {
    for (d, body) in [
        (
            Dialect::LlamaServer,
            r#"{"error":{"code":400,"message":"request (9000 tokens) exceeds the available context size (8192 tokens), try increasing it","type":"exceed_context_size_error","n_prompt_tokens":9000,"n_ctx":8192}}"#,
        ),
        (
            Dialect::Vllm,
            r#"{"error":{"message":"You passed 9000 input tokens","type":"BadRequestError","param":"input_tokens","code":400}}"#,
        ),
        (
            Dialect::Sglang,
            r#"{"error":{"message":"The input (9000 tokens) is longer than the model's context length (8192 tokens)."}}"#,
        ),
        (
            Dialect::Sglang,
            r#"{"object":"error","message":"bad","type":"Bad Request","param":null,"code":400}"#,
        ),
    ] {
        let c = d.chunk(body, &mut StreamState::default()).unwrap();
        assert!(c.last, "{d:?}");
        assert!(matches!(c.end, Some(EndReason::Abort(m)) if !m.is_empty()));
    }
    // SGLang's abort finish.
    let c = Dialect::Sglang
        .chunk(
            r#"{"text":"","output_ids":[],"meta_info":{"finish_reason":{"type":"abort","message":"invalid grammar","status_code":400}}}"#,
            &mut StreamState::default(),
        )
        .unwrap();
    assert_eq!(
        c.end,
        Some(EndReason::Abort(
            "SGLang finished with invalid grammar".into()
        ))
    );
    assert!(Dialect::Vllm
        .chunk("not json", &mut StreamState::default())
        .is_err());
    assert!(Dialect::LlamaServer
        .chunk(r#"{"tokens":[-1]}"#, &mut StreamState::default())
        .is_err());
}

#[test]
fn what_engines_say_of_themselves() {
    let props = Dialect::LlamaServer.props(&json!({
        "default_generation_settings": {"n_ctx": 4096}, "total_slots": 2
    }));
    assert_eq!(props.context_tokens, Some(4096));
    assert_eq!(props.slots, Some(2));
    let models =
        json!({"object": "list", "data": [{"id": "m", "object": "model", "max_model_len": 32768}]});
    for d in [Dialect::Vllm, Dialect::Sglang] {
        assert_eq!(d.props_path(), "/v1/models");
        assert_eq!(d.props(&models).context_tokens, Some(32768));
    }
    assert_eq!(Dialect::parse("llama-server"), Some(Dialect::LlamaServer));
    assert_eq!(Dialect::parse("tgi"), None);
}
