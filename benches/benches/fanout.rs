//! In-process fan-out: one committed message pushed by the real relay actor to every online
//! recipient's session outbox.
//!
//! The frame is a real pre-encoded `Event::Message` frame (100-byte text), handed to the relay as
//! one shared `Bytes` with the conversation's `Arc<HashSet<UserId>>` of recipients, exactly as a
//! conversation actor does after the commit. Each simulated session has a real bounded outbox
//! queue drained by its own tokio task (what the connection's event writer does, without QUIC).
//! One iteration = one delivery, timed from the hand-over to the moment the last consumer has
//! received it. `Throughput::Elements(online)`, so elements/s = deliveries/s; the time per
//! iteration divided by `online` is the cost per recipient.
//!
//! Every consumer checks every frame is the very allocation handed to the relay (address and
//! length), each queue is sized so nothing can be dropped, and after each benchmark the harness
//! asserts that the number of frames received is exactly rounds × online users, that no outbox
//! overflowed and that nothing was left over. A run that dropped or duplicated anything panics.
//!
//! Ids: `fanout/relay/<variant>/<recipients>`:
//! - `session_per_user`: every online user has its own session (queue + consumer task);
//! - `100_sessions`: the users are spread over 100 sessions (several users' pushes in one queue):
//!   the relay's cost without 100k task wake-ups;
//! - `10pct_online`: a tenth of the recipients are online, one session each, the rest offline
//!   members. The relay walks the smaller side (here the online users) and looks each up in the
//!   recipient set. Elements = online users only.
//!
//! Run: `cargo bench -p piazza-benches --bench fanout` (figures in benches/README.md).

use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use piazza_node::bench::{FanoutBench, FanoutConfig};
use piazza_protocol::{ConversationId, Event, GroupId, Message, MessageBody, Seq, codec};

/// Online recipients per delivery.
const ONLINE: [usize; 3] = [1_000, 10_000, 100_000];
/// Sessions in the `100_sessions` variant.
const SHARED_SESSIONS: usize = 100;
/// Bytes of message text in the frame.
const TEXT_BYTES: usize = 100;
/// Longest a delivery may take before the bench fails (it takes milliseconds).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    // The node runs on tokio's multi-thread runtime with one worker per core; so does the bench.
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("cannot build the tokio runtime: {e}"),
    }
}

fn event_frame() -> Bytes {
    let group = match GroupId::new(7) {
        Ok(id) => id,
        Err(e) => panic!("group id: {e}"),
    };
    let sender = match "seller-1".parse() {
        Ok(user) => user,
        Err(e) => panic!("user id: {e}"),
    };
    let client_msg_id = match "c-1".parse() {
        Ok(id) => id,
        Err(e) => panic!("client msg id: {e}"),
    };
    let message = Message {
        conversation: ConversationId::Group(group),
        seq: Seq::new(1_234),
        sender,
        client_msg_id,
        sent_at_ms: 1_700_000_000_000,
        body: MessageBody::Text("x".repeat(TEXT_BYTES)),
        reply_to: None,
        forwarded_from: None,
        edited_at_ms: None,
        reactions: Vec::new(),
    };
    match codec::encode_frame(&Event::Message(message)) {
        Ok(frame) => Bytes::from(frame),
        Err(e) => panic!("encode the event frame: {e}"),
    }
}

fn bench_variant(c: &mut Criterion, rt: &tokio::runtime::Runtime, variant: &str) {
    let frame = event_frame();
    let mut group = c.benchmark_group(format!("fanout/relay/{variant}"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for online in ONLINE {
        let config = match variant {
            "session_per_user" => FanoutConfig {
                online,
                offline: 0,
                sessions: online,
            },
            "100_sessions" => FanoutConfig {
                online,
                offline: 0,
                sessions: SHARED_SESSIONS,
            },
            "10pct_online" => FanoutConfig {
                online: online / 10,
                offline: online - online / 10,
                sessions: online / 10,
            },
            other => panic!("unknown variant {other}"),
        };
        let mut harness = match rt.block_on(FanoutBench::start(config)) {
            Ok(h) => h,
            Err(e) => panic!("start the fan-out harness {config:?}: {e}"),
        };
        group.throughput(Throughput::Elements(config.online as u64));
        group.bench_function(BenchmarkId::from_parameter(online), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        match harness.deliver(&frame, DELIVERY_TIMEOUT).await {
                            Ok(elapsed) => total += elapsed,
                            Err(e) => panic!("delivery to {config:?}: {e}"),
                        }
                    }
                    total
                })
            });
        });
        let tally = match rt.block_on(harness.finish()) {
            Ok(t) => t,
            Err(e) => panic!("finish the fan-out harness {config:?}: {e}"),
        };
        assert!(tally.rounds > 0, "no delivery was measured for {config:?}");
        assert!(
            tally.is_exact(config.online),
            "fan-out was not exact for {config:?}: {tally:?}"
        );
    }
    group.finish();
}

fn fanout(c: &mut Criterion) {
    let rt = runtime();
    for variant in ["session_per_user", "100_sessions", "10pct_online"] {
        bench_variant(c, &rt, variant);
    }
}

criterion_group!(benches, fanout);
criterion_main!(benches);
