//! Whether a conversation's state on disk is worth restoring instead of prefilling the
//! prompt it covers: plain arithmetic over running cost estimates, with unit tests that need
//! no model.

/// Running estimates of what prefilling a token and restoring a byte of state cost on this
/// machine, learned from the engine's own steps and restores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RestoreCosts {
    /// Seconds per prompt token of a large prefill step.
    pub prefill_secs_per_token: f64,
    /// Seconds per byte of a state read from disk and put into a slot.
    pub restore_secs_per_byte: f64,
}

impl Default for RestoreCosts {
    fn default() -> Self {
        // Until measured: 2,000 prompt tokens and 200 MB of state a second.
        RestoreCosts {
            prefill_secs_per_token: 1.0 / 2000.0,
            restore_secs_per_byte: 1.0 / 200e6,
        }
    }
}

impl RestoreCosts {
    /// Weight of the newest measurement.
    const ALPHA: f64 = 0.2;
    /// Prefill steps smaller than this say little about the per-token rate.
    pub const MIN_PREFILL: usize = 64;

    /// A state on disk holding `usable` tokens of the prompt (`bytes` long) beats the
    /// `resident` tokens a slot in memory already holds by at least `min_reuse` tokens, and
    /// restoring it costs less than prefilling the difference.
    pub fn restore_pays(
        &self,
        resident: usize,
        usable: usize,
        bytes: u64,
        min_reuse: usize,
    ) -> bool {
        if usable < resident + min_reuse {
            return false;
        }
        let restore = bytes as f64 * self.restore_secs_per_byte;
        let prefill = (usable - resident) as f64 * self.prefill_secs_per_token;
        restore < prefill
    }

    /// A step put `tokens` tokens through the model in `secs`.
    pub fn observe_prefill(&mut self, tokens: usize, secs: f64) {
        if tokens >= Self::MIN_PREFILL && secs.is_finite() && secs > 0.0 {
            let per = secs / tokens as f64;
            self.prefill_secs_per_token += Self::ALPHA * (per - self.prefill_secs_per_token);
        }
    }

    /// A state of `bytes` was read and restored in `secs`.
    pub fn observe_restore(&mut self, bytes: u64, secs: f64) {
        if bytes > 0 && secs.is_finite() && secs >= 0.0 {
            let per = secs / bytes as f64;
            self.restore_secs_per_byte += Self::ALPHA * (per - self.restore_secs_per_byte);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_only_for_a_longer_prefix_that_is_cheaper_to_read() {
        let c = RestoreCosts::default();
        // 1,000 tokens more on disk in a 20 MB state: 0.1 s to read, 0.5 s to prefill.
        assert!(c.restore_pays(0, 1000, 20_000_000, 16));
        // What memory already holds is not prefilled anyway.
        assert!(!c.restore_pays(990, 1000, 20_000_000, 16));
        assert!(!c.restore_pays(1000, 1000, 1, 16));
        // Too big a state for what it saves: 1 s to read, 0.5 s to prefill.
        assert!(!c.restore_pays(0, 1000, 200_000_000, 16));
    }

    #[test]
    fn the_estimates_follow_the_machine() {
        let mut c = RestoreCosts::default();
        // A slow disk: 20 MB/s.
        for _ in 0..40 {
            c.observe_restore(20_000_000, 1.0);
        }
        assert!(!c.restore_pays(0, 1000, 20_000_000, 16));
        // A slow model: 100 tokens a second; now prefilling 1,000 tokens costs 10 s.
        for _ in 0..40 {
            c.observe_prefill(500, 5.0);
        }
        assert!(c.restore_pays(0, 1000, 20_000_000, 16));
        // Small steps and nonsense are ignored.
        let before = c;
        c.observe_prefill(8, 100.0);
        c.observe_prefill(500, f64::NAN);
        c.observe_restore(0, 1.0);
        assert_eq!(c, before);
    }
}
