//! The admin CLI, run as the real binary against temporary databases and against the real app
//! started in-process: texts, exit codes, what is stored, and that `--dry-run` changes nothing.

use std::path::PathBuf;
use std::process::Command;

use pro_engine::Clock;
use pro_engine::domain::time::DAY_MS;
use pro_engine::store::sqlite::SqliteTarget;
use serde_json::Value;
use tempfile::TempDir;

use crate::harness::{Opts, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_session-pro-backend");
const DEV_PUBKEY: &str = "fc947730f49eb01427a66e050733294d9e520e545c7a27125a780634e0860a27";
/// Public key of the seed 11…11 (operations.md §5.2).
const MASTER_11: &str = "d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737";

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Runs the binary with a clean environment plus `env`.
fn run_env(args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut c = Command::new(BIN);
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn run(args: &[&str]) -> Out {
    run_env(args, &[])
}

/// A bootstrapped database (dev key when `dev`) and an INI naming it.
struct Db {
    _dir: TempDir,
    path: PathBuf,
    ini: String,
}

impl Db {
    fn new(dev: bool) -> Self {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("backend.db");
        pro_engine::engine::open_and_bootstrap(&SqliteTarget::file(&path), dev).unwrap();
        let ini = dir.path().join("backend.ini");
        std::fs::write(&ini, format!("[base]\ndb_path = {}\ndev = {}\n", path.display(), u8::from(dev))).unwrap();
        Self { path, ini: ini.to_string_lossy().into_owned(), _dir: dir }
    }

    /// Runs an admin command with `--config` (and `--dry-run` first when asked).
    fn cli(&self, args: &[&str]) -> Out {
        let mut all = vec!["--config", self.ini.as_str()];
        all.extend_from_slice(args);
        run(&all)
    }

    fn sql(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(&self.path).unwrap()
    }

    fn count(&self, sql: &str) -> i64 {
        self.sql().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }

    /// Runs a `--dry-run` command and checks the database file did not change by one byte.
    fn dry(&self, args: &[&str]) -> Out {
        let before = self.bytes();
        let mut all = vec!["--dry-run"];
        all.extend_from_slice(args);
        let out = self.cli(&all);
        assert!(self.bytes() == before, "--dry-run changed the database: {args:?}\n{out:?}");
        out
    }
}

fn ok(out: &Out) -> &str {
    assert_eq!(out.code, 0, "{out:?}");
    &out.stdout
}

fn failed(out: &Out, code: i32) -> String {
    assert_eq!(out.code, code, "{out:?}");
    out.stderr.clone()
}

// ---------------------------------------------------------------------------------------------
// Global behaviour
// ---------------------------------------------------------------------------------------------

#[test]
fn config_errors_are_reported_and_exit_1() {
    let dir = TempDir::new().unwrap();
    let ini = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    assert_eq!(failed(&run(&["report", "generate", "daily"]), 1), "ERROR: --config is required for this command\n");

    let missing = dir.path().join("missing.ini").to_string_lossy().into_owned();
    assert_eq!(
        failed(&run(&["--config", &missing, "db", "info"]), 1),
        format!("ERROR: Failed to load config:\n  Config file \"{missing}\" does not exist or is not readable\n")
    );
    let no_base = ini("nobase.ini", "[other]\nx = 1\n");
    assert_eq!(
        failed(&run(&["--config", &no_base, "db", "info"]), 1),
        format!("ERROR: Failed to load config:\n  Config file \"{no_base}\" is missing [base] section\n")
    );
    let bad_bool = ini("bad.ini", "[base]\ndb_path = x.db\ndev = maybe\n");
    let err = failed(&run(&["--config", &bad_bool, "db", "info"]), 1);
    assert!(err.starts_with("ERROR: Failed to load config:\n  Failed to parse config file: "), "{err}");
    assert!(err.contains("maybe"), "{err}");
    let no_db = ini("nodb.ini", "[base]\ndev = 0\n");
    assert_eq!(
        failed(&run(&["--config", &no_db, "db", "info"]), 1),
        "ERROR: No database URL configured in config file\n"
    );
    let absent_db = ini("absent.ini", &format!("[base]\ndb_path = {}\n", dir.path().join("none.db").display()));
    let err = failed(&run(&["--config", &absent_db, "report", "generate", "daily"]), 1);
    assert!(err.starts_with("ERROR: Database error: the database file") && err.contains("does not exist"), "{err}");
    assert!(!dir.path().join("none.db").exists(), "the CLI must not create a database");

    // An empty (schema-less) database is refused clearly, not bootstrapped.
    let empty = dir.path().join("empty.db");
    rusqlite::Connection::open(&empty).unwrap().execute_batch("CREATE TABLE x (y)").unwrap();
    let empty_ini = ini("empty.ini", &format!("[base]\ndb_path = {}\n", empty.display()));
    let err = failed(&run(&["--config", &empty_ini, "db", "print"]), 1);
    assert!(err.contains("no Session Pro tables"), "{err}");

    // A config error wins over an argument error.
    let err = failed(&run(&["--config", &missing, "user-error", "set", "garbage"]), 1);
    assert!(err.contains("does not exist or is not readable"), "{err}");
}

#[test]
fn config_comes_from_the_environment_too() {
    let db = Db::new(false);
    let other = Db::new(true);
    // SESH_PRO_BACKEND_INI_PATH stands in for --config.
    let out = run_env(&["db", "info"], &[("SESH_PRO_BACKEND_INI_PATH", &db.ini)]);
    assert!(ok(&out).contains("Users/Revocs/Payments/Unredeemed: 0/0/0/0"));
    assert!(!out.stdout.contains(DEV_PUBKEY));
    // SESH_PRO_BACKEND_DB_PATH and _DB_URL override the INI's database.
    let out =
        run_env(&["--config", &db.ini, "db", "info"], &[("SESH_PRO_BACKEND_DB_PATH", other.path.to_str().unwrap())]);
    assert!(ok(&out).contains(DEV_PUBKEY), "{out:?}");
    let url_ini = db._dir.path().join("url.ini");
    std::fs::write(&url_ini, format!("[base]\ndb_url = sqlite:///{}\n", db.path.display())).unwrap();
    let url_ini = url_ini.to_string_lossy().into_owned();
    assert!(!ok(&run(&["--config", &url_ini, "db", "info"])).contains(DEV_PUBKEY));
    let url = format!("sqlite:///{}", other.path.display());
    let out = run_env(&["--config", &url_ini, "db", "info"], &[("SESH_PRO_BACKEND_DB_URL", &url)]);
    assert!(ok(&out).contains(DEV_PUBKEY), "{out:?}");
}

#[test]
fn usage_errors_exit_2_and_missing_subcommands_exit_1() {
    let db = Db::new(false);
    assert_eq!(db.cli(&["report", "generate", "yearly"]).code, 2);
    assert_eq!(db.cli(&["report", "generate", "daily", "--format", "json"]).code, 2);
    assert_eq!(run(&["no-such-command"]).code, 2);
    assert_eq!(run(&["voucher", "--plan", "1M"]).code, 2);
    let out = db.cli(&["revoke"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("Usage: session-pro-backend revoke"), "{out:?}");
    assert_eq!(run(&["--dry-run", "serve"]).code, 2);
    // A dry run of a server helper prints the signed request without sending it.
    let out = run(&["--dry-run", "server", "get-pro-revocations", "--url", "http://127.0.0.1:9"]);
    assert_eq!(
        ok(&out),
        "\nQuery Pro Revocations (ticket: 0)\nRequest:\n{\n \"version\": 0,\n \"ticket\": 0\n}\n(DRY RUN) Not sent to http://127.0.0.1:9/get_pro_revocations\n"
    );
    assert!(ok(&run(&["--dry-run", "server", "tour", "--url", "http://127.0.0.1:9"])).contains("nothing was sent"));
}

// ---------------------------------------------------------------------------------------------
// user-error
// ---------------------------------------------------------------------------------------------

#[test]
fn user_error_set_and_delete() {
    let db = Db::new(true);
    let out = db.dry(&["user-error", "set", "1:56c2c60dbca9f14d=true,2:DEV.apple_orig=true,1:nonexistent=false"]);
    assert_eq!(
        ok(&out),
        "Set 2/3 user errors\n  00 1:56c2c60dbca9f14d = True (dry-run)\n  01 2:DEV.apple_orig = True (dry-run)\n  02 1:nonexistent = False (skipped - not found)\n"
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM user_errors"), 0);

    let out = db.cli(&["user-error", "set", "1:56c2c60dbca9f14d=true, 2:DEV.apple_orig=TRUE ,1:nonexistent=False"]);
    assert_eq!(
        ok(&out),
        "Set 2/3 user errors\n  00 1:56c2c60dbca9f14d = True (added)\n  01 2:DEV.apple_orig = True (added)\n  02 1:nonexistent = False (skipped - not found)\n"
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM user_errors"), 2);
    let out = db.cli(&["user-error", "set", "1:56c2c60dbca9f14d=true,2:DEV.apple_orig=false"]);
    assert_eq!(
        ok(&out),
        "Set 1/2 user errors\n  00 1:56c2c60dbca9f14d = True (skipped - already exists)\n  01 2:DEV.apple_orig = False (deleted)\n"
    );
    assert_eq!(ok(&db.cli(&["user-error", "set", " "])), "No items to process\n");

    let out = db.dry(&["user-error", "delete", "1:56c2c60dbca9f14d,0:zero"]);
    assert_eq!(
        ok(&out),
        "Deleted 1/2 user errors\n  00 1:56c2c60dbca9f14d (dry-run)\n  01 0:zero (skipped - not found)\n"
    );
    let out = db.cli(&["user-error", "delete", "1:56c2c60dbca9f14d,3:rp"]);
    assert_eq!(
        ok(&out),
        "Deleted 1/2 user errors\n  00 1:56c2c60dbca9f14d (deleted)\n  01 3:rp (skipped - not found)\n"
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM user_errors"), 0);
    assert_eq!(ok(&db.cli(&["user-error", "delete", ""])), "No items to process\n");

    for (args, want) in [
        (
            vec!["user-error", "set", "1abc=true"],
            "ERROR: Failed to parse arguments:\n  Invalid format for user error: '1abc=true'. Expected '<payment_provider>:<payment_id>=[true|false]'.\n",
        ),
        (
            vec!["user-error", "set", "7:abc=true"],
            "ERROR: Failed to parse arguments:\n  Failed to parse payment provider (7) for item 7:abc=true\n",
        ),
        (
            vec!["user-error", "set", "1:abc=maybe"],
            "ERROR: Failed to parse arguments:\n  Failed to parse set flag (maybe) for item 1:abc=maybe\n",
        ),
        (
            vec!["user-error", "delete", "abc"],
            "ERROR: Failed to parse arguments:\n  Invalid format for payment ID: 'abc'. Expected '<payment_provider>:<payment_id>'.\n",
        ),
    ] {
        assert_eq!(failed(&db.cli(&args), 1), want);
    }
    // Providers 0 and 3 cannot carry a user error (upstream crashed on an assertion).
    let err = failed(&db.cli(&["user-error", "set", "3:abc=true"]), 1);
    assert!(err.contains("only be set for Google (1) or Apple (2)"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// google-notification
// ---------------------------------------------------------------------------------------------

#[test]
fn google_notifications() {
    let db = Db::new(false);
    assert_eq!(ok(&db.cli(&["google-notification", "list"])), "No unhandled google notifications\n");
    {
        let c = db.sql();
        for (id, handled) in [(11, 0), (22, 0), (33, 1)] {
            c.execute(
                "INSERT INTO google_notification_history (message_id, handled, payload, expiry_unix_ts_ms) VALUES (?, ?, '{}', 1796411509975)",
                [id, handled],
            )
            .unwrap();
        }
    }
    assert_eq!(
        ok(&db.cli(&["google-notification", "list"])),
        "Found 2 unhandled google notifications:\n  00 message_id=11, expiry=1796411509975 (26-12-04 19:11:49.975)\n  01 message_id=22, expiry=1796411509975 (26-12-04 19:11:49.975)\n"
    );
    let out = db.dry(&["google-notification", "handle", "11,99"]);
    assert_eq!(
        ok(&out),
        "Marked 1/2 google notifications as handled\n  00 11 = Handled (dry-run)\n  01 99 = Handled (skipped - not found)\n"
    );
    let out = db.cli(&["google-notification", "handle", "11,99"]);
    assert_eq!(
        ok(&out),
        "Marked 1/2 google notifications as handled\n  00 11 = Handled\n  01 99 = Handled (skipped - not found)\n"
    );
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM google_notification_history WHERE message_id = 11 AND handled AND payload IS NULL"
        ),
        1
    );
    let out = db.dry(&["google-notification", "delete", "22"]);
    assert_eq!(ok(&out), "Deleted 1/1 google notifications\n  00 22 = Delete (dry-run)\n");
    let out = db.cli(&["google-notification", "delete", "22, 44"]);
    assert_eq!(
        ok(&out),
        "Deleted 1/2 google notifications\n  00 22 = Delete\n  01 44 = Delete (skipped - not found)\n"
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM google_notification_history"), 2);
    assert_eq!(ok(&db.cli(&["google-notification", "list"])), "No unhandled google notifications\n");
    assert_eq!(ok(&db.cli(&["google-notification", "delete", ""])), "No message IDs to process\n");
    assert_eq!(
        failed(&db.cli(&["google-notification", "handle", "1,x2"]), 1),
        "ERROR: Failed to parse message_id as integer (x2)\n"
    );
}

// ---------------------------------------------------------------------------------------------
// voucher and revoke
// ---------------------------------------------------------------------------------------------

/// The value after `label` on its line of `text`.
fn field<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label} in\n{text}"))
        .trim()
}

#[test]
fn voucher_grants_pro_in_one_transaction() {
    let db = Db::new(false);
    let out = db.dry(&["voucher", "--master-pkey", MASTER_11, "--plan", "12M"]);
    assert!(ok(&out).contains("(DRY RUN) Would create an unredeemed Rangeproof payment"), "{out:?}");
    assert!(!out.stdout.contains("Sig:"), "a dry run must not sign a proof");

    let out = db.cli(&["voucher", "--master-pkey", &format!("0x{MASTER_11}"), "--plan", "12M"]);
    let text = ok(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("Generated Rotating SKey: ") && lines[1].starts_with("Generated Rotating PKey: "));
    assert!(lines[2].starts_with("Generated Rangeproof Order ID: "));
    assert_eq!(
        lines[3..12],
        [
            "",
            "Step 1: Creating unredeemed Rangeproof payment...",
            "Success: Unredeemed payment created",
            "",
            "Step 2: Redeeming payment and generating pro proof...",
            "Success: Payment redeemed and pro proof generated",
            "",
            "Proof Details:",
            lines[11]
        ]
    );
    let order = field(text, "Generated Rangeproof Order ID:");
    assert_eq!(order.len(), 36);
    let expiry: i64 = field(text, "Expiry:").split(' ').next().unwrap().parse().unwrap();
    assert_eq!(expiry % DAY_MS, 0, "outside dev mode the proof ends on a UTC midnight");
    let (status, plan, provider, owner): (i64, i64, i64, Vec<u8>) = db
        .sql()
        .query_row(
            "SELECT status, plan, payment_provider, master_pkey FROM payments WHERE rangeproof_order_id = ?",
            [order],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!((status, plan, provider, hex::encode(owner)), (2, 3, 3, MASTER_11.to_string()));

    // The printed proof verifies against the database's backend key.
    let backend = field(ok(&db.cli(&["db", "info"])), "Backend Key:").to_string();
    let proof = serde_json::json!({
        "version": 0,
        "gen_index_hash": field(text, "Gen Index Hash:"),
        "rotating_pkey": field(text, "Rotating PKey:"),
        "expiry_unix_ts_ms": expiry,
        "sig": field(text, "Sig:"),
    });
    let out = run(&["verify-proof", "--backend-pubkey", &backend, "--proof", &proof.to_string()]);
    assert!(ok(&out).starts_with("Proof is valid\n"), "{out:?}");

    // Bad keys.
    let err = failed(&db.cli(&["voucher", "--master-pkey", "abcd", "--plan", "1M"]), 1);
    assert_eq!(err, "ERROR: Failed to parse master public key: Expected 64 hex chars, received 4\n");
    let rot = format!("{MASTER_11}00");
    let err = failed(&db.cli(&["voucher", "--master-pkey", MASTER_11, "--plan", "1M", "--rotating-pkey", &rot]), 1);
    assert!(err.starts_with("ERROR: Failed to parse rotating public key: "), "{err}");

    // A failure in the redeem step rolls back the payment of step 1 too.
    db.sql()
        .execute_batch(
            "CREATE TRIGGER refuse_claims BEFORE UPDATE OF master_pkey ON payments BEGIN SELECT RAISE(ABORT, 'claims are off'); END;",
        )
        .unwrap();
    let before = db.count("SELECT COUNT(*) FROM payments");
    let err = failed(&db.cli(&["voucher", "--master-pkey", MASTER_11, "--plan", "1M"]), 1);
    assert!(err.starts_with("ERROR: Failed to redeem payment: ") && err.contains("rolled back"), "{err}");
    assert_eq!(db.count("SELECT COUNT(*) FROM payments"), before);
}

#[test]
fn revoke_list_delete_and_timestamp() {
    let db = Db::new(false);
    assert_eq!(ok(&db.cli(&["revoke", "list", MASTER_11])), format!("User {MASTER_11} has 0 revocable payments\n"));
    ok(&db.cli(&["voucher", "--master-pkey", MASTER_11, "--plan", "3M"]));
    ok(&db.cli(&["voucher", "--master-pkey", MASTER_11, "--plan", "1M", "--dev-duration-ms", "1"]));
    // Upstream failed here with "… is not a valid PaymentStatus"; the expired voucher is left out.
    let key = format!("0x{MASTER_11}");
    let out = db.cli(&["revoke", "list", &key]);
    let text = ok(&out);
    assert!(text.starts_with(&format!("User {key} has 1 revocable payments\n    00 RevokeID=Rangeproof-")), "{text}");
    assert!(text.contains("; Status=Redeemed; Plan=3M; Unredeemed="), "{text}");
    assert_eq!(text.lines().count(), 2);

    let ticket = || db.count("SELECT revocation_ticket FROM runtime");
    let out = db.dry(&["revoke", "timestamp", "--creation-unix-ts-s", "1796400000", MASTER_11, "1796500000"]);
    assert_eq!(
        ok(&out),
        format!("(DRY RUN) Would set revocation timestamp for {MASTER_11} to 1796500000000 (26-12-05 19:46:40.000)\n")
    );
    let out = db.cli(&["revoke", "timestamp", "--creation-unix-ts-s", "1796400000", MASTER_11, "1796500000"]);
    assert_eq!(
        ok(&out),
        format!(
            "Set revocation for {MASTER_11} to 1796400000000 (26-12-04 16:00:00.000) to 1796500000000 (26-12-05 19:46:40.000) (created)\n"
        )
    );
    assert_eq!(ticket(), 1);
    let gen_index = db.count("SELECT gen_index FROM users");
    assert_eq!(
        db.count(&format!("SELECT expiry_unix_ts_ms FROM revocations WHERE gen_index = {gen_index}")),
        1796500000000
    );
    let out = db.cli(&["revoke", "timestamp", MASTER_11, "1796600000"]);
    assert!(ok(&out).ends_with("to 1796600000000 (26-12-06 23:33:20.000) (updated)\n"), "{out:?}");
    assert_eq!(ticket(), 2, "a changed entry is published with a new ticket");

    assert_eq!(
        ok(&db.dry(&["revoke", "delete", MASTER_11])),
        format!("(DRY RUN) Would delete revocation for {MASTER_11}\n")
    );
    assert_eq!(
        ok(&db.cli(&["revoke", "delete", MASTER_11])),
        format!("Deleted revocation for {MASTER_11} (deleted)\n")
    );
    assert_eq!(
        ok(&db.cli(&["revoke", "delete", MASTER_11])),
        format!("Deleted revocation for {MASTER_11} (skipped)\n")
    );
    assert_eq!(ticket(), 3);
    let stranger = "ab".repeat(32);
    assert_eq!(
        ok(&db.cli(&["revoke", "delete", &stranger])),
        format!("Deleted revocation for {stranger} (user does not exist)\n")
    );
    assert!(ok(&db.cli(&["revoke", "timestamp", &stranger, "5"])).ends_with("(user does not exist)\n"));

    assert_eq!(
        failed(&db.cli(&["revoke", "list", "abc"]), 1),
        "ERROR: Failed to parse arguments:\n  Expected 64 hex chars for master public key, received 3\n"
    );
    let bad = format!("{}x", &MASTER_11[..63]);
    assert_eq!(
        failed(&db.cli(&["revoke", "delete", &bad]), 1),
        "ERROR: Failed to parse arguments:\n  Failed to parse hex as master public key: non-hexadecimal number found in fromhex() arg at position 63\n"
    );
}

// ---------------------------------------------------------------------------------------------
// reports
// ---------------------------------------------------------------------------------------------

/// The report data set of the engine's report tests, with known counts.
fn report_db() -> Db {
    let db = Db::new(false);
    pro_engine::reports::fixture::insert(&db.sql());
    db
}

const DASHES: &str = "-------------------------------------------------------------------------------------------------------------------------------------------------------------------";
const HEADER: &str = "Period             Active Users   Unredeemed   New Subs   Google   Apple   Rangeproof    Plan 1m    Plan 3m   Plan 12m    Refunds Initiated    Revoked   Cancelling";

#[test]
fn weekly_report_uses_iso_weeks_across_year_boundaries() {
    let db = report_db();
    let out = db.cli(&["report", "generate", "weekly"]);
    let want = format!(
        "WEEKLY REPORT\n{DASHES}\n{HEADER}\n{DASHES}\n\
2027-11-29 (W48)              0            0          0        0       0            0          0          0          0                    0          0            1
2027-03-01 (W09)              0            0          0        0       0            0          0          0          0                    0          0            1
2027-02-01 (W05)              0            0          0        0       0            0          0          0          0                    0          0            1
2026-12-28 (W53)              3            0          1        1       0            0          1          0          0                    0          0            0
2026-11-30 (W49)              3            1          4        2       1            1          1          2          1                    1          1            0
2026-11-16 (W47)              0            0          1        0       1            0          1          0          0                    0          0            0
2024-12-30 (W01)              1            0          1        0       1            0          0          0          1                    0          0            0
"
    );
    assert_eq!(ok(&out), want);
}

#[test]
fn daily_and_monthly_reports_human_and_csv() {
    let db = report_db();
    let out = db.cli(&["report", "generate", "daily", "--format", "csv", "--count", "4"]);
    assert_eq!(
        ok(&out),
        "Period,Active Users,Unredeemed,New Subs,Google,Apple,Rangeproof,Plan 1m,Plan 3m,Plan 12m,Refunds Initiated,Revoked,Cancelling\r\n\
2027-12-04,0,0,0,0,0,0,0,0,0,0,0,1\r\n\
2027-03-04,0,0,0,0,0,0,0,0,0,0,0,1\r\n\
2027-02-01,0,0,0,0,0,0,0,0,0,0,0,1\r\n\
2027-01-01,3,0,1,1,0,0,1,0,0,0,0,0\n"
    );
    // Daily Active Users counts owners at the last millisecond of the day (upstream: always 0).
    let out = db.cli(&["report", "generate", "daily", "--count", "20"]);
    let text = ok(&out);
    assert_eq!(text.lines().count(), 4 + 10, "{text}");
    assert!(text.contains("\n2026-12-04                    3            0          2        0       1            1          0          1          1                    0          0            0\n"), "{text}");
    assert!(text.contains("\n2026-12-01                    1            1          2        2"), "{text}");
    // Default: seven rows.
    assert_eq!(ok(&db.cli(&["report", "generate", "daily"])).lines().count(), 4 + 7);
    // A negative count drops rows from the end, as a Python slice does.
    let out = db.cli(&["report", "generate", "monthly", "--count=-5", "--format", "csv"]);
    assert_eq!(
        ok(&out),
        "Period,Active Users,Unredeemed,New Subs,Google,Apple,Rangeproof,Plan 1m,Plan 3m,Plan 12m,Refunds Initiated,Revoked,Cancelling\r\n\
2027-12,0,0,0,0,0,0,0,0,0,0,0,1\r\n\
2027-03,0,0,0,0,0,0,0,0,0,0,0,1\n"
    );
    let out = db.cli(&["report", "generate", "monthly", "--count", "3"]);
    assert!(ok(&out).starts_with("MONTHLY REPORT\n"));
    assert!(out.stdout.ends_with("\n2027-02                       0            0          0        0       0            0          0          0          0                    0          0            1\n"), "{out:?}");
    // No rows: the text ends after the second line of dashes with an empty line.
    let out = db.cli(&["report", "generate", "daily", "--count", "0"]);
    assert_eq!(ok(&out), format!("DAILY REPORT\n{DASHES}\n{HEADER}\n{DASHES}\n\n"));
}

// ---------------------------------------------------------------------------------------------
// db
// ---------------------------------------------------------------------------------------------

#[test]
fn db_info_and_print() {
    let db = Db::new(true);
    ok(&db.cli(&["user-error", "set", "1:tok=true"]));
    let out = db.cli(&["db", "info"]);
    let size = std::fs::metadata(&db.path).unwrap().len();
    let lines: Vec<&str> = ok(&out).lines().collect();
    assert_eq!(lines.len(), 5, "{out:?}");
    assert!(
        lines[0].starts_with(&format!("  DB:                               sqlite:///{}", db.path.display())),
        "{out:?}"
    );
    assert!(lines[0].ends_with(&format!(" ({:.2} kB)", size as f64 / 1024.0)), "{out:?}");
    assert_eq!(lines[1], "  Users/Revocs/Payments/Unredeemed: 0/0/0/0");
    assert_eq!(lines[2], "  U.Errors/Google/Apple Notifs.:    1/0/0");
    assert_eq!(lines[3], "  Gen Index:                        0");
    assert_eq!(lines[4], format!("  Backend Key:                      {DEV_PUBKEY}"));

    let out = db.dry(&["db", "print"]);
    let text = ok(&out);
    for t in ["payments", "users", "revocations", "runtime", "user_errors", "google_notification_history"] {
        assert!(text.contains(&format!("Table: {t}\n")), "{text}");
    }
    assert!(text.contains("│ tok        │ Google Play Store (1) │"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// server …, tour and verify-proof against the real app
// ---------------------------------------------------------------------------------------------

async fn run_async(args: Vec<String>) -> Out {
    actix_web::rt::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&refs)
    })
    .await
    .unwrap()
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The JSON printed after `Response: ` (the last block of the output).
fn response_json(stdout: &str) -> Value {
    let at = stdout.rfind("Response: ").unwrap_or_else(|| panic!("no response in\n{stdout}"));
    serde_json::from_str(&stdout[at + "Response: ".len()..]).unwrap()
}

fn now() -> i64 {
    pro_engine::SystemClock.now_ms()
}

#[actix_web::test]
async fn server_helpers_sign_and_send_requests() {
    let server = TestServer::start(Opts::dev(now())).await;
    let url = format!("http://{}", server.addr);
    let m = "11".repeat(32);
    let r = "22".repeat(32);

    let out = run_async(args(&[
        "server",
        "add-pro-payment",
        "--url",
        &url,
        "--provider",
        "google",
        "--master-skey",
        &m,
        "--rotating-skey",
        &r,
        "--dev-plan",
        "1M",
    ]))
    .await;
    let text = ok(&out);
    assert!(
        text.starts_with("\nAdd Pro Payment via Google\nRequest:\n{\n \"version\": 0,\n \"master_pkey\": \"d04ab232"),
        "{text}"
    );
    assert!(text.contains("\n \"payment_tx\": {\n  \"provider\": 1,\n  \"google_payment_token\": \""), "{text}");
    assert!(
        text.contains("\n \"dev_plan\": \"OneMonth\"\n}\nResponse: {\n \"result\": {\n  \"expiry_unix_ts_ms\": "),
        "{text}"
    );
    let answer = response_json(text);
    assert_eq!(answer["status"], 0, "{answer}");
    assert!(crate::client::verify_proof(&answer["result"], &hex::decode(DEV_PUBKEY).unwrap().try_into().unwrap()));
    let request: Value = {
        let start = text.find("Request:\n").unwrap() + "Request:\n".len();
        let end = text.find("\nResponse: ").unwrap();
        serde_json::from_str(&text[start..end]).unwrap()
    };
    let token = request["payment_tx"]["google_payment_token"].as_str().unwrap().to_string();
    let order = request["payment_tx"]["google_order_id"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 16);
    assert!(order.starts_with("DEV.") && order.len() == 20);

    // Generated keys are printed when not given.
    let out =
        run_async(args(&["server", "add-pro-payment", "--url", &url, "--provider", "apple", "--dev-auto-renewing"]))
            .await;
    let text = ok(&out);
    for label in
        ["Generated Master SKey: ", "Generated Master PKey: ", "Generated Rotating SKey: ", "Generated Rotating PKey: "]
    {
        assert!(text.contains(label), "{text}");
    }
    assert!(text.contains("\nAdd Pro Payment via Apple\n") && text.contains("\"dev_auto_renewing\": true"), "{text}");
    assert_eq!(response_json(text)["status"], 0);
    let apple_master = field(text, "Generated Master SKey:").to_string();
    let apple_tx = text.split("\"apple_tx_id\": \"").nth(1).and_then(|r| r.split('"').next()).unwrap().to_string();
    // The server refuses Rangeproof claims; that is still exit 0 (an application error).
    let out = run_async(args(&["server", "add-pro-payment", "--url", &url, "--provider", "rangeproof"])).await;
    let answer = response_json(ok(&out));
    assert_eq!(answer["status"], 2, "{answer}");

    let out =
        run_async(args(&["server", "generate-pro-proof", "--url", &url, "--master-skey", &m, "--rotating-skey", &r]))
            .await;
    let text = ok(&out);
    assert!(text.starts_with("\nGenerate Pro Proof\nRequest:\n"), "{text}");
    assert_eq!(response_json(text)["status"], 0);

    let out = run_async(args(&["server", "get-pro-details", "--url", &url, "--master-skey", &m, "--count", "5"])).await;
    let text = ok(&out);
    assert!(text.starts_with("\nQuery Pro Details\nRequest:\n") && text.contains("\"count\": 5"), "{text}");
    let details = response_json(text);
    assert_eq!((details["status"].as_i64(), details["result"]["status"].as_i64()), (Some(0), Some(1)), "{details}");

    let out = run_async(args(&["server", "get-pro-revocations", "--url", &url, "--ticket", "3"])).await;
    let text = ok(&out);
    assert!(
        text.starts_with("\nQuery Pro Revocations (ticket: 3)\nRequest:\n{\n \"version\": 0,\n \"ticket\": 3\n}\n"),
        "{text}"
    );
    assert_eq!(response_json(text)["status"], 0);

    // Upstream crashed before sending this one. The server refuses Google refund requests (an
    // application error, so still exit 0) and records Apple ones.
    let out = run_async(args(&[
        "server",
        "set-payment-refund-requested",
        "--url",
        &url,
        "--provider",
        "google",
        "--master-skey",
        &m,
        "--payment-token",
        &token,
        "--order-id",
        &order,
    ]))
    .await;
    let text = ok(&out);
    assert!(text.starts_with("\nSet payment refund requested via Google\nRequest:\n"), "{text}");
    assert!(text.contains(&format!("\"google_order_id\": \"{order}\"")), "{text}");
    assert_eq!(response_json(text)["errors"][0], "Bad payment provider given");
    let out = run_async(args(&[
        "server",
        "set-payment-refund-requested",
        "--url",
        &url,
        "--provider",
        "apple",
        "--master-skey",
        &apple_master,
        "--tx-id",
        &apple_tx,
        "--refund-requested-unix-ts-ms",
        "1234",
    ]))
    .await;
    let text = ok(&out);
    assert!(text.starts_with("\nSet payment refund requested via Apple\nRequest:\n"), "{text}");
    let answer = response_json(text);
    assert_eq!((answer["status"].as_i64(), answer["result"]["updated"].as_bool()), (Some(0), Some(true)), "{answer}");
    let refund: i64 = server
        .sql()
        .query_row("SELECT refund_requested_unix_ts_ms FROM payments WHERE apple_tx_id = ?", [&apple_tx], |r| r.get(0))
        .unwrap();
    assert_eq!(refund, 1234);

    // Errors.
    let out = run_async(args(&[
        "server",
        "set-payment-refund-requested",
        "--url",
        &url,
        "--provider",
        "google",
        "--master-skey",
        &m,
    ]))
    .await;
    assert_eq!(failed(&out, 1), "ERROR: --payment-token and --order-id are required for Google\n");
    let out = run_async(args(&[
        "server",
        "set-payment-refund-requested",
        "--url",
        &url,
        "--provider",
        "apple",
        "--master-skey",
        &m,
    ]))
    .await;
    assert_eq!(failed(&out, 1), "ERROR: --tx-id is required for Apple\n");
    let out = run_async(args(&["server", "get-pro-details", "--url", &url, "--master-skey", "xyz"])).await;
    assert!(failed(&out, 1).starts_with("ERROR: Failed to parse master key: "), "{out:?}");
    let out =
        run_async(args(&["server", "generate-pro-proof", "--url", &url, "--master-skey", &m, "--rotating-skey", "00"]))
            .await;
    assert!(failed(&out, 1).starts_with("ERROR: Failed to parse rotating key: "), "{out:?}");
    let out = run_async(args(&["server", "get-pro-revocations", "--url", &format!("{url}/nowhere")])).await;
    assert!(failed(&out, 1).starts_with("ERROR: Server returned 404: "), "{out:?}");
    server.stop().await;
    let out = run_async(args(&["server", "get-pro-revocations", "--url", &url])).await;
    assert!(
        failed(&out, 1).starts_with(&format!("ERROR: Failed to connect to {url}/get_pro_revocations: ")),
        "{out:?}"
    );
}

#[actix_web::test]
async fn tour_visits_every_endpoint_directly_and_through_onion_requests() {
    let server = TestServer::start(Opts::dev(now())).await;
    let url = format!("http://{}", server.addr);
    let out = run_async(args(&["server", "tour", "--url", &url])).await;
    let text = ok(&out);
    assert!(text.contains(&format!("Backend Key:          {DEV_PUBKEY} (from the dev-mode key)")), "{text}");
    for endpoint in [
        "add_pro_payment",
        "generate_pro_proof",
        "get_pro_details",
        "get_pro_revocations",
        "set_payment_refund_requested",
    ] {
        assert!(text.contains(&format!("Request (POST /{endpoint}):\n")), "{endpoint}\n{text}");
        assert!(
            text.contains(&format!("Request (POST /{endpoint} inside an onion request to /oxen/v4/lsrpc, ")),
            "{endpoint}\n{text}"
        );
    }
    assert!(text.contains(", aes-gcm):") && text.contains(", xchacha20):"), "{text}");
    assert_eq!(text.matches("Proof check: valid").count(), 4, "{text}");
    assert!(text.contains("Tour finished: 10 requests, all answered with status 0 and every proof verified"), "{text}");
    assert_eq!(
        server
            .sql()
            .query_row("SELECT COUNT(*) FROM payments WHERE refund_requested_unix_ts_ms > 0", [], |r| r
                .get::<_, i64>(0))
            .unwrap(),
        2
    );

    // The key can also come from the server's database.
    let db_path = server.db_path.to_string_lossy().into_owned();
    let out = run_async(args(&["server", "tour", "--url", &url, "--db", &db_path])).await;
    assert!(ok(&out).contains("(from --db)"), "{out:?}");

    // With a wrong backend key the onion requests cannot be answered, and the tour says so.
    let wrong = "11".repeat(32);
    let wrong_pub = hex::encode(ed25519_dalek::SigningKey::from_bytes(&[0x11; 32]).verifying_key().to_bytes());
    assert_ne!(wrong, wrong_pub);
    let out = run_async(args(&["server", "tour", "--url", &url, "--backend-pubkey", &wrong_pub])).await;
    let err = failed(&out, 1);
    assert!(err.contains("problem(s) in 10 requests"), "{out:?}");
    assert!(err.contains("Server returned 400") || err.contains("could not be decrypted"), "{err}");
    server.stop().await;
}

#[actix_web::test]
async fn tour_against_a_production_server_reports_the_failures() {
    let server = TestServer::start(Opts::prod(now())).await;
    let url = format!("http://{}", server.addr);
    let backend = hex::encode(server.state.backend_pubkey);
    let out = run_async(args(&["server", "tour", "--url", &url, "--backend-pubkey", &backend])).await;
    let err = failed(&out, 1);
    assert!(err.contains("Add Pro Payment via Apple: the server answered status"), "{err}");
    server.stop().await;
}

#[actix_web::test]
async fn verify_proof_accepts_a_real_proof_and_refuses_a_tampered_one() {
    let server = TestServer::start(Opts::dev(now())).await;
    let url = format!("http://{}", server.addr);
    let out = run_async(args(&["server", "add-pro-payment", "--url", &url, "--provider", "apple"])).await;
    let answer = response_json(ok(&out));
    server.stop().await;
    let result = answer["result"].clone();
    let expiry = result["expiry_unix_ts_ms"].as_i64().unwrap();

    // The whole response or just the proof.
    let out = run(&["verify-proof", "--backend-pubkey", DEV_PUBKEY, "--proof", &answer.to_string()]);
    assert!(ok(&out).starts_with("Proof is valid\n"), "{out:?}");
    let out = run(&[
        "verify-proof",
        "--backend-pubkey",
        DEV_PUBKEY,
        "--proof",
        &result.to_string(),
        "--now-ms",
        &expiry.to_string(),
    ]);
    assert_eq!(out.code, 0, "{out:?}");

    let mut tampered = result.clone();
    tampered["expiry_unix_ts_ms"] = Value::from(expiry + DAY_MS);
    let out = run(&["verify-proof", "--backend-pubkey", DEV_PUBKEY, "--proof", &tampered.to_string()]);
    assert!(failed(&out, 1).contains("(InvalidProBackendSig)"), "{out:?}");
    let other_key = hex::encode(ed25519_dalek::SigningKey::from_bytes(&[5; 32]).verifying_key().to_bytes());
    let out = run(&["verify-proof", "--backend-pubkey", &other_key, "--proof", &result.to_string()]);
    assert!(failed(&out, 1).contains("(InvalidProBackendSig)"), "{out:?}");
    let later = (expiry + 1).to_string();
    let out =
        run(&["verify-proof", "--backend-pubkey", DEV_PUBKEY, "--proof", &result.to_string(), "--now-ms", &later]);
    assert!(failed(&out, 1).contains("(Expired)"), "{out:?}");
    let out = run(&["verify-proof", "--backend-pubkey", DEV_PUBKEY, "--proof", "{\"version\": 0}"]);
    assert!(failed(&out, 1).starts_with("ERROR: Failed to parse proof: "), "{out:?}");
}

#[actix_web::test]
async fn cli_writes_while_the_server_runs() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("live.db");
    crate::harness::prepare_db(&path, None);
    let server = TestServer::start(Opts { db: Some(path.clone()), ..Opts::dev(now()) }).await;
    let ini = dir.path().join("live.ini");
    std::fs::write(&ini, format!("[base]\ndb_path = {}\ndev = 1\n", path.display())).unwrap();
    let ini = ini.to_string_lossy().into_owned();

    // A voucher granted by the CLI is usable through the running server at once.
    let master = ed25519_dalek::SigningKey::from_bytes(&[0x33; 32]);
    let master_pub = hex::encode(master.verifying_key().to_bytes());
    let out = run_async(args(&["--config", &ini, "voucher", "--master-pkey", &master_pub, "--plan", "1M"])).await;
    ok(&out);
    let key = crate::client::Key::from_seed([0x33; 32]);
    let r = server
        .call("/generate_pro_proof", &crate::client::generate_pro_proof(&key, &crate::client::Key::random(), now()))
        .await;
    assert_eq!(r["status"], 0, "{r}");

    // Revoking through the CLI is seen by the server's next answers.
    let out = run_async(args(&[
        "--config",
        &ini,
        "revoke",
        "timestamp",
        &master_pub,
        &((now() / 1000) + 86_400).to_string(),
    ]))
    .await;
    assert!(ok(&out).ends_with("(created)\n"), "{out:?}");
    let r = server
        .call("/generate_pro_proof", &crate::client::generate_pro_proof(&key, &crate::client::Key::random(), now()))
        .await;
    assert_ne!(r["status"], 0, "{r}");
    let revs = server.call("/get_pro_revocations", &crate::client::revocations(0)).await;
    assert_eq!(revs["result"]["items"].as_array().map(Vec::len), Some(1), "{revs}");

    // Many CLI writes interleaved with server writes: nothing lost, nothing corrupted.
    let writers: Vec<_> = (0..4)
        .map(|i| {
            let ini = ini.clone();
            actix_web::rt::task::spawn_blocking(move || {
                let items: Vec<String> = (0..5).map(|j| format!("1:tok-{i}-{j}=true")).collect();
                run(&["--config", &ini, "user-error", "set", &items.join(",")])
            })
        })
        .collect();
    for i in 0..10 {
        let k = crate::client::Key::random();
        let tx = pro_engine::domain::types::PaymentTx::apple_tx(format!("DEV.live-{i}"));
        let r = server
            .call("/add_pro_payment", &crate::client::add_pro_payment(&k, &crate::client::Key::random(), &tx))
            .await;
        assert_eq!(r["status"], 0, "{r}");
    }
    for w in writers {
        let out = w.await.unwrap();
        assert!(ok(&out).starts_with("Set 5/5 user errors"), "{out:?}");
    }
    let c = server.sql();
    let n: i64 = c.query_row("SELECT COUNT(*) FROM user_errors", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 20);
    let ok_check: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok_check, "ok");
    server.stop().await;
}
