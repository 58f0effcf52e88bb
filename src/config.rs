//! Configuration loader for the Session Pro Backend daemon and its admin CLI.
//!
//! Settings are resolved in three layers, each overriding the one before it:
//!
//! 1. built-in defaults;
//! 2. the INI file, whose path comes only from `SESH_PRO_BACKEND_INI_PATH` (or, for the admin
//!    CLI, from `--config` via [`load_with_ini`]);
//! 3. `SESH_PRO_BACKEND_*` environment variables. A variable that is present replaces the INI
//!    value even when it is empty.
//!
//! Nothing in here panics, exits or touches the disk apart from reading the INI file: every
//! problem found is collected and returned together, so the caller can log them as one record and
//! exit with status 1. Key and certificate files named by the platform sections are *not* read
//! here; the platform modules do that. Directories for the database are not created here either.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path, PathBuf};

/// Listen address used when neither `[base] listen` nor `SESH_PRO_BACKEND_LISTEN` is set.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8000";
/// Request body limit used when `max_request_body_bytes` is not set (256 KiB).
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: usize = 262_144;
/// Largest accepted `max_request_body_bytes` (10 MiB).
pub const MAX_REQUEST_BODY_BYTES_LIMIT: usize = 10_485_760;
/// SQLite file used when no database is configured at all.
pub const DEFAULT_DB_PATH: &str = "./backend.db";
/// Display name of the legacy `[base] session_webhook_url` webhook when none is given.
pub const DEFAULT_WEBHOOK_NAME: &str = "Session Pro Backend";
/// Longest display name (in characters) a webhook may use.
pub const MAX_WEBHOOK_NAME_CHARS: usize = 100;

/// Names of every environment variable this module reads.
pub mod env_var {
    pub const INI_PATH: &str = "SESH_PRO_BACKEND_INI_PATH";
    pub const DB_PATH: &str = "SESH_PRO_BACKEND_DB_PATH";
    pub const DB_PATH_IS_URI: &str = "SESH_PRO_BACKEND_DB_PATH_IS_URI";
    pub const DB_URL: &str = "SESH_PRO_BACKEND_DB_URL";
    pub const LOG_PATH: &str = "SESH_PRO_BACKEND_LOG_PATH";
    pub const PRINT_TABLES: &str = "SESH_PRO_BACKEND_PRINT_TABLES";
    pub const DEV: &str = "SESH_PRO_BACKEND_DEV";
    pub const WITH_PLATFORM_APPLE: &str = "SESH_PRO_BACKEND_WITH_PLATFORM_APPLE";
    pub const WITH_PLATFORM_GOOGLE: &str = "SESH_PRO_BACKEND_WITH_PLATFORM_GOOGLE";
    pub const PLATFORM_TESTING_ENV: &str = "SESH_PRO_BACKEND_PLATFORM_TESTING_ENV";
    pub const DELETE_USER_ERRORS: &str = "SESH_PRO_BACKEND_DELETE_USER_ERRORS";
    pub const WEBHOOK_URL: &str = "SESH_PRO_BACKEND_WEBHOOK_URL";
    pub const WEBHOOK_NAME: &str = "SESH_PRO_BACKEND_WEBHOOK_NAME";
    pub const SESSION_WEBHOOK_URL: &str = "SESH_PRO_BACKEND_SESSION_WEBHOOK_URL";
    pub const SESSION_WEBHOOK_NAME: &str = "SESH_PRO_BACKEND_SESSION_WEBHOOK_NAME";
    pub const UNSAFE_LOGGING: &str = "SESH_PRO_BACKEND_UNSAFE_LOGGING";
    pub const LISTEN: &str = "SESH_PRO_BACKEND_LISTEN";
    pub const MAX_REQUEST_BODY_BYTES: &str = "SESH_PRO_BACKEND_MAX_REQUEST_BODY_BYTES";
}

/// The fully resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The INI file that was loaded, if any.
    pub ini_path: Option<PathBuf>,
    pub db: DbLocation,
    /// How the database is named in the startup banner.
    pub db_display: String,
    /// `host:port`; already checked to parse as a [`SocketAddr`].
    pub listen: String,
    pub dev: bool,
    pub unsafe_logging: bool,
    pub platform_testing_env: bool,
    pub print_tables: bool,
    /// `(payment provider, payment id)` pairs to delete from `user_errors` at startup.
    pub delete_user_errors: Vec<(u8, String)>,
    pub log_path: Option<PathBuf>,
    /// Enabled webhooks only; the legacy `[base]` one (if any) comes first.
    pub webhooks: Vec<WebhookConfig>,
    pub with_platform_apple: bool,
    pub with_platform_google: bool,
    /// Present whenever the INI has an `[apple]` section, enabled or not.
    pub apple: Option<AppleConfig>,
    /// Present whenever the INI has a `[google]` section, enabled or not.
    pub google: Option<GoogleConfig>,
    pub max_request_body_bytes: usize,
    /// Non-fatal notes the caller should log at WARNING.
    pub warnings: Vec<String>,
}

/// Where the database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbLocation {
    /// An SQLite file. With `uri` set, `path` is an SQLite URI filename (`db_path_is_uri`).
    SqliteFile { path: PathBuf, uri: bool },
    /// A private in-memory SQLite database.
    SqliteMemory,
    /// A PostgreSQL connection URL (driver suffix such as `+psycopg` removed).
    Postgres { url: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    pub name: String,
    pub url: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppleConfig {
    pub key_id: String,
    pub issuer_id: String,
    pub bundle_id: String,
    pub key_path: PathBuf,
    pub root_cert_path: PathBuf,
    pub root_cert_ca_g2_path: PathBuf,
    pub root_cert_ca_g3_path: PathBuf,
    pub sandbox_env: bool,
    /// `app_id` (latest spelling) or `production_app_id` (seed spelling).
    pub app_id: Option<i64>,
    /// Override for the App Store Server API base URL; `None` means "pick by `sandbox_env`".
    pub api_base_url: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GoogleConfig {
    pub package_name: String,
    /// `cloud_project_id` (latest) or `project_name` (seed).
    pub cloud_project_id: String,
    /// `cloud_subscription_name` (latest) or `subscription_name` (seed).
    pub cloud_subscription_name: String,
    pub subscription_product_id: String,
    /// `cloud_app_credentials_path` (latest) or `application_credentials_path` (seed).
    pub cloud_app_credentials_path: PathBuf,
    pub pubsub_base_url: Option<String>,
    pub androidpublisher_base_url: Option<String>,
    pub oauth_token_url: Option<String>,
}

/// Resolves the configuration from defaults, the INI named by `SESH_PRO_BACKEND_INI_PATH` in
/// `env`, and the `SESH_PRO_BACKEND_*` overrides in `env`.
///
/// On failure every problem found is returned, one message per entry.
pub fn load(env: &HashMap<String, String>) -> Result<Config, Vec<String>> {
    let mut warnings = Vec::new();
    let mut db_path_used_as_ini = false;
    let ini = match env.get(env_var::INI_PATH).filter(|p| !p.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None => match env.get(env_var::DB_PATH) {
            // The requirement text once told people to put the INI path in DB_PATH; honour that
            // when it obviously names an INI file and INI_PATH says nothing.
            Some(p) if ends_with_ini(p) => {
                warnings.push(format!(
                    "{} ends in .ini and {} is not set: using \"{p}\" as the .INI config file \
                     (set {} instead)",
                    env_var::DB_PATH,
                    env_var::INI_PATH,
                    env_var::INI_PATH
                ));
                db_path_used_as_ini = true;
                Some(PathBuf::from(p))
            }
            _ => None,
        },
    };
    resolve(ini.as_deref(), env, warnings, db_path_used_as_ini)
}

/// Like [`load`], but the INI path is given explicitly (admin CLI `--config`) and
/// `SESH_PRO_BACKEND_INI_PATH` is ignored. `None` means no INI at all. Environment overrides
/// still apply.
pub fn load_with_ini(ini: Option<&Path>, env: &HashMap<String, String>) -> Result<Config, Vec<String>> {
    resolve(ini, env, Vec::new(), false)
}

// ---------------------------------------------------------------------------------------------
// Resolution
// ---------------------------------------------------------------------------------------------

fn resolve(
    ini_path: Option<&Path>,
    env: &HashMap<String, String>,
    mut warnings: Vec<String>,
    db_path_used_as_ini: bool,
) -> Result<Config, Vec<String>> {
    let mut errors: Vec<String> = Vec::new();

    // Layer 2: the INI file. If it cannot be read or parsed there is nothing sensible to build
    // on, but the environment is still checked so that all type errors show up in one go.
    let mut ini_ok = true;
    let ini = match ini_path {
        None => Ini::default(),
        Some(path) => match read_ini(path) {
            Ok(ini) => ini,
            Err(errs) => {
                errors.extend(errs.iter().map(ToString::to_string));
                ini_ok = false;
                Ini::default()
            }
        },
    };
    let base = match ini.section("base") {
        Some(base) => base,
        None => {
            if let (Some(path), true) = (ini_path, ini_ok) {
                errors.push(format!(".INI config file \"{}\" has no [base] section", path.display()));
            }
            ini.empty_section("base")
        }
    };

    let ini_db_path = base.get("db_path");
    let ini_db_path_is_uri = ini_bool(&base, "db_path_is_uri", &mut errors);
    let ini_db_url = base.get("db_url");
    let ini_log_path = base.get("log_path");
    let ini_print_tables = ini_bool(&base, "print_tables", &mut errors);
    let ini_dev = ini_bool(&base, "dev", &mut errors);
    let ini_apple = ini_bool(&base, "with_platform_apple", &mut errors);
    let ini_google = ini_bool(&base, "with_platform_google", &mut errors);
    // Seed/requirement spelling first so that the latest spelling wins when both are present.
    let ini_testing_old = ini_bool(&base, "platform_testing_environment", &mut errors);
    let ini_testing_new = ini_bool(&base, "platform_testing_env", &mut errors);
    let ini_testing = if base.contains("platform_testing_env") { ini_testing_new } else { ini_testing_old };
    let ini_unsafe_logging = ini_bool(&base, "unsafe_logging", &mut errors);
    let ini_delete_user_errors = base.get("delete_user_errors");
    let ini_webhook_url = base.get("session_webhook_url");
    let ini_webhook_name = base.get("session_webhook_name");
    let ini_listen = base.get("listen");
    let ini_body_limit = base
        .get("max_request_body_bytes")
        .and_then(|v| body_limit(&v, &format!("[base] max_request_body_bytes = {v}"), &mut errors));

    // Layer 3: the environment.
    let env_str = |name: &str| env.get(name).cloned();
    let env_db_path = match env.get(env_var::DB_PATH) {
        Some(p) if ends_with_ini(p) => {
            if !db_path_used_as_ini {
                warnings.push(format!(
                    "{} (\"{p}\") ends in .ini, so it is not used as the database path",
                    env_var::DB_PATH
                ));
            }
            None
        }
        other => other.cloned(),
    };
    let env_db_path_is_uri = env_bool(env, env_var::DB_PATH_IS_URI, &mut errors);
    let env_db_url = env_str(env_var::DB_URL);
    let env_log_path = env_str(env_var::LOG_PATH);
    let env_print_tables = env_bool(env, env_var::PRINT_TABLES, &mut errors);
    let env_dev = env_bool(env, env_var::DEV, &mut errors);
    let env_apple = env_bool(env, env_var::WITH_PLATFORM_APPLE, &mut errors);
    let env_google = env_bool(env, env_var::WITH_PLATFORM_GOOGLE, &mut errors);
    // Upstream wrote this one into with_platform_google by mistake; it means testing mode here.
    let env_testing = env_bool(env, env_var::PLATFORM_TESTING_ENV, &mut errors);
    let env_unsafe_logging = env_bool(env, env_var::UNSAFE_LOGGING, &mut errors);
    let env_delete_user_errors = env_str(env_var::DELETE_USER_ERRORS);
    let env_webhook_url = env_str(env_var::SESSION_WEBHOOK_URL).or_else(|| env_str(env_var::WEBHOOK_URL));
    let env_webhook_name = env_str(env_var::SESSION_WEBHOOK_NAME).or_else(|| env_str(env_var::WEBHOOK_NAME));
    let env_listen = env_str(env_var::LISTEN);
    let env_body_limit = env
        .get(env_var::MAX_REQUEST_BODY_BYTES)
        .and_then(|v| body_limit(v, &format!("{}={v}", env_var::MAX_REQUEST_BODY_BYTES), &mut errors));

    if !ini_ok {
        return Err(errors);
    }

    // Merge: the environment beats the INI, the INI beats the defaults.
    let db_path = env_db_path.or(ini_db_path).unwrap_or_default();
    let db_path_is_uri = env_db_path_is_uri.or(ini_db_path_is_uri).unwrap_or(false);
    let db_url = env_db_url.or(ini_db_url).unwrap_or_default();
    let log_path = env_log_path.or(ini_log_path).filter(|p| !p.is_empty()).map(PathBuf::from);
    let print_tables = env_print_tables.or(ini_print_tables).unwrap_or(false);
    let dev = env_dev.or(ini_dev).unwrap_or(false);
    let with_platform_apple = env_apple.or(ini_apple).unwrap_or(false);
    let with_platform_google = env_google.or(ini_google).unwrap_or(false);
    let mut platform_testing_env = env_testing.or(ini_testing).unwrap_or(false);
    let unsafe_logging = env_unsafe_logging.or(ini_unsafe_logging).unwrap_or(false);
    let delete_arg = env_delete_user_errors.or(ini_delete_user_errors).unwrap_or_default();
    let webhook_url = env_webhook_url.or(ini_webhook_url).unwrap_or_default();
    let webhook_name = env_webhook_name.or(ini_webhook_name).unwrap_or_default();
    // An empty value means "not set", so it falls back to the default like an absent one.
    let listen = env_listen.or(ini_listen).filter(|l| !l.is_empty()).unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let max_request_body_bytes = env_body_limit.or(ini_body_limit).unwrap_or(DEFAULT_MAX_REQUEST_BODY_BYTES);

    if listen.parse::<SocketAddr>().is_err() {
        errors.push(format!(
            "Invalid listen address '{listen}': expected an IP address and port such as {DEFAULT_LISTEN} or [::1]:8000"
        ));
    }

    let delete_user_errors = match parse_delete_user_errors(&delete_arg) {
        Ok(items) => items,
        Err(msg) => {
            errors.push(msg);
            Vec::new()
        }
    };

    // Webhooks: the legacy [base] pair first, then [session_webhook.N].
    let mut webhooks = Vec::new();
    if !webhook_url.is_empty() {
        let name = if webhook_name.is_empty() { DEFAULT_WEBHOOK_NAME.to_owned() } else { webhook_name };
        let label = "session_webhook_url ([base] or environment)";
        if check_webhook(label, &name, &webhook_url, &mut errors) {
            webhooks.push(WebhookConfig { name, url: webhook_url });
        }
    }
    webhooks.extend(read_webhook_sections(&ini, &mut errors));

    // Platform sections are parsed whenever present; their problems only count as errors when
    // the platform ends up enabled, and are demoted to warnings otherwise.
    let apple = ini.section("apple").map(|sec| {
        let mut problems = Vec::new();
        let cfg = parse_apple(&sec, &mut problems);
        route_problems(problems, with_platform_apple, "Apple", &mut errors, &mut warnings);
        cfg
    });
    let google = ini.section("google").map(|sec| {
        let mut problems = Vec::new();
        let cfg = parse_google(&sec, &mut problems);
        route_problems(problems, with_platform_google, "Google", &mut errors, &mut warnings);
        cfg
    });
    if with_platform_apple {
        validate_apple(apple.as_ref(), &mut errors);
        let sandbox = apple.as_ref().is_some_and(|a| a.sandbox_env);
        if sandbox && !platform_testing_env {
            warnings.push(
                "Platform Apple was enabled in sandbox mode but platform_testing_env was not set to true. \
                 You want to set this to true, overriding the flag to true"
                    .to_owned(),
            );
            platform_testing_env = true;
        }
    }
    if with_platform_google {
        validate_google(google.as_ref(), &mut errors);
    }

    // Database choice.
    let named_db_by_env =
        env.contains_key(env_var::DB_URL) || env.get(env_var::DB_PATH).is_some_and(|p| !ends_with_ini(p));
    let warn_on_default = ini_path.is_some() || named_db_by_env;
    let db = choose_db(&db_path, db_path_is_uri, &db_url, warn_on_default, &mut warnings);
    let (db, db_display) = match db {
        Ok(found) => found,
        Err(msg) => {
            errors.push(msg);
            (DbLocation::SqliteMemory, String::new())
        }
    };

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Config {
        ini_path: ini_path.map(Path::to_path_buf),
        db,
        db_display,
        listen,
        dev,
        unsafe_logging,
        platform_testing_env,
        print_tables,
        delete_user_errors,
        log_path,
        webhooks,
        with_platform_apple,
        with_platform_google,
        apple,
        google,
        max_request_body_bytes,
        warnings,
    })
}

fn ends_with_ini(path: &str) -> bool {
    path.len() >= 4 && path.get(path.len() - 4..).is_some_and(|ext| ext.eq_ignore_ascii_case(".ini"))
}

/// Reads an INI boolean (configparser rules); a bad value is reported and treated as unset.
fn ini_bool(sec: &SectionView<'_>, key: &str, errors: &mut Vec<String>) -> Option<bool> {
    let raw = sec.get(key)?;
    match parse_ini_bool(&raw) {
        Some(b) => Some(b),
        None => {
            errors.push(format!("Invalid value for '{key}' in [{}] of the .INI file: Not a boolean: {raw}", sec.name));
            None
        }
    }
}

fn parse_ini_bool(raw: &str) -> Option<bool> {
    match raw.to_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Some(true),
        "0" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

/// Reads an environment boolean, which must be exactly `0` or `1`.
fn env_bool(env: &HashMap<String, String>, name: &str, errors: &mut Vec<String>) -> Option<bool> {
    match env.get(name)?.as_str() {
        "0" => Some(false),
        "1" => Some(true),
        other => {
            errors
                .push(format!("Invalid value for environment variable '{name}': {other}. Allowed values are 0 or 1."));
            None
        }
    }
}

/// Parses an integer the way Python's `int()` does for base 10: optional sign, ASCII digits,
/// single underscores allowed between digits, surrounding whitespace ignored.
fn parse_decimal(raw: &str) -> Option<i64> {
    let t = raw.trim();
    let (negative, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let well_formed = !digits.is_empty()
        && !digits.starts_with('_')
        && !digits.ends_with('_')
        && !digits.contains("__")
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_');
    if !well_formed {
        return None;
    }
    let cleaned: String = digits.chars().filter(|c| *c != '_').collect();
    let value: i64 = cleaned.parse().ok()?;
    Some(if negative { -value } else { value })
}

/// Parses and range-checks `max_request_body_bytes`. Empty means "use the default".
fn body_limit(raw: &str, shown: &str, errors: &mut Vec<String>) -> Option<usize> {
    if raw.is_empty() {
        return None;
    }
    match parse_decimal(raw).and_then(|v| usize::try_from(v).ok()) {
        Some(v) if (1..=MAX_REQUEST_BODY_BYTES_LIMIT).contains(&v) => Some(v),
        _ => {
            errors.push(format!(
                "Invalid max_request_body_bytes ({shown}): must be a whole number of bytes from 1 to {MAX_REQUEST_BODY_BYTES_LIMIT}"
            ));
            None
        }
    }
}

/// Parses `delete_user_errors`: a comma list of `<provider int>:<payment id>`. The first bad item
/// stops parsing, as upstream does.
fn parse_delete_user_errors(arg: &str) -> Result<Vec<(u8, String)>, String> {
    let mut items = Vec::new();
    if arg.is_empty() {
        return Ok(items);
    }
    for raw_item in arg.split(',') {
        let item = raw_item.trim();
        let Some((provider, payment_id)) = item.split_once(':') else {
            return Err(format!(
                "Invalid format for delete user error: '{item}'. Expected '<payment_provider>:<payment_id>'."
            ));
        };
        let provider = provider.trim();
        // Any value of the PaymentProvider enum is accepted: 0 Nil, 1 Google, 2 Apple, 3 Rangeproof.
        match parse_decimal(provider).and_then(|p| u8::try_from(p).ok()).filter(|p| *p <= 3) {
            Some(p) => items.push((p, payment_id.to_owned())),
            None => {
                return Err(format!("Failed to parse payment provider ({provider}) for item {item} (arg was: {arg})"));
            }
        }
    }
    Ok(items)
}

/// Checks an enabled webhook's name length and URL; returns whether it is usable.
fn check_webhook(label: &str, name: &str, url: &str, errors: &mut Vec<String>) -> bool {
    let mut ok = true;
    let name_chars = name.chars().count();
    if name_chars > MAX_WEBHOOK_NAME_CHARS {
        errors.push(format!("Webhook {label}: Display name must be less than 100 characters: {name_chars}"));
        ok = false;
    }
    let scheme_ok = parse_url(url).is_some_and(|u| u.scheme == "http" || u.scheme == "https");
    if !scheme_ok {
        errors.push(format!("Webhook {label}: url '{url}' is not a valid http:// or https:// URL"));
        ok = false;
    }
    ok
}

/// Reads `[session_webhook.0]`, `[session_webhook.1]`, ... up to the first missing index and
/// returns the enabled, valid ones.
fn read_webhook_sections(ini: &Ini, errors: &mut Vec<String>) -> Vec<WebhookConfig> {
    let mut found = Vec::new();
    for index in 0usize.. {
        let label = format!("session_webhook.{index}");
        let Some(sec) = ini.section(&label) else {
            break;
        };
        // `enabled` is converted before the presence checks, as upstream does.
        let enabled = match sec.get("enabled") {
            None => None,
            Some(raw) => match parse_ini_bool(&raw) {
                Some(b) => Some(b),
                None => {
                    errors.push(format!(
                        "Invalid value for 'enabled' in [{label}] of the .INI file: Not a boolean: {raw}"
                    ));
                    continue;
                }
            },
        };
        let (name, url) = (sec.get("name"), sec.get("url"));
        let missing = if name.is_none() {
            Some("name")
        } else if url.is_none() {
            Some("url")
        } else if enabled.is_none() {
            Some("enabled")
        } else {
            None
        };
        if let Some(key) = missing {
            errors.push(format!("Failed to parse webhook section {label}, missing '{key}'"));
            continue;
        }
        let (Some(name), Some(url), Some(true)) = (name, url, enabled) else {
            continue; // a disabled section is not checked any further
        };
        if check_webhook(&format!("section {label}"), &name, &url, errors) {
            found.push(WebhookConfig { name, url });
        }
    }
    found
}

fn route_problems(
    problems: Vec<String>,
    enabled: bool,
    platform: &str,
    errors: &mut Vec<String>,
    warnings: &mut Vec<String>,
) {
    if enabled {
        errors.extend(problems);
    } else {
        warnings.extend(problems.into_iter().map(|p| format!("Ignored because platform {platform} is disabled: {p}")));
    }
}

/// Reads an optional service base URL option; empty means unset.
fn service_url(sec: &SectionView<'_>, key: &str, problems: &mut Vec<String>) -> Option<String> {
    let url = sec.get(key).filter(|u| !u.is_empty())?;
    if is_allowed_service_url(&url) {
        Some(url)
    } else {
        problems.push(format!(
            "Invalid {key} '{url}' in [{}]: it must be an https:// URL (plain http:// is only \
             allowed for a loopback host: 127.0.0.0/8, ::1 or localhost)",
            sec.name
        ));
        None
    }
}

fn parse_apple(sec: &SectionView<'_>, problems: &mut Vec<String>) -> AppleConfig {
    let text = |key: &str| sec.get(key).unwrap_or_default();
    let sandbox_env = match sec.get("sandbox_env") {
        None => false,
        Some(raw) => parse_ini_bool(&raw).unwrap_or_else(|| {
            problems.push(format!("Invalid value for 'sandbox_env' in [apple] of the .INI file: Not a boolean: {raw}"));
            false
        }),
    };
    // Latest spelling `app_id` wins over the seed spelling `production_app_id`.
    let app_id_key = if sec.contains("app_id") { "app_id" } else { "production_app_id" };
    let app_id = match sec.get(app_id_key).filter(|v| !v.is_empty()) {
        None => None,
        Some(raw) => {
            let parsed = parse_decimal(&raw);
            if parsed.is_none() {
                problems.push(format!(
                    "Invalid value for '{app_id_key}' in [apple] of the .INI file: expected a decimal integer, got '{raw}'"
                ));
            }
            parsed
        }
    };
    AppleConfig {
        key_id: text("key_id"),
        issuer_id: text("issuer_id"),
        bundle_id: text("bundle_id"),
        key_path: PathBuf::from(text("key_path")),
        root_cert_path: PathBuf::from(text("root_cert_path")),
        root_cert_ca_g2_path: PathBuf::from(text("root_cert_ca_g2_path")),
        root_cert_ca_g3_path: PathBuf::from(text("root_cert_ca_g3_path")),
        sandbox_env,
        app_id,
        api_base_url: service_url(sec, "api_base_url", problems),
    }
}

fn validate_apple(apple: Option<&AppleConfig>, errors: &mut Vec<String>) {
    let blank = AppleConfig::default();
    let apple = match apple {
        Some(a) => a,
        None => {
            errors.push("Platform Apple was enabled but [apple] section is missing".to_owned());
            &blank
        }
    };
    let required: [(&str, bool); 7] = [
        ("key_id", apple.key_id.is_empty()),
        ("issuer_id", apple.issuer_id.is_empty()),
        ("bundle_id", apple.bundle_id.is_empty()),
        ("key_path", apple.key_path.as_os_str().is_empty()),
        ("root_cert_path", apple.root_cert_path.as_os_str().is_empty()),
        ("root_cert_ca_g2_path", apple.root_cert_ca_g2_path.as_os_str().is_empty()),
        ("root_cert_ca_g3_path", apple.root_cert_ca_g3_path.as_os_str().is_empty()),
    ];
    for (key, missing) in required {
        if missing {
            errors.push(format!("Platform Apple was enabled but {key} was not specified"));
        }
    }
    if !apple.sandbox_env && apple.app_id.is_none() {
        errors.push(
            "Platform Apple was enabled in production mode (e.g. not sandbox mode) but the \
             production_app_id was not specified"
                .to_owned(),
        );
    }
}

fn parse_google(sec: &SectionView<'_>, problems: &mut Vec<String>) -> GoogleConfig {
    // For renamed keys the latest spelling wins whenever it is present.
    let renamed = |latest: &str, seed: &str| sec.get(latest).or_else(|| sec.get(seed)).unwrap_or_default();
    GoogleConfig {
        package_name: sec.get("package_name").unwrap_or_default(),
        cloud_project_id: renamed("cloud_project_id", "project_name"),
        cloud_subscription_name: renamed("cloud_subscription_name", "subscription_name"),
        subscription_product_id: sec.get("subscription_product_id").unwrap_or_default(),
        cloud_app_credentials_path: PathBuf::from(renamed(
            "cloud_app_credentials_path",
            "application_credentials_path",
        )),
        pubsub_base_url: service_url(sec, "pubsub_base_url", problems),
        androidpublisher_base_url: service_url(sec, "androidpublisher_base_url", problems),
        oauth_token_url: service_url(sec, "oauth_token_url", problems),
    }
}

fn validate_google(google: Option<&GoogleConfig>, errors: &mut Vec<String>) {
    let blank = GoogleConfig::default();
    let google = match google {
        Some(g) => g,
        None => {
            errors.push("Platform Google was enabled but [google] section is missing".to_owned());
            &blank
        }
    };
    // The credentials line keeps upstream's wording (`cloud_application_credentials_path`).
    let required: [(&str, bool); 5] = [
        ("package_name", google.package_name.is_empty()),
        ("cloud_project_id", google.cloud_project_id.is_empty()),
        ("cloud_subscription_name", google.cloud_subscription_name.is_empty()),
        ("cloud_application_credentials_path", google.cloud_app_credentials_path.as_os_str().is_empty()),
        ("subscription_product_id", google.subscription_product_id.is_empty()),
    ];
    for (key, missing) in required {
        if missing {
            errors.push(format!("Platform Google was enabled but {key} was not specified"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Database location
// ---------------------------------------------------------------------------------------------

fn choose_db(
    db_path: &str,
    db_path_is_uri: bool,
    db_url: &str,
    warn_on_default: bool,
    warnings: &mut Vec<String>,
) -> Result<(DbLocation, String), String> {
    if !db_path.is_empty() {
        if !db_url.is_empty() {
            warnings
                .push(format!("Both db_path (\"{db_path}\") and db_url are set; using db_path and ignoring db_url"));
        }
        let display = if db_path_is_uri { format!("{db_path} (URI)") } else { sqlite_display(Path::new(db_path)) };
        return Ok((DbLocation::SqliteFile { path: PathBuf::from(db_path), uri: db_path_is_uri }, display));
    }
    if !db_url.is_empty() {
        return parse_db_url(db_url);
    }
    if warn_on_default {
        warnings.push(format!(
            "No database configured (db_path and db_url are empty); using the default {DEFAULT_DB_PATH}"
        ));
    }
    let path = PathBuf::from(DEFAULT_DB_PATH);
    let display = sqlite_display(&path);
    Ok((DbLocation::SqliteFile { path, uri: false }, display))
}

/// Names an SQLite file as an absolute `sqlite:///` URL for the banner.
fn sqlite_display(path: &Path) -> String {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        match std::env::current_dir() {
            Ok(cwd) => cwd.join(path),
            Err(_) => path.to_path_buf(),
        }
    };
    // Drop `.` components lexically; nothing on disk is consulted.
    let cleaned: PathBuf = absolute.components().filter(|c| *c != Component::CurDir).collect();
    format!("sqlite:///{}", cleaned.display())
}

/// Maps a SQLAlchemy-style database URL onto a [`DbLocation`] and its banner text.
fn parse_db_url(url: &str) -> Result<(DbLocation, String), String> {
    let unparsable =
        || format!("Failed to open/connect to DB at {url}: Could not parse SQLAlchemy URL from given URL string");
    let (scheme, rest) = url.split_once("://").ok_or_else(unparsable)?;
    let scheme_ok =
        !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err(unparsable());
    }
    // `dialect+driver`: only the dialect matters here.
    let dialect = scheme.split('+').next().unwrap_or_default().to_ascii_lowercase();
    match dialect.as_str() {
        "sqlite" => {
            let database = if rest.is_empty() {
                ""
            } else {
                let Some(after_slash) = rest.strip_prefix('/') else {
                    return Err(format!(
                        "Unsupported db_url '{url}': an sqlite URL takes no host; use sqlite:///relative.db, \
                         sqlite:////absolute.db or sqlite:// (in memory)"
                    ));
                };
                after_slash.split('?').next().unwrap_or_default()
            };
            if database.is_empty() || database == ":memory:" {
                Ok((DbLocation::SqliteMemory, url.to_owned()))
            } else {
                Ok((DbLocation::SqliteFile { path: PathBuf::from(database), uri: false }, url.to_owned()))
            }
        }
        "postgresql" | "postgres" => {
            let normalized = format!("{dialect}://{rest}");
            let display = mask_url_password(&normalized);
            Ok((DbLocation::Postgres { url: normalized }, display))
        }
        _ => Err(format!("Unsupported db_url '{url}': the scheme must be sqlite:// or postgresql://")),
    }
}

/// Replaces the password in `scheme://user:password@host/...` so the banner never shows it.
fn mask_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let (userinfo, host) = authority.split_at(at);
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{host}{tail}"),
        None => url.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// URLs
// ---------------------------------------------------------------------------------------------

struct UrlParts {
    scheme: String,
    host: String,
}

/// A deliberately small absolute-URL check: `scheme://[user@]host[:port][/...]` with a non-empty
/// host, a numeric port if any, and no whitespace or control characters anywhere.
fn parse_url(url: &str) -> Option<UrlParts> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let (scheme, rest) = url.split_once("://")?;
    if scheme.is_empty() || !scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) {
        return None;
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (inside, after) = bracketed.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (inside, port)
    } else {
        match host_port.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    if let Some(port) = port
        && (port.is_empty() || port.parse::<u16>().is_err())
    {
        return None;
    }
    Some(UrlParts { scheme: scheme.to_ascii_lowercase(), host: host.to_owned() })
}

/// `https://` anywhere, or `http://` to a loopback host only.
fn is_allowed_service_url(url: &str) -> bool {
    match parse_url(url) {
        Some(u) if u.scheme == "https" => true,
        Some(u) if u.scheme == "http" => {
            u.host.eq_ignore_ascii_case("localhost") || u.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// INI reading
// ---------------------------------------------------------------------------------------------
//
// The syntax follows Python's `configparser` defaults, which upstream used. rust-ini (named on
// the design card) is not used for this: it differs from configparser where it matters. It
// folds comment lines that sit between continuation lines into the value, it glues a line
// without `=`/`:` onto the next key instead of rejecting it, it joins lines ending in `\`, it
// lets options appear before any section, and it has neither duplicate detection nor `[DEFAULT]`
// inheritance. The only malformed input it rejects (an empty key) is rejected here as well, so
// a pre-check through it would add nothing and could only reject files configparser accepts.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
enum IniError {
    #[error(".INI config file \"{path}\", was specified but does not exist/is not readable")]
    Unreadable { path: String },
    #[error(".INI config file \"{path}\" is not valid UTF-8 text")]
    NotUtf8 { path: String },
    #[error(".INI config file \"{path}\", line {line}: an option appears before any [section] header: '{text}'")]
    NoSectionHeader { path: String, line: usize, text: String },
    #[error(".INI config file \"{path}\", line {line}: section [{section}] already exists")]
    DuplicateSection { path: String, line: usize, section: String },
    #[error(".INI config file \"{path}\", line {line}: option '{option}' in section [{section}] already exists")]
    DuplicateOption { path: String, line: usize, section: String, option: String },
    #[error(".INI config file \"{path}\", line {line}: expected '[section]', 'key = value' or a comment, got '{text}'")]
    BadLine { path: String, line: usize, text: String },
}

/// A parsed INI file. Option names are stored lower-cased; values are raw (before `%%` folding).
#[derive(Debug, Default)]
struct Ini {
    defaults: Vec<(String, String)>,
    sections: Vec<(String, Vec<(String, String)>)>,
}

/// One section as seen through `[DEFAULT]` fallback.
struct SectionView<'a> {
    name: &'a str,
    own: &'a [(String, String)],
    defaults: &'a [(String, String)],
}

impl Ini {
    fn section<'a>(&'a self, name: &'a str) -> Option<SectionView<'a>> {
        self.sections.iter().find(|(n, _)| n == name).map(|(n, own)| SectionView {
            name: n,
            own,
            defaults: &self.defaults,
        })
    }

    /// A stand-in for a missing section (still sees `[DEFAULT]`, which does not matter here
    /// because a missing `[base]` is already an error).
    fn empty_section<'a>(&'a self, name: &'a str) -> SectionView<'a> {
        SectionView { name, own: &[], defaults: &[] }
    }
}

impl SectionView<'_> {
    fn raw(&self, key: &str) -> Option<&str> {
        let key = key.to_lowercase();
        self.own.iter().chain(self.defaults.iter()).find(|(k, _)| *k == key).map(|(_, v)| v.as_str())
    }

    fn contains(&self, key: &str) -> bool {
        self.raw(key).is_some()
    }

    /// The option's value with `%%` read as `%`; any other `%` is kept as it is.
    fn get(&self, key: &str) -> Option<String> {
        self.raw(key).map(|v| v.replace("%%", "%"))
    }
}

fn read_ini(path: &Path) -> Result<Ini, Vec<IniError>> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|_| vec![IniError::Unreadable { path: shown.clone() }])?;
    let text = String::from_utf8(bytes).map_err(|_| vec![IniError::NotUtf8 { path: shown.clone() }])?;
    parse_ini(&text, &shown)
}

#[derive(Clone, Copy)]
enum Target {
    Defaults,
    Section(usize),
}

type RawEntries = Vec<(String, Vec<String>)>;

fn entries_of<'a>(
    defaults: &'a mut RawEntries,
    sections: &'a mut [(String, RawEntries)],
    target: Target,
) -> &'a mut RawEntries {
    match target {
        Target::Defaults => defaults,
        Target::Section(i) => &mut sections[i].1,
    }
}

/// `[name]` with at least one character between the first `[` and the last `]`.
fn section_header(line: &str) -> Option<&str> {
    let inner = line.strip_prefix('[')?;
    let end = inner.rfind(']')?;
    (end > 0).then(|| &inner[..end])
}

/// Parses INI text with configparser's default rules. Lines that are not understood are all
/// reported; a duplicate section/option or an option outside any section stops parsing at once
/// (configparser does the same).
fn parse_ini(text: &str, path: &str) -> Result<Ini, Vec<IniError>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Universal newlines: \r\n, \r and \n all end a line.
    let text = text.replace("\r\n", "\n").replace('\r', "\n");

    let mut defaults: RawEntries = Vec::new();
    let mut sections: Vec<(String, RawEntries)> = Vec::new();
    let mut current: Option<(Target, String)> = None;
    let mut current_option: Option<usize> = None;
    let mut indent_level = 0usize;
    let mut seen_options: HashSet<(String, String)> = HashSet::new();
    let mut bad_lines: Vec<IniError> = Vec::new();

    for (index, line) in text.split('\n').enumerate() {
        let lineno = index + 1;
        let stripped = line.trim();
        let is_comment = stripped.starts_with('#') || stripped.starts_with(';');
        if stripped.is_empty() || is_comment {
            // A blank line inside a value is kept (trailing ones are trimmed at the end); a
            // comment line is dropped without ending the value.
            if !is_comment && let (Some((target, _)), Some(opt)) = (&current, current_option) {
                entries_of(&mut defaults, &mut sections, *target)[opt].1.push(String::new());
            }
            continue;
        }

        let indent = line.chars().take_while(|c| c.is_whitespace()).count();
        if let (Some((target, _)), Some(opt)) = (&current, current_option)
            && indent > indent_level
        {
            // Indented deeper than the option line: a continuation of its value.
            entries_of(&mut defaults, &mut sections, *target)[opt].1.push(stripped.to_owned());
            continue;
        }
        indent_level = indent;

        if let Some(header) = section_header(stripped) {
            let target = if header == "DEFAULT" {
                Target::Defaults
            } else if sections.iter().any(|(name, _)| name == header) {
                bad_lines.push(IniError::DuplicateSection {
                    path: path.to_owned(),
                    line: lineno,
                    section: header.to_owned(),
                });
                return Err(bad_lines);
            } else {
                sections.push((header.to_owned(), Vec::new()));
                Target::Section(sections.len() - 1)
            };
            current = Some((target, header.to_owned()));
            current_option = None;
            continue;
        }

        let Some((target, section_name)) = &current else {
            bad_lines.push(IniError::NoSectionHeader {
                path: path.to_owned(),
                line: lineno,
                text: stripped.to_owned(),
            });
            return Err(bad_lines);
        };
        let Some(split) = stripped.find(['=', ':']) else {
            bad_lines.push(IniError::BadLine { path: path.to_owned(), line: lineno, text: stripped.to_owned() });
            continue;
        };
        let name = stripped[..split].trim_end().to_lowercase();
        let value = stripped[split + 1..].trim().to_owned();
        if name.is_empty() {
            bad_lines.push(IniError::BadLine { path: path.to_owned(), line: lineno, text: stripped.to_owned() });
        }
        if !seen_options.insert((section_name.clone(), name.clone())) {
            bad_lines.push(IniError::DuplicateOption {
                path: path.to_owned(),
                line: lineno,
                section: section_name.clone(),
                option: name,
            });
            return Err(bad_lines);
        }
        let entries = entries_of(&mut defaults, &mut sections, *target);
        entries.push((name, vec![value]));
        current_option = Some(entries.len() - 1);
    }

    if !bad_lines.is_empty() {
        return Err(bad_lines);
    }
    let join = |entries: RawEntries| -> Vec<(String, String)> {
        entries.into_iter().map(|(k, lines)| (k, lines.join("\n").trim_end().to_owned())).collect()
    };
    Ok(Ini {
        defaults: join(defaults),
        sections: sections.into_iter().map(|(name, entries)| (name, join(entries))).collect(),
    })
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An INI file in the temp directory, removed again on drop.
    struct TempIni(PathBuf);

    impl TempIni {
        fn new(contents: &str) -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
            let path =
                std::env::temp_dir().join(format!("pro-backend-config-test-{}-{n}-{nanos}.ini", std::process::id()));
            std::fs::write(&path, contents).expect("write temp ini");
            TempIni(path)
        }

        fn path_str(&self) -> String {
            self.0.display().to_string()
        }
    }

    impl Drop for TempIni {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    /// Loads `contents` as the INI named by SESH_PRO_BACKEND_INI_PATH, plus extra env pairs.
    fn load_ini(contents: &str, extra: &[(&str, &str)]) -> (TempIni, Result<Config, Vec<String>>) {
        let ini = TempIni::new(contents);
        let mut e = env(extra);
        e.insert(env_var::INI_PATH.to_owned(), ini.path_str());
        let result = load(&e);
        (ini, result)
    }

    fn ok(contents: &str, extra: &[(&str, &str)]) -> Config {
        let (_ini, result) = load_ini(contents, extra);
        match result {
            Ok(c) => c,
            Err(e) => panic!("expected Ok, got errors: {e:#?}"),
        }
    }

    fn errs(contents: &str, extra: &[(&str, &str)]) -> Vec<String> {
        let (_ini, result) = load_ini(contents, extra);
        match result {
            Ok(c) => panic!("expected errors, got {c:#?}"),
            Err(e) => e,
        }
    }

    fn env_errs(pairs: &[(&str, &str)]) -> Vec<String> {
        match load(&env(pairs)) {
            Ok(c) => panic!("expected errors, got {c:#?}"),
            Err(e) => e,
        }
    }

    fn parse(text: &str) -> Result<Ini, Vec<IniError>> {
        parse_ini(text, "t.ini")
    }

    const APPLE_OK: &str = "[apple]\nkey_id = KID\nissuer_id = ISS\nbundle_id = com.example\n\
        key_path = /k/key.p8\nroot_cert_path = /k/root.cer\nroot_cert_ca_g2_path = /k/g2.cer\n\
        root_cert_ca_g3_path = /k/g3.cer\napp_id = 1470168868\n";

    const GOOGLE_OK: &str = "[google]\npackage_name = network.loki.messenger\ncloud_project_id = proj\n\
        cloud_subscription_name = sub\nsubscription_product_id = session_pro\n\
        cloud_app_credentials_path = /k/sa.json\n";

    // ---- defaults --------------------------------------------------------------------------

    #[test]
    fn no_ini_and_no_env_gives_documented_defaults_without_warnings() {
        let c = load(&HashMap::new()).expect("defaults load");
        assert_eq!(c.ini_path, None);
        assert_eq!(c.db, DbLocation::SqliteFile { path: PathBuf::from("./backend.db"), uri: false });
        assert!(c.db_display.starts_with("sqlite:////"), "{}", c.db_display);
        assert!(c.db_display.ends_with("/backend.db"), "{}", c.db_display);
        assert!(!c.db_display.contains("/./"), "{}", c.db_display);
        assert_eq!(c.listen, "127.0.0.1:8000");
        assert_eq!(c.max_request_body_bytes, 262_144);
        assert!(!c.dev && !c.unsafe_logging && !c.platform_testing_env && !c.print_tables);
        assert!(!c.with_platform_apple && !c.with_platform_google);
        assert_eq!(c.apple, None);
        assert_eq!(c.google, None);
        assert!(c.webhooks.is_empty());
        assert!(c.delete_user_errors.is_empty());
        assert_eq!(c.log_path, None);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn empty_ini_path_variable_means_no_ini() {
        let c = load(&env(&[(env_var::INI_PATH, "")])).expect("load");
        assert_eq!(c.ini_path, None);
        assert!(c.warnings.is_empty());
    }

    // ---- INI file access --------------------------------------------------------------------

    #[test]
    fn missing_ini_file_has_upstream_message() {
        let path = std::env::temp_dir().join("pro-backend-config-test-does-not-exist.ini");
        let p = path.display().to_string();
        let e = env_errs(&[(env_var::INI_PATH, &p)]);
        assert_eq!(e, vec![format!(".INI config file \"{p}\", was specified but does not exist/is not readable")]);
    }

    #[test]
    fn directory_or_non_utf8_ini_is_a_clean_error() {
        let dir = std::env::temp_dir();
        let e = load_with_ini(Some(&dir), &HashMap::new()).expect_err("a directory is no INI");
        assert_eq!(
            e,
            vec![format!(".INI config file \"{}\", was specified but does not exist/is not readable", dir.display())]
        );

        let ini = TempIni::new("");
        std::fs::write(&ini.0, b"[base]\ndev = \xff\xfe\n").expect("write");
        let e = load_with_ini(Some(&ini.0), &HashMap::new()).expect_err("not UTF-8");
        assert_eq!(e, vec![format!(".INI config file \"{}\" is not valid UTF-8 text", ini.path_str())]);
    }

    #[test]
    fn missing_base_section_is_an_error() {
        let (ini, r) = load_ini("[apple]\nkey_id = x\n", &[]);
        assert_eq!(
            r.expect_err("must fail"),
            vec![format!(".INI config file \"{}\" has no [base] section", ini.path_str())]
        );
    }

    #[test]
    fn ini_path_is_recorded() {
        let (ini, r) = load_ini("[base]\n", &[]);
        assert_eq!(r.expect("ok").ini_path, Some(ini.0.clone()));
    }

    #[test]
    fn load_with_ini_uses_given_path_and_ignores_ini_path_var() {
        let ini = TempIni::new("[base]\ndev = true\n");
        let e = env(&[(env_var::INI_PATH, "/nonexistent/elsewhere.ini"), (env_var::LISTEN, "0.0.0.0:9000")]);
        let c = load_with_ini(Some(&ini.0), &e).expect("ok");
        assert!(c.dev);
        assert_eq!(c.listen, "0.0.0.0:9000");
        assert_eq!(c.ini_path, Some(ini.0.clone()));

        let c = load_with_ini(None, &e).expect("ok");
        assert_eq!(c.ini_path, None);
        assert!(!c.dev);
    }

    // ---- INI syntax -------------------------------------------------------------------------

    #[test]
    fn option_names_are_case_insensitive_and_both_separators_work() {
        let c = ok("[base]\nDEV = yes\nPrint_Tables: on\n", &[]);
        assert!(c.dev);
        assert!(c.print_tables);
    }

    #[test]
    fn section_names_are_case_sensitive() {
        let e = errs("[BASE]\ndev = 1\n", &[]);
        assert_eq!(e.len(), 1);
        assert!(e[0].ends_with("has no [base] section"), "{e:?}");
    }

    #[test]
    fn inline_comment_is_part_of_the_value() {
        let c = ok(&format!("[base]\n{}\n[apple]\nkey_id = ABC # e.g.\n", ""), &[]);
        assert_eq!(c.apple.expect("apple").key_id, "ABC # e.g.");
    }

    #[test]
    fn whole_line_comments_are_ignored_even_indented() {
        let ini = parse("# top\n[base]\n; c1\ndev = 1\n    # indented comment\nlog_path = /x\n").expect("parse");
        let base = ini.section("base").expect("base");
        assert_eq!(base.get("dev").as_deref(), Some("1"));
        assert_eq!(base.get("log_path").as_deref(), Some("/x"));
    }

    #[test]
    fn values_are_trimmed_and_empty_value_is_empty_string() {
        let ini = parse("[base]\nlog_path =    /var/log/x.log   \ndb_url =\n").expect("parse");
        let base = ini.section("base").expect("base");
        assert_eq!(base.get("log_path").as_deref(), Some("/var/log/x.log"));
        assert_eq!(base.get("db_url").as_deref(), Some(""));
    }

    #[test]
    fn first_separator_splits_key_and_value() {
        let ini = parse("[base]\nsession_webhook_url = https://h:8080/x=y\n").expect("parse");
        assert_eq!(
            ini.section("base").expect("base").get("session_webhook_url").as_deref(),
            Some("https://h:8080/x=y")
        );
    }

    #[test]
    fn continuation_lines_join_with_newlines() {
        let text = "[base]\ndelete_user_errors = 1:abc,\n  2:def,\n\n  3:ghi\nlog_path = /l\n";
        let ini = parse(text).expect("parse");
        let base = ini.section("base").expect("base");
        assert_eq!(base.get("delete_user_errors").as_deref(), Some("1:abc,\n2:def,\n\n3:ghi"));
        assert_eq!(base.get("log_path").as_deref(), Some("/l"));

        let c = ok(text, &[]);
        assert_eq!(c.delete_user_errors, vec![(1, "abc".to_owned()), (2, "def".to_owned()), (3, "ghi".to_owned())]);
    }

    #[test]
    fn comment_between_continuation_lines_is_dropped() {
        let ini = parse("[base]\nx = a\n# note\n  b\n").expect("parse");
        assert_eq!(ini.section("base").expect("base").get("x").as_deref(), Some("a\nb"));
    }

    #[test]
    fn indented_option_after_header_is_an_option_not_a_continuation() {
        let ini = parse("[base]\n  dev = 1\n  print_tables = 0\n").expect("parse");
        let base = ini.section("base").expect("base");
        assert_eq!(base.get("dev").as_deref(), Some("1"));
        assert_eq!(base.get("print_tables").as_deref(), Some("0"));
    }

    #[test]
    fn accidentally_indented_line_continues_previous_value_like_configparser() {
        let e = errs("[base]\ndev = 1\n  print_tables = 0\n", &[]);
        assert_eq!(
            e,
            vec!["Invalid value for 'dev' in [base] of the .INI file: Not a boolean: 1\nprint_tables = 0".to_owned()]
        );
    }

    #[test]
    fn duplicate_section_is_rejected() {
        let e = errs("[base]\ndev = 1\n[base]\nprint_tables = 1\n", &[]);
        assert_eq!(e.len(), 1);
        assert!(e[0].ends_with("line 3: section [base] already exists"), "{e:?}");
    }

    #[test]
    fn duplicate_option_is_rejected_case_insensitively() {
        let e = errs("[base]\ndev = 1\nDev = 0\n", &[]);
        assert_eq!(e.len(), 1);
        assert!(e[0].ends_with("line 3: option 'dev' in section [base] already exists"), "{e:?}");
    }

    #[test]
    fn same_option_in_different_sections_is_fine() {
        let c = ok(
            "[base]\n[session_webhook.0]\nname = a\nurl = https://a\nenabled = 1\n\
             [session_webhook.1]\nname = b\nurl = https://b\nenabled = 1\n",
            &[],
        );
        assert_eq!(c.webhooks.len(), 2);
    }

    #[test]
    fn line_without_separator_is_rejected_and_all_bad_lines_reported() {
        let e = errs("[base]\njust words\ndev = 1\nmore words\n", &[]);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("line 2:") && e[0].ends_with("got 'just words'"), "{e:?}");
        assert!(e[1].contains("line 4:") && e[1].ends_with("got 'more words'"), "{e:?}");
    }

    #[test]
    fn empty_option_name_is_rejected() {
        assert!(parse("[base]\n= 1\n").is_err());
    }

    #[test]
    fn option_before_any_section_is_rejected() {
        let e = errs("dev = 1\n[base]\n", &[]);
        assert_eq!(e.len(), 1);
        assert!(e[0].contains("line 1: an option appears before any [section] header"), "{e:?}");
    }

    #[test]
    fn default_section_is_inherited_everywhere() {
        let c = ok(
            "[DEFAULT]\ndev = yes\nenabled = true\n[base]\n\
             [session_webhook.0]\nname = Bot\nurl = https://hook.example/x\n",
            &[],
        );
        assert!(c.dev);
        assert_eq!(
            c.webhooks,
            vec![WebhookConfig { name: "Bot".to_owned(), url: "https://hook.example/x".to_owned() }]
        );
    }

    #[test]
    fn own_value_beats_default_value() {
        let c = ok("[DEFAULT]\ndev = yes\n[base]\ndev = no\n", &[]);
        assert!(!c.dev);
    }

    #[test]
    fn double_percent_is_a_single_percent_and_lone_percent_is_literal() {
        let c = ok("[base]\nsession_webhook_url = https://h.example/a%%2Fb?x=%2F&y=%(z)s\n", &[]);
        assert_eq!(c.webhooks[0].url, "https://h.example/a%2Fb?x=%2F&y=%(z)s");
    }

    #[test]
    fn crlf_and_bom_are_handled() {
        let c = ok("\u{feff}[base]\r\ndev = on\r\nprint_tables = off\r\n", &[]);
        assert!(c.dev);
        assert!(!c.print_tables);
    }

    #[test]
    fn ini_booleans_accept_all_configparser_spellings() {
        for (raw, want) in [
            ("1", true),
            ("yes", true),
            ("TRUE", true),
            ("On", true),
            ("0", false),
            ("No", false),
            ("false", false),
            ("OFF", false),
        ] {
            let c = ok(&format!("[base]\ndev = {raw}\n"), &[]);
            assert_eq!(c.dev, want, "{raw}");
        }
    }

    #[test]
    fn bad_ini_boolean_names_option_and_value() {
        let e = errs("[base]\ndev = maybe\n", &[]);
        assert_eq!(e, vec!["Invalid value for 'dev' in [base] of the .INI file: Not a boolean: maybe".to_owned()]);
    }

    #[test]
    fn unknown_keys_and_sections_are_ignored() {
        let c = ok("[base]\nset_user_errors = 1:x\nwhatever = 3\n[other]\nfoo = bar\n", &[]);
        assert!(c.delete_user_errors.is_empty());
    }

    #[test]
    fn python_style_integers() {
        assert_eq!(parse_decimal("42"), Some(42));
        assert_eq!(parse_decimal("+7"), Some(7));
        assert_eq!(parse_decimal("-3"), Some(-3));
        assert_eq!(parse_decimal("1_000"), Some(1000));
        assert_eq!(parse_decimal(" 5 "), Some(5));
        assert_eq!(parse_decimal("007"), Some(7));
        assert_eq!(parse_decimal("0x10"), None);
        assert_eq!(parse_decimal("1__0"), None);
        assert_eq!(parse_decimal("_1"), None);
        assert_eq!(parse_decimal(""), None);
        assert_eq!(parse_decimal("1.5"), None);
    }

    // ---- [base] options ---------------------------------------------------------------------

    #[test]
    fn base_options_are_read() {
        let c = ok(
            "[base]\ndev = 1\nunsafe_logging = true\nprint_tables = yes\nlog_path = /var/log/pro.log\n\
             with_platform_apple = 0\nwith_platform_google = off\nlisten = 0.0.0.0:8080\n\
             max_request_body_bytes = 1024\ndb_path = /data/pro.db\n",
            &[],
        );
        assert!(c.dev && c.unsafe_logging && c.print_tables);
        assert_eq!(c.log_path, Some(PathBuf::from("/var/log/pro.log")));
        assert_eq!(c.listen, "0.0.0.0:8080");
        assert_eq!(c.max_request_body_bytes, 1024);
        assert_eq!(c.db, DbLocation::SqliteFile { path: PathBuf::from("/data/pro.db"), uri: false });
        assert_eq!(c.db_display, "sqlite:////data/pro.db");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn empty_log_path_means_no_log_file() {
        let c = ok("[base]\nlog_path =\n", &[]);
        assert_eq!(c.log_path, None);
    }

    #[test]
    fn platform_testing_both_spellings() {
        assert!(ok("[base]\nplatform_testing_environment = true\n", &[]).platform_testing_env);
        assert!(ok("[base]\nplatform_testing_env = true\n", &[]).platform_testing_env);
        // Latest spelling wins when both are present, whichever comes first in the file.
        assert!(
            !ok("[base]\nplatform_testing_env = false\nplatform_testing_environment = true\n", &[])
                .platform_testing_env
        );
        assert!(
            ok("[base]\nplatform_testing_environment = false\nplatform_testing_env = true\n", &[]).platform_testing_env
        );
    }

    #[test]
    fn listen_must_be_a_socket_address() {
        let e = errs("[base]\nlisten = localhost:8000\n", &[]);
        assert_eq!(
            e,
            vec!["Invalid listen address 'localhost:8000': expected an IP address and port such as 127.0.0.1:8000 or [::1]:8000".to_owned()]
        );
        assert_eq!(ok("[base]\nlisten = [::1]:9000\n", &[]).listen, "[::1]:9000");
        assert_eq!(errs("[base]\nlisten = 127.0.0.1\n", &[]).len(), 1);
        assert_eq!(errs("[base]\nlisten = 127.0.0.1:70000\n", &[]).len(), 1);
    }

    #[test]
    fn empty_listen_falls_back_to_default() {
        assert_eq!(ok("[base]\nlisten =\n", &[]).listen, DEFAULT_LISTEN);
        assert_eq!(ok("[base]\nlisten = 10.0.0.1:1\n", &[(env_var::LISTEN, "")]).listen, DEFAULT_LISTEN);
    }

    #[test]
    fn listen_env_overrides_ini() {
        let c = ok("[base]\nlisten = 127.0.0.1:1\n", &[(env_var::LISTEN, "0.0.0.0:2")]);
        assert_eq!(c.listen, "0.0.0.0:2");
    }

    #[test]
    fn body_limit_bounds() {
        assert_eq!(ok("[base]\nmax_request_body_bytes = 1\n", &[]).max_request_body_bytes, 1);
        assert_eq!(ok("[base]\nmax_request_body_bytes = 10485760\n", &[]).max_request_body_bytes, 10_485_760);
        assert_eq!(
            errs("[base]\nmax_request_body_bytes = 0\n", &[]),
            vec!["Invalid max_request_body_bytes ([base] max_request_body_bytes = 0): must be a whole number of bytes from 1 to 10485760".to_owned()]
        );
        assert_eq!(errs("[base]\nmax_request_body_bytes = 10485761\n", &[]).len(), 1);
        assert_eq!(errs("[base]\nmax_request_body_bytes = -5\n", &[]).len(), 1);
        assert_eq!(errs("[base]\nmax_request_body_bytes = lots\n", &[]).len(), 1);
        assert_eq!(ok("[base]\nmax_request_body_bytes =\n", &[]).max_request_body_bytes, 262_144);
    }

    #[test]
    fn body_limit_env_overrides_and_is_checked() {
        let c = ok("[base]\nmax_request_body_bytes = 100\n", &[(env_var::MAX_REQUEST_BODY_BYTES, "2048")]);
        assert_eq!(c.max_request_body_bytes, 2048);
        assert_eq!(
            env_errs(&[(env_var::MAX_REQUEST_BODY_BYTES, "99999999")]),
            vec!["Invalid max_request_body_bytes (SESH_PRO_BACKEND_MAX_REQUEST_BODY_BYTES=99999999): must be a whole number of bytes from 1 to 10485760".to_owned()]
        );
    }

    // ---- delete_user_errors -----------------------------------------------------------------

    #[test]
    fn delete_user_errors_parsing() {
        assert_eq!(parse_delete_user_errors("1:abc, 2:def"), Ok(vec![(1, "abc".to_owned()), (2, "def".to_owned())]));
        // Provider is trimmed, the payment id is not.
        assert_eq!(parse_delete_user_errors("3 : id:with:colons"), Ok(vec![(3, " id:with:colons".to_owned())]));
        assert_eq!(parse_delete_user_errors(""), Ok(vec![]));
    }

    #[test]
    fn delete_user_errors_exact_error_texts() {
        assert_eq!(
            parse_delete_user_errors("1:abc, nocolon"),
            Err("Invalid format for delete user error: 'nocolon'. Expected '<payment_provider>:<payment_id>'."
                .to_owned())
        );
        assert_eq!(
            parse_delete_user_errors("1:abc, 9:x"),
            Err("Failed to parse payment provider (9) for item 9:x (arg was: 1:abc, 9:x)".to_owned())
        );
        assert_eq!(
            parse_delete_user_errors("google:x"),
            Err("Failed to parse payment provider (google) for item google:x (arg was: google:x)".to_owned())
        );
        // A trailing comma leaves an empty item, which upstream rejects too.
        assert_eq!(
            parse_delete_user_errors("1:abc,"),
            Err("Invalid format for delete user error: ''. Expected '<payment_provider>:<payment_id>'.".to_owned())
        );
    }

    #[test]
    fn delete_user_errors_env_replaces_ini_and_errors_surface() {
        let c = ok("[base]\ndelete_user_errors = 1:a\n", &[(env_var::DELETE_USER_ERRORS, "2:b")]);
        assert_eq!(c.delete_user_errors, vec![(2, "b".to_owned())]);
        let c = ok("[base]\ndelete_user_errors = 1:a\n", &[(env_var::DELETE_USER_ERRORS, "")]);
        assert!(c.delete_user_errors.is_empty());
        let e = env_errs(&[(env_var::DELETE_USER_ERRORS, "x")]);
        assert_eq!(
            e,
            vec!["Invalid format for delete user error: 'x'. Expected '<payment_provider>:<payment_id>'.".to_owned()]
        );
    }

    // ---- environment ------------------------------------------------------------------------

    #[test]
    fn env_booleans_are_strictly_0_or_1() {
        for bad in ["true", "", " 1", "yes", "2"] {
            let e = env_errs(&[(env_var::DEV, bad)]);
            assert_eq!(
                e,
                vec![format!(
                    "Invalid value for environment variable 'SESH_PRO_BACKEND_DEV': {bad}. Allowed values are 0 or 1."
                )]
            );
        }
    }

    #[test]
    fn env_booleans_override_ini() {
        let c = ok(
            "[base]\ndev = true\nprint_tables = true\nunsafe_logging = false\n",
            &[(env_var::DEV, "0"), (env_var::PRINT_TABLES, "0"), (env_var::UNSAFE_LOGGING, "1")],
        );
        assert!(!c.dev && !c.print_tables && c.unsafe_logging);
    }

    #[test]
    fn platform_testing_env_variable_sets_testing_mode_not_google() {
        let c = load(&env(&[(env_var::PLATFORM_TESTING_ENV, "1")])).expect("ok");
        assert!(c.platform_testing_env);
        assert!(!c.with_platform_google);

        let c = ok(
            &format!("[base]\nwith_platform_google = 1\nplatform_testing_env = 1\n{GOOGLE_OK}"),
            &[(env_var::PLATFORM_TESTING_ENV, "0")],
        );
        assert!(c.with_platform_google);
        assert!(!c.platform_testing_env);
    }

    #[test]
    fn empty_env_value_replaces_ini_value() {
        let c = ok("[base]\nlog_path = /var/log/x\n", &[(env_var::LOG_PATH, "")]);
        assert_eq!(c.log_path, None);
        let c = ok("[base]\nsession_webhook_url = https://h/x\n", &[(env_var::SESSION_WEBHOOK_URL, "")]);
        assert!(c.webhooks.is_empty());
    }

    #[test]
    fn several_errors_are_reported_together() {
        let e =
            errs("[base]\ndev = perhaps\nwith_platform_google = 1\nlisten = nope\n", &[(env_var::PRINT_TABLES, "yes")]);
        assert_eq!(
            e,
            vec![
                "Invalid value for 'dev' in [base] of the .INI file: Not a boolean: perhaps".to_owned(),
                "Invalid value for environment variable 'SESH_PRO_BACKEND_PRINT_TABLES': yes. Allowed values are 0 or 1.".to_owned(),
                "Invalid listen address 'nope': expected an IP address and port such as 127.0.0.1:8000 or [::1]:8000".to_owned(),
                "Platform Google was enabled but [google] section is missing".to_owned(),
                "Platform Google was enabled but package_name was not specified".to_owned(),
                "Platform Google was enabled but cloud_project_id was not specified".to_owned(),
                "Platform Google was enabled but cloud_subscription_name was not specified".to_owned(),
                "Platform Google was enabled but cloud_application_credentials_path was not specified".to_owned(),
                "Platform Google was enabled but subscription_product_id was not specified".to_owned(),
            ]
        );
    }

    #[test]
    fn env_type_errors_are_reported_even_when_the_ini_is_broken() {
        let e = errs("[base]\n[base]\n", &[(env_var::DEV, "x")]);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].ends_with("section [base] already exists"));
        assert!(e[1].starts_with("Invalid value for environment variable 'SESH_PRO_BACKEND_DEV'"));
    }

    // ---- webhooks ---------------------------------------------------------------------------

    #[test]
    fn legacy_webhook_default_name_and_env_spellings() {
        let c = ok("[base]\nsession_webhook_url = https://hook.example/1\n", &[]);
        assert_eq!(
            c.webhooks,
            vec![WebhookConfig { name: "Session Pro Backend".to_owned(), url: "https://hook.example/1".to_owned() }]
        );

        let c =
            load(&env(&[(env_var::WEBHOOK_URL, "https://a.example"), (env_var::WEBHOOK_NAME, "Req Bot")])).expect("ok");
        assert_eq!(c.webhooks, vec![WebhookConfig { name: "Req Bot".to_owned(), url: "https://a.example".to_owned() }]);

        // The SESSION_ spelling wins when both are set.
        let c = load(&env(&[
            (env_var::WEBHOOK_URL, "https://a.example"),
            (env_var::SESSION_WEBHOOK_URL, "https://b.example"),
            (env_var::WEBHOOK_NAME, "A"),
            (env_var::SESSION_WEBHOOK_NAME, "B"),
        ]))
        .expect("ok");
        assert_eq!(c.webhooks, vec![WebhookConfig { name: "B".to_owned(), url: "https://b.example".to_owned() }]);
    }

    #[test]
    fn legacy_webhook_comes_first_then_enabled_numbered_sections() {
        let c = ok(
            "[base]\nsession_webhook_url = https://legacy.example\nsession_webhook_name = Legacy\n\
             [session_webhook.0]\nname = Zero\nurl = https://zero.example\nenabled = true\n\
             [session_webhook.1]\nname = One\nurl = https://one.example\nenabled = false\n\
             [session_webhook.2]\nname = Two\nurl = http://two.example/hook\nenabled = yes\n",
            &[],
        );
        let names: Vec<&str> = c.webhooks.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, vec!["Legacy", "Zero", "Two"]);
        assert_eq!(c.webhooks[2].url, "http://two.example/hook");
    }

    #[test]
    fn webhook_sections_stop_at_first_missing_index() {
        let c = ok(
            "[base]\n[session_webhook.0]\nname = A\nurl = https://a\nenabled = 1\n\
             [session_webhook.1]\nname = B\nurl = https://b\nenabled = 1\n\
             [session_webhook.3]\nname = D\nurl = https://d\nenabled = 1\n",
            &[],
        );
        let names: Vec<&str> = c.webhooks.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, vec!["A", "B"]);
    }

    #[test]
    fn webhook_section_missing_keys_in_order() {
        assert_eq!(
            errs("[base]\n[session_webhook.0]\nurl = https://a\nenabled = 1\n", &[]),
            vec!["Failed to parse webhook section session_webhook.0, missing 'name'".to_owned()]
        );
        assert_eq!(
            errs("[base]\n[session_webhook.0]\nenabled = 1\n", &[]),
            vec!["Failed to parse webhook section session_webhook.0, missing 'name'".to_owned()]
        );
        assert_eq!(
            errs("[base]\n[session_webhook.0]\nname = A\nenabled = 1\n", &[]),
            vec!["Failed to parse webhook section session_webhook.0, missing 'url'".to_owned()]
        );
        assert_eq!(
            errs("[base]\n[session_webhook.0]\nname = A\nurl = https://a\n", &[]),
            vec!["Failed to parse webhook section session_webhook.0, missing 'enabled'".to_owned()]
        );
        // A disabled section still needs all three keys.
        assert_eq!(
            errs("[base]\n[session_webhook.0]\nname = A\nenabled = 0\n", &[]),
            vec!["Failed to parse webhook section session_webhook.0, missing 'url'".to_owned()]
        );
    }

    #[test]
    fn webhook_bad_enabled_is_reported_before_missing_keys() {
        assert_eq!(
            errs("[base]\n[session_webhook.0]\nenabled = sometimes\n", &[]),
            vec![
                "Invalid value for 'enabled' in [session_webhook.0] of the .INI file: Not a boolean: sometimes"
                    .to_owned()
            ]
        );
    }

    #[test]
    fn webhook_name_longer_than_100_chars_fails_only_when_enabled() {
        let long: String = "é".repeat(101);
        let e = errs(&format!("[base]\n[session_webhook.0]\nname = {long}\nurl = https://a\nenabled = 1\n"), &[]);
        assert_eq!(
            e,
            vec!["Webhook section session_webhook.0: Display name must be less than 100 characters: 101".to_owned()]
        );
        let c = ok(&format!("[base]\n[session_webhook.0]\nname = {long}\nurl = https://a\nenabled = 0\n"), &[]);
        assert!(c.webhooks.is_empty());
        let exactly_100: String = "n".repeat(100);
        let c = ok(&format!("[base]\n[session_webhook.0]\nname = {exactly_100}\nurl = https://a\nenabled = 1\n"), &[]);
        assert_eq!(c.webhooks.len(), 1);
    }

    #[test]
    fn enabled_webhook_urls_must_be_http_or_https() {
        for bad in ["", "hook.example/x", "ftp://hook.example", "https://", "https:// space.example"] {
            let e = errs(&format!("[base]\n[session_webhook.0]\nname = A\nurl = {bad}\nenabled = 1\n"), &[]);
            assert_eq!(
                e,
                vec![format!(
                    "Webhook section session_webhook.0: url '{}' is not a valid http:// or https:// URL",
                    bad.trim()
                )],
                "{bad}"
            );
        }
        let e = env_errs(&[(env_var::SESSION_WEBHOOK_URL, "not a url")]);
        assert_eq!(
            e,
            vec!["Webhook session_webhook_url ([base] or environment): url 'not a url' is not a valid http:// or https:// URL".to_owned()]
        );
        // A disabled section with a bad URL is fine.
        let c = ok("[base]\n[session_webhook.0]\nname = A\nurl = nope\nenabled = 0\n", &[]);
        assert!(c.webhooks.is_empty());
    }

    // ---- Apple ------------------------------------------------------------------------------

    #[test]
    fn apple_missing_section_lists_every_key() {
        let e = errs("[base]\nwith_platform_apple = true\n", &[]);
        assert_eq!(
            e,
            vec![
                "Platform Apple was enabled but [apple] section is missing",
                "Platform Apple was enabled but key_id was not specified",
                "Platform Apple was enabled but issuer_id was not specified",
                "Platform Apple was enabled but bundle_id was not specified",
                "Platform Apple was enabled but key_path was not specified",
                "Platform Apple was enabled but root_cert_path was not specified",
                "Platform Apple was enabled but root_cert_ca_g2_path was not specified",
                "Platform Apple was enabled but root_cert_ca_g3_path was not specified",
                "Platform Apple was enabled in production mode (e.g. not sandbox mode) but the production_app_id was not specified",
            ]
        );
    }

    #[test]
    fn apple_full_section_parses() {
        let c = ok(&format!("[base]\nwith_platform_apple = 1\n{APPLE_OK}"), &[]);
        assert!(c.with_platform_apple);
        assert_eq!(
            c.apple,
            Some(AppleConfig {
                key_id: "KID".to_owned(),
                issuer_id: "ISS".to_owned(),
                bundle_id: "com.example".to_owned(),
                key_path: PathBuf::from("/k/key.p8"),
                root_cert_path: PathBuf::from("/k/root.cer"),
                root_cert_ca_g2_path: PathBuf::from("/k/g2.cer"),
                root_cert_ca_g3_path: PathBuf::from("/k/g3.cer"),
                sandbox_env: false,
                app_id: Some(1_470_168_868),
                api_base_url: None,
            })
        );
        assert!(!c.platform_testing_env);
    }

    #[test]
    fn apple_missing_and_empty_keys() {
        let e = errs(
            "[base]\nwith_platform_apple = 1\n[apple]\nkey_id =\nissuer_id = I\nbundle_id = B\nkey_path = k\n\
             root_cert_path = r\nroot_cert_ca_g2_path = g2\nsandbox_env = true\n",
            &[],
        );
        assert_eq!(
            e,
            vec![
                "Platform Apple was enabled but key_id was not specified".to_owned(),
                "Platform Apple was enabled but root_cert_ca_g3_path was not specified".to_owned(),
            ]
        );
    }

    #[test]
    fn apple_app_id_both_spellings_latest_wins_and_only_required_in_production() {
        let base = APPLE_OK.replace("app_id = 1470168868\n", "");
        let c = ok(&format!("[base]\nwith_platform_apple = 1\n{base}production_app_id = 11\n"), &[]);
        assert_eq!(c.apple.expect("apple").app_id, Some(11));
        let c = ok(&format!("[base]\nwith_platform_apple = 1\n{base}production_app_id = 11\napp_id = 22\n"), &[]);
        assert_eq!(c.apple.expect("apple").app_id, Some(22));
        let c = ok(&format!("[base]\nwith_platform_apple = 1\n{base}sandbox_env = yes\n"), &[]);
        assert_eq!(c.apple.expect("apple").app_id, None);
        let e = errs(&format!("[base]\nwith_platform_apple = 1\n{base}"), &[]);
        assert_eq!(
            e,
            vec!["Platform Apple was enabled in production mode (e.g. not sandbox mode) but the production_app_id was not specified".to_owned()]
        );
        let e = errs(&format!("[base]\nwith_platform_apple = 1\n{base}app_id = abc\n"), &[]);
        assert_eq!(
            e,
            vec![
                "Invalid value for 'app_id' in [apple] of the .INI file: expected a decimal integer, got 'abc'".to_owned(),
                "Platform Apple was enabled in production mode (e.g. not sandbox mode) but the production_app_id was not specified".to_owned(),
            ]
        );
    }

    #[test]
    fn apple_sandbox_forces_testing_mode_with_warning() {
        let c = ok(&format!("[base]\ndb_path = /d.db\nwith_platform_apple = 1\n{APPLE_OK}sandbox_env = true\n"), &[]);
        assert!(c.platform_testing_env);
        assert_eq!(
            c.warnings,
            vec!["Platform Apple was enabled in sandbox mode but platform_testing_env was not set to true. You want to set this to true, overriding the flag to true".to_owned()]
        );
        let c = ok(
            &format!(
                "[base]\ndb_path = /d.db\nwith_platform_apple = 1\nplatform_testing_env = 1\n{APPLE_OK}sandbox_env = true\n"
            ),
            &[],
        );
        assert!(c.platform_testing_env);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        // Sandbox in a disabled platform changes nothing.
        let c = ok(&format!("[base]\n{APPLE_OK}sandbox_env = true\n"), &[]);
        assert!(!c.platform_testing_env);
    }

    #[test]
    fn apple_section_parsed_when_enabled_only_by_env() {
        let c = ok(&format!("[base]\n{APPLE_OK}"), &[(env_var::WITH_PLATFORM_APPLE, "1")]);
        assert!(c.with_platform_apple);
        assert_eq!(c.apple.expect("apple").key_id, "KID");
        // And the section is available even when the platform is off.
        let c = ok(&format!("[base]\n{APPLE_OK}"), &[]);
        assert!(!c.with_platform_apple);
        assert_eq!(c.apple.expect("apple").bundle_id, "com.example");
    }

    #[test]
    fn env_can_disable_a_platform_enabled_in_ini() {
        let c = ok("[base]\nwith_platform_apple = 1\n", &[(env_var::WITH_PLATFORM_APPLE, "0")]);
        assert!(!c.with_platform_apple);
    }

    #[test]
    fn apple_enabled_by_env_without_ini_reports_missing_section() {
        let e = env_errs(&[(env_var::WITH_PLATFORM_APPLE, "1")]);
        assert_eq!(e.len(), 9);
        assert_eq!(e[0], "Platform Apple was enabled but [apple] section is missing");
    }

    #[test]
    fn apple_api_base_url_rules() {
        let with = |url: &str| format!("[base]\nwith_platform_apple = 1\n{APPLE_OK}api_base_url = {url}\n");
        assert_eq!(
            ok(&with("https://api.example.com"), &[]).apple.expect("apple").api_base_url.as_deref(),
            Some("https://api.example.com")
        );
        assert_eq!(
            ok(&with("http://127.0.0.1:9000"), &[]).apple.expect("apple").api_base_url.as_deref(),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(ok(&with(""), &[]).apple.expect("apple").api_base_url, None);
        assert_eq!(
            errs(&with("http://example.com"), &[]),
            vec!["Invalid api_base_url 'http://example.com' in [apple]: it must be an https:// URL (plain http:// is only allowed for a loopback host: 127.0.0.0/8, ::1 or localhost)".to_owned()]
        );
        // With Apple disabled the same problem is only a warning.
        let c = ok(&format!("[base]\ndb_path = /d.db\n{APPLE_OK}api_base_url = http://example.com\n"), &[]);
        assert_eq!(c.apple.expect("apple").api_base_url, None);
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].starts_with("Ignored because platform Apple is disabled: Invalid api_base_url"));
    }

    #[test]
    fn service_url_loopback_rules() {
        for good in [
            "https://pubsub.googleapis.com",
            "https://x.example:8443/base",
            "http://127.0.0.1:8080",
            "http://127.8.9.10/",
            "http://localhost:1234/v1",
            "http://LOCALHOST",
            "http://[::1]:8080",
        ] {
            assert!(is_allowed_service_url(good), "{good}");
        }
        for bad in [
            "http://example.com",
            "http://128.0.0.1",
            "http://[::2]:80",
            "ftp://localhost",
            "https://",
            "localhost:80",
            "http://localhost:notaport",
            "http://localhost.evil.example",
        ] {
            assert!(!is_allowed_service_url(bad), "{bad}");
        }
    }

    // ---- Google -----------------------------------------------------------------------------

    #[test]
    fn google_missing_section_lists_every_key() {
        let e = errs("[base]\nwith_platform_google = yes\n", &[]);
        assert_eq!(
            e,
            vec![
                "Platform Google was enabled but [google] section is missing",
                "Platform Google was enabled but package_name was not specified",
                "Platform Google was enabled but cloud_project_id was not specified",
                "Platform Google was enabled but cloud_subscription_name was not specified",
                "Platform Google was enabled but cloud_application_credentials_path was not specified",
                "Platform Google was enabled but subscription_product_id was not specified",
            ]
        );
    }

    #[test]
    fn google_latest_spelling_parses() {
        let c = ok(&format!("[base]\nwith_platform_google = 1\n{GOOGLE_OK}"), &[]);
        assert_eq!(
            c.google,
            Some(GoogleConfig {
                package_name: "network.loki.messenger".to_owned(),
                cloud_project_id: "proj".to_owned(),
                cloud_subscription_name: "sub".to_owned(),
                subscription_product_id: "session_pro".to_owned(),
                cloud_app_credentials_path: PathBuf::from("/k/sa.json"),
                pubsub_base_url: None,
                androidpublisher_base_url: None,
                oauth_token_url: None,
            })
        );
    }

    #[test]
    fn google_seed_spelling_parses_and_latest_wins() {
        let c = ok(
            "[base]\nwith_platform_google = 1\n[google]\npackage_name = p\nproject_name = old_proj\n\
             subscription_name = old_sub\nsubscription_product_id = s\napplication_credentials_path = /old.json\n",
            &[],
        );
        let g = c.google.expect("google");
        assert_eq!(g.cloud_project_id, "old_proj");
        assert_eq!(g.cloud_subscription_name, "old_sub");
        assert_eq!(g.cloud_app_credentials_path, PathBuf::from("/old.json"));

        let c = ok(
            &format!(
                "[base]\nwith_platform_google = 1\n{GOOGLE_OK}project_name = old\nsubscription_name = old\napplication_credentials_path = /old\n"
            ),
            &[],
        );
        let g = c.google.expect("google");
        assert_eq!(g.cloud_project_id, "proj");
        assert_eq!(g.cloud_subscription_name, "sub");
        assert_eq!(g.cloud_app_credentials_path, PathBuf::from("/k/sa.json"));
    }

    #[test]
    fn google_base_urls() {
        let c = ok(
            &format!(
                "[base]\nwith_platform_google = 1\n{GOOGLE_OK}pubsub_base_url = http://127.0.0.1:7001\n\
                 androidpublisher_base_url = https://ap.example\noauth_token_url = http://localhost:7002/token\n"
            ),
            &[],
        );
        let g = c.google.expect("google");
        assert_eq!(g.pubsub_base_url.as_deref(), Some("http://127.0.0.1:7001"));
        assert_eq!(g.androidpublisher_base_url.as_deref(), Some("https://ap.example"));
        assert_eq!(g.oauth_token_url.as_deref(), Some("http://localhost:7002/token"));

        let e = errs(
            &format!("[base]\nwith_platform_google = 1\n{GOOGLE_OK}oauth_token_url = http://10.0.0.1/token\n"),
            &[],
        );
        assert_eq!(
            e,
            vec!["Invalid oauth_token_url 'http://10.0.0.1/token' in [google]: it must be an https:// URL (plain http:// is only allowed for a loopback host: 127.0.0.0/8, ::1 or localhost)".to_owned()]
        );
    }

    #[test]
    fn both_platforms_missing_sections_are_reported_together() {
        let e = errs("[base]\nwith_platform_apple = 1\nwith_platform_google = 1\n", &[]);
        assert_eq!(e.len(), 15);
        assert_eq!(e[0], "Platform Apple was enabled but [apple] section is missing");
        assert_eq!(e[9], "Platform Google was enabled but [google] section is missing");
    }

    // ---- database ---------------------------------------------------------------------------

    #[test]
    fn db_path_wins_over_db_url_with_warning() {
        let c = ok("[base]\ndb_path = /data/a.db\ndb_url = sqlite:////data/b.db\n", &[]);
        assert_eq!(c.db, DbLocation::SqliteFile { path: PathBuf::from("/data/a.db"), uri: false });
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].starts_with("Both db_path"), "{:?}", c.warnings);
    }

    #[test]
    fn db_path_is_uri() {
        let c = ok("[base]\ndb_path = file::memory:?cache=shared\ndb_path_is_uri = true\n", &[]);
        assert_eq!(c.db, DbLocation::SqliteFile { path: PathBuf::from("file::memory:?cache=shared"), uri: true });
        assert_eq!(c.db_display, "file::memory:?cache=shared (URI)");
    }

    #[test]
    fn db_url_forms() {
        let cases: [(&str, DbLocation); 7] = [
            ("sqlite:///rel.db", DbLocation::SqliteFile { path: PathBuf::from("rel.db"), uri: false }),
            ("sqlite:////abs/x.db", DbLocation::SqliteFile { path: PathBuf::from("/abs/x.db"), uri: false }),
            ("sqlite:////abs/x.db?mode=ro", DbLocation::SqliteFile { path: PathBuf::from("/abs/x.db"), uri: false }),
            ("sqlite://", DbLocation::SqliteMemory),
            ("sqlite:///:memory:", DbLocation::SqliteMemory),
            ("postgresql://u:pw@h:5432/db", DbLocation::Postgres { url: "postgresql://u:pw@h:5432/db".to_owned() }),
            ("postgresql+psycopg://h/db", DbLocation::Postgres { url: "postgresql://h/db".to_owned() }),
        ];
        for (url, want) in cases {
            let c = ok(&format!("[base]\ndb_url = {url}\n"), &[]);
            assert_eq!(c.db, want, "{url}");
            assert!(c.warnings.is_empty(), "{url}: {:?}", c.warnings);
        }
        let c = ok("[base]\ndb_url = postgres://h/db\n", &[]);
        assert_eq!(c.db, DbLocation::Postgres { url: "postgres://h/db".to_owned() });
    }

    #[test]
    fn db_display_for_urls_masks_password() {
        assert_eq!(ok("[base]\ndb_url = sqlite:////abs/x.db\n", &[]).db_display, "sqlite:////abs/x.db");
        assert_eq!(
            ok("[base]\ndb_url = postgresql://u:secret@h:5432/db\n", &[]).db_display,
            "postgresql://u:***@h:5432/db"
        );
        assert_eq!(ok("[base]\ndb_url = postgresql://u@h/db\n", &[]).db_display, "postgresql://u@h/db");
    }

    #[test]
    fn bad_db_urls() {
        assert_eq!(
            errs("[base]\ndb_url = mysql://h/db\n", &[]),
            vec!["Unsupported db_url 'mysql://h/db': the scheme must be sqlite:// or postgresql://".to_owned()]
        );
        assert_eq!(
            errs("[base]\ndb_url = just-a-file.db\n", &[]),
            vec![
                "Failed to open/connect to DB at just-a-file.db: Could not parse SQLAlchemy URL from given URL string"
                    .to_owned()
            ]
        );
        assert_eq!(errs("[base]\ndb_url = sqlite://host/x.db\n", &[]).len(), 1);
    }

    #[test]
    fn env_db_keys_beat_ini_per_key() {
        let c = ok("[base]\ndb_path = /ini.db\n", &[(env_var::DB_PATH, "/env.db")]);
        assert_eq!(c.db, DbLocation::SqliteFile { path: PathBuf::from("/env.db"), uri: false });
        // An empty DB_PATH clears the INI path, so db_url is used.
        let c = ok("[base]\ndb_path = /ini.db\ndb_url = sqlite:////url.db\n", &[(env_var::DB_PATH, "")]);
        assert_eq!(c.db, DbLocation::SqliteFile { path: PathBuf::from("/url.db"), uri: false });
        let c = ok("[base]\ndb_url = sqlite:////ini.db\n", &[(env_var::DB_URL, "sqlite://")]);
        assert_eq!(c.db, DbLocation::SqliteMemory);
        let c = ok("[base]\ndb_path = f.db\n", &[(env_var::DB_PATH_IS_URI, "1")]);
        assert_eq!(c.db, DbLocation::SqliteFile { path: PathBuf::from("f.db"), uri: true });
        let c = load(&env(&[(env_var::DB_URL, "postgresql://h/db")])).expect("ok");
        assert_eq!(c.db, DbLocation::Postgres { url: "postgresql://h/db".to_owned() });
    }

    #[test]
    fn default_db_warns_only_when_something_was_configured() {
        let c = ok("[base]\ndev = 0\n", &[]);
        assert_eq!(c.db, DbLocation::SqliteFile { path: PathBuf::from("./backend.db"), uri: false });
        assert_eq!(
            c.warnings,
            vec!["No database configured (db_path and db_url are empty); using the default ./backend.db".to_owned()]
        );
        let c = load(&env(&[(env_var::DB_PATH, "")])).expect("ok");
        assert_eq!(c.warnings.len(), 1);
        let c = load(&env(&[(env_var::DEV, "1")])).expect("ok");
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn db_path_ending_in_ini_is_used_as_ini_path() {
        let ini = TempIni::new("[base]\ndev = true\ndb_path = /data/real.db\n");
        let c = load(&env(&[(env_var::DB_PATH, &ini.path_str())])).expect("ok");
        assert_eq!(c.ini_path, Some(ini.0.clone()));
        assert!(c.dev);
        assert_eq!(c.db, DbLocation::SqliteFile { path: PathBuf::from("/data/real.db"), uri: false });
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].starts_with("SESH_PRO_BACKEND_DB_PATH ends in .ini"), "{:?}", c.warnings);

        // Upper case extension counts too.
        assert!(ends_with_ini("/etc/x.INI"));
        assert!(!ends_with_ini("/etc/x.db"));
        assert!(!ends_with_ini("ini"));
    }

    #[test]
    fn db_path_ending_in_ini_is_ignored_when_ini_path_is_set() {
        let ini = TempIni::new("[base]\ndb_path = /data/real.db\n");
        let c = load(&env(&[(env_var::INI_PATH, &ini.path_str()), (env_var::DB_PATH, "/etc/other.ini")])).expect("ok");
        assert_eq!(c.db, DbLocation::SqliteFile { path: PathBuf::from("/data/real.db"), uri: false });
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("is not used as the database path"), "{:?}", c.warnings);
    }

    #[test]
    fn relative_db_path_display_is_absolute() {
        let c = ok("[base]\ndb_path = ./data/pro.db\n", &[]);
        assert_eq!(c.db, DbLocation::SqliteFile { path: PathBuf::from("./data/pro.db"), uri: false });
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(c.db_display, format!("sqlite:///{}/data/pro.db", cwd.display()));
    }

    // ---- the shipped example ----------------------------------------------------------------

    #[test]
    fn example_ini_loads_cleanly() {
        let example = include_str!("../pro-backend.ini.example");
        let c = ok(example, &[]);
        assert_eq!(c.listen, "127.0.0.1:8000");
        assert_eq!(c.max_request_body_bytes, 262_144);
        assert!(!c.with_platform_apple && !c.with_platform_google);
        assert!(c.apple.is_some() && c.google.is_some());
    }
}
