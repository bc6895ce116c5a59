//! One attempt of one delivery: render the frozen body in the endpoint's
//! format, sign it, POST it, and say what came of it.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skuwatch_actors::domain::{Micros, WebhookFormat, DIGEST_TYPE, TEST_TYPE};
use skuwatch_actors::store::{AttemptResult, Claimed};

use super::address::{check_numeric_host, GuardedResolver, Refused};
use super::secret::{signature, Sealer};
use super::WebhookSettings;
use crate::http::links::component;

/// Most bytes of a response body read (and of it, the start kept in
/// `last_error`): a receiver cannot make us read or store more.
const MAX_RESPONSE_BYTES: usize = 4096;
/// Most characters of a response body kept in `last_error`.
const ERROR_EXCERPT_CHARS: usize = 200;
/// Lines of a digest a Slack message lists before "and N more".
const SLACK_DIGEST_LINES: usize = 10;

/// The HTTP client of the workers: no proxy from the environment (a
/// `HTTPS_PROXY` would otherwise see, and could redirect, every message),
/// no redirects (a 3xx is a failed attempt: a redirect could point
/// anywhere), the guarded resolver, and the attempt timeout.
pub fn client(settings: &WebhookSettings) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(std::sync::Arc::new(GuardedResolver {
            allow_private: settings.allow_private,
        }))
        .https_only(!settings.allow_private)
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("skuwatch-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a client with these settings builds")
}

/// What an attempt came to, before the retry schedule is applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status_code: Option<i64>,
    /// `None`: delivered (a 2xx).
    pub error: Option<String>,
    /// The metric's `result` when it failed: `refused`, `gone` or a plain
    /// failure (`None`).
    pub refused: bool,
    pub gone: bool,
}

/// Sends `claimed` once.
pub async fn attempt(
    client: &reqwest::Client,
    sealer: &Sealer,
    settings: &WebhookSettings,
    claimed: &Claimed,
) -> Outcome {
    let failed = |error: String| Outcome {
        status_code: None,
        error: Some(error),
        refused: false,
        gone: false,
    };
    let url = match reqwest::Url::parse(&claimed.url) {
        Ok(url) => url,
        Err(_) => return failed("the endpoint URL does not parse".into()),
    };
    if let Err(Refused(why)) = check_numeric_host(&url, settings.allow_private) {
        return Outcome {
            refused: true,
            ..failed(format!("refused: {why}"))
        };
    }
    let mut secrets = match sealer.open(&claimed.endpoint_id, &claimed.secrets.current) {
        Ok(secret) => vec![secret],
        Err(unreadable) => return failed(unreadable.to_string()),
    };
    let now = Micros::now();
    if let Some((previous, until)) = &claimed.secrets.previous {
        // A secret that no longer opens only loses the old signature.
        if *until > now {
            if let Ok(previous) = sealer.open(&claimed.endpoint_id, previous) {
                secrets.push(previous);
            }
        }
    }
    let body = match render(claimed, settings.public_url.as_deref()) {
        Ok(body) => body,
        Err(error) => return failed(error),
    };
    let timestamp = now.0 / 1_000_000;
    let signed = match signature(&secrets, &claimed.message_id, timestamp, body.as_bytes()) {
        Ok(signed) => signed,
        Err(error) => return failed(format!("cannot sign: {error}")),
    };
    let started = Instant::now();
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &claimed.message_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signed)
        .body(body)
        .send()
        .await;
    let outcome = match sent {
        Ok(response) => answered(response).await,
        Err(error) => match refused_by_resolver(&error) {
            Some(why) => Outcome {
                refused: true,
                ..failed(format!("refused: {why}"))
            },
            None => failed(describe(&error)),
        },
    };
    metrics::histogram!(crate::metrics::WEBHOOK_ATTEMPT_DURATION)
        .record(started.elapsed().as_secs_f64());
    outcome
}

/// A receiver's answer: 2xx delivered, 410 gone, anything else failed with
/// the start of its body.
async fn answered(mut response: reqwest::Response) -> Outcome {
    let status = response.status();
    let mut body = Vec::new();
    // Read at most MAX_RESPONSE_BYTES, then stop (the connection is
    // dropped rather than drained).
    while body.len() < MAX_RESPONSE_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(MAX_RESPONSE_BYTES);
    let code = i64::from(status.as_u16());
    if status.is_success() {
        return Outcome {
            status_code: Some(code),
            error: None,
            refused: false,
            gone: false,
        };
    }
    let excerpt: String = String::from_utf8_lossy(&body)
        .chars()
        .filter(|c| !c.is_control())
        .take(ERROR_EXCERPT_CHARS)
        .collect();
    let mut error = format!("HTTP {code}");
    if !excerpt.trim().is_empty() {
        error.push_str(": ");
        error.push_str(excerpt.trim());
    }
    Outcome {
        status_code: Some(code),
        error: Some(error),
        refused: false,
        gone: status == reqwest::StatusCode::GONE,
    }
}

/// The reason when the guarded resolver refused the name.
fn refused_by_resolver(error: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(Refused(why)) = e.downcast_ref::<Refused>() {
            return Some(why.clone());
        }
        source = e.source();
    }
    None
}

/// A transport error in a line: what failed, without the URL (which may
/// carry a token in its path).
fn describe(error: &reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_redirect() {
        "redirected"
    } else {
        "request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        detail = e.to_string();
        source = e.source();
    }
    if detail.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {detail}")
    }
}

/// The bytes sent for `claimed`: the frozen body itself (`standard`), or a
/// Slack message made from it (`slack`).
pub fn render(claimed: &Claimed, public_url: Option<&str>) -> Result<String, String> {
    match claimed.format {
        WebhookFormat::Standard => Ok(claimed.body.clone()),
        WebhookFormat::Slack => {
            let body: Value = serde_json::from_str(&claimed.body)
                .map_err(|_| "the stored body is not JSON".to_owned())?;
            Ok(slack(&body, public_url).to_string())
        }
    }
}

/// A Slack incoming-webhook message (`text` for notifications, one
/// `mrkdwn` section for the message itself).
pub fn slack(body: &Value, public_url: Option<&str>) -> Value {
    let kind = body["type"].as_str().unwrap_or_default();
    let data = &body["data"];
    let text = match kind {
        DIGEST_TYPE => {
            let messages = data["messages"].as_array().cloned().unwrap_or_default();
            let mut lines = vec![format!(
                ":bell: *{} notifications* in a burst (rate cap reached)",
                messages.len()
            )];
            for message in messages.iter().take(SLACK_DIGEST_LINES) {
                lines.push(format!("• {}", one_line(message, public_url)));
            }
            if messages.len() > SLACK_DIGEST_LINES {
                lines.push(format!(
                    "… and {} more{}",
                    messages.len() - SLACK_DIGEST_LINES,
                    public_url
                        .map(|base| format!(" (<{}/|open skuwatch>)", base.trim_end_matches('/')))
                        .unwrap_or_default()
                ));
            }
            lines.join("\n")
        }
        TEST_TYPE => ":white_check_mark: skuwatch test message: this endpoint receives skuwatch notifications.".to_owned(),
        _ => {
            let mut message = json!({"type": kind});
            if let Some(data) = data.as_object() {
                for (name, value) in data {
                    message[name] = value.clone();
                }
            }
            one_line(&message, public_url)
        }
    };
    json!({
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    })
}

/// One message as a line: what happened to which SKU, the values, a link.
fn one_line(message: &Value, public_url: Option<&str>) -> String {
    let kind = message["type"].as_str().unwrap_or_default();
    let (sku, line) = if let Some(alert) = message.get("alert").filter(|a| a.is_object()) {
        let sku = alert["sku"].as_str().unwrap_or_default().to_owned();
        let verb = match kind {
            "alert.raised" => ":rotating_light: raised",
            "alert.acknowledged" => ":eyes: acknowledged",
            "alert.resolved" => ":white_check_mark: resolved",
            _ => kind,
        };
        let line = format!(
            "{verb} *{}* on `{}`: {} (value {}, threshold {})",
            alert["kind"].as_str().unwrap_or_default(),
            escape(&sku),
            escape(alert["message"].as_str().unwrap_or_default()),
            alert["value"],
            alert["threshold"],
        );
        (sku, line)
    } else {
        let event = &message["event"];
        let sku = event["sku"].as_str().unwrap_or_default().to_owned();
        // Old and new are whatever a writer set (a name may hold
        // `<!channel>` or a link): escaped like the rest.
        let line = format!(
            ":package: `{}` {} {} -> {}",
            escape(&sku),
            escape(event["field"].as_str().unwrap_or_default()),
            escape(&event["old"].to_string()),
            escape(&event["new"].to_string()),
        );
        (sku, line)
    };
    match public_url {
        Some(base) if !sku.is_empty() => format!(
            "{line} <{}/skus/{}|open>",
            base.trim_end_matches('/'),
            component(&sku)
        ),
        _ => line,
    }
}

/// Slack's three control characters in `mrkdwn` text.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The attempt's record: the outcome, and when to try again per the retry
/// schedule (with ±20 % jitter, so the retries of a burst spread out);
/// no retry after the schedule's last wait, after a 410, or for a test.
pub fn result(
    claimed: &Claimed,
    outcome: &Outcome,
    settings: &WebhookSettings,
    at: Micros,
) -> AttemptResult {
    let retry_at = match &outcome.error {
        Some(_) if !outcome.gone && claimed.kind != TEST_TYPE => settings
            .retry_schedule
            .get((claimed.attempt - 1).max(0) as usize)
            .map(|wait| Micros(at.0 + jittered(*wait).as_micros() as i64)),
        _ => None,
    };
    AttemptResult {
        at,
        status_code: outcome.status_code,
        error: outcome.error.clone(),
        retry_at,
        gone: outcome.gone,
        disable_failing_after_us: settings.disable_after.as_micros() as i64,
    }
}

/// `wait` times a random factor in [0.8, 1.2).
fn jittered(wait: Duration) -> Duration {
    let mut bytes = [0u8; 4];
    let spread = match getrandom::fill(&mut bytes) {
        Ok(()) => f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX),
        Err(_) => 0.5,
    };
    wait.mul_f64(0.8 + 0.4 * spread)
}

#[cfg(test)]
mod tests {
    use super::*;
    use skuwatch_actors::store::StoredSecrets;

    fn claimed(kind: &str, attempt: i64) -> Claimed {
        Claimed {
            row: 1,
            message_id: "msg_1".into(),
            kind: kind.into(),
            body: json!({
                "type": kind, "timestamp": "2026-12-01T00:00:00Z",
                "data": {"alert": {"sku": "A/1", "kind": "low_stock", "message": "<low>",
                                   "value": 3, "threshold": 5},
                         "sku": {"sku": "A/1"}}
            })
            .to_string(),
            attempt,
            created_at: Micros(0),
            endpoint_id: "e".into(),
            url: "https://example.com/".into(),
            format: WebhookFormat::Slack,
            secrets: StoredSecrets {
                current: String::new(),
                previous: None,
            },
        }
    }

    fn settings() -> WebhookSettings {
        WebhookSettings {
            retry_schedule: vec![Duration::from_secs(5), Duration::from_secs(30)],
            ..WebhookSettings::default()
        }
    }

    fn failure(gone: bool) -> Outcome {
        Outcome {
            status_code: Some(if gone { 410 } else { 500 }),
            error: Some("HTTP 500".into()),
            refused: false,
            gone,
        }
    }

    #[test]
    fn retries_follow_the_schedule_then_give_up() {
        let at = Micros(1_000_000_000);
        let first = result(
            &claimed("alert.raised", 1),
            &failure(false),
            &settings(),
            at,
        );
        let wait = first.retry_at.unwrap().0 - at.0;
        assert!((4_000_000..6_000_000).contains(&wait), "{wait}");
        let second = result(
            &claimed("alert.raised", 2),
            &failure(false),
            &settings(),
            at,
        );
        let wait = second.retry_at.unwrap().0 - at.0;
        assert!((24_000_000..36_000_000).contains(&wait), "{wait}");
        // Past the schedule, after a 410, and for a test: no retry.
        assert_eq!(
            result(
                &claimed("alert.raised", 3),
                &failure(false),
                &settings(),
                at
            )
            .retry_at,
            None
        );
        assert_eq!(
            result(&claimed("alert.raised", 1), &failure(true), &settings(), at).retry_at,
            None
        );
        assert_eq!(
            result(&claimed(TEST_TYPE, 1), &failure(false), &settings(), at).retry_at,
            None
        );
    }

    #[test]
    fn slack_message_names_the_sku_values_and_links_it() {
        let rendered = render(
            &claimed("alert.raised", 1),
            Some("https://ops.example.com/"),
        )
        .unwrap();
        let message: Value = serde_json::from_str(&rendered).unwrap();
        let text = message["text"].as_str().unwrap();
        assert!(text.contains("raised *low_stock* on `A/1`"), "{text}");
        assert!(text.contains("&lt;low&gt;"), "{text}");
        assert!(text.contains("value 3, threshold 5"), "{text}");
        assert!(
            text.contains("<https://ops.example.com/skus/A%2F1|open>"),
            "{text}"
        );
        assert_eq!(message["blocks"][0]["text"]["text"], text);
    }

    #[test]
    fn a_slack_change_line_escapes_what_a_writer_set() {
        let body = json!({"type": "sku.changed", "data": {"event": {
            "sku": "A", "field": "meta", "old": {"name": "Mug"},
            "new": {"name": "<!channel> <https://evil.example|login>"}}}});
        let text = slack(&body, None)["text"].as_str().unwrap().to_owned();
        assert!(
            !text.contains("<!channel>") && !text.contains("<https://evil"),
            "{text}"
        );
        assert!(text.contains("&lt;!channel&gt;"), "{text}");
    }

    #[test]
    fn a_slack_digest_lists_the_first_lines_and_counts_the_rest() {
        let messages: Vec<Value> = (0..12)
            .map(|i| {
                json!({"id": format!("msg_{i}"), "type": "alert.raised",
                            "alert": {"sku": format!("S{i}"), "kind": "low_stock", "message": "m",
                                      "value": 1, "threshold": 2}})
            })
            .collect();
        let body = json!({"type": DIGEST_TYPE, "data": {"count": 12, "messages": messages}});
        let text = slack(&body, None)["text"].as_str().unwrap().to_owned();
        assert!(text.contains("12 notifications"), "{text}");
        assert!(text.contains("`S9`") && !text.contains("`S10`"), "{text}");
        assert!(text.contains("and 2 more"), "{text}");
    }
}
