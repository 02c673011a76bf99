//! The Lua scripts behind every multi-step or check-and-set operation, compiled in
//! from `lua/*.lua` and run with EVALSHA (loaded on first NOSCRIPT).
//!
//! Must never: touch keys that are not passed in KEYS, or keys of two merchants in
//! one script (Redis Cluster runs a script on one slot).

use redis::Script;

pub struct Scripts {
    pub claim_index: Script,
    pub release_index: Script,
    pub create_merchant: Script,
    pub insert_plate: Script,
    pub rotate_api_key: Script,
    pub merchant_by_api_key: Script,
    pub merchants_page: Script,
    pub secret: Script,
    pub idem_begin: Script,
    pub idem_finish: Script,
    pub idem_release: Script,
    pub commit: Script,
    pub orders_page: Script,
    pub orders_due: Script,
    pub retire_check: Script,
    pub list_records: Script,
    pub events_page: Script,
    pub claim_events: Script,
    pub event_settle: Script,
    pub event_reschedule: Script,
    pub event_resend: Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        Scripts {
            claim_index: Script::new(include_str!("lua/claim_index.lua")),
            release_index: Script::new(include_str!("lua/release_index.lua")),
            create_merchant: Script::new(include_str!("lua/create_merchant.lua")),
            insert_plate: Script::new(include_str!("lua/insert_plate.lua")),
            rotate_api_key: Script::new(include_str!("lua/rotate_api_key.lua")),
            merchant_by_api_key: Script::new(include_str!("lua/merchant_by_api_key.lua")),
            merchants_page: Script::new(include_str!("lua/merchants_page.lua")),
            secret: Script::new(include_str!("lua/secret.lua")),
            idem_begin: Script::new(include_str!("lua/idem_begin.lua")),
            idem_finish: Script::new(include_str!("lua/idem_finish.lua")),
            idem_release: Script::new(include_str!("lua/idem_release.lua")),
            commit: Script::new(include_str!("lua/commit.lua")),
            orders_page: Script::new(include_str!("lua/orders_page.lua")),
            orders_due: Script::new(include_str!("lua/orders_due.lua")),
            retire_check: Script::new(include_str!("lua/retire_check.lua")),
            list_records: Script::new(include_str!("lua/list_records.lua")),
            events_page: Script::new(include_str!("lua/events_page.lua")),
            claim_events: Script::new(include_str!("lua/claim_events.lua")),
            event_settle: Script::new(include_str!("lua/event_settle.lua")),
            event_reschedule: Script::new(include_str!("lua/event_reschedule.lua")),
            event_resend: Script::new(include_str!("lua/event_resend.lua")),
        }
    }
}
