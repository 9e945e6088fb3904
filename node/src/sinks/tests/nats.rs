//! NATS JetStream delivery against a real `nats-server -js` child process.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};

use tokio::sync::watch;

use super::super::config::{NatsSink, SinksSection};
use super::super::nats::{Address, Connection};
use super::super::{SinksHandle, cursor_key, start};
use super::*;

/// A `nats-server` with JetStream, killed by its PID when dropped.
struct NatsServer {
    child: Child,
    port: u16,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NatsServer {
    /// Starts one on `port` (0: a free one) storing under `dir`; `None` when `nats-server` is
    /// not installed and this is not CI.
    async fn start(dir: &Path, port: u16) -> Option<NatsServer> {
        if Command::new("nats-server")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var_os("CI").is_none(),
                "nats-server is not installed (apt-get install nats-server)"
            );
            eprintln!("SKIPPED: nats-server is not installed (apt-get install nats-server)");
            return None;
        }
        let port = if port == 0 {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        } else {
            port
        };
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = NatsServer { child, port };
        let address = server.address();
        let mut ready = false;
        let ready_in_time = tokio::time::timeout(WAIT, async {
            while !ready {
                ready = Connection::connect(&address, Duration::from_secs(1))
                    .await
                    .is_ok();
                if !ready {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        })
        .await;
        assert!(ready_in_time.is_ok(), "nats-server did not start");
        Some(server)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn address(&self) -> Address {
        Address::parse(&self.url()).unwrap()
    }

    /// A JetStream API call.
    async fn api(&self, subject: &str, body: serde_json::Value) -> serde_json::Value {
        let mut connection = Connection::connect(&self.address(), Duration::from_secs(5))
            .await
            .unwrap();
        let reply = connection
            .request(
                subject,
                &[],
                body.to_string().as_bytes(),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        serde_json::from_slice(&reply.payload).unwrap()
    }

    async fn stream_messages(&self) -> u64 {
        let info = self
            .api("$JS.API.STREAM.INFO.PIAZZA", serde_json::json!({}))
            .await;
        info["state"]["messages"].as_u64().unwrap_or(0)
    }

    /// The stored message `seq`: subject, headers and payload.
    async fn message(&self, seq: u64) -> (String, String, Vec<u8>) {
        let got = self
            .api(
                "$JS.API.STREAM.MSG.GET.PIAZZA",
                serde_json::json!({"seq": seq}),
            )
            .await;
        let message = &got["message"];
        let decode = |field: &str| base64_decode(message[field].as_str().unwrap_or(""));
        (
            message["subject"].as_str().unwrap().to_owned(),
            String::from_utf8(decode("hdrs")).unwrap(),
            decode("data"),
        )
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for byte in text.bytes().filter(|&b| b != b'=') {
        let value = ALPHABET.iter().position(|&a| a == byte).unwrap() as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    out
}

fn config(server: &NatsServer) -> SinksSection {
    SinksSection {
        nats: Some(NatsSink {
            name: "nats".into(),
            url: server.url(),
            stream: "PIAZZA".into(),
            subject_prefix: "piazza.events".into(),
            duplicate_window_secs: 600,
            max_age_secs: 7 * 24 * 3600,
            initial_backoff_ms: 50,
            max_backoff_ms: 200,
        }),
        ..SinksSection::default()
    }
}

fn run(config: &SinksSection, storage: &Arc<dyn Storage>) -> (SinksHandle, watch::Sender<bool>) {
    let (stop, stopped) = watch::channel(false);
    (start(config, storage.clone(), stopped).unwrap(), stop)
}

async fn stop(handle: SinksHandle, stop: watch::Sender<bool>) {
    stop.send(true).unwrap();
    tokio::time::timeout(WAIT, handle.stopped()).await.unwrap();
}

#[tokio::test]
async fn publishes_to_jetstream_once_even_when_republished_and_across_server_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = NatsServer::start(&dir.path().join("nats"), 0).await else {
        return;
    };
    let storage = open_store(&dir.path().join("store"));
    let (dotted, plain) = (shop("s.1"), shop("s2"));
    append(
        storage.as_ref(),
        &dotted,
        &[paid("o-1"), paid("o-2"), paid("o-3")],
    )
    .await;
    let (handle, stopper) = run(&config(&server), &storage);
    append(storage.as_ref(), &plain, &every_event()[..2]).await;
    handle.notify();
    wait_cursor(storage.as_ref(), "nats", &dotted, 4).await;
    wait_cursor(storage.as_ref(), "nats", &plain, 3).await;
    assert_eq!(server.stream_messages().await, 5);

    let mut stored = HashMap::new();
    for seq in 1..=5 {
        let (subject, headers, data) = server.message(seq).await;
        let envelope: serde_json::Value = serde_json::from_slice(&data).unwrap();
        let id = envelope["id"].as_str().unwrap().to_owned();
        assert!(
            headers.contains(&format!("Nats-Msg-Id: {id}")),
            "{headers:?}"
        );
        stored.insert(id, (subject, data));
    }
    let (subject, data) = &stored["s.1:2"];
    assert_eq!(subject, "piazza.events.s%2E1.OrderPaid");
    let (rows, _) = storage
        .kv_scan(KvTable::Outbox, &outbox::shop_prefix(&dotted), None, 10)
        .unwrap();
    assert_eq!(data, &rows[1].1, "the payload is the stored envelope");
    assert_eq!(stored["s2:1"].0, "piazza.events.s2.OrderPlaced");
    assert_eq!(stored["s2:2"].0, "piazza.events.s2.StockReserved");
    stop(handle, stopper).await;

    // A crash after the acks but before the cursors were saved: everything is published again,
    // and JetStream keeps one copy of each.
    commit(
        storage.as_ref(),
        vec![crate::storage::Write::Delete {
            table: KvTable::Sinks,
            key: cursor_key("nats", &plain),
        }],
    )
    .await
    .unwrap();
    let (handle, stopper) = run(&config(&server), &storage);
    wait_cursor(storage.as_ref(), "nats", &plain, 3).await;
    assert_eq!(server.stream_messages().await, 5);

    // The server goes away: publishing fails and is retried until it is back.
    let port = server.port;
    drop(server);
    append(storage.as_ref(), &plain, &[paid("o-4")]).await;
    handle.notify();
    wait_until("a failed publish", || {
        read_cursor(storage.as_ref(), "nats", &plain)
            .unwrap()
            .attempts
            >= 2
    })
    .await;
    let server = NatsServer::start(&dir.path().join("nats"), port)
        .await
        .unwrap();
    wait_cursor(storage.as_ref(), "nats", &plain, 4).await;
    assert_eq!(server.stream_messages().await, 6);
    let (subject, _, _) = server.message(6).await;
    assert_eq!(subject, "piazza.events.s2.OrderPaid");
    stop(handle, stopper).await;
    close_store(storage).await;
}

#[test]
fn jetstream_refusals_are_errors() {
    assert!(super::super::nats::check_ack(br#"{"stream":"PIAZZA","seq":3}"#).is_ok());
    assert!(
        super::super::nats::check_ack(br#"{"stream":"PIAZZA","seq":3,"duplicate":true}"#).is_ok()
    );
    assert!(
        super::super::nats::check_ack(
            br#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}"#
        )
        .is_err()
    );
    assert!(super::super::nats::check_ack(b"not json").is_err());
}
