//! Languages of the shopper pages: English, Traditional Chinese and Portuguese
//! (Macau's), their message files (`locales/*.toml`, compiled in), the choice of
//! language for a request (`?lang=`, then the `sesame_lang` cookie, then
//! `Accept-Language`) and the user-visible formats of amounts and times, which the
//! message files define too (`money_format`, `number_group`, `time_format`, ...).
//! Must never: hold a user-visible string or format outside the message files, or
//! fail a page because a message is missing (English, then the key, stand in).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::OnceLock;

use sesame_adapters::money::{Currency, Money};

/// Cookie remembering an explicit language choice.
pub const LANG_COOKIE: &str = "sesame_lang";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
    Pt,
}

impl Lang {
    pub const ALL: [Lang; 3] = [Lang::En, Lang::Zh, Lang::Pt];

    /// The short code used in `?lang=` and the cookie.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh",
            Lang::Pt => "pt",
        }
    }

    /// BCP 47 tag for `<html lang>` and `Content-Language`.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh-Hant",
            Lang::Pt => "pt",
        }
    }

    /// A language tag or code: any Chinese is Traditional Chinese (Macau's written
    /// standard), any Portuguese is Portuguese; `None` for everything else.
    pub fn parse(tag: &str) -> Option<Lang> {
        let primary = tag.trim().split(['-', '_']).next().unwrap_or("");
        if primary.eq_ignore_ascii_case("en") {
            Some(Lang::En)
        } else if primary.eq_ignore_ascii_case("zh") {
            Some(Lang::Zh)
        } else if primary.eq_ignore_ascii_case("pt") {
            Some(Lang::Pt)
        } else {
            None
        }
    }

    /// The best supported language of an `Accept-Language` header (highest q first,
    /// header order breaking ties); English when none is supported.
    pub fn from_accept_language(header: &str) -> Lang {
        let mut best: Option<(u32, Lang)> = None;
        for item in header.split(',').take(16) {
            let mut parts = item.split(';');
            let tag = parts.next().unwrap_or("");
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .map(parse_q)
                .unwrap_or(1000);
            if q == 0 {
                continue;
            }
            if let Some(lang) = Lang::parse(tag)
                && best.is_none_or(|(bq, _)| q > bq)
            {
                best = Some((q, lang));
            }
        }
        best.map(|(_, l)| l).unwrap_or(Lang::En)
    }

    /// The request's language: explicit choice, remembered choice, browser preference.
    pub fn negotiate(query: Option<&str>, cookie: Option<&str>, accept: Option<&str>) -> Lang {
        query
            .and_then(Lang::parse)
            .or_else(|| cookie.and_then(Lang::parse))
            .unwrap_or_else(|| Lang::from_accept_language(accept.unwrap_or("")))
    }

    pub fn messages(self) -> &'static Messages {
        static ALL: OnceLock<[Messages; 3]> = OnceLock::new();
        let all = ALL.get_or_init(|| {
            [
                Messages::load(include_str!("../locales/en.toml")),
                Messages::load(include_str!("../locales/zh-Hant.toml")),
                Messages::load(include_str!("../locales/pt.toml")),
            ]
        });
        match self {
            Lang::En => &all[0],
            Lang::Zh => &all[1],
            Lang::Pt => &all[2],
        }
    }
}

/// `q=0.8` as thousandths; malformed values count as 0 (ignored).
fn parse_q(text: &str) -> u32 {
    let text = text.trim();
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let int: u32 = match int {
        "0" => 0,
        "1" => 1000,
        _ => return 0,
    };
    let frac: String = frac.chars().take(3).collect();
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    let scaled = format!("{frac:0<3}").parse::<u32>().unwrap_or(0);
    (int + scaled).min(1000)
}

/// One language's messages.
#[derive(Debug)]
pub struct Messages {
    map: BTreeMap<String, String>,
}

impl Messages {
    /// Parses a message file; a broken file (a build defect caught by the unit tests)
    /// yields an empty table, so pages fall back to English rather than fail.
    fn load(text: &str) -> Messages {
        let map = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize::<BTreeMap<String, String>>())
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "a locale file does not parse");
                BTreeMap::new()
            });
        Messages { map }
    }

    /// The message for `key`, else English's, else the key itself.
    pub fn get<'a>(&'a self, key: &'a str) -> &'a str {
        self.map
            .get(key)
            .or_else(|| Lang::En.messages().map.get(key))
            .map(String::as_str)
            .unwrap_or(key)
    }

    /// `get` with `{name}` placeholders replaced.
    pub fn fill(&self, key: &str, args: &[(&str, &str)]) -> String {
        let mut text = self.get(key).to_owned();
        for (name, value) in args {
            text = text.replace(&format!("{{{name}}}"), value);
        }
        text
    }

    /// The text of `key` before and after its `{name}` placeholder, for a page that
    /// sets the value apart (in bold, say) while the message decides the word order.
    pub fn around(&self, key: &str, name: &str) -> (String, String) {
        let text = self.get(key);
        match text.split_once(&format!("{{{name}}}")) {
            Some((before, after)) => (before.to_owned(), after.to_owned()),
            None => (text.to_owned(), String::new()),
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// The digits of an amount as this language writes them: thousands grouped by
    /// `number_group`, decimals after `number_decimal` (`1,000,000.00`, `1 000 000,00`).
    pub fn number(&self, money: &Money) -> String {
        let plain = money.to_decimal_string();
        let (int, frac) = plain.split_once('.').unwrap_or((&plain, ""));
        let group = self.get("number_group");
        let mut out = String::with_capacity(plain.len() + 8);
        for (i, digit) in int.chars().enumerate() {
            if i > 0 && (int.len() - i) % 3 == 0 {
                out.push_str(group);
            }
            out.push(digit);
        }
        if !frac.is_empty() {
            out.push_str(self.get("number_decimal"));
            out.push_str(frac);
        }
        out
    }

    /// An amount with its currency, laid out by `money_format` (`1,000.00 MOP`).
    pub fn money(&self, money: &Money) -> String {
        self.fill(
            "money_format",
            &[
                ("amount", &self.number(money)),
                ("currency", money.currency().code()),
            ],
        )
    }

    /// [`Messages::money`] of integer minor units (a stored amount).
    pub fn money_minor(&self, minor: i64, currency: Currency) -> String {
        match Money::from_minor(minor, currency) {
            Ok(money) => self.money(&money),
            Err(_) => self.fill(
                "money_format",
                &[("amount", "-"), ("currency", currency.code())],
            ),
        }
    }

    /// The wall-clock time `offset_hours` east of UTC, by `time_format` (chrono's
    /// strftime), with the zone named by `time_zone` and laid out by `time_line`.
    pub fn time(&self, ms: i64, offset_hours: i32) -> String {
        let Some(utc) = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms) else {
            return String::new();
        };
        let Some(offset) = chrono::FixedOffset::east_opt(offset_hours * 3600) else {
            return String::new();
        };
        let local = utc.with_timezone(&offset);
        let mut time = String::new();
        // A broken format in a message file must not fail the page: ISO 8601 instead.
        if write!(time, "{}", local.format(self.get("time_format"))).is_err() {
            time = local.format("%Y-%m-%d %H:%M:%S").to_string();
        }
        let offset = match offset_hours {
            0 => String::new(),
            h => format!("{h:+}"),
        };
        let zone = self.fill("time_zone", &[("offset", &offset)]);
        self.fill("time_line", &[("time", &time), ("zone", &zone)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_locale_has_exactly_the_english_keys() {
        let en: Vec<&str> = Lang::En.messages().keys().collect();
        assert!(en.len() > 30, "English messages load");
        for lang in [Lang::Zh, Lang::Pt] {
            let keys: Vec<&str> = lang.messages().keys().collect();
            assert_eq!(keys, en, "{lang:?}");
        }
    }

    #[test]
    fn accept_language_picks_the_preferred_supported_language() {
        assert_eq!(Lang::from_accept_language("zh-MO,zh;q=0.9"), Lang::Zh);
        assert_eq!(
            Lang::from_accept_language("fr-FR, pt-PT;q=0.8, en;q=0.5"),
            Lang::Pt
        );
        assert_eq!(
            Lang::from_accept_language("en;q=0.2, zh-TW;q=0.7"),
            Lang::Zh
        );
        assert_eq!(Lang::from_accept_language("ko-KR"), Lang::En);
        assert_eq!(Lang::from_accept_language("pt;q=0, zh;q=0.1"), Lang::Zh);
        assert_eq!(Lang::from_accept_language(""), Lang::En);
    }

    #[test]
    fn explicit_choice_beats_cookie_beats_header() {
        assert_eq!(
            Lang::negotiate(Some("pt"), Some("zh"), Some("en")),
            Lang::Pt
        );
        assert_eq!(
            Lang::negotiate(Some("xx"), Some("zh"), Some("en")),
            Lang::Zh
        );
        assert_eq!(Lang::negotiate(None, None, Some("pt-BR")), Lang::Pt);
    }

    #[test]
    fn amounts_are_grouped_and_laid_out_per_language() {
        let big = Money::from_minor(100_000_000, Currency::Mop).unwrap();
        assert_eq!(Lang::En.messages().money(&big), "1,000,000.00 MOP");
        assert_eq!(Lang::Zh.messages().money(&big), "1,000,000.00 MOP");
        assert_eq!(
            Lang::Pt.messages().money(&big),
            "1\u{a0}000\u{a0}000,00 MOP"
        );
        let won = Money::from_minor(12_000, Currency::Krw).unwrap();
        assert_eq!(Lang::En.messages().money(&won), "12,000 KRW");
        let small = Money::from_minor(1, Currency::Mop).unwrap();
        assert_eq!(Lang::Pt.messages().money(&small), "0,01 MOP");
        assert_eq!(
            Lang::En.messages().money_minor(999, Currency::Mop),
            "9.99 MOP"
        );
    }

    #[test]
    fn times_follow_each_language_format_and_name_the_zone() {
        // 2026-11-29T04:05:06Z
        let ms = 1_795_925_106_000;
        assert_eq!(
            Lang::En.messages().time(ms, 8),
            "2026-11-29 12:05:06 (UTC+8)"
        );
        assert_eq!(Lang::En.messages().time(ms, 0), "2026-11-29 04:05:06 (UTC)");
        assert_eq!(
            Lang::Zh.messages().time(ms, 8),
            "2026年11月29日 12:05:06（UTC+8）"
        );
        assert_eq!(
            Lang::Pt.messages().time(ms, 9),
            "29/11/2026 13:05:06 (UTC+9)"
        );
        for lang in Lang::ALL {
            let format = lang.messages().get("time_format");
            assert!(
                chrono::format::StrftimeItems::new(format)
                    .all(|item| item != chrono::format::Item::Error),
                "{lang:?}: {format}"
            );
        }
    }

    #[test]
    fn placeholders_are_filled_and_missing_keys_fall_back() {
        let m = Lang::Pt.messages();
        assert_eq!(m.fill("pay_title", &[("merchant", "Café")]), "Pagar a Café");
        assert_eq!(m.get("no_such_key"), "no_such_key");
        assert_eq!(
            Lang::Zh.messages().around("plate_line", "label"),
            ("收款點：".to_owned(), String::new())
        );
    }
}
