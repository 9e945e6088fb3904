//! The Stripe-style REST adapter.
//!
//! **Requests.** Every call carries `Authorization: Bearer <key>`; every POST carries
//! `Idempotency-Key: <request.idempotency_key>` and a form-encoded body:
//!
//! | core request | call |
//! |---|---|
//! | Authorize | `POST /v1/payment_intents` amount, currency (lower case), `capture_method=manual`, `metadata[piazza_shop]`, `metadata[piazza_order]`, `metadata[piazza_payment]`, `metadata[piazza_attempt]` |
//! | Capture | `POST /v1/payment_intents/{id}/capture` `amount_to_capture` |
//! | Void | `POST /v1/payment_intents/{id}/cancel` |
//! | Refund | `POST /v1/refunds` `payment_intent`, amount, `metadata[piazza_refund]` and the three above |
//! | fetch | `GET /v1/payment_intents/{id}`, `GET /v1/refunds?payment_intent={id}&limit=100` |
//!
//! One intent per payment attempt. The intent of (payment, attempt) is found in a bounded
//! in-memory cache filled from answers and webhooks, else (after a restart) by
//! `GET /v1/payment_intents/search?query=metadata['piazza_payment']:'…' AND metadata['piazza_attempt']:'…'`
//! (Stripe's search lags writes by up to a minute: a lookup that misses is `NotFound`, to be
//! retried).
//!
//! **Answers.** 2xx is success; 404 → `NotFound`; 409 (a request with this key in progress),
//! 429 and 5xx → `Transient`; other 4xx → `Rejected`. A connection that could not be made →
//! `Transient`; a POST sent but not answered in time → `InDoubt`. A successful POST's answer is
//! turned into the notifications it implies (an intent `requires_capture` is authorized, …),
//! except for replayed answers (`Idempotent-Replayed: true`), which describe the past.
//!
//! **Webhooks.** `Stripe-Signature` checked by [`super::signature`] within the configured
//! tolerance, then:
//!
//! | event | notification |
//! |---|---|
//! | `payment_intent.amount_capturable_updated` | Authorized (`amount_capturable`) |
//! | `payment_intent.succeeded` | Captured (`amount_received`) |
//! | `payment_intent.payment_failed` | Failed |
//! | `payment_intent.canceled` | Voided |
//! | `refund.created` / `refund.updated` / `refund.failed` | Refunded (status `succeeded`), RefundFailed (`failed`, `canceled`), nothing while pending |
//! | `charge.refunded` | the same, for each refund listed in the charge |
//!
//! Events about objects without Piazza's metadata, and other event types, verify to no
//! notification (answered 200, so the provider stops resending them).
//!
//! **Sequence.** Stripe gives no per-intent counter, so `sequence` is provider-clock time in
//! milliseconds at second resolution: an event's `created` × 1000, a snapshot's answer `Date`
//! header × 1000 (the snapshot reflects every event created up to then), and the same for
//! notifications implied by an answer. Two changes within one second get equal sequences;
//! the core only calls a notification stale when its sequence is strictly older, and judges
//! equal ones by the state.
//!
//! **Refund ids.** Piazza's own refunds carry their id in `metadata[piazza_refund]`; a refund
//! made in the provider's dashboard is named `<payment>#ext:<provider refund id>`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::http::HeaderMap;
use hyper::Method;
use hyper::header::{AUTHORIZATION, HeaderName, HeaderValue};
use piazza_protocol::{Currency, Money};
use serde::Deserialize;

use super::signature::{self, SIGNATURE_HEADER};
use super::{
    BoxFuture, Inbound, PaymentProvider, PaymentsSection, ProviderError, WEBHOOK_BODY_BYTES_MAX,
};
use crate::commerce::ids::{PaymentId, ProviderEventId, RefundId, ShopId};
use crate::commerce::payment::{
    Notification, NotificationKind, ProviderRequest, RefundSnapshot, RefundStatus, RequestKind,
    Snapshot, SnapshotStatus,
};

pub(crate) mod client;

use client::{BaseUrl, CallError, Reply};

/// Metadata keys Piazza sets on intents and refunds.
pub(crate) const META_SHOP: &str = "piazza_shop";
/// The order, for humans reading the provider's dashboard.
pub(crate) const META_ORDER: &str = "piazza_order";
/// The payment (`<order>#<n>`).
pub(crate) const META_PAYMENT: &str = "piazza_payment";
/// The attempt number.
pub(crate) const META_ATTEMPT: &str = "piazza_attempt";
/// Piazza's refund id, on refunds.
pub(crate) const META_REFUND: &str = "piazza_refund";

/// (payment, attempt) ↔ intent pairs remembered. An entry is ~150 bytes; 16,384 covers every
/// attempt in progress on a busy node, and a miss only costs one search call.
pub(crate) const INTENT_CACHE_MAX: usize = 16_384;
/// Refunds asked for per fetch: more than `commerce::payment::REFUNDS_MAX`, Stripe's page
/// limit.
const REFUNDS_PAGE_MAX: u32 = 100;
/// Longest provider object id put in a URL path.
const OBJECT_ID_BYTES_MAX: usize = 255;

/// What the HTTP adapter needs, with its secrets loaded.
#[derive(Clone)]
pub(crate) struct HttpConfig {
    pub(crate) base_url: BaseUrl,
    pub(crate) api_key: String,
    pub(crate) webhook_secret: Vec<u8>,
    pub(crate) webhook_tolerance_secs: u64,
    pub(crate) request_timeout: Duration,
}

impl HttpConfig {
    /// Reads the section, and the key and secret from their files when given as files.
    pub(crate) fn load(section: &PaymentsSection) -> anyhow::Result<HttpConfig> {
        let base_url = BaseUrl::parse(&section.base_url)
            .map_err(|e| anyhow::anyhow!("payments.base_url: {e}"))?;
        let api_key = secret(&section.api_key, section.api_key_file.as_deref(), "api key")?;
        let webhook_secret = secret(
            &section.webhook_secret,
            section.webhook_secret_file.as_deref(),
            "webhook secret",
        )?;
        Ok(HttpConfig {
            base_url,
            api_key,
            webhook_secret: webhook_secret.into_bytes(),
            webhook_tolerance_secs: section.webhook_tolerance_secs,
            request_timeout: Duration::from_millis(section.request_timeout_ms),
        })
    }
}

/// Secrets are not printed.
impl fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConfig")
            .field("base_url", &self.base_url)
            .field("webhook_tolerance_secs", &self.webhook_tolerance_secs)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

/// The value given inline, or the trimmed contents of the file.
fn secret(inline: &Option<String>, file: Option<&Path>, what: &str) -> anyhow::Result<String> {
    let value = match (inline, file) {
        (Some(value), _) => value.trim().to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("read the payment {what} from {}: {e}", path.display()))?
            .trim()
            .to_owned(),
        (None, None) => anyhow::bail!("the http payment provider needs a {what}"),
    };
    if value.is_empty() {
        anyhow::bail!("the payment {what} is empty");
    }
    // It goes into a header: refuse what a header cannot carry now rather than on every call.
    if HeaderValue::from_str(&value).is_err() {
        anyhow::bail!("the payment {what} has characters a header cannot carry");
    }
    Ok(value)
}

/// The Stripe-style provider.
#[derive(Debug)]
pub(crate) struct HttpProvider {
    config: HttpConfig,
    authorization: HeaderValue,
    /// Never held across an `.await`.
    intents: Mutex<IntentCache>,
}

impl HttpProvider {
    /// An adapter for `config` (no connection is made until the first call).
    pub(crate) fn new(config: HttpConfig) -> anyhow::Result<HttpProvider> {
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", config.api_key))
            .map_err(|_| anyhow::anyhow!("the payment api key cannot go into a header"))?;
        authorization.set_sensitive(true);
        Ok(HttpProvider {
            config,
            authorization,
            intents: Mutex::new(IntentCache::default()),
        })
    }

    fn intents(&self) -> MutexGuard<'_, IntentCache> {
        // The cache is only a shortcut: after a panic elsewhere it is still usable.
        self.intents.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn handle_send(
        &self,
        shop: &ShopId,
        request: &ProviderRequest,
    ) -> Result<Vec<Notification>, ProviderError> {
        let attempt = request.attempt.to_string();
        let meta = [
            (meta_key(META_SHOP), shop.as_str()),
            (meta_key(META_ORDER), request.order.as_str()),
            (meta_key(META_PAYMENT), request.payment.as_str()),
            (meta_key(META_ATTEMPT), attempt.as_str()),
        ];
        let reference = Reference {
            shop: shop.clone(),
            payment: request.payment.clone(),
            attempt: request.attempt,
        };
        match &request.kind {
            RequestKind::Authorize { amount } => {
                let value = amount.minor().to_string();
                let currency = amount.currency().as_str().to_ascii_lowercase();
                let mut params = vec![
                    ("amount", value.as_str()),
                    ("currency", currency.as_str()),
                    ("capture_method", "manual"),
                ];
                params.extend(meta.iter().map(|(k, v)| (k.as_str(), *v)));
                let reply = self
                    .post("/v1/payment_intents", &params, &request.idempotency_key)
                    .await?;
                let intent: WireIntent = parse_answer(&reply)?;
                self.intents().insert(&reference, &intent.id);
                implied_by_intent(&reply, &intent, &reference)
            }
            RequestKind::Capture { amount } => {
                let id = self.intent_id(&reference).await?;
                let value = amount.minor().to_string();
                let reply = self
                    .post(
                        &format!("/v1/payment_intents/{id}/capture"),
                        &[("amount_to_capture", value.as_str())],
                        &request.idempotency_key,
                    )
                    .await?;
                let intent: WireIntent = parse_answer(&reply)?;
                implied_by_intent(&reply, &intent, &reference)
            }
            RequestKind::Void => {
                let id = self.intent_id(&reference).await?;
                let reply = self
                    .post(
                        &format!("/v1/payment_intents/{id}/cancel"),
                        &[],
                        &request.idempotency_key,
                    )
                    .await?;
                let intent: WireIntent = parse_answer(&reply)?;
                implied_by_intent(&reply, &intent, &reference)
            }
            RequestKind::Refund { refund, amount } => {
                let id = self.intent_id(&reference).await?;
                let value = amount.minor().to_string();
                let refund_key = meta_key(META_REFUND);
                let mut params = vec![
                    ("payment_intent", id.as_str()),
                    ("amount", value.as_str()),
                    (refund_key.as_str(), refund.as_str()),
                ];
                params.extend(meta.iter().map(|(k, v)| (k.as_str(), *v)));
                let reply = self
                    .post("/v1/refunds", &params, &request.idempotency_key)
                    .await?;
                let wire: WireRefund = parse_answer(&reply)?;
                if reply.replayed {
                    return Ok(Vec::new());
                }
                let sequence = reply_sequence(&reply);
                let event = sync_event_id(&wire.id, &wire.status)?;
                Ok(refund_notification(&wire, &reference, event, sequence)?
                    .into_iter()
                    .collect())
            }
        }
    }

    async fn handle_fetch(
        &self,
        shop: &ShopId,
        payment: &PaymentId,
        attempt: u32,
    ) -> Result<Snapshot, ProviderError> {
        let reference = Reference {
            shop: shop.clone(),
            payment: payment.clone(),
            attempt,
        };
        let id = self.intent_id(&reference).await?;
        let reply = self.get(&format!("/v1/payment_intents/{id}")).await?;
        let intent: WireIntent = parse_json(&reply.body)?;
        if Reference::of(&intent.metadata)?.as_ref() != Some(&reference) {
            // The cache or the search named an intent of another attempt: never trust it.
            return Err(ProviderError::NotFound);
        }
        let sequence = reply_sequence(&reply);
        let currency = currency(&intent.currency)?;
        let refunds_reply = self
            .get(&format!(
                "/v1/refunds?payment_intent={}&limit={REFUNDS_PAGE_MAX}",
                client::encode_component(&id)
            ))
            .await?;
        let list: WireList<WireRefund> = parse_json(&refunds_reply.body)?;
        let mut refunds = Vec::new();
        for wire in list.data {
            if wire.payment_intent.as_deref().is_some_and(|pi| pi != id) {
                continue;
            }
            refunds.push(RefundSnapshot {
                refund: refund_id(&wire, payment)?,
                amount: Money::new(wire.amount, currency),
                status: refund_status(&wire.status),
            });
        }
        let zero = Money::new(0, currency);
        let amount = Money::new(intent.amount, currency);
        let (status, authorized, captured) = match intent.status.as_str() {
            "requires_capture" => (SnapshotStatus::Authorized, amount, zero),
            "succeeded" => (
                SnapshotStatus::Captured,
                amount,
                Money::new(intent.amount_received, currency),
            ),
            "canceled" => (SnapshotStatus::Voided, zero, zero),
            "requires_payment_method" if intent.last_payment_error.is_some() => {
                (SnapshotStatus::Failed, zero, zero)
            }
            _ => (SnapshotStatus::Pending, zero, zero),
        };
        Ok(Snapshot {
            payment: payment.clone(),
            attempt,
            sequence,
            status,
            authorized,
            captured,
            refunds,
        })
    }

    /// The intent of an attempt: from the cache, else by search.
    async fn intent_id(&self, reference: &Reference) -> Result<String, ProviderError> {
        if let Some(id) = self
            .intents()
            .intent_of(&reference.payment, reference.attempt)
        {
            return Ok(id);
        }
        let query = format!(
            "metadata['{META_PAYMENT}']:'{}' AND metadata['{META_ATTEMPT}']:'{}'",
            reference.payment, reference.attempt
        );
        let reply = self
            .get(&format!(
                "/v1/payment_intents/search?query={}",
                client::encode_component(&query)
            ))
            .await?;
        let found: WireList<WireIntent> = parse_json(&reply.body)?;
        for intent in found.data {
            if Reference::of(&intent.metadata)?.as_ref() == Some(reference) {
                check_object_id(&intent.id)?;
                self.intents().insert(reference, &intent.id);
                return Ok(intent.id);
            }
        }
        Err(ProviderError::NotFound)
    }

    async fn post(
        &self,
        path: &str,
        params: &[(&str, &str)],
        idempotency_key: &str,
    ) -> Result<Reply, ProviderError> {
        let key = HeaderValue::from_str(idempotency_key)
            .map_err(|_| ProviderError::Rejected("idempotency key is not a header value".into()))?;
        let headers = [
            (AUTHORIZATION, self.authorization.clone()),
            (HeaderName::from_static("idempotency-key"), key),
        ];
        let body = Some(("application/x-www-form-urlencoded", client::form(params)));
        let reply = client::call(
            &self.config.base_url,
            Method::POST,
            path,
            &headers,
            body,
            self.config.request_timeout,
        )
        .await
        .map_err(|e| match e {
            CallError::NotSent(m) => ProviderError::Transient(m),
            // Sent, and maybe applied: only a sync can tell.
            CallError::NoAnswer(m) => ProviderError::InDoubt(m),
            CallError::TooLarge => ProviderError::InDoubt(e.to_string()),
        })?;
        check_status(reply)
    }

    async fn get(&self, path_and_query: &str) -> Result<Reply, ProviderError> {
        let headers = [(AUTHORIZATION, self.authorization.clone())];
        let reply = client::call(
            &self.config.base_url,
            Method::GET,
            path_and_query,
            &headers,
            None,
            self.config.request_timeout,
        )
        .await
        .map_err(|e| match e {
            // A read changes nothing: any failure is worth a retry.
            CallError::NotSent(m) | CallError::NoAnswer(m) => ProviderError::Transient(m),
            CallError::TooLarge => ProviderError::Malformed(e.to_string()),
        })?;
        check_status(reply)
    }

    fn handle_verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_ms: u64,
    ) -> Result<Vec<Inbound>, ProviderError> {
        if body.len() > WEBHOOK_BODY_BYTES_MAX {
            return Err(ProviderError::Malformed("webhook body too large".into()));
        }
        let header = match headers.get(SIGNATURE_HEADER) {
            Some(value) => Some(value.to_str().map_err(|_| ProviderError::BadSignature)?),
            None => None,
        };
        signature::verify(
            &self.config.webhook_secret,
            header,
            body,
            now_ms,
            self.config.webhook_tolerance_secs,
        )?;
        let event: WireEvent = parse_json(body)?;
        let sequence = event.created.saturating_mul(1000);
        let event_id = |suffix: Option<&str>| -> Result<ProviderEventId, ProviderError> {
            let raw = match suffix {
                Some(s) => format!("{}#{s}", event.id),
                None => event.id.clone(),
            };
            raw.parse()
                .map_err(|e| ProviderError::Malformed(format!("event id: {e}")))
        };
        let mut out = Vec::new();
        match event.kind.as_str() {
            "payment_intent.amount_capturable_updated"
            | "payment_intent.succeeded"
            | "payment_intent.payment_failed"
            | "payment_intent.canceled" => {
                let intent: WireIntent = parse_value(event.data.object.clone())?;
                let Some(reference) = Reference::of(&intent.metadata)? else {
                    return Ok(Vec::new());
                };
                check_object_id(&intent.id)?;
                self.intents().insert(&reference, &intent.id);
                let currency = currency(&intent.currency)?;
                let kind = match event.kind.as_str() {
                    "payment_intent.amount_capturable_updated" => {
                        if intent.amount_capturable <= 0 {
                            return Ok(Vec::new());
                        }
                        NotificationKind::Authorized {
                            amount: Money::new(intent.amount_capturable, currency),
                        }
                    }
                    "payment_intent.succeeded" => NotificationKind::Captured {
                        amount: Money::new(intent.amount_received, currency),
                    },
                    "payment_intent.payment_failed" => NotificationKind::Failed,
                    _ => NotificationKind::Voided,
                };
                out.push(reference.inbound(event_id(None)?, sequence, kind));
            }
            "refund.created" | "refund.updated" | "refund.failed" => {
                let wire: WireRefund = parse_value(event.data.object.clone())?;
                let reference = match Reference::of(&wire.metadata)? {
                    Some(reference) => Some(reference),
                    None => wire
                        .payment_intent
                        .as_deref()
                        .and_then(|pi| self.intents().reference_of(pi)),
                };
                let Some(reference) = reference else {
                    // A refund of an intent Piazza does not know, or a dashboard refund before
                    // a restart: `charge.refunded` (with the charge's metadata) covers the
                    // latter.
                    return Ok(Vec::new());
                };
                if let Some(n) = refund_notification(&wire, &reference, event_id(None)?, sequence)?
                {
                    out.push(Inbound {
                        shop: reference.shop.clone(),
                        notification: n,
                    });
                }
            }
            "charge.refunded" => {
                let charge: WireCharge = parse_value(event.data.object.clone())?;
                let Some(reference) = Reference::of(&charge.metadata)? else {
                    return Ok(Vec::new());
                };
                let refunds = charge.refunds.map(|l| l.data).unwrap_or_default();
                for wire in refunds.iter().take(REFUNDS_PAGE_MAX as usize) {
                    let id = event_id(Some(&wire.id))?;
                    if let Some(n) = refund_notification(wire, &reference, id, sequence)? {
                        out.push(Inbound {
                            shop: reference.shop.clone(),
                            notification: n,
                        });
                    }
                }
            }
            _ => {}
        }
        Ok(out)
    }
}

impl PaymentProvider for HttpProvider {
    fn name(&self) -> &'static str {
        "http"
    }

    fn send<'a>(
        &'a self,
        shop: &'a ShopId,
        request: &'a ProviderRequest,
    ) -> BoxFuture<'a, Result<Vec<Notification>, ProviderError>> {
        Box::pin(self.handle_send(shop, request))
    }

    fn fetch<'a>(
        &'a self,
        shop: &'a ShopId,
        payment: &'a PaymentId,
        attempt: u32,
    ) -> BoxFuture<'a, Result<Snapshot, ProviderError>> {
        Box::pin(self.handle_fetch(shop, payment, attempt))
    }

    fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_ms: u64,
    ) -> Result<Vec<Inbound>, ProviderError> {
        self.handle_verify(headers, body, now_ms)
    }
}

/// Which attempt of which payment of which shop an intent (or refund) belongs to, from its
/// metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Reference {
    shop: ShopId,
    payment: PaymentId,
    attempt: u32,
}

impl Reference {
    /// `None` when the object carries none of Piazza's metadata (not ours); an error when it
    /// carries some but not all, or values that do not parse.
    fn of(metadata: &HashMap<String, String>) -> Result<Option<Reference>, ProviderError> {
        let (shop, payment, attempt) = (
            metadata.get(META_SHOP),
            metadata.get(META_PAYMENT),
            metadata.get(META_ATTEMPT),
        );
        if shop.is_none() && payment.is_none() && attempt.is_none() {
            return Ok(None);
        }
        let (Some(shop), Some(payment), Some(attempt)) = (shop, payment, attempt) else {
            return Err(ProviderError::Malformed(
                "Piazza metadata is incomplete".into(),
            ));
        };
        let bad = |what: &str| ProviderError::Malformed(format!("metadata: bad {what}"));
        Ok(Some(Reference {
            shop: shop.parse().map_err(|_| bad("shop"))?,
            payment: payment.parse().map_err(|_| bad("payment"))?,
            attempt: attempt.parse().map_err(|_| bad("attempt"))?,
        }))
    }

    fn inbound(&self, event: ProviderEventId, sequence: u64, kind: NotificationKind) -> Inbound {
        Inbound {
            shop: self.shop.clone(),
            notification: Notification {
                event,
                payment: self.payment.clone(),
                attempt: self.attempt,
                sequence,
                kind,
            },
        }
    }
}

/// A bounded two-way map between attempts and intents; the oldest pair is forgotten first.
#[derive(Debug, Default)]
struct IntentCache {
    by_attempt: HashMap<(PaymentId, u32), String>,
    by_intent: HashMap<String, Reference>,
    order: VecDeque<String>,
}

impl IntentCache {
    fn insert(&mut self, reference: &Reference, intent: &str) {
        if self.by_intent.contains_key(intent) {
            return;
        }
        if self.by_intent.len() >= INTENT_CACHE_MAX
            && let Some(oldest) = self.order.pop_front()
            && let Some(old) = self.by_intent.remove(&oldest)
        {
            self.by_attempt.remove(&(old.payment, old.attempt));
        }
        self.by_attempt.insert(
            (reference.payment.clone(), reference.attempt),
            intent.to_owned(),
        );
        self.by_intent.insert(intent.to_owned(), reference.clone());
        self.order.push_back(intent.to_owned());
    }

    fn intent_of(&self, payment: &PaymentId, attempt: u32) -> Option<String> {
        self.by_attempt.get(&(payment.clone(), attempt)).cloned()
    }

    fn reference_of(&self, intent: &str) -> Option<Reference> {
        self.by_intent.get(intent).cloned()
    }
}

fn meta_key(name: &str) -> String {
    format!("metadata[{name}]")
}

/// Maps the status to an error, with the provider's message when it sent one.
fn check_status(reply: Reply) -> Result<Reply, ProviderError> {
    let status = reply.status;
    if status.is_success() {
        return Ok(reply);
    }
    let message = serde_json::from_slice::<WireError>(&reply.body)
        .map(|e| {
            let mut m = e.error.message;
            if let Some(code) = e.error.code {
                m = format!("{code}: {m}");
            }
            m
        })
        .unwrap_or_else(|_| format!("status {status}"));
    Err(match status.as_u16() {
        404 => ProviderError::NotFound,
        409 | 429 | 500..=599 => ProviderError::Transient(message),
        400..=499 => ProviderError::Rejected(message),
        _ => ProviderError::Malformed(format!("unexpected status {status}: {message}")),
    })
}

/// The answer to a POST that succeeded: unreadable means applied but unknown, so sync.
fn parse_answer<T: for<'de> Deserialize<'de>>(reply: &Reply) -> Result<T, ProviderError> {
    serde_json::from_slice(&reply.body).map_err(|e| {
        ProviderError::InDoubt(format!("unreadable answer to an applied request: {e}"))
    })
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ProviderError> {
    serde_json::from_slice(body).map_err(|e| ProviderError::Malformed(e.to_string()))
}

fn parse_value<T: for<'de> Deserialize<'de>>(value: serde_json::Value) -> Result<T, ProviderError> {
    serde_json::from_value(value).map_err(|e| ProviderError::Malformed(e.to_string()))
}

fn currency(code: &str) -> Result<Currency, ProviderError> {
    code.to_ascii_uppercase()
        .parse()
        .map_err(|_| ProviderError::Malformed(format!("currency {code:?}")))
}

/// Provider ids go into URL paths: only the characters they are made of are accepted.
fn check_object_id(id: &str) -> Result<(), ProviderError> {
    let ok = !id.is_empty()
        && id.len() <= OBJECT_ID_BYTES_MAX
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ProviderError::Malformed(format!("object id {id:?}")))
    }
}

/// The sequence of what an answer says: the provider's clock when it answered.
fn reply_sequence(reply: &Reply) -> u64 {
    let secs = reply.date_secs.unwrap_or(super::now_ms() / 1000);
    secs.saturating_mul(1000)
}

/// The event id of a notification implied by an answer: the same object in the same status
/// always gets the same id, so the core drops repeats.
fn sync_event_id(object: &str, status: &str) -> Result<ProviderEventId, ProviderError> {
    check_object_id(object)?;
    format!("sync:{object}:{status}")
        .parse()
        .map_err(|e| ProviderError::Malformed(format!("status {status:?}: {e}")))
}

/// What an intent in an answer implies.
fn implied_by_intent(
    reply: &Reply,
    intent: &WireIntent,
    reference: &Reference,
) -> Result<Vec<Notification>, ProviderError> {
    check_object_id(&intent.id)?;
    if reply.replayed {
        return Ok(Vec::new());
    }
    let currency = currency(&intent.currency)?;
    let kind = match intent.status.as_str() {
        "requires_capture" if intent.amount_capturable > 0 => NotificationKind::Authorized {
            amount: Money::new(intent.amount_capturable, currency),
        },
        "succeeded" => NotificationKind::Captured {
            amount: Money::new(intent.amount_received, currency),
        },
        "canceled" => NotificationKind::Voided,
        "requires_payment_method" if intent.last_payment_error.is_some() => {
            NotificationKind::Failed
        }
        _ => return Ok(Vec::new()),
    };
    let event = sync_event_id(&intent.id, &intent.status)?;
    Ok(vec![
        reference
            .inbound(event, reply_sequence(reply), kind)
            .notification,
    ])
}

fn refund_status(status: &str) -> RefundStatus {
    match status {
        "succeeded" => RefundStatus::Succeeded,
        "failed" | "canceled" => RefundStatus::Failed,
        _ => RefundStatus::Requested,
    }
}

fn refund_id(wire: &WireRefund, payment: &PaymentId) -> Result<RefundId, ProviderError> {
    let raw = match wire.metadata.get(META_REFUND) {
        Some(id) => id.clone(),
        None => format!("{payment}#ext:{}", wire.id),
    };
    raw.parse()
        .map_err(|e| ProviderError::Malformed(format!("refund id: {e}")))
}

/// The notification a refund in a final status implies (none while pending).
fn refund_notification(
    wire: &WireRefund,
    reference: &Reference,
    event: ProviderEventId,
    sequence: u64,
) -> Result<Option<Notification>, ProviderError> {
    let refund = refund_id(wire, &reference.payment)?;
    let kind = match refund_status(&wire.status) {
        RefundStatus::Succeeded => NotificationKind::Refunded {
            refund,
            amount: Money::new(wire.amount, currency(&wire.currency)?),
        },
        RefundStatus::Failed => NotificationKind::RefundFailed { refund },
        RefundStatus::Requested => return Ok(None),
    };
    Ok(Some(reference.inbound(event, sequence, kind).notification))
}

/// A payment intent, as much of it as the adapter reads.
#[derive(Debug, Deserialize)]
struct WireIntent {
    id: String,
    amount: i64,
    currency: String,
    status: String,
    #[serde(default)]
    amount_capturable: i64,
    #[serde(default)]
    amount_received: i64,
    #[serde(default)]
    metadata: HashMap<String, String>,
    #[serde(default)]
    last_payment_error: Option<serde_json::Value>,
}

/// A refund.
#[derive(Debug, Deserialize)]
struct WireRefund {
    id: String,
    amount: i64,
    currency: String,
    status: String,
    #[serde(default)]
    payment_intent: Option<String>,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

/// A charge (in `charge.refunded`).
#[derive(Debug, Deserialize)]
struct WireCharge {
    #[serde(default)]
    metadata: HashMap<String, String>,
    #[serde(default)]
    refunds: Option<WireList<WireRefund>>,
}

/// A list or a search result.
#[derive(Debug, Deserialize)]
struct WireList<T> {
    data: Vec<T>,
}

/// A webhook event.
#[derive(Debug, Deserialize)]
struct WireEvent {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    /// Seconds since the epoch, by the provider's clock.
    created: u64,
    data: WireEventData,
}

#[derive(Debug, Deserialize)]
struct WireEventData {
    object: serde_json::Value,
}

/// An error answer: `{"error": {"type", "code", "message"}}`.
#[derive(Debug, Deserialize)]
struct WireError {
    error: WireErrorBody,
}

#[derive(Debug, Deserialize)]
struct WireErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    code: Option<String>,
}
