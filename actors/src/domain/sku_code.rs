//! SKU codes: the merchant's own product identifiers.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A validated SKU code (API.md, Conventions): 1-64 characters, no
/// whitespace, no control characters, no `/`; case-sensitive (`M` and `m`
/// are different SKUs in the Online Retail data).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SkuCode(String);

/// Why a string is not a SKU code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkuCodeError {
    #[error("must be 1-64 characters long")]
    Length,
    #[error("must not contain whitespace, control or invisible characters, or '/'")]
    ForbiddenCharacter,
    #[error("must not be '.' or '..'")]
    DotSegment,
}

/// Zero-width and other invisible format characters: two codes that look
/// the same must be the same code.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{00AD}')
}

impl SkuCode {
    /// Maximum length in characters (not bytes).
    pub const MAX_CHARS: usize = 64;

    /// The only way in: checks every rule of API.md.
    pub fn parse(raw: &str) -> Result<Self, SkuCodeError> {
        let chars = raw.chars().count();
        if chars == 0 || chars > Self::MAX_CHARS {
            return Err(SkuCodeError::Length);
        }
        if raw
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/' || is_invisible(c))
        {
            return Err(SkuCodeError::ForbiddenCharacter);
        }
        // Path segments that URL normalisation would remove.
        if raw == "." || raw == ".." {
            return Err(SkuCodeError::DotSegment);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SkuCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SkuCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        SkuCode::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retail_code_with_a_variant_suffix_is_accepted() {
        assert_eq!(SkuCode::parse("85123A").unwrap().as_str(), "85123A");
    }

    #[test]
    fn codes_are_case_sensitive() {
        assert_ne!(SkuCode::parse("M").unwrap(), SkuCode::parse("m").unwrap());
    }

    #[test]
    fn an_empty_code_is_rejected() {
        assert_eq!(SkuCode::parse(""), Err(SkuCodeError::Length));
    }

    #[test]
    fn a_code_of_65_characters_is_rejected_but_64_multibyte_characters_are_fine() {
        assert_eq!(SkuCode::parse(&"a".repeat(65)), Err(SkuCodeError::Length));
        assert!(SkuCode::parse(&"é".repeat(64)).is_ok());
    }

    #[test]
    fn whitespace_slash_and_control_characters_are_rejected() {
        for bad in [
            "BANK CHARGES",
            "a/b",
            "a\tb",
            "a\u{0}b",
            " a",
            "a\n",
            "a\u{200B}b",
        ] {
            assert_eq!(
                SkuCode::parse(bad),
                Err(SkuCodeError::ForbiddenCharacter),
                "{bad:?}"
            );
        }
    }
}
