//! The I/O side of payments: adapters between the pure commerce core (`commerce::payment`) and
//! a payment provider.
//!
//! The core decides *what* to ask ([`ProviderRequest`], each with a deterministic idempotency
//! key) and how to take the provider's answers ([`Notification`], [`Snapshot`]). This module
//! moves them: [`PaymentProvider::send`] delivers a request, [`PaymentProvider::fetch`] asks for
//! the provider's view of one payment attempt (a sync), and [`PaymentProvider::verify`] checks a
//! webhook delivery and turns it into [`Inbound`] notifications. It decides nothing about
//! orders: errors say what the caller should do ([`ProviderError`]), the shop actor does it.
//!
//! Providers:
//!
//! * [`sandbox`] — in-process, asynchronous, seeded; the default. Behaves like a real provider
//!   (idempotency keys, refusals, declines, late, duplicated and reordered notifications) so
//!   that a demo and the tests exercise every path of the core without a network.
//! * [`http`] — a Stripe-style REST adapter (form-encoded requests, bearer key, idempotency
//!   keys, signed webhooks verified by [`signature`]). Plain `http://` only: see its docs.
//!
//! Wiring: [`build`] makes the configured provider; the node keeps it in a [`PaymentsHandle`]
//! together with the sender of the inbound queue, and the admin server merges
//! [`webhook_router`] (`POST /payments/webhook`).
//!
//! It does not persist anything, retry on its own, or know orders: retries with the same key,
//! syncs on [`ProviderError::InDoubt`] and the feeding of notifications into the core are the
//! shop actor's.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::commerce::ids::{PaymentId, ShopId};
use crate::commerce::payment::{Notification, ProviderRequest, Snapshot};

pub(crate) mod http;
pub(crate) mod sandbox;
pub(crate) mod signature;

/// A boxed future, so that [`PaymentProvider`] is object safe (`Arc<dyn PaymentProvider>`).
pub(crate) type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A verified notification, with the shop it belongs to (from the payment's metadata).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Inbound {
    /// The shop whose payment this is.
    pub(crate) shop: ShopId,
    /// What the provider says happened.
    pub(crate) notification: Notification,
}

/// What went wrong talking to the provider, phrased as what the caller should do.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProviderError {
    /// Could not reach the provider or it answered 5xx/429: retry later with the SAME
    /// idempotency key.
    #[error("provider unavailable, retry with the same key: {0}")]
    Transient(String),
    /// The request may or may not have been applied (timeout after sending): sync (fetch)
    /// before deciding.
    #[error("request may or may not have been applied, sync before deciding: {0}")]
    InDoubt(String),
    /// The provider refused the request for good (4xx other than 409/429): do not retry.
    #[error("provider refused the request: {0}")]
    Rejected(String),
    /// Webhook: signature missing or wrong.
    #[error("webhook signature missing or wrong")]
    BadSignature,
    /// Webhook: timestamp outside the tolerance.
    #[error("webhook timestamp outside the tolerance")]
    StaleTimestamp,
    /// Payload not understood.
    #[error("payload not understood: {0}")]
    Malformed(String),
    /// The provider does not know this payment attempt.
    #[error("the provider does not know this payment attempt")]
    NotFound,
}

impl ProviderError {
    /// A stable snake-case name, for the webhook route's error body, logs and metric labels.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            ProviderError::Transient(_) => "transient",
            ProviderError::InDoubt(_) => "in_doubt",
            ProviderError::Rejected(_) => "rejected",
            ProviderError::BadSignature => "bad_signature",
            ProviderError::StaleTimestamp => "stale_timestamp",
            ProviderError::Malformed(_) => "malformed",
            ProviderError::NotFound => "not_found",
        }
    }
}

/// A payment provider, as the shop actor sees it. Implementations are cheap to share
/// (`Arc<dyn PaymentProvider>`); calls may run concurrently.
pub(crate) trait PaymentProvider: Send + Sync + fmt::Debug + 'static {
    /// The provider's name in logs (`"sandbox"`, `"http"`).
    fn name(&self) -> &'static str;
    /// Sends one request with its idempotency key. Ok carries the notifications the provider's
    /// synchronous answer already implies (often empty: the outcome comes later
    /// asynchronously).
    fn send<'a>(
        &'a self,
        shop: &'a ShopId,
        request: &'a ProviderRequest,
    ) -> BoxFuture<'a, Result<Vec<Notification>, ProviderError>>;
    /// The provider's current view of one payment attempt (a sync), for when a notification
    /// contradicts local state or a request is in doubt.
    fn fetch<'a>(
        &'a self,
        shop: &'a ShopId,
        payment: &'a PaymentId,
        attempt: u32,
    ) -> BoxFuture<'a, Result<Snapshot, ProviderError>>;
    /// Verifies one webhook delivery (raw headers and body) at `now_ms`.
    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_ms: u64,
    ) -> Result<Vec<Inbound>, ProviderError>;
}

/// Builds the configured provider; asynchronous notifications (sandbox settlement, and webhooks
/// via the route) go to `inbound`. Reads the key and secret files of the HTTP provider. Must be
/// called inside a tokio runtime (the sandbox spawns its settlement task).
pub(crate) fn build(
    config: &PaymentsSection,
    inbound: mpsc::Sender<Inbound>,
) -> anyhow::Result<Arc<dyn PaymentProvider>> {
    config.validate().map_err(anyhow::Error::msg)?;
    Ok(match config.provider {
        ProviderKind::Sandbox => Arc::new(sandbox::SandboxProvider::start(
            sandbox::SandboxConfig::from_section(config),
            inbound,
        )?),
        ProviderKind::Http => Arc::new(http::HttpProvider::new(http::HttpConfig::load(config)?)?),
    })
}

/// What the webhook route needs: the provider that verifies deliveries, and the queue verified
/// notifications go to (the same queue the sandbox and the shop actors' owner use).
#[derive(Clone, Debug)]
pub(crate) struct PaymentsHandle {
    /// The configured provider.
    pub(crate) provider: Arc<dyn PaymentProvider>,
    /// Where verified notifications go.
    pub(crate) inbound: mpsc::Sender<Inbound>,
}

/// Path of the webhook route on the admin server.
pub(crate) const WEBHOOK_PATH: &str = "/payments/webhook";

/// Largest webhook body accepted, in bytes. A Stripe event with one payment intent or refund is
/// 2–6 KiB; 64 KiB leaves room for expanded objects and refuses anything built to exhaust
/// memory before its signature is checked.
pub(crate) const WEBHOOK_BODY_BYTES_MAX: usize = 64 * 1024;

/// Capacity to give the inbound queue (`mpsc::channel(INBOUND_QUEUE_MAX)`): a burst of
/// settlements and webhooks waits here for the shop actors' owner; when it is full, webhook
/// deliveries are answered 503 (the provider retries) and the sandbox's settlement waits.
pub(crate) const INBOUND_QUEUE_MAX: usize = 4096;

/// The webhook route, `POST /payments/webhook`, to merge into the admin router. Without a
/// handle (payments not configured) it is an empty router.
///
/// Answers: 200 once every verified notification is queued; 400 with
/// `{"error": "bad_signature" | "stale_timestamp" | "malformed", "message": …}` for a delivery
/// that will never verify; 503 when the inbound queue is full or closed (the provider retries
/// later); 413 above [`WEBHOOK_BODY_BYTES_MAX`].
pub(crate) fn webhook_router(handle: Option<PaymentsHandle>) -> Router {
    let Some(handle) = handle else {
        return Router::new();
    };
    Router::new()
        .route(WEBHOOK_PATH, post(handle_webhook))
        .layer(DefaultBodyLimit::max(WEBHOOK_BODY_BYTES_MAX))
        .with_state(handle)
}

async fn handle_webhook(
    State(handle): State<PaymentsHandle>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let verified = handle.provider.verify(&headers, &body, now_ms());
    let inbound = match verified {
        Ok(inbound) => inbound,
        Err(e) => {
            tracing::warn!(provider = handle.provider.name(), error = %e, "refused a payment webhook");
            let status = match e {
                ProviderError::Transient(_) | ProviderError::InDoubt(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                _ => StatusCode::BAD_REQUEST,
            };
            return error_response(status, &e);
        }
    };
    if inbound.is_empty() {
        // Verified but not about Piazza's payments (or not an event it maps): acknowledged, so
        // the provider stops resending it.
        return (StatusCode::OK, "ok\n").into_response();
    }
    // Reserve room for the whole delivery first, so that it is queued whole or not at all (a
    // partial delivery would be redelivered whole anyway; the core drops duplicates, but a
    // clean answer is simpler to reason about).
    let permits = match handle.inbound.try_reserve_many(inbound.len()) {
        Ok(permits) => permits,
        Err(_) => {
            let e = ProviderError::Transient("inbound queue full or closed".into());
            tracing::warn!(
                provider = handle.provider.name(),
                "payment webhook deferred: inbound queue full or closed"
            );
            return error_response(StatusCode::SERVICE_UNAVAILABLE, &e);
        }
    };
    for (permit, item) in permits.zip(inbound) {
        permit.send(item);
    }
    (StatusCode::OK, "ok\n").into_response()
}

fn error_response(status: StatusCode, e: &ProviderError) -> Response {
    let body = serde_json::json!({ "error": e.name(), "message": e.to_string() });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Milliseconds since the Unix epoch by the system clock (0 before 1970).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Which provider the node talks to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// The built-in in-process provider (no network, no money).
    #[default]
    Sandbox,
    /// A Stripe-style REST API at `payments.base_url`.
    Http,
}

/// `[payments]`: the payment provider. Keys are flat (`sandbox_*` for the sandbox) so that each
/// can be set as `PIAZZA__PAYMENTS__KEY`. Rates are in per mille (0..=1000), integers so that
/// environment variables can set them.
///
/// The defaults give a sandbox that settles every request 20–30 ms later and never misbehaves:
/// deterministic enough for a demo to follow, realistic in that every outcome arrives
/// asynchronously. Turn on `sandbox_duplicate_per_mille`, `sandbox_reorder_per_mille`,
/// `sandbox_late_per_mille` and declines to show how the core copes with a real provider's
/// delivery.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentsSection {
    /// `"sandbox"` (default) or `"http"`.
    pub provider: ProviderKind,
    /// Seed of the sandbox's random choices (jitter, declines, misdelivery): the same seed and
    /// the same requests give the same outcomes.
    pub sandbox_seed: u64,
    /// How long after a request the sandbox settles it and notifies, in ms.
    pub sandbox_latency_ms: u64,
    /// Up to this many ms added at random to each settlement and delivery.
    pub sandbox_jitter_ms: u64,
    /// Every `n`th authorization is declined (0: never). Besides, an amount whose minor units
    /// end in `02` (e.g. 10.02) is always declined, like a test card.
    pub sandbox_decline_every: u32,
    /// Per mille of authorizations declined at random.
    pub sandbox_decline_per_mille: u32,
    /// Per mille of notifications delivered twice (same event id).
    pub sandbox_duplicate_per_mille: u32,
    /// Per mille of notifications held back until the next notification of the same attempt
    /// was delivered (or `sandbox_late_ms`, if none follows): out-of-order delivery.
    pub sandbox_reorder_per_mille: u32,
    /// Per mille of notifications delivered `sandbox_late_ms` late.
    pub sandbox_late_per_mille: u32,
    /// How late a late notification is, in ms.
    pub sandbox_late_ms: u64,
    /// HTTP provider: the API's base URL, e.g. `http://127.0.0.1:12111` (plain HTTP only).
    pub base_url: String,
    /// HTTP provider: the secret API key (prefer `api_key_file`).
    pub api_key: Option<String>,
    /// HTTP provider: a file holding the secret API key (surrounding whitespace is ignored).
    pub api_key_file: Option<PathBuf>,
    /// HTTP provider: the webhook signing secret (prefer `webhook_secret_file`).
    pub webhook_secret: Option<String>,
    /// HTTP provider: a file holding the webhook signing secret.
    pub webhook_secret_file: Option<PathBuf>,
    /// A webhook signed more than this many seconds before or after now is refused.
    pub webhook_tolerance_secs: u64,
    /// Deadline of one HTTP request (connect, send, answer), in ms.
    pub request_timeout_ms: u64,
}

/// Twenty ms: a card network answers in hundreds of ms, but a demo should feel instant while
/// still showing that outcomes arrive later than the answer.
pub(crate) const SANDBOX_LATENCY_MS_DEFAULT: u64 = 20;
/// Ten ms of jitter: enough that two settlements in flight may finish in either order.
pub(crate) const SANDBOX_JITTER_MS_DEFAULT: u64 = 10;
/// Half a second: much later than a normal delivery, short enough for tests to wait for.
pub(crate) const SANDBOX_LATE_MS_DEFAULT: u64 = 500;
/// Longest sandbox latency, jitter or lateness accepted: a minute, beyond which a demo looks
/// broken and timers pile up.
pub(crate) const SANDBOX_DELAY_MS_MAX: u64 = 60_000;
/// Stripe's own default tolerance: five minutes.
pub(crate) const WEBHOOK_TOLERANCE_SECS_DEFAULT: u64 = 300;
/// Largest tolerance accepted: an hour. Beyond it a captured webhook can be replayed for too
/// long.
pub(crate) const WEBHOOK_TOLERANCE_SECS_MAX: u64 = 3600;
/// Ten seconds: a provider call takes hundreds of ms; past this the answer is in doubt.
pub(crate) const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Two minutes: Stripe's own client gives up after 80 s.
pub(crate) const REQUEST_TIMEOUT_MS_MAX: u64 = 120_000;
/// Per mille rates go up to 1000 (always).
pub(crate) const PER_MILLE_MAX: u32 = 1000;

impl Default for PaymentsSection {
    fn default() -> Self {
        PaymentsSection {
            provider: ProviderKind::Sandbox,
            sandbox_seed: 0x5eed,
            sandbox_latency_ms: SANDBOX_LATENCY_MS_DEFAULT,
            sandbox_jitter_ms: SANDBOX_JITTER_MS_DEFAULT,
            sandbox_decline_every: 0,
            sandbox_decline_per_mille: 0,
            sandbox_duplicate_per_mille: 0,
            sandbox_reorder_per_mille: 0,
            sandbox_late_per_mille: 0,
            sandbox_late_ms: SANDBOX_LATE_MS_DEFAULT,
            base_url: String::new(),
            api_key: None,
            api_key_file: None,
            webhook_secret: None,
            webhook_secret_file: None,
            webhook_tolerance_secs: WEBHOOK_TOLERANCE_SECS_DEFAULT,
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
        }
    }
}

/// Secrets are not printed: the config is logged and is part of `NodeContext`'s `Debug`.
impl fmt::Debug for PaymentsSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("PaymentsSection")
            .field("provider", &self.provider)
            .field("sandbox_seed", &self.sandbox_seed)
            .field("sandbox_latency_ms", &self.sandbox_latency_ms)
            .field("sandbox_jitter_ms", &self.sandbox_jitter_ms)
            .field("sandbox_decline_every", &self.sandbox_decline_every)
            .field("sandbox_decline_per_mille", &self.sandbox_decline_per_mille)
            .field(
                "sandbox_duplicate_per_mille",
                &self.sandbox_duplicate_per_mille,
            )
            .field("sandbox_reorder_per_mille", &self.sandbox_reorder_per_mille)
            .field("sandbox_late_per_mille", &self.sandbox_late_per_mille)
            .field("sandbox_late_ms", &self.sandbox_late_ms)
            .field("base_url", &self.base_url)
            .field("api_key", &redacted(&self.api_key))
            .field("api_key_file", &self.api_key_file)
            .field("webhook_secret", &redacted(&self.webhook_secret))
            .field("webhook_secret_file", &self.webhook_secret_file)
            .field("webhook_tolerance_secs", &self.webhook_tolerance_secs)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .finish()
    }
}

impl PaymentsSection {
    /// Checks ranges and that the chosen provider has what it needs (files are read later, by
    /// [`build`]). The message names the key.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let per_mille = [
            (
                "payments.sandbox_decline_per_mille",
                self.sandbox_decline_per_mille,
            ),
            (
                "payments.sandbox_duplicate_per_mille",
                self.sandbox_duplicate_per_mille,
            ),
            (
                "payments.sandbox_reorder_per_mille",
                self.sandbox_reorder_per_mille,
            ),
            (
                "payments.sandbox_late_per_mille",
                self.sandbox_late_per_mille,
            ),
        ];
        for (name, value) in per_mille {
            if value > PER_MILLE_MAX {
                return Err(format!("{name} must be at most {PER_MILLE_MAX}"));
            }
        }
        let delays = [
            ("payments.sandbox_latency_ms", self.sandbox_latency_ms),
            ("payments.sandbox_jitter_ms", self.sandbox_jitter_ms),
            ("payments.sandbox_late_ms", self.sandbox_late_ms),
        ];
        for (name, value) in delays {
            if value > SANDBOX_DELAY_MS_MAX {
                return Err(format!("{name} must be at most {SANDBOX_DELAY_MS_MAX}"));
            }
        }
        if !(1..=WEBHOOK_TOLERANCE_SECS_MAX).contains(&self.webhook_tolerance_secs) {
            return Err(format!(
                "payments.webhook_tolerance_secs must be between 1 and {WEBHOOK_TOLERANCE_SECS_MAX}"
            ));
        }
        if !(1..=REQUEST_TIMEOUT_MS_MAX).contains(&self.request_timeout_ms) {
            return Err(format!(
                "payments.request_timeout_ms must be between 1 and {REQUEST_TIMEOUT_MS_MAX}"
            ));
        }
        if self.provider == ProviderKind::Http {
            http::client::BaseUrl::parse(&self.base_url)
                .map_err(|e| format!("payments.base_url: {e}"))?;
            if self.api_key.is_some() == self.api_key_file.is_some() {
                return Err(
                    "payments: the http provider needs exactly one of api_key and api_key_file"
                        .into(),
                );
            }
            if self.webhook_secret.is_some() == self.webhook_secret_file.is_some() {
                return Err("payments: the http provider needs exactly one of webhook_secret and webhook_secret_file".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
