//! Probe: what does a step of one token plus `k` draft tokens cost, with logits at every
//! position (what checking a draft needs) and at the last one only? With `--check`: do
//! batches of 2, 3, 5 and 9 tokens get, bit for bit, the logits one-token steps get, `depth`
//! tokens into a context (the largest difference printed)?
//!
//! `cargo run --release -p localgem-engine --example verify_probe -- MODEL.gguf [--fa=0|1]
//!  [--seqs=8] [--ctx=32768] [--depth=300] [--reps=20] [--only=K] [--check]`

use std::num::NonZeroU32;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;

mod common;
use common::arg;

fn main() {
    let path = std::env::args().nth(1).expect("MODEL.gguf");
    let fa: i32 = arg("fa", 1);
    let seqs: u32 = arg("seqs", 8);
    let ctx_size: u32 = arg("ctx", 32768);
    let depth: usize = arg("depth", 300);
    let reps: usize = arg("reps", 20);
    let backend = LlamaBackend::init().unwrap();
    let model = LlamaModel::load_from_file(&backend, &path, &LlamaModelParams::default()).unwrap();
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(ctx_size))
        .with_n_batch(4096)
        .with_n_ubatch(4096)
        .with_n_seq_max(seqs)
        .with_flash_attention_policy(fa)
        .with_n_threads(2)
        .with_n_threads_batch(2);
    let params = match std::env::args().find_map(|a| a.strip_prefix("--kv=").map(str::to_owned)) {
        Some(t) if t == "bf16" => params
            .with_type_k(llama_cpp_2::context::params::KvCacheType::BF16)
            .with_type_v(llama_cpp_2::context::params::KvCacheType::BF16),
        Some(t) if t == "q8_0" => params
            .with_type_k(llama_cpp_2::context::params::KvCacheType::Q8_0)
            .with_type_v(llama_cpp_2::context::params::KvCacheType::Q8_0),
        _ => params,
    };
    let mut ctx = model.new_context(&backend, params).unwrap();
    let text = "The quick brown fox jumps over the lazy dog while seven wizards hum. ".repeat(200);
    let toks = model.vocab().tokenize(text.as_bytes(), false, false);
    let mut batch = LlamaBatch::new(4096, 1);
    batch.clear();
    for (i, t) in toks[..depth].iter().enumerate() {
        batch.add(*t, i as i32, &[0], false).unwrap();
    }
    let t0 = Instant::now();
    ctx.decode(&mut batch).unwrap();
    println!(
        "prefill of {depth}: {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    if std::env::args().any(|a| a == "--check") {
        let mut single = Vec::new();
        for i in 0..9 {
            batch.clear();
            batch
                .add(toks[depth + i], (depth + i) as i32, &[0], true)
                .unwrap();
            ctx.decode(&mut batch).unwrap();
            single.push(ctx.get_logits_ith(0).to_vec());
        }
        for n in [2usize, 3, 5, 9] {
            ctx.clear_kv_cache_seq(Some(0), Some(depth as u32), None)
                .unwrap();
            batch.clear();
            for i in 0..n {
                batch
                    .add(toks[depth + i], (depth + i) as i32, &[0], true)
                    .unwrap();
            }
            ctx.decode(&mut batch).unwrap();
            let mut worst = 0f32;
            for (i, want) in single.iter().take(n).enumerate() {
                let l = ctx.get_logits_ith(i as i32);
                for (a, b) in l.iter().zip(want) {
                    worst = worst.max((a - b).abs());
                }
            }
            println!("depth {depth} batch {n}: max logit difference {worst}");
        }
        return;
    }
    let only: i64 = arg("only", -1);
    let ks: Vec<usize> = if only >= 0 {
        vec![only as usize]
    } else {
        (0..=8).collect()
    };
    for k in ks {
        let mut line = format!("1+{k}:");
        for all in [true, false] {
            let mut times = Vec::new();
            for _ in 0..reps {
                batch.clear();
                for i in 0..=k {
                    let at = depth + i;
                    batch.add(toks[at], at as i32, &[0], all || i == k).unwrap();
                }
                let t0 = Instant::now();
                ctx.decode(&mut batch).unwrap();
                times.push(t0.elapsed().as_secs_f64() * 1e3);
                ctx.clear_kv_cache_seq(Some(0), Some(depth as u32), None)
                    .unwrap();
            }
            times.sort_by(f64::total_cmp);
            let label = if all { "all" } else { "last" };
            line += &format!(" {label} {:.1} ms", times[reps / 2]);
        }
        println!("{line}");
    }
}
