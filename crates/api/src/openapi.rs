//! The OpenAPI 3.1 document of this server, generated from the wire types (`utoipa`) and
//! served at `/openapi.json`. The path items below only describe routes; the handlers live in
//! [`crate::handlers`], [`crate::classic`] and [`crate::files`].
#![allow(dead_code)] // the path functions exist for their annotations

use localgem_wire::classic::{
    CountTokensRequest, CountTokensResponse, GenerateContentRequest, GenerateContentResponse,
};
use localgem_wire::{
    CreateInteractionRequest, ErrorEnvelope, FileList, GoogleError, Interaction, Model, ModelList,
    UploadResponse,
};
use utoipa::{OpenApi, ToSchema};

/// One server-sent event, as a stream's `text/event-stream` body carries it: the event's
/// type (`event:`, Interactions streams only) and its JSON (`data:`).
#[derive(ToSchema)]
struct SseEvent {
    /// The `event:` line.
    event: Option<String>,
    /// The `data:` line: a JSON document (`[DONE]` at the end of an Interactions stream).
    data: String,
    /// The `id:` line.
    id: Option<String>,
}

/// Create an interaction: a JSON answer, or with `stream: true` a server-sent event stream
/// (`interaction.created`, `interaction.status_update`, `step.start`/`step.delta`/`step.stop`,
/// `interaction.completed`, then `[DONE]`).
#[utoipa::path(post, path = "/{v}/interactions", tag = "interactions",
    params(("v" = String, Path, description = "API version, e.g. v1 or v1beta")),
    request_body = CreateInteractionRequest,
    responses(
        (status = 200, description = "The interaction (or its event stream)",
         content((Interaction = "application/json"), (SseEvent = "text/event-stream"))),
        (status = 400, description = "Invalid request", body = ErrorEnvelope),
        (status = 401, description = "No API key", body = ErrorEnvelope),
        (status = 403, description = "Unknown API key", body = ErrorEnvelope),
        (status = 404, description = "Unknown model or previous interaction", body = ErrorEnvelope),
        (status = 408, description = "The body stopped arriving", body = ErrorEnvelope),
        (status = 413, description = "Body too large", body = ErrorEnvelope),
        (status = 429, description = "Busy", body = ErrorEnvelope),
        (status = 503, description = "Model loading, storage full, or too many connections", body = ErrorEnvelope),
    ))]
fn create() {}

/// Get an interaction (its input and output steps), or with `stream=true` attach to its
/// event stream; `last_event_id` resumes after that event.
#[utoipa::path(get, path = "/{v}/interactions/{id}", tag = "interactions",
    params(("v" = String, Path), ("id" = String, Path),
           ("stream" = Option<bool>, Query), ("last_event_id" = Option<String>, Query),
           ("include_input" = Option<bool>, Query)),
    responses(
        (status = 200, description = "The interaction (or its event stream)",
         content((Interaction = "application/json"), (SseEvent = "text/event-stream"))),
        (status = 400, description = "Invalid query", body = ErrorEnvelope),
        (status = 404, description = "Not found", body = ErrorEnvelope),
    ))]
fn get_interaction() {}

/// Delete an interaction (stopping it if it runs).
#[utoipa::path(delete, path = "/{v}/interactions/{id}", tag = "interactions",
    params(("v" = String, Path), ("id" = String, Path)),
    responses(
        (status = 200, description = "Deleted: `{}`", body = Object),
        (status = 404, description = "Not found", body = ErrorEnvelope),
    ))]
fn delete_interaction() {}

/// Cancel a running interaction; a finished one is returned unchanged.
#[utoipa::path(post, path = "/{v}/interactions/{id}/cancel", tag = "interactions",
    params(("v" = String, Path), ("id" = String, Path)),
    responses(
        (status = 200, description = "The interaction", body = Interaction),
        (status = 404, description = "Not found", body = ErrorEnvelope),
    ))]
fn cancel() {}

/// The served models.
#[utoipa::path(get, path = "/{v}/models", tag = "models",
    params(("v" = String, Path)),
    responses((status = 200, description = "Models", body = ModelList)))]
fn list_models() {}

/// One served model (aliases resolve).
#[utoipa::path(get, path = "/{v}/models/{id}", tag = "models",
    params(("v" = String, Path), ("id" = String, Path)),
    responses(
        (status = 200, description = "The model", body = Model),
        (status = 404, description = "Not served", body = ErrorEnvelope),
    ))]
fn get_model() {}

/// Generate an answer (the classic API). `model` is a served id or an alias (`gemini-*`).
#[utoipa::path(post, path = "/{v}/models/{model}:generateContent", tag = "generateContent",
    params(("v" = String, Path, description = "API version, e.g. v1 or v1beta"),
           ("model" = String, Path, pattern = "^gemini-[a-z0-9.-]{1,24}$",
            description = "A served model id or an alias, e.g. gemini-2.5-flash")),
    request_body = GenerateContentRequest,
    responses(
        (status = 200, description = "The answer", body = GenerateContentResponse),
        (status = 400, description = "Invalid request", body = GoogleError),
        (status = 401, description = "No API key", body = GoogleError),
        (status = 403, description = "Unknown API key", body = GoogleError),
        (status = 404, description = "Unknown model or method", body = GoogleError),
        (status = 408, description = "The body stopped arriving", body = GoogleError),
        (status = 413, description = "Body too large", body = GoogleError),
        (status = 429, description = "Busy", body = GoogleError),
        (status = 503, description = "Model loading or engine lost", body = GoogleError),
    ))]
fn generate_content() {}

/// Stream an answer: with `alt=sse` server-sent events (`data: {GenerateContentResponse}`),
/// else one JSON array of them, written as they are made. The last chunk has the finish
/// reason and usage; a failure after the start is a chunk `{"error": …}`.
#[utoipa::path(post, path = "/{v}/models/{model}:streamGenerateContent", tag = "generateContent",
    params(("v" = String, Path),
           ("model" = String, Path, pattern = "^gemini-[a-z0-9.-]{1,24}$"),
           ("alt" = Option<String>, Query, description = "`sse` for server-sent events")),
    request_body = GenerateContentRequest,
    responses(
        (status = 200, description = "The chunks",
         content((Vec<GenerateContentResponse> = "application/json"), (SseEvent = "text/event-stream"))),
        (status = 400, description = "Invalid request", body = GoogleError),
        (status = 401, description = "No API key", body = GoogleError),
        (status = 403, description = "Unknown API key", body = GoogleError),
        (status = 404, description = "Unknown model or method", body = GoogleError),
        (status = 408, description = "The body stopped arriving", body = GoogleError),
        (status = 413, description = "Body too large", body = GoogleError),
        (status = 429, description = "Busy", body = GoogleError),
        (status = 503, description = "Model loading", body = GoogleError),
    ))]
fn stream_generate_content() {}

/// Count a prompt's tokens as `generateContent` would send it to the model.
#[utoipa::path(post, path = "/{v}/models/{model}:countTokens", tag = "generateContent",
    params(("v" = String, Path),
           ("model" = String, Path, pattern = "^gemini-[a-z0-9.-]{1,24}$")),
    request_body = CountTokensRequest,
    responses(
        (status = 200, description = "The count", body = CountTokensResponse),
        (status = 400, description = "Invalid request", body = GoogleError),
        (status = 401, description = "No API key", body = GoogleError),
        (status = 403, description = "Unknown API key", body = GoogleError),
        (status = 404, description = "Unknown model", body = GoogleError),
        (status = 408, description = "The body stopped arriving", body = GoogleError),
        (status = 413, description = "Body too large", body = GoogleError),
        (status = 503, description = "Model loading", body = GoogleError),
    ))]
fn count_tokens() {}

/// Start a resumable upload (`X-Goog-Upload-Command: start`), or with `upload_id` send a
/// chunk (`upload`, `upload, finalize`, `query`, `cancel`).
#[utoipa::path(post, path = "/upload/{v}/files", tag = "files",
    params(("v" = String, Path), ("upload_id" = Option<String>, Query),
           ("upload_protocol" = Option<String>, Query)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Started (see `x-goog-upload-url`), chunk taken, or the final file",
         body = UploadResponse),
        (status = 400, description = "Bad upload", body = GoogleError),
        (status = 404, description = "Unknown upload", body = GoogleError),
        (status = 409, description = "The key already has a file or an upload by that name", body = GoogleError),
        (status = 413, description = "Too large", body = GoogleError),
        (status = 503, description = "The disk is full (the upload is kept)", body = GoogleError),
    ))]
fn upload() {}

/// List files, newest first.
#[utoipa::path(get, path = "/{v}/files", tag = "files",
    params(("v" = String, Path), ("pageSize" = Option<u32>, Query), ("pageToken" = Option<String>, Query)),
    responses(
        (status = 200, description = "A page of files", body = FileList),
        (status = 400, description = "Bad page token", body = GoogleError),
    ))]
fn list_files() {}

/// Get a file.
#[utoipa::path(get, path = "/{v}/files/{name}", tag = "files",
    params(("v" = String, Path), ("name" = String, Path)),
    responses(
        (status = 200, description = "The file", body = localgem_wire::File),
        (status = 404, description = "Not found", body = GoogleError),
    ))]
fn get_file() {}

/// Delete a file.
#[utoipa::path(delete, path = "/{v}/files/{name}", tag = "files",
    params(("v" = String, Path), ("name" = String, Path)),
    responses(
        (status = 200, description = "Deleted: `{}`", body = Object),
        (status = 404, description = "Not found", body = GoogleError),
    ))]
fn delete_file() {}

/// Readiness: 200 once the default model is loaded, 503 before.
#[utoipa::path(get, path = "/healthz", tag = "server",
    responses((status = 200, description = "Ready", body = Object),
              (status = 503, description = "Loading", body = Object)))]
fn healthz() {}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "localgem", description = "The Gemini Interactions API, the classic generateContent API and the Files API over local models"),
    paths(create, get_interaction, delete_interaction, cancel, list_models, get_model,
          generate_content, stream_generate_content, count_tokens,
          upload, list_files, get_file, delete_file, healthz),
    components(schemas(CreateInteractionRequest, Interaction, ErrorEnvelope, ModelList, Model,
                       localgem_wire::File, FileList, UploadResponse, GoogleError,
                       GenerateContentRequest, GenerateContentResponse, CountTokensRequest,
                       CountTokensResponse, SseEvent)),
    modifiers(&ApiKey),
    security(("api_key" = []), ("bearer" = []))
)]
pub struct ApiDoc;

struct ApiKey;

impl utoipa::Modify for ApiKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey as Key, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(Key::Header(ApiKeyValue::new("x-goog-api-key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `GET /openapi.json`.
pub async fn serve() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_describes_every_route_and_the_wire_types() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        for path in [
            "/{v}/interactions",
            "/{v}/interactions/{id}",
            "/{v}/interactions/{id}/cancel",
            "/{v}/models",
            "/{v}/models/{id}",
            "/upload/{v}/files",
            "/{v}/files",
            "/{v}/files/{name}",
            "/{v}/models/{model}:generateContent",
            "/{v}/models/{model}:streamGenerateContent",
            "/{v}/models/{model}:countTokens",
            "/healthz",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path} missing");
        }
        let schemas = &doc["components"]["schemas"];
        for s in [
            "CreateInteractionRequest",
            "Interaction",
            "Step",
            "Content",
            "Usage",
            "File",
            "GenerateContentRequest",
            "GenerateContentResponse",
            "Part",
            "CountTokensRequest",
        ] {
            assert!(schemas.get(s).is_some(), "schema {s} missing");
        }
        // The request schema is the real one: it names the fields and forbids others.
        let req = &schemas["CreateInteractionRequest"];
        assert!(req["properties"].get("previous_interaction_id").is_some());
        assert_eq!(req["additionalProperties"], false, "{req}");
    }
}
