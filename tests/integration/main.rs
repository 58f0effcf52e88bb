//! Integration tests: the real app on 127.0.0.1:0 with a temporary database, driven over HTTP.

mod api_examples;
mod apple;
mod apple_catchup;
mod bad_input;
mod client;
mod concurrency;
mod fixture_db;
mod harness;
mod http_rules;
mod onion;
mod onion_client;
mod process;
mod scenarios;
