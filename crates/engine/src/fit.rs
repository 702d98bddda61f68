//! What a model gets when it loads: how many layers go to a GPU and how much context, from
//! the settings, the GGUF's own numbers and the machine's memory. Plain decisions with unit
//! tests; the worker reads the numbers off llama.cpp and applies the plan.

/// Total context when `--ctx-size` is not given (split between the KV slots).
pub const DEFAULT_CTX: u32 = 32_768;
/// Fewest cells one slot gets.
pub const MIN_PER_SLOT: u32 = 256;
/// Layers asked for when everything should be offloaded (llama.cpp caps it at the model's).
const ALL_LAYERS: u32 = 999;

/// Layers to offload: the setting when given, else every layer when the build has a GPU
/// backend that found a device, else none.
pub fn gpu_layers(setting: Option<u32>, gpu_present: bool) -> u32 {
    match setting {
        Some(n) => n,
        None if gpu_present => ALL_LAYERS,
        None => 0,
    }
}

/// Layers that actually run on the GPU (llama.cpp offloads the output layer as one more).
pub fn offloaded(requested: u32, n_layer: u32, gpu_present: bool) -> u32 {
    if gpu_present {
        requested.min(n_layer + 1)
    } else {
        0
    }
}

/// Bytes of K and V one context cell takes (f16 cache): for every layer, the K and V rows
/// of all KV heads.
pub fn bytes_per_cell(n_layer: u32, n_head_kv: u32, key_len: u32, value_len: u32) -> u64 {
    u64::from(n_layer) * u64::from(n_head_kv) * (u64::from(key_len) + u64::from(value_len)) * 2
}

/// The context a model gets, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextPlan {
    /// KV cells in all, split evenly between the slots.
    pub total: u32,
    /// Tokens one conversation can hold (prompt and answer).
    pub per_slot: u32,
    /// What bounded it, for the start-up line.
    pub why: &'static str,
}

/// Choose the context. `requested`: `--ctx-size`, taken as given (it is the user's call,
/// though a warning says when a slot is longer than the model was trained for). Otherwise
/// [`DEFAULT_CTX`], cut so that no slot is longer than the model's training context
/// (`n_ctx_train`, 0 if unknown) and so that the cache fits in `budget` bytes.
pub fn context(
    requested: Option<u32>,
    kv_slots: u32,
    n_ctx_train: u32,
    bytes_per_cell: u64,
    budget: u64,
) -> ContextPlan {
    let slots = kv_slots.max(1);
    let floor = MIN_PER_SLOT * slots;
    let round = |cells: u64| -> u32 {
        let per = (cells / u64::from(slots)) / 256 * 256;
        (per.min(u64::from(u32::MAX / slots)) as u32 * slots).max(floor)
    };
    let (total, why) = match requested {
        Some(n) => (n.max(floor), "as set with --ctx-size"),
        None => {
            let mut total = DEFAULT_CTX.max(floor);
            let mut why = "the default";
            if n_ctx_train > 0 && u64::from(total) > u64::from(n_ctx_train) * u64::from(slots) {
                total = round(u64::from(n_ctx_train) * u64::from(slots));
                why = "the model's training context";
            }
            if bytes_per_cell > 0 && u64::from(total) * bytes_per_cell > budget {
                total = round(budget / bytes_per_cell);
                why = "memory";
            }
            (total, why)
        }
    };
    ContextPlan {
        total,
        per_slot: total / slots,
        why,
    }
}

/// Memory the KV cache may take: on a GPU, most of what the device has free after the
/// weights; on the CPU, half of what the system has available.
pub fn kv_budget(gpu_free: Option<u64>, mem_available: Option<u64>) -> u64 {
    match (gpu_free, mem_available) {
        (Some(free), _) => free / 10 * 8,
        (None, Some(avail)) => avail / 2,
        (None, None) => u64::MAX,
    }
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
pub fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo(&text)
}

fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn every_layer_goes_to_a_gpu_unless_told_otherwise() {
        assert_eq!(gpu_layers(None, false), 0);
        assert_eq!(gpu_layers(None, true), ALL_LAYERS);
        assert_eq!(gpu_layers(Some(10), true), 10);
        assert_eq!(gpu_layers(Some(0), true), 0);
        assert_eq!(offloaded(ALL_LAYERS, 30, true), 31);
        assert_eq!(offloaded(12, 30, true), 12);
        assert_eq!(offloaded(ALL_LAYERS, 30, false), 0);
    }

    #[test]
    fn kv_cell_size_from_the_gguf_numbers() {
        // SmolLM2-135M: 30 layers, 3 KV heads of 64.
        assert_eq!(bytes_per_cell(30, 3, 64, 64), 23_040);
        // Gemma 3 4B: 34 layers, 4 KV heads of 256.
        assert_eq!(bytes_per_cell(34, 4, 256, 256), 139_264);
    }

    #[test]
    fn the_default_fits_small_models_unchanged() {
        let p = context(None, 8, 8192, 23_040, 8 * GIB);
        assert_eq!(
            p,
            ContextPlan {
                total: 32_768,
                per_slot: 4096,
                why: "the default"
            }
        );
    }

    #[test]
    fn no_slot_is_longer_than_the_training_context() {
        let p = context(None, 8, 2048, 23_040, 8 * GIB);
        assert_eq!((p.total, p.per_slot), (16_384, 2048));
        assert_eq!(p.why, "the model's training context");
    }

    #[test]
    fn memory_caps_the_default() {
        // 139 KiB a cell, 1 GiB budget: 7710 cells, 963 a slot, rounded down to 768.
        let p = context(None, 8, 131_072, 139_264, GIB);
        assert_eq!((p.total, p.per_slot, p.why), (6144, 768, "memory"));
        // Never below the floor, even when nothing fits.
        let p = context(None, 8, 131_072, 139_264, 1024);
        assert_eq!((p.total, p.per_slot), (2048, 256));
    }

    #[test]
    fn a_requested_size_is_taken_as_given() {
        let p = context(Some(200_000), 4, 2048, 139_264, GIB);
        assert_eq!((p.total, p.per_slot), (200_000, 50_000));
        assert_eq!(p.why, "as set with --ctx-size");
        assert_eq!(context(Some(10), 4, 0, 0, 0).total, 1024);
    }

    #[test]
    fn budgets_and_meminfo() {
        assert_eq!(kv_budget(Some(10 * GIB), Some(GIB)), 8 * GIB);
        assert_eq!(kv_budget(None, Some(GIB)), GIB / 2);
        assert_eq!(kv_budget(None, None), u64::MAX);
        let text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(parse_meminfo(text), Some(20_000_000 * 1024));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
    }
}
