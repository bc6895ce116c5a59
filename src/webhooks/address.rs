//! Where webhooks may be sent (issue 19, "Safety"): an endpoint is a public
//! `https` address, so a webhook cannot be made to reach the server's own
//! network (server-side request forgery). Checked when an endpoint is
//! saved (its URL) and at every send (every address its name resolves to,
//! by the connector's own resolver: what is checked is what is connected
//! to, so a name that changes its answer between the two cannot slip
//! through: DNS rebinding). `SKUWATCH_WEBHOOK_ALLOW_PRIVATE=true` lifts
//! both rules (a receiver on the same network, tests).

use std::net::{IpAddr, SocketAddr};
use std::sync::LazyLock;

use ipnet::IpNet;
use reqwest::Url;

/// Longest accepted endpoint URL, in bytes.
pub const MAX_URL_BYTES: usize = 2048;

/// Ranges no endpoint may be in: not globally routable unicast. IPv4 from
/// the IANA special-purpose registry (RFC 6890 and its updates), IPv6
/// likewise, and the IPv6 forms that embed an IPv4 address (mapped,
/// compatible, NAT64, 6to4, Teredo), which would reach whatever IPv4
/// address they carry.
static BLOCKED: LazyLock<Vec<IpNet>> = LazyLock::new(|| {
    [
        "0.0.0.0/8",       // "this network"
        "10.0.0.0/8",      // private (RFC 1918)
        "100.64.0.0/10",   // carrier-grade NAT (RFC 6598)
        "127.0.0.0/8",     // loopback
        "169.254.0.0/16",  // link-local (cloud metadata services)
        "172.16.0.0/12",   // private
        "192.0.0.0/24",    // IETF protocol assignments
        "192.0.2.0/24",    // documentation
        "192.88.99.0/24",  // 6to4 relay anycast
        "192.168.0.0/16",  // private
        "198.18.0.0/15",   // benchmarking
        "198.51.100.0/24", // documentation
        "203.0.113.0/24",  // documentation
        "224.0.0.0/4",     // multicast
        "240.0.0.0/4",     // reserved, and broadcast
        "::/128",          // unspecified
        "::1/128",         // loopback
        "::/96",           // IPv4-compatible (deprecated)
        "::ffff:0:0/96",   // IPv4-mapped
        "64:ff9b::/96",    // NAT64
        "64:ff9b:1::/48",  // local-use NAT64
        "100::/64",        // discard-only
        "2001::/32",       // Teredo
        "2001:db8::/32",   // documentation
        "2002::/16",       // 6to4
        "fc00::/7",        // unique-local
        "fe80::/10",       // link-local
        "fec0::/10",       // site-local (deprecated)
        "::ffff:0:0:0/96", // IPv4-translated (SIIT)
        "5f00::/16",       // SRv6 SIDs
        "3fff::/20",       // documentation
        "ff00::/8",        // multicast
    ]
    .iter()
    .map(|net| net.parse().expect("a valid range"))
    .collect()
});

/// Whether `ip` is a public unicast address an endpoint may use.
pub fn is_public(ip: IpAddr) -> bool {
    !BLOCKED.iter().any(|net| net.contains(&ip))
}

/// Why an endpoint URL is refused: the `reason` of a 422 on field `url`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Checks an endpoint URL as saved: absolute, `https` (or `http` with
/// `allow_private`), no credentials or fragment, and a host that is not a
/// loopback name or a non-public address (unless `allow_private`).
/// Names are not resolved here: they are at every send.
pub fn check_url(raw: &str, allow_private: bool) -> Result<Url, Refused> {
    let refuse = |why: &str| Err(Refused(why.into()));
    if raw.len() > MAX_URL_BYTES {
        return refuse("must be at most 2048 bytes");
    }
    let Ok(url) = Url::parse(raw) else {
        return refuse("must be an absolute URL");
    };
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        "http" => return refuse("must use https"),
        _ => return refuse("must be an https URL"),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return refuse("must not carry credentials (put a token in the path)");
    }
    if url.fragment().is_some() {
        return refuse("must not have a fragment");
    }
    if allow_private {
        return match url.host() {
            Some(_) => Ok(url),
            None => refuse("must name a host"),
        };
    }
    match url.host() {
        None => refuse("must name a host"),
        Some(url::Host::Ipv4(ip)) if !is_public(ip.into()) => {
            refuse("must not be a loopback, private, link-local or other non-public address")
        }
        Some(url::Host::Ipv6(ip)) if !is_public(ip.into()) => refuse(
            "must not be a loopback, private, link-local, unique-local, IPv4-mapped or other non-public address",
        ),
        Some(url::Host::Domain(name)) if is_local_name(name) => {
            refuse("must not be a local name")
        }
        Some(_) => Ok(url),
    }
}

/// Names that mean this machine or its local network whatever DNS says.
fn is_local_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.ends_with(".local")
        || name.ends_with(".internal")
        || !name.contains('.')
}

/// The connector's resolver: every address a name resolves to must be
/// public, or the send is refused before any connection is made.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow_private {
                if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
                    return Err(Box::new(Refused(format!(
                        "{host} resolves to {}, which is not a public address",
                        bad.ip()
                    )))
                        as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Checks the host of a URL about to be sent to when it is a numeric
/// address (a resolver never sees those).
pub fn check_numeric_host(url: &Url, allow_private: bool) -> Result<(), Refused> {
    let ip: Option<IpAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(ip.into()),
        Some(url::Host::Ipv6(ip)) => Some(ip.into()),
        _ => None,
    };
    match ip {
        Some(ip) if !allow_private && !is_public(ip) => {
            Err(Refused(format!("{ip} is not a public address")))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_and_non_public_addresses() {
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_refused_and_allowed() {
        for (url, why) in [
            ("http://example.com/hook", "https"),
            ("ftp://example.com/", "https"),
            ("https://127.0.0.1/hook", "non-public"),
            ("https://[::1]/hook", "non-public"),
            ("https://[::ffff:10.0.0.1]/hook", "IPv4-mapped"),
            ("https://10.0.0.1/hook", "non-public"),
            ("https://169.254.169.254/latest/meta-data", "non-public"),
            ("https://100.64.1.1/", "non-public"),
            ("https://[fd12::1]/", "unique-local"),
            ("https://localhost/hook", "local name"),
            ("https://api.localhost/hook", "local name"),
            ("https://intranet/hook", "local name"),
            ("https://user:pw@example.com/", "credentials"),
            ("https://example.com/#x", "fragment"),
            ("not a url", "absolute"),
        ] {
            let refused = check_url(url, false).expect_err(url);
            assert!(refused.0.contains(why), "{url}: {}", refused.0);
        }
        assert!(check_url("https://hooks.example.com/skuwatch?x=1", false).is_ok());
        assert!(check_url("https://93.184.216.34/", false).is_ok());
        // Allowing private targets allows http and local addresses.
        assert!(check_url("http://127.0.0.1:9000/hook", true).is_ok());
        assert!(check_url("https://user:pw@127.0.0.1/", true).is_err());
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_with_a_non_public_address() {
        use reqwest::dns::Resolve;
        let guard = GuardedResolver {
            allow_private: false,
        };
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let error = guard.resolve(name).await.err().expect("refused");
        assert!(
            error.to_string().contains("not a public address"),
            "{error}"
        );
        let open = GuardedResolver {
            allow_private: true,
        };
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        assert!(open.resolve(name).await.is_ok());
    }
}
