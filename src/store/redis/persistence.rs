//! What the Redis server says about its own persistence, and whether that makes an
//! acknowledged write survive a crash of the Redis process.
//!
//! Must never: guess. A setting the server will not report (CONFIG disabled, as on
//! some managed services) counts as unknown, and unknown is not durable.

/// The persistence settings that decide durability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persistence {
    /// `aof_enabled` in `INFO persistence`; `None` when the reply lacks it.
    pub aof_enabled: Option<bool>,
    /// `CONFIG GET appendfsync`; `None` when the server refused to say.
    pub appendfsync: Option<String>,
}

impl Persistence {
    /// Reads `aof_enabled` from an `INFO persistence` reply; `None` if it is absent.
    pub fn aof_enabled_from_info(info: &str) -> Option<bool> {
        info.lines()
            .filter_map(|line| line.trim().strip_prefix("aof_enabled:"))
            .map(|value| value.trim() == "1")
            .next()
    }

    /// With `appendfsync always`, Redis fsyncs the AOF before it replies, so a write
    /// that returned is on disk.
    pub fn durable(&self) -> bool {
        self.aof_enabled == Some(true) && self.appendfsync.as_deref() == Some("always")
    }

    /// The text `StoreHealth::durability` carries.
    pub fn describe(&self) -> String {
        match (self.aof_enabled, self.appendfsync.as_deref()) {
            (None, _) => "redis volatile (aof state unknown)".to_owned(),
            (Some(false), _) => "redis volatile (aof off)".to_owned(),
            (Some(true), Some("always")) => "redis aof appendfsync=always".to_owned(),
            (Some(true), Some(other)) => format!("redis volatile (aof appendfsync={other})"),
            (Some(true), None) => "redis volatile (aof on, appendfsync unknown)".to_owned(),
        }
    }

    /// Why connecting is refused, for `StoreError::Misconfigured`.
    pub fn refusal(&self, masked_url: &str) -> String {
        let found = match (self.aof_enabled, self.appendfsync.as_deref()) {
            (None, _) => "INFO persistence does not report aof_enabled".to_owned(),
            (Some(false), _) => "AOF is off (appendonly no)".to_owned(),
            (Some(true), Some(other)) => format!("appendfsync is {other}, not always"),
            (Some(true), None) => {
                "appendfsync is unknown (CONFIG GET appendfsync was refused)".to_owned()
            }
        };
        format!(
            "redis at {masked_url} is not durable: {found}, so an acknowledged write could be \
             lost if Redis crashes. Configure `appendonly yes` and `appendfsync always`, or set \
             store.allow_volatile = true to run without that guarantee"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_aof_with_fsync_always_is_durable() {
        let info = "# Persistence\r\nloading:0\r\naof_enabled:1\r\naof_rewrite_in_progress:0\r\n";
        assert_eq!(Persistence::aof_enabled_from_info(info), Some(true));
        assert_eq!(
            Persistence::aof_enabled_from_info("aof_enabled:0\r\n"),
            Some(false)
        );
        assert_eq!(Persistence::aof_enabled_from_info("loading:0\r\n"), None);
        let always = Persistence {
            aof_enabled: Some(true),
            appendfsync: Some("always".into()),
        };
        assert!(always.durable());
        assert_eq!(always.describe(), "redis aof appendfsync=always");
        let everysec = Persistence {
            aof_enabled: Some(true),
            appendfsync: Some("everysec".into()),
        };
        assert!(!everysec.durable());
        assert!(everysec.refusal("redis://h").contains("everysec"));
        let off = Persistence {
            aof_enabled: Some(false),
            appendfsync: Some("always".into()),
        };
        assert!(!off.durable());
        assert_eq!(off.describe(), "redis volatile (aof off)");
        let unknown = Persistence {
            aof_enabled: Some(true),
            appendfsync: None,
        };
        assert!(!unknown.durable());
        assert!(unknown.refusal("redis://h").contains("allow_volatile"));
    }
}
