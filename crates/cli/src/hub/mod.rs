//! `localgem pull OWNER/NAME[:QUANT]`: a model from the Hugging Face Hub, or from the mirror
//! `HF_ENDPOINT` names, into the standard Hugging Face cache (`HF_HUB_CACHE`, else
//! `HF_HOME/hub`), through the `hf-hub` crate: files other tools downloaded are reused, an
//! interrupted download resumes, `HF_TOKEN` opens gated repositories. Each new file is checked
//! against the size and SHA-256 the repository listing gives. `HF_HUB_OFFLINE=1`, or a hub
//! that cannot be reached, serves what the cache holds.

mod progress;
pub mod select;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use hf_hub::api::tokio::{Api, ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};
use indicatif::HumanBytes;
use serde::Deserialize;
use sha2::{Digest, Sha256};

pub use select::HubRef;
use select::{select, RemoteFile, Selection};

/// A model present in the cache.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The GGUF to open (the first part of a split one).
    pub model: PathBuf,
    /// Its vision projector, when the repository has one.
    pub mmproj: Option<PathBuf>,
    /// The quantization chosen.
    pub quant: Option<String>,
    /// Bytes downloaded by this pull (0: everything was in the cache).
    pub downloaded: u64,
}

/// The hub client and the cache it fills.
pub struct Hub {
    api: Api,
    cache: Cache,
    /// `HF_ENDPOINT` when set, for messages.
    endpoint: Option<String>,
    offline: bool,
}

#[derive(Deserialize)]
struct Listing {
    sha: String,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
    size: Option<u64>,
    lfs: Option<Lfs>,
}

#[derive(Deserialize)]
struct Lfs {
    sha256: String,
    size: Option<u64>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Hub {
    /// A client configured from the standard Hugging Face variables.
    pub fn from_env() -> Result<Hub> {
        let cache = match env("HF_HUB_CACHE") {
            Some(p) => Cache::new(PathBuf::from(p)),
            None => Cache::from_env(),
        };
        let endpoint = env("HF_ENDPOINT").map(|e| e.trim_end_matches('/').to_owned());
        let token = env("HF_TOKEN").or_else(|| cache.token());
        let mut builder = ApiBuilder::from_cache(cache.clone())
            .with_progress(false)
            .with_token(token);
        if let Some(e) = &endpoint {
            builder = builder.with_endpoint(e.clone());
        }
        let offline = env("HF_HUB_OFFLINE")
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
        Ok(Hub {
            api: builder.build().context("cannot set up the hub client")?,
            cache,
            endpoint,
            offline,
        })
    }

    /// Where the cache lives.
    pub fn cache_dir(&self) -> &Path {
        self.cache.path()
    }

    fn place(&self) -> String {
        match &self.endpoint {
            Some(e) => e.clone(),
            None => "the Hugging Face Hub".to_owned(),
        }
    }

    /// `models--OWNER--NAME` in the cache.
    fn repo_dir(&self, repo: &str) -> PathBuf {
        self.cache
            .path()
            .join(format!("models--{}", repo.replace('/', "--")))
    }

    fn api_repo(&self, repo: &str) -> hf_hub::api::tokio::ApiRepo {
        self.api.repo(Repo::with_revision(
            repo.to_owned(),
            RepoType::Model,
            "main".to_owned(),
        ))
    }

    async fn listing(&self, r: &HubRef) -> Result<(String, Vec<RemoteFile>), ApiError> {
        let resp = self
            .api_repo(&r.repo)
            .info_request()
            .query(&[("blobs", "true")])
            .send()
            .await?
            .error_for_status()?;
        let listing: Listing = resp.json().await?;
        let files = listing
            .siblings
            .into_iter()
            .map(|s| RemoteFile {
                size: s.lfs.as_ref().and_then(|l| l.size).or(s.size),
                sha256: s.lfs.map(|l| l.sha256.to_ascii_lowercase()),
                name: s.rfilename,
            })
            .collect();
        Ok((listing.sha, files))
    }

    /// Make the model `r` names present in the cache, downloading what is missing.
    pub async fn pull(&self, r: &HubRef) -> Result<Pulled> {
        if self.offline {
            return self
                .cached(r)
                .with_context(|| format!("{r} is not in the cache and HF_HUB_OFFLINE is set"));
        }
        let (sha, files) = match self.listing(r).await {
            Ok(l) => l,
            Err(e) => {
                let err = self.explain(r, None, e);
                if let Ok(p) = self.cached(r) {
                    tracing::warn!("{err:#}; serving {r} from the cache");
                    return Ok(p);
                }
                return Err(err);
            }
        };
        let sel = select(&files, r.quant.as_deref()).map_err(|e| anyhow!("{r}: {e}"))?;
        let snapshot = self.repo_dir(&r.repo).join("snapshots").join(&sha);
        let wanted: Vec<&RemoteFile> = sel.model.iter().chain(sel.mmproj.iter()).collect();
        let missing: Vec<&RemoteFile> = wanted
            .iter()
            .copied()
            .filter(|f| !snapshot.join(&f.name).is_file())
            .collect();
        let need: u64 = missing.iter().filter_map(|f| f.size).sum();
        if need > 0 {
            self.check_space(need)?;
        }
        let mut downloaded = 0;
        for f in missing {
            downloaded += self.fetch(r, f).await?;
        }
        Ok(Pulled {
            model: snapshot.join(&sel.model[0].name),
            mmproj: sel.mmproj.as_ref().map(|m| snapshot.join(&m.name)),
            quant: sel.quant,
            downloaded,
        })
    }

    fn check_space(&self, need: u64) -> Result<()> {
        let dir = self.cache.path();
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the cache {}", dir.display()))?;
        let free = fs4::available_space(dir)
            .with_context(|| format!("cannot read the free space of {}", dir.display()))?;
        if free < need {
            bail!(
                "not enough disk space: the download needs {} in {} and {} is free",
                HumanBytes(need),
                dir.display(),
                HumanBytes(free)
            );
        }
        Ok(())
    }

    /// Download one file and check it; the bytes fetched.
    async fn fetch(&self, r: &HubRef, f: &RemoteFile) -> Result<u64> {
        if let Some(sha) = &f.sha256 {
            let part = self
                .repo_dir(&r.repo)
                .join("blobs")
                .join(format!("{sha}.sync.part"));
            if part.is_file() {
                eprintln!("pull {}: resuming an interrupted download", f.name);
            }
        }
        let report = progress::Report::new();
        let started = Instant::now();
        let path = self
            .api_repo(&r.repo)
            .download_with_progress(&f.name, report.clone())
            .await
            .map_err(|e| self.explain(r, Some(&f.name), e))?;
        let fetched = report.done();
        if let Err(e) = verify(&path, f).await {
            remove_download(&path);
            return Err(e);
        }
        tracing::debug!(file = %f.name, secs = started.elapsed().as_secs_f64(), "pulled");
        Ok(fetched)
    }

    /// A clear message for a failed hub call.
    fn explain(&self, r: &HubRef, file: Option<&str>, e: ApiError) -> anyhow::Error {
        let what = match file {
            Some(f) => format!("{f} of {}", r.repo),
            None => r.repo.clone(),
        };
        let req = match &e {
            ApiError::RequestError(req) => Some(req),
            ApiError::TooManyRetries(inner) => match inner.as_ref() {
                ApiError::RequestError(req) => Some(req),
                _ => None,
            },
            _ => None,
        };
        if let Some(req) = req {
            if let Some(status) = req.status() {
                return match status.as_u16() {
                    401 | 403 | 404 => anyhow!(
                        "{what}: not found at {} ({status}); check the name, and set HF_TOKEN \
                         for a private or gated repository",
                        self.place()
                    ),
                    _ => anyhow!("{what}: {} answered {status}", self.place()),
                };
            }
            if req.is_connect() || req.is_timeout() || req.is_request() {
                return anyhow!(
                    "cannot reach {} for {what}: {} (no network? HF_ENDPOINT names a mirror, \
                     HF_HUB_OFFLINE=1 uses the cache only)",
                    self.place(),
                    error_chain(req)
                );
            }
        }
        if let ApiError::IoError(io) = &e {
            if io.raw_os_error() == Some(28) {
                return anyhow!(
                    "the disk is full: cannot write {what} into {} (free some space and pull \
                     again; the download resumes)",
                    self.cache.path().display()
                );
            }
        }
        if let ApiError::LockAcquisition(p) = &e {
            return anyhow!(
                "{what}: another pull is downloading it (lock {})",
                p.display()
            );
        }
        anyhow!("{what}: {e}")
    }

    /// The model `r` names, from the cache alone (the revision last pulled).
    pub fn cached(&self, r: &HubRef) -> Result<Pulled> {
        let dir = self.repo_dir(&r.repo);
        let sha = std::fs::read_to_string(dir.join("refs").join("main"))
            .with_context(|| format!("{} is not in the cache", r.repo))?;
        let snapshot = dir.join("snapshots").join(sha.trim());
        let files = local_files(&snapshot);
        let sel: Selection = select(&files, r.quant.as_deref())
            .map_err(|e| anyhow!("{r} in the cache ({}): {e}", snapshot.display()))?;
        if let Some(f) = sel.model.iter().find(|f| !snapshot.join(&f.name).is_file()) {
            bail!("{r}: {} is missing from the cache", f.name);
        }
        Ok(Pulled {
            model: snapshot.join(&sel.model[0].name),
            mmproj: sel.mmproj.as_ref().map(|m| snapshot.join(&m.name)),
            quant: sel.quant,
            downloaded: 0,
        })
    }

    /// Every GGUF in the cache: (repository, path inside it, file).
    pub fn list(&self) -> Vec<(String, String, PathBuf)> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.cache.path()) else {
            return out;
        };
        let mut repos: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        repos.sort();
        for dir in repos {
            let Some(name) = dir
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("models--"))
                .map(|n| n.replacen("--", "/", 1))
            else {
                continue;
            };
            let Ok(snaps) = std::fs::read_dir(dir.join("snapshots")) else {
                continue;
            };
            for snap in snaps.filter_map(|e| e.ok().map(|e| e.path())) {
                for f in local_files(&snap) {
                    if f.name.to_ascii_lowercase().ends_with(".gguf") {
                        out.push((name.clone(), f.name.clone(), snap.join(&f.name)));
                    }
                }
            }
        }
        out
    }

    /// Remove a pulled model: its files for `r.quant`, or the whole repository without one.
    /// Returns the bytes freed.
    pub fn remove(&self, r: &HubRef) -> Result<u64> {
        let dir = self.repo_dir(&r.repo);
        if !dir.is_dir() {
            bail!(
                "{} is not in the cache ({})",
                r.repo,
                self.cache.path().display()
            );
        }
        let Some(quant) = &r.quant else {
            let freed = dir_size(&dir);
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot remove {}", dir.display()))?;
            return Ok(freed);
        };
        let mut freed = 0;
        let mut found = false;
        for snap in std::fs::read_dir(dir.join("snapshots"))?.filter_map(|e| e.ok()) {
            let snap = snap.path();
            let files = local_files(&snap);
            let Ok(sel) = select(&files, Some(quant)) else {
                continue;
            };
            found = true;
            for f in &sel.model {
                freed += remove_download(&snap.join(&f.name));
            }
            // The projector goes with the last model of the snapshot.
            let models_left = local_files(&snap)
                .iter()
                .any(|f| select::is_gguf(&f.name) && !select::is_projector(&f.name));
            if !models_left {
                if let Some(m) = &sel.mmproj {
                    freed += remove_download(&snap.join(&m.name));
                }
            }
        }
        if !found {
            bail!("{r} is not in the cache");
        }
        Ok(freed)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// The files under a snapshot directory, named relative to it.
fn local_files(snapshot: &Path) -> Vec<RemoteFile> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<RemoteFile>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.filter_map(|e| e.ok()) {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if let (Ok(rel), Ok(meta)) = (p.strip_prefix(root), std::fs::metadata(&p)) {
                out.push(RemoteFile {
                    name: rel.to_string_lossy().into_owned(),
                    size: Some(meta.len()),
                    sha256: None,
                });
            }
        }
    }
    let mut out = Vec::new();
    walk(snapshot, snapshot, &mut out);
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// Delete a snapshot entry and the blob it points to; the bytes freed.
fn remove_download(pointer: &Path) -> u64 {
    let blob = std::fs::canonicalize(pointer).ok();
    let size = std::fs::metadata(pointer).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(pointer);
    if let Some(b) = blob.filter(|b| b != pointer) {
        let _ = std::fs::remove_file(b);
    }
    size
}

/// Check a downloaded file against the listing's size and SHA-256.
async fn verify(path: &Path, f: &RemoteFile) -> Result<()> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("{} vanished after its download", path.display()))?
        .len();
    if let Some(size) = f.size {
        if len != size {
            bail!(
                "{}: the download has {len} bytes, the repository lists {size}; it was deleted, \
                 pull again",
                f.name
            );
        }
    }
    let Some(want) = f.sha256.clone() else {
        return Ok(());
    };
    let p = path.to_owned();
    let got = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        let mut file = std::fs::File::open(p)?;
        let mut h = Sha256::new();
        std::io::copy(&mut file, &mut h)?;
        Ok(hex::encode(h.finalize()))
    })
    .await??;
    if got != want {
        bail!(
            "{}: checksum mismatch (the repository lists sha256 {want}, the download has {got}); \
             it was deleted",
            f.name
        );
    }
    Ok(())
}
