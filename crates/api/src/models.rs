//! Model ids: served ids, plus an alias table so the ids the docs use (`gemini-3-flash-preview`,
//! any `gemini-*`) reach a local model.

use localgem_core::ModelInfo;

use crate::error::ApiError;

/// Alias patterns, tried in order. A pattern ending in `*` matches by prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelAliases {
    /// `(pattern, target)` pairs; the target `default` means the default model.
    pub entries: Vec<(String, String)>,
    /// The default model's id.
    pub default_model: String,
}

impl Default for ModelAliases {
    fn default() -> Self {
        ModelAliases {
            entries: vec![("gemini-*".into(), "default".into())],
            default_model: String::new(),
        }
    }
}

impl ModelAliases {
    /// Parse `PATTERN=TARGET` entries (comma-separated lists allowed).
    ///
    /// # Errors
    /// An entry without `=`.
    pub fn parse(specs: &[String], default_model: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for spec in specs.iter().flat_map(|s| s.split(',')) {
            let spec = spec.trim();
            if spec.is_empty() {
                continue;
            }
            let (p, t) = spec
                .split_once('=')
                .ok_or_else(|| format!("alias {spec:?} is not PATTERN=MODEL"))?;
            entries.push((p.trim().to_owned(), t.trim().to_owned()));
        }
        Ok(ModelAliases {
            entries,
            default_model: default_model.to_owned(),
        })
    }

    /// Resolve a requested id to a served model id.
    ///
    /// # Errors
    /// 404 naming the available models.
    pub fn resolve(&self, requested: &str, served: &[ModelInfo]) -> Result<String, ApiError> {
        let requested = requested.trim_start_matches("models/");
        if served.iter().any(|m| m.id == requested) {
            return Ok(requested.to_owned());
        }
        for (pattern, target) in &self.entries {
            let hit = match pattern.strip_suffix('*') {
                Some(prefix) => requested.starts_with(prefix),
                None => requested == pattern,
            };
            if hit {
                let target = if target == "default" {
                    &self.default_model
                } else {
                    target
                };
                if served.iter().any(|m| &m.id == target) {
                    return Ok(target.clone());
                }
            }
        }
        let names: Vec<&str> = served.iter().map(|m| m.id.as_str()).collect();
        Err(ApiError::not_found(format!(
            "model {requested:?} is not served here; available models: {} (and any id matching: {})",
            names.join(", "),
            self.entries
                .iter()
                .map(|(p, _)| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served() -> Vec<ModelInfo> {
        ["smollm2-135m", "gemma-3-270m"]
            .iter()
            .map(|id| ModelInfo {
                id: (*id).into(),
                display_name: (*id).into(),
                context_tokens: 4096,
                ready: true,
                vision: false,
                audio_sample_rate: None,
                default_max_output_tokens: None,
            })
            .collect()
    }

    #[test]
    fn resolves_ids_and_aliases() {
        let a = ModelAliases::parse(
            &["gemini-*=default,gemma-4-*=gemma-3-270m".into()],
            "smollm2-135m",
        )
        .unwrap();
        assert_eq!(
            a.resolve("gemini-3-flash-preview", &served()).unwrap(),
            "smollm2-135m"
        );
        assert_eq!(
            a.resolve("models/gemini-2.5-pro", &served()).unwrap(),
            "smollm2-135m"
        );
        assert_eq!(
            a.resolve("gemma-3-270m", &served()).unwrap(),
            "gemma-3-270m"
        );
        assert_eq!(
            a.resolve("gemma-4-31b-it", &served()).unwrap(),
            "gemma-3-270m"
        );
        let e = a.resolve("gpt-4", &served()).unwrap_err();
        assert_eq!(e.status.as_u16(), 404);
        assert!(
            e.message.contains("smollm2-135m, gemma-3-270m"),
            "{}",
            e.message
        );
    }

    #[test]
    fn bad_alias_spec() {
        assert!(ModelAliases::parse(&["nonsense".into()], "x").is_err());
    }
}
