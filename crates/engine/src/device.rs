//! The machine side of loading a model: which GPU llama.cpp found, what one KV cell of the
//! model costs, and the start-up line that says what was chosen (decisions are in [`fit`]).

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::{list_llama_ggml_backend_devices, LlamaBackendDevice, LlamaBackendDeviceType};

use crate::fit::{self, ContextPlan};
use crate::template::ChatTemplate;

/// The first GPU a backend of this build found (CUDA, Vulkan, Metal, ROCm), if any.
pub(crate) fn gpu_device() -> Option<LlamaBackendDevice> {
    list_llama_ggml_backend_devices().into_iter().find(|d| {
        matches!(
            d.device_type,
            LlamaBackendDeviceType::Gpu | LlamaBackendDeviceType::IntegratedGpu
        )
    })
}

/// Bytes of K and V per context cell, from the GGUF's attention shape.
pub(crate) fn cell_bytes(model: &LlamaModel) -> u64 {
    let arch = model
        .meta_val_str("general.architecture")
        .unwrap_or_default();
    let head_dim = |key: &str| {
        model
            .meta_val_str(&format!("{arch}.attention.{key}"))
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or_else(|| u32::try_from(model.n_embd()).unwrap_or(0) / model.n_head().max(1))
    };
    fit::bytes_per_cell(
        model.n_layer(),
        model.n_head_kv(),
        head_dim("key_length"),
        head_dim("value_length"),
    )
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// Say on start what the model is and what it was given.
#[allow(clippy::too_many_arguments)]
pub(crate) fn describe(
    id: &str,
    model: &LlamaModel,
    template: &ChatTemplate,
    plan: &ContextPlan,
    per_seq: u32,
    kv_slots: u32,
    gpu: Option<&LlamaBackendDevice>,
    gpu_layers: u32,
    vision: bool,
    audio_rate: Option<u32>,
) {
    let vocab = model.vocab();
    let piece = |t| String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned();
    let reasons = match (template.think_tags(), template.can_disable_thinking()) {
        (Some(t), true) => format!(
            "yes ({}…{}, switchable with enable_thinking)",
            t.open, t.close
        ),
        (Some(t), false) => format!("yes ({}…{})", t.open, t.close),
        (None, _) => "no".to_owned(),
    };
    let offloaded = fit::offloaded(gpu_layers, model.n_layer(), gpu.is_some());
    let device = match gpu {
        Some(d) if offloaded > 0 => format!(
            "{} ({}, {}: {}) with {offloaded}/{} layers offloaded",
            d.name,
            d.description,
            d.backend,
            gib(d.memory_total as u64),
            model.n_layer() + 1
        ),
        Some(d) => format!("CPU ({} found, --gpu-layers 0)", d.name),
        None => "CPU (this build has no GPU backend, or it found no device)".to_owned(),
    };
    let kv = u64::from(plan.total) * cell_bytes(model);
    tracing::info!(
        model = %id,
        "{id}: {} parameters, {} on disk; chat template from {}; reasons: {reasons}; \
         special tokens bos {:?} eos {:?}; images: {}; audio: {}",
        fmt_params(model.n_params()),
        gib(model.size()),
        template.source,
        piece(vocab.bos()),
        piece(vocab.eos()),
        if vision { "yes" } else { "no" },
        audio_rate.map_or_else(|| "no".to_owned(), |r| format!("yes ({r} Hz)")),
    );
    tracing::info!(
        model = %id,
        "{id}: context {per_seq} tokens a conversation × {kv_slots} slots, bounded by {} \
         (trained for {}; KV cache {}); device {device}",
        plan.why,
        model.n_ctx_train(),
        gib(kv),
    );
    if model.n_ctx_train() > 0 && per_seq > model.n_ctx_train() {
        tracing::warn!(model = %id, "a conversation may run past the {} tokens {id} was trained \
            for; answers may degrade there", model.n_ctx_train());
    }
}

fn fmt_params(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.1}B", n as f64 / 1e9)
    } else {
        format!("{}M", n / 1_000_000)
    }
}
