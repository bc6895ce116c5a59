//! The client's address behind trusted proxies: `Forwarded` (RFC 7239)
//! or `X-Forwarded-For`, honoured only when the peer is a trusted proxy
//! (`SKUWATCH_TRUSTED_PROXIES`).
//!
//! The chain is walked from the right (the hop nearest to this server):
//! each trusted hop vouches for the one on its left; the first hop that is
//! not trusted is the client. A client can prepend anything to these
//! headers, so entries left of the first untrusted hop are never used.
//!
//! Deliberate leniencies (README "Behind a proxy"): a bare IPv6 address
//! without brackets and `X-Forwarded-For` entries with a port are accepted;
//! a hop that is `unknown`, obfuscated (`_hidden`) or unparseable ends the
//! walk at the proxy that reported it (its address is then the client's).
//!
//! Only the header the proxy writes is read (`SKUWATCH_FORWARDED_HEADER`):
//! a proxy that sets `X-Forwarded-For` passes a client's own `Forwarded`
//! through untouched, so reading both would let a client choose its
//! address, and with it whose login throttle it fills.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Which forwarding header the trusted proxies write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For` (nginx, HAProxy, most cloud load balancers).
    #[default]
    #[value(name = "x-forwarded-for")]
    XForwardedFor,
    /// `Forwarded` (RFC 7239).
    #[value(name = "forwarded")]
    Forwarded,
}

/// Resolves client addresses from the peer and the forwarding header.
#[derive(Debug, Clone, Default)]
pub struct ClientAddr {
    trusted: Vec<IpNet>,
    header: ForwardedHeader,
}

impl ClientAddr {
    pub fn new(trusted: Vec<IpNet>, header: ForwardedHeader) -> Self {
        Self { trusted, header }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: `peer` unless `peer` is a trusted proxy and a
    /// forwarding header names someone further out.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let chain = match self.header {
            ForwardedHeader::Forwarded => forwarded_chain(headers).unwrap_or_default(),
            ForwardedHeader::XForwardedFor => x_forwarded_for_chain(headers),
        };
        let mut client = peer;
        for hop in chain.into_iter().rev() {
            if !self.trusts(client) {
                break;
            }
            match hop {
                Some(ip) => client = ip.to_canonical(),
                None => break,
            }
        }
        client
    }
}

/// The `for=` node of each `Forwarded` element, in order (`None`: absent,
/// `unknown`, obfuscated or malformed). `None` when there is no
/// `Forwarded` header; a header that does not parse yields one `None`
/// hop, so the walk stops at the proxy.
fn forwarded_chain(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let values: Vec<_> = headers.get_all("forwarded").iter().collect();
    if values.is_empty() {
        return None;
    }
    let mut chain = Vec::new();
    for value in values {
        let Ok(text) = value.to_str() else {
            chain.push(None);
            continue;
        };
        match parse_forwarded(text) {
            Some(elements) => chain.extend(elements.into_iter().map(|pairs| {
                pairs
                    .into_iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case("for"))
                    .and_then(|(_, node)| parse_node(&node))
            })),
            None => chain.push(None),
        }
    }
    Some(chain)
}

fn x_forwarded_for_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|value| {
            let text = value.to_str().unwrap_or("\u{0}");
            text.split(',')
                .map(|hop| parse_node(hop.trim()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// RFC 7239 §4: `Forwarded = 1#forwarded-element`, `forwarded-element =
/// [ forwarded-pair ] *( ";" [ forwarded-pair ] )`, `forwarded-pair = token
/// "=" value`, `value = token / quoted-string` (RFC 9110 §5.6.2, §5.6.4).
/// Returns each element's pairs with quoted values unescaped; `None` for
/// text that does not follow the grammar.
pub fn parse_forwarded(text: &str) -> Option<Vec<Vec<(String, String)>>> {
    let mut elements = vec![Vec::new()];
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
        match chars.peek() {
            None => break,
            Some(',') => {
                chars.next();
                elements.push(Vec::new());
                continue;
            }
            Some(';') => {
                chars.next();
                continue;
            }
            Some(_) => {}
        }
        let mut name = String::new();
        while let Some(c) = chars.next_if(|c| is_tchar(*c)) {
            name.push(c);
        }
        if name.is_empty() || chars.next() != Some('=') {
            return None;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| is_tchar(*c)) {
                value.push(c);
            }
            if value.is_empty() {
                return None;
            }
        }
        elements.last_mut()?.push((name, value));
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
        if !matches!(chars.peek(), None | Some(';' | ',')) {
            return None;
        }
    }
    // `1#` allows empty list elements (RFC 9110 §5.6.1.2); drop them.
    elements.retain(|pairs| !pairs.is_empty());
    Some(elements)
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// RFC 7239 §6 `node = nodename [ ":" node-port ]`, with `nodename` an
/// IPv4 address or a bracketed IPv6 address; `unknown` and obfuscated
/// names give `None`.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim();
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = node.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || valid_port(after.strip_prefix(':')?)) {
            return None;
        }
        return inside.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let (host, port) = node.split_once(':')?;
    if !valid_port(port) {
        return None;
    }
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// RFC 7239 §6 `node-port = port / obfport`.
fn valid_port(port: &str) -> bool {
    !port.is_empty()
        && (port.bytes().all(|b| b.is_ascii_digit()) && port.len() <= 5
            || port.starts_with('_')
                && port[1..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn resolver_for(header: ForwardedHeader) -> ClientAddr {
        ClientAddr::new(
            vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            header,
        )
    }

    fn resolver() -> ClientAddr {
        resolver_for(ForwardedHeader::XForwardedFor)
    }

    #[test]
    fn the_rfc_7239_examples_parse() {
        // RFC 7239 §4 and §7.1.
        for (text, expected) in [
            (r#"for="_gazonk""#, None),
            (
                r#"For="[2001:db8:cafe::17]:4711""#,
                Some("2001:db8:cafe::17"),
            ),
            (
                "for=192.0.2.60;proto=http;by=203.0.113.43",
                Some("192.0.2.60"),
            ),
            ("for=192.0.2.43, for=198.51.100.17", Some("198.51.100.17")),
            (r#"for="192.0.2.43:47011""#, Some("192.0.2.43")),
            ("for=unknown", None),
            (r#"for="[2001:db8::1]""#, Some("2001:db8::1")),
        ] {
            let elements = parse_forwarded(text).unwrap_or_else(|| panic!("{text}"));
            let last = elements.last().unwrap();
            let node = last.iter().find(|(n, _)| n.eq_ignore_ascii_case("for"));
            let ip = node.and_then(|(_, v)| parse_node(v));
            assert_eq!(ip, expected.map(|e| e.parse().unwrap()), "{text}");
        }
    }

    #[test]
    fn malformed_forwarded_values_are_refused() {
        for text in [
            "for",
            "for=",
            r#"for="unterminated"#,
            "for=a b",
            "=x",
            "for=[::1]",
        ] {
            assert!(parse_forwarded(text).is_none(), "{text}");
        }
    }

    #[test]
    fn headers_are_ignored_from_an_untrusted_peer() {
        let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=1.2.3.4")]);
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(resolver().resolve(peer, &h), peer);
        assert_eq!(
            resolver_for(ForwardedHeader::Forwarded).resolve(peer, &h),
            peer
        );
    }

    #[test]
    fn the_first_untrusted_hop_from_the_right_is_the_client() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        // The client wrote "6.6.6.6" itself; 10.0.0.2 is a trusted hop.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.2")]);
        assert_eq!(
            resolver().resolve(peer, &h),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        let forwarded = resolver_for(ForwardedHeader::Forwarded);
        let h = headers(&[
            ("forwarded", r#"for=6.6.6.6, for="[2001:db8::9]:443""#),
            ("forwarded", "for=10.0.0.3;proto=https"),
        ]);
        assert_eq!(
            forwarded.resolve(peer, &h),
            "2001:db8::9".parse::<IpAddr>().unwrap()
        );
        // Only the configured header counts: the other one is the client's.
        let h = headers(&[
            ("forwarded", "for=198.51.100.8"),
            ("x-forwarded-for", "198.51.100.9"),
        ]);
        assert_eq!(
            forwarded.resolve(peer, &h),
            "198.51.100.8".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            resolver().resolve(peer, &h),
            "198.51.100.9".parse::<IpAddr>().unwrap()
        );
        let h = headers(&[("forwarded", "for=198.51.100.8")]);
        assert_eq!(resolver().resolve(peer, &h), peer);
        // An obfuscated hop stops at the proxy that reported it.
        let h = headers(&[("forwarded", "for=_hidden")]);
        assert_eq!(forwarded.resolve(peer, &h), peer);
        // IPv4-mapped IPv6 peers match IPv4 CIDRs.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "198.51.100.10")]);
        assert_eq!(
            resolver().resolve(mapped, &h),
            "198.51.100.10".parse::<IpAddr>().unwrap()
        );
    }
}
