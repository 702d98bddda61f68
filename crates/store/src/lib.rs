//! Storage backends for localgem's [`Store`] trait.
//!
//! [`SqliteStore`] is the default: one file under the data dir, WAL journal, `synchronous=FULL`
//! so an answered interaction survives a `kill -9` or power loss, migrations embedded in the
//! binary. [`PostgresStore`] keeps the same records in a PostgreSQL database that several
//! replicas share (leases, event logs and forget notes let them cooperate); its own migrations
//! (`migrations-pg/`) are embedded too, and a database that cannot be reached is reported as
//! [`StoreError::Unavailable`](localgem_core::StoreError::Unavailable) within seconds.
//! [`MemoryStore`] serves fast tests. [`suite`] is one behavioural test suite that all three
//! must pass.
//!
//! [`Store`]: localgem_core::Store

mod memory;
mod postgres;
mod record;
mod sqlite;

pub use memory::MemoryStore;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

#[doc(hidden)]
pub mod suite;
