//! Probe: do cached-prefix and one-shot prefills give bit-identical logits?
//!
//! `cargo run --release -p localgem-engine --example kv_probe -- MODEL.gguf`
//!
//! Compares the last-token logits of (A) a one-shot prefill, (B) the same tokens as a prefix
//! decode followed by a suffix decode in one sequence, (C) a prefix, a few generated tokens fed
//! one at a time, their removal, then the suffix, and (D) B in a sequence slot that another
//! sequence was decoding beside.

use std::num::NonZeroU32;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

fn decode(ctx: &mut LlamaContext<'_>, seq: i32, toks: &[LlamaToken], pos: i32) -> Vec<f32> {
    let mut batch = LlamaBatch::new(512, 1);
    for (i, t) in toks.iter().enumerate() {
        batch
            .add(*t, pos + i as i32, &[seq], i + 1 == toks.len())
            .unwrap();
    }
    ctx.decode(&mut batch).unwrap();
    ctx.get_logits_ith(batch.n_tokens() - 1).to_vec()
}

fn diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn main() {
    let path = std::env::args().nth(1).expect("MODEL.gguf");
    let unified = std::env::args().any(|a| a == "--unified");
    let fa =
        std::env::args().find_map(|a| a.strip_prefix("--fa=").map(|v| v.parse::<i32>().unwrap()));
    let backend = LlamaBackend::init().unwrap();
    let model = LlamaModel::load_from_file(&backend, &path, &LlamaModelParams::default()).unwrap();
    let p1 = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nI have 2 dogs in my house. Tell me something about dogs.<|im_end|>\n<|im_start|>assistant\n";
    let p2 = format!("{p1}Dogs are loyal and friendly animals that love to play.<|im_end|>\n<|im_start|>user\nHow many paws are in my house?<|im_end|>\n<|im_start|>assistant\n");
    let vocab = model.vocab();
    let t1 = vocab.tokenize(p1.as_bytes(), false, true);
    let t2 = vocab.tokenize(p2.as_bytes(), false, true);
    assert_eq!(&t2[..t1.len()], &t1[..]);
    let n1 = t1.len();
    let params = || {
        let p = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(8192))
            .with_n_batch(512)
            .with_n_ubatch(512)
            .with_n_seq_max(4)
            .with_kv_unified(unified)
            .with_n_threads(2)
            .with_n_threads_batch(2);
        match fa {
            Some(v) => p.with_flash_attention_policy(v),
            None => p,
        }
    };
    let mut ctx = model.new_context(&backend, params()).unwrap();
    let a = decode(&mut ctx, 0, &t2, 0);
    let _ = decode(&mut ctx, 1, &t2[..n1], 0);
    let b = decode(&mut ctx, 1, &t2[n1..], n1 as i32);
    let _ = decode(&mut ctx, 2, &t2[..n1], 0);
    for (pos, t) in (n1 as i32..).zip(&t2[n1..n1 + 5]) {
        let _ = decode(&mut ctx, 2, &[*t], pos);
    }
    ctx.clear_kv_cache_seq(Some(2), Some(n1 as u32), None)
        .unwrap();
    let c = decode(&mut ctx, 2, &t2[n1..], n1 as i32);
    // fresh context, one-shot again: run-to-run determinism
    let mut ctx2 = model.new_context(&backend, params()).unwrap();
    let a2 = decode(&mut ctx2, 0, &t2, 0);
    // prefix+suffix split at other points
    let mut ctx3 = model.new_context(&backend, params()).unwrap();
    let _ = decode(&mut ctx3, 0, &t2[..32], 0);
    let e = decode(&mut ctx3, 0, &t2[32..], 32);
    println!("unified={unified} n1={n1} n2={}", t2.len());
    println!(
        "A vs A' (fresh ctx, one-shot)      max|dlogit| = {}",
        diff(&a, &a2)
    );
    println!(
        "A vs B (prefix decode + suffix)    max|dlogit| = {}",
        diff(&a, &b)
    );
    println!(
        "A vs C (prefix, gen, rm, suffix)   max|dlogit| = {}",
        diff(&a, &c)
    );
    println!(
        "A vs E (split at 32)               max|dlogit| = {}",
        diff(&a, &e)
    );
    println!(
        "B vs C                             max|dlogit| = {}",
        diff(&b, &c)
    );
    println!(
        "B vs E                             max|dlogit| = {}",
        diff(&b, &e)
    );
    // last token alone after the rest: split at n2-1
    let mut ctx4 = model.new_context(&backend, params()).unwrap();
    let n2 = t2.len();
    let _ = decode(&mut ctx4, 0, &t2[..n2 - 1], 0);
    let f = decode(&mut ctx4, 0, &t2[n2 - 1..], (n2 - 1) as i32);
    println!(
        "A vs F (split at n2-1)             max|dlogit| = {}",
        diff(&a, &f)
    );
    // G: the tokens after the prefix fed one per decode (as generation does), then the rest
    let mut ctx5 = model.new_context(&backend, params()).unwrap();
    let _ = decode(&mut ctx5, 0, &t2[..n1], 0);
    for (pos, t) in (n1 as i32..).zip(&t2[n1..n1 + 10]) {
        let _ = decode(&mut ctx5, 0, &[*t], pos);
    }
    let g = decode(&mut ctx5, 0, &t2[n1 + 10..], (n1 + 10) as i32);
    println!(
        "A vs G (10 single-token decodes)   max|dlogit| = {}",
        diff(&a, &g)
    );
    println!(
        "B vs F                             max|dlogit| = {}",
        diff(&b, &f)
    );
}
