//! Round trips for every wire type, and limit / limit + 1 for every limit.

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{self, CodecError};
use crate::limits::*;
use crate::*;

/// Encodes as a frame, decodes through the incremental decoder fed one byte at a time, and
/// compares.
fn check_round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: T) {
    let frame = codec::encode_frame(&value).unwrap();
    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    let mut decoded = None;
    for byte in &frame {
        assert!(decoded.is_none(), "frame completed early");
        decoder.extend(std::slice::from_ref(byte));
        decoded = decoder.next_value::<T>().unwrap();
    }
    assert_eq!(decoded.as_ref(), Some(&value));
    assert_eq!(decoder.buffered_bytes(), 0);
}

fn user(s: &str) -> UserId {
    s.parse().unwrap()
}

fn text_of(len: usize) -> String {
    "x".repeat(len)
}

fn message(seq: u64) -> Message {
    Message {
        conversation: ConversationId::direct(user("alice"), user("bob")).unwrap(),
        seq: Seq::new(seq),
        sender: user("alice"),
        client_msg_id: "m-1".parse().unwrap(),
        sent_at_ms: 1_700_000_000_000,
        body: MessageBody::Text("hello".into()),
        reply_to: None,
        forwarded_from: None,
        edited_at_ms: None,
        reactions: Vec::new(),
    }
}

#[test]
fn requests_round_trip() {
    let dm = ConversationRef::Direct { peer: user("bob") };
    let group = GroupId::new(42).unwrap();
    let cid = ConversationId::Group(group);
    for request in [
        Request::Hello {
            protocol_version: PROTOCOL_VERSION,
            token: "t".into(),
            device: "phone-1".parse().unwrap(),
        },
        Request::Send {
            conversation: dm.clone(),
            client_msg_id: "c1".parse().unwrap(),
            text: "hi".into(),
        },
        Request::History {
            conversation: ConversationRef::Group(group),
            before: Some(Seq::new(9)),
            limit: 10,
        },
        Request::Sync {
            cursors: vec![SyncCursor {
                conversation: cid.clone(),
                seq: Seq::new(3),
            }],
            limit: 5,
        },
        Request::Receipt {
            conversation: cid.clone(),
            seq: Seq::new(2),
            kind: ReceiptKind::Read,
        },
        Request::Receipts {
            conversation: ConversationRef::Id(cid.clone()),
        },
        Request::CreateGroup {
            name: "friends".into(),
            members: vec![user("bob"), user("carol")],
        },
        Request::LeaveGroup { group },
        Request::Heads {
            after: Some(cid.clone()),
        },
        Request::Heads { after: None },
        Request::Reply {
            conversation: dm.clone(),
            client_msg_id: "r".parse().unwrap(),
            reply_to: Seq::new(1),
            text: "re".into(),
        },
        Request::Edit {
            conversation: dm.clone(),
            client_msg_id: "e".parse().unwrap(),
            target: Seq::new(1),
            text: "fixed".into(),
        },
        Request::Delete {
            conversation: dm.clone(),
            client_msg_id: "d".parse().unwrap(),
            target: Seq::new(1),
        },
        Request::React {
            conversation: dm.clone(),
            client_msg_id: "x".parse().unwrap(),
            target: Seq::new(1),
            emoji: "👍".into(),
            add: true,
        },
        Request::Pin {
            conversation: dm.clone(),
            client_msg_id: "p".parse().unwrap(),
            target: Seq::new(1),
            pinned: true,
        },
        Request::Forward {
            from: dm.clone(),
            seq: Seq::new(1),
            to: ConversationRef::Group(group),
            client_msg_id: "f".parse().unwrap(),
        },
        Request::Pinned {
            conversation: dm.clone(),
        },
    ] {
        request.validate().unwrap();
        check_round_trip(request);
    }
}

#[test]
fn responses_events_datagrams_round_trip() {
    let cid = ConversationId::direct(user("bob"), user("alice")).unwrap();
    for response in [
        Response::Welcome {
            user: user("alice"),
            node: "n1".into(),
            server_time_ms: 5,
        },
        Response::Ack(SendAck {
            conversation: cid.clone(),
            seq: Seq::new(1),
            client_msg_id: "c".parse().unwrap(),
            sent_at_ms: 7,
            duplicate: true,
        }),
        Response::History(HistoryPage {
            conversation: cid.clone(),
            messages: vec![message(1), message(2)],
            more: true,
        }),
        Response::Sync(SyncBatch {
            messages: vec![message(3)],
            more: false,
        }),
        Response::Receipts(vec![ReceiptState {
            user: user("bob"),
            delivered: Seq::new(3),
            read: Seq::new(2),
        }]),
        Response::GroupCreated {
            conversation: ConversationId::Group(GroupId::new(1).unwrap()),
        },
        Response::Done,
        Response::Pinned(vec![message(3)]),
        Response::Heads {
            heads: vec![SyncCursor {
                conversation: cid.clone(),
                seq: Seq::new(9),
            }],
            more: true,
        },
        Response::Error(ErrorCode::RateLimited {
            retry_after_ms: 250,
        }),
        Response::Error(ErrorCode::invalid("text", "empty")),
        Response::Error(ErrorCode::Internal { id: 99 }),
    ] {
        check_round_trip(response);
    }
    for event in [
        Event::Message(message(1)),
        Event::Message(Message {
            body: MessageBody::System(SystemEvent::GroupCreated {
                name: "g".into(),
                member_count: 3,
            }),
            ..message(1)
        }),
        Event::Message(Message {
            body: MessageBody::System(SystemEvent::MemberLeft { user: user("bob") }),
            ..message(2)
        }),
        Event::Receipt {
            conversation: cid.clone(),
            user: user("bob"),
            kind: ReceiptKind::Delivered,
            seq: Seq::new(1),
        },
        Event::Message(Message {
            body: MessageBody::Update(MessageUpdate::Edited {
                target: Seq::new(1),
                text: "t".into(),
            }),
            reply_to: Some(Seq::new(1)),
            forwarded_from: Some(ForwardedFrom {
                conversation: cid.clone(),
                seq: Seq::new(4),
                sender: user("bob"),
                sent_at_ms: 3,
            }),
            edited_at_ms: Some(9),
            reactions: vec![ReactionCount {
                emoji: "🎉".into(),
                count: 2,
            }],
            ..message(5)
        }),
        Event::Message(Message {
            body: MessageBody::Deleted,
            ..message(6)
        }),
        Event::Message(Message {
            body: MessageBody::Update(MessageUpdate::Deleted {
                target: Seq::new(6),
            }),
            ..message(7)
        }),
        Event::Message(Message {
            body: MessageBody::Update(MessageUpdate::Reaction {
                target: Seq::new(6),
                emoji: "🎉".into(),
                added: false,
            }),
            ..message(8)
        }),
        Event::Message(Message {
            body: MessageBody::Update(MessageUpdate::Pinned {
                target: Seq::new(6),
                pinned: true,
            }),
            ..message(9)
        }),
        Event::Resync,
    ] {
        check_round_trip(event);
    }
    check_round_trip(Datagram::Typing {
        conversation: cid,
        user: user("alice"),
        active: true,
    });
    check_round_trip(Money::new(-1250, "EUR".parse().unwrap()));
}

#[test]
fn ids_parse_and_reject() {
    assert_eq!(user("a-b_c.9").as_str(), "a-b_c.9");
    assert!(
        "Alice".parse::<UserId>().is_err(),
        "upper case is not a user name"
    );
    assert!("".parse::<UserId>().is_err());
    assert!("a b".parse::<UserId>().is_err());
    assert!(text_of(USER_NAME_BYTES_MAX).parse::<UserId>().is_ok());
    assert!(matches!(
        text_of(USER_NAME_BYTES_MAX + 1).parse::<UserId>(),
        Err(IdError::TooLong { .. })
    ));
    assert!(
        text_of(CLIENT_MSG_ID_BYTES_MAX)
            .parse::<ClientMsgId>()
            .is_ok()
    );
    assert!(
        text_of(CLIENT_MSG_ID_BYTES_MAX + 1)
            .parse::<ClientMsgId>()
            .is_err()
    );
    assert!(text_of(DEVICE_ID_BYTES_MAX).parse::<DeviceId>().is_ok());
    assert!(
        text_of(DEVICE_ID_BYTES_MAX + 1)
            .parse::<DeviceId>()
            .is_err()
    );
    assert!(GroupId::new(0).is_err());
    assert_eq!("g:17".parse::<GroupId>().unwrap().get(), 17);

    let a = ConversationId::direct(user("bob"), user("alice")).unwrap();
    let b = ConversationId::direct(user("alice"), user("bob")).unwrap();
    assert_eq!(
        a, b,
        "a direct conversation has one id whichever side names it"
    );
    assert_eq!(a.to_string(), "dm:alice:bob");
    assert_eq!(a.to_string().parse::<ConversationId>().unwrap(), a);
    assert_eq!(a.peer_of(&user("alice")), Some(&user("bob")));
    assert!(ConversationId::direct(user("bob"), user("bob")).is_err());
    assert!(
        "dm:bob:alice".parse::<ConversationId>().is_err(),
        "must be ascending"
    );
    assert_eq!(
        "g:5".parse::<ConversationId>().unwrap(),
        ConversationId::Group(GroupId::new(5).unwrap())
    );
}

#[test]
fn invalid_ids_do_not_decode() {
    // A hand-built frame whose user id has a forbidden character must fail to decode, not produce
    // an invalid UserId.
    #[derive(Serialize)]
    struct Fake(String);
    let body = codec::encode(&Fake("NOT VALID".into())).unwrap();
    assert!(matches!(
        codec::decode::<UserId>(&body, 1024),
        Err(CodecError::Decode(_))
    ));

    // A direct conversation with both sides equal, as the raw representation.
    #[derive(Serialize)]
    enum Repr {
        Direct(String, String),
    }
    let body = codec::encode(&Repr::Direct("bob".into(), "bob".into())).unwrap();
    assert!(codec::decode::<ConversationId>(&body, 1024).is_err());
    let body = codec::encode(&0u64).unwrap();
    assert!(codec::decode::<GroupId>(&body, 1024).is_err());
}

#[test]
fn emoji_limit() {
    let react = |emoji: &str| Request::React {
        conversation: ConversationRef::Direct { peer: user("bob") },
        client_msg_id: "c".parse().unwrap(),
        target: Seq::new(1),
        emoji: emoji.into(),
        add: true,
    };
    assert!(react(&"x".repeat(EMOJI_BYTES_MAX)).validate().is_ok());
    assert!(matches!(
        react(&"x".repeat(EMOJI_BYTES_MAX + 1)).validate(),
        Err(ErrorCode::TooLarge { .. })
    ));
    assert!(react("").validate().is_err());
    assert!(react("a b").validate().is_err());
    let edit = |len| Request::Edit {
        conversation: ConversationRef::Direct { peer: user("bob") },
        client_msg_id: "c".parse().unwrap(),
        target: Seq::new(1),
        text: text_of(len),
    };
    assert!(edit(TEXT_BYTES_MAX).validate().is_ok());
    assert!(edit(TEXT_BYTES_MAX + 1).validate().is_err());
    assert!(edit(0).validate().is_err());
}

#[test]
fn text_limit() {
    let send = |len| Request::Send {
        conversation: ConversationRef::Direct { peer: user("bob") },
        client_msg_id: "c".parse().unwrap(),
        text: text_of(len),
    };
    assert!(send(TEXT_BYTES_MAX).validate().is_ok());
    assert!(matches!(
        send(TEXT_BYTES_MAX + 1).validate(),
        Err(ErrorCode::TooLarge { .. })
    ));
    assert!(matches!(send(0).validate(), Err(ErrorCode::Invalid { .. })));
    // A maximal send still fits in a request frame.
    assert!(
        codec::encode(&send(TEXT_BYTES_MAX)).unwrap().len() <= REQUEST_FRAME_BYTES_MAX as usize
    );
}

#[test]
fn page_and_batch_limits() {
    let history = |limit| Request::History {
        conversation: ConversationRef::Direct { peer: user("bob") },
        before: None,
        limit,
    };
    assert!(history(HISTORY_PAGE_MAX).validate().is_ok());
    assert!(history(HISTORY_PAGE_MAX + 1).validate().is_err());
    assert!(history(0).validate().is_err());

    let sync = |n: usize, limit| Request::Sync {
        cursors: (0..n)
            .map(|i| SyncCursor {
                conversation: ConversationId::Group(GroupId::new(i as u64 + 1).unwrap()),
                seq: Seq::ZERO,
            })
            .collect(),
        limit,
    };
    assert!(sync(SYNC_CURSORS_MAX, SYNC_MESSAGES_MAX).validate().is_ok());
    assert!(matches!(
        sync(SYNC_CURSORS_MAX + 1, 1).validate(),
        Err(ErrorCode::TooLarge { .. })
    ));
    assert!(sync(1, SYNC_MESSAGES_MAX + 1).validate().is_err());

    let group = |n: usize, name: String| Request::CreateGroup {
        name,
        members: (0..n).map(|i| user(&format!("u{i}"))).collect(),
    };
    assert!(
        group(GROUP_CREATE_MEMBERS_MAX, "g".into())
            .validate()
            .is_ok()
    );
    assert!(
        group(GROUP_CREATE_MEMBERS_MAX + 1, "g".into())
            .validate()
            .is_err()
    );
    assert!(group(1, text_of(GROUP_NAME_BYTES_MAX)).validate().is_ok());
    assert!(
        group(1, text_of(GROUP_NAME_BYTES_MAX + 1))
            .validate()
            .is_err()
    );
    assert!(group(1, "  ".into()).validate().is_err());

    let hello = |len| Request::Hello {
        protocol_version: PROTOCOL_VERSION,
        token: text_of(len),
        device: "d".parse().unwrap(),
    };
    assert!(hello(TOKEN_BYTES_MAX).validate().is_ok());
    assert!(hello(TOKEN_BYTES_MAX + 1).validate().is_err());
}

#[test]
fn maximal_page_fits_a_frame() {
    let long = |seq| Message {
        client_msg_id: text_of(CLIENT_MSG_ID_BYTES_MAX).parse().unwrap(),
        sender: text_of(USER_NAME_BYTES_MAX).parse().unwrap(),
        body: MessageBody::Text("é".repeat(TEXT_BYTES_MAX / 2)),
        forwarded_from: Some(ForwardedFrom {
            conversation: ConversationId::direct(
                text_of(USER_NAME_BYTES_MAX).parse().unwrap(),
                "z".repeat(USER_NAME_BYTES_MAX).parse().unwrap(),
            )
            .unwrap(),
            seq: Seq::new(u64::MAX),
            sender: text_of(USER_NAME_BYTES_MAX).parse().unwrap(),
            sent_at_ms: u64::MAX,
        }),
        reply_to: Some(Seq::new(u64::MAX)),
        edited_at_ms: Some(u64::MAX),
        reactions: (0..REACTIONS_DISTINCT_MAX)
            .map(|i| ReactionCount {
                emoji: format!("{i:0>64}"),
                count: u32::MAX,
            })
            .collect(),
        ..message(seq)
    };
    let page = Response::History(HistoryPage {
        conversation: ConversationId::direct(
            text_of(USER_NAME_BYTES_MAX).parse().unwrap(),
            "y".repeat(USER_NAME_BYTES_MAX).parse().unwrap(),
        )
        .unwrap(),
        messages: (1..=u64::from(HISTORY_PAGE_MAX)).map(long).collect(),
        more: true,
    });
    check_round_trip(page);
}

#[test]
fn frame_limits() {
    // Exactly at the limit: accepted. One over: rejected from the header alone.
    let mut decoder = FrameDecoder::new(8);
    decoder.extend(&8u32.to_be_bytes());
    assert_eq!(
        decoder.next_frame().unwrap(),
        None,
        "header alone is incomplete, not an error"
    );
    decoder.extend(&[0; 8]);
    assert_eq!(decoder.next_frame().unwrap(), Some(vec![0; 8]));

    let mut decoder = FrameDecoder::new(8);
    decoder.extend(&9u32.to_be_bytes());
    assert!(matches!(
        decoder.next_frame(),
        Err(FrameError::TooLarge { len: 9, max: 8 })
    ));

    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    decoder.extend(&u32::MAX.to_be_bytes());
    assert!(matches!(
        decoder.next_frame(),
        Err(FrameError::TooLarge { .. })
    ));

    assert_eq!(codec::parse_header(8u32.to_be_bytes(), 8), Ok(8));
    assert!(codec::parse_header(9u32.to_be_bytes(), 8).is_err());
    assert!(codec::frame_from_body(&vec![0; FRAME_BYTES_MAX as usize]).is_ok());
    assert!(codec::frame_from_body(&vec![0; FRAME_BYTES_MAX as usize + 1]).is_err());
}

#[test]
fn malformed_bodies_are_errors() {
    let body = codec::encode(&Request::LeaveGroup {
        group: GroupId::new(3).unwrap(),
    })
    .unwrap();
    let mut trailing = body.clone();
    trailing.push(0);
    assert!(matches!(
        codec::decode::<Request>(&trailing, 1024),
        Err(CodecError::Trailing(1))
    ));
    assert!(codec::decode::<Request>(&[0xff, 0xff, 0xff], 1024).is_err());
    assert!(codec::decode::<Request>(&body[..body.len() - 1], 1024).is_err());
    assert!(matches!(
        codec::decode::<Request>(&body, body.len() - 1),
        Err(CodecError::TooLarge { .. })
    ));
    // A vector whose length prefix claims far more elements than the bytes hold must fail without
    // allocating for the claim.
    let mut huge = vec![6u8]; // Request::Sync variant index
    huge.extend_from_slice(&[0xfc, 0xff, 0xff, 0xff, 0x7f]); // varint length ~2^31
    assert!(codec::decode::<Request>(&huge, 1024).is_err());
}

#[test]
fn money_is_checked() {
    let eur: Currency = "EUR".parse().unwrap();
    let usd: Currency = "USD".parse().unwrap();
    let a = Money::new(150, eur);
    assert_eq!(a.checked_add(Money::new(50, eur)).unwrap().minor(), 200);
    assert_eq!(a.checked_sub(Money::new(200, eur)).unwrap().minor(), -50);
    assert_eq!(a.checked_mul(3).unwrap().minor(), 450);
    assert!(matches!(
        a.checked_add(Money::new(1, usd)),
        Err(MoneyError::CurrencyMismatch(..))
    ));
    assert_eq!(
        Money::new(i64::MAX, eur).checked_add(Money::new(1, eur)),
        Err(MoneyError::Overflow)
    );
    assert_eq!(
        Money::new(i64::MAX, eur).checked_mul(2),
        Err(MoneyError::Overflow)
    );
    assert!("eur".parse::<Currency>().is_err());
    assert!("EURO".parse::<Currency>().is_err());
}
