//! Who sent a request, and whether it reached the proxy in front of exai over HTTPS.
//! `X-Forwarded-For` and `X-Forwarded-Proto` are believed only when the connection
//! comes from a trusted proxy (`EXAI_TRUSTED_PROXIES`); anyone else could write them.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use crate::access::TrustedProxies;
use crate::app::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap};

/// The address at the other end of the connection, put on each request by the server.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The client as far as it can be known: its address, and whether it connected over
/// HTTPS (to the trusted proxy; exai itself serves plain HTTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// `None` only for requests that came over no socket (in-process tests).
    pub addr: Option<IpAddr>,
    pub https: bool,
}

impl Client {
    pub fn of(headers: &HeaderMap, extensions: &Extensions, trusted: &TrustedProxies) -> Client {
        let Some(Peer(peer)) = extensions.get::<Peer>().copied() else {
            return Client { addr: None, https: false };
        };
        if !trusted.trusts(peer.ip()) {
            return Client { addr: Some(peer.ip()), https: false };
        }
        Client {
            addr: Some(forwarded_for(headers, trusted).unwrap_or(peer.ip())),
            https: forwarded_https(headers),
        }
    }
}

/// The nearest address in `X-Forwarded-For` that is not itself a trusted proxy: the
/// ones before it may have been written by the client.
fn forwarded_for(headers: &HeaderMap, trusted: &TrustedProxies) -> Option<IpAddr> {
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|hop| hop.trim().parse::<IpAddr>().ok())
        .collect::<Option<_>>()?;
    hops.iter().rev().find(|hop| !trusted.trusts(**hop)).or(hops.first()).copied()
}

fn forwarded_https(headers: &HeaderMap) -> bool {
    let proto = headers.get("x-forwarded-proto").and_then(|value| value.to_str().ok());
    proto
        .and_then(|value| value.split(',').next())
        .is_some_and(|first| first.trim().eq_ignore_ascii_case("https"))
}

impl FromRequestParts<AppState> for Client {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Infallible> {
        Ok(Client::of(&parts.headers, &parts.extensions, &state.trusted_proxies))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderName;

    fn client(peer: &str, headers: &[(&str, &str)], trusted: &str) -> Client {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        let mut extensions = Extensions::new();
        extensions.insert(Peer(SocketAddr::new(peer.parse().unwrap(), 40000)));
        Client::of(&map, &extensions, &TrustedProxies::parse(trusted).unwrap())
    }

    const FORWARDED: [(&str, &str); 2] = [("x-forwarded-for", "203.0.113.7"), ("x-forwarded-proto", "https")];

    #[test]
    fn headers_from_a_trusted_proxy_are_believed() {
        let seen = client("127.0.0.1", &FORWARDED, "127.0.0.0/8");
        assert_eq!(seen, Client { addr: Some("203.0.113.7".parse().unwrap()), https: true });
    }

    #[test]
    fn headers_from_anyone_else_are_ignored() {
        let seen = client("198.51.100.2", &FORWARDED, "127.0.0.0/8");
        assert_eq!(seen, Client { addr: Some("198.51.100.2".parse().unwrap()), https: false });
        assert_eq!(client("127.0.0.1", &FORWARDED, "none").addr, Some("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn a_client_cannot_plant_an_address_before_the_proxys_own() {
        let chain = [("x-forwarded-for", "10.9.9.9, 203.0.113.7"), ("x-forwarded-for", "172.18.0.3")];
        let seen = client("172.18.0.2", &chain, "172.16.0.0/12 ::1");
        assert_eq!(seen.addr, Some("203.0.113.7".parse().unwrap()));
    }

    #[test]
    fn a_garbled_header_falls_back_to_the_peer() {
        let seen = client("127.0.0.1", &[("x-forwarded-for", "not an address")], "127.0.0.1");
        assert_eq!(seen.addr, Some("127.0.0.1".parse().unwrap()));
    }
}
