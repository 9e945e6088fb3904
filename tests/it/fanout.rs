//! Fan-out: every member gets every post exactly once and in order, and a slow consumer is told to
//! resync instead of holding anyone up.

use std::collections::HashMap;
use std::time::Duration;

use piazza_client::{ConversationRef, EventStart};
use piazza_protocol::limits::FRAME_BYTES_MAX;
use piazza_protocol::{Event, FrameDecoder, PROTOCOL_VERSION, Request, Response, Seq};
use piazza_tests::*;

const WAIT: Duration = Duration::from_secs(60);

/// A group built by invitation up to 10,000 members, each online on their own QUIC connection:
/// every member receives every post once and in order; a sample of them, syncing from a fresh
/// device, gets exactly the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_group_every_member_gets_every_post_once_in_order() {
    // 10,000 members (the figure); `PIAZZA_GROUP_MEMBERS` overrides it.
    let members_n = env_count("PIAZZA_GROUP_MEMBERS", 10_000);
    let (node, owner) = swarm_node("owner").await;
    let names: Vec<String> = (0..members_n - 1).map(|i| format!("m{i:05}")).collect();
    let conversation = owner.create_group("big", Vec::new()).await.unwrap();
    let piazza_protocol::ConversationId::Group(group) = conversation.clone() else {
        panic!()
    };
    for batch in names.chunks(piazza_protocol::limits::GROUP_INVITE_BATCH_MAX) {
        owner
            .invite(group, batch.iter().map(|n| user(n)).collect())
            .await
            .unwrap();
    }
    let info = owner.group_info(group).await.unwrap();
    assert_eq!(info.member_count as usize, members_n);
    assert!(info.large, "receipts and typing are off at this size");
    let head = owner
        .history(ConversationRef::Group(group), None, 1)
        .await
        .unwrap()
        .messages[0]
        .seq;

    let swarm = swarm::Swarm::connect(node.addr, &node.ca, &names, |u| node.token(u)).await;
    const POSTS: u64 = 10;
    for i in 0..POSTS {
        owner
            .send(ConversationRef::Group(group), format!("post {i}"), None)
            .await
            .unwrap();
    }
    let expected: Vec<u64> = (head.get() + 1..=head.get() + POSTS).collect();
    swarm
        .wait_for(&conversation, POSTS as usize, Duration::from_secs(180))
        .await;
    for member in &swarm.members {
        assert_eq!(member.seqs(&conversation), expected, "{}", member.user);
        assert_eq!(*member.resyncs.lock().unwrap(), 0, "{}", member.user);
    }
    swarm.close();
    // A sample of members syncs exactly the posts after what they had, from another device.
    for name in names.iter().step_by((members_n / 20).max(1)) {
        let client = node.client_with(name, "d", EventStart::Off).await;
        let cursor = piazza_protocol::SyncCursor {
            conversation: conversation.clone(),
            seq: head,
        };
        let got = client.sync(&[cursor]).await.unwrap();
        let seqs: Vec<u64> = got
            .iter()
            .filter(|m| m.conversation == conversation)
            .map(|m| m.seq.get())
            .collect();
        assert_eq!(seqs, expected, "{name}");
    }
    node.stop().await;
    assert_no_warnings();
}

/// A subscriber that stops reading its event stream fills its bounded outbox; it is marked for
/// `Resync` instead of blocking the conversation, the others get every message promptly, and once
/// it reads again it sees `Resync` and can catch up through `Sync`.
#[tokio::test]
async fn slow_consumer_gets_resync_and_others_are_unaffected() {
    let node = TestNode::start_with(|c| c.limits.session_outbound_queue_max = 4).await;
    let sender = node.client_with("sender", "d", EventStart::Off).await;
    let fast = node.client("fast").await;
    let conversation = sender
        .create_group("g", vec![user("fast"), user("slow")])
        .await
        .unwrap();
    let piazza_protocol::ConversationId::Group(group) = conversation.clone() else {
        panic!()
    };
    assert!(
        collect_messages(&fast, 1, WAIT).await.len() == 1,
        "creation message"
    );

    // The slow consumer authenticates over a raw connection and never reads its event stream.
    let raw = RawConnection::connect(node.addr, &node.ca).await;
    let hello = Request::Hello {
        protocol_version: PROTOCOL_VERSION,
        token: node.token("slow"),
        device: "raw".parse().unwrap(),
    };
    assert!(matches!(
        raw.request(&hello).await,
        Some(Response::Welcome { .. })
    ));

    // Enough large messages to exceed QUIC's stream window and the outbox of 4.
    let text = "x".repeat(8 * 1024);
    const N: usize = 400;
    for i in 0..N {
        sender
            .send(ConversationRef::Group(group), format!("{i} {text}"), None)
            .await
            .unwrap();
    }
    let got = collect_messages(&fast, N, WAIT).await;
    assert_eq!(
        got.len(),
        N,
        "the fast member got everything while the slow one stalled"
    );

    // Now the slow one reads (QUIC announces the event stream with its first bytes, so it is
    // accepted only now): the stream must contain a Resync.
    let mut events = tokio::time::timeout(WAIT, raw.connection.accept_uni())
        .await
        .unwrap()
        .unwrap();
    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    let mut saw_resync = false;
    let mut seqs = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + WAIT;
    while !saw_resync && tokio::time::Instant::now() < deadline {
        let read = tokio::time::timeout(Duration::from_secs(5), events.read(&mut buf)).await;
        let Ok(Ok(Some(n))) = read else { break };
        decoder.extend(&buf[..n]);
        while let Some(event) = decoder.next_value::<Event>().unwrap() {
            match event {
                Event::Resync => saw_resync = true,
                Event::Message(m) => seqs.push(m.seq.get()),
                Event::Receipt { .. } => {}
            }
        }
    }
    assert!(saw_resync, "no Resync after {} events", seqs.len());
    assert!(
        seqs.len() < N,
        "the outbox was bounded, so events were dropped"
    );
    // Catching up through Sync returns everything, in order.
    let cursor = piazza_protocol::SyncCursor {
        conversation: conversation.clone(),
        seq: Seq::ZERO,
    };
    let sync = Request::Sync {
        cursors: vec![cursor],
        limit: 100,
    };
    let Some(Response::Sync(batch)) = raw.request(&sync).await else {
        panic!("sync failed")
    };
    assert_eq!(batch.messages.first().map(|m| m.seq), Some(Seq::new(1)));
    let mut by_seq: HashMap<u64, usize> = HashMap::new();
    for m in &batch.messages {
        *by_seq.entry(m.seq.get()).or_default() += 1;
    }
    assert!(by_seq.values().all(|n| *n == 1));
    let dropped = metric_value(
        &node.admin_get("/metrics").await.1,
        "piazza_deliveries_dropped_total",
    );
    assert!(dropped > 0.0, "the node counted the dropped deliveries");
    node.stop().await;
    assert_no_warnings();
}
