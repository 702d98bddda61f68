//! Prometheus-style metrics of one engine thread, through the `metrics` facade (the binary
//! installs the recorder and serves `/metrics`). Handles are registered once per model.

use metrics::{counter, gauge, Counter, Gauge};

/// The metric handles of one model's engine thread.
pub(crate) struct EngineMetrics {
    pub queue_depth: Gauge,
    pub running: Gauge,
    pub resident: Gauge,
    pub prefill_tokens: Counter,
    pub decode_tokens: Counter,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub evictions: Counter,
    pub tokens_reused: Counter,
}

impl EngineMetrics {
    pub fn new(model: &str) -> Self {
        let m = model.to_owned();
        EngineMetrics {
            queue_depth: gauge!("localgem_queue_depth", "model" => m.clone()),
            running: gauge!("localgem_running_sequences", "model" => m.clone()),
            resident: gauge!("localgem_kv_resident_sequences", "model" => m.clone()),
            prefill_tokens: counter!("localgem_prefill_tokens_total", "model" => m.clone()),
            decode_tokens: counter!("localgem_decode_tokens_total", "model" => m.clone()),
            cache_hits: counter!("localgem_kv_cache_hits_total", "model" => m.clone()),
            cache_misses: counter!("localgem_kv_cache_misses_total", "model" => m.clone()),
            evictions: counter!("localgem_kv_cache_evictions_total", "model" => m.clone()),
            tokens_reused: counter!("localgem_kv_tokens_reused_total", "model" => m),
        }
    }
}
