//! Cursor bookkeeping: dedup, gap detection, sync catch-up, and the cursor list limit.

use piazza_protocol::limits::SYNC_CURSORS_MAX;
use piazza_protocol::{ConversationId, GroupId, Message, MessageBody, Seq, SyncCursor, UserId};

use super::{Arrival, Cursors};

fn user(name: &str) -> UserId {
    name.parse().unwrap()
}

fn dm() -> ConversationId {
    ConversationId::direct(user("alice"), user("bob")).unwrap()
}

fn group(id: u64) -> ConversationId {
    ConversationId::Group(GroupId::new(id).unwrap())
}

fn message(conversation: &ConversationId, seq: u64) -> Message {
    Message {
        conversation: conversation.clone(),
        seq: Seq::new(seq),
        sender: user("alice"),
        client_msg_id: format!("m-{seq}").parse().unwrap(),
        sent_at_ms: 1_700_000_000_000_u64.saturating_add(seq),
        body: MessageBody::Text(format!("message {seq}")),
        reply_to: None,
        forwarded_from: None,
        edited_at_ms: None,
        reactions: Vec::new(),
    }
}

/// Feeds live messages `(conversation, seq)` and checks the verdicts and the final cursors.
fn check_live(cursors: &mut Cursors, feed: &[(&ConversationId, u64)], expected: &[Arrival]) {
    let got: Vec<Arrival> = feed
        .iter()
        .map(|(conversation, seq)| cursors.handle_live(&message(conversation, *seq)))
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn in_order_messages_are_new_and_advance_the_cursor() {
    let mut cursors = Cursors::new();
    let dm = dm();
    check_live(
        &mut cursors,
        &[(&dm, 1), (&dm, 2), (&dm, 3)],
        &[Arrival::New, Arrival::New, Arrival::New],
    );
    assert_eq!(cursors.seq(&dm), Seq::new(3));
}

#[test]
fn repeated_and_older_messages_are_duplicates() {
    // A reconnect can replay what the old connection already delivered: the cursor drops it.
    let mut cursors = Cursors::new();
    let dm = dm();
    check_live(
        &mut cursors,
        &[(&dm, 1), (&dm, 2), (&dm, 2), (&dm, 1)],
        &[
            Arrival::New,
            Arrival::New,
            Arrival::Duplicate,
            Arrival::Duplicate,
        ],
    );
    assert_eq!(cursors.seq(&dm), Seq::new(2));
}

#[test]
fn a_jump_is_a_gap_and_does_not_move_the_cursor() {
    let mut cursors = Cursors::new();
    let dm = dm();
    check_live(
        &mut cursors,
        &[(&dm, 1), (&dm, 4), (&dm, 5)],
        &[
            Arrival::New,
            Arrival::Gap {
                missing_from: Seq::new(2),
            },
            Arrival::Gap {
                missing_from: Seq::new(2),
            },
        ],
    );
    assert_eq!(cursors.seq(&dm), Seq::new(1), "a gap must not be skipped");
}

#[test]
fn an_unseen_conversation_starts_at_zero() {
    // The node syncs a conversation not named from the start, so the client must treat an unseen
    // conversation the same way: its first message is seq 1, anything later is a gap.
    let mut cursors = Cursors::new();
    let g = group(7);
    check_live(
        &mut cursors,
        &[(&g, 2)],
        &[Arrival::Gap {
            missing_from: Seq::new(1),
        }],
    );
    check_live(&mut cursors, &[(&g, 1)], &[Arrival::New]);
}

#[test]
fn conversations_are_independent() {
    let mut cursors = Cursors::new();
    let (dm, g) = (dm(), group(1));
    check_live(
        &mut cursors,
        &[(&dm, 1), (&g, 1), (&dm, 2), (&g, 3), (&g, 2)],
        &[
            Arrival::New,
            Arrival::New,
            Arrival::New,
            Arrival::Gap {
                missing_from: Seq::new(2),
            },
            Arrival::New,
        ],
    );
    assert_eq!(cursors.seq(&dm), Seq::new(2));
    assert_eq!(cursors.seq(&g), Seq::new(2));
}

#[test]
fn sync_fills_a_gap_then_live_duplicates_are_dropped() {
    // The full recovery path: live 1, live 4 (gap), Sync returns 2..=4, the node then pushes 4
    // again (it was queued before the sync) and 5.
    let mut cursors = Cursors::new();
    let dm = dm();
    check_live(&mut cursors, &[(&dm, 1)], &[Arrival::New]);
    assert!(matches!(
        cursors.handle_live(&message(&dm, 4)),
        Arrival::Gap { .. }
    ));
    let delivered: Vec<u64> = (2..=4)
        .map(|seq| message(&dm, seq))
        .filter(|m| cursors.handle_synced(m))
        .map(|m| m.seq.get())
        .collect();
    assert_eq!(delivered, [2, 3, 4]);
    check_live(
        &mut cursors,
        &[(&dm, 4), (&dm, 5)],
        &[Arrival::Duplicate, Arrival::New],
    );
}

#[test]
fn synced_messages_already_seen_are_not_new() {
    let mut cursors = Cursors::from_sync_cursors(&[SyncCursor {
        conversation: dm(),
        seq: Seq::new(3),
    }]);
    let fresh: Vec<bool> = (2..=5)
        .map(|seq| cursors.handle_synced(&message(&dm(), seq)))
        .collect();
    assert_eq!(fresh, [false, false, true, true]);
    assert_eq!(cursors.seq(&dm()), Seq::new(5));
}

#[test]
fn resumed_cursors_keep_the_highest_seq() {
    let cursors = Cursors::from_sync_cursors(&[
        SyncCursor {
            conversation: dm(),
            seq: Seq::new(9),
        },
        SyncCursor {
            conversation: dm(),
            seq: Seq::new(4),
        },
    ]);
    assert_eq!(cursors.seq(&dm()), Seq::new(9));
    assert_eq!(cursors.len(), 1);
}

#[test]
fn advance_never_moves_back() {
    let mut cursors = Cursors::new();
    assert!(cursors.advance_to(&dm(), Seq::new(5)));
    assert!(!cursors.advance_to(&dm(), Seq::new(5)));
    assert!(!cursors.advance_to(&dm(), Seq::new(2)));
    assert_eq!(cursors.seq(&dm()), Seq::new(5));
    assert!(!cursors.advance_to(&group(3), Seq::ZERO));
    assert!(cursors.sync_cursors().iter().all(|c| c.seq > Seq::ZERO));
}

#[test]
fn sync_cursors_are_sorted_and_round_trip() {
    let mut cursors = Cursors::new();
    cursors.advance_to(&group(2), Seq::new(1));
    cursors.advance_to(&dm(), Seq::new(3));
    cursors.advance_to(&group(1), Seq::new(8));
    let list = cursors.sync_cursors();
    let mut sorted = list.clone();
    sorted.sort_by(|a, b| a.conversation.cmp(&b.conversation));
    assert_eq!(list, sorted);
    assert_eq!(Cursors::from_sync_cursors(&list), cursors);
}

#[test]
fn sync_cursors_limit() {
    // Exactly at the limit every conversation is named; one over, the conversation with the
    // shortest history is the one left out (the node will resend it from the start).
    let mut cursors = Cursors::new();
    for id in 1..=SYNC_CURSORS_MAX as u64 {
        cursors.advance_to(&group(id), Seq::new(id + 10));
    }
    assert_eq!(cursors.sync_cursors().len(), SYNC_CURSORS_MAX);

    cursors.advance_to(&dm(), Seq::new(1));
    let list = cursors.sync_cursors();
    assert_eq!(list.len(), SYNC_CURSORS_MAX);
    assert!(list.iter().all(|c| c.conversation != dm()));
    assert_eq!(cursors.len(), SYNC_CURSORS_MAX + 1);
}

#[test]
fn the_last_possible_seq_is_handled() {
    let mut cursors = Cursors::new();
    cursors.advance_to(&dm(), Seq::new(u64::MAX - 1));
    assert_eq!(cursors.handle_live(&message(&dm(), u64::MAX)), Arrival::New);
    assert_eq!(
        cursors.handle_live(&message(&dm(), u64::MAX)),
        Arrival::Duplicate
    );
}

fn batch(messages: Vec<Message>, more: bool) -> piazza_protocol::SyncBatch {
    piazza_protocol::SyncBatch { messages, more }
}

#[test]
fn a_sync_pass_advances_until_the_node_has_no_more() {
    let mut cursors = Cursors::new();
    let (dm, g) = (dm(), group(1));
    let first = cursors.handle_sync_batch(batch(
        vec![message(&dm, 1), message(&dm, 2), message(&g, 1)],
        true,
    ));
    assert_eq!(first.fresh.len(), 3);
    assert!(first.more && !first.stalled);
    let list = cursors.sync_cursors();
    assert_eq!(list.len(), 2, "the next request names both conversations");

    let second = cursors.handle_sync_batch(batch(vec![message(&g, 2)], false));
    assert_eq!(second.fresh, vec![message(&g, 2)]);
    assert!(!second.more && !second.stalled);
}

#[test]
fn a_sync_batch_without_progress_stalls() {
    // The node resends what the cursors could not name: everything is a duplicate, and asking
    // again would loop forever.
    let mut cursors = Cursors::new();
    cursors.advance_to(&dm(), Seq::new(2));
    let step = cursors.handle_sync_batch(batch(vec![message(&dm(), 1), message(&dm(), 2)], true));
    assert!(step.fresh.is_empty());
    assert!(step.stalled && !step.more);

    let empty = cursors.handle_sync_batch(batch(Vec::new(), true));
    assert!(empty.stalled && !empty.more);
    let done = cursors.handle_sync_batch(batch(Vec::new(), false));
    assert!(!done.stalled && !done.more);
}
