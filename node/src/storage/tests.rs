//! The embedded adapter against a real fjall store in a temporary directory.

use std::sync::mpsc as std_mpsc;

use piazza_protocol::MessageBody;

use super::*;

fn user(s: &str) -> UserId {
    s.parse().unwrap()
}

fn dm() -> ConversationId {
    ConversationId::direct(user("alice"), user("bob")).unwrap()
}

fn message(conversation: &ConversationId, seq: u64) -> Message {
    Message {
        conversation: conversation.clone(),
        seq: Seq::new(seq),
        sender: user("alice"),
        client_msg_id: format!("c{seq}").parse().unwrap(),
        sent_at_ms: 1000 + seq,
        body: MessageBody::Text(format!("message {seq}")),
        reply_to: None,
        forwarded_from: None,
        edited_at_ms: None,
        reactions: Vec::new(),
    }
}

/// Submits and waits for the commit callback.
fn commit(storage: &dyn Storage, writes: Vec<Write>) -> Result<(), StorageError> {
    let (tx, rx) = std_mpsc::channel();
    storage.submit(writes, Box::new(move |r| tx.send(r).unwrap()))?;
    rx.recv().unwrap()
}

fn open(dir: &std::path::Path) -> EmbeddedStorage {
    EmbeddedStorage::open(dir, 1024, 256).unwrap()
}

#[test]
fn messages_survive_reopen_and_page() {
    let dir = tempfile::tempdir().unwrap();
    let conv = dm();
    {
        let storage = open(dir.path());
        let writes = (1..=10)
            .map(|s| Write::Message(message(&conv, s)))
            .collect();
        commit(&storage, writes).unwrap();
        commit(
            &storage,
            vec![Write::IndexConversation {
                user: user("alice"),
                conversation: conv.clone(),
            }],
        )
        .unwrap();
        storage.close().unwrap();
        assert!(matches!(
            commit(&storage, vec![]),
            Err(StorageError::Closed)
        ));
    }
    let storage = open(dir.path());
    assert_eq!(storage.last_seq(&conv).unwrap(), Seq::new(10));
    let (page, more) = storage.messages_before(&conv, None, 4).unwrap();
    assert_eq!(
        page.iter().map(|m| m.seq.get()).collect::<Vec<_>>(),
        [7, 8, 9, 10]
    );
    assert!(more);
    let (page, more) = storage
        .messages_before(&conv, Some(Seq::new(3)), 4)
        .unwrap();
    assert_eq!(page.iter().map(|m| m.seq.get()).collect::<Vec<_>>(), [1, 2]);
    assert!(!more);
    let (page, more) = storage.messages_after(&conv, Seq::new(8), 5).unwrap();
    assert_eq!(
        page.iter().map(|m| m.seq.get()).collect::<Vec<_>>(),
        [9, 10]
    );
    assert!(!more);
    let (page, more) = storage.messages_after(&conv, Seq::ZERO, 3).unwrap();
    assert_eq!(page.len(), 3);
    assert!(more);
    assert_eq!(page[0], message(&conv, 1));
    assert_eq!(
        storage
            .user_conversations(&user("alice"), None, 10)
            .unwrap(),
        vec![conv.clone()]
    );
    assert!(
        storage
            .user_conversations(&user("bob"), None, 10)
            .unwrap()
            .is_empty()
    );
    // Another conversation's keys never leak into this one's range.
    let other = ConversationId::direct(user("alice"), user("bobby")).unwrap();
    assert_eq!(storage.last_seq(&other).unwrap(), Seq::ZERO);
}

#[test]
fn groups_members_receipts() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let id = GroupId::new(7).unwrap();
    let conv = ConversationId::Group(id);
    let record = GroupRecord {
        name: "crew ✓".into(),
        owner: user("alice"),
        created_at_ms: 99,
        description: "weekend trips".into(),
        invite_secret: Some("s3cret".into()),
        banned: vec![user("mallory")],
        avatar: Some(MediaId::from_digest(&[7; 32])),
    };
    commit(
        &storage,
        vec![
            Write::Group {
                id,
                record: record.clone(),
            },
            Write::AddMember {
                conversation: conv.clone(),
                user: user("alice"),
                role: Role::Owner,
            },
            Write::AddMember {
                conversation: conv.clone(),
                user: user("bob"),
                role: Role::Member,
            },
            Write::Receipt {
                conversation: conv.clone(),
                user: user("bob"),
                delivered: Seq::new(3),
                read: Seq::new(2),
            },
        ],
    )
    .unwrap();
    assert_eq!(storage.group(id).unwrap(), Some(record));
    assert_eq!(storage.group(GroupId::new(8).unwrap()).unwrap(), None);
    // Paging through a user's conversations.
    let more = ConversationId::Group(GroupId::new(8).unwrap());
    commit(
        &storage,
        vec![Write::IndexConversation {
            user: user("alice"),
            conversation: more.clone(),
        }],
    )
    .unwrap();
    let all = storage
        .user_conversations(&user("alice"), None, 10)
        .unwrap();
    assert_eq!(all, vec![conv.clone(), more.clone()]);
    assert_eq!(
        storage.user_conversations(&user("alice"), None, 1).unwrap(),
        vec![conv.clone()]
    );
    assert_eq!(
        storage
            .user_conversations(&user("alice"), Some(&conv), 10)
            .unwrap(),
        vec![more.clone()]
    );
    assert!(
        storage
            .user_conversations(&user("alice"), Some(&more), 10)
            .unwrap()
            .is_empty()
    );
    let members = storage.members(&conv, 100).unwrap();
    assert_eq!(
        members,
        vec![(user("alice"), Role::Owner), (user("bob"), Role::Member)]
    );
    assert_eq!(storage.members(&conv, 1).unwrap().len(), 1, "bounded");
    assert_eq!(
        storage.user_conversations(&user("bob"), None, 10).unwrap(),
        vec![conv.clone()]
    );
    let receipts = storage.receipts(&conv).unwrap();
    assert_eq!(
        receipts,
        vec![ReceiptState {
            user: user("bob"),
            delivered: Seq::new(3),
            read: Seq::new(2)
        }]
    );

    commit(
        &storage,
        vec![Write::RemoveMember {
            conversation: conv.clone(),
            user: user("bob"),
        }],
    )
    .unwrap();
    assert_eq!(storage.members(&conv, 100).unwrap().len(), 1);
    assert!(
        storage
            .user_conversations(&user("bob"), None, 10)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn callbacks_run_in_submission_order_and_barriers_wait() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let conv = dm();
    let (tx, rx) = std_mpsc::channel();
    for seq in 1..=200u64 {
        let tx = tx.clone();
        storage
            .submit(
                vec![Write::Message(message(&conv, seq))],
                Box::new(move |r| tx.send((seq, r)).unwrap()),
            )
            .unwrap();
    }
    let tx2 = tx.clone();
    storage
        .submit(vec![], Box::new(move |r| tx2.send((0, r)).unwrap()))
        .unwrap();
    let order: Vec<u64> = (0..201)
        .map(|_| {
            let (s, r) = rx.recv().unwrap();
            r.unwrap();
            s
        })
        .collect();
    let mut expected: Vec<u64> = (1..=200).collect();
    expected.push(0);
    assert_eq!(
        order, expected,
        "callbacks in submission order, barrier last"
    );
    assert_eq!(storage.last_seq(&conv).unwrap(), Seq::new(200));
}

#[test]
fn full_queue_is_overloaded_not_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let storage = EmbeddedStorage::open(dir.path(), 1, 1).unwrap();
    let conv = dm();
    // Hold the writer in a callback so the queue cannot drain.
    let (release_tx, release_rx) = std_mpsc::channel::<()>();
    let (started_tx, started_rx) = std_mpsc::channel::<()>();
    storage
        .submit(
            vec![Write::Message(message(&conv, 1))],
            Box::new(move |_| {
                started_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            }),
        )
        .unwrap();
    started_rx.recv().unwrap();
    storage
        .submit(vec![Write::Message(message(&conv, 2))], Box::new(|_| {}))
        .unwrap();
    assert!(matches!(
        storage.submit(vec![Write::Message(message(&conv, 3))], Box::new(|_| {})),
        Err(StorageError::Overloaded)
    ));
    release_tx.send(()).unwrap();
    storage.close().unwrap();
    assert_eq!(storage.last_seq(&conv).unwrap(), Seq::new(2));
}

#[test]
fn corrupt_rows_are_errors() {
    assert!(decode_message_row(&[]).is_err());
    assert!(decode_message_row(&[9, 1, 2]).is_err());
    assert!(decode_message_row(&[MESSAGE_ROW_V1, 0xff]).is_err());
    let record = GroupRecord {
        name: "n".into(),
        owner: user("o"),
        created_at_ms: 1,
        description: String::new(),
        invite_secret: None,
        banned: Vec::new(),
        avatar: None,
    };
    let row = encode_group_row(&record);
    // Rows written by the first format (name, owner, time) still decode.
    let mut v1 = vec![1u8];
    v1.extend_from_slice(&7u64.to_be_bytes());
    v1.extend_from_slice(&1u16.to_be_bytes());
    v1.extend_from_slice(b"o");
    v1.extend_from_slice(&2u16.to_be_bytes());
    v1.extend_from_slice(b"g1");
    let old = decode_group_row(&v1).unwrap();
    assert_eq!(
        (old.name.as_str(), old.owner.as_str(), old.created_at_ms),
        ("g1", "o", 7)
    );
    assert!(old.banned.is_empty() && old.invite_secret.is_none());
    assert_eq!(decode_group_row(&row).unwrap(), record);
    assert!(decode_group_row(&row[..row.len() - 1]).is_err());
    assert!(decode_group_row(&[2]).is_err());
}

fn seqs(messages: &[Message]) -> Vec<u64> {
    messages.iter().map(|m| m.seq.get()).collect()
}

/// Keys of conversations (and users) whose ids share a prefix never mix: `dm:alice:bob` vs
/// `dm:alice:bobby`, `g:1` vs `g:12`, `bob` vs `bobby`; seqs are ordered numerically.
#[test]
fn prefix_sharing_ids_never_mix() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let bob = dm();
    let bobby = ConversationId::direct(user("alice"), user("bobby")).unwrap();
    let g1 = ConversationId::Group(GroupId::new(1).unwrap());
    let g12 = ConversationId::Group(GroupId::new(12).unwrap());
    let mut writes: Vec<Write> = (1..=300)
        .map(|s| Write::Message(message(&bob, s)))
        .collect();
    writes.extend((1..=3).map(|s| Write::Message(message(&bobby, s))));
    writes.extend((1..=2).map(|s| Write::Message(message(&g12, s))));
    for (conversation, member) in [
        (&bob, "bob"),
        (&bobby, "bobby"),
        (&g1, "bob"),
        (&g12, "bobby"),
        (&g12, "bob"),
    ] {
        writes.push(Write::AddMember {
            conversation: conversation.clone(),
            user: user(member),
            role: Role::Member,
        });
    }
    writes.push(Write::Receipt {
        conversation: bobby.clone(),
        user: user("bobby"),
        delivered: Seq::new(3),
        read: Seq::new(1),
    });
    writes.push(Write::Pin {
        conversation: bobby.clone(),
        target: Seq::new(2),
        pinned: true,
    });
    commit(&storage, writes).unwrap();

    assert_eq!(storage.last_seq(&bob).unwrap(), Seq::new(300));
    assert_eq!(storage.last_seq(&bobby).unwrap(), Seq::new(3));
    assert_eq!(storage.last_seq(&g1).unwrap(), Seq::ZERO);
    assert_eq!(storage.last_seq(&g12).unwrap(), Seq::new(2));

    let (page, more) = storage.messages_after(&bob, Seq::new(254), 4).unwrap();
    assert_eq!(seqs(&page), [255, 256, 257, 258], "numeric seq order");
    assert!(more);
    let (page, more) = storage.messages_after(&bob, Seq::new(297), 10).unwrap();
    assert_eq!(seqs(&page), [298, 299, 300]);
    assert!(!more, "nothing of dm:alice:bobby after dm:alice:bob");
    let (page, more) = storage.messages_before(&bobby, None, 10).unwrap();
    assert_eq!(seqs(&page), [1, 2, 3]);
    assert!(page.iter().all(|m| m.conversation == bobby));
    assert!(!more, "nothing of dm:alice:bob before dm:alice:bobby");
    let (page, more) = storage.messages_after(&bobby, Seq::ZERO, 10).unwrap();
    assert_eq!(seqs(&page), [1, 2, 3]);
    assert!(!more);
    let (page, more) = storage.messages_before(&g1, None, 10).unwrap();
    assert!(page.is_empty() && !more, "g:1 sees nothing of g:12");
    assert_eq!(storage.message(&bobby, Seq::new(4)).unwrap(), None);

    assert_eq!(
        storage.members(&g1, 10).unwrap(),
        vec![(user("bob"), Role::Member)]
    );
    assert_eq!(
        storage.members(&g12, 10).unwrap(),
        vec![(user("bob"), Role::Member), (user("bobby"), Role::Member)],
        "members in user order"
    );
    assert!(storage.members(&bob, 10).unwrap().is_empty());

    assert_eq!(
        storage.user_conversations(&user("bob"), None, 10).unwrap(),
        vec![bob.clone(), g1.clone(), g12.clone()],
        "in id order, nothing of bobby"
    );
    assert_eq!(
        storage
            .user_conversations(&user("bob"), Some(&g12), 10)
            .unwrap(),
        Vec::<ConversationId>::new()
    );
    assert_eq!(
        storage
            .user_conversations(&user("bobby"), None, 10)
            .unwrap(),
        vec![bobby.clone(), g12.clone()]
    );
    assert!(
        storage
            .user_conversations(&user("bo"), None, 10)
            .unwrap()
            .is_empty()
    );

    assert!(storage.receipts(&bob).unwrap().is_empty());
    assert_eq!(storage.receipts(&bobby).unwrap().len(), 1);
    assert!(storage.pinned(&bob, 10).unwrap().is_empty());
    assert_eq!(storage.pinned(&bobby, 10).unwrap(), vec![Seq::new(2)]);
}

/// Writes to the same key within one commit behave as if applied one by one: the last one wins.
#[test]
fn last_write_to_a_key_wins_within_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let conv = ConversationId::Group(GroupId::new(5).unwrap());
    let react = |emoji: &str, added| Write::Reaction {
        conversation: conv.clone(),
        target: Seq::new(1),
        emoji: emoji.into(),
        user: user("bob"),
        added,
    };
    let pin = |target, pinned| Write::Pin {
        conversation: conv.clone(),
        target: Seq::new(target),
        pinned,
    };
    let receipt = |delivered, read| Write::Receipt {
        conversation: conv.clone(),
        user: user("bob"),
        delivered: Seq::new(delivered),
        read: Seq::new(read),
    };
    commit(
        &storage,
        vec![
            Write::Message(message(&conv, 1)),
            react("👍", true),
            react("👍", false),
            react("🎉", false),
            react("🎉", true),
            pin(1, true),
            pin(1, false),
            pin(3, true),
            pin(2, true),
            receipt(1, 0),
            receipt(5, 4),
            Write::AddMember {
                conversation: conv.clone(),
                user: user("bob"),
                role: Role::Member,
            },
            Write::RemoveMember {
                conversation: conv.clone(),
                user: user("bob"),
            },
            Write::AddMember {
                conversation: conv.clone(),
                user: user("carol"),
                role: Role::Member,
            },
        ],
    )
    .unwrap();
    let has = |emoji: &str| {
        storage
            .has_reacted(&conv, Seq::new(1), emoji, &user("bob"))
            .unwrap()
    };
    assert!(!has("👍"));
    assert!(has("🎉"));
    assert!(!has("🎉🎉"), "emoji are exact");
    assert_eq!(
        storage.pinned(&conv, 10).unwrap(),
        vec![Seq::new(3), Seq::new(2)],
        "pin order, not seq order"
    );
    assert_eq!(
        storage.receipts(&conv).unwrap(),
        vec![ReceiptState {
            user: user("bob"),
            delivered: Seq::new(5),
            read: Seq::new(4),
        }]
    );
    assert_eq!(
        storage.members(&conv, 10).unwrap(),
        vec![(user("carol"), Role::Member)]
    );
    assert!(
        storage
            .user_conversations(&user("bob"), None, 10)
            .unwrap()
            .is_empty()
    );
}

/// A closed store stays readable; opening its directory again in the same process takes the
/// database from it, so a node restarts in-process even while old holders of the store remain.
#[test]
fn reopen_in_process_takes_the_database_from_a_closed_store() {
    let dir = tempfile::tempdir().unwrap();
    let conv = dm();
    let first = open(dir.path());
    commit(&first, vec![Write::Message(message(&conv, 1))]).unwrap();
    first.close().unwrap();
    first.close().unwrap();
    assert_eq!(first.last_seq(&conv).unwrap(), Seq::new(1));

    let second = open(dir.path());
    assert!(matches!(first.last_seq(&conv), Err(StorageError::Closed)));
    assert!(matches!(
        commit(&first, vec![Write::Message(message(&conv, 2))]),
        Err(StorageError::Closed)
    ));
    assert_eq!(second.last_seq(&conv).unwrap(), Seq::new(1));
    commit(&second, vec![Write::Message(message(&conv, 2))]).unwrap();
    second.close().unwrap();
    drop(first);

    let third = open(dir.path());
    assert_eq!(third.last_seq(&conv).unwrap(), Seq::new(2));
    // A store that is not closed keeps its directory.
    assert!(EmbeddedStorage::open(dir.path(), 16, 16).is_err());
    assert_eq!(third.last_seq(&conv).unwrap(), Seq::new(2));
}

/// A data directory of the earlier redb adapter is refused, not silently replaced by an empty store.
#[test]
fn legacy_store_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("piazza.redb"), b"").unwrap();
    assert!(matches!(
        EmbeddedStorage::open(dir.path(), 16, 16),
        Err(StorageError::Engine(_))
    ));
}

#[test]
fn media_references_are_per_conversation_and_durable() {
    let dir = tempfile::tempdir().unwrap();
    let media: MediaId = "ab".repeat(32).parse().unwrap();
    let other: MediaId = "cd".repeat(32).parse().unwrap();
    let group = ConversationId::Group(GroupId::new(7).unwrap());
    {
        let storage = open(dir.path());
        assert!(!storage.media_referenced(&media, &dm()).unwrap());
        commit(
            &storage,
            vec![Write::MediaRef {
                media: media.clone(),
                conversation: dm(),
            }],
        )
        .unwrap();
        storage.close().unwrap();
    }
    let storage = open(dir.path());
    assert!(storage.media_referenced(&media, &dm()).unwrap());
    assert!(!storage.media_referenced(&media, &group).unwrap());
    assert!(!storage.media_referenced(&other, &dm()).unwrap());
}

/// Pins come back oldest pin first even when fewer than all are asked for, whatever their seqs.
#[test]
fn pinned_are_ordered_by_pin_time() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let conv = dm();
    for seq in [9, 3, 7] {
        commit(
            &storage,
            vec![Write::Pin {
                conversation: conv.clone(),
                target: Seq::new(seq),
                pinned: true,
            }],
        )
        .unwrap();
    }
    assert_eq!(
        storage.pinned(&conv, 10).unwrap(),
        [Seq::new(9), Seq::new(3), Seq::new(7)]
    );
    assert_eq!(
        storage.pinned(&conv, 2).unwrap(),
        [Seq::new(9), Seq::new(3)],
        "the two oldest pins"
    );
    commit(
        &storage,
        vec![Write::Pin {
            conversation: conv.clone(),
            target: Seq::new(3),
            pinned: false,
        }],
    )
    .unwrap();
    assert_eq!(
        storage.pinned(&conv, 10).unwrap(),
        [Seq::new(9), Seq::new(7)]
    );
}

#[test]
fn channels_schedules_views_and_counters() {
    use crate::storage::{ChannelRecord, CounterKind, DuePost};
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path());
    let channel = ChannelId::new(5).unwrap();
    let conv = ConversationId::Channel(channel);
    let record = ChannelRecord {
        title: "deals".into(),
        description: "daily".into(),
        owner: user("shop"),
        created_at_ms: 3,
        signed: true,
        avatar: None,
    };
    let post = |id: &str, at_ms: u64| ScheduledPost {
        client_msg_id: id.parse().unwrap(),
        at_ms,
        author: user("shop"),
        text: format!("text {id}"),
    };
    commit(
        &storage,
        vec![
            Write::Channel {
                id: channel,
                record: record.clone(),
            },
            Write::AddMember {
                conversation: conv.clone(),
                user: user("bob"),
                role: Role::Member,
            },
            Write::Schedule {
                channel,
                post: post("late", 300),
            },
            Write::Schedule {
                channel,
                post: post("early", 100),
            },
            Write::View {
                conversation: conv.clone(),
                post: Seq::new(2),
                user: user("bob"),
            },
            Write::Counter {
                conversation: conv.clone(),
                post: Seq::new(2),
                kind: CounterKind::Views,
                value: 1,
            },
        ],
    )
    .unwrap();
    assert_eq!(storage.channel(channel).unwrap(), Some(record));
    assert_eq!(
        storage.member_role(&conv, &user("bob")).unwrap(),
        Some(Role::Member)
    );
    assert_eq!(storage.member_role(&conv, &user("eve")).unwrap(), None);
    let scheduled = storage.scheduled(channel, 10).unwrap();
    assert_eq!(scheduled.len(), 2);
    // The due index is ordered by time and stops at `until`.
    let (due, next) = storage.due(200, 10).unwrap();
    let early = DuePost {
        at_ms: 100,
        channel,
        client_msg_id: "early".parse().unwrap(),
    };
    assert_eq!((due, next), (vec![early], Some(300)));
    assert_eq!(storage.due(50, 10).unwrap(), (Vec::new(), Some(100)));
    assert!(
        storage
            .has_viewed(&conv, Seq::new(2), &user("bob"))
            .unwrap()
    );
    assert!(
        !storage
            .has_viewed(&conv, Seq::new(3), &user("bob"))
            .unwrap()
    );
    assert_eq!(
        storage
            .counter(&conv, Seq::new(2), CounterKind::Views)
            .unwrap(),
        1
    );
    assert_eq!(
        storage
            .counter(&conv, Seq::new(2), CounterKind::Comments)
            .unwrap(),
        0
    );
    commit(
        &storage,
        vec![Write::Unschedule {
            channel,
            client_msg_id: "early".parse().unwrap(),
            at_ms: 100,
        }],
    )
    .unwrap();
    assert_eq!(storage.scheduled(channel, 10).unwrap().len(), 1);
    assert_eq!(storage.due(1000, 10).unwrap().0.len(), 1);
}

#[test]
fn keyed_rows_scan_by_prefix_page_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let put = |key: &[u8], value: &[u8]| Write::Put {
        table: KvTable::ShopLog,
        key: key.to_vec(),
        value: value.to_vec(),
    };
    {
        let storage = open(dir.path());
        commit(
            &storage,
            vec![
                put(b"a\0\x01", b"1"),
                put(b"a\0\x02", b"2"),
                put(b"a\0\x03", b"3"),
                put(b"ab\0\x01", b"other shop"),
                put(b"a\xff\xff", b"edge"),
                Write::Put {
                    table: KvTable::Outbox,
                    key: b"a\0\x01".to_vec(),
                    value: b"another table".to_vec(),
                },
            ],
        )
        .unwrap();
        commit(
            &storage,
            vec![Write::Delete {
                table: KvTable::ShopLog,
                key: b"a\0\x02".to_vec(),
            }],
        )
        .unwrap();
        storage.close().unwrap();
    }
    let storage = open(dir.path());
    let (rows, more) = storage.kv_scan(KvTable::ShopLog, b"a\0", None, 10).unwrap();
    assert_eq!(
        rows,
        vec![
            (b"a\0\x01".to_vec(), b"1".to_vec()),
            (b"a\0\x03".to_vec(), b"3".to_vec())
        ]
    );
    assert!(!more);
    let (page, more) = storage.kv_scan(KvTable::ShopLog, b"a\0", None, 1).unwrap();
    assert_eq!(page.len(), 1);
    assert!(more);
    let (rest, more) = storage
        .kv_scan(KvTable::ShopLog, b"a\0", Some(&page[0].0), 10)
        .unwrap();
    assert_eq!(rest, vec![(b"a\0\x03".to_vec(), b"3".to_vec())]);
    assert!(!more);
    // A prefix ending in 0xFF bytes has no finite end; the scan still stops at the prefix.
    let (edge, _) = storage
        .kv_scan(KvTable::ShopLog, b"a\xff", None, 10)
        .unwrap();
    assert_eq!(edge, vec![(b"a\xff\xff".to_vec(), b"edge".to_vec())]);
    assert_eq!(
        storage.kv_last(KvTable::ShopLog, b"a\0").unwrap(),
        Some((b"a\0\x03".to_vec(), b"3".to_vec()))
    );
    assert_eq!(storage.kv_last(KvTable::ShopLog, b"zz").unwrap(), None);
    assert_eq!(
        storage.kv_get(KvTable::Outbox, b"a\0\x01").unwrap(),
        Some(b"another table".to_vec())
    );
    assert_eq!(storage.kv_get(KvTable::ShopLog, b"a\0\x02").unwrap(), None);
}
