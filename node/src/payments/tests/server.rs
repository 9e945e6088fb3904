//! A small local payment provider speaking the Stripe-style API the HTTP adapter uses, faithful
//! where the adapter depends on it: bearer keys, idempotency keys that replay the first answer
//! (and refuse reuse with other parameters), manual capture, partial refunds, search by
//! metadata, 404/400 error bodies, a `Date` header, and signed webhooks POSTed in order to a URL
//! given by the test. Authorization is decided at creation, like a confirmed test card: amounts
//! whose minor units end in `02` are declined.
//!
//! Fault injection: [`ProviderServer::fail_next`] answers the next requests 500 without applying
//! them; [`ProviderServer::delay_next`] applies the next request and answers it late.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::payments::http::client::{self, BaseUrl};
use crate::payments::signature;

/// The API key the server accepts.
pub(super) const API_KEY: &str = "sk_test_piazza";
/// The webhook signing secret.
pub(super) const WEBHOOK_SECRET: &str = "whsec_piazza_test";
/// Webhooks queued for delivery at most.
const WEBHOOKS_QUEUED_MAX: usize = 1024;

/// A running provider on 127.0.0.1; stops when dropped.
#[derive(Debug)]
pub(super) struct ProviderServer {
    pub(super) base_url: String,
    state: Arc<Mutex<Inner>>,
    server: tokio::task::JoinHandle<()>,
    deliverer: tokio::task::JoinHandle<()>,
}

impl Drop for ProviderServer {
    fn drop(&mut self) {
        self.server.abort();
        self.deliverer.abort();
    }
}

#[derive(Debug, Default)]
struct Inner {
    intents: BTreeMap<String, Intent>,
    refunds: BTreeMap<String, Refund>,
    /// Idempotency key → (request fingerprint, status, body).
    answers: HashMap<String, (String, u16, String)>,
    next_id: u64,
    fail_next: u32,
    delay_next_ms: Option<u64>,
    webhook_url: Option<String>,
    /// Every event made, in order.
    events: Vec<Value>,
    webhooks: Option<mpsc::Sender<Value>>,
    /// Search requests served.
    searches: u32,
}

#[derive(Clone, Debug)]
struct Intent {
    id: String,
    amount: i64,
    currency: String,
    status: &'static str,
    amount_capturable: i64,
    amount_received: i64,
    metadata: BTreeMap<String, String>,
    declined: bool,
}

#[derive(Clone, Debug)]
struct Refund {
    id: String,
    amount: i64,
    currency: String,
    status: &'static str,
    payment_intent: String,
    metadata: BTreeMap<String, String>,
}

impl Intent {
    fn json(&self) -> Value {
        let error = if self.declined {
            json!({"code": "card_declined", "message": "Your card was declined."})
        } else {
            Value::Null
        };
        json!({
            "id": self.id,
            "object": "payment_intent",
            "amount": self.amount,
            "currency": self.currency,
            "status": self.status,
            "capture_method": "manual",
            "amount_capturable": self.amount_capturable,
            "amount_received": self.amount_received,
            "metadata": self.metadata,
            "last_payment_error": error,
        })
    }
}

impl Refund {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "refund",
            "amount": self.amount,
            "currency": self.currency,
            "status": self.status,
            "payment_intent": self.payment_intent,
            "metadata": self.metadata,
        })
    }
}

impl ProviderServer {
    /// Starts the server on a free loopback port.
    pub(super) async fn start() -> ProviderServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel(WEBHOOKS_QUEUED_MAX);
        let state = Arc::new(Mutex::new(Inner {
            webhooks: Some(tx),
            ..Inner::default()
        }));
        let app = Router::new().fallback(handle).with_state(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let deliverer = tokio::spawn(deliver_webhooks(state.clone(), rx));
        ProviderServer {
            base_url: format!("http://{addr}"),
            state,
            server,
            deliverer,
        }
    }

    /// Where to POST webhooks from now on.
    pub(super) fn set_webhook_url(&self, url: &str) {
        self.state.lock().unwrap().webhook_url = Some(url.to_owned());
    }

    /// Answers the next `n` requests with 500 without applying them.
    pub(super) fn fail_next(&self, n: u32) {
        self.state.lock().unwrap().fail_next = n;
    }

    /// Applies the next request but answers it only after `ms`.
    pub(super) fn delay_next(&self, ms: u64) {
        self.state.lock().unwrap().delay_next_ms = Some(ms);
    }

    /// Payment intents created.
    pub(super) fn intent_count(&self) -> usize {
        self.state.lock().unwrap().intents.len()
    }

    /// Search requests served.
    pub(super) fn searches(&self) -> u32 {
        self.state.lock().unwrap().searches
    }

    /// Every event made so far.
    pub(super) fn events(&self) -> Vec<Value> {
        self.state.lock().unwrap().events.clone()
    }

    /// A refund made in the dashboard (no Piazza metadata): reported as `charge.refunded` with
    /// the charge's (the intent's) metadata.
    pub(super) fn dashboard_refund(&self, intent: &str, amount: i64) -> String {
        let mut inner = self.state.lock().unwrap();
        let pi = inner.intents.get(intent).cloned().unwrap();
        let id = inner.id("re");
        let refund = Refund {
            id: id.clone(),
            amount,
            currency: pi.currency.clone(),
            status: "succeeded",
            payment_intent: pi.id.clone(),
            metadata: BTreeMap::new(),
        };
        inner.refunds.insert(id.clone(), refund.clone());
        let charge = json!({
            "id": format!("ch_{}", pi.id),
            "object": "charge",
            "amount": pi.amount,
            "currency": pi.currency,
            "payment_intent": pi.id,
            "metadata": pi.metadata,
            "refunds": {"object": "list", "data": [refund.json()]},
        });
        inner.event("charge.refunded", charge);
        id
    }
}

impl Inner {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_{:06}", self.next_id)
    }

    fn event(&mut self, kind: &str, object: Value) {
        let id = self.id("evt");
        let event = json!({
            "id": id,
            "object": "event",
            "type": kind,
            "created": crate::payments::now_ms() / 1000,
            "data": {"object": object},
        });
        self.events.push(event.clone());
        if let Some(tx) = &self.webhooks {
            let _ = tx.try_send(event);
        }
    }
}

/// POSTs events in order, each signed at the moment it is sent.
async fn deliver_webhooks(state: Arc<Mutex<Inner>>, mut rx: mpsc::Receiver<Value>) {
    while let Some(event) = rx.recv().await {
        let url = state.lock().unwrap().webhook_url.clone();
        let Some(url) = url else { continue };
        let (base, path) = split_url(&url);
        let body = event.to_string().into_bytes();
        let t = crate::payments::now_ms() / 1000;
        let header = signature::header_value(WEBHOOK_SECRET.as_bytes(), t, &body);
        let headers = [(
            axum::http::HeaderName::from_static("stripe-signature"),
            axum::http::HeaderValue::from_str(&header).unwrap(),
        )];
        // A real provider retries failed deliveries for days; once is enough here.
        let _ = client::call(
            &base,
            Method::POST,
            &path,
            &headers,
            Some(("application/json", body)),
            Duration::from_secs(10),
        )
        .await;
    }
}

/// Splits `http://host:port/path` into the base and the path.
pub(super) fn split_url(url: &str) -> (BaseUrl, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let slash = rest.find('/').unwrap();
    (
        BaseUrl::parse(&format!("http://{}", &rest[..slash])).unwrap(),
        rest[slash..].to_owned(),
    )
}

fn error(status: StatusCode, code: &str, message: &str) -> (StatusCode, Value) {
    let kind = if status == StatusCode::PAYMENT_REQUIRED {
        "card_error"
    } else {
        "invalid_request_error"
    };
    (
        status,
        json!({"error": {"type": kind, "code": code, "message": message}}),
    )
}

async fn handle(
    axum::extract::State(state): axum::extract::State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorized = headers
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == format!("Bearer {API_KEY}").as_bytes());
    if !authorized {
        let (status, body) = error(
            StatusCode::UNAUTHORIZED,
            "api_key_invalid",
            "Invalid API Key",
        );
        return json_response(status, &body);
    }
    let delay;
    let (status, body, replayed) = {
        let mut inner = state.lock().unwrap();
        if inner.fail_next > 0 {
            inner.fail_next -= 1;
            let (status, body) = error(StatusCode::INTERNAL_SERVER_ERROR, "api_error", "boom");
            return json_response(status, &body);
        }
        delay = inner.delay_next_ms.take();
        let form = parse_form(&body);
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let fingerprint = format!("{method} {} {}", uri.path(), String::from_utf8_lossy(&body));
        match (&method, &key) {
            (&Method::POST, Some(key)) if inner.answers.contains_key(key) => {
                let (seen, status, body) = inner.answers[key].clone();
                if seen == fingerprint {
                    (StatusCode::from_u16(status).unwrap(), body, true)
                } else {
                    let (status, body) = error(
                        StatusCode::BAD_REQUEST,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same parameters",
                    );
                    (status, body.to_string(), false)
                }
            }
            _ => {
                let (status, body) = route(&mut inner, &method, &uri, &form);
                let body = body.to_string();
                if method == Method::POST
                    && let Some(key) = key
                {
                    inner
                        .answers
                        .insert(key, (fingerprint, status.as_u16(), body.clone()));
                }
                (status, body, false)
            }
        }
    };
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut response = (status, [("content-type", "application/json")], body).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", "true".parse().unwrap());
    }
    response
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn route(
    inner: &mut Inner,
    method: &Method,
    uri: &Uri,
    form: &BTreeMap<String, String>,
) -> (StatusCode, Value) {
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let query = parse_form(uri.query().unwrap_or("").as_bytes());
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["v1", "payment_intents"]) => create_intent(inner, form),
        ("GET", ["v1", "payment_intents", "search"]) => {
            inner.searches += 1;
            let conditions = parse_query(query.get("query").map_or("", String::as_str));
            let data: Vec<Value> = inner
                .intents
                .values()
                .filter(|pi| {
                    conditions
                        .iter()
                        .all(|(k, v)| pi.metadata.get(k) == Some(v))
                })
                .map(Intent::json)
                .collect();
            (
                StatusCode::OK,
                json!({"object": "search_result", "data": data, "has_more": false}),
            )
        }
        ("GET", ["v1", "payment_intents", id]) => match inner.intents.get(*id) {
            Some(pi) => (StatusCode::OK, pi.json()),
            None => missing(id),
        },
        ("POST", ["v1", "payment_intents", id, "capture"]) => capture(inner, id, form),
        ("POST", ["v1", "payment_intents", id, "cancel"]) => cancel(inner, id),
        ("POST", ["v1", "refunds"]) => create_refund(inner, form),
        ("GET", ["v1", "refunds"]) => {
            let pi = query.get("payment_intent").cloned().unwrap_or_default();
            let data: Vec<Value> = inner
                .refunds
                .values()
                .filter(|r| r.payment_intent == pi)
                .map(Refund::json)
                .collect();
            (
                StatusCode::OK,
                json!({"object": "list", "data": data, "has_more": false}),
            )
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "resource_missing",
            "Unrecognized request URL",
        ),
    }
}

fn missing(id: &str) -> (StatusCode, Value) {
    error(
        StatusCode::NOT_FOUND,
        "resource_missing",
        &format!("No such payment_intent: '{id}'"),
    )
}

fn metadata(form: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    form.iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("metadata[")?.strip_suffix(']')?;
            Some((name.to_owned(), v.clone()))
        })
        .collect()
}

fn create_intent(inner: &mut Inner, form: &BTreeMap<String, String>) -> (StatusCode, Value) {
    let Some(amount) = form.get("amount").and_then(|a| a.parse::<i64>().ok()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "parameter_missing",
            "Missing amount",
        );
    };
    let Some(currency) = form.get("currency") else {
        return error(
            StatusCode::BAD_REQUEST,
            "parameter_missing",
            "Missing currency",
        );
    };
    if amount <= 0 || form.get("capture_method").map(String::as_str) != Some("manual") {
        return error(
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
            "Bad parameters",
        );
    }
    let id = inner.id("pi");
    let declined = amount % 100 == 2;
    let intent = Intent {
        id: id.clone(),
        amount,
        currency: currency.clone(),
        status: if declined {
            "requires_payment_method"
        } else {
            "requires_capture"
        },
        amount_capturable: if declined { 0 } else { amount },
        amount_received: 0,
        metadata: metadata(form),
        declined,
    };
    let json = intent.json();
    inner.intents.insert(id, intent);
    let kind = if declined {
        "payment_intent.payment_failed"
    } else {
        "payment_intent.amount_capturable_updated"
    };
    inner.event(kind, json.clone());
    (StatusCode::OK, json)
}

fn capture(inner: &mut Inner, id: &str, form: &BTreeMap<String, String>) -> (StatusCode, Value) {
    let Some(pi) = inner.intents.get_mut(id) else {
        return missing(id);
    };
    if pi.status != "requires_capture" {
        let message = format!(
            "This PaymentIntent could not be captured because it has a status of {}.",
            pi.status
        );
        return error(
            StatusCode::BAD_REQUEST,
            "payment_intent_unexpected_state",
            &message,
        );
    }
    let amount = form
        .get("amount_to_capture")
        .and_then(|a| a.parse::<i64>().ok())
        .unwrap_or(pi.amount_capturable);
    if amount <= 0 || amount > pi.amount_capturable {
        return error(
            StatusCode::BAD_REQUEST,
            "amount_too_large",
            "amount_to_capture exceeds the capturable amount",
        );
    }
    pi.status = "succeeded";
    pi.amount_received = amount;
    pi.amount_capturable = 0;
    let json = pi.json();
    inner.event("payment_intent.succeeded", json.clone());
    (StatusCode::OK, json)
}

fn cancel(inner: &mut Inner, id: &str) -> (StatusCode, Value) {
    let Some(pi) = inner.intents.get_mut(id) else {
        return missing(id);
    };
    if !matches!(pi.status, "requires_capture" | "requires_payment_method") {
        let message = format!(
            "You cannot cancel this PaymentIntent because it has a status of {}.",
            pi.status
        );
        return error(
            StatusCode::BAD_REQUEST,
            "payment_intent_unexpected_state",
            &message,
        );
    }
    pi.status = "canceled";
    pi.amount_capturable = 0;
    let json = pi.json();
    inner.event("payment_intent.canceled", json.clone());
    (StatusCode::OK, json)
}

fn create_refund(inner: &mut Inner, form: &BTreeMap<String, String>) -> (StatusCode, Value) {
    let pi_id = form.get("payment_intent").cloned().unwrap_or_default();
    let Some(pi) = inner.intents.get(&pi_id).cloned() else {
        return missing(&pi_id);
    };
    if pi.status != "succeeded" {
        return error(
            StatusCode::BAD_REQUEST,
            "charge_not_captured",
            "This PaymentIntent has no captured charge to refund.",
        );
    }
    let refunded: i64 = inner
        .refunds
        .values()
        .filter(|r| r.payment_intent == pi_id && r.status != "failed")
        .map(|r| r.amount)
        .sum();
    let left = pi.amount_received - refunded;
    let amount = form
        .get("amount")
        .and_then(|a| a.parse::<i64>().ok())
        .unwrap_or(left);
    if left == 0 {
        return error(
            StatusCode::BAD_REQUEST,
            "charge_already_refunded",
            "Charge has already been refunded.",
        );
    }
    if amount <= 0 || amount > left {
        return error(
            StatusCode::BAD_REQUEST,
            "amount_too_large",
            "Refund amount is greater than the unrefunded amount.",
        );
    }
    let id = inner.id("re");
    let refund = Refund {
        id: id.clone(),
        amount,
        currency: pi.currency.clone(),
        status: "succeeded",
        payment_intent: pi_id,
        metadata: metadata(form),
    };
    let json = refund.json();
    inner.refunds.insert(id, refund);
    inner.event("refund.created", json.clone());
    (StatusCode::OK, json)
}

/// `metadata['k']:'v' AND metadata['k2']:'v2'` → pairs (the only query form the adapter uses).
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split(" AND ")
        .filter_map(|clause| {
            let rest = clause.trim().strip_prefix("metadata['")?;
            let (key, rest) = rest.split_once("']:'")?;
            let value = rest.strip_suffix('\'')?;
            Some((key.to_owned(), value.to_owned()))
        })
        .collect()
}

/// Decodes `application/x-www-form-urlencoded` (or a query string).
pub(super) fn parse_form(body: &[u8]) -> BTreeMap<String, String> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}
