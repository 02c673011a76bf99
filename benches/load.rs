//! Load generator: the real `sesame` binary under HTTP load, next to baselines measured
//! in the same run with the same client (absolute figures drift on shared machines;
//! the ratios are what to read).
//!
//! `cargo bench --bench load` (settings by environment: `LOAD_SECONDS`, default 5, per
//! page scenario; `LOAD_CONNECTIONS`, default 32; `LOAD_CALLBACKS`, default 10000).
//!
//! - `bare_page`: bare actix-web (a child process: this binary again, same worker count
//!   as the gateway) answering a static page of the plate page's size;
//! - `healthz`, `plate_page` (`GET /q/{token}` with an MPay User-Agent): the gateway;
//! - `callbacks/<backend>`: `POST /webhooks/alipay_plus`, each request an authentic
//!   notifyPayment (signed with the sandbox wallet's key) for its own pending order,
//!   on the embedded store and on a private Redis (AOF, `appendfsync always`); then
//!   every order is checked settled and `sesame ledger verify` runs on the book;
//! - `orders/embedded`: `POST /v1/orders` for MPay, each one signed to the in-process
//!   Alipay+ sandbox and its signed answer verified (two RSA signatures per order),
//!   against the RSA-signing bound measured here with one signer per core;
//! - the gateway's peak RSS (`VmHWM`) after the run.
//!
//! The client is a small keep-alive HTTP/1.1 client on raw sockets, so it costs the
//! shared cores as little as it can and the same for every target.

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use sesame::clock::SystemClock;
use sesame::config::{self, Environment, StoreBackend};
use sesame::domain::OrderId;
use sesame::domain::order::{Order, OrderMode, OrderStatus};
use sesame::startup;
use sesame::store::{CommitOutcome, OrderChange};
use sesame_adapters::contract::AdapterId;
use sesame_adapters::crypto::RsaPrivateKey;
use sesame_adapters::money::Currency;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[path = "support/mod.rs"]
mod support;
use support::{AMOUNT, Latencies, RedisServer, WEBHOOK_PATH, ms, signed_notify, wallet_key_in};

const ROLE_VAR: &str = "SESAME_LOAD_ROLE";
const ADMIN_TOKEN: &str = "adm_load_generator_token_0123456789";
const MPAY_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MPay/3.8.0";
/// What the bare server answers: about the size of the gateway's plate page.
const BARE_PAGE_BYTES: usize = 1_400;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(address: SocketAddr) -> Conn {
        let stream = TcpStream::connect(address).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Conn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        }
    }

    /// Sends one request and reads its whole response; returns the status.
    async fn call(&mut self, request: &[u8]) -> u16 {
        self.stream.write_all(request).await.expect("write request");
        self.buf.clear();
        let head_end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at + 4;
            }
            self.fill().await;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).expect("ascii head");
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let length = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())
                    .flatten()
            })
            .unwrap_or(0);
        assert!(
            !head.to_ascii_lowercase().contains("transfer-encoding"),
            "chunked responses are not expected here: {head}"
        );
        while self.buf.len() < head_end + length {
            self.fill().await;
        }
        status
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await.expect("read response");
        assert!(n > 0, "the server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn get(path: &str, user_agent: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: load\r\nUser-Agent: {user_agent}\r\nAccept: text/html\r\n\r\n"
    )
    .into_bytes()
}

fn post(path: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nHost: load\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// How a scenario feeds its connections.
enum Requests {
    /// The same request again and again, for `Duration`.
    Repeat(Vec<u8>, Duration),
    /// Each request once, in order, shared among the connections.
    Each(Vec<Vec<u8>>),
}

/// Runs a scenario on `connections` keep-alive connections; every answer must carry
/// `expected` status. Returns the latencies of all requests and the wall time.
async fn drive(
    address: SocketAddr,
    connections: usize,
    requests: Requests,
    expected: u16,
) -> Latencies {
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let requests = requests.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let mut conn = Conn::open(address).await;
                let mut samples = Vec::new();
                loop {
                    let request = match &*requests {
                        Requests::Repeat(request, duration) => {
                            if started.elapsed() >= *duration {
                                return samples;
                            }
                            request.as_slice()
                        }
                        Requests::Each(all) => {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            match all.get(i) {
                                Some(request) => request.as_slice(),
                                None => return samples,
                            }
                        }
                    };
                    let began = Instant::now();
                    let status = conn.call(request).await;
                    samples.push(began.elapsed());
                    assert_eq!(status, expected, "unexpected status");
                }
            })
        })
        .collect();
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await.expect("connection task"));
    }
    Latencies::of(samples, started.elapsed(), Duration::ZERO)
}

// ---------------------------------------------------------------------------------
// The servers
// ---------------------------------------------------------------------------------

/// A child process that printed `<prefix><http://address>` on its standard output.
struct Server {
    child: Child,
    address: SocketAddr,
}

impl Server {
    fn spawn(mut command: Command, prefix: &str) -> Server {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start server");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let address = loop {
            let line = lines
                .next()
                .expect("server exited before listening")
                .expect("read stdout");
            if let Some(url) = line.strip_prefix(prefix) {
                break url
                    .trim()
                    .trim_start_matches("http://")
                    .parse()
                    .expect("listening address");
            }
        };
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Server { child, address }
    }

    /// Peak resident set size so far, KiB (`VmHWM`).
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    fn stop(mut self) {
        // SAFETY: a signal to our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// The baseline: bare actix-web, the same worker count, one static page and an echo.
fn run_bare_server() {
    let page = format!(
        "<!doctype html><html><body>{}</body></html>",
        "x".repeat(BARE_PAGE_BYTES - 41)
    );
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        let server = actix_web::HttpServer::new(move || {
            let page = page.clone();
            actix_web::App::new()
                .route(
                    "/page",
                    actix_web::web::get().to(move || {
                        let page = page.clone();
                        async move {
                            actix_web::HttpResponse::Ok()
                                .content_type("text/html; charset=utf-8")
                                .body(page)
                        }
                    }),
                )
                .route(
                    "/echo",
                    actix_web::web::post().to(|body: actix_web::web::Bytes| async move {
                        actix_web::HttpResponse::Ok().body(body)
                    }),
                )
        })
        .workers(2)
        .bind("127.0.0.1:0")
        .expect("bind");
        let address = server.addrs()[0];
        println!("bare actix listening on http://{address}");
        server.run().await.expect("serve");
    });
}

fn bare_server() -> Server {
    let mut command = Command::new(std::env::current_exe().expect("own path"));
    command.env(ROLE_VAR, "bare");
    Server::spawn(command, "bare actix listening on ")
}

/// The gateway's data dir, prepared in this process: sandbox keys, a merchant with its
/// plate, and `pending` orders waiting for their callbacks.
struct Prepared {
    dir: tempfile::TempDir,
    plate_token: String,
    api_key: String,
    callbacks: Vec<Vec<u8>>,
    order_ids: Vec<OrderId>,
}

async fn prepare(backend: StoreBackend, redis_url: Option<String>, callbacks: usize) -> Prepared {
    let dir = tempfile::tempdir().expect("data dir");
    sesame::wallets::load_or_create_keys(dir.path()).expect("sandbox keys");
    let mut settings = config::load_from(&config::config_dir(), Environment::Test, None, false)
        .expect("test settings");
    settings.store.path = dir.path().to_path_buf();
    settings.store.backend = backend;
    if let Some(url) = redis_url {
        settings.store.redis_url = url;
    }
    settings.workers.enabled = false;
    let (state, _) = startup::build_state(settings, Arc::new(SystemClock), "http://127.0.0.1:1")
        .await
        .expect("build state");
    let created = support::onboard(&state, "LOAD CAFE").await;
    let merchant = sesame::domain::MerchantId::parse(&created.merchant.id).expect("id");
    let now = Utc::now().timestamp_millis();
    let mut order_ids = Vec::with_capacity(callbacks);
    for _ in 0..callbacks {
        let order = Order {
            id: OrderId::generate_for(&merchant),
            merchant_id: merchant.clone(),
            plate_id: None,
            amount_minor: 4_200,
            currency: Currency::Mop,
            description: "load".into(),
            reference: None,
            mode: OrderMode::DynamicQr,
            fee_bps: 150,
            brand: Some("mpay".into()),
            adapter: Some(AdapterId::AlipayPlus.as_str().to_owned()),
            status: OrderStatus::Pending,
            paid_late: false,
            wallet_ref: None,
            pay_action: None,
            fee_minor: 0,
            refunded_minor: 0,
            refund_pending_minor: 0,
            review: None,
            expires_at: now + 3_600_000,
            next_check_at: Some(now + 3_600_000),
            paid_at: None,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        let change = OrderChange {
            order: order.clone(),
            expected_version: 0,
            dedupe_key: None,
            refund: None,
            entry: None,
            event: None,
        };
        let outcome = state
            .store
            .commit(&change, now)
            .await
            .expect("insert order");
        assert_eq!(outcome, CommitOutcome::Applied);
        order_ids.push(order.id);
    }
    let key: Arc<RsaPrivateKey> = Arc::new(wallet_key_in(dir.path()));
    let ids: Vec<String> = order_ids.iter().map(|id| id.as_str().to_owned()).collect();
    // Signing is the slow part: one signer per core.
    let halves: Vec<Vec<String>> = ids
        .chunks(ids.len().div_ceil(2).max(1))
        .map(<[String]>::to_vec)
        .collect();
    let mut signers = Vec::new();
    for half in halves {
        let key = key.clone();
        signers.push(tokio::task::spawn_blocking(move || {
            half.iter()
                .map(|id| {
                    let raw = signed_notify(&key, id);
                    let headers: Vec<(&str, String)> = raw
                        .headers()
                        .iter()
                        .map(|(name, value)| (name.as_str(), value.clone()))
                        .collect();
                    post(WEBHOOK_PATH, &headers, raw.body())
                })
                .collect::<Vec<_>>()
        }));
    }
    let mut requests = Vec::with_capacity(callbacks);
    for signer in signers {
        requests.extend(signer.await.expect("sign"));
    }
    Prepared {
        dir,
        plate_token: created.plate.token.clone(),
        api_key: created.api_key.clone(),
        callbacks: requests,
        order_ids,
    }
}

fn gateway(prepared: &Prepared, backend: StoreBackend, redis_url: Option<&str>) -> Server {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sesame"));
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("serve")
        .env("SESAME_ENV", "test")
        .env_remove("RUST_LOG")
        .env("SESAME__SERVER__BIND", "127.0.0.1:0")
        .env("SESAME__STORE__PATH", prepared.dir.path())
        .env(
            "SESAME__STORE__BACKEND",
            match backend {
                StoreBackend::Embedded => "embedded",
                StoreBackend::Redis => "redis",
            },
        )
        .env("SESAME__ADMIN__TOKEN", ADMIN_TOKEN)
        // Load from one address: the shopper rate limits would measure themselves.
        .env("SESAME__SHOPPER__RATE_PER_IP_PER_MINUTE", "1000000000")
        .env("SESAME__LOG__FILTER", "error");
    if let Some(url) = redis_url {
        command.env("SESAME__STORE__REDIS_URL", url);
    }
    Server::spawn(command, "Sesame listening on ")
}

/// RSA-2048 signatures per second with one signer per core (the order flow's bound).
fn rsa_signs_per_second(key: &RsaPrivateKey) -> f64 {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let duration = Duration::from_secs(2);
    let message = b"POST /ams/api/v1/payments/pay\nclient.2026-12-04T00:00:00+08:00.{}".to_vec();
    let pem = key.to_pkcs8_pem().expect("pem");
    let started = Instant::now();
    let threads: Vec<_> = (0..cores)
        .map(|_| {
            let key = RsaPrivateKey::from_pem(&pem).expect("key");
            let message = message.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while started.elapsed() < duration {
                    key.sign(&message).expect("sign");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().expect("signer")).sum();
    total as f64 / started.elapsed().as_secs_f64()
}

fn report(name: &str, l: &Latencies, baseline: Option<(&str, f64)>) {
    let ratio = baseline
        .map(|(what, per_second)| format!("{:.2} x {what}", l.per_second / per_second))
        .unwrap_or_default();
    println!(
        "{:<22} {:>10.0} {:>9.2} {:>9.2}   {ratio}",
        name,
        l.per_second,
        ms(l.p50),
        ms(l.p99)
    );
}

fn ledger_verify(prepared: &Prepared, backend: StoreBackend, redis_url: Option<&str>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sesame"));
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["ledger", "verify"])
        .env("SESAME_ENV", "test")
        .env("SESAME__STORE__PATH", prepared.dir.path())
        .env(
            "SESAME__STORE__BACKEND",
            match backend {
                StoreBackend::Embedded => "embedded",
                StoreBackend::Redis => "redis",
            },
        );
    if let Some(url) = redis_url {
        command.env("SESAME__STORE__REDIS_URL", url);
    }
    let out = command.output().expect("ledger verify");
    assert!(
        out.status.success(),
        "ledger verify failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every prepared order is `succeeded` once (read through the gateway's API).
async fn assert_all_settled(server: &Server, prepared: &Prepared) {
    let mut conn = Conn::open(server.address).await;
    for id in &prepared.order_ids {
        let request = format!(
            "GET /v1/orders/{id} HTTP/1.1\r\nHost: load\r\nAuthorization: Bearer {}\r\n\r\n",
            prepared.api_key
        );
        assert_eq!(conn.call(request.as_bytes()).await, 200);
        let body = &conn.buf[find(&conn.buf, b"\r\n\r\n").expect("head") + 4..];
        let order: serde_json::Value = serde_json::from_slice(body).expect("order json");
        assert_eq!(order["status"], "succeeded", "{order}");
    }
}

/// Every prepared callback once, then every order checked settled.
fn callbacks_scenario(
    rt: &tokio::runtime::Runtime,
    name: &str,
    server: &Server,
    prepared: &Prepared,
    connections: usize,
    bare_post: &Latencies,
) {
    let settled = rt.block_on(drive(
        server.address,
        connections,
        Requests::Each(prepared.callbacks.clone()),
        200,
    ));
    report(name, &settled, Some(("bare_post", bare_post.per_second)));
    rt.block_on(assert_all_settled(server, prepared));
}

fn main() {
    if std::env::var(ROLE_VAR).as_deref() == Ok("bare") {
        run_bare_server();
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then only build.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let seconds = Duration::from_secs(env_number("LOAD_SECONDS", 5) as u64);
    let connections = env_number("LOAD_CONNECTIONS", 32);
    let callbacks = env_number("LOAD_CALLBACKS", 10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    println!(
        "load: {connections} connections, {}s per page scenario, {callbacks} callbacks per backend",
        seconds.as_secs()
    );
    println!(
        "{:<22} {:>10} {:>9} {:>9}   ratio",
        "scenario", "per sec", "p50 ms", "p99 ms"
    );

    let bare = bare_server();
    let bare_page = rt.block_on(drive(
        bare.address,
        connections,
        Requests::Repeat(get("/page", MPAY_UA), seconds),
        200,
    ));
    report("bare_page", &bare_page, None);
    let bare_echo = rt.block_on(drive(
        bare.address,
        connections,
        Requests::Repeat(post("/echo", &[], b"{\"a\":1}"), seconds),
        200,
    ));
    report("bare_post", &bare_echo, None);
    bare.stop();

    // Embedded store: pages, callbacks, then order creation through the sandbox.
    let prepared = rt.block_on(prepare(StoreBackend::Embedded, None, callbacks));
    let server = gateway(&prepared, StoreBackend::Embedded, None);
    let healthz = rt.block_on(drive(
        server.address,
        connections,
        Requests::Repeat(get("/healthz", MPAY_UA), seconds),
        200,
    ));
    report(
        "healthz",
        &healthz,
        Some(("bare_page", bare_page.per_second)),
    );
    let plate = rt.block_on(drive(
        server.address,
        connections,
        Requests::Repeat(
            get(&format!("/q/{}", prepared.plate_token), MPAY_UA),
            seconds,
        ),
        200,
    ));
    report(
        "plate_page",
        &plate,
        Some(("bare_page", bare_page.per_second)),
    );
    callbacks_scenario(
        &rt,
        "callbacks/embedded",
        &server,
        &prepared,
        connections,
        &bare_echo,
    );

    let key = wallet_key_in(prepared.dir.path());
    let signs = rsa_signs_per_second(&key);
    let orders: Vec<Vec<u8>> = (0..(signs as usize).clamp(200, 4_000))
        .map(|i| {
            post(
                "/v1/orders",
                &[
                    ("Authorization", format!("Bearer {}", prepared.api_key)),
                    ("Idempotency-Key", format!("load-order-{i}")),
                ],
                format!(
                    r#"{{"amount":"{AMOUNT}","currency":"MOP","description":"load","wallet":"mpay"}}"#
                )
                .as_bytes(),
            )
        })
        .collect();
    let created = rt.block_on(drive(
        server.address,
        connections,
        Requests::Each(orders),
        201,
    ));
    // Two RSA signatures per order: ours on the request, the wallet's on its answer.
    report(
        "orders/embedded",
        &created,
        Some(("RSA-sign bound", signs / 2.0)),
    );
    println!(
        "{:<22} {:>10.0}   (RSA-2048 signs/s, one signer per core)",
        "rsa_sign", signs
    );
    let rss = server.peak_rss_kib();
    server.stop();
    ledger_verify(&prepared, StoreBackend::Embedded, None);
    println!(
        "gateway peak RSS       {:>10.1} MiB (embedded run)",
        rss as f64 / 1024.0
    );

    // Redis: the callback path on a private, durable server.
    let redis = RedisServer::start();
    let url = redis.url();
    let prepared = rt.block_on(prepare(StoreBackend::Redis, Some(url.clone()), callbacks));
    let server = gateway(&prepared, StoreBackend::Redis, Some(&url));
    callbacks_scenario(
        &rt,
        "callbacks/redis",
        &server,
        &prepared,
        connections,
        &bare_echo,
    );
    let rss = server.peak_rss_kib();
    server.stop();
    ledger_verify(&prepared, StoreBackend::Redis, Some(&url));
    println!(
        "gateway peak RSS       {:>10.1} MiB (redis run)",
        rss as f64 / 1024.0
    );
}
