//! Who the client is, for rate limiting, behind the proxies the operator
//! trusts (`TETHER_TRUSTED_PROXIES`).
//!
//! Each proxy appends the address it received the request from to
//! `X-Forwarded-For`, so reading from the right, every hop is vouched for
//! by the trusted proxy after it, up to the first hop that is not itself a
//! trusted proxy: that one is the client. Anything to its left was written
//! by the client and can be forged. Without trusted proxies (the default)
//! the header is ignored and the TCP peer is the client.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The client's address: the TCP `peer`, or, if the peer is trusted, the
/// right-most hop of the `forwarded` header values (in the order received)
/// that is not trusted. A hop that cannot be read ends the walk at the last
/// address that could (the proxy that wrote it is then the client).
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded: impl DoubleEndedIterator<Item = &'a str>,
    trusted: &[IpNet],
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer.to_canonical();
    if trusted.is_empty() {
        return client;
    }
    for value in forwarded.rev() {
        for hop in value.rsplit(',') {
            if !is_trusted(&client) {
                return client;
            }
            match parse_hop(hop) {
                Some(ip) => client = ip,
                None => return client,
            }
        }
    }
    client
}

/// The key an address is limited by: IPv6 clients by their /64 (one
/// subscriber's usual allocation, so that a client cannot take a fresh
/// bucket with each of its addresses), IPv4 clients by the address.
pub fn limit_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let net = u128::from(v6) & (u128::MAX << 64);
            format!("{}/64", Ipv6Addr::from(net))
        }
    }
}

/// One hop: an address, possibly with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let got = client_ip(ip("10.0.0.1"), ["6.6.6.6"].into_iter(), &[]);
        assert_eq!(got, ip("10.0.0.1"));
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let trusted = nets(&["10.0.0.0/8", "192.168.1.1/32"]);
        // The client forged 6.6.6.6; the edge proxy 10.1.1.1 appended its
        // real address, the inner proxy 192.168.1.1 appended the edge's.
        let header = ["6.6.6.6, 203.0.113.7", "10.1.1.1"];
        let got = client_ip(ip("192.168.1.1"), header.into_iter(), &trusted);
        assert_eq!(got, ip("203.0.113.7"));
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let trusted = nets(&["10.0.0.0/8"]);
        let got = client_ip(ip("203.0.113.7"), ["10.0.0.5"].into_iter(), &trusted);
        assert_eq!(got, ip("203.0.113.7"));
    }

    #[test]
    fn ports_mapped_addresses_and_unreadable_hops() {
        let trusted = nets(&["10.0.0.0/8"]);
        let peer = ip("::ffff:10.0.0.2");
        assert_eq!(
            client_ip(peer, ["[2001:db8::1]:443"].into_iter(), &trusted),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_ip(peer, ["203.0.113.7:5555"].into_iter(), &trusted),
            ip("203.0.113.7")
        );
        // Garbage written by a trusted hop: the proxy that wrote it is the client.
        assert_eq!(
            client_ip(peer, ["unknown, 10.0.0.9"].into_iter(), &trusted),
            ip("10.0.0.9")
        );
        // No header at all: the proxy itself.
        assert_eq!(
            client_ip(peer, std::iter::empty(), &trusted),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        assert_eq!(
            limit_key(ip("2001:db8:1:2:aaaa::1")),
            limit_key(ip("2001:db8:1:2:ffff::9"))
        );
        assert_eq!(limit_key(ip("2001:db8:1:2::5")), "2001:db8:1:2::/64");
        assert_ne!(
            limit_key(ip("2001:db8:1:2::1")),
            limit_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(limit_key(ip("::ffff:192.0.2.1")), "192.0.2.1");
        assert_eq!(limit_key(ip("192.0.2.1")), "192.0.2.1");
    }
}
