//! Integration tests: the real app on 127.0.0.1:0 with a temporary database, driven over HTTP.

mod api_examples;
mod apple;
mod apple_catchup;
mod bad_input;
mod cli;
mod client;
mod concurrency;
mod fake_google;
mod fixture_db;
mod google;
mod harness;
mod http_rules;
mod onion;
mod onion_client;
mod operations;
mod pg;
mod postgres;
mod process;
mod scenarios;
mod sink;
