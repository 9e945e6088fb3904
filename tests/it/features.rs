//! Message features for every conversation kind: replies, edits, deletes, reactions, pins,
//! forwards — and their propagation to online devices (push) and offline ones (Sync).

use std::time::Duration;

use piazza_client::{ConversationRef, EventStart};
use piazza_protocol::{ErrorCode, MessageBody, MessageUpdate, Seq};
use piazza_tests::*;

const WAIT: Duration = Duration::from_secs(10);

fn dm(peer: &str) -> ConversationRef {
    ConversationRef::Direct { peer: user(peer) }
}

#[tokio::test]
async fn replies_edits_reactions_pins_forwards() {
    let node = TestNode::start().await;
    let alice = node.client("alice").await;
    let bob = node.client("bob").await;

    let first = alice.send(dm("bob"), "lunch at 12?", None).await.unwrap();
    let reply = bob
        .reply(dm("alice"), first.seq, "yes!", None)
        .await
        .unwrap();
    let page = alice.history(dm("bob"), None, 10).await.unwrap();
    assert_eq!(page.messages[1].reply_to, Some(first.seq));
    let bad = bob
        .reply(dm("alice"), Seq::new(99), "to nothing", None)
        .await
        .unwrap_err();
    assert!(
        matches!(bad.server_code(), Some(ErrorCode::Invalid { .. })),
        "{bad}"
    );

    // Edit: only the sender; the edit is an entry of the sequence and rewrites the original.
    let edit = alice
        .edit(dm("bob"), first.seq, "lunch at 1?")
        .await
        .unwrap();
    assert_eq!(edit.seq, Seq::new(3));
    let denied = bob
        .edit(dm("alice"), first.seq, "hijack")
        .await
        .unwrap_err();
    assert_eq!(denied.server_code(), Some(&ErrorCode::Forbidden));
    let page = bob.history(dm("alice"), None, 10).await.unwrap();
    assert_eq!(text(&page.messages[0]), "lunch at 1?");
    assert!(page.messages[0].edited_at_ms.is_some());
    assert!(
        matches!(&page.messages[2].body, MessageBody::Update(MessageUpdate::Edited { target, .. }) if *target == first.seq)
    );

    // Reactions: once per user and emoji; counts aggregate on the message.
    assert!(
        alice
            .react(dm("bob"), reply.seq, "👍", true)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        alice
            .react(dm("bob"), reply.seq, "👍", true)
            .await
            .unwrap()
            .is_none(),
        "no double reaction"
    );
    assert!(
        bob.react(dm("alice"), reply.seq, "👍", true)
            .await
            .unwrap()
            .is_some()
    );
    let page = bob
        .history(dm("alice"), Some(Seq::new(3)), 10)
        .await
        .unwrap();
    let reacted = page.messages.iter().find(|m| m.seq == reply.seq).unwrap();
    assert_eq!(
        (
            reacted.reactions[0].emoji.as_str(),
            reacted.reactions[0].count
        ),
        ("👍", 2)
    );
    assert!(
        bob.react(dm("alice"), reply.seq, "👍", false)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        bob.react(dm("alice"), reply.seq, "👍", false)
            .await
            .unwrap()
            .is_none()
    );
    let page = bob
        .history(dm("alice"), Some(Seq::new(3)), 10)
        .await
        .unwrap();
    assert_eq!(
        page.messages
            .iter()
            .find(|m| m.seq == reply.seq)
            .unwrap()
            .reactions[0]
            .count,
        1
    );

    // Pins.
    assert!(
        bob.pin(dm("alice"), first.seq, true)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        alice
            .pin(dm("bob"), first.seq, true)
            .await
            .unwrap()
            .is_none(),
        "already pinned"
    );
    let pinned = alice.pinned(dm("bob")).await.unwrap();
    assert_eq!(
        pinned.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [first.seq]
    );

    // Forward into a group; the copy names its origin; a stranger cannot forward what they
    // cannot read.
    let group = alice
        .create_group("team", vec![user("carol")])
        .await
        .unwrap();
    let piazza_protocol::ConversationId::Group(group_id) = group else {
        panic!()
    };
    let forwarded = alice
        .forward(dm("bob"), reply.seq, ConversationRef::Group(group_id))
        .await
        .unwrap();
    let page = alice
        .history(ConversationRef::Group(group_id), None, 10)
        .await
        .unwrap();
    let copy = page
        .messages
        .iter()
        .find(|m| m.seq == forwarded.seq)
        .unwrap();
    assert_eq!(text(copy), "yes!");
    let origin = copy.forwarded_from.as_ref().unwrap();
    assert_eq!((origin.sender.as_str(), origin.seq), ("bob", reply.seq));
    let carol = node.client("carol").await;
    let denied = carol
        .forward(
            ConversationRef::Id(first.conversation.clone()),
            first.seq,
            ConversationRef::Group(group_id),
        )
        .await
        .unwrap_err();
    assert_eq!(denied.server_code(), Some(&ErrorCode::Forbidden));

    // Group moderation: members cannot pin or delete others' messages; the owner can.
    let carols = carol
        .send(ConversationRef::Group(group_id), "carol's note", None)
        .await
        .unwrap();
    let denied = carol
        .pin(ConversationRef::Group(group_id), carols.seq, true)
        .await
        .unwrap_err();
    assert_eq!(denied.server_code(), Some(&ErrorCode::Forbidden));
    let denied = carol
        .delete(ConversationRef::Group(group_id), forwarded.seq)
        .await
        .unwrap_err();
    assert_eq!(denied.server_code(), Some(&ErrorCode::Forbidden));
    alice
        .delete(ConversationRef::Group(group_id), carols.seq)
        .await
        .unwrap();
    node.stop().await;
    assert_no_warnings();
}

/// Edits and deletes reach a device that was offline, through Sync, and the stored originals show
/// the result.
#[tokio::test]
async fn edits_and_deletes_reach_offline_devices() {
    let node = TestNode::start().await;
    let alice = node.client("alice").await;
    let a = alice.send(dm("bob"), "typo hree", None).await.unwrap();
    let b = alice
        .send(dm("bob"), "oops, wrong chat", None)
        .await
        .unwrap();
    let phone = node
        .client_with("bob", "phone", EventStart::Beginning)
        .await;
    assert_eq!(collect_messages(&phone, 2, WAIT).await.len(), 2);
    let cursors = phone.cursors();
    phone.close().await;

    alice.edit(dm("bob"), a.seq, "typo here").await.unwrap();
    alice.delete(dm("bob"), b.seq).await.unwrap();

    let phone = node
        .client_with("bob", "phone", EventStart::After(cursors))
        .await;
    let updates = collect_messages(&phone, 2, WAIT).await;
    assert!(
        matches!(&updates[0].body, MessageBody::Update(MessageUpdate::Edited { target, text }) if *target == a.seq && text == "typo here")
    );
    assert!(
        matches!(&updates[1].body, MessageBody::Update(MessageUpdate::Deleted { target }) if *target == b.seq)
    );
    // A fresh device syncing from zero sees the rewritten originals too.
    let laptop = node.client_with("bob", "laptop", EventStart::Off).await;
    let all = laptop.sync(&[]).await.unwrap();
    assert_eq!(text(&all[0]), "typo here");
    assert_eq!(all[1].body, MessageBody::Deleted);
    node.stop().await;
    assert_no_warnings();
}

#[tokio::test]
async fn edit_window_is_enforced() {
    let node = TestNode::start_with(|c| c.limits.edit_window_ms = 1).await;
    let alice = node.client("alice").await;
    let ack = alice
        .send(dm("bob"), "too late to fix", None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let late = alice.edit(dm("bob"), ack.seq, "fixed").await.unwrap_err();
    assert!(
        matches!(late.server_code(), Some(ErrorCode::Conflict { .. })),
        "{late}"
    );
    let late = alice.delete(dm("bob"), ack.seq).await.unwrap_err();
    assert_eq!(late.server_code(), Some(&ErrorCode::Forbidden));
    node.stop().await;
    assert_no_warnings();
}

/// Many members react to one message at once: every reaction counts, although each rewrites the
/// same message row while the previous rewrite may still be waiting for its commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reactions_to_one_message_all_count() {
    let node = TestNode::start().await;
    let owner = node.client("owner").await;
    let names: Vec<String> = (0..20).map(|i| format!("r{i}")).collect();
    let conversation = owner
        .create_group("g", names.iter().map(|n| user(n)).collect())
        .await
        .unwrap();
    let piazza_protocol::ConversationId::Group(group) = conversation else {
        panic!()
    };
    let target = owner
        .send(ConversationRef::Group(group), "react to me", None)
        .await
        .unwrap()
        .seq;
    let mut clients = Vec::new();
    for name in &names {
        clients.push(node.client_with(name, "d", EventStart::Off).await);
    }
    let mut tasks = Vec::new();
    for client in clients {
        tasks.push(tokio::spawn(async move {
            // Twice each: the second is a no-op that must not count either.
            for _ in 0..2 {
                client
                    .react(ConversationRef::Group(group), target, "🎉", true)
                    .await
                    .unwrap();
            }
            client
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let page = owner
        .history(ConversationRef::Group(group), None, 100)
        .await
        .unwrap();
    let message = page.messages.iter().find(|m| m.seq == target).unwrap();
    assert_eq!(message.reactions.len(), 1);
    assert_eq!(message.reactions[0].count, 20);
    node.stop().await;
    assert_no_warnings();
}
