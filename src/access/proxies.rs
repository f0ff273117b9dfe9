//! The proxies in front of exai whose forwarding headers are believed
//! (`EXAI_TRUSTED_PROXIES`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Networks whose forwarding headers are believed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl Default for TrustedProxies {
    /// Loopback: a Caddy on the same machine.
    fn default() -> Self {
        Self(vec![
            IpNet::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8).expect("valid prefix"),
            IpNet::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 128).expect("valid prefix"),
        ])
    }
}

impl TrustedProxies {
    /// Reads addresses and CIDR ranges separated by commas or whitespace
    /// (`127.0.0.1, 172.16.0.0/12`); `none` trusts nobody.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim() == "none" {
            return Ok(Self(Vec::new()));
        }
        text.split([',', ' ', '\t', '\n'])
            .filter(|item| !item.is_empty())
            .map(|item| {
                item.parse::<IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{item:?} is not an address or a CIDR range"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_mapped_peers_match_ipv4_ranges() {
        let proxies = TrustedProxies::default();
        assert!(proxies.trusts("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!proxies.trusts("::ffff:10.0.0.1".parse().unwrap()));
        assert!(TrustedProxies::parse("127.0.0.1, nonsense").is_err());
    }
}
