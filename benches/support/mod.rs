//! What the benches share: a private `redis-server`, the Alipay+ sandbox wallet's key
//! and its signed notifications, latency statistics. Each bench uses part of it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use sesame::services::merchants::{self, CreateMerchantRequest, CreatedMerchant, PlateContext};
use sesame::startup::AppState;
use sesame_adapters::alipay_plus::sandbox::LOCAL_CLIENT_ID;
use sesame_adapters::alipay_plus::wire::{self, Amount, ApiResult, Notify};
use sesame_adapters::contract::RawCallback;
use sesame_adapters::crypto::RsaPrivateKey;
use sesame_adapters::money::{Currency, Money};

pub const WEBHOOK_PATH: &str = "/webhooks/alipay_plus";
/// The amount of every bench order.
pub const AMOUNT: &str = "42.00";

/// A private `redis-server`: own free port, own temp dir, AOF with `appendfsync always`,
/// killed on drop and (PR_SET_PDEATHSIG) when this process dies.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        for _attempt in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("free port");
            let mut command = Command::new("redis-server");
            command
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .arg("--dir")
                .arg(dir.path())
                .args(["--save", "", "--daemonize", "no"])
                .args(["--appendonly", "yes", "--appendfsync", "always"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: prctl is async-signal-safe; it only sets this child's death signal.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let child = command.spawn().expect("redis-server must be installed");
            let mut server = RedisServer {
                child,
                port,
                _dir: dir,
            };
            if server.wait_ready() {
                return server;
            }
            // The port raced with another process: try a new one.
            server.kill();
        }
        panic!("could not start a private redis-server");
    }

    fn wait_ready(&mut self) -> bool {
        use std::io::{Read, Write};
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port))
                && stream.write_all(b"PING\r\n").is_ok()
            {
                let mut buf = [0u8; 16];
                if let Ok(n) = stream.read(&mut buf)
                    && buf[..n].starts_with(b"+PONG")
                {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The Alipay+ sandbox wallet's signing key from the keys file in `data_dir` (private
/// keys are not `Clone`: this is an own copy).
pub fn wallet_key_in(data_dir: &std::path::Path) -> RsaPrivateKey {
    let keys = sesame::wallets::load_or_create_keys(data_dir).expect("sandbox keys");
    let pem = keys["alipay_plus"]
        .wallet
        .to_pkcs8_pem()
        .expect("wallet key pem");
    RsaPrivateKey::from_pem(&pem).expect("wallet key")
}

/// A notifyPayment for `order_id`, signed with the Alipay+ sandbox wallet's key exactly
/// as the wallet sends it, received now.
pub fn signed_notify(wallet_key: &RsaPrivateKey, order_id: &str) -> RawCallback {
    let amount = Money::parse(AMOUNT, Currency::Mop).expect("amount");
    let notify = Notify {
        payment_result: ApiResult::success(),
        payment_request_id: order_id.to_owned(),
        payment_id: Some(format!("pay-{order_id}")),
        acquirer_id: None,
        psp_id: Some("A111253100000000".to_owned()),
        customer_id: Some("c-1".to_owned()),
        payment_time: Some(wire::format_time(&Utc::now())),
        payment_amount: Amount::from_money(&amount),
    };
    let body = serde_json::to_vec(&notify).expect("notify json");
    let time = wire::format_time(&Utc::now());
    let signature =
        wire::sign(wallet_key, 1, WEBHOOK_PATH, LOCAL_CLIENT_ID, &time, &body).expect("sign");
    RawCallback::new(
        "POST",
        WEBHOOK_PATH,
        [
            (wire::HEADER_CLIENT_ID, LOCAL_CLIENT_ID.to_owned()),
            (wire::HEADER_REQUEST_TIME, time),
            (wire::HEADER_SIGNATURE, signature),
        ],
        body,
        Utc::now(),
    )
}

pub struct Latencies {
    pub per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// CPU time of this process (all threads, user + system) per operation: tells a
    /// CPU-bound run from one waiting on the disk or the network.
    pub cpu_per_op: Duration,
}

/// User + system CPU time this process has used so far, all threads.
pub fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let of = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    of(usage.ru_utime) + of(usage.ru_stime)
}

impl Latencies {
    pub fn of(mut samples: Vec<Duration>, wall: Duration, cpu: Duration) -> Latencies {
        samples.sort();
        let at = |q: f64| {
            let rank = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1]
        };
        Latencies {
            per_second: samples.len() as f64 / wall.as_secs_f64(),
            p50: at(0.50),
            p99: at(0.99),
            cpu_per_op: cpu / u32::try_from(samples.len()).unwrap_or(u32::MAX),
        }
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Onboards a MOP merchant named `name` (no notify URL) straight through the service.
pub async fn onboard(state: &AppState, name: &str) -> CreatedMerchant {
    let ctx = PlateContext::from_settings(&state.settings, &state.tokens);
    let input = merchants::validate_new_merchant(&CreateMerchantRequest {
        name: name.into(),
        city: "MACAU".into(),
        country: "MO".into(),
        mcc: "5812".into(),
        currency: "MOP".into(),
        name_zh: None,
        name_pt: None,
        notify_url: None,
    })
    .expect("valid merchant");
    merchants::create_merchant(&state.store, &ctx, input, Utc::now().timestamp_millis())
        .await
        .expect("onboard merchant")
}
