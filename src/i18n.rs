//! Languages of the shopper pages: English, Traditional Chinese and Portuguese
//! (Macau's), their message files (`locales/*.toml`, compiled in) and the choice of
//! language for a request (`?lang=`, then the `sesame_lang` cookie, then
//! `Accept-Language`). Must never: hold a user-visible string outside the message
//! files, or fail a page because a message is missing (English, then the key, stand in).

use std::collections::BTreeMap;
use std::sync::OnceLock;

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

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
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
    fn placeholders_are_filled_and_missing_keys_fall_back() {
        let m = Lang::Pt.messages();
        assert_eq!(m.fill("pay_title", &[("merchant", "Café")]), "Pagar a Café");
        assert_eq!(m.get("no_such_key"), "no_such_key");
    }
}
