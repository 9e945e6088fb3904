//! Webhooks delivered to a real HTTP receiver on loopback.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio::sync::watch;

use super::super::config::{SinksSection, WebhookSink};
use super::super::{SinksHandle, dead_prefix, start};
use super::*;

const SECRET: &str = "whsec-0123456789abcdef";

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    id: String,
    event_type: String,
    attempt: u32,
    redelivery: bool,
    signature_ok: bool,
    body: Vec<u8>,
}

/// What the receiver answers, and what it got.
#[derive(Debug, Default)]
struct Script {
    received: Vec<Received>,
    /// Event id → how many more attempts get a 500.
    fail_next: HashMap<String, u32>,
    /// Events of these shops always get a 500.
    fail_shops: HashSet<String>,
    /// These events always get a 500.
    fail_ids: HashSet<String>,
}

/// A real HTTP server on 127.0.0.1 that checks signatures like a customer's would.
#[derive(Debug)]
struct Receiver {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Receiver {
    async fn start() -> Receiver {
        let script = Arc::new(Mutex::new(Script::default()));
        let app = axum::Router::new()
            .route("/hook", post(hook))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            addr,
            script,
            server,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook?source=piazza", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.script.lock().unwrap().received.clone()
    }

    fn received_ids(&self) -> Vec<String> {
        self.received().into_iter().map(|r| r.id).collect()
    }

    fn edit(&self, f: impl FnOnce(&mut Script)) {
        f(&mut self.script.lock().unwrap());
    }
}

async fn hook(
    State(script): State<Arc<Mutex<Script>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let received = Received {
        id: header("piazza-event-id"),
        event_type: header("piazza-event-type"),
        attempt: header("piazza-attempt").parse().unwrap_or(0),
        redelivery: header("piazza-redelivery") == "true",
        signature_ok: header("content-type") == "application/json"
            && verify(&header("piazza-signature"), &body),
        body: body.to_vec(),
    };
    let mut script = script.lock().unwrap();
    let shop = received
        .id
        .rsplit_once(':')
        .map(|(shop, _)| shop.to_owned());
    let fail = script.fail_ids.contains(&received.id)
        || shop.is_some_and(|shop| script.fail_shops.contains(&shop))
        || match script.fail_next.get_mut(&received.id) {
            Some(left) if *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        };
    script.received.push(received);
    if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

/// Checks `t=<secs>,v1=<hex>` the way the docs tell receivers to.
fn verify(signature: &str, body: &[u8]) -> bool {
    let Some((t, v1)) = signature
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
    else {
        return false;
    };
    let Ok(secs) = t.parse::<u64>() else {
        return false;
    };
    if secs.abs_diff(crate::node::now_ms() / 1000) > 300 || v1.len() != 64 {
        return false;
    }
    let Some(tag) = (0..32)
        .map(|i| u8::from_str_radix(&v1[2 * i..2 * i + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let mut message = format!("{t}.").into_bytes();
    message.extend_from_slice(body);
    ring::hmac::verify(&key, &message, &tag).is_ok()
}

/// One webhook sink to `receiver`, retrying fast.
fn config(receiver: &Receiver, edit: impl FnOnce(&mut WebhookSink)) -> SinksSection {
    let mut hook = WebhookSink {
        name: Some("hook".into()),
        shop: "*".into(),
        url: receiver.url(),
        secret: Some(SECRET.into()),
        secret_file: None,
        event_types: Vec::new(),
        max_age_secs: 7 * 24 * 3600,
        initial_backoff_ms: 20,
        max_backoff_ms: 100,
        concurrency: 4,
    };
    edit(&mut hook);
    SinksSection {
        webhooks: vec![hook],
        ..SinksSection::default()
    }
}

/// A started sink and the sender that stops it.
struct Running {
    handle: SinksHandle,
    stop: watch::Sender<bool>,
}

impl Running {
    fn start(config: &SinksSection, storage: &Arc<dyn Storage>) -> Running {
        let (stop, stopped) = watch::channel(false);
        let handle = start(config, storage.clone(), stopped).unwrap();
        Running { handle, stop }
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(WAIT, self.handle.stopped())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn delivers_signed_events_in_order_and_retries_with_redelivery_flag() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open_store(dir.path());
    let receiver = Receiver::start().await;
    let s = shop("shop-1");
    receiver.edit(|script| {
        script.fail_next.insert("shop-1:2".into(), 2);
    });
    let running = Running::start(&config(&receiver, |_| {}), &storage);
    append(
        storage.as_ref(),
        &s,
        &[paid("o-1"), paid("o-2"), paid("o-3")],
    )
    .await;
    running.handle.notify();
    wait_cursor(storage.as_ref(), "hook", &s, 4).await;

    let received = receiver.received();
    let ids: Vec<&str> = received.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        ["shop-1:1", "shop-1:2", "shop-1:2", "shop-1:2", "shop-1:3"],
        "in seq order, event 3 only after event 2 succeeded"
    );
    assert!(received.iter().all(|r| r.signature_ok), "{received:?}");
    assert!(received.iter().all(|r| r.event_type == "OrderPaid"));
    let second: Vec<(u32, bool)> = received[1..4]
        .iter()
        .map(|r| (r.attempt, r.redelivery))
        .collect();
    assert_eq!(second, [(1, false), (2, true), (3, true)]);
    assert_eq!((received[4].attempt, received[4].redelivery), (1, false));
    // The body is the stored envelope, byte for byte.
    let (rows, _) = storage
        .kv_scan(KvTable::Outbox, &outbox::shop_prefix(&s), None, 10)
        .unwrap();
    assert_eq!(received[0].body, rows[0].1);
    running.stop().await;
    close_store(storage).await;
}

#[tokio::test]
async fn a_failing_shop_does_not_hold_back_other_shops() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open_store(dir.path());
    let receiver = Receiver::start().await;
    receiver.edit(|script| {
        script.fail_shops.insert("broken".into());
    });
    let (broken, fine) = (shop("broken"), shop("fine"));
    append(storage.as_ref(), &broken, &[paid("b-1"), paid("b-2")]).await;
    let running = Running::start(&config(&receiver, |_| {}), &storage);
    for i in 0..5 {
        append(storage.as_ref(), &fine, &[paid(&format!("f-{i}"))]).await;
        running.handle.notify();
    }
    wait_cursor(storage.as_ref(), "hook", &fine, 6).await;
    wait_until("a few retries of the broken shop", || {
        receiver
            .received_ids()
            .iter()
            .filter(|id| *id == "broken:1")
            .count()
            >= 3
    })
    .await;
    let ids = receiver.received_ids();
    let fine_ids: Vec<&String> = ids.iter().filter(|id| id.starts_with("fine:")).collect();
    assert_eq!(fine_ids, ["fine:1", "fine:2", "fine:3", "fine:4", "fine:5"]);
    assert!(
        !ids.iter().any(|id| id == "broken:2"),
        "the broken shop's later event waits behind its first: {ids:?}"
    );
    let cursor = read_cursor(storage.as_ref(), "hook", &broken).unwrap();
    assert_eq!(cursor.next, 1);
    assert!(cursor.attempts >= 3);
    assert!(cursor.last_error.contains("500"), "{cursor:?}");
    running.stop().await;
    close_store(storage).await;
}

#[tokio::test]
async fn event_types_filter_skips_other_types() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open_store(dir.path());
    let receiver = Receiver::start().await;
    let s = shop("shop-1");
    let events = every_event();
    append(storage.as_ref(), &s, &events).await;
    let running = Running::start(
        &config(&receiver, |hook| {
            hook.event_types = vec!["OrderPaid".into(), "RefundIssued".into()];
            hook.shop = "shop-1".into();
        }),
        &storage,
    );
    wait_cursor(storage.as_ref(), "hook", &s, events.len() as u64 + 1).await;
    let types: Vec<String> = receiver
        .received()
        .into_iter()
        .map(|r| r.event_type)
        .collect();
    assert_eq!(types, ["OrderPaid", "RefundIssued"]);
    running.stop().await;
    close_store(storage).await;
}

#[tokio::test]
async fn a_sink_for_one_shop_ignores_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open_store(dir.path());
    let receiver = Receiver::start().await;
    let (mine, other) = (shop("mine"), shop("other"));
    append(storage.as_ref(), &other, &[paid("x")]).await;
    append(storage.as_ref(), &mine, &[paid("y")]).await;
    let running = Running::start(
        &config(&receiver, |hook| hook.shop = "mine".into()),
        &storage,
    );
    wait_cursor(storage.as_ref(), "hook", &mine, 2).await;
    assert_eq!(receiver.received_ids(), ["mine:1"]);
    assert_eq!(
        read_cursor(storage.as_ref(), "hook", &other).unwrap(),
        ShopCursor::at(1)
    );
    running.stop().await;
    close_store(storage).await;
}

#[tokio::test]
async fn an_event_failing_past_its_max_age_is_dead_and_the_next_goes() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open_store(dir.path());
    let receiver = Receiver::start().await;
    receiver.edit(|script| {
        script.fail_ids.insert("shop-1:1".into());
    });
    let s = shop("shop-1");
    append(storage.as_ref(), &s, &[paid("o-1"), paid("o-2")]).await;
    // The real default is seven days; one second shows the cut-off without waiting for it.
    let running = Running::start(
        &config(&receiver, |hook| {
            hook.max_age_secs = 1;
            hook.initial_backoff_ms = 50;
            hook.max_backoff_ms = 200;
        }),
        &storage,
    );
    wait_cursor(storage.as_ref(), "hook", &s, 3).await;
    let ids = receiver.received_ids();
    let attempts = ids.iter().filter(|id| *id == "shop-1:1").count();
    assert!(attempts >= 2, "{ids:?}");
    assert_eq!(ids.last().map(String::as_str), Some("shop-1:2"));
    let (dead, _) = storage
        .kv_scan(KvTable::Sinks, &dead_prefix("hook", &s), None, 10)
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].0.ends_with(&1u64.to_be_bytes()));
    let row: serde_json::Value = serde_json::from_slice(&dead[0].1).unwrap();
    assert_eq!(row["id"], "shop-1:1");
    assert_eq!(row["type"], "OrderPaid");
    assert_eq!(row["attempts"], attempts as u64);
    assert!(row["last_error"].as_str().unwrap().contains("500"));
    assert!(row["dead_ms"].as_u64().unwrap() >= row["first_attempt_ms"].as_u64().unwrap() + 1000);
    running.stop().await;
    close_store(storage).await;
}

#[tokio::test]
async fn delivery_resumes_after_a_restart_as_a_redelivery() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    receiver.edit(|script| {
        script.fail_shops.insert("shop-1".into());
    });
    let s = shop("shop-1");
    let config = config(&receiver, |_| {});

    let storage = open_store(dir.path());
    append(storage.as_ref(), &s, &[paid("o-1"), paid("o-2")]).await;
    let running = Running::start(&config, &storage);
    wait_until("two failed attempts", || receiver.received().len() >= 2).await;
    running.stop().await;
    let attempts_before = read_cursor(storage.as_ref(), "hook", &s).unwrap().attempts;
    assert!(attempts_before >= 2);
    close_store(storage).await;

    // A new process: the store is opened again and the sink starts from what it recorded.
    receiver.edit(|script| script.fail_shops.clear());
    let before = receiver.received().len();
    let storage = open_store(dir.path());
    let running = Running::start(&config, &storage);
    wait_cursor(storage.as_ref(), "hook", &s, 3).await;
    let after: Vec<Received> = receiver.received()[before..].to_vec();
    let summary: Vec<(&str, u32, bool)> = after
        .iter()
        .map(|r| (r.id.as_str(), r.attempt, r.redelivery))
        .collect();
    assert_eq!(
        summary,
        [
            ("shop-1:1", attempts_before + 1, true),
            ("shop-1:2", 1, false)
        ]
    );
    assert!(after.iter().all(|r| r.signature_ok));
    running.stop().await;
    close_store(storage).await;
}

#[tokio::test]
async fn rows_written_while_no_sink_ran_are_delivered_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open_store(dir.path());
    let receiver = Receiver::start().await;
    let shops: Vec<ShopId> = (0..20).map(|i| shop(&format!("s{i:02}"))).collect();
    for s in &shops {
        append(storage.as_ref(), s, &[paid("a"), paid("b"), paid("c")]).await;
    }
    // Never notified: the walk at start finds them.
    let running = Running::start(&config(&receiver, |_| {}), &storage);
    for s in &shops {
        wait_cursor(storage.as_ref(), "hook", s, 4).await;
    }
    let ids = receiver.received_ids();
    assert_eq!(ids.len(), 60);
    for s in &shops {
        let of_shop: Vec<&String> = ids
            .iter()
            .filter(|id| id.rsplit_once(':').map(|(shop, _)| shop) == Some(s.as_str()))
            .collect();
        assert_eq!(
            of_shop,
            [format!("{s}:1"), format!("{s}:2"), format!("{s}:3")]
                .iter()
                .collect::<Vec<_>>()
        );
    }
    running.stop().await;
    close_store(storage).await;
}

#[tokio::test]
async fn secret_file_is_read_and_no_sinks_start_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open_store(dir.path());
    let receiver = Receiver::start().await;
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let with_file = config(&receiver, |hook| {
        hook.secret = None;
        hook.secret_file = Some(secret_file.clone());
    });
    let running = Running::start(&with_file, &storage);
    append(storage.as_ref(), &shop("s"), &[paid("o")]).await;
    running.handle.notify();
    wait_cursor(storage.as_ref(), "hook", &shop("s"), 2).await;
    assert!(receiver.received()[0].signature_ok);
    running.stop().await;

    let missing = config(&receiver, |hook| {
        hook.secret = None;
        hook.secret_file = Some(dir.path().join("missing"));
    });
    let (_stop, stopped) = watch::channel(false);
    assert!(start(&missing, storage.clone(), stopped.clone()).is_err());
    let none = start(&SinksSection::default(), storage.clone(), stopped).unwrap();
    none.notify();
    none.stopped().await;
    close_store(storage).await;
}
