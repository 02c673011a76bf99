//! The `sesame` binary: qr decode/encode/render, config masking, merchant commands,
//! and `serve` (admin token printed once, graceful SIGTERM).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const SGQR: &str = "00020101021126490009SG.PAYNOW010120210202012345X0301104082021123151820007SG.SGQR0113202012345X123020701.000103068286710402010503123060400000708201912315204000053037025802SG5911RATINAN LEE6009SINGAPORE610682876162140110987654321X630429FD";
const MACAU: &str = "00020101021126290014mo.example.pay0107M0001235204581253034465802MO5911SAMPLE CAFE6005MACAU62110307STORE016304E42D";

pub(crate) fn sesame() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sesame"));
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SESAME_ENV", "test")
        .env_remove("RUST_LOG");
    command
}

fn decode(payload: &str) -> std::process::Output {
    sesame().args(["qr", "decode", payload]).output().unwrap()
}

#[test]
fn qr_decode_prints_nested_objects_for_other_schemes() {
    let out = decode(SGQR);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["crc_valid"], true);
    assert_eq!(json["objects"]["26"]["00"], "SG.PAYNOW");
    assert_eq!(json["objects"]["51"]["00"], "SG.SGQR");
    assert_eq!(json["objects"]["59"], "RATINAN LEE");
    let out = decode(MACAU);
    assert!(out.status.success());
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["objects"]["26"]["00"], "mo.example.pay");
    assert_eq!(json["objects"]["62"]["03"], "STORE01");
}

/// Payloads published by other implementations, CRCs as they printed them: PromptPay
/// from the promptpay-qr library's outputs (a phone number, static and with an
/// amount), FPS from Odoo's l10n_hk tests and a public HKQR sample.
#[test]
fn qr_decode_reads_published_promptpay_and_fps_payloads() {
    let cases = [
        (
            "00020101021129370016A000000677010111011300668123456785802TH530376463045D82",
            "29",
            "01",
            "0066812345678",
        ),
        (
            "00020101021229370016A000000677010111011300668123456785802TH53037645406130.00630496CE",
            "29",
            "01",
            "0066812345678",
        ),
        (
            "00020101021226330012hk.com.hkicl0313+852-6789123452040000530334454031005802HK5914company_1_data6002HK62170513INV/TEST/00016304A154",
            "26",
            "03",
            "+852-67891234",
        ),
        (
            "00020101021126400012hk.com.hkicl01030040313+852-8765432152040000530334454041.235802HK5902NA6002HK6304C246",
            "26",
            "01",
            "004",
        ),
    ];
    for (payload, template, sub, value) in cases {
        let out = decode(payload);
        assert!(
            out.status.success(),
            "{payload}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["crc_valid"], true);
        assert_eq!(json["objects"][template][sub], value, "{json}");
    }
}

#[test]
fn qr_decode_names_the_fault_and_fails() {
    let wrong_crc = MACAU.replace("E42D", "E42E");
    let truncated = &MACAU[..MACAU.len() - 10];
    let duplicate = MACAU.replacen("5802MO", "5802MO5802MO", 1);
    let not_first = MACAU.replacen("000201", "", 1);
    let bad_length = MACAU.replacen("5911SAMPLE", "59xxSAMPLE", 1);
    let no_crc = MACAU.replacen("6304E42D", "", 1);
    // 63 (with a CRC correct for what precedes it) placed before object 62.
    let crc_not_last = "00020101021126290014mo.example.pay0107M0001235204581253034465802MO5911SAMPLE CAFE6005MACAU6304335262110307STORE01";
    for (payload, needle) in [
        (wrong_crc.as_str(), "crc"),
        (truncated, "truncated"),
        (duplicate.as_str(), "duplicate"),
        (not_first.as_str(), "00"),
        (bad_length.as_str(), "bad length"),
        (no_crc.as_str(), "missing crc"),
        (crc_not_last, "63"),
        ("", "empty"),
    ] {
        let out = decode(payload);
        assert!(!out.status.success(), "{payload:?} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.to_lowercase().contains(needle),
            "{needle} in {stderr}"
        );
    }
}

#[test]
fn qr_encode_then_decode_round_trips_and_render_writes_a_png() {
    let out = sesame()
        .args([
            "qr",
            "encode",
            "--merchant-id",
            "m_0123456789abcdef",
            "--url",
            "https://pay.example/q/abc",
            "--name",
            "Cafe",
            "--city",
            "MACAU",
            "--amount",
            "9.90",
            "--name-zh",
            "咖啡",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let payload = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let json: Value = serde_json::from_slice(&decode(&payload).stdout).unwrap();
    assert_eq!(json["objects"]["54"], "9.90");
    assert_eq!(json["objects"]["64"]["01"], "咖啡");
    let out = sesame()
        .args([
            "qr",
            "encode",
            "--merchant-id",
            "m",
            "--url",
            "u",
            "--name",
            &"N".repeat(26),
            "--city",
            "MACAU",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("59"));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plate.png");
    let out = sesame()
        .args([
            "qr",
            "render",
            &payload,
            "--out",
            file.to_str().unwrap(),
            "--size",
            "300",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image = image::open(&file).unwrap().to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(image);
    assert_eq!(prepared.detect_grids()[0].decode().unwrap().1, payload);
    let out = sesame()
        .args(["qr", "render", &payload, "--size", "5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn config_prints_the_merged_settings_with_secrets_masked() {
    let out = sesame()
        .args(["config"])
        .env("SESAME__ADMIN__TOKEN", "super-secret-admin-token-0123")
        .env(
            "SESAME__STORE__REDIS_URL",
            "redis://:hunter2@10.0.0.1:6379/0",
        )
        .env("SESAME__SERVER__PUBLIC_BASE_URL", "https://pay.example.mo")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.contains("super-secret-admin-token-0123") && !text.contains("hunter2"),
        "{text}"
    );
    assert!(text.contains("***"));
    assert!(
        text.contains("https://pay.example.mo"),
        "env override applied"
    );
    let out = sesame()
        .args(["config"])
        .env("SESAME__SERVER__PUBLIC_BASE_URL", "pay.example.mo/")
        .output()
        .unwrap();
    assert!(!out.status.success(), "invalid config is refused");
    let out = sesame()
        .args(["config", "--config", "/nonexistent/sesame.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn environment_values_are_taken_as_written_and_printed_before_the_sections() {
    let out = sesame()
        .args(["config"])
        .env("SESAME__QR__EMVCO_GUID", "00777")
        .env("SESAME__SERVER__WORKERS", "3")
        .env("SESAME__STORE__ALLOW_VOLATILE", "true")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    // A string that looks like a number stays the string (leading zeros kept).
    assert!(text.contains(r#"emvco_guid = "00777""#), "{text}");
    assert!(text.contains("workers = 3"), "{text}");
    assert!(text.contains("allow_volatile = true"), "{text}");
    // The one top-level key comes before any [section] header.
    let first_line = text.lines().next().unwrap_or_default();
    assert_eq!(first_line, r#"environment = "test""#, "{text}");
}

#[test]
fn short_admin_tokens_and_unsafe_production_settings_are_refused() {
    let refused = |envs: &[(&str, &str)], needle: &str| {
        let mut command = sesame();
        command.arg("config");
        for (key, value) in envs {
            command.env(key, value);
        }
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{envs:?} accepted");
        assert!(stderr.contains(needle), "{envs:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    };
    refused(&[("SESAME__ADMIN__TOKEN", "short")], "admin.token");
    let token = (
        "SESAME__ADMIN__TOKEN",
        "a-production-admin-token-0123456789",
    );
    refused(
        &[("SESAME_ENV", "production"), token],
        "server.public_base_url",
    );
    refused(
        &[
            ("SESAME_ENV", "production"),
            token,
            ("SESAME__SERVER__PUBLIC_BASE_URL", "http://pay.example.mo"),
        ],
        "https://",
    );
    refused(
        &[
            ("SESAME_ENV", "production"),
            token,
            ("SESAME__SERVER__PUBLIC_BASE_URL", "https://localhost:8443"),
        ],
        "server.public_base_url",
    );
    refused(
        &[
            ("SESAME_ENV", "production"),
            ("SESAME__SERVER__PUBLIC_BASE_URL", "https://pay.example.mo"),
        ],
        "admin.token must be set in production",
    );
}

#[test]
fn config_masks_wallet_credentials_and_shows_key_file_paths() {
    let private_key = include_str!("../../adapters/testdata/rsa2048_pkcs8.pem");
    let out = sesame()
        .args(["config"])
        .env("SESAME__ADAPTERS__ALIPAY__APP_ID", "0021000000000001")
        .env("SESAME__ADAPTERS__ALIPAY__PRIVATE_KEY", private_key)
        .env(
            "SESAME__ADAPTERS__ALIPAY__WALLET_PUBLIC_KEY",
            "@/etc/sesame/alipay_public_key.pem",
        )
        .env(
            "SESAME__ADAPTERS__WECHAT_PAY__API_V3_KEY",
            "Wz9apiV3keyTypedInThePlatform123",
        )
        .env(
            "SESAME__ADAPTERS__WECHAT_PAY__API_V2_KEY",
            "v2-key-0123456789abcdef01234567",
        )
        .env(
            "SESAME__ADAPTERS__WECHAT_PAY__APP_SECRET",
            "official-account-app-secret",
        )
        .env(
            "SESAME__ADAPTERS__KAKAO_PAY__SECRET_KEY",
            "PRD0123456789SECRET",
        )
        .env("SESAME__ADAPTERS__KAKAO_PAY__ENABLED", "false")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for secret in [
        private_key.lines().nth(1).unwrap(),
        "Wz9apiV3keyTypedInThePlatform123",
        "v2-key-0123456789abcdef01234567",
        "official-account-app-secret",
        "PRD0123456789SECRET",
    ] {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    let section = |name: &str| {
        let start = text.find(&format!("[adapters.{name}]\n")).expect(name);
        let body = &text[start..];
        body[..body[1..].find("\n[").map_or(body.len(), |end| end + 1)].to_owned()
    };
    let alipay = section("alipay");
    assert!(alipay.contains("app_id = \"0021000000000001\""), "{alipay}");
    assert!(alipay.contains("private_key = \"***\""), "{alipay}");
    assert!(
        alipay.contains("wallet_public_key = \"@/etc/sesame/alipay_public_key.pem\""),
        "a path is shown: {alipay}"
    );
    let wechat = section("wechat_pay");
    assert!(wechat.contains("api_v3_key = \"***\""), "{wechat}");
    assert!(wechat.contains("client_cert = \"\""), "{wechat}");
    let kakao = section("kakao_pay");
    assert!(
        kakao.contains("secret_key = \"***\"") && kakao.contains("enabled = false"),
        "{kakao}"
    );
}

#[test]
fn merchant_commands_use_the_configured_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let out = sesame()
        .args([
            "merchant",
            "create",
            "--name",
            "Cafe",
            "--city",
            "MACAU",
            "--country",
            "MO",
            "--mcc",
            "5812",
            "--currency",
            "MOP",
        ])
        .env("SESAME__STORE__PATH", data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(created["api_key"].as_str().unwrap().starts_with("sk_"));
    let out = sesame()
        .args([
            "merchant",
            "create",
            "--name",
            "Cafe",
            "--city",
            "MACAU",
            "--country",
            "Macau",
            "--mcc",
            "5812",
            "--currency",
            "MOP",
        ])
        .env("SESAME__STORE__PATH", data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("country"));
    let out = sesame()
        .args(["merchant", "list"])
        .env("SESAME__STORE__PATH", data)
        .output()
        .unwrap();
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], created["merchant"]["id"]);
}

/// A running `sesame serve` and the reader collecting its standard output.
struct Server {
    child: std::process::Child,
    stdout: std::thread::JoinHandle<Vec<String>>,
}

/// Starts `command` (which binds port 0) and reads the port it prints on the line
/// starting with `listening_prefix`, so no other process can take the port between
/// choosing and binding it. Returns the child, its port and the stdout reader.
pub(crate) fn start_on_port_zero(
    mut command: Command,
    listening_prefix: &'static str,
) -> (
    std::process::Child,
    u16,
    std::thread::JoinHandle<Vec<String>>,
) {
    let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<u16>();
    let stdout = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(address) = line.strip_prefix(listening_prefix) {
                let port = address
                    .trim()
                    .trim_start_matches("http://")
                    .split(['/', ' '])
                    .next()
                    .and_then(|host_port| host_port.rsplit(':').next())
                    .and_then(|port| port.parse().ok());
                if let Some(port) = port {
                    let _ = tx.send(port);
                }
            }
            lines.push(line);
        }
        lines
    });
    let port = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(port) => port,
        Err(_) => {
            let _ = child.kill();
            panic!("no '{listening_prefix}' line: {:?}", stdout.join());
        }
    };
    (child, port, stdout)
}

/// Starts `sesame serve` on a port of its own and waits until it serves.
fn start_server(data: &str) -> Server {
    let mut command = sesame();
    command
        .arg("serve")
        .env("SESAME__STORE__PATH", data)
        .env("SESAME__SERVER__BIND", "127.0.0.1:0")
        .env("SESAME__ADMIN__TOKEN", "")
        .stderr(Stdio::null());
    let (child, port, stdout) = start_on_port_zero(command, "Sesame listening on ");
    // Ready means /healthz answers (signal handlers are installed by then), not merely
    // that the port accepts: the listener is bound before the server starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !healthz_ok(port) {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { child, stdout }
}

pub(crate) fn healthz_ok(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200")
}

/// SIGTERM, then the exit status and everything it printed.
fn stop(mut server: Server) -> (std::process::ExitStatus, Vec<String>) {
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(server.child.id() as i32, libc::SIGTERM);
    }
    let status = server.child.wait().unwrap();
    (status, server.stdout.join().unwrap())
}

#[test]
fn serve_prints_a_generated_admin_token_once_and_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let server = start_server(data);
    let token = std::fs::read_to_string(dir.path().join("admin_token")).unwrap();
    let (status, lines) = stop(server);
    assert!(status.success(), "graceful exit: {status:?}");
    assert!(
        lines.iter().any(|l| l.contains(token.trim())),
        "token printed on first start: {lines:?}"
    );

    let server = start_server(data);
    let (status, lines) = stop(server);
    assert!(status.success());
    assert!(
        !lines.iter().any(|l| l.contains(token.trim())),
        "not printed again"
    );
}

#[test]
fn sandbox_command_serves_the_wallet_sandboxes_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = sesame();
    command
        .args(["sandbox", "--bind", "127.0.0.1:0"])
        .env("SESAME__STORE__PATH", dir.path())
        .stderr(Stdio::null());
    let (mut child, port, _stdout) = start_on_port_zero(command, "Wallet sandboxes listening on ");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !healthz_ok(port) {
        assert!(Instant::now() < deadline, "sandbox did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /sandbox/wechat_pay/test-codes HTTP/1.0\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "{response}"
    );
    assert!(
        dir.path().join("sandbox_keys.json").exists(),
        "keys generated on first start"
    );
}

#[tokio::test]
async fn ledger_verify_passes_a_clean_book_and_fails_a_tampered_one() {
    use sesame::domain::ledger::{self, EntryKind, LedgerEntry};
    use sesame::domain::order::{Order, OrderMode, OrderStatus};
    use sesame::store::OrderChange;

    let dir = tempfile::tempdir().unwrap();
    {
        let store: sesame::store::DynStore = std::sync::Arc::new(
            sesame::store::embedded::EmbeddedStore::open(dir.path())
                .await
                .unwrap(),
        );
        let (bundle, _) = crate::store_conformance::bundle("Cafe", 1_700_000_000_000);
        store.create_merchant(&bundle).await.unwrap();
        let m = bundle.merchant.id.clone();
        let mut order = Order {
            id: sesame::domain::OrderId::generate_for(&m),
            merchant_id: m.clone(),
            plate_id: None,
            amount_minor: 1_000,
            currency: sesame_adapters::money::Currency::Mop,
            description: "x".into(),
            reference: None,
            mode: OrderMode::DynamicQr,
            brand: None,
            adapter: Some("alipay".into()),
            status: OrderStatus::Succeeded,
            paid_late: false,
            wallet_ref: None,
            pay_action: None,
            fee_bps: 150,
            fee_minor: 15,
            refunded_minor: 0,
            refund_pending_minor: 0,
            review: None,
            expires_at: 1_700_000_900_000,
            next_check_at: None,
            paid_at: Some(1_700_000_000_000),
            created_at: 1_700_000_000_000,
            updated_at: 1_700_000_000_000,
            version: 1,
        };
        let entry = LedgerEntry {
            id: LedgerEntry::payment_id(&order.id),
            merchant_id: m.clone(),
            currency: order.currency,
            order_id: order.id.clone(),
            kind: EntryKind::Payment,
            postings: ledger::payment_entry("alipay", 1_000, 15).unwrap(),
            created_at: 1_700_000_000_000,
        };
        order.version = 1;
        let change = OrderChange {
            order,
            expected_version: 0,
            dedupe_key: None,
            refund: None,
            entry: Some(entry),
            event: None,
        };
        store.commit(&change, 1_700_000_000_000).await.unwrap();
    }
    let verify = || {
        sesame()
            .args(["ledger", "verify"])
            .env("SESAME__STORE__PATH", dir.path())
            .output()
            .unwrap()
    };
    let clean = verify();
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    let report: Value = serde_json::from_slice(&clean.stdout).unwrap();
    assert_eq!(report["entries"], 1);
    assert_eq!(report["succeeded_orders"], 1);

    let db = rusqlite::Connection::open(dir.path().join("sesame.db")).unwrap();
    db.execute(
        "UPDATE balances SET balance = balance + 1 WHERE account = 'fee_income'",
        [],
    )
    .unwrap();
    drop(db);
    let tampered = verify();
    assert!(!tampered.status.success(), "a tampered book must fail");
    let report: Value = serde_json::from_slice(&tampered.stdout).unwrap();
    assert!(
        report["violations"][0]
            .as_str()
            .unwrap()
            .contains("fee_income"),
        "{report}"
    );
}
