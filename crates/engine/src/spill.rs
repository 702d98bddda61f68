//! Spilled KV states: finished sequences' llama.cpp state, kept on disk.
//!
//! When a sequence finishes, the worker copies its slot's state (llama.cpp's per-sequence
//! state, the K/V of the prompt's tokens) and hands it to a writer thread, which writes it
//! into the data dir: to a temporary file first, renamed into place once complete, so a crash
//! never leaves a half-written state under a real name. The file carries its scope (the API
//! key's hash), the tokens it holds and a CRC-32 of everything; a file that fails the check is
//! never passed to llama.cpp. Files live in a directory per model fingerprint (the GGUF and
//! the context settings the state layout depends on), so a restarted server, or another
//! replica sharing the data dir, finds exactly the states it can restore.
//!
//! [`SpillIndex`] is the plain bookkeeping: which files hold which tokens, and which to delete
//! to stay within the disk budget (least recently used first; a restore counts as a use and
//! touches the file's modification time, which is what orders files after a restart).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::kv::{common_prefix, PREFILL_TAIL};

const MAGIC: &[u8; 4] = b"LGKV";
const FORMAT: u32 = 1;
/// Longest scope string accepted when reading a header.
const MAX_SCOPE: usize = 1024;
/// Temporary files older than this are left over from a crash (or a replica that died
/// mid-write) and are removed by a scan.
const STALE_TMP: Duration = Duration::from_secs(600);

/// One state on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpillEntry {
    /// Whose state it is.
    pub scope: String,
    /// The tokens its KV holds, at positions `0..tokens.len()`.
    pub tokens: Vec<i32>,
    /// File size.
    pub bytes: u64,
    /// Last use, in nanoseconds since the epoch (the file's modification time).
    pub last_used: u64,
}

/// A state on disk worth restoring for a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// File name.
    pub name: String,
    /// Prompt tokens it provides.
    pub usable: usize,
    /// File size.
    pub bytes: u64,
    /// Every token it holds (`usable` of them, or all, are a prefix of the prompt).
    pub tokens: Vec<i32>,
}

/// Which states are on disk, and the LRU policy over the disk budget.
#[derive(Debug)]
pub struct SpillIndex {
    entries: HashMap<String, SpillEntry>,
    total: u64,
    budget: u64,
    /// Per scope, how many times its states were forgotten: a write prepared before the last
    /// forget of its scope is dropped.
    epochs: HashMap<String, u64>,
}

impl SpillIndex {
    /// An empty index keeping at most `budget` bytes.
    pub fn new(budget: u64) -> Self {
        SpillIndex {
            entries: HashMap::new(),
            total: 0,
            budget,
            epochs: HashMap::new(),
        }
    }

    /// Add (or replace) `name`. Returns the names to delete to get back within the budget,
    /// least recently used first; that can include `name` itself if it alone exceeds it.
    pub fn insert(&mut self, name: String, entry: SpillEntry) -> Vec<String> {
        self.total += entry.bytes;
        if let Some(old) = self.entries.insert(name, entry) {
            self.total -= old.bytes;
        }
        let mut evicted = Vec::new();
        while self.total > self.budget {
            let Some(lru) = self
                .entries
                .iter()
                .min_by_key(|(n, e)| (e.last_used, (*n).clone()))
                .map(|(n, _)| n.clone())
            else {
                break;
            };
            self.remove(&lru);
            evicted.push(lru);
        }
        evicted
    }

    /// Forget `name`.
    pub fn remove(&mut self, name: &str) -> Option<SpillEntry> {
        let e = self.entries.remove(name)?;
        self.total -= e.bytes;
        Some(e)
    }

    /// Mark `name` as used at `now`.
    pub fn touch(&mut self, name: &str, now: u64) {
        if let Some(e) = self.entries.get_mut(name) {
            e.last_used = e.last_used.max(now);
        }
    }

    /// Whether `name` is indexed.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The state of `scope` that saves the most prefill for `prompt`, holding at least
    /// `min_len` usable tokens. With `allow_cut`, a state is usable up to its longest common
    /// prefix with the prompt (the rest is cut after the restore). Without it, only a state
    /// that is entirely a prefix of the prompt is usable: sliding-window layers save only the
    /// window before the state's end, so a cut state could lack cells the prompt needs.
    /// Never the prompt's last [`PREFILL_TAIL`] tokens.
    pub fn best(
        &self,
        scope: &str,
        prompt: &[i32],
        min_len: usize,
        allow_cut: bool,
    ) -> Option<Candidate> {
        let limit = prompt.len().saturating_sub(PREFILL_TAIL);
        self.entries
            .iter()
            .filter(|(_, e)| e.scope == scope)
            .filter_map(|(n, e)| {
                let common = common_prefix(&e.tokens, prompt);
                let usable = if allow_cut {
                    common.min(limit)
                } else if common == e.tokens.len() && common <= limit {
                    common
                } else {
                    0
                };
                (usable >= min_len.max(1)).then_some((n, e, usable))
            })
            .max_by_key(|(n, e, usable)| (*usable, e.last_used, (*n).clone()))
            .map(|(n, e, usable)| Candidate {
                name: n.clone(),
                usable,
                bytes: e.bytes,
                tokens: e.tokens.clone(),
            })
    }

    /// Bytes indexed.
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// States indexed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn names(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }
}

/// The file name of the state of `tokens` in `scope`.
pub fn state_name(scope: &str, tokens: &[i32]) -> String {
    let mut h = Sha256::new();
    h.update((scope.len() as u64).to_le_bytes());
    h.update(scope.as_bytes());
    for t in tokens {
        h.update(t.to_le_bytes());
    }
    let digest = h.finalize();
    format!("{}.kv", hex::encode(&digest[..20]))
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn mtime_nanos(meta: &fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn header(scope: &str, tokens: &[i32], payload_len: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(24 + scope.len() + 4 * tokens.len());
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&FORMAT.to_le_bytes());
    h.extend_from_slice(&(scope.len() as u32).to_le_bytes());
    h.extend_from_slice(scope.as_bytes());
    h.extend_from_slice(&(tokens.len() as u32).to_le_bytes());
    for t in tokens {
        h.extend_from_slice(&t.to_le_bytes());
    }
    h.extend_from_slice(&payload_len.to_le_bytes());
    h
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

fn read_u32(r: &mut impl Read, crc: &mut crc32fast::Hasher) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    crc.update(&b);
    Ok(u32::from_le_bytes(b))
}

/// Read a state file's header: scope, tokens and payload length, with the hasher fed so far.
fn read_header(
    r: &mut impl Read,
    file_len: u64,
) -> io::Result<(String, Vec<i32>, u64, crc32fast::Hasher)> {
    let mut crc = crc32fast::Hasher::new();
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)?;
    crc.update(&magic);
    if &magic != MAGIC || read_u32(r, &mut crc)? != FORMAT {
        return Err(invalid("not a localgem KV state file"));
    }
    let scope_len = read_u32(r, &mut crc)? as usize;
    if scope_len > MAX_SCOPE {
        return Err(invalid("scope too long"));
    }
    let mut scope = vec![0u8; scope_len];
    r.read_exact(&mut scope)?;
    crc.update(&scope);
    let scope = String::from_utf8(scope).map_err(|_| invalid("scope is not UTF-8"))?;
    let n = read_u32(r, &mut crc)? as u64;
    if n * 4 > file_len {
        return Err(invalid("token count larger than the file"));
    }
    let mut raw = vec![0u8; n as usize * 4];
    r.read_exact(&mut raw)?;
    crc.update(&raw);
    let tokens = raw
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    crc.update(&b);
    let payload_len = u64::from_le_bytes(b);
    let expected = 4 + 4 + 4 + scope_len as u64 + 4 + n * 4 + 8 + payload_len + 4;
    if expected != file_len {
        return Err(invalid("file length does not match its header"));
    }
    Ok((scope, tokens, payload_len, crc))
}

/// The state files of one model fingerprint, and their index.
#[derive(Debug)]
pub struct SpillDir {
    dir: PathBuf,
    index: Mutex<SpillIndex>,
    tmp_seq: AtomicU64,
}

impl SpillDir {
    /// Open (creating) `dir` with a disk budget, and index the states already there.
    ///
    /// # Errors
    /// When the directory cannot be created or read.
    pub fn open(dir: PathBuf, budget: u64) -> io::Result<(Self, Vec<String>)> {
        fs::create_dir_all(&dir)?;
        let s = SpillDir {
            dir,
            index: Mutex::new(SpillIndex::new(budget)),
            tmp_seq: AtomicU64::new(0),
        };
        let deleted = s.scan()?;
        Ok((s, deleted))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SpillIndex> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `(states, bytes)` indexed.
    pub fn usage(&self) -> (usize, u64) {
        let i = self.lock();
        (i.len(), i.total_bytes())
    }

    /// Whether `name` is on disk (as far as the index knows).
    pub fn contains(&self, name: &str) -> bool {
        self.lock().contains(name)
    }

    /// See [`SpillIndex::best`].
    pub fn best(
        &self,
        scope: &str,
        prompt: &[i32],
        min_len: usize,
        allow_cut: bool,
    ) -> Option<Candidate> {
        self.lock().best(scope, prompt, min_len, allow_cut)
    }

    /// Bring the index up to date with the directory (files written by an earlier run or by
    /// another replica; files deleted by one), remove stale temporary files, and enforce the
    /// budget. Returns the names deleted for the budget.
    ///
    /// # Errors
    /// When the directory cannot be read.
    pub fn scan(&self) -> io::Result<Vec<String>> {
        let mut seen = std::collections::HashSet::new();
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = entry.metadata() else { continue };
            if name.starts_with(".tmp-") {
                let age = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .unwrap_or_default();
                if age > STALE_TMP {
                    let _ = fs::remove_file(entry.path());
                }
                continue;
            }
            if !name.ends_with(".kv") {
                continue;
            }
            seen.insert(name.clone());
            if self.lock().contains(&name) {
                continue;
            }
            match File::open(entry.path())
                .and_then(|f| read_header(&mut io::BufReader::new(f), meta.len()))
            {
                Ok((scope, tokens, _, _)) if name == state_name(&scope, &tokens) => {
                    found.push((
                        name,
                        SpillEntry {
                            scope,
                            tokens,
                            bytes: meta.len(),
                            last_used: mtime_nanos(&meta),
                        },
                    ));
                }
                _ => {
                    tracing::warn!(file = %entry.path().display(), "removing an unreadable KV state file");
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        let mut deleted = Vec::new();
        let mut index = self.lock();
        for name in index.names() {
            if !seen.contains(&name) {
                index.remove(&name);
            }
        }
        for (name, e) in found {
            deleted.extend(index.insert(name, e));
        }
        drop(index);
        for name in &deleted {
            let _ = fs::remove_file(self.dir.join(name));
        }
        Ok(deleted)
    }

    /// Write the state of `tokens` in `scope` (`payload`: llama.cpp's sequence state) and
    /// index it. Returns `(bytes written, names deleted for the budget)`.
    ///
    /// # Errors
    /// When the file cannot be written; nothing is left under the final name then.
    pub fn write(
        &self,
        scope: &str,
        tokens: &[i32],
        payload: &[u8],
    ) -> io::Result<(u64, Vec<String>)> {
        let epoch = self.epoch(scope);
        self.write_at(scope, tokens, payload, epoch)
    }

    /// [`SpillDir::write`] for a state taken when `scope` was at `epoch`: if the scope was
    /// forgotten since, nothing is written (`Ok((0, []))`).
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write_at(
        &self,
        scope: &str,
        tokens: &[i32],
        payload: &[u8],
        epoch: u64,
    ) -> io::Result<(u64, Vec<String>)> {
        let name = state_name(scope, tokens);
        let tmp = self.dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            self.tmp_seq.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut crc = crc32fast::Hasher::new();
            let head = header(scope, tokens, payload.len() as u64);
            crc.update(&head);
            crc.update(payload);
            let mut w = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
            w.write_all(&head)?;
            w.write_all(payload)?;
            w.write_all(&crc.finalize().to_le_bytes())?;
            w.into_inner().map_err(|e| e.into_error())?;
            Ok(())
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let bytes = (head_len(scope, tokens) + payload.len() + 4) as u64;
        // Rename and index under the lock that forgetting takes, so a state is either
        // forgotten after it landed or never lands.
        let deleted = {
            let mut index = self.lock();
            if index.epochs.get(scope).copied().unwrap_or(0) != epoch {
                drop(index);
                let _ = fs::remove_file(&tmp);
                return Ok((0, Vec::new()));
            }
            if let Err(e) = fs::rename(&tmp, self.dir.join(&name)) {
                drop(index);
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
            index.insert(
                name,
                SpillEntry {
                    scope: scope.to_owned(),
                    tokens: tokens.to_vec(),
                    bytes,
                    last_used: now_nanos(),
                },
            )
        };
        for n in &deleted {
            let _ = fs::remove_file(self.dir.join(n));
        }
        Ok((bytes, deleted))
    }

    /// Read the state `name`, which must hold `tokens` for `scope`, and check its CRC. A
    /// successful read counts as a use. A file that is missing or damaged is dropped from the
    /// index (and deleted when damaged); one holding another state is left alone.
    ///
    /// # Errors
    /// When the file is missing or fails a check.
    pub fn read(&self, name: &str, scope: &str, tokens: &[i32]) -> io::Result<Vec<u8>> {
        let path = self.dir.join(name);
        let result = (|| {
            let mut f = io::BufReader::with_capacity(1 << 20, File::open(&path)?);
            let len = f.get_ref().metadata()?.len();
            let (s, t, payload_len, mut crc) = read_header(&mut f, len)?;
            if s != scope || t != tokens {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the file holds another state",
                ));
            }
            let mut payload = vec![0u8; payload_len as usize];
            f.read_exact(&mut payload)?;
            crc.update(&payload);
            let mut b = [0u8; 4];
            f.read_exact(&mut b)?;
            if u32::from_le_bytes(b) != crc.finalize() {
                return Err(invalid("checksum mismatch"));
            }
            Ok(payload)
        })();
        match &result {
            Ok(_) => {
                let now = now_nanos();
                self.lock().touch(name, now);
                if let Ok(f) = File::options().append(true).open(&path) {
                    let _ = f.set_modified(SystemTime::now());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {}
            Err(e) => {
                self.lock().remove(name);
                if e.kind() == io::ErrorKind::InvalidData
                    || e.kind() == io::ErrorKind::UnexpectedEof
                {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        result
    }

    /// How many times `scope` was forgotten; a write carries the value from when its state
    /// was taken, and is dropped if the scope was forgotten since.
    pub fn epoch(&self, scope: &str) -> u64 {
        self.lock().epochs.get(scope).copied().unwrap_or(0)
    }

    /// Delete every state of `scope` (after a rescan, so states another process wrote go
    /// too), and drop writes of it already under way. Returns how many.
    pub fn forget_scope(&self, scope: &str) -> usize {
        let _ = self.scan();
        let names: Vec<String> = {
            let mut index = self.lock();
            *index.epochs.entry(scope.to_owned()).or_insert(0) += 1;
            index
                .entries
                .iter()
                .filter(|(_, e)| e.scope == scope)
                .map(|(n, _)| n.clone())
                .collect()
        };
        for n in &names {
            self.delete(n);
        }
        names.len()
    }

    /// Forget and delete `name`.
    pub fn delete(&self, name: &str) {
        self.lock().remove(name);
        let _ = fs::remove_file(self.dir.join(name));
    }
}

/// Delete the KV state files under `root` (one directory per model fingerprint) last written
/// before `cutoff`: retention for cached conversation state. A running engine notices at its
/// next scan; a restore of a state deleted meanwhile fails its read and falls back to a
/// prefill. Returns how many files went.
///
/// # Errors
/// When `root` exists but cannot be read.
pub fn purge_older_than(root: &Path, cutoff: std::time::SystemTime) -> io::Result<usize> {
    let mut n = 0;
    let dirs = match fs::read_dir(root) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for dir in dirs.flatten() {
        let Ok(files) = fs::read_dir(dir.path()) else {
            continue;
        };
        for f in files.flatten() {
            let old = f
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff);
            if old && f.file_type().is_ok_and(|t| t.is_file()) && fs::remove_file(f.path()).is_ok()
            {
                n += 1;
            }
        }
    }
    Ok(n)
}

fn head_len(scope: &str, tokens: &[i32]) -> usize {
    4 + 4 + 4 + scope.len() + 4 + 4 * tokens.len() + 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgetting_a_scope_deletes_its_states_and_drops_writes_under_way() {
        let root = tempfile::tempdir().unwrap();
        let (d, _) = SpillDir::open(root.path().join("s"), 1 << 30).unwrap();
        d.write("a", &[1, 2, 3], b"state-a").unwrap();
        d.write("b", &[1, 2, 3], b"state-b").unwrap();
        let taken = d.epoch("a"); // a state of `a` taken before the forget...
        assert_eq!(d.forget_scope("a"), 1);
        // ...is not written after it.
        assert_eq!(d.write_at("a", &[4, 5], b"late", taken).unwrap().0, 0);
        assert_eq!(d.usage().0, 1);
        assert!(d.best("a", &[1, 2, 3, 4], 1, true).is_none());
        assert!(d.best("b", &[1, 2, 3, 4], 1, true).is_some());
        // New states of `a` are written again.
        assert!(d.write("a", &[7, 8], b"new").unwrap().0 > 0);
        let files = fs::read_dir(root.path().join("s")).unwrap().count();
        assert_eq!(files, 2, "no temp file left behind");
    }

    #[test]
    fn retention_purges_only_old_state_files() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("fingerprint");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("old"), b"x").unwrap();
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        fs::File::options()
            .write(true)
            .open(d.join("old"))
            .unwrap()
            .set_modified(past)
            .unwrap();
        fs::write(d.join("new"), b"y").unwrap();
        let cutoff = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        assert_eq!(purge_older_than(root.path(), cutoff).unwrap(), 1);
        assert!(!d.join("old").exists() && d.join("new").exists());
        assert_eq!(
            purge_older_than(&root.path().join("none"), cutoff).unwrap(),
            0
        );
    }

    fn entry(scope: &str, tokens: &[i32], bytes: u64, last_used: u64) -> SpillEntry {
        SpillEntry {
            scope: scope.into(),
            tokens: tokens.to_vec(),
            bytes,
            last_used,
        }
    }

    fn pick(
        i: &SpillIndex,
        scope: &str,
        prompt: &[i32],
        min: usize,
        cut: bool,
    ) -> Option<(String, usize)> {
        i.best(scope, prompt, min, cut).map(|c| (c.name, c.usable))
    }

    #[test]
    fn best_is_the_longest_whole_prefix_of_the_same_scope() {
        let mut i = SpillIndex::new(1000);
        i.insert("a".into(), entry("k", &[1, 2], 10, 1));
        i.insert("b".into(), entry("k", &[1, 2, 3, 4], 10, 2));
        i.insert("c".into(), entry("k", &[1, 2, 9, 9, 9], 10, 3));
        i.insert("d".into(), entry("other", &[1, 2, 3, 4, 5], 10, 4));
        let prompt = [1, 2, 3, 4, 5, 6, 7];
        assert_eq!(pick(&i, "k", &prompt, 1, false), Some(("b".into(), 4)));
        // a state whose tokens differ anywhere is never restored whole
        assert_eq!(
            pick(&i, "k", &[1, 2, 9, 9, 8, 8], 1, false),
            Some(("a".into(), 2))
        );
        // never the prompt's last two tokens
        assert_eq!(
            pick(&i, "k", &[1, 2, 3, 4], 1, false),
            Some(("a".into(), 2))
        );
        assert_eq!(
            pick(&i, "k", &prompt, 5, false),
            None,
            "shorter than min_len"
        );
        assert_eq!(pick(&i, "nobody", &prompt, 1, false), None);
        assert_eq!(pick(&i, "other", &prompt, 1, false), Some(("d".into(), 5)));
        let c = i.best("k", &prompt, 1, false).unwrap();
        assert_eq!((c.bytes, c.tokens), (10, vec![1, 2, 3, 4]));
    }

    #[test]
    fn with_cuts_allowed_a_state_counts_up_to_where_it_diverges() {
        let mut i = SpillIndex::new(1000);
        i.insert("a".into(), entry("k", &[1, 2], 10, 1));
        i.insert("c".into(), entry("k", &[1, 2, 9, 9, 9, 7], 10, 3));
        // "c" diverges at its 5th token but still gives 4
        assert_eq!(
            pick(&i, "k", &[1, 2, 9, 9, 8, 8], 1, true),
            Some(("c".into(), 4))
        );
        // and is cut two short of an identical prompt
        assert_eq!(
            pick(&i, "k", &[1, 2, 9, 9, 9, 7], 1, true),
            Some(("c".into(), 4))
        );
        assert_eq!(pick(&i, "k", &[1, 2, 9, 9, 8, 8], 5, true), None);
        assert_eq!(pick(&i, "k", &[5, 5, 5], 1, true), None);
    }

    #[test]
    fn insert_evicts_least_recently_used_over_budget() {
        let mut i = SpillIndex::new(25);
        assert!(i.insert("a".into(), entry("k", &[1], 10, 1)).is_empty());
        assert!(i.insert("b".into(), entry("k", &[2], 10, 2)).is_empty());
        i.touch("a", 3);
        assert_eq!(i.insert("c".into(), entry("k", &[3], 10, 4)), vec!["b"]);
        assert_eq!(i.total_bytes(), 20);
        // replacing an entry does not count it twice
        assert!(i.insert("c".into(), entry("k", &[3], 10, 5)).is_empty());
        assert_eq!(i.total_bytes(), 20);
        // an entry larger than the whole budget evicts everything, itself included
        let mut out = i.insert("huge".into(), entry("k", &[4], 100, 6));
        out.sort();
        assert_eq!(out, vec!["a", "c", "huge"]);
        assert!(i.is_empty());
        assert_eq!(i.total_bytes(), 0);
    }

    #[test]
    fn names_depend_on_scope_and_every_token() {
        let a = state_name("k", &[1, 2, 3]);
        assert_eq!(a, state_name("k", &[1, 2, 3]));
        assert_ne!(a, state_name("j", &[1, 2, 3]));
        assert_ne!(a, state_name("k", &[1, 2, 4]));
        assert_ne!(a, state_name("k", &[1, 2]));
        assert!(a.ends_with(".kv") && a.len() == 43);
    }

    #[test]
    fn files_round_trip_and_survive_a_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("kv");
        let (d, _) = SpillDir::open(dir.clone(), 1 << 20).unwrap();
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let (bytes, deleted) = d.write("k", &[5, 6, 7], &payload).unwrap();
        assert!(deleted.is_empty());
        let name = state_name("k", &[5, 6, 7]);
        assert_eq!(fs::metadata(dir.join(&name)).unwrap().len(), bytes);
        assert_eq!(d.read(&name, "k", &[5, 6, 7]).unwrap(), payload);
        // the wrong scope or tokens are refused
        assert!(d.read(&name, "j", &[5, 6, 7]).is_err());
        // a second process (restart or replica) indexes what is there
        let (d2, _) = SpillDir::open(dir.clone(), 1 << 20).unwrap();
        assert_eq!(d2.usage(), (1, bytes));
        let c = d2.best("k", &[5, 6, 7, 8, 9], 1, false).unwrap();
        assert_eq!(
            (c.name.as_str(), c.usable, c.bytes),
            (name.as_str(), 3, bytes)
        );
        assert_eq!(d2.read(&name, "k", &[5, 6, 7]).unwrap(), payload);
        // a file written by the other one appears on the next scan
        d.write("k", &[5, 6, 7, 8, 9], &payload).unwrap();
        assert_eq!(
            d2.best("k", &[5, 6, 7, 8, 9, 10, 11], 1, false)
                .unwrap()
                .usable,
            3
        );
        d2.scan().unwrap();
        assert_eq!(
            d2.best("k", &[5, 6, 7, 8, 9, 10, 11], 1, false)
                .unwrap()
                .usable,
            5
        );
        // and one deleted by the other disappears
        d.delete(&name);
        d2.scan().unwrap();
        assert_eq!(d2.usage().0, 1);
    }

    #[test]
    fn damaged_or_foreign_files_are_never_returned() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let (d, _) = SpillDir::open(dir.clone(), 1 << 20).unwrap();
        let payload = vec![7u8; 4096];
        d.write("k", &[1, 2], &payload).unwrap();
        let name = state_name("k", &[1, 2]);
        // flip one payload byte: the CRC catches it and the file is deleted
        let path = dir.join(&name);
        let mut raw = fs::read(&path).unwrap();
        let mid = raw.len() - 100;
        raw[mid] ^= 1;
        fs::write(&path, &raw).unwrap();
        assert_eq!(
            d.read(&name, "k", &[1, 2]).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert!(!path.exists());
        assert!(!d.contains(&name));
        // a truncated file and a stray file are removed by a scan, never indexed
        d.write("k", &[3, 4], &payload).unwrap();
        let name = state_name("k", &[3, 4]);
        let raw = fs::read(dir.join(&name)).unwrap();
        fs::write(dir.join(&name), &raw[..raw.len() / 2]).unwrap();
        fs::write(dir.join("junk.kv"), b"LGKV garbage").unwrap();
        let (d2, _) = SpillDir::open(dir.clone(), 1 << 20).unwrap();
        assert_eq!(d2.usage().0, 0);
        assert!(!dir.join(&name).exists() && !dir.join("junk.kv").exists());
    }

    #[test]
    fn the_disk_budget_holds_across_writes() {
        let tmp = tempfile::tempdir().unwrap();
        let payload = vec![1u8; 1000];
        let (d, _) = SpillDir::open(tmp.path().to_path_buf(), 2500).unwrap();
        d.write("k", &[1], &payload).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        d.write("k", &[2], &payload).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let (_, deleted) = d.write("k", &[3], &payload).unwrap();
        assert_eq!(deleted, vec![state_name("k", &[1])]);
        let files = fs::read_dir(tmp.path()).unwrap().count();
        assert_eq!(files, 2);
        assert!(d.usage().1 <= 2500);
    }
}
