//! A merchant's webhook endpoint for tests: records every delivery, verifies the
//! `Sesame-Signature`, and can be switched to answer 503 (endpoint down).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Delivery {
    pub event_id: String,
    pub kind: String,
    pub body: Value,
    pub signature: String,
    pub raw: Vec<u8>,
}

#[derive(Default)]
struct Inner {
    deliveries: Mutex<Vec<Delivery>>,
    down: AtomicBool,
}

#[derive(Clone)]
pub struct MerchantEndpoint {
    inner: Arc<Inner>,
    pub url: String,
    handle: actix_web::dev::ServerHandle,
}

impl Drop for MerchantEndpoint {
    fn drop(&mut self) {
        if Arc::strong_count(&self.inner) <= 2 {
            let handle = self.handle.clone();
            drop(tokio::spawn(async move { handle.stop(false).await }));
        }
    }
}

async fn receive(req: HttpRequest, body: web::Bytes, inner: web::Data<Inner>) -> HttpResponse {
    if inner.down.load(Ordering::SeqCst) {
        return HttpResponse::ServiceUnavailable().finish();
    }
    let signature = req
        .headers()
        .get("sesame-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let delivery = Delivery {
        event_id: parsed["id"].as_str().unwrap_or("").to_owned(),
        kind: parsed["type"].as_str().unwrap_or("").to_owned(),
        body: parsed,
        signature,
        raw: body.to_vec(),
    };
    inner.deliveries.lock().unwrap().push(delivery);
    HttpResponse::Ok().finish()
}

impl MerchantEndpoint {
    pub async fn start() -> MerchantEndpoint {
        let inner = Arc::new(Inner::default());
        let data = web::Data::from(inner.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/hooks", web::post().to(receive))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        MerchantEndpoint {
            inner,
            url: format!("http://127.0.0.1:{port}/hooks"),
            handle,
        }
    }

    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::SeqCst);
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.inner.deliveries.lock().unwrap().clone()
    }

    pub fn of_kind(&self, kind: &str) -> Vec<Delivery> {
        self.deliveries()
            .into_iter()
            .filter(|d| d.kind == kind)
            .collect()
    }

    /// Waits until `count` deliveries of `kind` arrived (or panics after `secs`).
    pub async fn wait_for(&self, kind: &str, count: usize, secs: u64) -> Vec<Delivery> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.of_kind(kind);
            if got.len() >= count {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {count} {kind}, got {:?}",
                self.deliveries()
                    .iter()
                    .map(|d| d.kind.clone())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
