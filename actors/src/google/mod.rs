//! Google Play: Real-Time Developer Notifications pulled from Pub/Sub, checked against the
//! Android Publisher API and turned into payment changes.
//!
//! The pure parts (message and response parsing, durations, the notification → store mapping)
//! live here; [`crate::google_subscriber`] runs them against the network and the database.

pub mod api;
pub mod auth;
pub mod duration;
pub mod mapping;
pub mod publisher;
pub mod rtdn;
pub mod text;
