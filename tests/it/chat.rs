//! People chat: pushes, history, catch-up, idempotent retries, receipts, typing.

use std::time::Duration;

use piazza_client::{ClientEvent, ConversationRef, EventStart, ReceiptKind};
use piazza_protocol::{ClientMsgId, ConversationId, Seq};
use piazza_tests::*;

const WAIT: Duration = Duration::from_secs(10);

fn dm(peer: &str) -> ConversationRef {
    ConversationRef::Direct { peer: user(peer) }
}

/// Two users chat both ways; each sees the other's messages pushed, in order, and the same history.
#[tokio::test]
async fn two_users_chat() {
    let node = TestNode::start().await;
    let alice = node.client("alice").await;
    let bob = node.client("bob").await;

    let ack = alice.send(dm("bob"), "hi bob", None).await.unwrap();
    assert_eq!(ack.seq, Seq::new(1));
    assert_eq!(
        ack.conversation,
        ConversationId::direct(user("alice"), user("bob")).unwrap()
    );
    let got = next_message(&bob, WAIT).await;
    assert_eq!(
        (got.seq, got.sender.as_str(), text(&got)),
        (Seq::new(1), "alice", "hi bob")
    );

    for i in 0..20 {
        bob.send(dm("alice"), &format!("reply {i}"), None)
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 20 {
        let m = next_message(&alice, WAIT).await;
        if m.sender.as_str() == "bob" {
            seen.push(m);
        }
    }
    let seqs: Vec<u64> = seen.iter().map(|m| m.seq.get()).collect();
    assert_eq!(
        seqs,
        (2..=21).collect::<Vec<_>>(),
        "pushed in order, gap-free"
    );

    let page = alice.history(dm("bob"), None, 100).await.unwrap();
    assert_eq!(page.messages.len(), 21);
    assert_eq!(text(&page.messages[0]), "hi bob");
    let older = bob
        .history(dm("alice"), Some(Seq::new(11)), 5)
        .await
        .unwrap();
    assert_eq!(
        older
            .messages
            .iter()
            .map(|m| m.seq.get())
            .collect::<Vec<_>>(),
        [6, 7, 8, 9, 10]
    );
    assert!(older.more);
    node.stop().await;
    assert_no_warnings();
}

/// A recipient who was offline receives exactly what it missed, in order, once.
#[tokio::test]
async fn offline_recipient_catches_up_exactly() {
    let node = TestNode::start().await;
    let alice = node.client("alice").await;
    // Bob saw the first two messages on his phone, then went offline.
    for i in 1..=2 {
        alice.send(dm("bob"), &format!("m{i}"), None).await.unwrap();
    }
    let phone = node
        .client_with("bob", "phone", EventStart::Beginning)
        .await;
    let first = collect_messages(&phone, 2, WAIT).await;
    assert_eq!(first.len(), 2);
    let cursors = phone.cursors();
    phone.close().await;

    for i in 3..=7 {
        alice.send(dm("bob"), &format!("m{i}"), None).await.unwrap();
    }
    let phone = node
        .client_with("bob", "phone", EventStart::After(cursors))
        .await;
    let missed = collect_messages(&phone, 5, WAIT).await;
    assert_eq!(
        missed.iter().map(text).collect::<Vec<_>>(),
        ["m3", "m4", "m5", "m6", "m7"]
    );
    // Nothing more: no duplicate of what was already seen.
    let extra = collect_messages(&phone, 1, Duration::from_millis(300)).await;
    assert!(extra.is_empty(), "unexpected extra messages: {extra:?}");

    // A device that never synced gets everything through raw Sync, in pages.
    let laptop = node.client_with("bob", "laptop", EventStart::Off).await;
    let all = laptop.sync(&[]).await.unwrap();
    assert_eq!(
        all.iter().map(|m| m.seq.get()).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    node.stop().await;
    assert_no_warnings();
}

/// A retried send with the same client_msg_id is stored once and answered with the original ack.
#[tokio::test]
async fn retry_with_same_client_msg_id_yields_one_message() {
    let node = TestNode::start().await;
    let alice = node.client("alice").await;
    let id: ClientMsgId = "retry-1".parse().unwrap();
    let first = alice
        .send(dm("bob"), "once", Some(id.clone()))
        .await
        .unwrap();
    assert!(!first.duplicate);
    // Same id from another connection of the same user (a reconnect), and after a restart.
    let again = node.client_with("alice", "other", EventStart::Off).await;
    let second = again
        .send(dm("bob"), "once", Some(id.clone()))
        .await
        .unwrap();
    assert!(second.duplicate);
    assert_eq!(
        (second.seq, second.sent_at_ms),
        (first.seq, first.sent_at_ms)
    );
    drop((alice, again));
    let node = node.restart().await;
    let alice = node.client("alice").await;
    let third = alice.send(dm("bob"), "once", Some(id)).await.unwrap();
    assert!(third.duplicate, "deduplicated across a restart");
    assert_eq!(third.seq, first.seq);
    let page = alice.history(dm("bob"), None, 10).await.unwrap();
    assert_eq!(page.messages.len(), 1);
    node.stop().await;
    assert_no_warnings();
}

/// Receipts are stored, pushed to the other side, and only move forward; typing arrives as a
/// datagram.
#[tokio::test]
async fn receipts_and_typing() {
    let node = TestNode::start().await;
    let alice = node.client("alice").await;
    let bob = node.client("bob").await;
    let ack = alice.send(dm("bob"), "read me", None).await.unwrap();
    next_message(&bob, WAIT).await;
    bob.receipt(ack.conversation.clone(), ack.seq, ReceiptKind::Read)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, alice.next_event())
            .await
            .unwrap()
            .unwrap()
        {
            ClientEvent::Receipt {
                user: who,
                kind,
                seq,
                ..
            } => {
                assert_eq!(
                    (who.as_str(), kind, seq),
                    ("bob", ReceiptKind::Read, ack.seq)
                );
                break;
            }
            _ => continue,
        }
    }
    let states = alice.receipts(dm("bob")).await.unwrap();
    let bob_state = states.iter().find(|s| s.user.as_str() == "bob").unwrap();
    assert_eq!(
        (bob_state.delivered, bob_state.read),
        (ack.seq, ack.seq),
        "read implies delivered"
    );
    let beyond = bob
        .receipt(ack.conversation.clone(), Seq::new(99), ReceiptKind::Read)
        .await;
    assert!(matches!(
        beyond.unwrap_err().server_code(),
        Some(piazza_protocol::ErrorCode::Invalid { .. })
    ));

    // Typing is best effort over datagrams: retry a few times until one arrives.
    let mut saw_typing = false;
    for _ in 0..20 {
        bob.typing(ack.conversation.clone(), true).unwrap();
        if let Ok(Some(ClientEvent::Typing {
            user: who, active, ..
        })) = tokio::time::timeout(Duration::from_millis(250), alice.next_event()).await
        {
            assert_eq!((who.as_str(), active), ("bob", true));
            saw_typing = true;
            break;
        }
    }
    assert!(saw_typing, "no typing datagram arrived");
    node.stop().await;
    assert_no_warnings();
}

/// The other devices of the sender see its messages too, and a third user cannot read the pair's
/// conversation.
#[tokio::test]
async fn multi_device_and_privacy() {
    let node = TestNode::start().await;
    let alice_phone = node.client_with("alice", "phone", EventStart::Now).await;
    let alice_laptop = node.client_with("alice", "laptop", EventStart::Now).await;
    alice_phone
        .send(dm("bob"), "from my phone", None)
        .await
        .unwrap();
    let echoed = next_message(&alice_laptop, WAIT).await;
    assert_eq!(text(&echoed), "from my phone");

    let eve = node.client("eve").await;
    let conversation = ConversationId::direct(user("alice"), user("bob")).unwrap();
    let err = eve
        .history(ConversationRef::Id(conversation), None, 10)
        .await
        .unwrap_err();
    assert_eq!(
        err.server_code(),
        Some(&piazza_protocol::ErrorCode::Forbidden)
    );
    let err = eve
        .send(dm("eve"), "talking to myself", None)
        .await
        .unwrap_err();
    assert!(matches!(
        err.server_code(),
        Some(piazza_protocol::ErrorCode::Invalid { .. })
    ));
    node.stop().await;
    assert_no_warnings();
}

/// Idle conversation actors are passivated and re-activated from storage on the next request,
/// with the sequence and the deduplication window intact.
#[tokio::test]
async fn idle_conversations_passivate_and_come_back() {
    let node = TestNode::start_with(|c| c.limits.conversation_idle_ms = 100).await;
    let alice = node.client("alice").await;
    let first = alice
        .send(dm("bob"), "before", Some("p-1".parse().unwrap()))
        .await
        .unwrap();
    // This node's own count: the metric is process-wide, and under `cargo test` other tests'
    // nodes share the process.
    assert_eq!(node.conversations_active(), 1);
    let deadline = tokio::time::Instant::now() + WAIT;
    while node.conversations_active() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "conversation never passivated"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let retry = alice
        .send(dm("bob"), "before", Some("p-1".parse().unwrap()))
        .await
        .unwrap();
    assert!(
        retry.duplicate && retry.seq == first.seq,
        "dedup window restored from storage"
    );
    let next = alice.send(dm("bob"), "after", None).await.unwrap();
    assert_eq!(next.seq, Seq::new(2));
    node.stop().await;
    assert_no_warnings();
}

/// A device that starts "now" learns where every conversation stands from `Heads` (no bodies) and
/// then receives only new messages.
#[tokio::test]
async fn starting_now_skips_history() {
    let node = TestNode::start().await;
    let alice = node.client("alice").await;
    for peer in ["bob", "carol"] {
        for i in 0..3 {
            alice
                .send(dm(peer), &format!("old {i}"), None)
                .await
                .unwrap();
        }
    }
    let carol_group = alice.create_group("g", vec![user("bob")]).await.unwrap();
    let bob = node.client("bob").await;
    let cursors = bob.cursors();
    assert_eq!(cursors.len(), 2, "dm with alice and the group: {cursors:?}");
    alice.send(dm("bob"), "new", None).await.unwrap();
    let m = next_message(&bob, WAIT).await;
    assert_eq!((m.seq, text(&m)), (Seq::new(4), "new"));
    let extra = collect_messages(&bob, 1, Duration::from_millis(300)).await;
    assert!(
        extra.is_empty(),
        "history leaked into a 'now' start: {extra:?} (group {carol_group:?})"
    );
    node.stop().await;
    assert_no_warnings();
}
