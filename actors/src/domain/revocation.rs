//! Revocation rules: how long a revoked generation must stay listed, and how a stored row is
//! published.

use super::hashes::gen_index_hash;
use super::time::{MONTH_MS, REVOCATION_EFFECTIVE_DELAY_MS, TIMESTAMP_TOLERANCE_MS, round_up_to_day};

/// One row of the `revocations` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevocationRow {
    pub gen_index: u64,
    pub creation_unix_ts_ms: i64,
    pub expiry_unix_ts_ms: i64,
}

/// One item of the published revocation list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationItem {
    pub gen_index_hash: [u8; 32],
    pub expiry_unix_ts_ms: i64,
    pub effective_unix_ts_ms: i64,
}

impl RevocationRow {
    pub fn publish(&self, salt: &[u8; 16]) -> RevocationItem {
        let expiry = round_up_to_day(self.expiry_unix_ts_ms);
        RevocationItem {
            gen_index_hash: gen_index_hash(self.gen_index, salt),
            expiry_unix_ts_ms: expiry,
            effective_unix_ts_ms: self.creation_unix_ts_ms.saturating_add(REVOCATION_EFFECTIVE_DELAY_MS).min(expiry),
        }
    }
}

/// The latest expiry any proof issued under a user's current generation can carry, when that
/// generation is revoked at `revoke_ts` (processed at `now`).
///
/// Proofs are capped at the midnight after "request time + 30 days", and a request is at most
/// the timestamp tolerance ahead of the server; they are also capped by the entitlement, which
/// was at most the larger of the user's cached deadline and the revoked payment's own deadline
/// (grace included).
pub fn latest_possible_proof_expiry(
    now: i64,
    revoke_ts: i64,
    user_expiry_before: i64,
    payment_expiry: i64,
    payment_grace: i64,
) -> i64 {
    let by_time = round_up_to_day(now.max(revoke_ts).saturating_add(MONTH_MS + TIMESTAMP_TOLERANCE_MS));
    let by_entitlement = round_up_to_day(user_expiry_before.max(payment_expiry.saturating_add(payment_grace)));
    by_time.min(by_entitlement)
}

/// Whether revoking at `revoke_ts` needs a list entry: only when some proof could still be
/// valid after the end of the revoke day (earlier proofs expire on their own).
pub fn needs_list_entry(revoke_ts: i64, latest_proof_expiry: i64) -> bool {
    latest_proof_expiry > round_up_to_day(revoke_ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_rounds_and_takes_the_earlier_effective_time() {
        // api.md §5.3.3 example, salt 0x11.
        let salt = [0x11; 16];
        let a = RevocationRow { gen_index: 1, creation_unix_ts_ms: 1762407217143, expiry_unix_ts_ms: 1794009600000 }
            .publish(&salt);
        assert_eq!(a.effective_unix_ts_ms, 1762493617143);
        assert_eq!(a.expiry_unix_ts_ms, 1794009600000);
        assert_eq!(hex::encode(a.gen_index_hash), "404d9f58db1aa40dc4fa1a11e15a9b6e6e5ca647e5f17ef0eee0372429bab2b9");
        let b = RevocationRow { gen_index: 2, creation_unix_ts_ms: 1762407218143, expiry_unix_ts_ms: 1762407218143 }
            .publish(&salt);
        assert_eq!((b.expiry_unix_ts_ms, b.effective_unix_ts_ms), (1762473600000, 1762473600000));
    }

    #[test]
    fn refund_revocation_outlives_issued_proofs() {
        // backend.md §21.4/§21.5: refund at T_V of a payment whose proof runs to 1772456352345.
        let t_v = 1770000000000;
        let bound = latest_possible_proof_expiry(t_v, t_v, 1772456352345, 1772452752345, 3_600_000);
        assert!(bound >= 1772456352345);
        assert!(needs_list_entry(t_v, bound));
    }

    #[test]
    fn payment_ending_within_the_revoke_day_needs_no_entry() {
        // scenarios.md REV-4: expiry 1759728318000 + 1 h grace, revoked at 1759727790000.
        let bound = latest_possible_proof_expiry(1759727790000, 1759727790000, 1759731918000, 1759728318000, 3_600_000);
        assert_eq!(bound, 1759795200000);
        assert!(!needs_list_entry(1759727790000, bound));
    }
}
