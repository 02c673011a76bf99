//! Background workers of the gateway process: the merchant-webhook dispatcher, the
//! reconciler and the purge of expired idempotency records. Each loops until told to
//! stop, and rests between passes that made no progress (so a pass that keeps
//! failing never spins); a stop waits for the pass in progress, so a restart neither
//! loses nor repeats work (the outbox lease and the compare-and-set commits make a
//! pass safe to interrupt at any point anyway).

use std::time::Duration;

use actix_web::web::Data;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::services::{idempotency, notify, reconciler};
use crate::startup::AppState;

pub struct Workers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Workers {
    pub fn start(state: Data<AppState>) -> Workers {
        let (stop, _) = watch::channel(false);
        let mut tasks = Vec::new();
        if state.settings.workers.enabled {
            let client = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(
                    state.settings.workers.webhook_connect_timeout_secs,
                ))
                .build()
                .unwrap_or_default();
            let dispatcher_state = state.clone();
            tasks.push(spawn_loop(
                stop.subscribe(),
                state.settings.workers.idle_ms,
                move || {
                    let state = dispatcher_state.clone();
                    let client = client.clone();
                    async move { notify::dispatch_once(&state, &client).await }
                },
            ));
            let reconciler_state = state.clone();
            tasks.push(spawn_loop(
                stop.subscribe(),
                state.settings.workers.idle_ms,
                move || {
                    let state = reconciler_state.clone();
                    async move { reconciler::reconcile_once(&state).await }
                },
            ));
            let purge_state = state.clone();
            tasks.push(spawn_loop(
                stop.subscribe(),
                state
                    .settings
                    .idempotency
                    .purge_interval_secs
                    .saturating_mul(1000),
                move || {
                    let state = purge_state.clone();
                    async move { idempotency::purge_once(&state).await }
                },
            ));
        }
        Workers { stop, tasks }
    }

    /// Signals every loop and waits for the passes in progress to finish.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Runs `pass` until stopped; after a pass that reports no progress (0) it rests
/// `idle_ms` (or until stopped) before the next.
fn spawn_loop<F, Fut>(mut stop: watch::Receiver<bool>, idle_ms: u64, mut pass: F) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = usize> + Send,
{
    tokio::spawn(async move {
        loop {
            if *stop.borrow() {
                return;
            }
            let worked = pass().await;
            if worked == 0 {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(idle_ms)) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    })
}
