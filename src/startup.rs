//! Building and running the application: open the store, resolve secrets, bind the
//! listener FIRST (so tests can use port 0 and read the real port), then serve.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpServer, middleware::from_fn, web};

use sesame_adapters::brands::BrandRegistry;

use crate::clock::{DynClock, SystemClock};
use crate::config::Settings;
use crate::domain::ids::random_bytes;
use crate::http;
use crate::metrics::Metrics;
use crate::qr::render::RenderCache;
use crate::qr::token::PlateTokens;
use crate::services::admin_token::{self, AdminToken, Resolved};
use crate::services::idempotency::Idempotency;
use crate::services::shopper::{PlateViews, ShopperLimits};
use crate::store::{self, DynStore};
use crate::wallets::{self, Wallets};
use crate::workers::Workers;

/// Everything a request handler may use. Shared read-only across workers.
pub struct AppState {
    pub settings: Settings,
    pub store: DynStore,
    pub clock: DynClock,
    pub admin: AdminToken,
    pub tokens: PlateTokens,
    pub idempotency: Idempotency,
    pub renders: RenderCache,
    pub metrics: Metrics,
    /// Wallet brand names printed on posters.
    pub accepted_wallets: Vec<String>,
    pub wallets: Wallets,
    /// Rate limiters of the public shopper pages.
    pub shopper_limits: ShopperLimits,
    /// Recently read plates for plate page views.
    pub plate_views: PlateViews,
    /// Derives order and refund ids from Idempotency-Keys (see `services::payments`).
    pub id_secret: Vec<u8>,
}

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    workers: Workers,
}

/// Server-wide secrets live in the store, so every gateway sharing it agrees.
pub const PLATE_TOKEN_SECRET: &str = "plate_token_key";
pub const IDEMPOTENCY_SECRET: &str = "idempotency_response_key";
pub const ORDER_ID_SECRET: &str = "order_id_key";

/// `own_base_url` is where this process listens (the sandboxes are reached there).
pub async fn build_state(
    settings: Settings,
    clock: DynClock,
    own_base_url: &str,
) -> anyhow::Result<(AppState, Resolved)> {
    let wallets = wallets::build(&settings, own_base_url)?;
    let store = store::open(&settings.store).await?;
    let health = store.health().await?;
    if !health.durable {
        tracing::warn!(durability = %health.durability, "store is VOLATILE: acknowledged writes can be lost on a crash");
    }
    if let Err(e) = crate::qr::payload::emvco_template_fits(
        &settings.server.public_base_url,
        &settings.qr.emvco_guid,
    ) {
        tracing::warn!(
            error = %e,
            "EMVCo plates cannot be issued with this server.public_base_url and qr.emvco_guid (tag 26 holds both and the merchant id in 99 characters); URL plates work"
        );
    }
    let admin = admin_token::resolve(&settings.admin.token, &settings.store.path)?;
    let plate_key = store
        .secret(PLATE_TOKEN_SECRET, &random_bytes::<32>())
        .await?;
    let idem_key = store
        .secret(IDEMPOTENCY_SECRET, &random_bytes::<32>())
        .await?;
    let id_secret = store.secret(ORDER_ID_SECRET, &random_bytes::<32>()).await?;
    let idempotency = Idempotency::new(
        store.clone(),
        clock.clone(),
        idem_key,
        settings.idempotency.lease_secs * 1000,
        settings.idempotency.retention_hours * 3_600_000,
    );
    let metrics = Metrics::default();
    metrics.store_durable.store(
        u64::from(health.durable),
        std::sync::atomic::Ordering::Relaxed,
    );
    let state = AppState {
        renders: RenderCache::new(settings.qr.render_cache_entries),
        shopper_limits: ShopperLimits::new(&settings.shopper),
        plate_views: PlateViews::new(&settings.shopper),
        accepted_wallets: accepted_wallets(&wallets.brands),
        wallets,
        id_secret,
        tokens: PlateTokens::new(&plate_key),
        admin: admin.token().clone(),
        idempotency,
        metrics,
        clock,
        store,
        settings,
    };
    Ok((state, admin))
}

/// English display names of the enabled wallet brands, in registry order.
pub fn accepted_wallets(brands: &BrandRegistry) -> Vec<String> {
    brands.enabled().map(|b| b.names().en.clone()).collect()
}

/// How this process reaches itself: the bound address, a wildcard replaced by loopback.
pub fn local_base_url(address: std::net::SocketAddr) -> String {
    let host = match address.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{host}:{}", address.port())
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(
        settings: Settings,
        clock: DynClock,
    ) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(settings.server.bind)?;
        Self::build_on(settings, listener, clock).await
    }

    /// Serves on a listener bound by the caller (`server.bind` is then not used to
    /// bind), so a caller that must know its port before building (a public base URL
    /// that names it) never loses that port to another process in between.
    pub async fn build_on(
        settings: Settings,
        listener: TcpListener,
        clock: DynClock,
    ) -> anyhow::Result<Application> {
        let address = listener.local_addr()?;
        let (state, admin) = build_state(settings, clock, &local_base_url(address)).await?;
        if let Resolved::Generated(token, path) = &admin {
            // Printed once, on the start that created it; never logged.
            println!(
                "Generated the admin API token (stored in {}, shown only now):\n  {}",
                path.display(),
                token.expose()
            );
        }
        let port = address.port();
        let state = web::Data::new(state);
        let server = run(listener, state.clone())?;
        let workers = Workers::start(state.clone());
        Ok(Application {
            port,
            server,
            state,
            workers,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM / SIGINT (graceful: in-flight requests finish) or `stop`.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        self.workers.stop().await;
        served
    }
}

fn run(listener: TcpListener, state: web::Data<AppState>) -> std::io::Result<Server> {
    let settings = &state.settings.server;
    let workers = if settings.workers == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    } else {
        settings.workers
    };
    let shutdown = settings.shutdown_timeout_secs;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(http::extract::query_config())
            .app_data(http::extract::path_config())
            .app_data(web::PayloadConfig::new(http::extract::MAX_BODY))
            .wrap(from_fn(http::middleware::observe))
            .configure(http::configure)
            .configure(|cfg| {
                if let Some(sandboxes) = &state.wallets.sandboxes {
                    sandboxes.configure(cfg);
                }
            })
            .default_service(web::to(http::not_found))
    })
    .workers(workers)
    .shutdown_timeout(shutdown)
    .listen(listener)?
    .run();
    Ok(server)
}
