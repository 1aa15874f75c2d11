//! Behind a reverse proxy (`--trusted-proxies`): which address a connection
//! is from.
//!
//! A proxy appends the address it received the connection from to
//! `X-Forwarded-For`, so the header is a list of hops, oldest first, of which
//! only the entries written by proxies we trust are believable. The client
//! is the **rightmost untrusted hop**: walk the list from the right, past
//! every trusted proxy, and stop at the first address that is not one. The
//! header is read only when the TCP peer itself is a trusted proxy;
//! otherwise anyone could claim any address.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address range: `10.0.0.0/8`, `::1/128`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// Why a `--trusted-proxies` entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--trusted-proxies: {entry:?} is not an IP address or CIDR range ({why})")]
pub struct ParseNetError {
    entry: String,
    why: &'static str,
}

impl FromStr for IpNet {
    type Err = ParseNetError;

    fn from_str(s: &str) -> Result<IpNet, ParseNetError> {
        let err = |why| ParseNetError {
            entry: s.to_owned(),
            why,
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err("bad address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().map_err(|_| err("bad prefix length"))?,
        };
        if prefix > max {
            return Err(err("prefix length too long"));
        }
        Ok(IpNet { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `::ffff:a.b.c.d` is the IPv4 address it maps (a dual-stack listener sees
/// IPv4 peers that way).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let mask = |bits: u32, width: u32| -> u128 {
            if bits == 0 {
                0
            } else {
                u128::MAX << (width - bits)
            }
        };
        match (canonical(self.addr), canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let m = mask(self.prefix.into(), 32) as u32;
                u32::from(net) & m == u32::from(ip) & m
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let m = mask(self.prefix.into(), 128);
                u128::from(net) & m == u128::from(ip) & m
            }
            _ => false,
        }
    }
}

/// The proxies whose `X-Forwarded-For` is believed (empty: nobody's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses a comma-separated list (`127.0.0.1, 10.0.0.0/8, ::1`).
    pub fn parse(list: &str) -> Result<TrustedProxies, ParseNetError> {
        list.split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }

    /// The client's address, given the TCP peer and the request's
    /// `X-Forwarded-For` (all its values, comma-joined).
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        let peer = canonical(peer);
        let Some(header) = forwarded_for.filter(|_| self.trusts(peer)) else {
            return peer;
        };
        let mut client = peer;
        for hop in header.rsplit(',').map(str::trim) {
            // An entry we cannot read ends the walk at the last hop we know.
            let Ok(ip) = hop.parse::<IpAddr>().map(canonical) else {
                break;
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&list.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_match_by_prefix() {
        let net: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "v4-mapped peers");
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("192.0.2.1")) && !all.contains(ip("::1")));
        let v6: IpNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        let one: IpNet = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
    }

    #[test]
    fn bad_entries_are_refused_by_name() {
        for bad in ["10.0.0.0/33", "::/129", "ten", "1.2.3.4/x", "1.2.3.4:80"] {
            let e = TrustedProxies::parse(&format!("127.0.0.1,{bad}")).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
        assert!(TrustedProxies::parse(" , ").unwrap().is_empty());
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop() {
        let t = TrustedProxies::parse("127.0.0.1, 10.0.0.0/8").unwrap();
        let peer = ip("127.0.0.1");
        // Spoofed first entry, then the real client, then an inner proxy.
        let xff = Some("6.6.6.6, 203.0.113.7, 10.0.0.2");
        assert_eq!(t.client_ip(peer, xff), ip("203.0.113.7"));
        assert_eq!(t.client_ip(peer, Some("203.0.113.7")), ip("203.0.113.7"));
        // From an untrusted peer the header is ignored.
        assert_eq!(t.client_ip(ip("198.51.100.1"), xff), ip("198.51.100.1"));
        // No header: the peer.
        assert_eq!(t.client_ip(peer, None), peer);
        // Every hop trusted: the leftmost.
        assert_eq!(
            t.client_ip(peer, Some("10.0.0.5, 10.0.0.2")),
            ip("10.0.0.5")
        );
        // Garbage stops the walk at the last hop known.
        assert_eq!(
            t.client_ip(peer, Some("1.1.1.1, junk, 10.0.0.2")),
            ip("10.0.0.2")
        );
        assert_eq!(t.client_ip(peer, Some("")), peer);
        // Nobody trusted: always the peer.
        let none = TrustedProxies::default();
        assert_eq!(none.client_ip(peer, xff), peer);
    }
}
