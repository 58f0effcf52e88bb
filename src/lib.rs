//! The shell of the Session Pro backend: configuration, the HTTP surface and the daemon's
//! start-up. The engine (`pro_engine`) owns the data, the keys and the rules.

pub mod app;
pub mod cli;
pub mod config;
pub mod google;
pub mod http;
pub mod tables;
pub mod telemetry;
