//! Feed cursors (API.md, v1 additions: "Cursors"): a position in the event
//! feed that names the exact event a client last saw, so a server restored
//! from a backup (or failed over to a lagging replica) can tell that the
//! client's position is not one of its own, even after new writes have
//! reused the event ids.
//!
//! Form: `{event_id}.{fingerprint}`, the fingerprint being 16 lowercase hex
//! digits: the first 8 bytes of SHA-256 over the event's id, SKU, version and
//! commit time (microseconds). SKU and version alone name an event (one
//! event per version), but a restore that rewinds a SKU can give the same
//! version to another change; the commit time tells those apart. Clients
//! treat the string as opaque. Position 0 (before the first event) is
//! `0.0000000000000000`.

use sha2::{Digest, Sha256};
use skuwatch_actors::domain::Event;
use skuwatch_actors::store::{SkuStore, StoreError};

const START_FINGERPRINT: &str = "0000000000000000";

/// A parsed cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The event the client last saw (0: none).
    pub event_id: i64,
    fingerprint: String,
}

/// Why a cursor or position cannot be resumed from.
#[derive(Debug)]
pub enum Refused {
    /// Beyond the newest event (API.md `cursor_ahead`).
    Ahead {
        newest_event_id: i64,
    },
    /// Names an event this server has, but not as the client saw it
    /// (API.md `cursor_unknown`).
    Unknown {
        newest_event_id: i64,
    },
    Store(StoreError),
}

impl From<StoreError> for Refused {
    fn from(error: StoreError) -> Self {
        Refused::Store(error)
    }
}

impl Cursor {
    /// The cursor of `event`.
    pub fn of(event: &Event) -> Self {
        Self {
            event_id: event.event_id,
            fingerprint: fingerprint(event),
        }
    }

    /// The position before the first event.
    pub fn start() -> Self {
        Self {
            event_id: 0,
            fingerprint: START_FINGERPRINT.to_owned(),
        }
    }

    /// Parses the text form; `Err` says what is wrong, for a 422.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        const WRONG: &str = "not a cursor this server issued (take next_cursor from a page)";
        let (id, fingerprint) = text.split_once('.').ok_or(WRONG)?;
        // Digits only: no sign, no spaces (`i64::from_str` takes a `+`).
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(WRONG);
        }
        let event_id: i64 = id.parse().map_err(|_| WRONG)?;
        let hex = |s: &str| {
            s.len() == 16
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !hex(fingerprint) {
            return Err(WRONG);
        }
        if event_id == 0 && fingerprint != START_FINGERPRINT {
            return Err(WRONG);
        }
        Ok(Self {
            event_id,
            fingerprint: fingerprint.to_owned(),
        })
    }

    /// Checks that the store has this cursor's event as the client saw it.
    pub async fn verify(&self, store: &dyn SkuStore) -> Result<(), Refused> {
        if self.event_id == 0 {
            return Ok(());
        }
        let found = store.events_after(self.event_id - 1, 1, None).await?;
        match found.first() {
            Some(change) if change.event.event_id == self.event_id => {
                if fingerprint(&change.event) == self.fingerprint {
                    Ok(())
                } else {
                    Err(Refused::Unknown {
                        newest_event_id: store.last_event_id().await?,
                    })
                }
            }
            _ => {
                let newest_event_id = store.last_event_id().await?;
                if self.event_id > newest_event_id {
                    Err(Refused::Ahead { newest_event_id })
                } else {
                    // Ids are gap-free, so this is a store that lost events.
                    Err(Refused::Unknown { newest_event_id })
                }
            }
        }
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.event_id, self.fingerprint)
    }
}

/// Checks a bare event id: refused when beyond the newest event. (An id
/// cannot tell a rewound feed whose new events passed it; a cursor can.)
pub async fn check_position(store: &dyn SkuStore, after: i64) -> Result<(), Refused> {
    if after == 0 {
        return Ok(());
    }
    let newest_event_id = store.last_event_id().await?;
    if after > newest_event_id {
        return Err(Refused::Ahead { newest_event_id });
    }
    Ok(())
}

/// The cursor of the event with id `event_id` (0: the start), or `None`
/// when the store has no such event.
pub async fn at(store: &dyn SkuStore, event_id: i64) -> Result<Option<Cursor>, StoreError> {
    if event_id == 0 {
        return Ok(Some(Cursor::start()));
    }
    let found = store.events_after(event_id - 1, 1, None).await?;
    Ok(found
        .first()
        .filter(|c| c.event.event_id == event_id)
        .map(|c| Cursor::of(&c.event)))
}

fn fingerprint(event: &Event) -> String {
    let mut hash = Sha256::new();
    hash.update(event.event_id.to_be_bytes());
    hash.update(event.sku.as_str().as_bytes());
    hash.update([0]);
    hash.update(event.version.to_be_bytes());
    hash.update(event.at.0.to_be_bytes());
    hex::encode(&hash.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::Cursor;

    #[test]
    fn only_the_issued_form_parses() {
        assert_eq!(Cursor::parse("0.0000000000000000"), Ok(Cursor::start()));
        assert!(Cursor::parse("12.0123456789abcdef").is_ok());
        for bad in [
            "",
            "12",
            "12.",
            ".0123456789abcdef",
            "+12.0123456789abcdef",
            "-1.0123456789abcdef",
            "12.0123456789ABCDEF",
            "12.0123456789abcde",
            "0.0123456789abcdef",
            "99999999999999999999.0123456789abcdef",
        ] {
            assert!(Cursor::parse(bad).is_err(), "{bad}");
        }
    }
}
