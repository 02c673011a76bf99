//! `spawn_app`: the real application on port 0 with a fresh data dir (and, for the
//! Redis backend, a private redis-server), plus one typed helper per endpoint.

use actix_web::dev::ServerHandle;
use actix_web::web::Data;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sesame::config::{self, Environment, Settings, StoreBackend};
use sesame::startup::{AppState, Application};

use super::redis_server::RedisServer;

pub const PUBLIC_BASE_URL: &str = "https://pay.sesame.test";

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub admin_token: String,
    pub state: Data<AppState>,
    pub dir: tempfile::TempDir,
    handle: ServerHandle,
    _redis: Option<RedisServer>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        // Stop accepting and let workers exit; the runtime ends with the test anyway.
        drop(tokio::spawn(async move { handle.stop(false).await }));
    }
}

pub fn test_settings(dir: &std::path::Path) -> Settings {
    let mut settings = config::load_from(&config::config_dir(), Environment::Test, None, false)
        .expect("test configuration loads");
    settings.server.bind = "127.0.0.1:0".parse().expect("addr");
    settings.server.public_base_url = PUBLIC_BASE_URL.to_owned();
    settings.store.path = dir.to_path_buf();
    settings.admin.token = format!("adm_test_{}", rand_suffix());
    settings
}

fn rand_suffix() -> String {
    sesame::domain::ids::base32(&sesame::domain::ids::random_bytes::<10>())
}

/// Sandbox keys generated once per test run (RSA key generation is slow), copied into
/// every app's fresh data dir as if a previous start had created them.
fn sandbox_keys() -> &'static [u8] {
    static KEYS: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        sesame::wallets::load_or_create_keys(dir.path()).expect("generate sandbox keys");
        std::fs::read(dir.path().join(sesame::wallets::KEYS_FILE)).expect("read sandbox keys")
    })
}

pub async fn spawn_app() -> TestApp {
    spawn_with(StoreBackend::Embedded, |_| {}).await
}

pub async fn spawn_app_on(backend: StoreBackend) -> TestApp {
    spawn_with(backend, |_| {}).await
}

/// An app whose public base URL is its real address, so wallet sandboxes can call
/// its webhooks and browsers can follow its links.
pub async fn spawn_reachable(backend: StoreBackend, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    build(
        backend,
        std::sync::Arc::new(sesame::clock::SystemClock),
        true,
        tweak,
    )
    .await
}

/// A reachable app whose services read time from `clock`.
pub async fn spawn_with_clock(
    backend: StoreBackend,
    clock: std::sync::Arc<sesame::clock::ManualClock>,
) -> TestApp {
    build(backend, clock, true, |_| {}).await
}

/// A gateway process started again on the same settings and data dir.
pub struct Restarted {
    pub state: Data<AppState>,
    pub handle: ServerHandle,
}

pub async fn restart(settings: Settings, data_dir: std::path::PathBuf) -> Restarted {
    assert_eq!(settings.store.path, data_dir);
    let app = Application::build(settings)
        .await
        .expect("application restarts");
    let state = app.state();
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    Restarted { state, handle }
}

pub async fn spawn_with(backend: StoreBackend, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    build(
        backend,
        std::sync::Arc::new(sesame::clock::SystemClock),
        false,
        tweak,
    )
    .await
}

/// `reachable`: the public base URL is the app's own address. The listener is bound
/// here, before the settings name its port, and handed to the application.
async fn build(
    backend: StoreBackend,
    clock: sesame::clock::DynClock,
    reachable: bool,
    tweak: impl FnOnce(&mut Settings),
) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = test_settings(dir.path());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    settings.server.bind = listener.local_addr().expect("bound address");
    if reachable {
        settings.server.public_base_url = format!("http://{}", settings.server.bind);
    }
    let redis = match backend {
        StoreBackend::Embedded => None,
        StoreBackend::Redis => {
            let server = RedisServer::start().await;
            settings.store.backend = StoreBackend::Redis;
            settings.store.redis_url = server.url();
            Some(server)
        }
    };
    tweak(&mut settings);
    std::fs::write(dir.path().join(sesame::wallets::KEYS_FILE), sandbox_keys())
        .expect("write keys");
    let admin_token = settings.admin.token.clone();
    let app = Application::build_on(settings, listener, clock)
        .await
        .expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state();
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        admin_token,
        state,
        dir,
        handle,
        _redis: redis,
    }
}

pub fn merchant_body(name: &str) -> Value {
    json!({
        "name": name,
        "city": "MACAU",
        "country": "MO",
        "mcc": "5812",
        "currency": "MOP",
        "name_zh": "南灣咖啡",
        "name_pt": "Café Nam Van",
        "notify_url": "https://merchant.example/hooks"
    })
}

/// A created merchant as the tests need it.
pub struct Onboarded {
    pub id: String,
    pub api_key: String,
    pub plate: Value,
}

impl TestApp {
    /// Stops the server and its workers (graceful), keeping the data dir.
    pub async fn stop(&self) {
        self.handle.stop(true).await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut req = self.client.get(self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("request")
    }

    pub async fn post_json(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
        idem: Option<&str>,
    ) -> Response {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(key) = idem {
            req = req.header("Idempotency-Key", key);
        }
        req.send().await.expect("request")
    }

    pub async fn post_raw(
        &self,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Response {
        let mut req = self
            .client
            .post(self.url(path))
            .header("Content-Type", content_type)
            .body(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("request")
    }

    pub async fn create_merchant(&self, body: &Value) -> Response {
        self.post_json("/v1/merchants", Some(&self.admin_token), body, None)
            .await
    }

    pub async fn onboard(&self, name: &str) -> Onboarded {
        let response = self.create_merchant(&merchant_body(name)).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.expect("json");
        Onboarded {
            id: body["merchant"]["id"].as_str().expect("id").to_owned(),
            api_key: body["api_key"].as_str().expect("key").to_owned(),
            plate: body["plate"].clone(),
        }
    }

    pub async fn create_plate(&self, merchant: &str, body: &Value) -> Response {
        self.post_json(
            &format!("/v1/merchants/{merchant}/plates"),
            Some(&self.admin_token),
            body,
            None,
        )
        .await
    }

    pub async fn merchant_count(&self) -> usize {
        self.state
            .store
            .list_merchants(None, 10_000)
            .await
            .expect("list")
            .len()
    }

    /// `sesame ledger verify` on this app's store: every test ends with a clean book.
    pub async fn assert_ledger_ok(&self) {
        let report = sesame::services::ledger_verify::verify(&self.state.store)
            .await
            .expect("verify runs");
        assert!(
            report.is_clean(),
            "ledger violations: {:?}",
            report.violations
        );
    }

    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .get("/metrics", None)
            .await
            .text()
            .await
            .expect("metrics");
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing"))
    }
}

/// Asserts an error response: status and stable code; returns the body.
pub async fn assert_error(response: Response, status: StatusCode, code: &str) -> Value {
    let seen = response.status();
    let url = response.url().path().to_owned();
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.text().await.unwrap_or_default();
    assert_eq!(seen, status, "{url}: {text}");
    let body: Value = serde_json::from_str(&text).expect("error body is JSON");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert_eq!(
        body["error"]["request_id"].as_str(),
        request_id.as_deref(),
        "request id in body and header"
    );
    body
}
