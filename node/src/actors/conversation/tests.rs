//! The pure conversation core, driven like a state machine.

use piazza_protocol::{ConversationId, ErrorCode, GroupId, MessageBody, ReceiptKind, Seq, UserId};

use super::core::{ConversationCore, Restored, SendOutcome};
use crate::storage::{Role, Write};

fn user(s: &str) -> UserId {
    s.parse().unwrap()
}

fn direct() -> ConversationCore {
    let id = ConversationId::direct(user("alice"), user("bob")).unwrap();
    ConversationCore::restore(id, Restored::default(), 3)
}

fn group() -> ConversationCore {
    ConversationCore::restore(
        ConversationId::Group(GroupId::new(9).unwrap()),
        Restored::default(),
        8,
    )
}

/// Sends and returns the assigned seq and whether it was a duplicate.
fn check_send(core: &mut ConversationCore, from: &str, id: &str) -> Result<(u64, bool), ErrorCode> {
    match core.handle_send(&user(from), id.parse().unwrap(), "hi".into(), 1000)? {
        SendOutcome::Append { ack, message, .. } => {
            assert_eq!(ack.seq, message.seq);
            Ok((ack.seq.get(), false))
        }
        SendOutcome::Duplicate { ack } => Ok((ack.seq.get(), true)),
        SendOutcome::Quiet { .. } => panic!("a send is never quiet"),
    }
}

#[test]
fn seq_is_gap_free_and_retries_dedupe() {
    let mut core = direct();
    assert_eq!(check_send(&mut core, "alice", "a1").unwrap(), (1, false));
    assert_eq!(
        check_send(&mut core, "bob", "a1").unwrap(),
        (2, false),
        "ids are per sender"
    );
    assert_eq!(
        check_send(&mut core, "alice", "a1").unwrap(),
        (1, true),
        "retry returns the original"
    );
    assert_eq!(check_send(&mut core, "alice", "a2").unwrap(), (3, false));
    assert_eq!(core.last_seq(), Seq::new(3));
}

#[test]
fn first_direct_message_indexes_both_users() {
    let mut core = direct();
    let SendOutcome::Append { writes, .. } = core
        .handle_send(&user("alice"), "x".parse().unwrap(), "t".into(), 1)
        .unwrap()
    else {
        panic!("expected append")
    };
    let indexed: Vec<_> = writes
        .iter()
        .filter_map(|w| match w {
            Write::IndexConversation { user, .. } => Some(user.as_str().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(indexed.len(), 2);
    let SendOutcome::Append { writes, .. } = core
        .handle_send(&user("bob"), "y".parse().unwrap(), "t".into(), 1)
        .unwrap()
    else {
        panic!("expected append")
    };
    assert_eq!(writes.len(), 1, "later messages only append");
}

#[test]
fn dedup_window_is_bounded_and_restored() {
    let mut core = direct(); // window of 3
    for i in 1..=4 {
        check_send(&mut core, "alice", &format!("m{i}")).unwrap();
    }
    assert_eq!(
        check_send(&mut core, "alice", "m1").unwrap(),
        (5, false),
        "evicted beyond the window"
    );
    assert_eq!(check_send(&mut core, "alice", "m4").unwrap(), (4, true));

    // A restarted actor rebuilds the window from the most recent stored messages.
    let id = ConversationId::direct(user("alice"), user("bob")).unwrap();
    let mut before = direct();
    let mut recent = Vec::new();
    for i in 1..=2 {
        if let SendOutcome::Append { message, .. } = before
            .handle_send(
                &user("bob"),
                format!("r{i}").parse().unwrap(),
                "t".into(),
                5,
            )
            .unwrap()
        {
            recent.push(message);
        }
    }
    let mut core = ConversationCore::restore(
        id,
        Restored {
            last_seq: Seq::new(2),
            recent,
            ..Default::default()
        },
        3,
    );
    assert_eq!(check_send(&mut core, "bob", "r2").unwrap(), (2, true));
    assert_eq!(check_send(&mut core, "bob", "r3").unwrap(), (3, false));
}

#[test]
fn undo_keeps_the_sequence_gap_free() {
    let mut core = direct();
    check_send(&mut core, "alice", "a").unwrap();
    let SendOutcome::Append { message, .. } = core
        .handle_send(&user("alice"), "b".parse().unwrap(), "t".into(), 1)
        .unwrap()
    else {
        panic!()
    };
    core.undo_append(&message);
    assert_eq!(core.last_seq(), Seq::new(1));
    assert_eq!(
        check_send(&mut core, "alice", "b").unwrap(),
        (2, false),
        "the undone id is not a duplicate"
    );
}

#[test]
fn strangers_are_forbidden() {
    let mut core = direct();
    assert_eq!(
        check_send(&mut core, "carol", "x"),
        Err(ErrorCode::Forbidden)
    );
    assert_eq!(core.authorize(&user("carol")), Err(ErrorCode::Forbidden));
    let mut g = group();
    assert_eq!(
        check_send(&mut g, "alice", "x"),
        Err(ErrorCode::NotFound),
        "group not created yet"
    );
}

#[test]
fn group_lifecycle() {
    let mut g = group();
    let (writes, message) = g
        .handle_create(
            &user("alice"),
            "crew".into(),
            vec![user("bob"), user("alice"), user("bob")],
            10,
        )
        .unwrap();
    assert_eq!(message.seq, Seq::new(1));
    assert!(matches!(message.body, MessageBody::System(_)));
    assert_eq!(g.member_count(), 2, "duplicates and the owner collapse");
    assert!(writes.iter().any(|w| matches!(
        w,
        Write::AddMember {
            role: Role::Owner,
            ..
        }
    )));
    assert!(matches!(
        g.handle_create(&user("bob"), "again".into(), vec![], 11),
        Err(ErrorCode::Conflict { .. })
    ));

    assert_eq!(check_send(&mut g, "bob", "b1").unwrap(), (2, false));
    assert_eq!(check_send(&mut g, "carol", "c1"), Err(ErrorCode::Forbidden));

    let (writes, message, recipients) = g.handle_leave(&user("bob"), 12).unwrap();
    assert_eq!(message.seq, Seq::new(3));
    assert!(
        recipients.contains(&user("bob")),
        "the leaver's devices hear of it"
    );
    assert!(
        writes
            .iter()
            .any(|w| matches!(w, Write::RemoveMember { .. }))
    );
    assert_eq!(check_send(&mut g, "bob", "b2"), Err(ErrorCode::Forbidden));
    assert!(!g.recipients().contains(&user("bob")));
    assert_eq!(
        g.handle_leave(&user("bob"), 13).err(),
        Some(ErrorCode::Forbidden)
    );
    let mut d = direct();
    assert!(d.handle_leave(&user("alice"), 1).is_err());
}

#[test]
fn receipts_only_move_forward() {
    let mut core = direct();
    for i in 0..3 {
        check_send(&mut core, "alice", &format!("m{i}")).unwrap();
    }
    let bob = user("bob");
    assert!(
        core.handle_receipt(&bob, Seq::new(2), ReceiptKind::Delivered)
            .unwrap()
            .is_some()
    );
    assert!(
        core.handle_receipt(&bob, Seq::new(1), ReceiptKind::Delivered)
            .unwrap()
            .is_none(),
        "backwards is a no-op"
    );
    match core
        .handle_receipt(&bob, Seq::new(3), ReceiptKind::Read)
        .unwrap()
    {
        Some(Write::Receipt {
            delivered, read, ..
        }) => assert_eq!((delivered, read), (Seq::new(3), Seq::new(3))),
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        core.handle_receipt(&bob, Seq::new(4), ReceiptKind::Read),
        Err(ErrorCode::Invalid { .. })
    ));
    assert_eq!(
        core.handle_receipt(&user("eve"), Seq::new(1), ReceiptKind::Read)
            .err(),
        Some(ErrorCode::Forbidden)
    );
}

impl From<&str> for super::core::Draft {
    /// Tests write drafts as plain text.
    fn from(text: &str) -> Self {
        super::core::Draft::text(text.to_owned())
    }
}

/// Sends a text and returns the stored message (as the actor would read it back).
fn stored_text(core: &mut ConversationCore, from: &str, id: &str) -> piazza_protocol::Message {
    match core
        .handle_send(&user(from), id.parse().unwrap(), "t".into(), 1000)
        .unwrap()
    {
        SendOutcome::Append { message, .. } => message,
        other => panic!("unexpected {other:?}"),
    }
}

fn check_update(
    core: &mut ConversationCore,
    who: &str,
    id: &str,
    target: &piazza_protocol::Message,
    change: super::core::Change,
) -> Result<Option<piazza_protocol::Message>, ErrorCode> {
    let outcome = core.handle_update(
        &user(who),
        id.parse().unwrap(),
        Some(target.clone()),
        change,
        2000,
        10_000,
    )?;
    Ok(match outcome {
        None => None,
        Some(SendOutcome::Append { writes, .. } | SendOutcome::Quiet { writes }) => {
            writes.into_iter().find_map(|w| match w {
                Write::Message(m) if m.seq == target.seq => Some(m),
                _ => None,
            })
        }
        Some(SendOutcome::Duplicate { .. }) => panic!("unexpected duplicate"),
    })
}

#[test]
fn distinct_reactions_limit() {
    use piazza_protocol::limits::REACTIONS_DISTINCT_MAX;
    let mut core = direct();
    let mut target = stored_text(&mut core, "alice", "m");
    for i in 0..REACTIONS_DISTINCT_MAX {
        let change = super::core::Change::React {
            emoji: format!("e{i}"),
            add: true,
            already: false,
        };
        target = check_update(&mut core, "bob", &format!("r{i}"), &target, change)
            .unwrap()
            .unwrap();
    }
    assert_eq!(target.reactions.len(), REACTIONS_DISTINCT_MAX);
    let one_more = super::core::Change::React {
        emoji: "new".into(),
        add: true,
        already: false,
    };
    assert!(matches!(
        check_update(&mut core, "bob", "rx", &target, one_more),
        Err(ErrorCode::TooLarge { .. })
    ));
    let existing = super::core::Change::React {
        emoji: "e0".into(),
        add: true,
        already: false,
    };
    let target = check_update(&mut core, "alice", "ry", &target, existing)
        .unwrap()
        .unwrap();
    assert_eq!(
        target.reactions[0].count, 2,
        "an existing emoji still counts"
    );
    let noop = super::core::Change::React {
        emoji: "e0".into(),
        add: true,
        already: true,
    };
    assert!(
        check_update(&mut core, "alice", "rz", &target, noop)
            .unwrap()
            .is_none()
    );
}

#[test]
fn pinned_limit_and_edit_rules() {
    use piazza_protocol::limits::PINNED_MAX;
    let mut core = direct();
    let targets: Vec<_> = (0..=PINNED_MAX)
        .map(|i| stored_text(&mut core, "alice", &format!("m{i}")))
        .collect();
    for (i, target) in targets.iter().take(PINNED_MAX).enumerate() {
        check_update(
            &mut core,
            "bob",
            &format!("p{i}"),
            target,
            super::core::Change::Pin { pinned: true },
        )
        .unwrap();
    }
    assert_eq!(core.pinned().len(), PINNED_MAX);
    let over = check_update(
        &mut core,
        "bob",
        "px",
        &targets[PINNED_MAX],
        super::core::Change::Pin { pinned: true },
    );
    assert!(matches!(over, Err(ErrorCode::TooLarge { .. })));

    let edit = super::core::Change::Edit { text: "new".into() };
    assert_eq!(
        check_update(&mut core, "bob", "e1", &targets[0], edit.clone()).err(),
        Some(ErrorCode::Forbidden)
    );
    let edited = check_update(&mut core, "alice", "e2", &targets[0], edit.clone())
        .unwrap()
        .unwrap();
    assert_eq!(edited.edited_at_ms, Some(2000));
    let late = core.handle_update(
        &user("alice"),
        "e3".parse().unwrap(),
        Some(targets[1].clone()),
        edit,
        1000 + 10_001,
        10_000,
    );
    assert!(
        matches!(late, Err(ErrorCode::Conflict { .. })),
        "beyond the window"
    );
    let missing = core.handle_update(
        &user("alice"),
        "e4".parse().unwrap(),
        None,
        super::core::Change::Delete,
        2000,
        10_000,
    );
    assert_eq!(missing.err(), Some(ErrorCode::NotFound));
    let deleted = check_update(
        &mut core,
        "alice",
        "d1",
        &targets[2],
        super::core::Change::Delete,
    )
    .unwrap()
    .unwrap();
    assert_eq!(deleted.body, MessageBody::Deleted);
    let again = check_update(
        &mut core,
        "alice",
        "d2",
        &deleted,
        super::core::Change::Delete,
    );
    assert!(
        matches!(again, Err(ErrorCode::Invalid { .. })),
        "a deleted message cannot change"
    );
}

fn channel(signed: bool) -> ConversationCore {
    let mut core = ConversationCore::restore(
        ConversationId::Channel(piazza_protocol::ChannelId::new(4).unwrap()),
        Restored::default(),
        8,
    );
    core.handle_create_channel(&user("owner"), "news".into(), String::new(), signed, 1)
        .unwrap();
    core
}

#[test]
fn channel_posting_is_for_staff_and_unsigned_posts_come_from_the_channel() {
    let mut core = channel(false);
    assert!(core.handle_subscribe(&user("sub"), 10).unwrap().is_some());
    assert!(
        core.handle_subscribe(&user("sub"), 10).unwrap().is_none(),
        "subscribing twice changes nothing"
    );
    assert_eq!(check_send(&mut core, "sub", "p"), Err(ErrorCode::Forbidden));
    assert_eq!(
        check_send(&mut core, "stranger", "p"),
        Err(ErrorCode::Forbidden)
    );
    let SendOutcome::Append { message, .. } = core
        .handle_send(&user("owner"), "p1".parse().unwrap(), "hi".into(), 2)
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(message.sender, UserId::channel());
    // The retry of an unsigned post is recognised (the dedup key is the channel's).
    assert_eq!(check_send(&mut core, "owner", "p1").unwrap(), (2, true));

    // An admin posts; once signing is on, as themselves.
    core.handle_set_channel_admin(&user("owner"), &user("ed"), true, 10)
        .unwrap();
    assert_eq!(
        core.handle_set_channel_admin(&user("ed"), &user("sub"), true, 10)
            .err(),
        Some(ErrorCode::Forbidden),
        "only the owner appoints admins"
    );
    let (_, announced) = core
        .handle_update_channel(&user("ed"), None, None, Some(true), 3)
        .unwrap();
    assert!(announced.is_none(), "signing changes quietly");
    let SendOutcome::Append { message, .. } = core
        .handle_send(&user("ed"), "p2".parse().unwrap(), "signed".into(), 4)
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(message.sender, user("ed"));
    // Limits: subscribers.
    assert!(matches!(
        core.handle_subscribe(&user("late"), 3),
        Err(ErrorCode::TooLarge { .. })
    ));
    assert!(core.is_large(1_000_000), "channels never carry receipts");
    assert!(matches!(
        core.handle_unsubscribe(&user("owner")),
        Err(ErrorCode::Conflict { .. })
    ));
    core.handle_unsubscribe(&user("ed")).unwrap();
    assert_eq!(check_send(&mut core, "ed", "p3"), Err(ErrorCode::Forbidden));
}

#[test]
fn scheduled_posts_publish_once() {
    let mut core = channel(false);
    let id: piazza_protocol::ClientMsgId = "later".parse().unwrap();
    let (writes, post) = core
        .handle_schedule(&user("owner"), id.clone(), "text".into(), 100)
        .unwrap();
    assert_eq!(writes.map(|w| w.len()), Some(1));
    let (again, same) = core
        .handle_schedule(&user("owner"), id.clone(), "text".into(), 100)
        .unwrap();
    assert!(again.is_none() && same == post);
    core.handle_subscribe(&user("sub"), 10).unwrap();
    assert_eq!(
        core.handle_schedule(&user("sub"), "x".parse().unwrap(), "t".into(), 1)
            .err(),
        Some(ErrorCode::Forbidden)
    );
    let super::core::Publish::Post(SendOutcome::Append {
        message, writes, ..
    }) = core.handle_publish(&id, 150).unwrap()
    else {
        panic!("not published")
    };
    assert_eq!(
        (message.client_msg_id, message.sent_at_ms),
        (id.clone(), 150)
    );
    assert!(
        writes
            .iter()
            .any(|w| matches!(w, Write::Unschedule { at_ms: 100, .. })),
        "the schedule goes in the same commit as the post"
    );
    assert!(matches!(
        core.handle_publish(&id, 151).unwrap(),
        super::core::Publish::Stale
    ));
    assert!(core.scheduled_posts(&user("owner")).unwrap().is_empty());
    // Scheduling an id that was already published is refused.
    assert!(matches!(
        core.handle_schedule(&user("owner"), id, "again".into(), 200),
        Err(ErrorCode::Conflict { .. })
    ));
}

#[test]
fn comment_threads_follow_channel_roles() {
    let channel_id = piazza_protocol::ChannelId::new(4).unwrap();
    let restored = Restored {
        post_exists: true,
        ..Restored::default()
    };
    let thread = ConversationId::Comments {
        channel: channel_id,
        post: Seq::new(2),
    };
    let mut core = ConversationCore::restore(thread, restored, 8);
    assert_eq!(
        check_send(&mut core, "sub", "c1"),
        Err(ErrorCode::Forbidden)
    );
    core.note_channel_role(&user("sub"), Some(Role::Member));
    let SendOutcome::Append { writes, .. } = core
        .handle_send(&user("sub"), "c1".parse().unwrap(), "nice".into(), 5)
        .unwrap()
    else {
        panic!()
    };
    assert!(
        writes
            .iter()
            .any(|w| matches!(w, Write::Counter { value: 1, .. }))
    );
    assert!(
        writes.iter().any(|w| matches!(w, Write::AddMember { .. })),
        "a commenter follows the thread"
    );
    core.note_channel_role(&user("sub"), None);
    assert_eq!(
        check_send(&mut core, "sub", "c2"),
        Err(ErrorCode::Forbidden)
    );

    let missing = ConversationCore::restore(
        ConversationId::Comments {
            channel: channel_id,
            post: Seq::new(9),
        },
        Restored::default(),
        8,
    );
    assert_eq!(missing.authorize(&user("sub")), Err(ErrorCode::NotFound));
}
