//! The `sesame` command line. `serve` is the default; the other commands reuse the
//! same services as the HTTP API, so both paths validate input identically.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sesame_adapters::money::{Currency, Money};

use crate::clock::{Clock, SystemClock};
use crate::config::{self, Settings};
use crate::domain::ids::random_bytes;
use crate::qr::emvco::{self, Initiation, LanguageTemplate, MerchantPresented};
use crate::qr::render::{self, RenderParams};
use crate::qr::token::PlateTokens;
use crate::services::merchants::{self, CreateMerchantRequest, MerchantView, PlateContext};
use crate::startup::{Application, PLATE_TOKEN_SECRET};
use crate::store;

#[derive(Debug, Parser)]
#[command(
    name = "sesame",
    version,
    about = "QR-code merchant payment aggregator: one plate, every wallet"
)]
pub struct Cli {
    /// Extra configuration file layered over config/default.toml and the environment overlay.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Print the merged configuration with secrets masked.
    Config,
    /// Onboard and list merchants directly in the configured store.
    #[command(subcommand)]
    Merchant(MerchantCommand),
    /// Encode, decode and render QR payloads.
    #[command(subcommand)]
    Qr(QrCommand),
    /// Check the ledger.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Run one reconciliation pass over due orders, then exit.
    Reconcile,
    /// Serve only the wallet sandboxes (under /sandbox/<adapter>/), with the keys in the data dir.
    Sandbox {
        #[arg(long, default_value = "127.0.0.1:8090")]
        bind: std::net::SocketAddr,
    },
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Every entry balanced, every succeeded order posted exactly once, balances equal
    /// the sum of postings. Exits non-zero on any violation.
    Verify,
}

#[derive(Debug, Subcommand)]
pub enum MerchantCommand {
    /// Create a merchant; prints it with its API key (shown only now) and default plate.
    Create(MerchantArgs),
    /// List merchants.
    List {
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

#[derive(Debug, Args)]
pub struct MerchantArgs {
    #[arg(long)]
    name: String,
    #[arg(long)]
    city: String,
    #[arg(long)]
    country: String,
    #[arg(long)]
    mcc: String,
    #[arg(long)]
    currency: String,
    #[arg(long)]
    name_zh: Option<String>,
    #[arg(long)]
    name_pt: Option<String>,
    #[arg(long)]
    notify_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum QrCommand {
    /// Decode any EMVCo MPM payload to JSON; exits non-zero unless well formed with a right CRC.
    Decode { payload: String },
    /// Build an EMVCo MPM payload with Sesame's merchant account template (tag 26).
    Encode(EncodeArgs),
    /// Render a payload as PNG or SVG (to --out, or standard output).
    Render(RenderArgs),
}

#[derive(Debug, Args)]
pub struct EncodeArgs {
    #[arg(long)]
    merchant_id: String,
    /// URL carried in tag 26 sub-tag 02 (the plate URL).
    #[arg(long)]
    url: String,
    #[arg(long)]
    name: String,
    #[arg(long)]
    city: String,
    #[arg(long, default_value = "MO")]
    country: String,
    #[arg(long, default_value = "0000")]
    mcc: String,
    #[arg(long, default_value = "MOP")]
    currency: String,
    /// Fixed amount (makes the payload dynamic, tag 01 = 12).
    #[arg(long)]
    amount: Option<String>,
    /// GUID of tag 26 (default: qr.emvco_guid from the configuration).
    #[arg(long)]
    guid: Option<String>,
    #[arg(long)]
    store_label: Option<String>,
    #[arg(long)]
    terminal_label: Option<String>,
    /// Merchant name in Chinese (tag 64).
    #[arg(long)]
    name_zh: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ImageFormat {
    Png,
    Svg,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    payload: String,
    #[arg(long, value_enum, default_value_t = ImageFormat::Png)]
    format: ImageFormat,
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    size: Option<String>,
    #[arg(long)]
    margin: Option<String>,
    #[arg(long)]
    ecc: Option<String>,
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Pure commands need no configuration, so they work anywhere.
    if let Some(Command::Qr(QrCommand::Decode { payload })) = &cli.command {
        return qr_decode(payload);
    }
    let settings = match config::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => return fail(e),
    };
    crate::telemetry::init(&settings.log);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => runtime(serve(settings)),
        Command::Config => {
            print!("{}", settings.masked());
            ExitCode::SUCCESS
        }
        Command::Merchant(cmd) => runtime(merchant(settings, cmd)),
        Command::Qr(QrCommand::Decode { payload }) => qr_decode(&payload),
        Command::Qr(QrCommand::Encode(args)) => qr_encode(&settings, args),
        Command::Qr(QrCommand::Render(args)) => qr_render(&settings, args),
        Command::Ledger(LedgerCommand::Verify) => runtime(ledger_verify(settings)),
        Command::Reconcile => runtime(reconcile(settings)),
        Command::Sandbox { bind } => runtime(sandbox(settings, bind)),
    }
}

fn runtime<F: Future<Output = ExitCode>>(fut: F) -> ExitCode {
    match actix_web::rt::System::new().block_on(async { Ok::<_, std::io::Error>(fut.await) }) {
        Ok(code) => code,
        Err(e) => fail(e),
    }
}

async fn serve(settings: Settings) -> ExitCode {
    let demo = crate::services::demo::enabled(&settings);
    let bind = settings.server.bind;
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(e) => return fail(format!("{e:#}")),
    };
    // The bound address (the real port when `server.bind` asks for port 0).
    println!(
        "Sesame listening on {}",
        crate::startup::local_base_url(std::net::SocketAddr::new(bind.ip(), app.port()))
    );
    if demo {
        match crate::services::demo::ensure(&app.state()).await {
            Ok(demo) => print_demo(&demo),
            Err(e) => tracing::warn!(error = %e.message(), "could not set up the demo merchant"),
        }
    }
    tracing::info!(port = app.port(), "sesame listening");
    match app.run_until_stopped().await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// The demo plate a phone can scan, and its poster (both open in a browser).
fn print_demo(demo: &crate::services::demo::Demo) {
    println!(
        "Demo merchant \"{}\" ({}):\n  plate:  {}\n  poster: {}",
        demo.merchant.name, demo.merchant.id, demo.plate_url, demo.poster_url
    );
}

async fn ledger_verify(settings: Settings) -> ExitCode {
    let store = match store::open(&settings.store).await {
        Ok(store) => store,
        Err(e) => return fail(e),
    };
    match crate::services::ledger_verify::verify(&store).await {
        Ok(report) => {
            let code = print_json(&report);
            if report.is_clean() {
                code
            } else {
                fail(format!("{} ledger violation(s)", report.violations.len()))
            }
        }
        Err(e) => fail(e),
    }
}

async fn reconcile(mut settings: Settings) -> ExitCode {
    settings.workers.enabled = false;
    // In sandbox mode the sandboxes live in the running gateway: reach them at its address.
    let gateway = crate::startup::local_base_url(settings.server.bind);
    let (state, _) =
        match crate::startup::build_state(settings, std::sync::Arc::new(SystemClock), &gateway)
            .await
        {
            Ok(built) => built,
            Err(e) => return fail(format!("{e:#}")),
        };
    let mut total = 0;
    loop {
        let looked_at = crate::services::reconciler::reconcile_once(&state).await;
        total += looked_at;
        if looked_at == 0 {
            break;
        }
    }
    println!("{{\"orders_checked\": {total}}}");
    ExitCode::SUCCESS
}

async fn sandbox(settings: Settings, bind: std::net::SocketAddr) -> ExitCode {
    let listener = match std::net::TcpListener::bind(bind) {
        Ok(listener) => listener,
        Err(e) => return fail(format!("bind {bind}: {e}")),
    };
    let own = match listener.local_addr() {
        Ok(address) => crate::startup::local_base_url(address),
        Err(e) => return fail(e),
    };
    let sandboxes = match crate::wallets::sandboxes(&settings.wallets, &settings.store.path, &own) {
        Ok(sandboxes) => sandboxes,
        Err(e) => return fail(e),
    };
    println!("Wallet sandboxes listening on {own}/sandbox");
    let server = actix_web::HttpServer::new(move || {
        let sandboxes = sandboxes.clone();
        actix_web::App::new()
            .route(
                "/healthz",
                actix_web::web::get().to(crate::http::ops::healthz),
            )
            .configure(move |cfg| sandboxes.configure(cfg))
    })
    .listen(listener);
    match server {
        Ok(server) => match server.run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
        Err(e) => fail(e),
    }
}

async fn merchant(settings: Settings, cmd: MerchantCommand) -> ExitCode {
    let store = match store::open(&settings.store).await {
        Ok(store) => store,
        Err(e) => return fail(e),
    };
    match cmd {
        MerchantCommand::Create(args) => {
            let key = match store
                .secret(PLATE_TOKEN_SECRET, &random_bytes::<32>())
                .await
            {
                Ok(key) => key,
                Err(e) => return fail(e),
            };
            let tokens = PlateTokens::new(&key);
            let ctx = PlateContext::from_settings(&settings, &tokens);
            let request = CreateMerchantRequest {
                name: args.name,
                city: args.city,
                country: args.country,
                mcc: args.mcc,
                currency: args.currency,
                name_zh: args.name_zh,
                name_pt: args.name_pt,
                notify_url: args.notify_url,
            };
            let result = async {
                let input = merchants::validate_new_merchant(&request)?;
                merchants::create_merchant(&store, &ctx, input, SystemClock.now_ms()).await
            }
            .await;
            match result {
                Ok(created) => print_json(&created),
                Err(e) => fail(e.message()),
            }
        }
        MerchantCommand::List { limit } => {
            match store.list_merchants(None, limit.clamp(1, 10_000)).await {
                Ok(list) => print_json(&list.iter().map(MerchantView::from).collect::<Vec<_>>()),
                Err(e) => fail(e),
            }
        }
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> ExitCode {
    match serde_json::to_string_pretty(value) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn qr_decode(payload: &str) -> ExitCode {
    match emvco::decode(payload) {
        Ok(decoded) => {
            let code = print_json(&decoded.to_json());
            if !decoded.crc_valid {
                return fail(format!(
                    "wrong CRC: payload says {}, computed {}",
                    decoded.found_crc, decoded.expected_crc
                ));
            }
            code
        }
        Err(e) => fail(format!("invalid EMVCo payload: {e}")),
    }
}

fn qr_encode(settings: &Settings, args: EncodeArgs) -> ExitCode {
    let currency = match Currency::parse(&args.currency) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let amount = match args
        .amount
        .as_deref()
        .map(|a| Money::parse(a, currency))
        .transpose()
    {
        Ok(amount) => amount.map(|m| m.to_decimal_string()),
        Err(e) => return fail(format!("amount: {e}")),
    };
    let mut additional = Vec::new();
    if let Some(label) = args.store_label {
        additional.push((3, label));
    }
    if let Some(label) = args.terminal_label {
        additional.push((7, label));
    }
    let mpm = MerchantPresented {
        initiation: if amount.is_some() {
            Initiation::Dynamic
        } else {
            Initiation::Static
        },
        merchant_accounts: vec![(
            26,
            vec![
                (
                    0,
                    args.guid.unwrap_or_else(|| settings.qr.emvco_guid.clone()),
                ),
                (1, args.merchant_id),
                (2, args.url),
            ],
        )],
        mcc: args.mcc,
        currency_numeric: currency.numeric(),
        amount,
        country: args.country,
        merchant_name: args.name,
        merchant_city: args.city,
        postal_code: None,
        additional,
        language: args.name_zh.map(|name| LanguageTemplate {
            language: "ZH".to_owned(),
            merchant_name: name,
            merchant_city: None,
        }),
    };
    match emvco::encode(&mpm) {
        Ok(payload) => {
            println!("{payload}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn qr_render(settings: &Settings, args: RenderArgs) -> ExitCode {
    let params = match RenderParams::parse(
        args.size.as_deref(),
        args.margin.as_deref(),
        args.ecc.as_deref(),
        settings.qr.max_size_px,
    ) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let bytes = match args.format {
        ImageFormat::Png => render::png(&args.payload, &params),
        ImageFormat::Svg => render::svg(&args.payload, &params).map(String::into_bytes),
    };
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let written = match &args.out {
        Some(path) => std::fs::write(path, &bytes),
        None => std::io::stdout().write_all(&bytes),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}
