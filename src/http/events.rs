//! The global change feed and per-SKU history.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use skuwatch_actors::domain::{Field, Money};
use skuwatch_actors::store::HistoryQuery;

use super::error::ApiError;
use super::extract::{query_time, ApiQuery, Round, SkuPath};
use super::validate::Checks;
use super::AppState;
use crate::auth::Reader;
use crate::cursor::{Cursor, Refused};

/// Query of `GET /api/v1/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsParams {
    /// Events after this `event_id` (default 0). Beyond the newest event:
    /// 409 `cursor_ahead`.
    #[param(minimum = 0, nullable = false)]
    after: Option<i64>,
    /// Instead of `after`: a `next_cursor` from an earlier page (opaque; it
    /// names the exact event). 409 `cursor_ahead` beyond the newest event,
    /// 409 `cursor_unknown` when this server has that event id as another
    /// event (after a restore or a failover): reset and take a snapshot.
    #[param(nullable = false)]
    cursor: Option<String>,
    /// 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000, nullable = false)]
    limit: Option<i64>,
}

/// `GET /api/v1/events?after=N&limit=M` (or `cursor=C` instead of `after`)
/// -> `{"events": [...], "next_after": n, "next_cursor": c}`.
/// Gap-free: ids become visible in id order. A position the server does not
/// have is refused rather than answered with empty pages forever (issue 13;
/// API.md v1 additions, `cursor_ahead` and `cursor_unknown`).
#[utoipa::path(
    get, path = "/api/v1/events", tag = "events", params(EventsParams), security(("bearer" = [])),
    responses(
        (status = 200, description = "Events after `after` (or `cursor`), oldest first", body = super::openapi::EventPage),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 409, response = super::openapi::CursorConflict),
        (status = 422, response = super::openapi::Invalid),
        (status = 503, response = super::openapi::Unavailable),
    )
)]
pub async fn feed(
    State(app): State<AppState>,
    _: Reader,
    ApiQuery(params): ApiQuery<EventsParams>,
) -> Result<Response, ApiError> {
    let mut checks = Checks::default();
    let limit = checks.page_limit(params.limit);
    if params.after.is_some_and(|after| after < 0) {
        checks.fail("after", "must be 0 or more");
    }
    let cursor = match (&params.cursor, params.after) {
        (Some(_), Some(_)) => {
            checks.fail("cursor", "give cursor or after, not both");
            None
        }
        (Some(text), None) => match Cursor::parse(text) {
            Ok(cursor) => Some(cursor),
            Err(reason) => {
                checks.fail("cursor", reason);
                None
            }
        },
        (None, _) => None,
    };
    checks.finish()?;
    let store = app.store.as_ref();
    let after = match &cursor {
        Some(cursor) => {
            cursor.verify(store).await.map_err(refused)?;
            cursor.event_id
        }
        None => params.after.unwrap_or(0),
    };
    let changes = store.events_after(after, limit, None).await?;
    app.registry.offer(changes.iter().map(|c| &c.sku));
    let next_cursor = match (changes.last(), cursor) {
        (Some(last), _) => Some(Cursor::of(&last.event)),
        (None, Some(cursor)) => Some(cursor),
        // An empty page at a bare id: the id must exist to go on from.
        (None, None) => {
            crate::cursor::check_position(store, after)
                .await
                .map_err(refused)?;
            crate::cursor::at(store, after).await?
        }
    };
    let next_after = changes.last().map_or(after, |c| c.event.event_id);
    let events: Vec<_> = changes.into_iter().map(|c| c.event).collect();
    Ok(Json(json!({
        "events": events,
        "next_after": next_after,
        "next_cursor": next_cursor.map(|c| c.to_string()),
    }))
    .into_response())
}

/// The problem for a position this server cannot resume from.
fn refused(refused: Refused) -> ApiError {
    match refused {
        Refused::Ahead { newest_event_id } => {
            crate::metrics::cursor_refused("cursor_ahead", "events");
            ApiError::cursor_ahead(newest_event_id)
        }
        Refused::Unknown { newest_event_id } => {
            crate::metrics::cursor_refused("cursor_unknown", "events");
            ApiError::cursor_unknown(newest_event_id)
        }
        Refused::Store(error) => error.into(),
    }
}

/// Query of `GET /api/v1/skus/{sku}/history`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// `price` or `stock` (default).
    #[param(pattern = "^(price|stock)$", nullable = false)]
    field: Option<String>,
    /// RFC 3339 date-time with `Z` or an offset (normalised to UTC), inclusive;
    /// not after `to`. Encode `+` as `%2B` in a query.
    #[param(format = DateTime, nullable = false)]
    from: Option<String>,
    /// RFC 3339 date-time, inclusive.
    #[param(format = DateTime, nullable = false)]
    to: Option<String>,
    /// Most points, 1-10000 (default 1000); longer ranges are downsampled
    /// keeping each bucket's minimum and maximum.
    #[param(minimum = 1, maximum = 10000, nullable = false)]
    limit: Option<i64>,
}

/// `GET /api/v1/skus/{sku}/history?field=price|stock&from=&to=&limit=`:
/// points oldest first, the value right after each change.
#[utoipa::path(
    get, path = "/api/v1/skus/{sku}/history", tag = "events", params(super::skus::SkuParam, HistoryParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Points oldest first", body = super::openapi::History),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 404, response = super::openapi::NotFound),
        (status = 422, response = super::openapi::Invalid),
        (status = 503, response = super::openapi::Unavailable),
    )
)]
pub async fn history(
    State(app): State<AppState>,
    _: Reader,
    SkuPath(sku): SkuPath,
    ApiQuery(params): ApiQuery<HistoryParams>,
) -> Result<Response, ApiError> {
    let mut checks = Checks::default();
    let field = match params.field.as_deref().unwrap_or("stock") {
        "stock" => Some(Field::Stock),
        "price" => Some(Field::Price),
        _ => {
            checks.fail("field", "must be price or stock");
            None
        }
    };
    let mut time = |name: &str, raw: Option<&str>, round: Round| {
        raw.and_then(|raw| {
            let parsed = query_time(raw, round);
            if parsed.is_none() {
                checks.fail(
                    name,
                    "must be an RFC 3339 time with an offset, e.g. 2026-11-29T10:00:00Z \
                     or 2026-11-29T12:00:00%2B02:00 (+ encoded in a query)",
                );
            }
            parsed
        })
    };
    // Both bounds are inclusive; a finer time than the stored microsecond
    // rounds inwards.
    let from = time("from", params.from.as_deref(), Round::Up);
    let to = time("to", params.to.as_deref(), Round::Down);
    if let (Some(from), Some(to)) = (from, to) {
        if from > to {
            checks.fail("from", "must not be after to");
        }
    }
    let limit = params.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        checks.fail("limit", "must be 1-10000");
    }
    checks.finish()?;
    let Some(state) = app.registry.get(&sku).await? else {
        return Err(ApiError::not_found(format!("SKU {sku} does not exist")));
    };
    let field = field.unwrap_or(Field::Stock);
    let points = app
        .store
        .history(&HistoryQuery {
            sku,
            field,
            from,
            to,
            limit,
        })
        .await?;
    let points: Vec<_> = points
        .into_iter()
        .map(|p| {
            let value = match field {
                Field::Price => json!(Money {
                    minor: p.value,
                    currency: state.currency
                }
                .to_decimal_string()),
                _ => json!(p.value),
            };
            json!({
                "at": p.at,
                "value": value,
                "version": p.version,
                "event_id": p.event_id,
                "reason": p.reason,
            })
        })
        .collect();
    Ok(Json(json!({ "points": points })).into_response())
}
