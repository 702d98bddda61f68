//! KV states on disk: the writer thread that spills finished states, and restoring a state
//! into a slot when that is cheaper than a prefill.

use std::io::Read;
use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use llama_cpp_2::context::session::LlamaStateSeqFlags;
use llama_cpp_2::context::LlamaContext;

use super::Worker;
use crate::restore::RestoreCosts;
use crate::spill::{state_name, Candidate, SpillDir};
use crate::telemetry::EngineMetrics;
use crate::writeq::{Queued, WriteQueue};

/// A finished state for the writer thread.
pub(super) struct SpillJob {
    scope: String,
    tokens: Vec<i32>,
    payload: Vec<u8>,
    /// The scope's forget epoch when the state was taken.
    epoch: u64,
}

impl Queued for SpillJob {
    fn bytes(&self) -> usize {
        self.payload.len() + self.tokens.len() * std::mem::size_of::<i32>()
    }
    fn covers(&self, older: &Self) -> bool {
        self.scope == older.scope && self.tokens.starts_with(&older.tokens)
    }
}

/// States waiting for the writer may hold this much memory (at least one is always kept):
/// the latest state of a dozen long conversations of a small model, while the writer waits
/// for an idle core.
const WRITE_QUEUE_BYTES: usize = 512 << 20;

/// How long a state may wait for an idle core before the writer competes for one (at the
/// engine's own priority): under sustained load it would otherwise stay in memory,
/// invisible to other replicas and lost to a `kill -9`.
const WRITE_MAX_WAIT: Duration = Duration::from_secs(10);

/// The writer thread's id and whether it currently runs at normal priority.
#[derive(Default)]
struct WriterPriority {
    tid: std::sync::atomic::AtomicI32,
    urgent: std::sync::atomic::AtomicBool,
}

/// The engine's end of the writer's queue; dropping it lets the writer finish what is
/// queued and stop.
pub(super) struct SpillTx {
    queue: Arc<WriteQueue<SpillJob>>,
    priority: Arc<WriterPriority>,
}

impl SpillTx {
    /// Queue a state; returns how many states were dropped to make room. (The engine loop
    /// calls [`Self::nudge`] after the step that queued it.)
    fn send(&self, job: SpillJob) -> usize {
        self.queue.push(job)
    }

    /// When the writer has fallen behind ([`WriteQueue::behind`]), let it compete for a
    /// core until it has written everything queued. Cheap enough to call every step.
    pub(super) fn nudge(&self) {
        use std::sync::atomic::Ordering;
        if self.priority.urgent.load(Ordering::Relaxed)
            || !self.queue.behind(Instant::now(), WRITE_MAX_WAIT)
        {
            return;
        }
        let tid = self.priority.tid.load(Ordering::Relaxed);
        if tid != 0 {
            self.priority.urgent.store(true, Ordering::Relaxed);
            let (states, bytes) = self.queue.pending();
            tracing::debug!(
                states,
                bytes,
                "the KV writer is behind; it now competes for a core"
            );
            set_priority(tid, false);
        }
    }

    /// States and bytes waiting for the writer.
    pub(super) fn pending(&self) -> (usize, usize) {
        self.queue.pending()
    }
}

impl Drop for SpillTx {
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// How often a miss may rescan the spill directory for states other replicas wrote.
const RESCAN_EVERY: Duration = Duration::from_secs(1);

/// The directory name for states of this model file and KV layout: a state restores only
/// into a context whose per-sequence layout matches (llama.cpp checks the rest itself and
/// refuses a mismatched state, which is then deleted and prefilled instead).
pub(super) fn fingerprint(
    path: &Path,
    mmproj: Option<&Path>,
    kv_slots: u32,
    flash_attention: bool,
    decoded_kv: bool,
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    // The projector decides what an image's KV holds: states with images made under
    // another projector must not be found.
    for p in std::iter::once(path).chain(mmproj) {
        let len = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        h.update(len.to_le_bytes());
        let mut head = Vec::with_capacity(1 << 20);
        if let Ok(f) = std::fs::File::open(p) {
            let _ = f.take(1 << 20).read_to_end(&mut head);
        }
        h.update(&head);
    }
    h.update(kv_slots.to_le_bytes());
    // States computed differently (and so not bit-identical) live apart.
    h.update([
        u8::from(flash_attention),
        1, /* swa_full */
        u8::from(decoded_kv),
    ]);
    hex::encode(&h.finalize()[..8])
}

/// Set the disk gauges from the index (after anything that changes what is on disk).
pub(super) fn report_disk(dir: &SpillDir, states: &metrics::Gauge, bytes: &metrics::Gauge) {
    let (n, total) = dir.usage();
    states.set(n as f64);
    bytes.set(total as f64);
}

/// Let thread `tid` (0: the calling one) run only on a core nothing else wants (Linux
/// `SCHED_IDLE`) when `idle`, else at nice 0 like the engine. The writer runs idle, so that
/// writing states to disk does not take a core from the engine's compute threads: those
/// wait for each other at every layer, so a writer holding one of two cores for a moment
/// stalls both (a 160-token prefill at a depth of 1,784 took 956 ms beside a state being
/// written at nice 10, 835 ms with nothing written). States wait for it in a queue bounded
/// by bytes ([`WRITE_QUEUE_BYTES`]); when it falls behind ([`SpillTx::nudge`]) it competes
/// for a core like any other thread until the queue is empty. Where a policy is refused
/// the thread keeps the one it has.
fn set_priority(tid: i32, idle: bool) {
    #[cfg(target_os = "linux")]
    // SAFETY: both calls only read their arguments (`param` lives across the call); a tid
    // of `0` names the calling thread.
    #[allow(unsafe_code)]
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        let policy = if idle {
            libc::SCHED_IDLE
        } else {
            libc::SCHED_OTHER
        };
        if libc::sched_setscheduler(tid, policy, &param) != 0 && idle {
            libc::setpriority(libc::PRIO_PROCESS as _, tid as _, 19);
        } else if !idle {
            libc::setpriority(libc::PRIO_PROCESS as _, tid as _, 0);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (tid, idle);
}

/// The calling thread's id (0 where there is no such notion).
fn thread_id() -> i32 {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid takes no arguments and cannot fail.
    #[allow(unsafe_code)]
    unsafe {
        libc::gettid()
    }
    #[cfg(not(target_os = "linux"))]
    0
}

/// Start the thread that writes finished states to disk, off the engine thread.
pub(super) fn start_writer(
    model_id: &str,
    dir: Arc<SpillDir>,
    metrics: &EngineMetrics,
) -> (SpillTx, Option<std::thread::JoinHandle<()>>) {
    let queue = Arc::new(WriteQueue::<SpillJob>::new(WRITE_QUEUE_BYTES));
    let priority = Arc::new(WriterPriority::default());
    let (rx, prio) = (queue.clone(), priority.clone());
    let (spills, spill_bytes, disk_evictions) = (
        metrics.spills.clone(),
        metrics.spill_bytes.clone(),
        metrics.disk_evictions.clone(),
    );
    let (disk_states, disk_bytes) = (metrics.disk_states.clone(), metrics.disk_bytes.clone());
    report_disk(&dir, &disk_states, &disk_bytes);
    let model = model_id.to_owned();
    let spawned = std::thread::Builder::new()
        .name(format!("kv-spill-{model_id}"))
        .spawn(move || {
            use std::sync::atomic::Ordering;
            set_priority(0, true);
            prio.tid.store(thread_id(), Ordering::Relaxed);
            while let Some(job) = rx.pop() {
                match dir.write_at(&job.scope, &job.tokens, &job.payload, job.epoch) {
                    Ok((0, _)) => {} // its scope was forgotten meanwhile
                    Ok((bytes, deleted)) => {
                        spills.increment(1);
                        spill_bytes.increment(bytes);
                        disk_evictions.increment(deleted.len() as u64);
                        report_disk(&dir, &disk_states, &disk_bytes);
                    }
                    Err(e) => tracing::warn!(model = %model, "cannot write a KV state: {e}"),
                }
                // Caught up: back to idle cores only.
                if rx.pending().0 == 0 && prio.urgent.swap(false, Ordering::Relaxed) {
                    set_priority(0, true);
                }
            }
        });
    match spawned {
        Ok(handle) => (SpillTx { queue, priority }, Some(handle)),
        Err(e) => {
            tracing::warn!(model = %model_id, "cannot start the KV writer thread: {e}");
            (SpillTx { queue, priority }, None)
        }
    }
}

/// Where a queued request stands with a state on disk.
#[derive(Debug, PartialEq)]
pub(super) enum Restore {
    /// Nothing on disk to restore (or not worth it).
    Nothing,
    /// The reader thread is looking (the request waits; answers carry this id).
    Reading(u64),
    /// A state read and ready to put into a slot.
    Ready {
        candidate: Candidate,
        payload: Vec<u8>,
        read_secs: f64,
    },
}

/// A question for the reader thread.
pub(super) struct ReadJob {
    id: u64,
    scope: String,
    prompt: Vec<i32>,
    /// Prompt tokens a slot in memory already holds.
    resident: usize,
    min_reuse: usize,
    /// Whether a state may be restored for a shorter prefix than it holds.
    allow_cut: bool,
    costs: RestoreCosts,
}

/// The reader thread's answer: the state found worth restoring, read.
pub(super) struct ReadDone {
    id: u64,
    found: Option<(Candidate, Vec<u8>)>,
    read_secs: f64,
}

/// The reader thread's ends of its channels.
pub(super) struct Reader {
    jobs: std_mpsc::Sender<ReadJob>,
    done: std_mpsc::Receiver<ReadDone>,
}

/// Start the thread that finds and reads states on disk for queued requests, so that
/// neither the directory scan nor the read (and its checksum) runs on the engine thread.
pub(super) fn start_reader(
    model_id: &str,
    dir: Arc<SpillDir>,
    metrics: &EngineMetrics,
) -> Option<Reader> {
    let (jobs, job_rx) = std_mpsc::channel::<ReadJob>();
    let (done_tx, done) = std_mpsc::channel::<ReadDone>();
    let failures = metrics.restore_failures.clone();
    let (disk_states, disk_bytes) = (metrics.disk_states.clone(), metrics.disk_bytes.clone());
    let model = model_id.to_owned();
    let spawned = std::thread::Builder::new()
        .name(format!("kv-read-{model_id}"))
        .spawn(move || {
            let mut last_scan: Option<Instant> = None;
            for job in job_rx {
                let worth = |c: &Candidate| {
                    job.costs
                        .restore_pays(job.resident, c.usable, c.bytes, job.min_reuse)
                };
                let mut found = dir.best(&job.scope, &job.prompt, job.min_reuse, job.allow_cut);
                if !found.as_ref().is_some_and(worth)
                    && last_scan.is_none_or(|t| t.elapsed() >= RESCAN_EVERY)
                {
                    // Another replica (or an earlier run) may have written it since.
                    last_scan = Some(Instant::now());
                    if let Err(e) = dir.scan() {
                        tracing::warn!(model = %model, "cannot scan {}: {e}", dir.path().display());
                    }
                    report_disk(&dir, &disk_states, &disk_bytes);
                    found = dir.best(&job.scope, &job.prompt, job.min_reuse, job.allow_cut);
                }
                let started = Instant::now();
                let found = found.filter(worth).and_then(|c| {
                    match dir.read(&c.name, &job.scope, &c.tokens) {
                        Ok(payload) => Some((c, payload)),
                        Err(e) => {
                            failures.increment(1);
                            tracing::warn!(model = %model, file = %c.name,
                                "a KV state could not be read ({e}); prefilling instead");
                            dir.delete(&c.name);
                            report_disk(&dir, &disk_states, &disk_bytes);
                            None
                        }
                    }
                });
                let reply = ReadDone {
                    id: job.id,
                    found,
                    read_secs: started.elapsed().as_secs_f64(),
                };
                if done_tx.send(reply).is_err() {
                    break;
                }
            }
        });
    match spawned {
        Ok(_) => Some(Reader { jobs, done }),
        Err(e) => {
            tracing::warn!(model = %model_id, "cannot start the KV reader thread: {e}");
            None
        }
    }
}

impl Worker<'_> {
    /// Hand a finished slot's state to the writer thread, unless it is already on disk.
    pub(super) fn spill(&mut self, ctx: &LlamaContext<'_>, slot: i32, scope: &str, tokens: &[i32]) {
        let (Some(dir), Some(tx)) = (&self.spill, &self.spill_tx) else {
            return;
        };
        if tokens.len() < self.kv.min_reuse() || dir.contains(&state_name(scope, tokens)) {
            return;
        }
        let flags = LlamaStateSeqFlags::empty();
        let size = ctx.state_seq_get_size_ext(slot, flags);
        let mut payload = vec![0u8; size];
        // SAFETY: `payload` holds the `size` bytes llama.cpp just reported for this sequence,
        // and nothing touches the context between the two calls (this thread owns it).
        #[allow(unsafe_code)]
        let written = unsafe { ctx.state_seq_get_data_ext(payload.as_mut_ptr(), slot, flags) };
        if written != size {
            tracing::warn!(slot, size, written, "cannot copy a KV state");
            return;
        }
        let job = SpillJob {
            scope: scope.to_owned(),
            tokens: tokens.to_vec(),
            payload,
            epoch: dir.epoch(scope),
        };
        let dropped = tx.send(job);
        if dropped > 0 {
            self.metrics.spill_skipped.increment(dropped as u64);
        }
    }

    /// When a queued prompt may find a longer prefix of itself on disk than in memory, ask
    /// the reader thread to look (rescanning the directory when due) and read the state if
    /// restoring it pays; the request waits for the answer, other work goes on.
    pub(super) fn request_restore(&mut self, scope: &str, prompt: &[i32]) -> Restore {
        let Some(reader) = &self.reader else {
            return Restore::Nothing;
        };
        let resident = self.kv.reusable(scope, prompt);
        let min_reuse = self.kv.min_reuse();
        if resident + min_reuse > prompt.len() {
            return Restore::Nothing;
        }
        // The index is in memory: without a state worth reading there, the reader thread is
        // asked only when a rescan of the directory is due (once a second at most).
        let known = self.spill.as_ref().is_some_and(|d| {
            d.best(scope, prompt, min_reuse, !self.swa)
                .is_some_and(|c| {
                    self.costs
                        .restore_pays(resident, c.usable, c.bytes, min_reuse)
                })
        });
        if !known {
            if self.last_rescan.is_some_and(|t| t.elapsed() < RESCAN_EVERY) {
                return Restore::Nothing;
            }
            self.last_rescan = Some(Instant::now());
        }
        self.read_ids += 1;
        let job = ReadJob {
            id: self.read_ids,
            scope: scope.to_owned(),
            prompt: prompt.to_vec(),
            resident,
            min_reuse: self.kv.min_reuse(),
            allow_cut: !self.swa,
            costs: self.costs,
        };
        match reader.jobs.send(job) {
            Ok(()) => Restore::Reading(self.read_ids),
            Err(_) => Restore::Nothing,
        }
    }

    /// Take the reader thread's answers to the requests that wait for them. When nothing
    /// else can run, wait a little for one instead of spinning.
    pub(super) fn collect_reads(&mut self) {
        let Some(reader) = &self.reader else {
            return;
        };
        let idle = self.active.is_empty()
            && self.extensions.is_empty()
            && !self.waiting.is_empty()
            && self
                .waiting
                .iter()
                .all(|p| matches!(p.restore, Restore::Reading(_)));
        let mut done: Vec<ReadDone> = reader.done.try_iter().collect();
        if done.is_empty() && idle {
            done.extend(reader.done.recv_timeout(Duration::from_millis(5)).ok());
        }
        for d in done {
            if let Some(p) = self
                .waiting
                .iter_mut()
                .find(|p| p.restore == Restore::Reading(d.id))
            {
                p.restore = match d.found {
                    Some((candidate, payload)) => Restore::Ready {
                        candidate,
                        payload,
                        read_secs: d.read_secs,
                    },
                    None => Restore::Nothing,
                };
            }
        }
    }

    /// Put a state read from disk for `prompt` into an empty slot, where the KV manager
    /// then finds it like any resident state (unless memory meanwhile holds as much).
    pub(super) fn apply_restore(
        &mut self,
        ctx: &mut LlamaContext<'_>,
        scope: &str,
        prompt: &[i32],
        restore: Restore,
    ) {
        let Restore::Ready {
            candidate,
            payload,
            read_secs,
        } = restore
        else {
            return;
        };
        // A queued stream copy reads its source when the next decode starts; writing a
        // restored state into a slot before then could change what it copies.
        if self.copy_pending {
            return;
        }
        let resident = self.kv.reusable(scope, prompt);
        if candidate.usable < resident + self.kv.min_reuse() {
            return;
        }
        let Some((slot, evicted)) = self.kv.take_empty() else {
            return;
        };
        self.extensions.retain(|e| e.slot != slot);
        if evicted {
            self.metrics.evictions.increment(1);
        }
        let _ = ctx.clear_kv_cache_seq(Some(slot as u32), None, None);
        let started = Instant::now();
        let n = candidate.tokens.len();
        // SAFETY: the bytes are a state this module wrote (CRC-checked, for this scope and
        // these tokens, under this model's fingerprint); llama.cpp validates the layout
        // itself and returns 0, leaving the sequence empty, on any mismatch.
        #[allow(unsafe_code)]
        let restored =
            unsafe { ctx.state_seq_set_data_ext(&payload, slot, LlamaStateSeqFlags::empty()) };
        // The restored cells must hold exactly positions 0..n.
        if restored && ctx.kv_cache_seq_pos_max(slot) == n as i32 - 1 {
            let secs = started.elapsed().as_secs_f64();
            self.costs
                .observe_restore(candidate.bytes, secs + read_secs);
            self.metrics.restores.increment(1);
            self.metrics
                .tokens_restored
                .increment(candidate.usable as u64);
            tracing::debug!(
                slot,
                tokens = n,
                bytes = candidate.bytes,
                read_secs,
                secs,
                "restored a KV state from disk"
            );
            self.kv.finish(slot, scope, candidate.tokens);
        } else {
            self.metrics.restore_failures.increment(1);
            tracing::warn!(slot, file = %candidate.name,
                "a KV state could not be restored; prefilling instead");
            if let Some(dir) = &self.spill {
                dir.delete(&candidate.name);
                report_disk(dir, &self.metrics.disk_states, &self.metrics.disk_bytes);
            }
            let _ = ctx.clear_kv_cache_seq(Some(slot as u32), None, None);
            self.kv.free(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    #[test]
    fn the_writer_thread_runs_only_on_idle_cores() {
        let policy = std::thread::spawn(|| {
            super::set_priority(0, true);
            // SAFETY: sched_getscheduler only reads its argument; `0` is the calling thread.
            #[allow(unsafe_code)]
            unsafe {
                libc::sched_getscheduler(0)
            }
        })
        .join()
        .unwrap();
        assert_eq!(policy, libc::SCHED_IDLE);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_writer_behind_is_raised_by_another_thread_and_lowers_itself_again() {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            super::set_priority(0, true);
            tid_tx.send(super::thread_id()).unwrap();
            go_rx.recv().unwrap();
            // SAFETY: both only read their arguments; `0` is the calling thread.
            #[allow(unsafe_code)]
            let raised = unsafe {
                (
                    libc::sched_getscheduler(0),
                    libc::getpriority(libc::PRIO_PROCESS as _, 0),
                )
            };
            super::set_priority(0, true);
            #[allow(unsafe_code)]
            let lowered = unsafe { libc::sched_getscheduler(0) };
            (raised, lowered)
        });
        let tid = tid_rx.recv().unwrap();
        super::set_priority(tid, false);
        go_tx.send(()).unwrap();
        let ((policy, nice), lowered) = writer.join().unwrap();
        assert_eq!((policy, nice), (libc::SCHED_OTHER, 0));
        assert_eq!(lowered, libc::SCHED_IDLE);
    }
}
