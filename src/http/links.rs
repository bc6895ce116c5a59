//! URLs the server (and its own clients: `skuwatch replay`, `skuwatch
//! import`) write: the one place where a SKU code or an opaque cursor becomes
//! part of a URL.
//!
//! RFC 3986 §2.3: the unreserved characters (`ALPHA / DIGIT / "-" / "." /
//! "_" / "~"`) are never percent-encoded, since a URI that encodes them is
//! a different string for every client that compares URIs (caches, `Location`
//! checks, logs). Every other byte of the UTF-8 text is encoded: that covers
//! what a path segment or a query value may not hold (`/`, `?`, `#`, `%`,
//! space, non-ASCII) and also the sub-delimiters (`+`, `&`, `=`, `;`, ...),
//! which RFC 3986 §3.3 allows in a segment but which proxies and form
//! decoders read differently (`+` as a space in a query).

use std::fmt;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use skuwatch_actors::domain::SkuCode;

/// Everything but the unreserved characters of RFC 3986 §2.3.
pub const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `text` percent-encoded for a path segment or a query value (see
/// [`COMPONENT`]); `Display`, so it formats without an allocation of its own.
pub fn component(text: &str) -> impl fmt::Display + '_ {
    utf8_percent_encode(text, COMPONENT)
}

/// The path of a SKU: `/api/v1/skus/{sku}` (the `Location` of a created
/// SKU, API.md SKUs), with the code as one encoded segment.
pub fn sku_path(sku: &SkuCode) -> String {
    format!("/api/v1/skus/{}", component(sku.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(text: &str) -> String {
        percent_encoding::percent_decode_str(text)
            .decode_utf8()
            .expect("UTF-8")
            .into_owned()
    }

    #[test]
    fn unreserved_characters_stay_as_they_are() {
        let code = SkuCode::parse("MUG-01.v2_blue~x").expect("code");
        assert_eq!(sku_path(&code), "/api/v1/skus/MUG-01.v2_blue~x");
    }

    #[test]
    fn everything_else_is_encoded_and_decodes_back() {
        for (raw, encoded) in [
            ("50%", "50%25"),
            ("A?B", "A%3FB"),
            ("A#1", "A%231"),
            ("A+B", "A%2BB"),
            ("A&B=C;D", "A%26B%3DC%3BD"),
            ("ÉTÉ", "%C3%89T%C3%89"),
            ("杯子", "%E6%9D%AF%E5%AD%90"),
            ("a:b@c", "a%3Ab%40c"),
            ("...", "..."),
        ] {
            let code = SkuCode::parse(raw).expect("code");
            let path = sku_path(&code);
            assert_eq!(path, format!("/api/v1/skus/{encoded}"), "{raw}");
            let segment = path.rsplit('/').next().expect("segment");
            assert_eq!(decode(segment), raw);
            // A header value and a URL: visible ASCII only.
            assert!(path.bytes().all(|b| b.is_ascii_graphic()), "{path}");
        }
    }

    #[test]
    fn a_query_value_keeps_its_plus_and_ampersand() {
        assert_eq!(component("a+b&c=d e").to_string(), "a%2Bb%26c%3Dd%20e");
    }
}
