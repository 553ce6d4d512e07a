//! Which addresses a webhook may connect to (SSRF defence), and resolving a
//! URL's host to addresses that were all checked.
//!
//! A webhook URL is chosen by a client, and the appliance calls it from
//! inside the operator's network, so by default it refuses every address
//! that is not public unicast: loopback, private, link-local (cloud metadata
//! at 169.254.169.254 and fd00:ec2::254 included), unique-local, CGNAT,
//! multicast, broadcast, documentation and reserved ranges. The check runs
//! at creation and again before each attempt, on the addresses the
//! connection then uses, so a name that later resolves elsewhere (DNS
//! rebinding) is refused at delivery too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// True if a webhook may not connect to `ip` unless private addresses are allowed.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => is_forbidden_v6(v6),
    }
}

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        // CGNAT (RFC 6598).
        || (a == 100 && (64..128).contains(&b))
        // IETF protocol assignments (RFC 6890).
        || (a == 192 && b == 0 && c == 0)
        // Benchmarking (RFC 2544).
        || (a == 198 && (18..20).contains(&b))
        // Reserved (240/4).
        || a >= 240
}

fn is_forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_forbidden_v4(v4);
    }
    let s = ip.segments();
    let first = s.first().copied().unwrap_or(0);
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // Unique local fc00::/7 (fd00:ec2::254, the EC2 metadata address, is in it).
        || (first & 0xfe00) == 0xfc00
        // Link-local fe80::/10 and the deprecated site-local fec0::/10.
        || (first & 0xffc0) == 0xfe80
        || (first & 0xffc0) == 0xfec0
        // Documentation 2001:db8::/32.
        || (first == 0x2001 && s.get(1) == Some(&0x0db8))
        // NAT64 64:ff9b::/96 reaches the IPv4 address in its last 32 bits.
        || (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && {
            let o = ip.octets();
            is_forbidden_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]))
        })
        // IPv4-compatible ::a.b.c.d (deprecated) and the rest of ::/96.
        || s[..6] == [0, 0, 0, 0, 0, 0]
}

/// Why a host may not be called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The name did not resolve (or to nothing).
    #[error("the host {0} does not resolve")]
    Unresolvable(String),
    /// It resolves to an address webhooks may not reach.
    #[error("the host {host} resolves to {ip}, a private, loopback, link-local or otherwise non-public address; webhooks only call public addresses unless the operator sets [webhooks] allow_private = true")]
    Forbidden {
        /// The host as written in the URL.
        host: String,
        /// The first refused address.
        ip: IpAddr,
    },
}

/// Resolve `host:port`; every address must pass the check (one bad address
/// refuses the host, so a mixed answer cannot be used to reach inside).
pub async fn resolve_checked(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, AddressError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|_| AddressError::Unresolvable(host.to_owned()))?
            .take(16)
            .collect(),
    };
    if addrs.is_empty() {
        return Err(AddressError::Unresolvable(host.to_owned()));
    }
    if !allow_private {
        if let Some(bad) = addrs.iter().find(|a| is_forbidden(a.ip())) {
            return Err(AddressError::Forbidden {
                host: host.to_owned(),
                ip: bad.ip(),
            });
        }
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses_are_forbidden_and_public_ones_are_not() {
        for bad in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "::1",
            "::",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
            "2001:db8::1",
        ] {
            let ip: IpAddr = bad.parse().unwrap();
            assert!(is_forbidden(ip), "{bad} must be forbidden");
        }
        for good in [
            "93.184.216.34",
            "8.8.8.8",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "64:ff9b::808:808",
            "::ffff:8.8.8.8",
        ] {
            let ip: IpAddr = good.parse().unwrap();
            assert!(!is_forbidden(ip), "{good} must be allowed");
        }
    }

    #[tokio::test]
    async fn literal_hosts_are_checked_without_dns() {
        assert!(matches!(
            resolve_checked("127.0.0.1", 80, false).await,
            Err(AddressError::Forbidden { .. })
        ));
        assert!(matches!(
            resolve_checked("[::1]", 80, false).await,
            Err(AddressError::Forbidden { .. })
        ));
        assert_eq!(
            resolve_checked("127.0.0.1", 8080, true).await.unwrap(),
            vec!["127.0.0.1:8080".parse().unwrap()]
        );
    }
}
