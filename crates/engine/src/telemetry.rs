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
    pub spills: Counter,
    pub spill_bytes: Counter,
    pub spill_skipped: Counter,
    pub disk_evictions: Counter,
    pub restores: Counter,
    pub restore_failures: Counter,
    pub tokens_restored: Counter,
    pub relocations: Counter,
    pub images_encoded: Counter,
    pub audio_encoded: Counter,
    pub disk_states: Gauge,
    pub disk_bytes: Gauge,
    pub draft_tokens: Counter,
    pub draft_accepted: Counter,
    pub draft_acceptance: Gauge,
    /// Draft tokens proposed and accepted so far (for the acceptance gauge).
    drafts: (u64, u64),
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
            tokens_reused: counter!("localgem_kv_tokens_reused_total", "model" => m.clone()),
            spills: counter!("localgem_kv_spills_total", "model" => m.clone()),
            spill_bytes: counter!("localgem_kv_spill_bytes_total", "model" => m.clone()),
            spill_skipped: counter!("localgem_kv_spills_skipped_total", "model" => m.clone()),
            disk_evictions: counter!("localgem_kv_disk_evictions_total", "model" => m.clone()),
            restores: counter!("localgem_kv_restores_total", "model" => m.clone()),
            restore_failures: counter!("localgem_kv_restore_failures_total", "model" => m.clone()),
            tokens_restored: counter!("localgem_kv_tokens_restored_total", "model" => m.clone()),
            relocations: counter!("localgem_kv_relocations_total", "model" => m.clone()),
            images_encoded: counter!("localgem_images_encoded_total", "model" => m.clone()),
            audio_encoded: counter!("localgem_audio_clips_encoded_total", "model" => m.clone()),
            disk_states: gauge!("localgem_kv_disk_states", "model" => m.clone()),
            disk_bytes: gauge!("localgem_kv_disk_bytes", "model" => m.clone()),
            draft_tokens: counter!("localgem_spec_draft_tokens_total", "model" => m.clone()),
            draft_accepted: counter!("localgem_spec_accepted_tokens_total", "model" => m.clone()),
            draft_acceptance: gauge!("localgem_spec_acceptance_rate", "model" => m),
            drafts: (0, 0),
        }
    }

    /// A step verified `proposed` draft tokens and kept `accepted` of them.
    pub fn record_drafts(&mut self, proposed: u64, accepted: u64) {
        self.draft_tokens.increment(proposed);
        self.draft_accepted.increment(accepted);
        self.drafts.0 += proposed;
        self.drafts.1 += accepted;
        self.draft_acceptance
            .set(self.drafts.1 as f64 / self.drafts.0.max(1) as f64);
    }
}
