//! Channels: owner/admin posts, subscriptions, signed and unsigned posts, edits reaching offline
//! devices, comments, views, scheduled posts across a restart, a 10,000-subscriber fan-out, and
//! presence.

use std::time::{Duration, Instant};

use piazza_client::{ClientEvent, ConversationRef, EventStart};
use piazza_protocol::{
    ChannelId, ConversationId, ErrorCode, GroupRole, MessageBody, MessageUpdate, Request, Response,
    Seq, SyncCursor, UserId,
};
use piazza_tests::swarm::Swarm;
use piazza_tests::*;

const WAIT: Duration = Duration::from_secs(10);

fn chan(channel: ChannelId) -> ConversationRef {
    ConversationRef::Id(ConversationId::Channel(channel))
}

fn code(error: piazza_client::ClientError) -> ErrorCode {
    error
        .server_code()
        .cloned()
        .unwrap_or_else(|| panic!("{error}"))
}

#[tokio::test]
async fn owner_and_admins_post_subscribers_read_and_react() {
    let node = TestNode::start().await;
    let alice = node.client("alice").await;
    let bob = node.client("bob").await;
    let carol = node.client("carol").await;
    let channel = alice
        .create_channel("news", "daily news", false)
        .await
        .unwrap();
    let conversation = ConversationId::Channel(channel);
    let created = next_message(&alice, WAIT).await;
    assert_eq!(
        (created.conversation.clone(), created.seq),
        (conversation.clone(), Seq::new(1))
    );

    // Anyone sees the profile; only subscribers read.
    let info = carol.channel_info(channel).await.unwrap();
    assert_eq!(
        (info.title.as_str(), info.subscriber_count, info.role),
        ("news", 1, None)
    );
    assert_eq!(
        code(carol.history(chan(channel), None, 10).await.unwrap_err()),
        ErrorCode::Forbidden
    );
    bob.subscribe(channel).await.unwrap();
    bob.subscribe(channel).await.unwrap();
    let info = bob.channel_info(channel).await.unwrap();
    assert_eq!(
        (info.subscriber_count, info.role),
        (2, Some(GroupRole::Member))
    );

    // An unsigned post comes from the channel, not from the admin who wrote it.
    let ack = alice.post(channel, "first post", None).await.unwrap();
    let post = next_message(&bob, WAIT).await;
    assert_eq!((post.seq, text(&post)), (ack.seq, "first post"));
    assert_eq!(post.sender, UserId::channel());
    // Subscribers cannot post; outsiders cannot react.
    assert_eq!(
        code(bob.post(channel, "me too", None).await.unwrap_err()),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(
            carol
                .react(chan(channel), ack.seq, "👍", true)
                .await
                .unwrap_err()
        ),
        ErrorCode::Forbidden
    );
    assert!(
        bob.react(chan(channel), ack.seq, "👍", true)
            .await
            .unwrap()
            .is_none()
    );
    carol.subscribe(channel).await.unwrap();
    carol
        .react(chan(channel), ack.seq, "👍", true)
        .await
        .unwrap();
    bob.react(chan(channel), ack.seq, "👍", true).await.unwrap();
    let page = bob.history(chan(channel), None, 10).await.unwrap();
    let reacted = page.messages.iter().find(|m| m.seq == ack.seq).unwrap();
    assert_eq!(
        (
            reacted.reactions[0].emoji.as_str(),
            reacted.reactions[0].count
        ),
        ("👍", 2),
        "two users, counted once each, also when their reactions are in flight together"
    );
    carol.unsubscribe(channel).await.unwrap();

    // A new admin posts; with signing on, the author is shown.
    alice
        .set_channel_admin(channel, UserId::try_from("dave".to_owned()).unwrap(), true)
        .await
        .unwrap();
    let dave = node.client("dave").await;
    alice
        .update_channel(channel, None, None, Some(true))
        .await
        .unwrap();
    dave.post(channel, "signed by dave", None).await.unwrap();
    // A reaction to a post is counted on the post, not broadcast to every subscriber.
    let signed = next_message(&bob, WAIT).await;
    assert_eq!(
        (text(&signed), signed.sender.as_str()),
        ("signed by dave", "dave")
    );
    assert_eq!(
        code(
            bob.set_channel_admin(channel, user("carol"), true)
                .await
                .unwrap_err()
        ),
        ErrorCode::Forbidden
    );

    // The owner cannot leave; a subscriber can, and then reads nothing more.
    assert!(matches!(
        code(alice.unsubscribe(channel).await.unwrap_err()),
        ErrorCode::Conflict { .. }
    ));
    bob.unsubscribe(channel).await.unwrap();
    alice.post(channel, "after bob left", None).await.unwrap();
    assert!(
        collect_messages(&bob, 1, Duration::from_millis(300))
            .await
            .is_empty()
    );
    assert_eq!(
        code(bob.history(chan(channel), None, 10).await.unwrap_err()),
        ErrorCode::Forbidden
    );
    let missing = ChannelId::new(424242).unwrap();
    assert_eq!(
        code(carol.channel_info(missing).await.unwrap_err()),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(carol.subscribe(missing).await.unwrap_err()),
        ErrorCode::NotFound
    );
    node.stop().await;
    assert_no_warnings();
}

#[tokio::test]
async fn edits_and_deletes_of_posts_reach_offline_devices_through_sync() {
    let node = TestNode::start().await;
    let alice = node.client("alice").await;
    let channel = alice.create_channel("c", "", true).await.unwrap();
    let conversation = ConversationId::Channel(channel);
    let phone = node.client_with("bob", "phone", EventStart::Now).await;
    phone.subscribe(channel).await.unwrap();
    let first = alice.post(channel, "typo", None).await.unwrap();
    let second = alice.post(channel, "to delete", None).await.unwrap();
    let seen = collect_messages(&phone, 2, WAIT).await;
    assert_eq!(seen.len(), 2);
    let cursor = SyncCursor {
        conversation: conversation.clone(),
        seq: second.seq,
    };
    phone.close().await;

    alice.edit(chan(channel), first.seq, "fixed").await.unwrap();
    alice.delete(chan(channel), second.seq).await.unwrap();
    let tablet = node.client_with("bob", "tablet", EventStart::Off).await;
    let synced = tablet.sync(&[cursor]).await.unwrap();
    let updates: Vec<_> = synced
        .iter()
        .filter(|m| m.conversation == conversation)
        .map(|m| m.body.clone())
        .collect();
    assert!(matches!(
        &updates[..],
        [
            MessageBody::Update(MessageUpdate::Edited { text, .. }),
            MessageBody::Update(MessageUpdate::Deleted { .. })
        ] if text == "fixed"
    ));
    let page = tablet.history(chan(channel), None, 10).await.unwrap();
    let by_seq = |seq: Seq| page.messages.iter().find(|m| m.seq == seq).unwrap();
    assert_eq!(text(by_seq(first.seq)), "fixed");
    assert_eq!(by_seq(second.seq).body, MessageBody::Deleted);
    node.stop().await;
    assert_no_warnings();
}

#[tokio::test]
async fn comments_views_and_their_counters() {
    let node = TestNode::start().await;
    let alice = node.client("alice").await;
    let bob = node.client("bob").await;
    let carol = node.client("carol").await;
    let eve = node.client("eve").await;
    let channel = alice.create_channel("c", "", false).await.unwrap();
    for reader in [&bob, &carol] {
        reader.subscribe(channel).await.unwrap();
    }
    let post = alice.post(channel, "discuss", None).await.unwrap().seq;
    let thread = ConversationId::Comments { channel, post };

    let c1 = bob.comment(channel, post, "first!", None).await.unwrap();
    assert_eq!(c1.conversation, thread);
    // Bob follows the thread now: carol's comment is pushed to him.
    carol.comment(channel, post, "second", None).await.unwrap();
    let pushed = loop {
        let m = next_message(&bob, WAIT).await;
        if m.conversation == thread && m.sender.as_str() == "carol" {
            break m;
        }
    };
    assert_eq!(text(&pushed), "second");
    // Non-subscribers neither comment nor read; comments need an existing post.
    assert_eq!(
        code(eve.comment(channel, post, "spam", None).await.unwrap_err()),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(
            eve.history(ConversationRef::Id(thread.clone()), None, 10)
                .await
                .unwrap_err()
        ),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(
            bob.comment(channel, Seq::new(99), "?", None)
                .await
                .unwrap_err()
        ),
        ErrorCode::NotFound
    );
    // A subscriber who unsubscribes loses the thread too.
    eve.subscribe(channel).await.unwrap();
    eve.comment(channel, post, "hi", None).await.unwrap();
    eve.unsubscribe(channel).await.unwrap();
    assert_eq!(
        code(eve.comment(channel, post, "again", None).await.unwrap_err()),
        ErrorCode::Forbidden
    );

    // Views count once per user.
    let stats = bob.view_posts(channel, vec![post]).await.unwrap();
    assert_eq!((stats[0].views, stats[0].comments), (1, 3));
    let stats = bob.view_posts(channel, vec![post, post]).await.unwrap();
    assert_eq!(stats[0].views, 1);
    carol.view_posts(channel, vec![post]).await.unwrap();
    // The admin deletes a comment: the counter follows.
    alice.subscribe(channel).await.unwrap();
    alice
        .delete(ConversationRef::Id(thread.clone()), c1.seq)
        .await
        .unwrap();
    let stats = alice.post_stats(channel, vec![post]).await.unwrap();
    assert_eq!((stats[0].views, stats[0].comments), (2, 2));
    assert!(matches!(
        code(
            alice
                .post_stats(channel, vec![Seq::new(50)])
                .await
                .unwrap_err()
        ),
        ErrorCode::Invalid { .. }
    ));
    // Counters survive a restart.
    let node = node.restart().await;
    let bob = node.client("bob").await;
    let stats = bob.view_posts(channel, vec![post]).await.unwrap();
    assert_eq!((stats[0].views, stats[0].comments), (2, 2));
    node.stop().await;
    assert_no_warnings();
}

#[tokio::test]
async fn scheduled_posts_are_published_on_time_and_survive_a_restart() {
    let node = TestNode::start().await;
    let alice = node.client("alice").await;
    let bob = node.client("bob").await;
    let channel = alice.create_channel("c", "", false).await.unwrap();
    bob.subscribe(channel).await.unwrap();
    let conversation = ConversationId::Channel(channel);

    // Published while the node runs, at its time.
    // Far enough ahead that the calls below happen before it is due, even on a loaded machine.
    let at = now_ms() + 1500;
    let soon = alice
        .schedule_post(channel, "soon", at, None)
        .await
        .unwrap();
    let again = alice
        .schedule_post(channel, "soon", at, Some(soon.client_msg_id.clone()))
        .await
        .unwrap();
    assert_eq!(again, soon, "scheduling the same id again is idempotent");
    assert_eq!(
        code(bob.schedule_post(channel, "x", at, None).await.unwrap_err()),
        ErrorCode::Forbidden
    );
    let cancelled = alice
        .schedule_post(channel, "never", at + 100_000, None)
        .await
        .unwrap();
    assert_eq!(alice.scheduled_posts(channel).await.unwrap().len(), 2);
    alice
        .cancel_scheduled(channel, cancelled.client_msg_id.clone())
        .await
        .unwrap();
    let published = next_message(&bob, WAIT).await;
    let arrived_ms = now_ms();
    assert_eq!(text(&published), "soon");
    assert_eq!(published.client_msg_id, soon.client_msg_id);
    assert!(published.sent_at_ms >= at && published.sent_at_ms <= arrived_ms);
    assert!(alice.scheduled_posts(channel).await.unwrap().is_empty());

    // Due while the node is down: published at start-up, exactly once.
    let later = alice
        .schedule_post(channel, "while down", now_ms() + 1200, None)
        .await
        .unwrap();
    let dir = node.stop().await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let node = TestNode::start_in_dir(dir).await;
    let bob = node.client_with("bob", "test", EventStart::Off).await;
    let mut found = Vec::new();
    let deadline = Instant::now() + WAIT;
    while found.is_empty() && Instant::now() < deadline {
        let page = bob.history(chan(channel), None, 20).await.unwrap();
        found = page
            .messages
            .into_iter()
            .filter(|m| m.client_msg_id == later.client_msg_id)
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(found.len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let page = bob.history(chan(channel), None, 50).await.unwrap();
    let texts: Vec<&str> = page.messages.iter().map(text).collect();
    assert_eq!(texts.iter().filter(|t| **t == "while down").count(), 1);
    assert_eq!(texts.iter().filter(|t| **t == "soon").count(), 1);
    assert!(!texts.contains(&"never"));
    assert_eq!(page.messages.last().unwrap().conversation, conversation);
    node.stop().await;
    assert_no_warnings();
}

/// A channel with 10,000 subscribers, each on its own QUIC connection: every subscriber receives
/// every post exactly once and in order. Prints how long a post takes to reach all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_with_ten_thousand_subscribers_delivers_every_post_once_in_order() {
    // 10,000 subscribers (the figure); `PIAZZA_CHANNEL_SUBSCRIBERS` overrides it.
    let n = env_count("PIAZZA_CHANNEL_SUBSCRIBERS", 10_000);
    let (node, owner) = swarm_node("owner").await;
    let channel = owner.create_channel("big", "", false).await.unwrap();
    let conversation = ConversationId::Channel(channel);
    let names: Vec<String> = (0..n).map(|i| format!("s{i:05}")).collect();
    let started = Instant::now();
    let swarm = Swarm::connect(node.addr, &node.ca, &names, |u| node.token(u)).await;
    let connected = started.elapsed();
    swarm
        .each_request(
            |_| Request::Subscribe { channel },
            |member, answer| {
                assert!(
                    matches!(answer, Some(Response::Subscribed { .. })),
                    "{}: {answer:?}",
                    member.user
                )
            },
        )
        .await;
    assert_eq!(
        owner.channel_info(channel).await.unwrap().subscriber_count as usize,
        n + 1
    );
    const POSTS: usize = 10;
    let mut sent = Vec::new();
    let mut seqs = Vec::new();
    for i in 0..POSTS {
        let at = Instant::now();
        let ack = owner
            .post(channel, format!("post {i}"), None)
            .await
            .unwrap();
        sent.push(at);
        seqs.push(ack.seq.get());
        // Spaced out so each post's time to reach everyone is measured on its own.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    swarm
        .wait_for(&conversation, POSTS, Duration::from_secs(120))
        .await;
    let mut slowest = [Duration::ZERO; POSTS];
    for member in &swarm.members {
        assert_eq!(member.seqs(&conversation), seqs, "{}", member.user);
        assert_eq!(*member.resyncs.lock().unwrap(), 0, "{}", member.user);
        for (i, (_, _, at)) in member.received.lock().unwrap().iter().enumerate() {
            slowest[i] = slowest[i].max(at.duration_since(sent[i]));
        }
    }
    slowest.sort();
    eprintln!(
        "channel fan-out: {n} subscribers connected in {connected:?}; a post reached all of them \
         in median {:?}, max {:?} (from send to the last subscriber's read)",
        slowest[POSTS / 2],
        slowest[POSTS - 1]
    );
    swarm.close();
    node.stop().await;
    assert_no_warnings();
}

#[tokio::test]
async fn presence_is_opt_in_and_reaches_watchers() {
    let node = TestNode::start().await;
    let bob = node.client("bob").await;
    let eve = node.client("eve").await;
    let dm = ConversationRef::Direct {
        peer: user("alice"),
    };
    // Alice is not online, or not sharing: nothing to see.
    assert!(bob.watch_presence(dm.clone()).await.unwrap().is_empty());
    let alice = node.client("alice").await;
    assert!(bob.watch_presence(dm.clone()).await.unwrap().is_empty());
    alice.set_presence(true).await.unwrap();
    let online = next_presence(&bob).await;
    assert!(online.online && online.user.as_str() == "alice");
    let now = bob.watch_presence(dm.clone()).await.unwrap();
    assert_eq!(now.len(), 1);
    assert!(now[0].online);
    alice.close().await;
    let offline = next_presence(&bob).await;
    assert!(!offline.online && offline.last_seen_ms.is_some());
    // Only parties of the conversation may watch.
    let theirs = ConversationRef::Id(ConversationId::direct(user("alice"), user("bob")).unwrap());
    assert_eq!(
        code(eve.watch_presence(theirs).await.unwrap_err()),
        ErrorCode::Forbidden
    );
    // Channels have no presence.
    let channel = bob.create_channel("c", "", false).await.unwrap();
    assert!(matches!(
        code(bob.watch_presence(chan(channel)).await.unwrap_err()),
        ErrorCode::Conflict { .. }
    ));
    node.stop().await;
    assert_no_warnings();
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn next_presence(client: &piazza_client::Client) -> piazza_protocol::PresenceState {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, client.next_event()).await {
            Ok(Some(ClientEvent::Presence(state))) => return state,
            Ok(Some(_)) => {}
            other => panic!("no presence event: {other:?}"),
        }
    }
}
