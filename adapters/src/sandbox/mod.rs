//! What every wallet sandbox shares: fault injection, the callback dispatcher with the
//! wallet's retry schedule (compressed in time for tests), the shopper's pay page,
//! and the rules of test payment codes.
//!
//! A sandbox is the wallet's server side of the SAME protocol its adapter speaks; the
//! per-wallet part (routes, signatures, order book, statement format) lives in
//! `<wallet>/sandbox.rs`. Must never: be reachable in production configuration (the
//! gateway mounts sandboxes only in local mode), or sign with the merchant's key.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

/// Faults a test (or a curious developer) can ask a sandbox to inject, via
/// `POST <sandbox>/faults` with this JSON. Counters are consumed as faults happen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultPlan {
    /// Answer the next N API requests with HTTP 500 (the wallet's own error shape).
    pub fail_requests: u32,
    /// Answer the next API requests with these HTTP statuses, one per request in
    /// order, with a plain-text body and no wallet signature, without processing
    /// them: what a proxy, firewall or wrong URL in front of the wallet answers
    /// (`[403, 404]`). Applied after `fail_requests`.
    pub http_status: Vec<u16>,
    /// Process the next N API requests, then answer HTTP 500 instead of the result:
    /// the request took effect but the caller cannot see how (a lost answer).
    /// Honoured by the Kakao Pay sandbox, whose cancel has no idempotency key.
    pub lose_answers: u32,
    /// Delay every API response by this many milliseconds.
    pub slow_ms: u64,
    /// Deliver each callback N extra times, concurrently.
    pub duplicate_callbacks: u32,
    /// Drop the next N callback attempts (the retry schedule goes on).
    pub drop_callbacks: u32,
    /// Never deliver callbacks at all (reconciliation must find the result).
    pub drop_all_callbacks: bool,
    /// Deliver each callback this many milliseconds late.
    pub delay_callbacks_ms: u64,
    /// Queue callbacks instead of sending them, until `POST <sandbox>/callbacks/release`.
    pub hold_callbacks: bool,
}

/// The live fault plan of one sandbox.
#[derive(Debug, Default)]
pub struct Faults(Mutex<FaultPlan>);

impl Faults {
    fn lock(&self) -> MutexGuard<'_, FaultPlan> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn plan(&self) -> FaultPlan {
        self.lock().clone()
    }

    pub fn set(&self, plan: FaultPlan) {
        *self.lock() = plan;
    }

    /// True when this API request must fail (consumes one `fail_requests`).
    pub fn take_request_failure(&self) -> bool {
        let mut plan = self.lock();
        if plan.fail_requests > 0 {
            plan.fail_requests -= 1;
            true
        } else {
            false
        }
    }

    /// The next injected HTTP status fault (consumes it), as the unsigned plain-text
    /// answer of something in front of the wallet.
    pub fn take_http_status(&self) -> Option<HttpResponse> {
        let status = {
            let mut plan = self.lock();
            if plan.http_status.is_empty() {
                return None;
            }
            plan.http_status.remove(0)
        };
        let status = actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
        Some(
            HttpResponse::build(status)
                .content_type("text/plain; charset=utf-8")
                .body(format!("sandbox: injected HTTP {}", status.as_u16())),
        )
    }

    /// True when the answer to this (already processed) request must be lost
    /// (consumes one `lose_answers`).
    pub fn take_lost_answer(&self) -> bool {
        let mut plan = self.lock();
        if plan.lose_answers > 0 {
            plan.lose_answers -= 1;
            true
        } else {
            false
        }
    }

    /// Applies `slow_ms`, then says whether to fail. Call first in every API handler.
    pub async fn gate(&self) -> bool {
        let slow = self.lock().slow_ms;
        if slow > 0 {
            tokio::time::sleep(Duration::from_millis(slow)).await;
        }
        self.take_request_failure()
    }

    fn take_drop(&self) -> bool {
        let mut plan = self.lock();
        if plan.drop_all_callbacks {
            return true;
        }
        if plan.drop_callbacks > 0 {
            plan.drop_callbacks -= 1;
            true
        } else {
            false
        }
    }
}

/// How the sandbox's clock relates to the wallet's: retry schedules and "user
/// confirms after N seconds" are divided by `speedup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeScale {
    pub speedup: u32,
}

impl TimeScale {
    pub const REAL_TIME: TimeScale = TimeScale { speedup: 1 };

    pub fn scale(self, wallet_time: Duration) -> Duration {
        wallet_time / self.speedup.max(1)
    }
}

/// Signs one delivery attempt afresh: given the exact body about to be sent, the
/// full header list for this attempt, or `None` to send the original headers.
pub type Resign = Arc<dyn Fn(&[u8]) -> Option<Vec<(String, String)>> + Send + Sync>;

/// A callback to deliver: the exact bytes and headers the wallet sends.
#[derive(Clone)]
pub struct Outgoing {
    pub url: String,
    /// The headers of the first attempt (and of every attempt when `resign` is `None`
    /// or declines).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Did the receiver acknowledge, in this wallet's terms?
    pub acked: fn(u16, &[u8]) -> bool,
    /// Called before every attempt, for a sandbox whose wallet signs each retry with
    /// the current time (the WeChat Pay sandbox). `None` resends the first
    /// attempt's headers, which is what the Alipay and Alipay+ sandboxes do.
    pub resign: Option<Resign>,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("url", &self.url)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .field("resign", &self.resign.as_ref().map(|_| ".."))
            .finish_non_exhaustive()
    }
}

/// One delivery attempt, as logged for tests and `GET <sandbox>/deliveries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub url: String,
    pub attempt: u32,
    /// HTTP status, or `None` when the attempt was dropped or could not connect.
    pub status: Option<u16>,
    pub acked: bool,
}

/// Sends callbacks with the wallet's retry schedule until acknowledged.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    inner: Arc<DispatcherInner>,
}

#[derive(Debug)]
struct DispatcherInner {
    client: reqwest::Client,
    /// Delays between attempts, in wallet time; the first attempt is immediate.
    schedule: Vec<Duration>,
    time: TimeScale,
    faults: Arc<Faults>,
    held: Mutex<VecDeque<Outgoing>>,
    log: Mutex<Vec<Delivery>>,
}

impl Dispatcher {
    pub fn new(schedule: Vec<Duration>, time: TimeScale, faults: Arc<Faults>) -> Dispatcher {
        Dispatcher {
            inner: Arc::new(DispatcherInner {
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap_or_default(),
                schedule,
                time,
                faults,
                held: Mutex::new(VecDeque::new()),
                log: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Queues (when holding) or starts delivering `callback` in the background.
    pub fn dispatch(&self, callback: Outgoing) {
        if self.inner.faults.plan().hold_callbacks {
            lock(&self.inner.held).push_back(callback);
            return;
        }
        self.spawn(callback);
    }

    /// Sends the held callbacks, in reverse order when `reverse` (out-of-order delivery).
    pub fn release_held(&self, reverse: bool) -> usize {
        let mut held: Vec<Outgoing> = lock(&self.inner.held).drain(..).collect();
        if reverse {
            held.reverse();
        }
        let count = held.len();
        // Deliver one after another so the order is really the requested one.
        let this = self.clone();
        tokio::spawn(async move {
            for callback in held {
                this.inner.deliver_until_acked(callback).await;
            }
        });
        count
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.inner.log).clone()
    }

    fn spawn(&self, callback: Outgoing) {
        let plan = self.inner.faults.plan();
        for _ in 0..=plan.duplicate_callbacks {
            let inner = self.inner.clone();
            let callback = callback.clone();
            tokio::spawn(async move {
                if plan.delay_callbacks_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(plan.delay_callbacks_ms)).await;
                }
                inner.deliver_until_acked(callback).await;
            });
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl DispatcherInner {
    async fn deliver_until_acked(&self, callback: Outgoing) {
        let delays = std::iter::once(Duration::ZERO).chain(self.schedule.iter().copied());
        let mut attempt = 0;
        for delay in delays {
            attempt += 1;
            if !delay.is_zero() {
                tokio::time::sleep(self.time.scale(delay)).await;
            }
            let (status, acked) = if self.faults.take_drop() {
                (None, false)
            } else {
                self.attempt(&callback).await
            };
            lock(&self.log).push(Delivery {
                url: callback.url.clone(),
                attempt,
                status,
                acked,
            });
            if acked {
                return;
            }
        }
        tracing::warn!(url = %callback.url, attempts = attempt, "sandbox gave up delivering a callback");
    }

    async fn attempt(&self, callback: &Outgoing) -> (Option<u16>, bool) {
        let fresh = callback
            .resign
            .as_ref()
            .and_then(|resign| resign(&callback.body));
        let headers = fresh.as_ref().unwrap_or(&callback.headers);
        let mut request = self.client.post(&callback.url).body(callback.body.clone());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.bytes().await.unwrap_or_default();
                (Some(status), (callback.acked)(status, &body))
            }
            Err(_) => (None, false),
        }
    }
}

/// `POST /faults` (set the plan), `GET /faults`, `POST /callbacks/release?order=reverse`,
/// `GET /deliveries`. Mount inside the sandbox's scope.
pub fn fault_routes(cfg: &mut web::ServiceConfig, faults: Arc<Faults>, dispatcher: Dispatcher) {
    cfg.app_data(web::Data::from(faults))
        .app_data(web::Data::new(dispatcher))
        .route("/faults", web::post().to(set_faults))
        .route("/faults", web::get().to(get_faults))
        .route("/callbacks/release", web::post().to(release_callbacks))
        .route("/deliveries", web::get().to(deliveries));
}

async fn set_faults(faults: web::Data<Faults>, plan: web::Json<FaultPlan>) -> HttpResponse {
    faults.set(plan.into_inner());
    HttpResponse::Ok().json(faults.plan())
}

async fn get_faults(faults: web::Data<Faults>) -> HttpResponse {
    HttpResponse::Ok().json(faults.plan())
}

#[derive(Debug, Deserialize)]
struct ReleaseQuery {
    order: Option<String>,
}

async fn release_callbacks(
    dispatcher: web::Data<Dispatcher>,
    query: web::Query<ReleaseQuery>,
) -> HttpResponse {
    let reverse = query.order.as_deref() == Some("reverse");
    let released = dispatcher.release_held(reverse);
    HttpResponse::Ok().json(serde_json::json!({ "released": released }))
}

async fn deliveries(dispatcher: web::Data<Dispatcher>) -> HttpResponse {
    HttpResponse::Ok().json(dispatcher.deliveries())
}

/// Key material that wires one adapter to its sandbox in local mode: the merchant's
/// RSA key (the adapter signs with it; the sandbox verifies with its public half), the
/// wallet's RSA key (the sandbox signs with it; the adapter verifies), and a shared
/// symmetric secret where the protocol has one (WeChat APIv3/v2 keys, Kakao secret key).
/// The gateway generates it on first start and keeps the PEM form in its store.
pub struct LocalKeys {
    pub merchant: crate::crypto::RsaPrivateKey,
    pub wallet: crate::crypto::RsaPrivateKey,
    pub secret: [u8; 32],
}

impl std::fmt::Debug for LocalKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalKeys(***)")
    }
}

/// Serialised [`LocalKeys`]: two PKCS#8 PEMs and the hex secret.
#[derive(Clone, Serialize, Deserialize)]
pub struct LocalKeysPem {
    pub merchant_pem: String,
    pub wallet_pem: String,
    pub secret_hex: String,
}

impl LocalKeys {
    pub fn generate() -> Result<LocalKeys, crate::crypto::CryptoError> {
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&crate::crypto::random_bytes(32)?);
        Ok(LocalKeys {
            merchant: crate::crypto::RsaPrivateKey::generate_2048()?,
            wallet: crate::crypto::RsaPrivateKey::generate_2048()?,
            secret,
        })
    }

    pub fn to_pem(&self) -> Result<LocalKeysPem, crate::crypto::CryptoError> {
        Ok(LocalKeysPem {
            merchant_pem: self.merchant.to_pkcs8_pem()?,
            wallet_pem: self.wallet.to_pkcs8_pem()?,
            secret_hex: hex::encode(self.secret),
        })
    }

    pub fn from_pem(pem: &LocalKeysPem) -> Result<LocalKeys, crate::crypto::CryptoError> {
        let bytes = hex::decode(&pem.secret_hex)
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or(crate::crypto::CryptoError::KeyRejected(
                "local secret must be 32 hex-encoded bytes",
            ))?;
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&bytes);
        Ok(LocalKeys {
            merchant: crate::crypto::RsaPrivateKey::from_pem(&pem.merchant_pem)?,
            wallet: crate::crypto::RsaPrivateKey::from_pem(&pem.wallet_pem)?,
            secret,
        })
    }
}

/// What a sandbox test payment code does when charged, by its last four digits:
/// `0000`..`0999` pay at once, `1000`..`1999` need the shopper to confirm (pending
/// until `POST <sandbox>/codes/{code}/confirm`, or automatically after `confirm_after`
/// in wallet time), `9000`..`9999` are declined (insufficient balance); anything else
/// pays at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeBehaviour {
    PaysAtOnce,
    NeedsConfirmation,
    Declined,
}

impl CodeBehaviour {
    pub fn of(code: &str) -> CodeBehaviour {
        let tail: u32 = code
            .get(code.len().saturating_sub(4)..)
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        match tail {
            1000..=1999 => CodeBehaviour::NeedsConfirmation,
            9000..=9999 => CodeBehaviour::Declined,
            _ => CodeBehaviour::PaysAtOnce,
        }
    }

    /// The four-digit tail that produces this behaviour.
    pub fn tail(self) -> &'static str {
        match self {
            CodeBehaviour::PaysAtOnce => "0000",
            CodeBehaviour::NeedsConfirmation => "1000",
            CodeBehaviour::Declined => "9000",
        }
    }
}

/// A digit string of `len` digits starting with `prefix` and ending with the
/// behaviour's tail, the middle from a counter (so issued codes differ).
pub fn test_code(prefix: &str, len: usize, behaviour: CodeBehaviour, serial: u64) -> String {
    let tail = behaviour.tail();
    let middle_len = len.saturating_sub(prefix.len() + tail.len());
    let middle = format!("{serial:0>width$}", width = middle_len);
    let middle = &middle[middle.len().saturating_sub(middle_len)..];
    format!("{prefix}{middle}{tail}")
}

/// HTML-escapes text for the pay page.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The wallet's cashier page: who is paid, how much, Pay / Cancel (two POST forms).
pub fn pay_page(
    wallet: &str,
    merchant: &str,
    amount: &str,
    description: &str,
    pay_action: &str,
    cancel_action: &str,
) -> HttpResponse {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{wallet} sandbox</title><style>body{{font-family:sans-serif;max-width:26rem;margin:2rem auto;padding:0 1rem}}\
.amount{{font-size:2rem;font-weight:bold}}button{{font-size:1.2rem;padding:.6rem 1.4rem;margin:.3rem}}\
.sandbox{{color:#a00;font-size:.8rem}}</style></head><body>\
<p class=\"sandbox\">{wallet} SANDBOX — no real money moves</p>\
<h1 id=\"merchant\">{merchant}</h1><p>{description}</p><p class=\"amount\" id=\"amount\">{amount}</p>\
<form method=\"post\" action=\"{pay_action}\"><button id=\"pay\" type=\"submit\">Pay</button></form>\
<form method=\"post\" action=\"{cancel_action}\"><button id=\"cancel\" type=\"submit\">Cancel</button></form>\
</body></html>",
        wallet = escape(wallet),
        merchant = escape(merchant),
        amount = escape(amount),
        description = escape(description),
        pay_action = escape(pay_action),
        cancel_action = escape(cancel_action),
    );
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_behaviour_follows_the_tail() {
        assert_eq!(
            CodeBehaviour::of("134567890123450000"),
            CodeBehaviour::PaysAtOnce
        );
        assert_eq!(
            CodeBehaviour::of("134567890123451234"),
            CodeBehaviour::NeedsConfirmation
        );
        assert_eq!(
            CodeBehaviour::of("134567890123459999"),
            CodeBehaviour::Declined
        );
        let code = test_code("13", 18, CodeBehaviour::NeedsConfirmation, 42);
        assert_eq!(code.len(), 18);
        assert!(code.starts_with("13") && code.ends_with("1000"));
        assert_eq!(CodeBehaviour::of(&code), CodeBehaviour::NeedsConfirmation);
    }

    #[test]
    fn time_scale_compresses_wallet_time() {
        let fast = TimeScale { speedup: 1000 };
        assert_eq!(
            fast.scale(Duration::from_secs(15)),
            Duration::from_millis(15)
        );
        assert_eq!(
            TimeScale { speedup: 0 }.scale(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn pay_page_escapes_everything() {
        let page = pay_page("W", "<b>Shop</b>", "1.00 MOP", "x\"y", "/pay", "/cancel");
        let body = page.into_body();
        let bytes = actix_web::body::to_bytes(body);
        let text = futures_lite_block(bytes);
        assert!(text.contains("&lt;b&gt;Shop&lt;/b&gt;") && !text.contains("<b>Shop"));
    }

    fn futures_lite_block<
        F: std::future::Future<Output = Result<actix_web::web::Bytes, E>>,
        E: std::fmt::Debug,
    >(
        f: F,
    ) -> String {
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn callbacks_retry_until_acked_and_faults_apply() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let hits = Arc::new(AtomicU32::new(0));
        let counter = hits.clone();
        let server = actix_web::HttpServer::new(move || {
            let counter = counter.clone();
            actix_web::App::new().route(
                "/cb",
                web::post().to(move || {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if n < 2 {
                            HttpResponse::InternalServerError().finish()
                        } else {
                            HttpResponse::Ok().body("success")
                        }
                    }
                }),
            )
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let port = server.addrs()[0].port();
        tokio::spawn(server.run());
        let faults = Arc::new(Faults::default());
        faults.set(FaultPlan {
            drop_callbacks: 1,
            ..FaultPlan::default()
        });
        let dispatcher = Dispatcher::new(
            vec![Duration::from_secs(1); 5],
            TimeScale { speedup: 100 },
            faults,
        );
        dispatcher.dispatch(Outgoing {
            url: format!("http://127.0.0.1:{port}/cb"),
            headers: vec![],
            body: b"x".to_vec(),
            acked: |status, body| status == 200 && body == b"success",
            resign: None,
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !dispatcher.deliveries().iter().any(|d| d.acked) {
            assert!(
                std::time::Instant::now() < deadline,
                "{:?}",
                dispatcher.deliveries()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let log = dispatcher.deliveries();
        assert_eq!(log[0].status, None, "first attempt dropped");
        assert_eq!(log.iter().filter(|d| d.status == Some(500)).count(), 2);
        assert_eq!(log.len(), 4);
    }

    #[tokio::test]
    async fn every_attempt_is_signed_afresh_by_the_resign_hook() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let seen: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
        let recorder = seen.clone();
        let server = actix_web::HttpServer::new(move || {
            let recorder = recorder.clone();
            actix_web::App::new().route(
                "/cb",
                web::post().to(move |req: actix_web::HttpRequest| {
                    let stamp = req
                        .headers()
                        .get("X-Stamp")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("missing")
                        .to_owned();
                    let mut seen = lock(&recorder);
                    seen.push(stamp);
                    let first = seen.len() == 1;
                    async move {
                        if first {
                            HttpResponse::InternalServerError().finish()
                        } else {
                            HttpResponse::Ok().body("success")
                        }
                    }
                }),
            )
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let port = server.addrs()[0].port();
        tokio::spawn(server.run());
        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let resign: Resign = Arc::new(move |body: &[u8]| {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            Some(vec![(
                "X-Stamp".to_owned(),
                format!("{n}:{}", String::from_utf8_lossy(body)),
            )])
        });
        let dispatcher = Dispatcher::new(
            vec![Duration::from_secs(1); 3],
            TimeScale { speedup: 100 },
            Arc::new(Faults::default()),
        );
        let outgoing = Outgoing {
            url: format!("http://127.0.0.1:{port}/cb"),
            headers: vec![("X-Stamp".to_owned(), "original".to_owned())],
            body: b"x".to_vec(),
            acked: |status, body| status == 200 && body == b"success",
            resign: Some(resign),
        };
        assert!(format!("{outgoing:?}").contains("resign: Some(\"..\")"));
        dispatcher.dispatch(outgoing);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !dispatcher.deliveries().iter().any(|d| d.acked) {
            assert!(std::time::Instant::now() < deadline, "{:?}", lock(&seen));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(*lock(&seen), vec!["1:x".to_owned(), "2:x".to_owned()]);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
