//! localgem's HTTP layer: the Gemini Interactions API over axum.
//!
//! Layout: [`error`] (the error envelope), [`validate`] (wire → validated request),
//! [`run`] (one generation: engine events in, steps and store writes out), [`sse`] (stream
//! encoding), [`handlers`] (routes), [`models`] (model ids and aliases), [`tenant`] (API key →
//! tenant), [`classic`] (`generateContent` and friends on the same engine). The layer sees only the `Engine` and `Store` traits.

pub mod audio;
pub mod cache;
pub mod classic;
pub mod content;
pub mod error;
pub mod events;
pub mod files;
pub mod handlers;
pub mod live;
pub mod media;
pub mod models;
pub mod openapi;
pub mod playground;
pub mod remote;
pub mod run;
pub mod serve;
pub mod service;
pub mod signature;
pub mod sse;
pub mod tenant;
pub mod testing;
pub mod upload;
pub mod validate;
pub mod video;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use localgem_core::{Engine, Store};

pub use error::ApiError;
pub use models::ModelAliases;

/// HTTP-level settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Model ids that resolve to served models.
    pub aliases: ModelAliases,
    /// Request bodies above this many bytes get 413.
    pub max_body_bytes: usize,
    /// Output cap for every model when the request sets none (else the model's own default,
    /// else none: the answer runs until the model stops or the context is full).
    pub default_max_output_tokens: Option<u32>,
    /// Sampling when the request sets none.
    pub sampling: validate::SamplingDefaults,
    /// Signs thought signatures.
    pub signer: signature::Signer,
    /// Accepted API keys; `None` accepts any key (each its own tenant).
    pub keys: Option<tenant::KeySet>,
    /// Interactions one key may have running at once (0: no limit); past it, 429.
    pub max_running_per_key: usize,
    /// Bounds on audio and video parts.
    pub media: media::MediaLimits,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            aliases: ModelAliases::default(),
            max_body_bytes: 20 * 1024 * 1024,
            default_max_output_tokens: None,
            sampling: validate::SamplingDefaults::default(),
            signer: signature::Signer::random(),
            keys: None,
            max_running_per_key: 32,
            media: media::MediaLimits::default(),
        }
    }
}

/// Shared state of all handlers.
#[derive(Clone)]
pub struct AppState {
    /// Text generation.
    pub engine: Arc<dyn Engine>,
    /// Durable interactions.
    pub store: Arc<dyn Store>,
    /// Settings.
    pub config: Arc<ApiConfig>,
    /// This replica's runs: their logs, cancel signals, leases and per-key counts.
    pub runs: Arc<service::Runs>,
    /// Renders the Prometheus text exposition for `/metrics` (absent: 404).
    pub metrics: Option<MetricsRender>,
    /// The Files API's storage and uploads in progress (absent: its routes answer 404).
    pub files: Option<(files::FilesConfig, Arc<files::Uploads>)>,
    /// Decoded images, so that later turns of a conversation do not decode them again.
    pub images: Arc<media::ImageCache>,
    /// Decoded audio, likewise.
    pub audio: Arc<media::AudioCache>,
    /// Decoded videos, likewise.
    pub videos: Arc<media::VideoCache>,
    /// Documents' text, so that later turns do not extract it again.
    pub documents: Arc<media::TextCache>,
}

/// Renders metrics in the Prometheus text format.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

impl AppState {
    /// State over an engine and a store.
    pub fn new(engine: Arc<dyn Engine>, store: Arc<dyn Store>, config: ApiConfig) -> Self {
        AppState {
            engine,
            store,
            runs: Arc::new(service::Runs::new(
                service::ReplicaConfig::default(),
                config.max_running_per_key,
            )),
            config: Arc::new(config),
            metrics: None,
            files: None,
            images: Arc::default(),
            audio: Arc::default(),
            videos: Arc::default(),
            documents: Arc::default(),
        }
    }

    /// Serve the Files API, keeping files under `config.dir`.
    pub fn with_files(mut self, config: files::FilesConfig) -> Self {
        self.files = Some((config, Arc::default()));
        self
    }

    /// Take part in shared state as this replica (before serving anything).
    pub fn with_replica(mut self, replica: service::ReplicaConfig) -> Self {
        self.runs = Arc::new(service::Runs::new(replica, self.config.max_running_per_key));
        self
    }

    /// Serve `/metrics` with this renderer.
    pub fn with_metrics(mut self, render: MetricsRender) -> Self {
        self.metrics = Some(render);
        self
    }
}

/// The whole API as a router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(playground::index))
        .route("/playground/{file}", get(playground::file))
        .route("/healthz", get(handlers::healthz))
        .route("/metrics", get(handlers::metrics))
        .route("/openapi.json", get(openapi::serve))
        .route("/{v}/interactions", post(handlers::create))
        .route(
            "/{v}/interactions/{id}",
            get(handlers::get_interaction).delete(handlers::delete_interaction),
        )
        .route("/{v}/interactions/{id}/cancel", post(handlers::cancel))
        .route("/upload/{v}/files", post(files::upload))
        .route("/{v}/files", get(files::list_files))
        .route(
            "/{v}/files/{name}",
            get(files::get_file).delete(files::delete_file),
        )
        .route("/{v}/models", get(handlers::list_models))
        .route(
            "/{v}/models/{id}",
            get(handlers::get_model).post(classic::dispatch),
        )
        .fallback(handlers::not_found)
        .layer(axum::middleware::map_response(error::envelope_plain_errors))
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(
            tower_http::trace::TraceLayer::new_for_http().on_failure(
                tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG),
            ),
        )
        .with_state(state)
}
