//! Entitlement ("lookup"): from a user's payments, the best deadline they are entitled to.
//!
//! Only the newest payment of each subscription lineage counts, and overlapping payments do
//! not stack: the winner is the payment with the latest raw expiry (the revoke time for a
//! revoked one), and the stored deadline is that payment's expiry plus its grace when it
//! auto-renews.

use super::types::{PaymentProvider, PaymentStatus};

/// How many of a user's newest redeemed/expired/revoked payments are considered.
pub const LOOKUP_LIMIT: usize = 20;

/// The columns of one payment that the lookup reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LookupRow {
    pub status: i64,
    pub provider: i64,
    pub google_order_id: String,
    pub apple_original_tx_id: String,
    pub rangeproof_order_id: String,
    pub expiry_unix_ts_ms: i64,
    pub grace_period_duration_ms: i64,
    pub auto_renewing: bool,
    pub revoked_unix_ts_ms: i64,
    pub refund_requested_unix_ts_ms: i64,
}

/// A candidate entitlement: deadline (grace included when renewing) and its payment's flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub expiry_unix_ts_ms: i64,
    pub grace_period_duration_ms: i64,
    pub auto_renewing: bool,
    pub refund_requested_unix_ts_ms: i64,
}

impl Summary {
    /// The deadline without the grace period.
    fn base(&self) -> i64 {
        self.expiry_unix_ts_ms - if self.auto_renewing { self.grace_period_duration_ms } else { 0 }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Entitlement {
    /// Best over every considered payment; this is what the `users` row caches.
    pub best: Summary,
    /// Best over Redeemed payments only; positive iff the user has a usable payment.
    pub redeemed: Summary,
}

/// Runs the lookup over rows given newest first (by row id).
pub fn compute_entitlement(rows: &[LookupRow]) -> Entitlement {
    let mut seen_google: Vec<&str> = Vec::new();
    let mut seen_apple: Vec<&str> = Vec::new();
    let mut seen_rangeproof: Vec<&str> = Vec::new();
    let mut out = Entitlement::default();

    for row in rows.iter().take(LOOKUP_LIMIT) {
        let fresh = match PaymentProvider::from_i64(row.provider) {
            // Renewals are `<order>..0`, `<order>..1`, …: skip a row whose base order id prefixes
            // an order id already taken (string-prefix test, as upstream does it).
            Some(PaymentProvider::Google) => {
                let prefix = row.google_order_id.split("..").next().unwrap_or("");
                if seen_google.iter().any(|seen| seen.starts_with(prefix)) {
                    false
                } else {
                    seen_google.push(&row.google_order_id);
                    true
                }
            }
            Some(PaymentProvider::Apple) => remember(&mut seen_apple, &row.apple_original_tx_id),
            Some(PaymentProvider::Rangeproof) => remember(&mut seen_rangeproof, &row.rangeproof_order_id),
            _ => false,
        };
        if !fresh {
            continue;
        }

        let revoked = row.status == PaymentStatus::Revoked.as_i64();
        let (compare, effective) = if revoked {
            (row.revoked_unix_ts_ms, row.revoked_unix_ts_ms)
        } else {
            let grace = if row.auto_renewing { row.grace_period_duration_ms } else { 0 };
            (row.expiry_unix_ts_ms, row.expiry_unix_ts_ms.saturating_add(grace))
        };
        let candidate = Summary {
            expiry_unix_ts_ms: effective,
            grace_period_duration_ms: row.grace_period_duration_ms,
            // A revoked payment never renews, whatever an old row says.
            auto_renewing: row.auto_renewing && !revoked,
            refund_requested_unix_ts_ms: row.refund_requested_unix_ts_ms,
        };
        if row.status == PaymentStatus::Redeemed.as_i64() && compare > out.redeemed.base() {
            out.redeemed = candidate;
        }
        if compare > out.best.base() {
            out.best = candidate;
        }
    }
    out
}

fn remember<'a>(seen: &mut Vec<&'a str>, id: &'a str) -> bool {
    if seen.contains(&id) {
        false
    } else {
        seen.push(id);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn google(status: PaymentStatus, order: &str, expiry: i64, grace: i64, auto: bool) -> LookupRow {
        LookupRow {
            status: status.as_i64(),
            provider: 1,
            google_order_id: order.into(),
            expiry_unix_ts_ms: expiry,
            grace_period_duration_ms: grace,
            auto_renewing: auto,
            ..Default::default()
        }
    }

    #[test]
    fn no_rows_means_no_entitlement() {
        assert_eq!(compute_entitlement(&[]), Entitlement::default());
    }

    #[test]
    fn renewals_hide_older_cycles() {
        // Newest first: the renewal `..0` is taken, the original order is an older cycle.
        let rows = [
            google(PaymentStatus::Redeemed, "GPA.1..0", 2000, 10, true),
            google(PaymentStatus::Redeemed, "GPA.1", 5000, 10, true),
        ];
        let e = compute_entitlement(&rows);
        assert_eq!(e.best.expiry_unix_ts_ms, 2010);
        assert_eq!(e.redeemed.expiry_unix_ts_ms, 2010);
    }

    #[test]
    fn raw_expiry_decides_but_grace_is_stored() {
        // backend.md §10: a non-renewing payment ending 30 min later beats a renewing one whose
        // expiry + 1 h grace is later still.
        let e0 = 1_000_000_000;
        let rp = LookupRow {
            status: 2,
            provider: 3,
            rangeproof_order_id: "RP".into(),
            expiry_unix_ts_ms: e0 + 1_800_000,
            ..Default::default()
        };
        let g = google(PaymentStatus::Redeemed, "GPA.2", e0, 3_600_000, true);
        let e = compute_entitlement(&[rp, g]);
        assert_eq!(e.best.expiry_unix_ts_ms, e0 + 1_800_000);
        assert_eq!(e.best.grace_period_duration_ms, 0);
        assert!(!e.best.auto_renewing);
    }

    #[test]
    fn revoked_payment_counts_its_revoke_time_only_for_best() {
        let mut r = google(PaymentStatus::Revoked, "GPA.3", 9000, 100, false);
        r.revoked_unix_ts_ms = 4000;
        let e = compute_entitlement(&[r, google(PaymentStatus::Expired, "GPA.4", 3000, 0, false)]);
        assert_eq!(e.best.expiry_unix_ts_ms, 4000);
        assert_eq!(e.redeemed, Summary::default());
    }

    #[test]
    fn stacked_subscriptions_do_not_add_up() {
        let rows = [
            google(PaymentStatus::Redeemed, "GPA.B", 31, 0, true),
            google(PaymentStatus::Redeemed, "GPA.A", 30, 0, true),
        ];
        assert_eq!(compute_entitlement(&rows).best.expiry_unix_ts_ms, 31);
    }

    #[test]
    fn only_the_twenty_newest_rows_count() {
        let mut rows: Vec<LookupRow> =
            (0..20).map(|i| google(PaymentStatus::Expired, &format!("GPA.{i}"), 10, 0, false)).collect();
        rows.push(google(PaymentStatus::Redeemed, "GPA.old", 1_000, 0, false));
        assert_eq!(compute_entitlement(&rows).best.expiry_unix_ts_ms, 10);
        assert_eq!(compute_entitlement(&rows).redeemed.expiry_unix_ts_ms, 0);
    }
}
