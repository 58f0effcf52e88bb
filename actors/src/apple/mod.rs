//! Apple App Store Server Notifications V2, as plain functions: checking Apple's signed
//! payloads (`verify`), reading the notification (`notification`), turning it into store
//! changes (`dispatch`) and talking to the App Store Server API (`api`). The actor that owns
//! the verifier and the API client is `apple_receiver`.

pub mod api;
pub mod dispatch;
pub mod notification;
pub mod verify;

#[cfg(any(test, feature = "test-support"))]
pub mod testkit;

#[cfg(test)]
mod tests;
