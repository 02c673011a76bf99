//! In-process token buckets guarding the public shopper pages, one bucket per key
//! (a client, a plate), and who the client is: the TCP peer, or — behind a trusted
//! reverse proxy — the right-most `X-Forwarded-For` address no trusted proxy wrote,
//! with an IPv6 client counted per /64 (what one subscriber gets).
//!
//! Integer arithmetic only: a full bucket of `n` requests per minute holds
//! `n * 60_000` units and refills `n` units per millisecond. Keys beyond `entries`
//! are forgotten least-recently-seen first, so memory stays bounded whatever a client
//! sends. Must never: touch the store or a wallet (it runs before either, so excess
//! requests cost nothing downstream), or believe `X-Forwarded-For` from a peer that is
//! not a configured proxy.

use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;

const UNITS_PER_REQUEST: u64 = 60_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    units: u64,
    at_ms: i64,
}

/// A refused request: how long until the bucket holds one request again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    pub secs: u64,
}

pub struct RateLimiter<K: Hash + Eq> {
    per_minute: u64,
    buckets: Mutex<LruCache<K, Bucket>>,
}

impl<K: Hash + Eq> RateLimiter<K> {
    pub fn new(per_minute: u32, entries: usize) -> RateLimiter<K> {
        let entries = NonZeroUsize::new(entries.max(1)).unwrap_or(NonZeroUsize::MIN);
        RateLimiter {
            per_minute: u64::from(per_minute.max(1)),
            buckets: Mutex::new(LruCache::new(entries)),
        }
    }

    /// Takes one request from `key`'s bucket at `now_ms`, or says how long to wait.
    pub fn admit(&self, key: K, now_ms: i64) -> Result<(), Wait> {
        let capacity = self.per_minute * UNITS_PER_REQUEST;
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bucket = buckets.get_or_insert_mut(key, || Bucket {
            units: capacity,
            at_ms: now_ms,
        });
        let elapsed = u64::try_from(now_ms.saturating_sub(bucket.at_ms)).unwrap_or(0);
        bucket.units = bucket
            .units
            .saturating_add(elapsed.saturating_mul(self.per_minute))
            .min(capacity);
        bucket.at_ms = bucket.at_ms.max(now_ms);
        if bucket.units < UNITS_PER_REQUEST {
            let missing_ms = (UNITS_PER_REQUEST - bucket.units).div_ceil(self.per_minute);
            return Err(Wait {
                secs: missing_ms.div_ceil(1000).max(1),
            });
        }
        bucket.units -= UNITS_PER_REQUEST;
        Ok(())
    }
}

/// An address block: one address (`192.0.2.7`, `::1`) or a CIDR block (`10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpBlock {
    network: IpAddr,
    prefix: u8,
}

impl IpBlock {
    pub fn parse(text: &str) -> Option<IpBlock> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
            Some(_) => return None,
        };
        (prefix <= max).then_some(IpBlock { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The bucket key of a client: its IPv4 address, or its IPv6 /64 (a subscriber's
/// prefix: one phone may use many addresses inside it).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        v4 => v4,
    }
}

/// The client behind a request from `peer`. `forwarded` are the request's
/// `X-Forwarded-For` header values in order; they are believed only when `peer` is in
/// `trusted`, and then read right to left: each proxy appends the address it saw, so
/// the right-most address that is not itself a trusted proxy is the client. An entry
/// that is not an address stops the walk at the proxy that wrote it.
pub fn client_ip(peer: IpAddr, forwarded: &[&str], trusted: &[IpBlock]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|block| block.contains(ip));
    let peer = peer.to_canonical();
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    for entry in forwarded
        .iter()
        .rev()
        .flat_map(|value| value.rsplit(','))
        .map(str::trim)
    {
        let Some(ip) = parse_forwarded(entry) else {
            return client;
        };
        client = ip;
        if !is_trusted(ip) {
            return ip;
        }
    }
    client
}

/// `192.0.2.7`, `192.0.2.7:443`, `2001:db8::1` or `[2001:db8::1]:443`.
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_burst_of_the_minute_rate_passes_then_the_next_is_refused() {
        let limiter = RateLimiter::new(3, 10);
        assert!((0..3).all(|_| limiter.admit("a", 1_000).is_ok()));
        assert_eq!(limiter.admit("a", 1_000), Err(Wait { secs: 20 }));
        assert!(
            limiter.admit("b", 1_000).is_ok(),
            "other keys have their own bucket"
        );
    }

    #[test]
    fn buckets_refill_at_the_rate_per_minute() {
        let limiter = RateLimiter::new(6, 10);
        assert!((0..6).all(|_| limiter.admit(1u8, 0).is_ok()));
        assert_eq!(
            limiter.admit(1, 9_999),
            Err(Wait { secs: 1 }),
            "one per 10 s"
        );
        assert!(limiter.admit(1, 10_000).is_ok());
        assert!(limiter.admit(1, 10_001).is_err());
        assert!(
            (0..6).all(|_| limiter.admit(1, 10_000_000).is_ok()),
            "refill caps at the burst"
        );
        assert!(limiter.admit(1, 10_000_000).is_err());
    }

    #[test]
    fn forgotten_keys_start_full_and_memory_stays_bounded() {
        let limiter = RateLimiter::new(1, 2);
        assert!(limiter.admit(1u32, 0).is_ok());
        for k in 2..100u32 {
            let _ = limiter.admit(k, 0);
        }
        assert!(limiter.admit(1, 0).is_ok());
        assert_eq!(limiter.buckets.lock().unwrap().len(), 2);
    }

    #[test]
    fn blocks_parse_addresses_and_cidrs_and_refuse_the_rest() {
        let block = IpBlock::parse("10.0.0.0/8").unwrap();
        assert!(block.contains(ip("10.200.3.4")));
        assert!(!block.contains(ip("11.0.0.1")));
        assert!(block.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped IPv6");
        assert!(
            IpBlock::parse("192.0.2.7")
                .unwrap()
                .contains(ip("192.0.2.7"))
        );
        assert!(
            !IpBlock::parse("192.0.2.7")
                .unwrap()
                .contains(ip("192.0.2.8"))
        );
        let v6 = IpBlock::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!(IpBlock::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "x",
        ] {
            assert_eq!(IpBlock::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64_and_ipv4_per_address() {
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa::1")),
            client_key(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(client_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies_right_to_left() {
        let trusted = [
            IpBlock::parse("10.0.0.0/8").unwrap(),
            IpBlock::parse("::1").unwrap(),
        ];
        let xff = ["198.51.100.9, 203.0.113.5", "10.0.0.7"];
        assert_eq!(
            client_ip(ip("10.0.0.2"), &xff, &trusted),
            ip("203.0.113.5"),
            "the right-most untrusted address; what the client wrote on the left is ignored"
        );
        assert_eq!(
            client_ip(ip("203.0.113.99"), &xff, &trusted),
            ip("203.0.113.99"),
            "an untrusted peer's header is ignored"
        );
        assert_eq!(client_ip(ip("10.0.0.2"), &[], &trusted), ip("10.0.0.2"));
        assert_eq!(
            client_ip(ip("10.0.0.2"), &["10.0.0.3, 10.0.0.4"], &trusted),
            ip("10.0.0.3"),
            "all trusted: the left-most"
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), &["203.0.113.5, junk"], &trusted),
            ip("10.0.0.2"),
            "garbage written by a proxy stops the walk at that proxy"
        );
        assert_eq!(
            client_ip(ip("::1"), &["[2001:db8::5]:4711"], &trusted),
            ip("2001:db8::5")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), &["203.0.113.5"], &[]),
            ip("10.0.0.2"),
            "no trusted proxies: the peer"
        );
    }
}
