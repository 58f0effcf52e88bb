//! Integration tests: the real app on 127.0.0.1:0 with a temporary database, driven over HTTP.

mod api_examples;
mod bad_input;
mod client;
mod concurrency;
mod fixture_db;
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
