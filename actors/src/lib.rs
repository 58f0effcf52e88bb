//! Engine of the Session Pro backend.
//!
//! `domain` holds the pure rules (hashes, signatures, time math, entitlement lookup); `store`
//! owns the database; the actor modules own one resource each and are reached only through
//! their handles.

pub mod apple;
pub mod apple_receiver;
pub mod clock;
pub mod db_reader;
pub mod db_writer;
pub mod domain;
pub mod engine;
pub mod expiry_pruner;
pub mod google;
pub mod google_subscriber;
pub mod handle;
pub mod health;
pub mod onion;
pub mod outbound;
pub mod proof_signer;
pub mod reports;
pub mod store;
pub mod webhook_logger;

pub use clock::{Clock, ManualClock, SystemClock};
