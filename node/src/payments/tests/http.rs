//! The HTTP adapter against the local provider (`server.rs`), with webhooks delivered over real
//! sockets to the real webhook route (`webhook_router`) and verified by the adapter.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use tokio::sync::mpsc;

use super::server::{API_KEY, ProviderServer, WEBHOOK_SECRET, split_url};
use super::{authorize, capture, eur, next, payment, refund, shop_id, void};
use crate::commerce::payment::{NotificationKind, RefundStatus, SnapshotStatus};
use crate::payments::http::client::{self, BaseUrl};
use crate::payments::http::{HttpConfig, HttpProvider};
use crate::payments::{
    INBOUND_QUEUE_MAX, Inbound, PaymentProvider, PaymentsHandle, ProviderError, WEBHOOK_PATH,
    signature, webhook_router,
};

fn config(base_url: &str, timeout_ms: u64) -> HttpConfig {
    HttpConfig {
        base_url: BaseUrl::parse(base_url).unwrap(),
        api_key: API_KEY.into(),
        webhook_secret: WEBHOOK_SECRET.as_bytes().to_vec(),
        webhook_tolerance_secs: 300,
        request_timeout: Duration::from_millis(timeout_ms),
    }
}

fn adapter(server: &ProviderServer, timeout_ms: u64) -> HttpProvider {
    HttpProvider::new(config(&server.base_url, timeout_ms)).unwrap()
}

/// A provider server, an adapter, and the webhook route on its own listener with the server
/// pointed at it.
struct Setup {
    server: ProviderServer,
    provider: Arc<HttpProvider>,
    rx: mpsc::Receiver<Inbound>,
    webhook_url: String,
    route: tokio::task::JoinHandle<()>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.route.abort();
    }
}

async fn setup() -> Setup {
    let server = ProviderServer::start().await;
    let provider = Arc::new(adapter(&server, 5_000));
    let (tx, rx) = mpsc::channel(INBOUND_QUEUE_MAX);
    let app = webhook_router(Some(PaymentsHandle {
        provider: provider.clone(),
        inbound: tx,
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let webhook_url = format!("http://{}{WEBHOOK_PATH}", listener.local_addr().unwrap());
    let route = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    server.set_webhook_url(&webhook_url);
    Setup {
        server,
        provider,
        rx,
        webhook_url,
        route,
    }
}

/// The next webhook notification (sync answers never go through the queue).
async fn webhook(setup: &mut Setup) -> Inbound {
    let inbound = next(&mut setup.rx).await;
    assert!(inbound.notification.event.as_str().starts_with("evt_"));
    inbound
}

#[tokio::test]
async fn a_full_flow_answers_and_notifies_by_signed_webhooks() {
    let mut s = setup().await;
    let shop = shop_id();
    let pay = payment("o-h1");

    let implied = s
        .provider
        .send(&shop, &authorize("o-h1", 1, eur(1000)))
        .await
        .unwrap();
    assert_eq!(implied.len(), 1);
    assert_eq!(
        implied[0].kind,
        NotificationKind::Authorized { amount: eur(1000) }
    );
    assert_eq!(
        (implied[0].payment.clone(), implied[0].attempt),
        (pay.clone(), 1)
    );
    let hook = webhook(&mut s).await;
    assert_eq!(hook.shop, shop);
    assert_eq!(
        hook.notification.kind,
        NotificationKind::Authorized { amount: eur(1000) }
    );
    assert!(hook.notification.sequence > 0);

    let implied = s
        .provider
        .send(&shop, &capture("o-h1", 1, eur(1000)))
        .await
        .unwrap();
    assert_eq!(
        implied[0].kind,
        NotificationKind::Captured { amount: eur(1000) }
    );
    let hook = webhook(&mut s).await;
    assert_eq!(
        hook.notification.kind,
        NotificationKind::Captured { amount: eur(1000) }
    );

    let implied = s
        .provider
        .send(&shop, &refund("o-h1", 1, 1, eur(300)))
        .await
        .unwrap();
    assert!(
        matches!(&implied[0].kind, NotificationKind::Refunded { refund, amount }
        if refund.as_str() == "o-h1#1#r1" && *amount == eur(300))
    );
    let hook = webhook(&mut s).await;
    assert!(
        matches!(&hook.notification.kind, NotificationKind::Refunded { refund, .. }
        if refund.as_str() == "o-h1#1#r1")
    );

    // More than is left: the provider refuses.
    let over = s
        .provider
        .send(&shop, &refund("o-h1", 1, 2, eur(800)))
        .await;
    assert!(matches!(over, Err(ProviderError::Rejected(_))), "{over:?}");
    s.provider
        .send(&shop, &refund("o-h1", 1, 3, eur(700)))
        .await
        .unwrap();
    webhook(&mut s).await;

    let snapshot = s.provider.fetch(&shop, &pay, 1).await.unwrap();
    assert_eq!(snapshot.status, SnapshotStatus::Captured);
    assert_eq!(
        (snapshot.authorized, snapshot.captured),
        (eur(1000), eur(1000))
    );
    assert!(snapshot.sequence >= hook.notification.sequence);
    let mut refunds: Vec<_> = snapshot
        .refunds
        .iter()
        .map(|r| (r.refund.as_str().to_owned(), r.amount, r.status))
        .collect();
    refunds.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        refunds,
        [
            ("o-h1#1#r1".to_owned(), eur(300), RefundStatus::Succeeded),
            ("o-h1#1#r3".to_owned(), eur(700), RefundStatus::Succeeded),
        ]
    );
}

#[tokio::test]
async fn voids_declines_and_dashboard_refunds_map_to_notifications() {
    let mut s = setup().await;
    let shop = shop_id();

    s.provider
        .send(&shop, &authorize("o-h2", 1, eur(500)))
        .await
        .unwrap();
    webhook(&mut s).await;
    let implied = s.provider.send(&shop, &void("o-h2", 1)).await.unwrap();
    assert_eq!(implied[0].kind, NotificationKind::Voided);
    assert_eq!(
        webhook(&mut s).await.notification.kind,
        NotificationKind::Voided
    );
    let snapshot = s.provider.fetch(&shop, &payment("o-h2"), 1).await.unwrap();
    assert_eq!(snapshot.status, SnapshotStatus::Voided);

    let implied = s
        .provider
        .send(&shop, &authorize("o-h3", 1, eur(1002)))
        .await
        .unwrap();
    assert_eq!(implied[0].kind, NotificationKind::Failed);
    assert_eq!(
        webhook(&mut s).await.notification.kind,
        NotificationKind::Failed
    );
    let snapshot = s.provider.fetch(&shop, &payment("o-h3"), 1).await.unwrap();
    assert_eq!(snapshot.status, SnapshotStatus::Failed);

    s.provider
        .send(&shop, &authorize("o-h4", 1, eur(900)))
        .await
        .unwrap();
    webhook(&mut s).await;
    s.provider
        .send(&shop, &capture("o-h4", 1, eur(900)))
        .await
        .unwrap();
    webhook(&mut s).await;
    let intent = s
        .server
        .events()
        .iter()
        .rev()
        .find(|e| e["type"] == "payment_intent.succeeded")
        .map(|e| e["data"]["object"]["id"].as_str().unwrap().to_owned())
        .unwrap();
    let re = s.server.dashboard_refund(&intent, 200);
    let hook = webhook(&mut s).await;
    let expected = format!("o-h4#1#ext:{re}");
    assert!(
        matches!(&hook.notification.kind, NotificationKind::Refunded { refund, amount }
        if refund.as_str() == expected && *amount == eur(200)),
        "{hook:?}"
    );
    let snapshot = s.provider.fetch(&shop, &payment("o-h4"), 1).await.unwrap();
    assert_eq!(snapshot.refunds.len(), 1);
    assert_eq!(snapshot.refunds[0].refund.as_str(), expected);
}

#[tokio::test]
async fn a_retry_with_the_same_key_creates_one_intent() {
    let s = setup().await;
    let shop = shop_id();
    let auth = authorize("o-h5", 1, eur(700));

    s.server.fail_next(1);
    let first = s.provider.send(&shop, &auth).await;
    assert!(
        matches!(first, Err(ProviderError::Transient(_))),
        "{first:?}"
    );
    assert_eq!(s.server.intent_count(), 0);

    let second = s.provider.send(&shop, &auth).await.unwrap();
    assert_eq!(
        second.len(),
        1,
        "the first real answer implies the authorization"
    );
    // A replayed answer describes the past: it implies nothing.
    let third = s.provider.send(&shop, &auth).await.unwrap();
    assert!(third.is_empty(), "{third:?}");
    assert_eq!(s.server.intent_count(), 1);

    // The same key with other parameters is refused by the provider.
    let mut other = auth.clone();
    other.kind = crate::commerce::payment::RequestKind::Authorize { amount: eur(701) };
    let refused = s.provider.send(&shop, &other).await;
    assert!(
        matches!(refused, Err(ProviderError::Rejected(_))),
        "{refused:?}"
    );
    assert_eq!(s.server.intent_count(), 1);
}

#[tokio::test]
async fn statuses_map_to_errors() {
    let s = setup().await;
    let shop = shop_id();
    // 5xx on a read and on a write: transient.
    s.server.fail_next(1);
    let read = s.provider.fetch(&shop, &payment("o-h6"), 1).await;
    assert!(matches!(read, Err(ProviderError::Transient(_))), "{read:?}");
    // Unknown attempt: the search finds nothing.
    let unknown = s.provider.fetch(&shop, &payment("o-h6"), 1).await;
    assert!(
        matches!(unknown, Err(ProviderError::NotFound)),
        "{unknown:?}"
    );
    let unknown = s.provider.send(&shop, &capture("o-h6", 1, eur(100))).await;
    assert!(
        matches!(unknown, Err(ProviderError::NotFound)),
        "{unknown:?}"
    );
    // A 400 from the provider: capture of a cancelled intent.
    s.provider
        .send(&shop, &authorize("o-h6", 1, eur(100)))
        .await
        .unwrap();
    s.provider.send(&shop, &void("o-h6", 1)).await.unwrap();
    let refused = s.provider.send(&shop, &capture("o-h6", 1, eur(100))).await;
    let Err(ProviderError::Rejected(message)) = refused else {
        panic!("expected Rejected, got {refused:?}");
    };
    assert!(
        message.contains("payment_intent_unexpected_state"),
        "{message}"
    );
    // Nobody listening: transient.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let down = HttpProvider::new(config(&closed, 5_000)).unwrap();
    let down = down.send(&shop, &authorize("o-h7", 1, eur(100))).await;
    assert!(matches!(down, Err(ProviderError::Transient(_))), "{down:?}");
}

#[tokio::test]
async fn a_request_answered_too_late_is_in_doubt_and_a_fetch_settles_it() {
    let s = setup().await;
    let shop = shop_id();
    let impatient = adapter(&s.server, 300);
    s.server.delay_next(2_000);
    let doubt = impatient.send(&shop, &authorize("o-h8", 1, eur(100))).await;
    assert!(matches!(doubt, Err(ProviderError::InDoubt(_))), "{doubt:?}");
    // It was applied: a sync finds it (by search, the answer never came).
    let snapshot = s.provider.fetch(&shop, &payment("o-h8"), 1).await.unwrap();
    assert_eq!(snapshot.status, SnapshotStatus::Authorized);
}

#[tokio::test]
async fn after_a_restart_the_intent_is_found_by_search() {
    let s = setup().await;
    let shop = shop_id();
    s.provider
        .send(&shop, &authorize("o-h9", 1, eur(100)))
        .await
        .unwrap();
    assert_eq!(
        s.server.searches(),
        0,
        "the adapter that created it knows it"
    );

    let restarted = adapter(&s.server, 5_000);
    restarted
        .send(&shop, &capture("o-h9", 1, eur(100)))
        .await
        .unwrap();
    assert_eq!(s.server.searches(), 1);
    let snapshot = restarted.fetch(&shop, &payment("o-h9"), 1).await.unwrap();
    assert_eq!(snapshot.status, SnapshotStatus::Captured);
    assert_eq!(s.server.searches(), 1, "found once, then cached");
    // Another shop's adapter call cannot reach this shop's intent.
    let elsewhere = super::id("elsewhere");
    let other = adapter(&s.server, 5_000)
        .fetch(&elsewhere, &payment("o-h9"), 1)
        .await;
    assert!(matches!(other, Err(ProviderError::NotFound)), "{other:?}");
}

/// POSTs `body` to the webhook route with `signature` and returns the status and the body.
async fn post_webhook(url: &str, signature: Option<String>, body: &[u8]) -> (StatusCode, String) {
    let (base, path) = split_url(url);
    let mut headers = Vec::new();
    if let Some(signature) = signature {
        headers.push((
            HeaderName::from_static("stripe-signature"),
            HeaderValue::from_str(&signature).unwrap(),
        ));
    }
    let reply = client::call(
        &base,
        Method::POST,
        &path,
        &headers,
        Some(("application/json", body.to_vec())),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    (
        reply.status,
        String::from_utf8_lossy(&reply.body).into_owned(),
    )
}

#[tokio::test]
async fn forged_stale_and_malformed_webhooks_are_refused_with_typed_errors() {
    let mut s = setup().await;
    let shop = shop_id();
    s.provider
        .send(&shop, &authorize("o-h10", 1, eur(100)))
        .await
        .unwrap();
    webhook(&mut s).await;
    let event = s.server.events().pop().unwrap();
    let body = event.to_string().into_bytes();
    let now_secs = crate::payments::now_ms() / 1000;

    // Through the route: 400 and the error's name.
    let forged = signature::header_value(b"whsec_forged", now_secs, &body);
    let (status, answer) = post_webhook(&s.webhook_url, Some(forged.clone()), &body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer.contains("\"bad_signature\""), "{answer}");

    let (status, answer) = post_webhook(&s.webhook_url, None, &body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer.contains("\"bad_signature\""), "{answer}");

    let stale = signature::header_value(WEBHOOK_SECRET.as_bytes(), now_secs - 3600, &body);
    let (status, answer) = post_webhook(&s.webhook_url, Some(stale.clone()), &body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer.contains("\"stale_timestamp\""), "{answer}");

    let garbage = b"{\"id\": 12}";
    let signed = signature::header_value(WEBHOOK_SECRET.as_bytes(), now_secs, garbage);
    let (status, answer) = post_webhook(&s.webhook_url, Some(signed), garbage).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer.contains("\"malformed\""), "{answer}");

    // And directly through `verify`.
    let mut headers = HeaderMap::new();
    headers.insert("stripe-signature", HeaderValue::from_str(&forged).unwrap());
    let now_ms = crate::payments::now_ms();
    assert!(matches!(
        s.provider.verify(&headers, &body, now_ms),
        Err(ProviderError::BadSignature)
    ));
    headers.insert("stripe-signature", HeaderValue::from_str(&stale).unwrap());
    assert!(matches!(
        s.provider.verify(&headers, &body, now_ms),
        Err(ProviderError::StaleTimestamp)
    ));

    // A redelivery, properly signed now, is accepted and queued (the core drops it as a
    // duplicate by its event id).
    let good = signature::header_value(WEBHOOK_SECRET.as_bytes(), now_secs, &body);
    let (status, _) = post_webhook(&s.webhook_url, Some(good), &body).await;
    assert_eq!(status, StatusCode::OK);
    let again = webhook(&mut s).await;
    assert_eq!(
        again.notification.event.as_str(),
        event["id"].as_str().unwrap()
    );
    assert!(s.rx.try_recv().is_err(), "nothing else was queued");
}

#[tokio::test]
async fn events_without_piazza_metadata_verify_to_nothing() {
    let mut s = setup().await;
    let body = serde_json::json!({
        "id": "evt_other",
        "type": "payment_intent.succeeded",
        "created": crate::payments::now_ms() / 1000,
        "data": {"object": {"id": "pi_other", "amount": 5, "currency": "usd", "status": "succeeded", "metadata": {}}},
    })
    .to_string();
    let now_ms = crate::payments::now_ms();
    let mut headers = HeaderMap::new();
    let header = signature::header_value(WEBHOOK_SECRET.as_bytes(), now_ms / 1000, body.as_bytes());
    headers.insert("stripe-signature", HeaderValue::from_str(&header).unwrap());
    assert!(
        s.provider
            .verify(&headers, body.as_bytes(), now_ms)
            .unwrap()
            .is_empty()
    );
    // An unknown event type too.
    let body = body.replace("payment_intent.succeeded", "customer.created");
    let header = signature::header_value(WEBHOOK_SECRET.as_bytes(), now_ms / 1000, body.as_bytes());
    headers.insert("stripe-signature", HeaderValue::from_str(&header).unwrap());
    assert!(
        s.provider
            .verify(&headers, body.as_bytes(), now_ms)
            .unwrap()
            .is_empty()
    );
    // Through the route: acknowledged, nothing queued.
    let (status, _) = post_webhook(&s.webhook_url, Some(header), body.as_bytes()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(s.rx.try_recv().is_err());
}

#[tokio::test]
async fn without_payments_there_is_no_webhook_route() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{WEBHOOK_PATH}", listener.local_addr().unwrap());
    let route = tokio::spawn(async move {
        let _ = axum::serve(listener, webhook_router(None)).await;
    });
    let (status, _) = post_webhook(&url, None, b"{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    route.abort();
}
