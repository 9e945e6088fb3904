//! Wire codec: `piazza_protocol::codec` (bincode 2, serde mode, varint) against postcard 1 on the
//! same serde types, encode and decode, per message type:
//!
//! - `send_request`: a `Request::Send` to a group with a 100-byte text (what a client writes);
//! - `message_event`: an `Event::Message` with a 100-byte text (what the node pushes, once per
//!   committed message);
//! - `history_page_100`: a `Response::History` page of 100 such messages;
//! - `sync_batch_100`: a `Response::Sync` batch of 100 messages over 10 conversations (direct and
//!   group), some replies, some with reactions.
//!
//! Ids: `codec/<type>/{bincode,postcard}_{encode,decode}`. `Throughput::Bytes` is the size of the
//! bincode body, so both codecs are compared on the same logical bytes; the encoded sizes of both
//! are printed once at the start. bincode decodes through `codec::decode` with the frame limit
//! (as the node and the SDK do); postcard through `postcard::from_bytes`. Before measuring, each
//! value is checked to round-trip through both codecs.
//!
//! Run: `cargo bench -p piazza-benches --bench codec` (figures in benches/README.md).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use piazza_protocol::limits::FRAME_BYTES_MAX;
use piazza_protocol::{
    ConversationId, ConversationRef, Event, GroupId, HistoryPage, Message, MessageBody,
    ReactionCount, Request, Response, Seq, SyncBatch, UserId, codec,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Text bytes of every message.
const TEXT_BYTES: usize = 100;
/// Messages in the history page and in the sync batch (the protocol's page limits).
const PAGE_MESSAGES: u64 = 100;
/// Conversations the sync batch spans.
const SYNC_CONVERSATIONS: u64 = 10;

fn user(name: &str) -> UserId {
    match name.parse() {
        Ok(user) => user,
        Err(e) => panic!("user {name}: {e}"),
    }
}

fn group(raw: u64) -> GroupId {
    match GroupId::new(raw) {
        Ok(id) => id,
        Err(e) => panic!("group {raw}: {e}"),
    }
}

fn text(seed: u64) -> String {
    let mut text = format!("message {seed} ");
    text.extend(std::iter::repeat_n('x', TEXT_BYTES - text.len()));
    text
}

fn message(conversation: ConversationId, seq: u64, sender: &str) -> Message {
    let client_msg_id = match format!("c-{seq}").parse() {
        Ok(id) => id,
        Err(e) => panic!("client msg id: {e}"),
    };
    Message {
        conversation,
        seq: Seq::new(seq),
        sender: user(sender),
        client_msg_id,
        sent_at_ms: 1_700_000_000_000 + seq * 1_000,
        body: MessageBody::Text(text(seq)),
        reply_to: None,
        forwarded_from: None,
        edited_at_ms: None,
        reactions: Vec::new(),
    }
}

fn send_request() -> Request {
    let client_msg_id = match "c-42".parse() {
        Ok(id) => id,
        Err(e) => panic!("client msg id: {e}"),
    };
    Request::Send {
        conversation: ConversationRef::Group(group(7)),
        client_msg_id,
        text: text(42),
    }
}

fn message_event() -> Event {
    Event::Message(message(ConversationId::Group(group(7)), 1_234, "alice"))
}

fn history_page() -> Response {
    let conversation = ConversationId::Group(group(7));
    let senders = ["alice", "bob", "carol", "dave"];
    let messages = (1..=PAGE_MESSAGES)
        .map(|seq| {
            let sender = senders[(seq % 4) as usize];
            message(conversation.clone(), 1_000 + seq, sender)
        })
        .collect();
    Response::History(HistoryPage {
        conversation,
        messages,
        more: true,
    })
}

fn sync_batch() -> Response {
    let mut messages = Vec::new();
    for c in 0..SYNC_CONVERSATIONS {
        let conversation = if c % 2 == 0 {
            match ConversationId::direct(user("alice"), user(&format!("peer-{c}"))) {
                Ok(id) => id,
                Err(e) => panic!("direct conversation: {e}"),
            }
        } else {
            ConversationId::Group(group(100 + c))
        };
        for k in 1..=PAGE_MESSAGES / SYNC_CONVERSATIONS {
            let mut m = message(conversation.clone(), 50 + k, "alice");
            if k % 3 == 0 {
                m.reply_to = Some(Seq::new(50 + k - 1));
            }
            if k % 4 == 0 {
                m.reactions = vec![ReactionCount {
                    emoji: "👍".to_owned(),
                    count: 3,
                }];
            }
            messages.push(m);
        }
    }
    Response::Sync(SyncBatch {
        messages,
        more: false,
    })
}

/// Checks `value` survives both codecs, prints both sizes, and benches encode and decode.
fn bench_type<T>(c: &mut Criterion, name: &str, value: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bincode_body = match codec::encode(value) {
        Ok(body) => body,
        Err(e) => panic!("bincode encode {name}: {e}"),
    };
    let postcard_body = match postcard::to_allocvec(value) {
        Ok(body) => body,
        Err(e) => panic!("postcard encode {name}: {e}"),
    };
    let limit = FRAME_BYTES_MAX as usize;
    match codec::decode::<T>(&bincode_body, limit) {
        Ok(back) => assert!(&back == value, "bincode round trip of {name} differs"),
        Err(e) => panic!("bincode decode {name}: {e}"),
    }
    match postcard::from_bytes::<T>(&postcard_body) {
        Ok(back) => assert!(&back == value, "postcard round trip of {name} differs"),
        Err(e) => panic!("postcard decode {name}: {e}"),
    }
    println!(
        "codec/{name}: bincode {} bytes, postcard {} bytes",
        bincode_body.len(),
        postcard_body.len()
    );

    let mut group = c.benchmark_group(format!("codec/{name}"));
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Bytes(bincode_body.len() as u64));
    group.bench_function("bincode_encode", |b| {
        b.iter(|| codec::encode(black_box(value)))
    });
    group.bench_function("postcard_encode", |b| {
        b.iter(|| postcard::to_allocvec(black_box(value)))
    });
    group.bench_function("bincode_decode", |b| {
        b.iter(|| codec::decode::<T>(black_box(&bincode_body), limit))
    });
    group.bench_function("postcard_decode", |b| {
        b.iter(|| postcard::from_bytes::<T>(black_box(&postcard_body)))
    });
    group.finish();
}

fn codecs(c: &mut Criterion) {
    bench_type(c, "send_request", &send_request());
    bench_type(c, "message_event", &message_event());
    bench_type(c, "history_page_100", &history_page());
    bench_type(c, "sync_batch_100", &sync_batch());
}

criterion_group!(benches, codecs);
criterion_main!(benches);
