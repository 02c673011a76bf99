//! Prometheus metrics, kept small and dependency-free: counters by route pattern and
//! status, request latency sums, QR render counts, store durability.
//! Must never: use a raw path (unbounded label values) — only matched route patterns.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// (method, route pattern, status) -> (count, total seconds)
type RequestTable = BTreeMap<(String, String, u16), (u64, f64)>;

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<RequestTable>,
    pub idempotent_replays: AtomicU64,
    pub store_durable: AtomicU64,
}

impl Metrics {
    pub fn observe_request(&self, method: &str, pattern: &str, status: u16, seconds: f64) {
        if let Ok(mut map) = self.requests.lock() {
            let entry = map
                .entry((method.to_owned(), pattern.to_owned(), status))
                .or_insert((0, 0.0));
            entry.0 += 1;
            entry.1 += seconds;
        }
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self, qr_renders: u64) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP sesame_http_requests_total HTTP requests by route pattern and status.\n",
        );
        out.push_str("# TYPE sesame_http_requests_total counter\n");
        let mut durations = String::new();
        durations.push_str(
            "# HELP sesame_http_request_duration_seconds_sum Time spent serving requests.\n",
        );
        durations.push_str("# TYPE sesame_http_request_duration_seconds_sum counter\n");
        if let Ok(map) = self.requests.lock() {
            for ((method, pattern, status), (count, seconds)) in map.iter() {
                let labels = format!(
                    "method=\"{}\",route=\"{}\",status=\"{status}\"",
                    escape(method),
                    escape(pattern)
                );
                let _ = writeln!(out, "sesame_http_requests_total{{{labels}}} {count}");
                let _ = writeln!(
                    durations,
                    "sesame_http_request_duration_seconds_sum{{{labels}}} {seconds:.6}"
                );
            }
        }
        out.push_str(&durations);
        let _ = write!(
            out,
            "# HELP sesame_qr_renders_total QR images actually rendered (cache misses).\n\
             # TYPE sesame_qr_renders_total counter\nsesame_qr_renders_total {qr_renders}\n\
             # HELP sesame_idempotent_replays_total Responses replayed for a repeated Idempotency-Key.\n\
             # TYPE sesame_idempotent_replays_total counter\nsesame_idempotent_replays_total {}\n\
             # HELP sesame_store_durable 1 when the store acknowledges only durable writes.\n\
             # TYPE sesame_store_durable gauge\nsesame_store_durable {}\n",
            self.idempotent_replays.load(Ordering::Relaxed),
            self.store_durable.load(Ordering::Relaxed),
        );
        out
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
