//! localgem's domain: what the HTTP layer hands the engine, what the engine streams back, and
//! what the store keeps. No HTTP, SQL or llama.cpp types appear here; `api` depends on these
//! traits, and `engine` and `store` implement them.

pub mod engine;
pub mod set;
pub mod store;

pub use engine::*;
pub use set::EngineSet;
pub use store::*;
