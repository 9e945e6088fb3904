//! `[sinks]`: where commerce events go besides the outbox.
//!
//! ```toml
//! [sinks]
//! request_timeout_ms = 10000        # one webhook request or one NATS request
//!
//! [[sinks.webhooks]]
//! name = "erp"                      # optional; state and metrics are kept under it
//! shop = "*"                        # a shop id, or "*" for every shop
//! url = "http://erp.internal:8080/piazza"
//! secret_file = "/etc/piazza/erp-webhook-secret"   # or secret = "..."
//! event_types = ["OrderPaid", "OrderCancelled"]    # optional; absent or empty: all
//! max_age_secs = 604800             # retry for at least this long, then the event is dead
//! initial_backoff_ms = 1000         # first retry delay, doubling (with jitter) ...
//! max_backoff_ms = 3600000          # ... up to this
//! concurrency = 16                  # shops delivered at once
//!
//! [sinks.nats]
//! url = "nats://127.0.0.1:4222"
//! stream = "PIAZZA"
//! subject_prefix = "piazza.events"  # subject: <prefix>.<shop>.<type>
//! ```

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use super::outbox::EVENT_TYPES;

/// `[sinks]`: webhook endpoints and a NATS JetStream stream that receive every commerce event
/// of the outbox. None configured (the default): events are only written to the outbox.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SinksSection {
    /// Deadline of one webhook request (connect, send, answer) or one NATS request (connect,
    /// publish, acknowledgement), in ms.
    pub request_timeout_ms: u64,
    /// `[[sinks.webhooks]]`: HTTP endpoints, at most [`WEBHOOKS_MAX`].
    pub webhooks: Vec<WebhookSink>,
    /// `[sinks.nats]`: a NATS JetStream stream.
    pub nats: Option<NatsSink>,
}

/// One `[[sinks.webhooks]]` entry.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebhookSink {
    /// The sink's name: its delivery state and its metrics are kept under it, so renaming a
    /// sink starts it from its shops' first events again. Default: `webhook-<n>`, `n` counting
    /// entries from 1 — set it explicitly before reordering entries.
    #[serde(default)]
    pub name: Option<String>,
    /// A shop id, or `"*"` for every shop.
    #[serde(default = "all_shops")]
    pub shop: String,
    /// `http://host[:port]/path[?query]`. Plain HTTP only: for `https://`, run a
    /// TLS-originating proxy on loopback.
    pub url: String,
    /// The signing secret (prefer `secret_file`), at least [`SECRET_BYTES_MIN`] bytes.
    #[serde(default)]
    pub secret: Option<String>,
    /// A file holding the signing secret (surrounding whitespace is ignored).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Event types to deliver (see the outbox docs); absent or empty: all.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// A failing event is retried for at least this long after its first attempt, then it is
    /// dead (kept in the sinks table, counted in `piazza_sink_dead_total`) and the shop's next
    /// event goes.
    #[serde(default = "webhook_max_age_secs")]
    pub max_age_secs: u64,
    /// Delay before the first retry, in ms; it doubles on every failure (with jitter: each delay
    /// is drawn from its upper half).
    #[serde(default = "initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Longest delay between two attempts, in ms.
    #[serde(default = "webhook_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Shops whose events are being delivered at once (one request in flight per shop).
    #[serde(default = "webhook_concurrency")]
    pub concurrency: usize,
}

/// `[sinks.nats]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NatsSink {
    /// The sink's name for its delivery state and metrics.
    #[serde(default = "nats_name")]
    pub name: String,
    /// `nats://host:port` (no credentials or TLS: run the node next to its NATS server).
    pub url: String,
    /// The JetStream stream; created at the first connection if missing (an existing stream's
    /// configuration is left alone).
    #[serde(default = "nats_stream")]
    pub stream: String,
    /// Subjects are `<subject_prefix>.<shop>.<type>`; the stream is created on
    /// `<subject_prefix>.>`.
    #[serde(default = "nats_subject_prefix")]
    pub subject_prefix: String,
    /// The stream's deduplication window when the node creates it: a publish repeated within it
    /// (after a crash before the cursor moved) is stored once.
    #[serde(default = "nats_duplicate_window_secs")]
    pub duplicate_window_secs: u64,
    /// A publish that keeps failing is retried for at least this long, then it is dead.
    #[serde(default = "webhook_max_age_secs")]
    pub max_age_secs: u64,
    /// Delay before the first retry, in ms (doubling, with jitter).
    #[serde(default = "initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Longest delay between two attempts (and two reconnections), in ms: short, because NATS
    /// is infrastructure next to the node and should be caught up with soon after it is back.
    #[serde(default = "nats_max_backoff_ms")]
    pub max_backoff_ms: u64,
}

/// Ten seconds: a receiver answers in milliseconds; one that takes longer is treated as failing.
pub(crate) const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Two minutes: beyond it a slow request holds a delivery slot for too long.
pub(crate) const REQUEST_TIMEOUT_MS_MAX: u64 = 120_000;
/// Seven days: a receiver's outage over a long weekend, with days to spare, loses nothing.
pub(crate) const MAX_AGE_SECS_DEFAULT: u64 = 7 * 24 * 3600;
/// One second before the first retry.
pub(crate) const INITIAL_BACKOFF_MS_DEFAULT: u64 = 1000;
/// An hour between two attempts at most: a receiver back from an outage gets its backlog within
/// the hour.
pub(crate) const WEBHOOK_MAX_BACKOFF_MS_DEFAULT: u64 = 3600 * 1000;
/// Thirty seconds: see [`NatsSink::max_backoff_ms`].
pub(crate) const NATS_MAX_BACKOFF_MS_DEFAULT: u64 = 30_000;
/// Sixteen shops at once: a receiver is usually one service, which should not see a stampede.
pub(crate) const WEBHOOK_CONCURRENCY_DEFAULT: usize = 16;
/// Upper bound of `concurrency` (each slot is a task and a connection).
pub(crate) const WEBHOOK_CONCURRENCY_MAX: usize = 1024;
/// Most `[[sinks.webhooks]]` entries (each is a task walking the outbox).
pub(crate) const WEBHOOKS_MAX: usize = 64;
/// Shortest signing secret in bytes: 128 bits.
pub(crate) const SECRET_BYTES_MIN: usize = 16;
/// Longest signing secret in bytes.
pub(crate) const SECRET_BYTES_MAX: usize = 1024;
/// Longest sink name in bytes.
pub(crate) const SINK_NAME_BYTES_MAX: usize = 64;
/// Longest URL in bytes.
pub(crate) const URL_BYTES_MAX: usize = 2048;
/// Ten minutes of deduplication: a restart after a crash republishes well within it.
pub(crate) const NATS_DUPLICATE_WINDOW_SECS_DEFAULT: u64 = 600;
/// Longest stream name or subject prefix in bytes.
pub(crate) const NATS_NAME_BYTES_MAX: usize = 128;

fn all_shops() -> String {
    "*".into()
}
fn webhook_max_age_secs() -> u64 {
    MAX_AGE_SECS_DEFAULT
}
fn initial_backoff_ms() -> u64 {
    INITIAL_BACKOFF_MS_DEFAULT
}
fn webhook_max_backoff_ms() -> u64 {
    WEBHOOK_MAX_BACKOFF_MS_DEFAULT
}
fn nats_max_backoff_ms() -> u64 {
    NATS_MAX_BACKOFF_MS_DEFAULT
}
fn webhook_concurrency() -> usize {
    WEBHOOK_CONCURRENCY_DEFAULT
}
fn nats_name() -> String {
    "nats".into()
}
fn nats_stream() -> String {
    "PIAZZA".into()
}
fn nats_subject_prefix() -> String {
    "piazza.events".into()
}
fn nats_duplicate_window_secs() -> u64 {
    NATS_DUPLICATE_WINDOW_SECS_DEFAULT
}

impl Default for SinksSection {
    fn default() -> Self {
        SinksSection {
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
            webhooks: Vec::new(),
            nats: None,
        }
    }
}

/// The secret is not printed: the config is logged and is part of `NodeContext`'s `Debug`.
impl fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSink")
            .field("name", &self.name)
            .field("shop", &self.shop)
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_file", &self.secret_file)
            .field("event_types", &self.event_types)
            .field("max_age_secs", &self.max_age_secs)
            .field("initial_backoff_ms", &self.initial_backoff_ms)
            .field("max_backoff_ms", &self.max_backoff_ms)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

impl SinksSection {
    /// Checks ranges, names and URLs (secret files are read later, by `sinks::start`). The
    /// message names the key.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !(1..=REQUEST_TIMEOUT_MS_MAX).contains(&self.request_timeout_ms) {
            return Err(format!(
                "sinks.request_timeout_ms must be between 1 and {REQUEST_TIMEOUT_MS_MAX}"
            ));
        }
        if self.webhooks.len() > WEBHOOKS_MAX {
            return Err(format!("at most {WEBHOOKS_MAX} [[sinks.webhooks]] entries"));
        }
        let mut names = HashSet::new();
        for (i, hook) in self.webhooks.iter().enumerate() {
            let name = hook.name(i);
            let key = |field: &str| format!("sinks.webhooks[{name}].{field}");
            check_name(&name).map_err(|e| format!("{}: {e}", key("name")))?;
            if !names.insert(name.clone()) {
                return Err(format!("two sinks are named {name:?}"));
            }
            if hook.shop != "*" {
                hook.shop
                    .parse::<crate::commerce::ids::ShopId>()
                    .map_err(|e| format!("{}: {e}", key("shop")))?;
            }
            super::webhook::Endpoint::parse(&hook.url)
                .map_err(|e| format!("{}: {e}", key("url")))?;
            match (&hook.secret, &hook.secret_file) {
                (Some(secret), None) => check_secret(secret.as_bytes())
                    .map_err(|e| format!("{}: {e}", key("secret")))?,
                (None, Some(_)) => {}
                _ => {
                    return Err(format!(
                        "{name}: exactly one of secret and secret_file is needed"
                    ));
                }
            }
            for kind in &hook.event_types {
                if !EVENT_TYPES.contains(&kind.as_str()) {
                    return Err(format!(
                        "{}: unknown event type {kind:?}",
                        key("event_types")
                    ));
                }
            }
            check_retry(
                &key,
                hook.max_age_secs,
                hook.initial_backoff_ms,
                hook.max_backoff_ms,
            )?;
            if !(1..=WEBHOOK_CONCURRENCY_MAX).contains(&hook.concurrency) {
                return Err(format!(
                    "{} must be between 1 and {WEBHOOK_CONCURRENCY_MAX}",
                    key("concurrency")
                ));
            }
        }
        if let Some(nats) = &self.nats {
            let key = |field: &str| format!("sinks.nats.{field}");
            check_name(&nats.name).map_err(|e| format!("{}: {e}", key("name")))?;
            if !names.insert(nats.name.clone()) {
                return Err(format!("two sinks are named {:?}", nats.name));
            }
            super::nats::Address::parse(&nats.url).map_err(|e| format!("{}: {e}", key("url")))?;
            check_subject(&nats.stream, false).map_err(|e| format!("{}: {e}", key("stream")))?;
            check_subject(&nats.subject_prefix, true)
                .map_err(|e| format!("{}: {e}", key("subject_prefix")))?;
            if nats.duplicate_window_secs == 0 {
                return Err(format!(
                    "{} must be at least 1",
                    key("duplicate_window_secs")
                ));
            }
            check_retry(
                &key,
                nats.max_age_secs,
                nats.initial_backoff_ms,
                nats.max_backoff_ms,
            )?;
        }
        Ok(())
    }
}

impl WebhookSink {
    /// The sink's name: `name`, or `webhook-<i + 1>` for the `i`th entry.
    pub(crate) fn name(&self, i: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("webhook-{}", i + 1))
    }
}

/// Sink names go into storage keys and metric labels: short, and of a few safe characters.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > SINK_NAME_BYTES_MAX {
        return Err(format!("must be 1 to {SINK_NAME_BYTES_MAX} bytes"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err("may only use A-Z a-z 0-9 _ - .".into());
    }
    Ok(())
}

/// Checks a signing secret's length.
pub(crate) fn check_secret(secret: &[u8]) -> Result<(), String> {
    if !(SECRET_BYTES_MIN..=SECRET_BYTES_MAX).contains(&secret.len()) {
        return Err(format!(
            "must be {SECRET_BYTES_MIN} to {SECRET_BYTES_MAX} bytes"
        ));
    }
    Ok(())
}

/// A stream name (no dots) or a subject prefix (dot-separated tokens, no wildcards).
fn check_subject(value: &str, dots: bool) -> Result<(), String> {
    if value.is_empty() || value.len() > NATS_NAME_BYTES_MAX {
        return Err(format!("must be 1 to {NATS_NAME_BYTES_MAX} bytes"));
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-') || (dots && c == '.');
    if !value.chars().all(ok)
        || value.starts_with('.')
        || value.ends_with('.')
        || value.contains("..")
    {
        return Err("may only use A-Z a-z 0-9 _ - (and single dots between tokens)".into());
    }
    Ok(())
}

fn check_retry(
    key: &dyn Fn(&str) -> String,
    max_age_secs: u64,
    initial_backoff_ms: u64,
    max_backoff_ms: u64,
) -> Result<(), String> {
    if max_age_secs == 0 {
        return Err(format!("{} must be at least 1", key("max_age_secs")));
    }
    if initial_backoff_ms == 0 || initial_backoff_ms > max_backoff_ms {
        return Err(format!(
            "{} must be at least 1 and at most {}",
            key("initial_backoff_ms"),
            key("max_backoff_ms")
        ));
    }
    Ok(())
}
