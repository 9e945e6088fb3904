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

fn media_id(fill: char) -> MediaId {
    fill.to_string().repeat(MEDIA_ID_HEX_BYTES).parse().unwrap()
}

fn media_info() -> MediaInfo {
    MediaInfo {
        id: media_id('a'),
        size_bytes: 50 << 20,
        mime: "image/png".into(),
    }
}

#[test]
fn media_round_trip() {
    let dm = ConversationRef::Direct { peer: user("bob") };
    let upload = UploadId::new(0x1234_5678_9abc_def0).unwrap();
    for request in [
        Request::Media(MediaRequest::BeginUpload {
            size_bytes: MEDIA_BYTES_HARD_MAX,
            sha256: media_id('0'),
            mime_hint: Some("image/png".into()),
            file_name: Some("cat.png".into()),
        }),
        Request::Media(MediaRequest::FinishUpload { upload }),
        Request::Media(MediaRequest::Download {
            media: media_id('f'),
            conversation: dm.clone(),
            range: Some((5, 10)),
        }),
        Request::SendMedia {
            conversation: dm,
            client_msg_id: "c9".parse().unwrap(),
            media: media_id('b'),
            caption: "look".into(),
        },
    ] {
        request.validate().unwrap();
        check_round_trip(request);
    }
    for response in [
        Response::Media(MediaResponse::Upload {
            upload,
            offset_bytes: 25 << 20,
        }),
        Response::Media(MediaResponse::Ready(media_info())),
        Response::Media(MediaResponse::Download {
            info: media_info(),
            start: 0,
            end: 50 << 20,
        }),
    ] {
        check_round_trip(response);
    }
    let mut with_media = message(4);
    with_media.body = MessageBody::Media {
        media: media_info(),
        caption: "a cat".into(),
    };
    check_round_trip(Event::Message(with_media));
    check_round_trip(UploadChunkHeader {
        upload,
        offset_bytes: u64::MAX,
    });
}

#[test]
fn media_ids_parse_and_reject() {
    let digest = [0xabu8; 32];
    let id = MediaId::from_digest(&digest);
    assert_eq!(id.as_str(), "ab".repeat(32));
    assert_eq!(id.digest(), digest);
    assert_eq!(id.as_str().parse::<MediaId>().unwrap(), id);
    // Exactly 64 lowercase hex digits.
    assert!("a".repeat(63).parse::<MediaId>().is_err());
    assert!("a".repeat(65).parse::<MediaId>().is_err());
    assert!("A".repeat(64).parse::<MediaId>().is_err());
    assert!("g".repeat(64).parse::<MediaId>().is_err());
    assert!("".parse::<MediaId>().is_err());
    // Invalid ids do not decode either.
    let bad = codec::encode(&"A".repeat(64)).unwrap();
    assert!(codec::decode::<MediaId>(&bad, 1024).is_err());
    let zero = codec::encode(&0u64).unwrap();
    assert!(codec::decode::<UploadId>(&zero, 1024).is_err());

    let upload = UploadId::new(0xbeef).unwrap();
    assert_eq!(upload.to_string(), "000000000000beef");
    assert_eq!("000000000000beef".parse::<UploadId>().unwrap(), upload);
    assert!("0".parse::<UploadId>().is_err());
    assert!("x1".parse::<UploadId>().is_err());
    assert!("1".repeat(17).parse::<UploadId>().is_err());
}

#[test]
fn media_limits() {
    let begin = |size_bytes: u64, hint: String, name: String| {
        Request::Media(MediaRequest::BeginUpload {
            size_bytes,
            sha256: media_id('1'),
            mime_hint: Some(hint),
            file_name: Some(name),
        })
        .validate()
    };
    let ok = || "x".to_owned();
    assert!(begin(MEDIA_BYTES_HARD_MAX, ok(), ok()).is_ok());
    assert!(matches!(
        begin(MEDIA_BYTES_HARD_MAX + 1, ok(), ok()),
        Err(ErrorCode::TooLarge { .. })
    ));
    assert!(matches!(
        begin(0, ok(), ok()),
        Err(ErrorCode::Invalid { .. })
    ));
    assert!(begin(1, text_of(MIME_BYTES_MAX), ok()).is_ok());
    assert!(matches!(
        begin(1, text_of(MIME_BYTES_MAX + 1), ok()),
        Err(ErrorCode::TooLarge { .. })
    ));
    assert!(begin(1, ok(), text_of(FILE_NAME_BYTES_MAX)).is_ok());
    assert!(matches!(
        begin(1, ok(), text_of(FILE_NAME_BYTES_MAX + 1)),
        Err(ErrorCode::TooLarge { .. })
    ));
    assert!(matches!(
        begin(1, ok(), "a\nb".into()),
        Err(ErrorCode::Invalid { .. })
    ));

    let send = |caption: String| {
        Request::SendMedia {
            conversation: ConversationRef::Direct { peer: user("bob") },
            client_msg_id: "c".parse().unwrap(),
            media: media_id('2'),
            caption,
        }
        .validate()
    };
    assert!(send(String::new()).is_ok());
    assert!(send(text_of(CAPTION_BYTES_MAX)).is_ok());
    assert!(matches!(
        send(text_of(CAPTION_BYTES_MAX + 1)),
        Err(ErrorCode::TooLarge { .. })
    ));

    let download = |range| {
        Request::Media(MediaRequest::Download {
            media: media_id('3'),
            conversation: ConversationRef::Direct { peer: user("bob") },
            range,
        })
        .validate()
    };
    assert!(download(None).is_ok());
    assert!(download(Some((7, 7))).is_ok());
    assert!(download(Some((8, 7))).is_err());

    // The largest media message fits the message bound, and the upload header its frame limit.
    let mut big = message(1);
    big.body = MessageBody::Media {
        media: MediaInfo {
            id: media_id('c'),
            size_bytes: u64::MAX,
            mime: text_of(MIME_BYTES_MAX),
        },
        caption: text_of(CAPTION_BYTES_MAX),
    };
    assert!(codec::encode(&big).unwrap().len() <= MESSAGE_BYTES_MAX as usize);
    let header = UploadChunkHeader {
        upload: UploadId::new(u64::MAX).unwrap(),
        offset_bytes: u64::MAX,
    };
    assert!(codec::encode(&header).unwrap().len() <= UPLOAD_HEADER_FRAME_BYTES_MAX as usize);
}

#[test]
fn group_administration_round_trips_and_limits() {
    let group = GroupId::new(77).unwrap();
    for request in [
        Request::InviteMembers {
            group,
            users: vec![user("a"), user("b")],
        },
        Request::CreateInviteLink { group },
        Request::JoinByLink {
            link: "77.abcdef".into(),
        },
        Request::RemoveMember {
            group,
            user: user("a"),
            ban: true,
        },
        Request::Unban {
            group,
            user: user("a"),
        },
        Request::SetRole {
            group,
            user: user("a"),
            role: GroupRole::Admin,
        },
        Request::UpdateGroupInfo {
            group,
            title: Some("t".into()),
            description: None,
        },
        Request::GroupInfo { group },
        Request::Members {
            group,
            after: Some(user("a")),
            limit: 10,
        },
    ] {
        request.validate().unwrap();
        check_round_trip(request);
    }
    for response in [
        Response::InviteLink {
            link: "77.x".into(),
        },
        Response::GroupJoined {
            conversation: ConversationId::Group(group),
        },
        Response::GroupInfo(GroupInfo {
            group,
            title: "t".into(),
            description: "d".into(),
            owner: user("o"),
            member_count: 3,
            created_at_ms: 1,
            large: false,
            avatar: Some(MediaId::from_digest(&[1; 32])),
        }),
        Response::Members {
            members: vec![Member {
                user: user("a"),
                role: GroupRole::Owner,
            }],
            more: true,
        },
    ] {
        check_round_trip(response);
    }
    for event in [
        SystemEvent::MembersAdded {
            users: vec![user("a")],
            by: None,
        },
        SystemEvent::MemberRemoved {
            user: user("a"),
            by: user("b"),
            banned: true,
        },
        SystemEvent::RoleChanged {
            user: user("a"),
            role: GroupRole::Member,
            by: user("b"),
        },
        SystemEvent::InfoChanged {
            title: None,
            description: Some("d".into()),
        },
    ] {
        check_round_trip(Event::Message(Message {
            body: MessageBody::System(event),
            ..message(2)
        }));
    }

    let invite = |n: usize| Request::InviteMembers {
        group,
        users: (0..n).map(|i| user(&format!("u{i}"))).collect(),
    };
    assert!(invite(GROUP_INVITE_BATCH_MAX).validate().is_ok());
    assert!(matches!(
        invite(GROUP_INVITE_BATCH_MAX + 1).validate(),
        Err(ErrorCode::TooLarge { .. })
    ));
    assert!(invite(0).validate().is_err());
    // The largest invitation's system message fits in a message.
    let added = Message {
        body: MessageBody::System(SystemEvent::MembersAdded {
            users: (0..GROUP_INVITE_BATCH_MAX)
                .map(|i| format!("{i:0>64}").parse().unwrap())
                .collect(),
            by: Some(text_of(USER_NAME_BYTES_MAX).parse().unwrap()),
        }),
        ..message(1)
    };
    assert!(codec::encode(&added).unwrap().len() <= MESSAGE_BYTES_MAX as usize);

    let members = |limit| Request::Members {
        group,
        after: None,
        limit,
    };
    assert!(members(MEMBERS_PAGE_MAX).validate().is_ok());
    assert!(members(MEMBERS_PAGE_MAX + 1).validate().is_err());
    assert!(members(0).validate().is_err());
    let info = |title: Option<String>, description: Option<String>| Request::UpdateGroupInfo {
        group,
        title,
        description,
    };
    assert!(
        info(
            Some(text_of(GROUP_NAME_BYTES_MAX)),
            Some(text_of(GROUP_DESCRIPTION_BYTES_MAX))
        )
        .validate()
        .is_ok()
    );
    assert!(
        info(Some(text_of(GROUP_NAME_BYTES_MAX + 1)), None)
            .validate()
            .is_err()
    );
    assert!(
        info(None, Some(text_of(GROUP_DESCRIPTION_BYTES_MAX + 1)))
            .validate()
            .is_err()
    );
    assert!(info(Some(" ".into()), None).validate().is_err());
    let join = |len| Request::JoinByLink { link: text_of(len) };
    assert!(join(INVITE_LINK_BYTES_MAX).validate().is_ok());
    assert!(join(INVITE_LINK_BYTES_MAX + 1).validate().is_err());
}

#[test]
fn channel_ids_and_requests() {
    let channel = ChannelId::new(7).unwrap();
    assert!(ChannelId::new(0).is_err());
    assert_eq!("c:7".parse::<ChannelId>().unwrap(), channel);
    let conversation = ConversationId::Channel(channel);
    assert_eq!(conversation.to_string(), "c:7");
    assert_eq!("c:7".parse::<ConversationId>().unwrap(), conversation);
    let thread = ConversationId::Comments {
        channel,
        post: Seq::new(3),
    };
    assert_eq!(thread.to_string(), "c:7:3");
    assert_eq!("c:7:3".parse::<ConversationId>().unwrap(), thread);
    assert!("c:7:0".parse::<ConversationId>().is_err(), "no post 0");
    assert!("c:0".parse::<ConversationId>().is_err());
    check_round_trip(conversation.clone());
    check_round_trip(thread);
    // The pseudo-user of unsigned posts decodes, and is recognisably reserved.
    check_round_trip(UserId::channel());
    assert!(UserId::channel().is_reserved());
    assert!(!user("alice").is_reserved());

    for request in [
        Request::CreateChannel {
            title: "news".into(),
            description: String::new(),
            signed: true,
        },
        Request::Subscribe { channel },
        Request::SchedulePost {
            channel,
            client_msg_id: "s1".parse().unwrap(),
            text: "later".into(),
            at_ms: 5,
        },
        Request::ViewPosts {
            channel,
            posts: vec![Seq::new(1)],
        },
        Request::WatchPresence {
            conversation: ConversationRef::Id(conversation.clone()),
        },
    ] {
        assert_eq!(request.validate(), Ok(()));
        check_round_trip(request);
    }
    let too_many = Request::PostStats {
        channel,
        posts: vec![Seq::new(1); POST_STATS_MAX + 1],
    };
    assert!(matches!(
        too_many.validate(),
        Err(ErrorCode::TooLarge { .. })
    ));
    let zero = Request::PostStats {
        channel,
        posts: vec![Seq::ZERO],
    };
    assert!(matches!(zero.validate(), Err(ErrorCode::Invalid { .. })));
    let untitled = Request::CreateChannel {
        title: " ".into(),
        description: String::new(),
        signed: false,
    };
    assert!(matches!(
        untitled.validate(),
        Err(ErrorCode::Invalid { .. })
    ));
    check_round_trip(Response::Subscribed {
        conversation,
        head: Seq::new(9),
    });
    check_round_trip(Datagram::Presence(PresenceState {
        user: user("bob"),
        online: false,
        last_seen_ms: Some(1),
    }));
}

#[test]
fn conversation_ids_round_trip_through_the_codec() {
    let alice: UserId = "alice".parse().unwrap();
    let bob: UserId = "bob".parse().unwrap();
    let ids = [
        ConversationId::direct(alice.clone(), bob.clone()).unwrap(),
        ConversationId::Group(GroupId::new(7).unwrap()),
        ConversationId::Channel(ChannelId::new(9).unwrap()),
        ConversationId::Comments {
            channel: ChannelId::new(9).unwrap(),
            post: Seq::new(3),
        },
        ConversationId::Shop {
            shop: "a:shop".parse().unwrap(),
            customer: bob,
        },
    ];
    for id in ids {
        let bytes = codec::encode(&id).unwrap();
        let back: ConversationId = codec::decode(&bytes, 1024).unwrap();
        assert_eq!(back, id);
        // Ids are encoded as their strings (length and bytes), borrowed.
        let user_bytes = codec::encode(&alice).unwrap();
        let string_bytes = codec::encode(&"alice".to_string()).unwrap();
        assert_eq!(user_bytes, string_bytes);
    }
}
