//! What every shopper page shares: the language of the request and the language links
//! (always to a GET address that shows the same thing), the Content-Security-Policy
//! and other headers, the message pages (not found, too many requests, errors), and
//! the versioned static assets. Must never: answer a shopper with JSON, or point a
//! language link at an address that cannot be fetched with GET.

use std::sync::OnceLock;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::WalletMode;
use crate::error::ApiError;
use crate::i18n::{LANG_COOKIE, Lang, Messages};
use crate::services::rate_limit::Wait;
use crate::startup::AppState;

pub struct LangLink {
    pub(crate) code: &'static str,
    pub(crate) tag: &'static str,
    pub(crate) label: &'static str,
    pub(crate) href: String,
    pub(crate) current: bool,
}

/// The parts of `base.html`: language, title, language switch, asset addresses.
pub struct Chrome {
    pub(crate) t: &'static Messages,
    pub(crate) assets: &'static Assets,
    pub(crate) lang_tag: &'static str,
    pub(crate) title: String,
    pub(crate) langs: Vec<LangLink>,
}

impl Chrome {
    /// `page` is the GET address (path and query) the language links point at.
    pub fn new(lang: Lang, title: String, page: &str) -> Chrome {
        let t = lang.messages();
        let langs = Lang::ALL
            .iter()
            .map(|&l| LangLink {
                code: l.code(),
                tag: l.tag(),
                label: t.get(match l {
                    Lang::En => "lang_en",
                    Lang::Zh => "lang_zh",
                    Lang::Pt => "lang_pt",
                }),
                href: with_lang(page, l.code()),
                current: l == lang,
            })
            .collect();
        Chrome {
            t,
            assets: assets(),
            lang_tag: lang.tag(),
            title,
            langs,
        }
    }
}

/// `page` with its `lang` parameter set to `code` (other parameters kept in order).
fn with_lang(page: &str, code: &str) -> String {
    let (path, query) = page.split_once('?').unwrap_or((page, ""));
    let mut params: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && *p != "lang" && !p.starts_with("lang="))
        .collect();
    let lang = format!("lang={code}");
    params.push(&lang);
    format!("{path}?{}", params.join("&"))
}

/// The GET address showing what this request shows: a GET's own path and query; for a
/// form POST the page the form is on.
pub fn here(req: &HttpRequest) -> String {
    if req.method() == actix_web::http::Method::POST {
        return form_page(req);
    }
    match req.query_string() {
        "" => req.path().to_owned(),
        query => format!("{}?{query}", req.path()),
    }
}

/// The page a form's address belongs to: the path without its last segment
/// (`/q/{token}/pay` → `/q/{token}`, `/o/{id}/cancel` → `/o/{id}`).
pub fn form_page(req: &HttpRequest) -> String {
    req.path()
        .rsplit_once('/')
        .map(|(page, _)| page)
        .filter(|page| !page.is_empty())
        .unwrap_or("/")
        .to_owned()
}

#[derive(Deserialize)]
struct LangQuery {
    #[serde(default)]
    lang: Option<String>,
}

/// The request's language and whether it was chosen explicitly (`?lang=`).
pub fn language(req: &HttpRequest) -> (Lang, bool) {
    let query = web::Query::<LangQuery>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.into_inner().lang);
    let explicit = query.as_deref().and_then(Lang::parse);
    let cookie = req.cookie(LANG_COOKIE).map(|c| c.value().to_owned());
    let accept = req
        .headers()
        .get("accept-language")
        .and_then(|v| v.to_str().ok());
    let lang = Lang::negotiate(query.as_deref(), cookie.as_deref(), accept);
    (lang, explicit.is_some())
}

/// Everything from this origin only. Leaving for a wallet is never a form submission:
/// a Pay form is answered with a same-origin redirect to `/o/{id}/wallet`, whose page
/// opens the wallet by meta refresh and link (navigations `form-action` does not
/// govern), so wallet origins (which Alipay+ varies per wallet, some of them app
/// schemes) need not be listed. In sandbox mode with the sandboxes on another origin,
/// that origin may be fetched (the WeChat JSAPI stand-in).
pub fn content_security_policy(state: &AppState) -> String {
    let connect = sandbox_wechat_base(state)
        .and_then(|base| origin_of(&base))
        .map(|origin| format!(" {origin}"))
        .unwrap_or_default();
    format!(
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
form-action 'self'; connect-src 'self'{connect}; frame-ancestors 'none'; base-uri 'none'"
    )
}

/// In sandbox mode, where the WeChat Pay sandbox answers (its JSAPI stand-in is
/// fetched from the shopper's page): the adapter's own `base_url` when it points at a
/// sandbox elsewhere, else the mounted sandboxes (same origin unless
/// `wallets.sandbox_base_url` moves them). Live wallets have no stand-in: `None`.
pub fn sandbox_wechat_base(state: &AppState) -> Option<String> {
    if state.settings.wallets.mode != WalletMode::Sandbox {
        return None;
    }
    let own = state
        .settings
        .adapters
        .wechat_pay
        .base_url
        .trim_end_matches('/');
    if !own.is_empty() {
        return Some(own.to_owned());
    }
    let base = state
        .settings
        .wallets
        .sandbox_base_url
        .trim_end_matches('/');
    let base = if base.is_empty() { "/sandbox" } else { base };
    Some(format!("{base}/wechat_pay"))
}

fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next()?;
    (!host.is_empty() && !host.contains(char::is_whitespace) && !host.contains(';'))
        .then(|| format!("{scheme}://{host}"))
}

/// A rendered shopper page with its headers; `remember` sets the language cookie.
pub fn page(
    state: &AppState,
    status: StatusCode,
    lang: Lang,
    remember: bool,
    body: Result<String, askama::Error>,
) -> HttpResponse {
    let body = match body {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(error = %e, "a shopper page did not render");
            return HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .body(lang.messages().get("error_text").to_owned());
        }
    };
    let mut response = HttpResponse::build(status);
    response
        .content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", content_security_policy(state)))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .insert_header((header::CONTENT_LANGUAGE, lang.tag()));
    if remember {
        let secure = cookie_secure(state);
        response.insert_header((
            header::SET_COOKIE,
            format!(
                "{LANG_COOKIE}={}; Path=/; Max-Age=31536000; SameSite=Lax; HttpOnly{secure}",
                lang.code()
            ),
        ));
    }
    response.body(body)
}

/// The `Secure` attribute of our cookies, when the gateway is served over https.
pub fn cookie_secure(state: &AppState) -> &'static str {
    if state
        .settings
        .server
        .public_base_url
        .starts_with("https://")
    {
        "; Secure"
    } else {
        ""
    }
}

/// 303 to a same-origin page.
pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// A button-styled link on a message page.
pub struct Link {
    pub(crate) id: &'static str,
    pub(crate) href: String,
    pub(crate) label: String,
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    chrome: Chrome,
    heading: String,
    text: String,
    link: Option<Link>,
}

/// A page saying one thing: `heading` is a message key, `text` the text below it.
pub fn message(
    state: &AppState,
    req: &HttpRequest,
    status: StatusCode,
    heading: &str,
    text: String,
    link: Option<Link>,
) -> HttpResponse {
    let (lang, remember) = language(req);
    let heading = lang.messages().get(heading).to_owned();
    let tpl = MessagePage {
        chrome: Chrome::new(lang, heading.clone(), &here(req)),
        heading,
        text,
        link,
    };
    page(state, status, lang, remember, tpl.render())
}

/// "Pay again" back to where a payment started.
pub fn again_link(req: &HttpRequest, href: String) -> Link {
    Link {
        id: "again",
        href,
        label: language(req).0.messages().get("try_again").to_owned(),
    }
}

pub fn not_found(state: &AppState, req: &HttpRequest) -> HttpResponse {
    let text = language(req).0.messages().get("not_found_text").to_owned();
    message(
        state,
        req,
        StatusCode::NOT_FOUND,
        "not_found_title",
        text,
        None,
    )
}

/// The friendly 429, with the time until the client's bucket holds a request again.
pub fn too_many(state: &AppState, req: &HttpRequest, wait: Wait) -> HttpResponse {
    let text = language(req)
        .0
        .messages()
        .get("rate_limited_text")
        .to_owned();
    let mut response = message(
        state,
        req,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited_title",
        text,
        None,
    );
    if let Ok(value) = HeaderValue::from_str(&wait.secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// Something failed on our side (store, wallet unreachable): logged, and the shopper
/// sees a calm page, with a way back when there is one.
pub fn failure(
    state: &AppState,
    req: &HttpRequest,
    error: &ApiError,
    back: Option<String>,
) -> HttpResponse {
    tracing::warn!(
        code = error.code.code(),
        detail = error.message(),
        "shopper page failed"
    );
    let text = language(req).0.messages().get("error_text").to_owned();
    let link = back.map(|href| again_link(req, href));
    message(
        state,
        req,
        StatusCode::SERVICE_UNAVAILABLE,
        "error_title",
        text,
        link,
    )
}

// ---------------------------------------------------------------------------------
// Static assets
// ---------------------------------------------------------------------------------

const CSS: &str = include_str!("../../../static/sesame.css");
const STATUS_JS: &str = include_str!("../../../static/status.js");
const WECHAT_JS: &str = include_str!("../../../static/wechat.js");

/// A short content hash of an asset.
fn content_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))[..16].to_owned()
}

/// Versioned asset addresses (`?v=<content hash>`): a deploy that changes a file
/// changes its address, so browsers may cache each version for a year.
pub struct Assets {
    pub(crate) css: String,
    pub(crate) status_js: String,
    pub(crate) wechat_js: String,
}

fn assets() -> &'static Assets {
    static ASSETS: OnceLock<Assets> = OnceLock::new();
    ASSETS.get_or_init(|| Assets {
        css: format!("/static/sesame.css?v={}", content_hash(CSS)),
        status_js: format!("/static/status.js?v={}", content_hash(STATUS_JS)),
        wechat_js: format!("/static/wechat.js?v={}", content_hash(WECHAT_JS)),
    })
}

fn asset(req: &HttpRequest, text: &'static str, content_type: &str) -> HttpResponse {
    let tag = format!("\"{}\"", content_hash(text));
    let cached = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut response = if cached {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .insert_header((header::ETAG, tag))
        .insert_header(("X-Content-Type-Options", "nosniff"));
    if cached {
        response.finish()
    } else {
        response.body(text)
    }
}

pub async fn css(req: HttpRequest) -> HttpResponse {
    asset(&req, CSS, "text/css; charset=utf-8")
}

pub async fn status_js(req: HttpRequest) -> HttpResponse {
    asset(&req, STATUS_JS, "text/javascript; charset=utf-8")
}

pub async fn wechat_js(req: HttpRequest) -> HttpResponse {
    asset(&req, WECHAT_JS, "text/javascript; charset=utf-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_links_replace_only_the_lang_parameter() {
        assert_eq!(with_lang("/q/abc", "zh"), "/q/abc?lang=zh");
        assert_eq!(
            with_lang("/o/ord_1/wechat?code=c1&state=ord_1&lang=pt", "en"),
            "/o/ord_1/wechat?code=c1&state=ord_1&lang=en"
        );
        assert_eq!(with_lang("/o/x?lang&a=1", "pt"), "/o/x?a=1&lang=pt");
    }
}
