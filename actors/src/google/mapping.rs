//! What a Google notification does to the store: a pure decision ([`plan_subscription`]) over
//! the notification and the purchase's current state, then one write command
//! ([`HandleGoogleNotification`]) that applies it atomically and keeps the notification's
//! bookkeeping (handled flag, user errors) in the same transaction.

use super::publisher::SubscriptionPurchase;
use super::publisher::{STATE_ACTIVE, STATE_CANCELED, STATE_EXPIRED, STATE_IN_GRACE_PERIOD, STATE_ON_HOLD};
use super::rtdn::{NotificationType, SubscriptionNotification, VoidedPurchase};
use crate::db_reader::ReadCommand;
use crate::db_writer::WriteCommand;
use crate::domain::time::{DAY_MS, round_up_with_testing_support};
use crate::domain::types::{PaymentProvider, PaymentTx, ProPlan, PubKeyBytes};
use crate::store::ops::{self, OpCtx, OpError};
use crate::store::rows::NewPayment;
use crate::store::{StoreResult, StoreTx};

/// How long after the purchase event a Google refund can still be asked for.
pub const GOOGLE_REFUND_WINDOW_MS: i64 = 2 * DAY_MS;
/// How long a message's history row is kept once handled.
pub const HISTORY_RETENTION_MS: i64 = 8 * DAY_MS;

/// The plan a Play base plan stands for.
pub fn plan_of_base_plan(base_plan_id: &str) -> Option<ProPlan> {
    match base_plan_id {
        "session-pro-1-month" => Some(ProPlan::OneMonth),
        "session-pro-3-months" => Some(ProPlan::ThreeMonth),
        "session-pro-12-months" => Some(ProPlan::TwelveMonth),
        _ => None,
    }
}

/// The buyer's account id: hex of SHA-256 of their master key (an optional `0x` prefix is
/// allowed), as the client set it when buying.
pub fn parse_account_id(text: &str) -> Result<[u8; 32], String> {
    let hex_part = text.strip_prefix("0x").unwrap_or(text);
    let bytes = hex::decode(hex_part).map_err(|_| "obfuscatedExternalAccountId is not hex".to_string())?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("obfuscatedExternalAccountId has {} hex characters, expected 64", hex_part.len()))
}

/// Facts the mapping needs besides the notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappingCtx {
    /// Grace given to a fresh payment until Google reports the plan's own.
    pub default_grace_ms: i64,
    /// Google's test tracks: a "day" is ten seconds when comparing expiries.
    pub testing_env: bool,
}

/// The store change a notification asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing to change; the text says why (for the log).
    Nothing(String),
    /// Records a paid period (a purchase or a renewal), after revoking the subscription it
    /// replaces, then gives it the default grace.
    Record { payment: NewPayment, replaces: Option<String>, event_ms: i64, grace_ms: i64 },
    /// Updates grace and/or auto-renew of an existing payment.
    Renewal { payment: PaymentTx, grace_ms: Option<i64>, auto_renewing: Option<bool> },
    /// Revokes every payment of the purchase token at `event_ms`.
    Revoke { token: String, event_ms: i64 },
    /// Revokes the purchase token if the payment would otherwise outlive the event's day.
    RevokeIfOutlives { payment: PaymentTx, event_ms: i64 },
}

/// Whether the notification needs the base plan's grace period from the monetization API.
pub fn needs_grace_period(note: &SubscriptionNotification, sub: &SubscriptionPurchase) -> bool {
    note.kind == NotificationType::InGracePeriod && sub.subscription_state == STATE_IN_GRACE_PERIOD
}

/// Decides what a subscription notification does, given the purchase's current state and, for
/// IN_GRACE_PERIOD, the plan's grace period. An `Err` is a failure to retry.
pub fn plan_subscription(
    note: &SubscriptionNotification,
    event_ms: i64,
    sub: &SubscriptionPurchase,
    grace_period_ms: Option<i64>,
    ctx: MappingCtx,
) -> Result<Action, String> {
    use NotificationType::*;
    let item = &sub.line_item;
    let order_id = item
        .latest_successful_order_id
        .clone()
        .filter(|o| !o.is_empty())
        .ok_or("the purchase has no latestSuccessfulOrderId")?;
    let plan =
        plan_of_base_plan(&item.base_plan_id).ok_or_else(|| format!("unknown base plan {:?}", item.base_plan_id))?;
    let payment = PaymentTx::google(note.purchase_token.clone(), order_id);
    let state = sub.subscription_state.as_str();
    let mismatch = || Action::Nothing(format!("{} while the subscription is {state}: nothing to do", note.kind.name()));
    let account_id = || -> Result<[u8; 32], String> {
        parse_account_id(sub.obfuscated_account_id.as_deref().ok_or("the purchase has no obfuscatedExternalAccountId")?)
    };
    let record = |replaces: Option<String>| -> Result<Action, String> {
        Ok(Action::Record {
            payment: NewPayment {
                tx: payment.clone(),
                plan,
                expiry_unix_ts_ms: item.expiry_ms,
                unredeemed_unix_ts_ms: event_ms,
                platform_refund_expiry_unix_ts_ms: event_ms.saturating_add(GOOGLE_REFUND_WINDOW_MS),
                google_obfuscated_account_id: Some(account_id()?),
                apple_app_account_token: String::new(),
            },
            replaces,
            event_ms,
            grace_ms: ctx.default_grace_ms,
        })
    };
    match note.kind {
        Purchased if state != STATE_ACTIVE => Ok(mismatch()),
        Purchased if sub.is_acknowledged() => {
            Err("SUBSCRIPTION_PURCHASED for a purchase that is already acknowledged".into())
        }
        Purchased => record(sub.linked_purchase_token.clone()),
        Renewed | Recovered if state == STATE_ACTIVE => record(None),
        InGracePeriod if state == STATE_IN_GRACE_PERIOD => {
            let grace = grace_period_ms.ok_or("the base plan's grace period is unknown")?;
            Ok(Action::Renewal { payment, grace_ms: Some(grace), auto_renewing: None })
        }
        Canceled if state == STATE_CANCELED || state == STATE_EXPIRED => {
            Ok(Action::Renewal { payment, grace_ms: None, auto_renewing: Some(false) })
        }
        Restarted if state == STATE_ACTIVE => {
            Ok(Action::Renewal { payment, grace_ms: None, auto_renewing: Some(true) })
        }
        Revoked if state == STATE_EXPIRED => Ok(Action::Revoke { token: note.purchase_token.clone(), event_ms }),
        Expired | OnHold if state == STATE_EXPIRED || state == STATE_ON_HOLD => {
            Ok(Action::RevokeIfOutlives { payment, event_ms })
        }
        Deferred | Paused | PauseScheduleChanged => Err(format!(
            "{} is not supported: the Play subscription must not allow pausing or deferral",
            note.kind.name()
        )),
        PriceChangeConfirmed | PriceChangeUpdated | PendingPurchaseCanceled | PriceStepUpConsentUpdated => {
            Ok(Action::Nothing(format!("{} needs no change", note.kind.name())))
        }
        Renewed | Recovered | InGracePeriod | Canceled | Restarted | Revoked | Expired | OnHold => Ok(mismatch()),
    }
}

/// A voided purchase changes nothing: the SUBSCRIPTION_REVOKED that comes with a refund
/// removes the entitlement. The caller warns an operator about unexpected kinds of refund
/// ([`VoidedPurchase::unexpected`]).
pub fn plan_voided(voided: &VoidedPurchase) -> Action {
    match voided.unexpected() {
        Some(why) => Action::Nothing(format!("voided purchase: {why} (order {}); nothing changed", voided.order_id)),
        None => Action::Nothing("voided purchase of a subscription; its revocation notification removes it".into()),
    }
}

fn rejected(why: impl Into<String>) -> OpError {
    OpError::Rejected(why.into())
}

/// Applies an action inside the caller's transaction.
pub fn apply_action(tx: &mut dyn StoreTx, action: &Action, ctx: OpCtx, mapping: MappingCtx) -> Result<(), OpError> {
    match action {
        Action::Nothing(_) => Ok(()),
        Action::Record { payment, replaces, event_ms, grace_ms } => {
            if let Some(old) = replaces
                && !ops::revoke_subscription(tx, PaymentProvider::Google, old, *event_ms, ctx.now)?
            {
                return Err(rejected(
                    "the purchase replaces one that is not recorded yet (linkedPurchaseToken has no payments)",
                ));
            }
            ops::add_unredeemed_payment(tx, payment, ctx)?;
            if !ops::update_renewal_info(tx, &payment.tx, Some(*grace_ms), None)? {
                return Err(rejected("the recorded payment could not be found"));
            }
            Ok(())
        }
        Action::Renewal { payment, grace_ms, auto_renewing } => {
            if ops::update_renewal_info(tx, payment, *grace_ms, *auto_renewing)? {
                Ok(())
            } else {
                Err(rejected("no payment matches the purchase token and order id"))
            }
        }
        Action::Revoke { token, event_ms } => {
            if ops::revoke_subscription(tx, PaymentProvider::Google, token, *event_ms, ctx.now)? {
                Ok(())
            } else {
                Err(rejected("no payments are recorded for the purchase token"))
            }
        }
        Action::RevokeIfOutlives { payment, event_ms } => {
            let row = tx
                .find_payment(payment)?
                .ok_or_else(|| rejected("no payment matches the purchase token and order id"))?;
            let round = |t| round_up_with_testing_support(true, mapping.testing_env, t);
            if round(row.expiry_unix_ts_ms) > round(*event_ms)
                && !ops::revoke_subscription(
                    tx,
                    PaymentProvider::Google,
                    &payment.google_payment_token,
                    *event_ms,
                    ctx.now,
                )?
            {
                return Err(rejected("no payments are recorded for the purchase token"));
            }
            Ok(())
        }
    }
}

// ---- write and read commands

/// Stores a pulled message (unhandled) unless its id is already recorded. Answers the
/// existing row's handled flag, or None when the row was inserted now.
pub struct RecordGoogleMessage {
    pub message_id: i64,
    pub payload: String,
    pub expiry_unix_ts_ms: i64,
}

impl WriteCommand for RecordGoogleMessage {
    type Output = Option<bool>;
    fn apply(self, tx: &mut dyn StoreTx, _: OpCtx) -> Result<Option<bool>, OpError> {
        if let Some(handled) = tx.google_notification_handled(self.message_id)? {
            return Ok(Some(handled));
        }
        tx.add_google_notification(self.message_id, Some(&self.payload), self.expiry_unix_ts_ms)?;
        Ok(None)
    }
}

/// How handling a notification ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandleOutcome {
    /// Applied now; the message is marked handled.
    Handled,
    /// The row was already handled, or is gone (an operator handled or deleted it).
    AlreadyDone,
    /// Not applied; retried later. The token's user error is recorded.
    Failed(String),
}

/// Handles one recorded message in one transaction: applies `action` in a savepoint; on
/// success marks the message handled and clears the token's user errors, on failure undoes
/// the action alone and records a user error for the token.
pub struct HandleGoogleNotification {
    pub message_id: i64,
    /// The purchase token whose user errors this notification records and clears.
    pub token: Option<String>,
    /// What to apply, or why it could not even be decided (e.g. the Publisher API failed).
    pub action: Result<Action, String>,
    pub mapping: MappingCtx,
}

impl WriteCommand for HandleGoogleNotification {
    type Output = HandleOutcome;
    fn apply(self, tx: &mut dyn StoreTx, ctx: OpCtx) -> Result<HandleOutcome, OpError> {
        match tx.google_notification_handled(self.message_id)? {
            None | Some(true) => return Ok(HandleOutcome::AlreadyDone),
            Some(false) => {}
        }
        let failure = match self.action {
            Err(why) => why,
            Ok(action) => {
                tx.savepoint("google_notification")?;
                match apply_action(tx, &action, ctx, self.mapping) {
                    Ok(()) => {
                        tx.release("google_notification")?;
                        tx.mark_google_notification_handled(self.message_id)?;
                        if let Some(token) = &self.token {
                            tx.delete_user_error(PaymentProvider::Google, token)?;
                        }
                        return Ok(HandleOutcome::Handled);
                    }
                    Err(e) => {
                        tx.rollback_to("google_notification")?;
                        e.to_string()
                    }
                }
            }
        };
        if let Some(token) = &self.token {
            tx.add_user_error(PaymentProvider::Google, token, ctx.now)?;
        }
        Ok(HandleOutcome::Failed(failure))
    }
}

/// Unhandled history rows: (message_id, payload, expiry), oldest first.
pub struct LoadUnhandledGoogle;

impl ReadCommand for LoadUnhandledGoogle {
    type Output = Vec<(i64, Option<String>, i64)>;
    fn run(self, tx: &mut dyn StoreTx) -> StoreResult<Self::Output> {
        tx.unhandled_google_notifications()
    }
}

/// Whether `master` could claim the payment right now (it is Unredeemed and bought for them).
pub struct ClaimableBy {
    pub master: PubKeyBytes,
    pub payment: PaymentTx,
}

impl ReadCommand for ClaimableBy {
    type Output = bool;
    fn run(self, tx: &mut dyn StoreTx) -> StoreResult<bool> {
        tx.claimable_by(&self.payment, &self.master)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::google::publisher::LineItem;

    const CTX: MappingCtx = MappingCtx { default_grace_ms: 10_000, testing_env: true };
    const ACCOUNT: &str = "7b0bd6d6d1ab1b2ebb7e1b3a8be3d3c5e5b3b0e8c1d2f3a4b5c6d7e8f9a0b1c2";

    fn sub(state: &str, ack: &str) -> SubscriptionPurchase {
        SubscriptionPurchase {
            subscription_state: state.into(),
            acknowledgement_state: ack.into(),
            linked_purchase_token: None,
            obfuscated_account_id: Some(ACCOUNT.into()),
            line_item: LineItem {
                product_id: Some("session_pro".into()),
                expiry_ms: 2_000,
                base_plan_id: "session-pro-1-month".into(),
                latest_successful_order_id: Some("GPA.1".into()),
                auto_renew_enabled: true,
            },
            test_purchase: true,
            replacement_cancellation: false,
        }
    }

    fn note(kind: NotificationType) -> SubscriptionNotification {
        SubscriptionNotification { purchase_token: "tok".into(), kind }
    }

    fn plan(kind: NotificationType, s: &SubscriptionPurchase) -> Result<Action, String> {
        plan_subscription(&note(kind), 1_000, s, Some(172_800_000), CTX)
    }

    const PENDING: &str = "ACKNOWLEDGEMENT_STATE_PENDING";

    #[test]
    fn purchase_records_a_payment_with_default_grace() {
        let Action::Record { payment, replaces, event_ms, grace_ms } =
            plan(NotificationType::Purchased, &sub(STATE_ACTIVE, PENDING)).unwrap()
        else {
            panic!("not a record")
        };
        assert_eq!((replaces, event_ms, grace_ms), (None, 1_000, 10_000));
        assert_eq!(payment.tx, PaymentTx::google("tok", "GPA.1"));
        assert_eq!(payment.plan, ProPlan::OneMonth);
        assert_eq!(payment.expiry_unix_ts_ms, 2_000);
        assert_eq!(payment.unredeemed_unix_ts_ms, 1_000);
        assert_eq!(payment.platform_refund_expiry_unix_ts_ms, 1_000 + 172_800_000);
        assert_eq!(payment.google_obfuscated_account_id.map(hex::encode).as_deref(), Some(ACCOUNT));

        let mut linked = sub(STATE_ACTIVE, PENDING);
        linked.linked_purchase_token = Some("old".into());
        assert!(
            matches!(plan(NotificationType::Purchased, &linked), Ok(Action::Record { replaces: Some(o), .. }) if o == "old")
        );
    }

    #[test]
    fn purchase_errors_and_mismatches() {
        assert!(plan(NotificationType::Purchased, &sub(STATE_ACTIVE, "ACKNOWLEDGEMENT_STATE_ACKNOWLEDGED")).is_err());
        assert!(matches!(
            plan(NotificationType::Purchased, &sub("SUBSCRIPTION_STATE_PENDING", PENDING)),
            Ok(Action::Nothing(_))
        ));
        let mut s = sub(STATE_ACTIVE, PENDING);
        s.obfuscated_account_id = None;
        assert!(plan(NotificationType::Purchased, &s).is_err());
        s.obfuscated_account_id = Some(ACCOUNT[1..].into());
        assert!(plan(NotificationType::Renewed, &s).is_err());
        s.obfuscated_account_id = Some(format!("0x{ACCOUNT}"));
        assert!(plan(NotificationType::Recovered, &s).is_ok());
        s.obfuscated_account_id = Some("zz".repeat(32));
        assert!(plan(NotificationType::Purchased, &s).is_err());
        // The account id is only needed where a payment is recorded.
        s.obfuscated_account_id = None;
        assert!(plan(NotificationType::Restarted, &s).is_ok());
    }

    #[test]
    fn every_type_needs_an_order_and_a_known_plan() {
        let mut s = sub(STATE_ACTIVE, PENDING);
        s.line_item.latest_successful_order_id = None;
        assert!(plan(NotificationType::PriceChangeConfirmed, &s).is_err());
        let mut s = sub(STATE_ACTIVE, PENDING);
        s.line_item.base_plan_id = "session-pro-1-week".into();
        assert!(plan(NotificationType::PriceChangeConfirmed, &s).is_err());
    }

    #[test]
    fn dispatch_table() {
        use NotificationType::*;
        let tx = PaymentTx::google("tok", "GPA.1");
        let renewal =
            |g: Option<i64>, a: Option<bool>| Action::Renewal { payment: tx.clone(), grace_ms: g, auto_renewing: a };
        assert_eq!(plan(InGracePeriod, &sub(STATE_IN_GRACE_PERIOD, PENDING)), Ok(renewal(Some(172_800_000), None)));
        assert!(
            plan_subscription(&note(InGracePeriod), 1_000, &sub(STATE_IN_GRACE_PERIOD, PENDING), None, CTX).is_err()
        );
        assert!(needs_grace_period(&note(InGracePeriod), &sub(STATE_IN_GRACE_PERIOD, PENDING)));
        assert!(!needs_grace_period(&note(InGracePeriod), &sub(STATE_ACTIVE, PENDING)));
        assert_eq!(plan(Canceled, &sub(STATE_CANCELED, PENDING)), Ok(renewal(None, Some(false))));
        assert_eq!(plan(Canceled, &sub(STATE_EXPIRED, PENDING)), Ok(renewal(None, Some(false))));
        assert_eq!(plan(Restarted, &sub(STATE_ACTIVE, PENDING)), Ok(renewal(None, Some(true))));
        assert_eq!(
            plan(Revoked, &sub(STATE_EXPIRED, PENDING)),
            Ok(Action::Revoke { token: "tok".into(), event_ms: 1_000 })
        );
        for k in [Expired, OnHold] {
            for st in [STATE_EXPIRED, STATE_ON_HOLD] {
                assert_eq!(
                    plan(k, &sub(st, PENDING)),
                    Ok(Action::RevokeIfOutlives { payment: tx.clone(), event_ms: 1_000 })
                );
            }
        }
        for k in [Deferred, Paused, PauseScheduleChanged] {
            assert!(plan(k, &sub(STATE_ACTIVE, PENDING)).is_err(), "{k:?}");
        }
        for k in [PriceChangeConfirmed, PriceChangeUpdated, PendingPurchaseCanceled, PriceStepUpConsentUpdated] {
            assert!(matches!(plan(k, &sub(STATE_ACTIVE, PENDING)), Ok(Action::Nothing(_))), "{k:?}");
        }
        // State mismatches are handled no-ops.
        for (k, st) in [
            (Renewed, STATE_CANCELED),
            (Recovered, STATE_ON_HOLD),
            (InGracePeriod, STATE_ACTIVE),
            (Canceled, STATE_ACTIVE),
            (Restarted, STATE_CANCELED),
            (Revoked, STATE_ACTIVE),
            (Expired, STATE_ACTIVE),
            (OnHold, STATE_IN_GRACE_PERIOD),
        ] {
            assert!(matches!(plan(k, &sub(st, PENDING)), Ok(Action::Nothing(_))), "{k:?} {st}");
        }
    }

    #[test]
    fn plans_and_account_ids() {
        assert_eq!(plan_of_base_plan("session-pro-3-months"), Some(ProPlan::ThreeMonth));
        assert_eq!(plan_of_base_plan("session-pro-12-months"), Some(ProPlan::TwelveMonth));
        assert_eq!(plan_of_base_plan("session_pro"), None);
        assert!(parse_account_id(ACCOUNT).is_ok());
        assert!(parse_account_id(&format!("0x{ACCOUNT}")).is_ok());
        assert!(parse_account_id(&format!("{ACCOUNT}00")).is_err());
        assert!(parse_account_id("").is_err());
    }

    #[test]
    fn voided_purchases_change_nothing() {
        let v = VoidedPurchase { purchase_token: "t".into(), order_id: "o".into(), product_type: 2, refund_type: 1 };
        assert!(matches!(plan_voided(&v), Action::Nothing(w) if w.starts_with("voided purchase:")));
        let v = VoidedPurchase { product_type: 1, ..v };
        assert!(matches!(plan_voided(&v), Action::Nothing(w) if !w.starts_with("voided purchase:")));
    }

    mod store {
        use super::*;
        use crate::store::sqlite::{self, SqliteTarget};
        use rusqlite::Connection;

        const CTXW: OpCtx = OpCtx { now: 5_000, dev: false };

        fn db() -> Connection {
            let mut c = sqlite::open_writer(&SqliteTarget::memory()).unwrap();
            sqlite::bootstrap(&mut c, [0xCD; 32]).unwrap();
            c
        }

        fn run<C: WriteCommand>(c: &mut Connection, cmd: C) -> C::Output {
            sqlite::write(c, |tx| cmd.apply(tx, CTXW)).unwrap()
        }

        fn count(c: &Connection, sql: &str) -> i64 {
            c.query_row(sql, [], |r| r.get(0)).unwrap()
        }

        fn handle(id: i64, action: Result<Action, String>) -> HandleGoogleNotification {
            HandleGoogleNotification { message_id: id, token: Some("tok".into()), action, mapping: CTX }
        }

        fn purchase() -> Action {
            let Ok(a) = plan(NotificationType::Purchased, &sub(STATE_ACTIVE, PENDING)) else { panic!() };
            a
        }

        #[test]
        fn failure_keeps_its_user_error_and_success_clears_it() {
            let mut c = db();
            assert_eq!(
                run(&mut c, RecordGoogleMessage { message_id: 7, payload: "{}".into(), expiry_unix_ts_ms: 9 }),
                None
            );
            assert_eq!(
                run(&mut c, RecordGoogleMessage { message_id: 7, payload: "{}".into(), expiry_unix_ts_ms: 9 }),
                Some(false)
            );

            // A purchase that replaces an unknown token: its own changes are undone, the user
            // error stays.
            let Action::Record { payment, event_ms, grace_ms, .. } = purchase() else { panic!() };
            let linked = Action::Record { payment, replaces: Some("old".into()), event_ms, grace_ms };
            assert!(matches!(run(&mut c, handle(7, Ok(linked))), HandleOutcome::Failed(_)));
            assert_eq!(count(&c, "SELECT COUNT(*) FROM payments"), 0);
            assert_eq!(
                count(&c, "SELECT COUNT(*) FROM user_errors WHERE payment_id = 'tok' AND payment_provider = 1"),
                1
            );
            assert_eq!(count(&c, "SELECT handled FROM google_notification_history WHERE message_id = 7"), 0);
            // A Publisher failure is recorded the same way.
            assert!(matches!(run(&mut c, handle(7, Err("HTTP 500".into()))), HandleOutcome::Failed(_)));
            assert_eq!(count(&c, "SELECT COUNT(*) FROM user_errors"), 1);

            assert_eq!(run(&mut c, handle(7, Ok(purchase()))), HandleOutcome::Handled);
            assert_eq!(
                count(&c, "SELECT COUNT(*) FROM payments WHERE status = 1 AND grace_period_duration_ms = 10000"),
                1
            );
            assert_eq!(count(&c, "SELECT COUNT(*) FROM user_errors"), 0);
            assert_eq!(
                count(
                    &c,
                    "SELECT COUNT(*) FROM google_notification_history WHERE message_id = 7 AND handled = 1 AND payload IS NULL"
                ),
                1
            );
            // Handled once: a second attempt changes nothing.
            assert_eq!(run(&mut c, handle(7, Ok(purchase()))), HandleOutcome::AlreadyDone);
            assert_eq!(
                run(&mut c, RecordGoogleMessage { message_id: 7, payload: "{}".into(), expiry_unix_ts_ms: 9 }),
                Some(true)
            );
            // A row an operator deleted counts as done.
            assert_eq!(run(&mut c, handle(8, Ok(purchase()))), HandleOutcome::AlreadyDone);
            assert_eq!(count(&c, "SELECT COUNT(*) FROM payments"), 1);
        }

        #[test]
        fn expiry_revokes_only_what_outlives_the_event() {
            let mut c = db();
            run(&mut c, RecordGoogleMessage { message_id: 1, payload: "{}".into(), expiry_unix_ts_ms: 9 });
            assert_eq!(run(&mut c, handle(1, Ok(purchase()))), HandleOutcome::Handled);
            let tx = PaymentTx::google("tok", "GPA.1");
            // Expiry 2 000 and event 1 000 round to the same ten-second "day": no revocation.
            run(&mut c, RecordGoogleMessage { message_id: 2, payload: "{}".into(), expiry_unix_ts_ms: 9 });
            let same_day = Action::RevokeIfOutlives { payment: tx.clone(), event_ms: 1_000 };
            assert_eq!(run(&mut c, handle(2, Ok(same_day))), HandleOutcome::Handled);
            assert_eq!(count(&c, "SELECT status FROM payments"), 1);
            // An event a test "day" earlier than the expiry's revokes.
            c.execute("UPDATE payments SET expiry_unix_ts_ms = 25000", []).unwrap();
            run(&mut c, RecordGoogleMessage { message_id: 3, payload: "{}".into(), expiry_unix_ts_ms: 9 });
            let earlier = Action::RevokeIfOutlives { payment: tx.clone(), event_ms: 1_000 };
            assert_eq!(run(&mut c, handle(3, Ok(earlier))), HandleOutcome::Handled);
            assert_eq!(count(&c, "SELECT status FROM payments"), 4);
            // Unknown payment: a failure.
            run(&mut c, RecordGoogleMessage { message_id: 4, payload: "{}".into(), expiry_unix_ts_ms: 9 });
            let unknown = Action::RevokeIfOutlives { payment: PaymentTx::google("tok", "GPA.2"), event_ms: 1_000 };
            assert!(matches!(run(&mut c, handle(4, Ok(unknown))), HandleOutcome::Failed(_)));
        }
    }
}
