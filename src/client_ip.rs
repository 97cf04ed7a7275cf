//! The client's IP address: the socket peer, or, when the peer is a trusted proxy, the
//! first untrusted hop of `X-Forwarded-For` read from the right.

use http::HeaderValue;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// Walks `X-Forwarded-For` right to left past trusted proxies. A spoofed header from an
/// untrusted peer changes nothing; an unparsable entry stops the walk at the last
/// trusted hop.
pub fn client_ip(peer: IpAddr, xff: Option<&HeaderValue>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if trusted.is_empty() || !is_trusted(&peer) {
        return peer;
    }
    let Some(list) = xff.and_then(|v| v.to_str().ok()) else {
        return peer;
    };
    let mut client = peer;
    for hop in list.rsplit(',') {
        let hop = hop.trim();
        let Some(ip) = hop
            .parse::<IpAddr>()
            .ok()
            .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        else {
            return client;
        };
        client = ip;
        if !is_trusted(&ip) {
            return ip;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_claims() {
        let xff = HeaderValue::from_static("1.2.3.4");
        assert_eq!(
            client_ip(ip("203.0.113.9"), Some(&xff), &nets(&["10.0.0.0/8"])),
            ip("203.0.113.9")
        );
        assert_eq!(client_ip(ip("10.0.0.1"), Some(&xff), &[]), ip("10.0.0.1"));
    }

    #[test]
    fn trusted_chain_is_walked_from_the_right() {
        let trusted = nets(&["10.0.0.0/8", "192.168.0.0/16"]);
        let xff = HeaderValue::from_static("6.6.6.6, 198.51.100.7, 192.168.1.1");
        // The left-most entry was written by the client and is not believed.
        assert_eq!(
            client_ip(ip("10.1.1.1"), Some(&xff), &trusted),
            ip("198.51.100.7")
        );
        let all_trusted = HeaderValue::from_static("10.9.9.9, 192.168.1.1");
        assert_eq!(
            client_ip(ip("10.1.1.1"), Some(&all_trusted), &trusted),
            ip("10.9.9.9")
        );
        let garbage = HeaderValue::from_static("1.1.1.1, not-an-ip, 10.2.2.2");
        assert_eq!(
            client_ip(ip("10.1.1.1"), Some(&garbage), &trusted),
            ip("10.2.2.2")
        );
        assert_eq!(client_ip(ip("10.1.1.1"), None, &trusted), ip("10.1.1.1"));
        let v6 = HeaderValue::from_static("2001:db8::1");
        assert_eq!(
            client_ip(ip("10.1.1.1"), Some(&v6), &trusted),
            ip("2001:db8::1")
        );
    }
}
