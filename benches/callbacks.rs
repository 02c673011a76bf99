//! Cost of settling a wallet callback, per store backend, next to its baselines.
//!
//! Measured in one run, for the embedded store (SQLite in a temp dir) and for Redis (a
//! PRIVATE redis-server with AOF and `appendfsync always`, started and killed here):
//! - `callback_path/<backend>`: `verify_callback` of an authentic Alipay+ notifyPayment
//!   + `services::callbacks::apply` + `ack(Processed)`, a fresh pending order each time;
//! - `raw_store_commit/<backend>`: one `PaymentStore::commit` inserting an order;
//! - `rsa_verify`: one RSA-2048 SHA-256 verification (`sesame_adapters::crypto`);
//! - `redis_set`: one `SET` round trip on the same private server;
//! - `fsync_4k/{append,overwrite}`: one 4 KiB write + `fdatasync` on the temp dir's
//!   disk (what both stores wait for on every durable write).
//!
//! After criterion, a concurrency run (2,000 callbacks, 16 tasks, per backend) prints
//! throughput and p50/p99 latency next to raw commits measured the same way.
//! Never touches the machine's Redis on 6379; nothing listens at the sandbox URL and
//! the callback path never calls it.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use chrono::Utc;
use criterion::{Criterion, SamplingMode};
use sesame::clock::SystemClock;
use sesame::config::{self, Environment, StoreBackend};
use sesame::domain::order::{Order, OrderStatus};
use sesame::domain::{Merchant, OrderId};
use sesame::services::callbacks::{self, Handled};
use sesame::services::payments::{self, CreateOrderRequest};
use sesame::startup::{self, AppState};
use sesame::store::{CommitOutcome, OrderChange};
use sesame_adapters::alipay_plus::sandbox::LOCAL_CLIENT_ID;
use sesame_adapters::alipay_plus::wire;
use sesame_adapters::contract::{Ack, AdapterId, RawCallback, WalletAdapter};
use sesame_adapters::crypto::RsaPrivateKey;

#[path = "support/mod.rs"]
mod support;
use support::{
    AMOUNT, Latencies, RedisServer, WEBHOOK_PATH, ms, process_cpu, signed_notify, wallet_key_in,
};

const CONCURRENT_CALLBACKS: usize = 2_000;
const CONCURRENT_TASKS: usize = 16;
/// Store-bound benchmarks take milliseconds: few flat samples keep the run short.
const STORE_SAMPLES: usize = 20;

/// One backend's application state, an onboarded merchant and the Alipay+ adapter.
struct Backend {
    name: &'static str,
    state: Arc<AppState>,
    adapter: Arc<dyn WalletAdapter>,
    wallet_key: Arc<RsaPrivateKey>,
    merchant: Merchant,
    /// A stored order whose fields every bench order copies.
    template: Order,
    redis: Option<RedisServer>,
    _dir: tempfile::TempDir,
}

/// Why a backend cannot run the payment benches (its store refuses payments).
struct Unavailable {
    name: &'static str,
    reason: String,
    redis: Option<RedisServer>,
}

/// A signed notifyPayment for one pending order, ready for the adapter.
struct Prepared {
    id: OrderId,
    raw: RawCallback,
}

async fn open_backend(
    name: &'static str,
    backend: StoreBackend,
    keys_file: &[u8],
) -> Result<Backend, Unavailable> {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join(sesame::wallets::KEYS_FILE), keys_file).expect("write keys");
    let mut settings = config::load_from(&config::config_dir(), Environment::Test, None, false)
        .expect("test settings");
    settings.store.path = dir.path().to_path_buf();
    settings.workers.enabled = false;
    settings.wallets.mode = config::WalletMode::Sandbox;
    let redis = match backend {
        StoreBackend::Embedded => None,
        StoreBackend::Redis => {
            let server = RedisServer::start();
            settings.store.backend = StoreBackend::Redis;
            settings.store.redis_url = server.url();
            Some(server)
        }
    };
    let (state, _admin) =
        startup::build_state(settings, Arc::new(SystemClock), "http://127.0.0.1:1")
            .await
            .expect("build state");
    let state = Arc::new(state);
    let wallet_key = Arc::new(wallet_key_in(dir.path()));
    let adapter = state
        .wallets
        .adapter(AdapterId::AlipayPlus)
        .cloned()
        .expect("alipay_plus adapter in sandbox mode");

    let created = support::onboard(&state, "BENCH CAFE").await;
    let merchant = state
        .store
        .merchant(&sesame::domain::MerchantId::parse(&created.merchant.id).expect("merchant id"))
        .await
        .expect("read merchant")
        .expect("merchant stored");
    // The Redis payments store may not be built yet: ask it for an order it cannot have,
    // so its own error (not a mapped API error) says why.
    if let Err(e) = state
        .store
        .order(&OrderId::generate_for(&merchant.id))
        .await
    {
        return Err(Unavailable {
            name,
            reason: e.to_string(),
            redis,
        });
    }
    // No wallet named: the order is only committed (status `created`), no wallet call.
    let order_input = payments::validate_order(
        &state,
        &CreateOrderRequest {
            amount: AMOUNT.into(),
            currency: "MOP".into(),
            description: "bench".into(),
            reference: None,
            wallet: None,
            auth_code: None,
            expires_in: None,
        },
    )
    .expect("valid order");
    let template = match payments::create_order(&state, &merchant, order_input, None).await {
        Ok(order) => order,
        Err(e) => {
            return Err(Unavailable {
                name,
                reason: format!("{e:?}"),
                redis,
            });
        }
    };
    Ok(Backend {
        name,
        state,
        adapter,
        wallet_key,
        merchant,
        template,
        redis,
        _dir: dir,
    })
}

impl Backend {
    /// A new order as the Alipay+ rail leaves it once the shopper has the QR: pending.
    fn pending_order(&self) -> Order {
        let now = Utc::now().timestamp_millis();
        Order {
            id: OrderId::generate_for(&self.merchant.id),
            status: OrderStatus::Pending,
            adapter: Some(AdapterId::AlipayPlus.as_str().to_owned()),
            brand: Some("mpay".to_owned()),
            created_at: now,
            updated_at: now,
            expires_at: now + 15 * 60 * 1000,
            version: 1,
            ..self.template.clone()
        }
    }

    async fn insert(&self, order: &Order) {
        let change = OrderChange {
            order: order.clone(),
            expected_version: 0,
            dedupe_key: None,
            refund: None,
            entry: None,
            event: None,
        };
        let outcome = self
            .state
            .store
            .commit(&change, order.created_at)
            .await
            .expect("insert order");
        assert_eq!(outcome, CommitOutcome::Applied);
    }

    /// `n` pending orders in the store, each with its authentic notification.
    async fn prepare(&self, n: usize) -> Vec<Prepared> {
        let mut prepared = Vec::with_capacity(n);
        for _ in 0..n {
            let order = self.pending_order();
            self.insert(&order).await;
            prepared.push(Prepared {
                raw: signed_notify(&self.wallet_key, order.id.as_str()),
                id: order.id,
            });
        }
        prepared
    }

    /// The timed part: exactly what `POST /webhooks/alipay_plus` does after reading
    /// the request. Panics unless the callback was verified and applied.
    async fn settle(&self, raw: &RawCallback) {
        let event = self
            .adapter
            .verify_callback(raw)
            .expect("authentic callback");
        let handled = callbacks::apply(&self.state, AdapterId::AlipayPlus, event)
            .await
            .expect("callback applied");
        assert_eq!(handled, Handled::Processed);
        black_box(self.adapter.ack(Ack::Processed));
    }

    /// Untimed check that a measured callback really posted (not a mismatch or skip).
    async fn assert_succeeded(&self, id: &OrderId) {
        let order = self
            .state
            .store
            .order(id)
            .await
            .expect("read order")
            .expect("order stored");
        assert_eq!(
            order.status,
            OrderStatus::Succeeded,
            "order {id} not settled"
        );
    }
}

fn bench_rsa_verify(c: &mut Criterion, wallet_key: &RsaPrivateKey) {
    let raw = signed_notify(wallet_key, "ord_rsa_baseline");
    let time = raw
        .header(wire::HEADER_REQUEST_TIME)
        .expect("request time")
        .to_owned();
    let message = wire::signing_string(WEBHOOK_PATH, LOCAL_CLIENT_ID, &time, raw.body());
    let signature = wallet_key.sign(&message).expect("sign");
    let public = wallet_key.public_key().expect("public key");
    c.bench_function("rsa_verify", |b| {
        b.iter(|| {
            public
                .verify(black_box(&message), black_box(&signature))
                .expect("valid signature")
        })
    });
}

/// What one durable 4 KiB write costs on the disk the stores use: `write` +
/// `fdatasync`, appending to a file (as SQLite's WAL and Redis's AOF do on every
/// durable write) and overwriting an allocated block (a reused WAL page).
fn bench_fsync(c: &mut Criterion) {
    use std::os::unix::fs::FileExt;
    /// Blocks of the overwritten file; also where the appended file starts over.
    const BLOCKS: u64 = 1024;
    let dir = tempfile::tempdir().expect("temp dir");
    let open = |name: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.path().join(name))
            .expect("probe file")
    };
    let block = [0x5au8; 4096];
    let mut group = c.benchmark_group("fsync_4k");
    group
        .sample_size(STORE_SAMPLES)
        .sampling_mode(SamplingMode::Flat);

    let appended = open("append-probe");
    let mut at = 0u64;
    group.bench_function("append", |b| {
        b.iter(|| {
            if at == BLOCKS * 16 {
                appended.set_len(0).expect("start over");
                at = 0;
            }
            appended.write_all_at(&block, at * 4096).expect("write");
            appended.sync_data().expect("fdatasync");
            at += 1;
        })
    });

    // Written out (not a sparse `set_len`) and synced once, so each timed write
    // overwrites allocated blocks.
    let overwritten = open("overwrite-probe");
    for i in 0..BLOCKS {
        overwritten
            .write_all_at(&block, i * 4096)
            .expect("preallocate");
    }
    overwritten.sync_all().expect("sync");
    let mut at = 0u64;
    group.bench_function("overwrite", |b| {
        b.iter(|| {
            overwritten
                .write_all_at(&block, (at % BLOCKS) * 4096)
                .expect("write");
            overwritten.sync_data().expect("fdatasync");
            at += 1;
        })
    });
    group.finish();
}

fn bench_backend(c: &mut Criterion, rt: &tokio::runtime::Runtime, backend: &Backend) {
    let mut group = c.benchmark_group("callback_path");
    group
        .sample_size(STORE_SAMPLES)
        .sampling_mode(SamplingMode::Flat);
    group.bench_function(backend.name, |b| {
        b.to_async(rt).iter_custom(|iters| async move {
            let prepared = backend.prepare(iters as usize).await;
            let start = Instant::now();
            for p in &prepared {
                backend.settle(&p.raw).await;
            }
            let elapsed = start.elapsed();
            if let Some(last) = prepared.last() {
                backend.assert_succeeded(&last.id).await;
            }
            elapsed
        })
    });
    group.finish();

    let mut group = c.benchmark_group("raw_store_commit");
    group
        .sample_size(STORE_SAMPLES)
        .sampling_mode(SamplingMode::Flat);
    group.bench_function(backend.name, |b| {
        b.to_async(rt).iter_custom(|iters| async move {
            let orders: Vec<Order> = (0..iters).map(|_| backend.pending_order()).collect();
            let start = Instant::now();
            for order in &orders {
                backend.insert(order).await;
            }
            start.elapsed()
        })
    });
    group.finish();
}

fn bench_redis_set(c: &mut Criterion, rt: &tokio::runtime::Runtime, url: &str) {
    let manager = rt.block_on(async {
        redis::Client::open(url)
            .expect("redis url")
            .get_connection_manager()
            .await
            .expect("connect")
    });
    let mut group = c.benchmark_group("redis_set");
    group
        .sample_size(STORE_SAMPLES)
        .sampling_mode(SamplingMode::Flat);
    let counter = AtomicUsize::new(0);
    group.bench_function("redis", |b| {
        b.to_async(rt).iter(|| {
            let mut conn = manager.clone();
            let key = format!("bench:set:{}", counter.fetch_add(1, Ordering::Relaxed));
            async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg("a value the size of a small record")
                    .query_async::<()>(&mut conn)
                    .await
                    .expect("SET")
            }
        })
    });
    group.finish();
}

/// Runs `op(i)` for every i in `0..n` on `CONCURRENT_TASKS` tasks pulling from one
/// counter; returns each call's latency and the wall time of the whole run.
async fn run_concurrently<F, Fut>(n: usize, op: F) -> Latencies
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let cpu_start = process_cpu();
    let tasks: Vec<_> = (0..CONCURRENT_TASKS)
        .map(|_| {
            let op = op.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return samples;
                    }
                    let began = Instant::now();
                    op(i).await;
                    samples.push(began.elapsed());
                }
            })
        })
        .collect();
    let mut samples = Vec::with_capacity(n);
    for task in tasks {
        samples.extend(task.await.expect("task"));
    }
    Latencies::of(samples, start.elapsed(), process_cpu() - cpu_start)
}

/// Inserts `CONCURRENT_CALLBACKS` pending orders (the raw-commit measurement), then
/// settles each with its callback, both with `CONCURRENT_TASKS` tasks.
async fn concurrency(backend: Arc<Backend>) -> (Latencies, Latencies) {
    let orders: Arc<Vec<Order>> = Arc::new(
        (0..CONCURRENT_CALLBACKS)
            .map(|_| backend.pending_order())
            .collect(),
    );
    let key = backend.wallet_key.clone();
    let ids: Vec<String> = orders.iter().map(|o| o.id.as_str().to_owned()).collect();
    let raws = tokio::task::spawn_blocking(move || {
        ids.iter()
            .map(|id| signed_notify(&key, id))
            .collect::<Vec<_>>()
    })
    .await
    .expect("sign notifications");
    let raws = Arc::new(raws);

    let (b, o) = (backend.clone(), orders.clone());
    let commits = run_concurrently(CONCURRENT_CALLBACKS, move |i| {
        let (b, o) = (b.clone(), o.clone());
        async move { b.insert(&o[i]).await }
    })
    .await;
    let (b, r) = (backend.clone(), raws.clone());
    let settled = run_concurrently(CONCURRENT_CALLBACKS, move |i| {
        let (b, r) = (b.clone(), r.clone());
        async move { b.settle(&r[i]).await }
    })
    .await;
    for order in orders.iter() {
        backend.assert_succeeded(&order.id).await;
    }
    (commits, settled)
}

/// True when the command line asks for the concurrency report: `cargo bench` (which
/// passes `--bench`), not `--list`, and no name filter that excludes it.
fn concurrency_requested() -> bool {
    const VALUED: [&str; 16] = [
        "--warm-up-time",
        "--measurement-time",
        "--sample-size",
        "--save-baseline",
        "-s",
        "--baseline",
        "-b",
        "--baseline-lenient",
        "--load-baseline",
        "--color",
        "-c",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--profile-time",
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--list") {
        return false;
    }
    let mut filter = None;
    let mut skip_value = false;
    for arg in &args {
        if skip_value {
            skip_value = false;
        } else if VALUED.contains(&arg.as_str()) {
            skip_value = true;
        } else if !arg.starts_with('-') {
            filter = Some(arg.clone());
        }
    }
    filter.is_none_or(|f| "callback_concurrency".contains(f.as_str()))
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // RSA key generation is slow: one keys file for both backends.
    let keys_dir = tempfile::tempdir().expect("temp dir");
    sesame::wallets::load_or_create_keys(keys_dir.path()).expect("generate sandbox keys");
    let keys_file =
        std::fs::read(keys_dir.path().join(sesame::wallets::KEYS_FILE)).expect("read keys");
    let wallet_key = wallet_key_in(keys_dir.path());

    let mut backends = Vec::new();
    let mut unavailable = Vec::new();
    for (name, kind) in [
        ("embedded", StoreBackend::Embedded),
        ("redis", StoreBackend::Redis),
    ] {
        match rt.block_on(open_backend(name, kind, &keys_file)) {
            Ok(backend) => backends.push(Arc::new(backend)),
            Err(u) => {
                eprintln!(
                    "{}: payments unavailable ({}); callback_path and raw_store_commit skipped",
                    u.name, u.reason
                );
                unavailable.push(u);
            }
        }
    }

    let mut c = Criterion::default().configure_from_args();
    bench_rsa_verify(&mut c, &wallet_key);
    bench_fsync(&mut c);
    for backend in &backends {
        bench_backend(&mut c, &rt, backend);
    }
    let redis_url = backends
        .iter()
        .filter_map(|b| b.redis.as_ref())
        .chain(unavailable.iter().filter_map(|u| u.redis.as_ref()))
        .map(RedisServer::url)
        .next();
    if let Some(url) = redis_url {
        bench_redis_set(&mut c, &rt, &url);
    }
    c.final_summary();

    if concurrency_requested() {
        eprintln!(
            "\ncallback_concurrency: {CONCURRENT_CALLBACKS} per backend, {CONCURRENT_TASKS} concurrent tasks"
        );
        eprintln!(
            "{:<10} {:<16} {:>10} {:>10} {:>10} {:>12}",
            "backend", "operation", "per sec", "p50 ms", "p99 ms", "cpu us/op"
        );
        for backend in &backends {
            let (commits, settled) = rt.block_on(concurrency(backend.clone()));
            for (what, l) in [("raw_commit", commits), ("callback_path", settled)] {
                eprintln!(
                    "{:<10} {:<16} {:>10.0} {:>10.2} {:>10.2} {:>12.0}",
                    backend.name,
                    what,
                    l.per_second,
                    ms(l.p50),
                    ms(l.p99),
                    l.cpu_per_op.as_secs_f64() * 1e6
                );
            }
        }
    }
}
