//! Merchant webhooks through the durable outbox.
//!
//! Each pass claims due events with a lease (so two gateway processes never deliver
//! the same attempt), POSTs `{"id","type","created_at","data"}` to the merchant's
//! `notify_url` with `Sesame-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
//! and completes on any 2xx. Otherwise it retries with exponential backoff and jitter
//! until the retry window (from the event's creation, or from its last manual
//! resend) is over, then dead-letters it.
//! Delivery is at least once: merchants dedupe on the event id (`Sesame-Event-Id`).

use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::Rng;
use serde_json::json;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::clock::rfc3339;
use crate::startup::AppState;
use crate::store::OutboxClaim;

pub const SIGNATURE_HEADER: &str = "Sesame-Signature";

/// `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`
pub fn sign(secret: &str, unix: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(unix.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={unix},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The check a merchant runs on a webhook: the signature matches and `t` is within
/// `tolerance_secs` of `now` (replay protection).
pub fn verify(secret: &str, header: &str, body: &[u8], now_unix: i64, tolerance_secs: i64) -> bool {
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => signatures.push(v.to_owned()),
            _ => {}
        }
    }
    let Some(t) = t else {
        return false;
    };
    if (now_unix - t).abs() > tolerance_secs {
        return false;
    }
    let expected = sign(secret, t, body);
    let expected_hex = expected.rsplit("v1=").next().unwrap_or("");
    signatures
        .iter()
        .any(|s| s.as_bytes().ct_eq(expected_hex.as_bytes()).into())
}

/// The delay before attempt `attempt + 1`: first × 2^(attempt−1), capped, ±20 % jitter.
pub fn backoff_ms(attempt: u32, first_ms: i64, max_ms: i64) -> i64 {
    let exponent = attempt.saturating_sub(1).min(30);
    let base = first_ms.saturating_mul(1i64 << exponent).min(max_ms).max(1);
    let jitter = rand::rng().random_range(-(base / 5)..=(base / 5));
    (base + jitter).max(1)
}

/// One pass: claim due events and deliver each once. Returns how many were claimed.
pub async fn dispatch_once(state: &AppState, client: &reqwest::Client) -> usize {
    let workers = &state.settings.workers;
    let now = state.clock.now_ms();
    let claims = match state
        .store
        .claim_due_events(now, workers.outbox_lease_secs * 1000, 32)
        .await
    {
        Ok(claims) => claims,
        Err(e) => {
            tracing::warn!(error = %e, "outbox claim failed");
            return 0;
        }
    };
    let count = claims.len();
    let deliveries = claims
        .into_iter()
        .map(|claim| deliver(state, client, claim));
    futures_util::future::join_all(deliveries).await;
    count
}

async fn deliver(state: &AppState, client: &reqwest::Client, claim: OutboxClaim) {
    let event = &claim.event;
    let merchant = match state.store.merchant(&event.merchant_id).await {
        Ok(Some(m)) => m,
        Ok(None) => {
            let _ = state
                .store
                .dead_letter_event(
                    &event.merchant_id,
                    &event.id,
                    &claim.lease,
                    "merchant not found",
                )
                .await;
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "outbox: merchant lookup failed");
            return;
        }
    };
    let Some(url) = merchant.notify_url.as_deref() else {
        // No endpoint: the event stays readable through GET /v1/events.
        let _ = state
            .store
            .complete_event(&event.merchant_id, &event.id, &claim.lease)
            .await;
        return;
    };
    let body = json!({
        "id": event.id,
        "type": event.kind.as_str(),
        "created_at": rfc3339(event.created_at),
        "data": event.data,
    })
    .to_string();
    let unix = state.clock.now_ms() / 1000;
    let result = client
        .post(url)
        .timeout(Duration::from_secs(
            state.settings.workers.webhook_timeout_secs,
        ))
        .header("Content-Type", "application/json")
        .header(
            SIGNATURE_HEADER,
            sign(&merchant.webhook_secret, unix, body.as_bytes()),
        )
        .header("Sesame-Event-Id", event.id.as_str())
        .body(body)
        .send()
        .await;
    let error = match result {
        Ok(response) if response.status().is_success() => {
            if let Err(e) = state
                .store
                .complete_event(&event.merchant_id, &event.id, &claim.lease)
                .await
            {
                tracing::warn!(error = %e, event = %event.id, "delivered but not recorded; it will be sent again");
            }
            return;
        }
        Ok(response) => format!("HTTP {}", response.status().as_u16()),
        Err(e) if e.is_timeout() => "timeout".to_owned(),
        Err(_) => "connection failed".to_owned(),
    };
    let workers = &state.settings.workers;
    let now = state.clock.now_ms();
    // The window counts from the event's creation or its last manual resend, so a
    // resent old event gets a whole retry window again.
    let window_ms = workers.webhook_give_up_hours.saturating_mul(3_600_000);
    let outcome = if now - claim.retry_window_from > window_ms {
        tracing::warn!(event = %event.id, attempts = claim.attempt, "webhook dead-lettered");
        state
            .store
            .dead_letter_event(&event.merchant_id, &event.id, &claim.lease, &error)
            .await
    } else {
        let delay = backoff_ms(
            claim.attempt,
            workers.webhook_first_retry_secs * 1000,
            workers.webhook_max_retry_secs * 1000,
        );
        state
            .store
            .reschedule_event(
                &event.merchant_id,
                &event.id,
                &claim.lease,
                now + delay,
                &error,
            )
            .await
    };
    if let Err(e) = outcome {
        tracing::warn!(error = %e, event = %event.id, "could not reschedule a webhook");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_refuse_tampering_and_replays() {
        let header = sign("whsec_x", 1_700_000_000, b"{\"a\":1}");
        assert!(header.starts_with("t=1700000000,v1="));
        assert!(verify("whsec_x", &header, b"{\"a\":1}", 1_700_000_100, 300));
        assert!(!verify(
            "whsec_x",
            &header,
            b"{\"a\":2}",
            1_700_000_100,
            300
        ));
        assert!(!verify(
            "whsec_y",
            &header,
            b"{\"a\":1}",
            1_700_000_100,
            300
        ));
        assert!(
            !verify("whsec_x", &header, b"{\"a\":1}", 1_700_001_000, 300),
            "too old"
        );
        assert!(!verify(
            "whsec_x",
            "v1=abc",
            b"{\"a\":1}",
            1_700_000_000,
            300
        ));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        for attempt in 1..=12 {
            let base = (30_000i64 << (attempt - 1)).min(21_600_000);
            let delay = backoff_ms(attempt, 30_000, 21_600_000);
            assert!(
                delay >= base - base / 5 && delay <= base + base / 5,
                "{attempt}: {delay}"
            );
        }
        assert!(backoff_ms(200, 30_000, 21_600_000) <= 21_600_000 + 21_600_000 / 5);
    }
}
