//! Starting the Google Play integration from the configuration: the service-account key is
//! read here (the engine never reads files), then the subscriber is started.

use std::sync::Arc;
use std::time::Duration;

use pro_engine::clock::SharedClock;
use pro_engine::domain::time::{DEFAULT_GRACE_MS, TESTING_GOOGLE_GRACE_MS};
use pro_engine::engine::Engine;
use pro_engine::google::api::{GoogleApi, GoogleEndpoints};
use pro_engine::google::auth::ServiceAccount;
use pro_engine::google::mapping::MappingCtx;
use pro_engine::google_subscriber::{self, GoogleHandle, GoogleSubscriberConfig, GoogleTuning};
use pro_engine::outbound::HttpClient;

use crate::config::Config;

/// How long Pub/Sub may hold a pull before we call it an empty batch.
const PULL_TIMEOUT: Duration = Duration::from_secs(90);
/// Timeout of every other Google call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The grace a new Google payment gets until Google reports the plan's own (10 s on test tracks).
pub fn default_grace_ms(platform_testing_env: bool) -> i64 {
    if platform_testing_env { TESTING_GOOGLE_GRACE_MS } else { DEFAULT_GRACE_MS }
}

pub fn start(cfg: &Config, engine: &Engine, clock: SharedClock, tuning: GoogleTuning) -> Result<GoogleHandle, String> {
    let g = cfg.google.as_ref().ok_or("Platform Google was enabled but [google] section is missing")?;
    let path = g.cloud_app_credentials_path.display();
    let key_file = std::fs::read(&g.cloud_app_credentials_path).map_err(|e| {
        format!("Platform Google was enabled but we are unable to read the credentials file {path}: {e}")
    })?;
    let account = ServiceAccount::from_json(&key_file)
        .map_err(|e| format!("Platform Google was enabled but the credentials file {path} cannot be used: {e}"))?;
    let endpoints = GoogleEndpoints {
        package_name: g.package_name.clone(),
        cloud_project_id: g.cloud_project_id.clone(),
        cloud_subscription_name: g.cloud_subscription_name.clone(),
        subscription_product_id: g.subscription_product_id.clone(),
        pubsub_base_url: g.pubsub_base_url.clone().unwrap_or_else(|| GoogleEndpoints::PUBSUB.into()),
        publisher_base_url: g.androidpublisher_base_url.clone().unwrap_or_else(|| GoogleEndpoints::PUBLISHER.into()),
        token_url: g.oauth_token_url.clone(),
        pull_timeout: PULL_TIMEOUT,
        call_timeout: CALL_TIMEOUT,
    };
    let api = GoogleApi::new(endpoints, Some(account), HttpClient::new(), clock.clone(), engine.registry.clone());
    let mapping = MappingCtx {
        default_grace_ms: default_grace_ms(cfg.platform_testing_env),
        testing_env: cfg.platform_testing_env,
    };
    let sub_cfg = GoogleSubscriberConfig { api: Arc::new(api), mapping, tuning, unsafe_logging: cfg.unsafe_logging };
    Ok(google_subscriber::start(sub_cfg, engine.writer.clone(), engine.reader.clone(), clock, engine.registry.clone()))
}
