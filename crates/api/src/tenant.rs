//! Who is asking: the API key, from `x-goog-api-key`, `?key=` or `Authorization: Bearer`,
//! reduced to a SHA-256 hash. Only the hash is ever stored.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// The tenant of a request: the hex SHA-256 of its API key (of "" when none was sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant(pub String);

impl Tenant {
    /// The tenant of a key.
    pub fn from_key(key: &str) -> Self {
        Tenant(hex::encode(Sha256::digest(key.as_bytes())))
    }
}

fn key_from_query(query: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "key").then(|| v.to_owned())
    })
}

/// The API key a request carries, if any.
pub fn api_key(parts: &Parts) -> Option<String> {
    if let Some(k) = parts
        .headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
    {
        return Some(k.trim().to_owned());
    }
    if let Some(k) = parts.uri.query().and_then(key_from_query) {
        return Some(k);
    }
    let auth = parts.headers.get("authorization")?.to_str().ok()?;
    auth.strip_prefix("Bearer ").map(|k| k.trim().to_owned())
}

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Tenant::from_key(&api_key(parts).unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(req: Request<()>) -> Parts {
        req.into_parts().0
    }

    #[test]
    fn key_sources() {
        let p = parts(
            Request::builder()
                .uri("/v1/x")
                .header("x-goog-api-key", "k1")
                .body(())
                .unwrap(),
        );
        assert_eq!(api_key(&p).as_deref(), Some("k1"));
        let p = parts(
            Request::builder()
                .uri("/v1/x?alt=sse&key=k2")
                .body(())
                .unwrap(),
        );
        assert_eq!(api_key(&p).as_deref(), Some("k2"));
        let p = parts(
            Request::builder()
                .uri("/v1/x")
                .header("authorization", "Bearer k3")
                .body(())
                .unwrap(),
        );
        assert_eq!(api_key(&p).as_deref(), Some("k3"));
        let p = parts(Request::builder().uri("/v1/x").body(()).unwrap());
        assert_eq!(api_key(&p), None);
    }

    #[test]
    fn tenants_differ_and_hide_the_key() {
        let a = Tenant::from_key("secret");
        assert_ne!(a, Tenant::from_key("other"));
        assert!(!a.0.contains("secret"));
        assert_eq!(a.0.len(), 64);
    }
}
