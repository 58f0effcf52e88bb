//! `POST /get_pro_revocations`: the revocation list, whole, whenever the caller's ticket is
//! behind the server's. Unauthenticated.

use pro_engine::db_reader::GetRevocations;
use pro_engine::domain::time::REVOCATION_RETRY_IN_S;
use serde::Serialize;
use tracing::error;

use super::AppState;
use super::json::{Envelope, Fields, STATUS_GENERIC_ERROR, STATUS_PARSE_ERROR, parse_body};

#[derive(Serialize)]
struct Item {
    effective_unix_ts_ms: i64,
    expiry_unix_ts_ms: i64,
    gen_index_hash: String,
}

#[derive(Serialize)]
struct Revocations {
    items: Vec<Item>,
    retry_in_s: i64,
    ticket: i64,
    version: i64,
}

pub async fn handle(state: &AppState, body: &[u8]) -> Envelope {
    let req = match parse_body(body) {
        Ok(m) => m,
        Err(e) => return Envelope::err1(STATUS_PARSE_ERROR, e),
    };
    let f = Fields::new(Some(&req));
    let mut errors = Vec::new();
    let version = f.int("version", &mut errors);
    let ticket = f.int("ticket", &mut errors);
    let (Some(version), Some(ticket)) = (version, ticket) else {
        return Envelope::err(STATUS_PARSE_ERROR, errors);
    };
    if version.value != 0 {
        return Envelope::err1(STATUS_PARSE_ERROR, format!("Unrecognised version passed: {version}"));
    }
    // Any integer is a valid ticket; a saturated huge one still compares correctly.
    match state.reader.read(GetRevocations { client_ticket: ticket.value }).await {
        Ok((server_ticket, rows)) => Envelope::ok(&Revocations {
            items: rows
                .iter()
                .map(|r| {
                    let item = r.publish(&state.gen_index_salt);
                    Item {
                        effective_unix_ts_ms: item.effective_unix_ts_ms,
                        expiry_unix_ts_ms: item.expiry_unix_ts_ms,
                        gen_index_hash: hex::encode(item.gen_index_hash),
                    }
                })
                .collect(),
            retry_in_s: REVOCATION_RETRY_IN_S,
            ticket: server_ticket,
            version: 0,
        }),
        Err(e) => {
            error!("Reading the revocation list failed: {e}");
            Envelope::err1(STATUS_GENERIC_ERROR, format!("Failed to read the revocation list, try again: {e}"))
        }
    }
}
