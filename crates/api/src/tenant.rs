//! Who is asking: the API key, from `x-goog-api-key`, `?key=` or `Authorization: Bearer`,
//! reduced to a SHA-256 hash. Only the hash is ever stored.
//!
//! With keys configured ([`KeySet`]), a request without a key is 401 and one with an unknown
//! key 403, before its handler runs (so it never reaches the engine or the store). Without
//! keys every key is its own tenant, and requests without one share the tenant of "".

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

/// `key` from a query string, URL-decoded like every other query parameter (`%2F` is `/`,
/// `+` is a space), so a key sent as `?key=` is the same key as in the header.
fn key_from_query(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "key")
        .map(|(_, v)| v.trim().to_owned())
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

/// The accepted API keys, kept as SHA-256 hashes only.
#[derive(Clone, Default)]
pub struct KeySet {
    /// The tenant of each key (its hash).
    tenants: Vec<Tenant>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeySet({} keys)", self.tenants.len())
    }
}

impl KeySet {
    /// A set of these keys (empty strings are ignored).
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        KeySet {
            tenants: keys
                .into_iter()
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(Tenant::from_key)
                .collect(),
        }
    }

    /// Keys from a file: one per line; blank lines and lines starting with `#` are skipped.
    pub fn parse_file(text: &str) -> Self {
        Self::new(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#')),
        )
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.tenants.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }

    /// Whether `tenant` is the tenant of one of the keys. Every stored hash is compared,
    /// each in constant time, so the answer takes as long whichever key matches.
    pub fn contains(&self, tenant: &Tenant) -> bool {
        let h = tenant.0.as_bytes();
        self.tenants.iter().fold(false, |found, t| {
            let t = t.0.as_bytes();
            let diff = t.iter().zip(h).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            found | (diff == 0 && t.len() == h.len())
        })
    }
}

impl FromRequestParts<crate::AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        st: &crate::AppState,
    ) -> Result<Self, Self::Rejection> {
        let key = api_key(parts).unwrap_or_default();
        let tenant = Tenant::from_key(&key);
        if let Some(keys) = &st.config.keys {
            if key.is_empty() {
                return Err(ApiError::unauthenticated(
                    "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
                ));
            }
            if !keys.contains(&tenant) {
                return Err(ApiError::permission_denied(
                    "API key not valid. Please pass a valid API key.",
                ));
            }
        }
        Ok(tenant)
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
        // A key with `/`, `+` and `=` arrives percent-encoded in the query.
        let p = parts(
            Request::builder()
                .uri("/v1/x?key=a%2Fb%2Bc%3D%3D&alt=sse")
                .body(())
                .unwrap(),
        );
        assert_eq!(api_key(&p).as_deref(), Some("a/b+c=="));
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
    fn key_sets() {
        let k = KeySet::parse_file("# keys\nalpha\n\n  beta  \n#gamma\n");
        assert_eq!(k.len(), 2);
        let has = |key: &str| k.contains(&Tenant::from_key(key));
        assert!(has("alpha") && has("beta"));
        assert!(!has("gamma") && !has("") && !has("alph"));
        assert!(KeySet::new(["", " "]).is_empty());
    }

    #[test]
    fn tenants_differ_and_hide_the_key() {
        let a = Tenant::from_key("secret");
        assert_ne!(a, Tenant::from_key("other"));
        assert!(!a.0.contains("secret"));
        assert_eq!(a.0.len(), 64);
    }
}
