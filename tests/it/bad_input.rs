//! Bad input gets typed errors on its own stream and never disturbs anyone else.

use std::time::Duration;

use piazza_client::ConversationRef;
use piazza_protocol::limits::{REQUEST_FRAME_BYTES_MAX, TEXT_BYTES_MAX};
use piazza_protocol::{ErrorCode, PROTOCOL_VERSION, Request, Response, codec};
use piazza_tests::*;

const WAIT: Duration = Duration::from_secs(10);

fn hello(token: String) -> Request {
    Request::Hello {
        protocol_version: PROTOCOL_VERSION,
        token,
        device: "raw".parse().unwrap(),
    }
}

fn is_error(response: Option<Response>, check: impl Fn(&ErrorCode) -> bool) -> bool {
    matches!(response, Some(Response::Error(ref code)) if check(code))
}

#[tokio::test]
async fn garbage_is_refused_while_others_chat() {
    let node = TestNode::start().await;
    let alice = node.client("alice").await;
    let bob = node.client("bob").await;

    let raw = RawConnection::connect(node.addr, &node.ca).await;
    // Anything before Hello is Unauthenticated.
    let send = Request::Send {
        conversation: ConversationRef::Direct { peer: user("bob") },
        client_msg_id: "x".parse().unwrap(),
        text: "sneaky".into(),
    };
    assert!(is_error(raw.request(&send).await, |c| matches!(
        c,
        ErrorCode::Unauthenticated { .. }
    )));
    // Bad tokens, wrong versions.
    assert!(is_error(
        raw.request(&hello("not-a-token".into())).await,
        |c| matches!(c, ErrorCode::Unauthenticated { .. })
    ));
    let wrong_version = Request::Hello {
        protocol_version: 99,
        token: node.token("mallory"),
        device: "raw".parse().unwrap(),
    };
    assert!(is_error(
        raw.request(&wrong_version).await,
        |c| matches!(c, ErrorCode::Invalid { field, .. } if field == "protocol_version")
    ));
    // A valid Hello, then malformed and oversize frames.
    assert!(matches!(
        raw.request(&hello(node.token("mallory"))).await,
        Some(Response::Welcome { .. })
    ));
    let mut malformed = 3u32.to_be_bytes().to_vec();
    malformed.extend_from_slice(&[0xff, 0xee, 0xdd]);
    assert!(is_error(raw.exchange(&malformed).await, |c| matches!(
        c,
        ErrorCode::Malformed { .. }
    )));
    let oversize = (REQUEST_FRAME_BYTES_MAX + 1).to_be_bytes();
    assert!(is_error(raw.exchange(&oversize).await, |c| matches!(
        c,
        ErrorCode::TooLarge { .. }
    )));
    let truncated = 100u32.to_be_bytes();
    assert!(is_error(raw.exchange(&truncated).await, |c| matches!(
        c,
        ErrorCode::Malformed { .. }
    )));
    let mut trailing = codec::encode_frame(&Request::LeaveGroup {
        group: piazza_protocol::GroupId::new(1).unwrap(),
    })
    .unwrap();
    trailing.push(0);
    let len = (trailing.len() - 4) as u32;
    trailing[..4].copy_from_slice(&len.to_be_bytes());
    assert!(is_error(raw.exchange(&trailing).await, |c| matches!(
        c,
        ErrorCode::Malformed { .. }
    )));
    // Over-limit fields are TooLarge / Invalid, not crashes.
    let long = Request::Send {
        conversation: ConversationRef::Direct { peer: user("bob") },
        client_msg_id: "y".parse().unwrap(),
        text: "x".repeat(TEXT_BYTES_MAX + 1),
    };
    assert!(is_error(raw.request(&long).await, |c| matches!(
        c,
        ErrorCode::TooLarge { .. }
    )));
    let page = Request::History {
        conversation: ConversationRef::Direct { peer: user("bob") },
        before: None,
        limit: 0,
    };
    assert!(is_error(raw.request(&page).await, |c| matches!(
        c,
        ErrorCode::Invalid { .. }
    )));
    // The abusive connection still works for valid requests on new streams.
    let ok = raw
        .request(&Request::History {
            conversation: ConversationRef::Direct { peer: user("bob") },
            before: None,
            limit: 5,
        })
        .await;
    assert!(matches!(ok, Some(Response::History(_))), "{ok:?}");

    // Meanwhile the others keep chatting.
    alice
        .send(
            ConversationRef::Direct { peer: user("bob") },
            "still fine",
            None,
        )
        .await
        .unwrap();
    assert_eq!(text(&next_message(&bob, WAIT).await), "still fine");

    // A wrong ALPN never gets a session.
    assert!(
        RawConnection::connect_alpn(node.addr, &node.ca, b"http/1.1")
            .await
            .is_err()
    );
    node.stop().await;
    assert_no_warnings();
}

#[tokio::test]
async fn rate_limit_triggers_per_connection() {
    let node = TestNode::start_with(|c| {
        c.limits.send_rate_per_s = 2;
        c.limits.send_burst = 5;
    })
    .await;
    let spammer = node.client("spammer").await;
    let polite = node.client("polite").await;
    let peer = ConversationRef::Direct {
        peer: user("victim"),
    };
    let mut limited = None;
    for i in 0..10 {
        match spammer.send(peer.clone(), &format!("spam {i}"), None).await {
            Ok(_) => assert!(i < 5, "send {i} passed beyond the burst"),
            Err(e) => {
                limited = e.server_code().cloned();
                break;
            }
        }
    }
    let Some(ErrorCode::RateLimited { retry_after_ms }) = limited else {
        panic!("no rate limit: {limited:?}")
    };
    assert!(
        retry_after_ms > 0 && retry_after_ms <= 500,
        "{retry_after_ms}"
    );
    // Another connection is unaffected, and the spammer recovers after waiting.
    polite.send(peer.clone(), "hello", None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(retry_after_ms + 50)).await;
    spammer.send(peer, "patient now", None).await.unwrap();
    node.stop().await;
    assert_no_warnings();
}

/// Every kind of request counts against the connection's request rate, not only sends.
#[tokio::test]
async fn request_rate_covers_reads() {
    let node = TestNode::start_with(|c| {
        c.limits.request_rate_per_s = 2;
        c.limits.request_burst = 4;
    })
    .await;
    let reader = node
        .client_with("reader", "d", piazza_client::EventStart::Off)
        .await;
    let peer = ConversationRef::Direct {
        peer: user("someone"),
    };
    let mut limited = false;
    for _ in 0..10 {
        if let Err(e) = reader.history(peer.clone(), None, 10).await {
            assert!(
                matches!(e.server_code(), Some(ErrorCode::RateLimited { .. })),
                "{e}"
            );
            limited = true;
            break;
        }
    }
    assert!(limited, "reads were never rate limited");
    node.stop().await;
    assert_no_warnings();
}

/// Activating conversations beyond `conversations_active_max` is refused with `Unavailable` and
/// works again once idle ones passivate.
#[tokio::test]
async fn active_conversations_are_bounded() {
    let node = TestNode::start_with(|c| {
        c.limits.conversations_active_max = 2;
        c.limits.conversation_idle_ms = 200;
    })
    .await;
    let alice = node
        .client_with("alice", "d", piazza_client::EventStart::Off)
        .await;
    for peer in ["b1", "b2"] {
        alice
            .send(ConversationRef::Direct { peer: user(peer) }, "hi", None)
            .await
            .unwrap();
    }
    let refused = alice
        .send(ConversationRef::Direct { peer: user("b3") }, "hi", None)
        .await
        .unwrap_err();
    assert!(
        matches!(refused.server_code(), Some(ErrorCode::Unavailable { .. })),
        "{refused}"
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        match alice
            .send(ConversationRef::Direct { peer: user("b3") }, "hi", None)
            .await
        {
            Ok(ack) => {
                assert_eq!(ack.seq.get(), 1);
                break;
            }
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "never admitted: {e}"
            ),
        }
    }
    node.stop().await;
    assert_no_warnings();
}
