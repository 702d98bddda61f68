//! Several engines behind one: each model is served by the engine that lists it (the
//! in-process llama.cpp engine for local GGUFs, a remote one for models served elsewhere).

use std::sync::Arc;

use async_trait::async_trait;

use crate::{Engine, EngineError, GenerateRequest, Generation, ModelInfo, UpstreamHealth};

/// Engines serving disjoint sets of models, as one [`Engine`].
pub struct EngineSet {
    engines: Vec<Arc<dyn Engine>>,
    default_model: String,
}

impl EngineSet {
    /// `engines`, of which one serves `default_model` (its readiness is the set's).
    pub fn new(engines: Vec<Arc<dyn Engine>>, default_model: impl Into<String>) -> Self {
        EngineSet {
            engines,
            default_model: default_model.into(),
        }
    }

    fn unknown(&self, model: String) -> EngineError {
        EngineError::UnknownModel {
            model,
            available: self
                .models()
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    fn serving(&self, model: &str) -> Option<&Arc<dyn Engine>> {
        self.engines
            .iter()
            .find(|e| e.models().iter().any(|m| m.id == model))
    }
}

#[async_trait]
impl Engine for EngineSet {
    fn models(&self) -> Vec<ModelInfo> {
        self.engines.iter().flat_map(|e| e.models()).collect()
    }

    fn ready(&self) -> bool {
        self.models()
            .iter()
            .any(|m| m.id == self.default_model && m.ready)
    }

    async fn generate(&self, request: GenerateRequest) -> Result<Generation, EngineError> {
        match self.serving(&request.model) {
            Some(e) => e.generate(request).await,
            None => Err(self.unknown(request.model)),
        }
    }

    async fn count_tokens(&self, request: GenerateRequest) -> Result<u64, EngineError> {
        match self.serving(&request.model) {
            Some(e) => e.count_tokens(request).await,
            None => Err(self.unknown(request.model)),
        }
    }

    async fn forget(&self, scope: &str) {
        for e in &self.engines {
            e.forget(scope).await;
        }
    }

    fn upstreams(&self) -> Vec<UpstreamHealth> {
        self.engines.iter().flat_map(|e| e.upstreams()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChatMessage, EngineEvent, Role};
    use tokio::sync::mpsc;

    struct One(&'static str, bool);

    #[async_trait]
    impl Engine for One {
        fn models(&self) -> Vec<ModelInfo> {
            vec![ModelInfo {
                id: self.0.into(),
                display_name: self.0.into(),
                context_tokens: 100,
                ready: self.1,
                vision: false,
                audio_sample_rate: None,
                default_max_output_tokens: None,
            }]
        }
        fn ready(&self) -> bool {
            self.1
        }
        async fn generate(&self, _: GenerateRequest) -> Result<Generation, EngineError> {
            let (tx, events) = mpsc::unbounded_channel();
            tx.send(EngineEvent::Text(self.0.into())).unwrap();
            Ok(Generation {
                prompt_tokens: 1,
                media_tokens: crate::MediaTokens::default(),
                events,
            })
        }
    }

    #[tokio::test]
    async fn each_model_goes_to_its_engine() {
        let set = EngineSet::new(
            vec![Arc::new(One("a", true)), Arc::new(One("b", false))],
            "b",
        );
        assert_eq!(set.models().len(), 2);
        assert!(!set.ready(), "the default model's engine is not ready");
        let msg = vec![ChatMessage::new(Role::User, "hi")];
        for id in ["a", "b"] {
            let mut g = set
                .generate(GenerateRequest::text(id, msg.clone()))
                .await
                .unwrap();
            assert_eq!(g.events.recv().await, Some(EngineEvent::Text(id.into())));
        }
        let err = set
            .generate(GenerateRequest::text("c", msg))
            .await
            .unwrap_err();
        assert!(matches!(err, EngineError::UnknownModel { available, .. } if available == "a, b"));
        assert!(EngineSet::new(vec![Arc::new(One("a", true))], "a").ready());
    }
}
