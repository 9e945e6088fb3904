//! The embedded adapter against a real redb file in a temporary directory.

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
    };
    let row = encode_group_row(&record);
    assert_eq!(decode_group_row(&row).unwrap(), record);
    assert!(decode_group_row(&row[..row.len() - 1]).is_err());
    assert!(decode_group_row(&[2]).is_err());
}
