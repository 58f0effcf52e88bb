//! `POST /apple_notifications_v2`: App Store Server Notifications V2, posted by Apple itself
//! (or carried in an onion request). Registered only with `with_platform_apple`. The body goes
//! to the AppleReceiver; Apple gets an empty 200 when the notification was handled (or had
//! been before), and a 500 when it should try again later.

use actix_web::http::StatusCode;
use bytes::Bytes;
use pro_engine::apple_receiver::AppleNotification;
use tracing::error;

use super::{AppState, Reply};

/// The page upstream's Flask stack answers a failed request with, byte for byte.
pub const INTERNAL_ERROR_PAGE: &str = "<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n<h1>Internal Server Error</h1>\n<p>The server encountered an internal error and was unable to complete your request. Either the server is overloaded or there is an error in the application.</p>\n";

/// Tells Apple to retry.
pub fn retry_later() -> Reply {
    Reply::html(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_ERROR_PAGE, None)
}

pub async fn handle(state: &AppState, body: &[u8]) -> Reply {
    let Some(apple) = &state.apple else { return Reply::not_found() };
    match apple.send(AppleNotification { body: Bytes::copy_from_slice(body) }).await {
        Ok(outcome) if outcome.acknowledged() => Reply::html(StatusCode::OK, "", None),
        Ok(_) => retry_later(),
        Err(e) => {
            error!("Apple notification not processed: {e}");
            retry_later()
        }
    }
}
