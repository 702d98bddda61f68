//! Inference engines that localgem drives over HTTP with token ids.
//!
//! localgem keeps the chat template, tokenizer, stop handling and output parsing; an
//! upstream engine (llama-server, vLLM, SGLang) gets a prompt of token ids and streams token
//! ids back. This crate holds what is engine-specific ([`dialect`]), which upstream takes a
//! request ([`router`], plain decisions with unit tests) and the HTTP side ([`pool`]). The
//! `Engine` built on it lives in `localgem-engine`, which has the tokenizer.

pub mod dialect;
pub mod pool;
pub mod router;
pub mod sse;

pub use dialect::{Chunk, Dialect, EndReason, Job};
pub use pool::{Pool, PoolConfig, StartError, Stream};

/// Parse an upstream list, `DIALECT+URL[,URL…]` (e.g.
/// `llama-server+http://10.0.0.5:8080,http://10.0.0.6:8080`).
///
/// # Errors
/// An unknown dialect, no URL, or a URL that is not `http://`.
pub fn parse_upstreams(spec: &str) -> Result<(Dialect, Vec<String>), String> {
    let (dialect, rest) = spec.split_once('+').ok_or_else(|| {
        format!("{spec:?}: use DIALECT+URL[,URL...], e.g. llama-server+http://127.0.0.1:8080")
    })?;
    let dialect = Dialect::parse(dialect.trim())
        .ok_or_else(|| format!("unknown engine {dialect:?}: use llama-server, vllm or sglang"))?;
    let urls: Vec<String> = rest
        .split(',')
        .map(|u| u.trim().trim_end_matches('/').to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    if urls.is_empty() {
        return Err(format!("{spec:?} names no upstream URL"));
    }
    for u in &urls {
        if !u.starts_with("http://") {
            return Err(format!(
                "upstream {u:?}: only http:// URLs are supported (this build has no TLS client)"
            ));
        }
    }
    Ok((dialect, urls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_lists_parse() {
        assert_eq!(
            parse_upstreams("llama-server+http://a:1, http://b:2/").unwrap(),
            (
                Dialect::LlamaServer,
                vec!["http://a:1".to_owned(), "http://b:2".to_owned()]
            )
        );
        assert_eq!(
            parse_upstreams("vllm+http://v:8000").unwrap().0,
            Dialect::Vllm
        );
        assert!(parse_upstreams("tgi+http://x")
            .unwrap_err()
            .contains("unknown engine"));
        assert!(parse_upstreams("sglang+")
            .unwrap_err()
            .contains("no upstream"));
        assert!(parse_upstreams("sglang+https://x")
            .unwrap_err()
            .contains("http://"));
        assert!(parse_upstreams("http://x").is_err());
    }
}
