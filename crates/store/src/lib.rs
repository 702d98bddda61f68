//! Storage backends for localgem's [`Store`] trait.
//!
//! [`SqliteStore`] is the default: one file under the data dir, WAL journal, `synchronous=FULL`
//! so an answered interaction survives a `kill -9` or power loss, migrations embedded in the
//! binary. [`MemoryStore`] serves fast tests. [`suite`] is one behavioural test suite that
//! both must pass.

mod memory;
mod sqlite;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

#[doc(hidden)]
pub mod suite;
