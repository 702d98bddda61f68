//! The playground: a single page served at `GET /` from assets embedded in the binary (no
//! CDN; it works offline). It talks to this server's public API only (`/v1beta/models`,
//! `/v1beta/interactions`, the Files API), exactly as any client does.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("index.html");
const APP: &str = include_str!("app.js");
const STYLE: &str = include_str!("style.css");

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // The page loads nothing from elsewhere, and says so to the browser.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'",
        ),
    );
    resp
}

/// `GET /`: the page.
pub async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

/// `GET /playground/{file}`: its script and style sheet.
pub async fn file(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "app.js" => asset(APP, "text/javascript; charset=utf-8"),
        "style.css" => asset(STYLE, "text/css; charset=utf-8"),
        _ => crate::error::ApiError::not_found(format!("no playground file {name:?}"))
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_assets_are_small_and_load_nothing_from_elsewhere() {
        let total = INDEX.len() + APP.len() + STYLE.len();
        assert!(total < 200 * 1024, "{total} bytes");
        for text in [INDEX, APP, STYLE] {
            for needle in ["http://", "https://", "//cdn", "@import"] {
                assert!(!text.contains(needle), "an asset refers to {needle}");
            }
        }
        assert!(INDEX.contains("/playground/app.js") && INDEX.contains("/playground/style.css"));
    }
}
