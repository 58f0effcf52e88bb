//! Pure types and rules: no actors, no HTTP, no SQL.

pub mod backups;
pub mod hashes;
pub mod keys;
pub mod lookup;
pub mod pyfmt;
pub mod revocation;
pub mod time;
pub mod types;
