//! Probe: how fast are a prompt chunk and one-token decodes deep in a conversation, per
//! context shape? The numbers to hold against `llama-bench -p P -n N -d D -fa 0,1`.
//!
//! `cargo run --release -p localgem-engine --example depth_probe -- MODEL.gguf [--fa=0|1]
//!  [--seqs=8] [--unified] [--ctx=32768] [--depth=1784] [--prompt=160] [--gen=32]`
//!
//! Fills sequence 0 with `depth` tokens, then three times: a `prompt`-token chunk, `gen`
//! one-token decodes, and the removal of both. Prints the median of the three.

use std::num::NonZeroU32;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

mod common;
use common::arg;

fn main() {
    let path = std::env::args().nth(1).expect("MODEL.gguf");
    let fa: i32 = arg("fa", 1);
    let seqs: u32 = arg("seqs", 8);
    let ctx_size: u32 = arg("ctx", 32768);
    let depth: usize = arg("depth", 1784);
    let prompt: usize = arg("prompt", 160);
    let gen: usize = arg("gen", 32);
    let unified = std::env::args().any(|a| a == "--unified");
    let backend = LlamaBackend::init().unwrap();
    let model = LlamaModel::load_from_file(&backend, &path, &LlamaModelParams::default()).unwrap();
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(ctx_size))
        .with_n_batch(512)
        .with_n_ubatch(512)
        .with_n_seq_max(seqs)
        .with_kv_unified(unified)
        .with_flash_attention_policy(fa)
        .with_n_threads(2)
        .with_n_threads_batch(2);
    let mut ctx = model.new_context(&backend, params).unwrap();
    let text = "The quick brown fox jumps over the lazy dog while seven wizards hum. ".repeat(1000);
    let toks = model.vocab().tokenize(text.as_bytes(), false, false);
    assert!(toks.len() >= depth + prompt + gen, "text too short");
    let mut batch = LlamaBatch::new(512, 1);
    let mut feed =
        |ctx: &mut llama_cpp_2::context::LlamaContext<'_>, t: &[LlamaToken], pos: usize| {
            batch.clear();
            for (i, tok) in t.iter().enumerate() {
                batch
                    .add(*tok, (pos + i) as i32, &[0], i + 1 == t.len())
                    .unwrap();
            }
            ctx.decode(&mut batch).unwrap();
        };
    for (k, c) in toks[..depth].chunks(512).enumerate() {
        feed(&mut ctx, c, k * 512);
    }
    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let t0 = Instant::now();
        feed(&mut ctx, &toks[depth..depth + prompt], depth);
        pp.push(t0.elapsed().as_secs_f64());
        let t1 = Instant::now();
        for i in 0..gen {
            let at = depth + prompt + i;
            feed(&mut ctx, &toks[at..at + 1], at);
        }
        tg.push(t1.elapsed().as_secs_f64());
        ctx.clear_kv_cache_seq(Some(0), Some(depth as u32), None)
            .unwrap();
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (pp, tg) = (median(&mut pp), median(&mut tg));
    println!(
        "fa={fa} seqs={seqs} unified={unified} ctx={ctx_size}: pp{prompt}@d{depth} {:.1} tok/s ({:.0} ms), tg{gen}@d{} {:.1} tok/s",
        prompt as f64 / pp,
        pp * 1e3,
        depth + prompt,
        gen as f64 / tg
    );
}
