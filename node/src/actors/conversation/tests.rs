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
