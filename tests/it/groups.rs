//! Small groups: create with members, send, history, leave.

use std::time::Duration;

use piazza_client::ConversationRef;
use piazza_protocol::{ErrorCode, MessageBody, Seq, SystemEvent};
use piazza_tests::*;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn create_send_leave() {
    let node = TestNode::start().await;
    let alice = node.client("alice").await;
    let bob = node.client("bob").await;
    let carol = node.client("carol").await;
    let eve = node.client("eve").await;

    let conversation = alice
        .create_group("trip", vec![user("bob"), user("carol")])
        .await
        .unwrap();
    let piazza_protocol::ConversationId::Group(group) = conversation.clone() else {
        panic!("not a group")
    };
    for member in [&bob, &carol] {
        let created = next_message(member, WAIT).await;
        assert_eq!(created.seq, Seq::new(1));
        assert!(matches!(
            created.body,
            MessageBody::System(SystemEvent::GroupCreated {
                member_count: 3,
                ..
            })
        ));
    }
    bob.send(ConversationRef::Group(group), "hello trip", None)
        .await
        .unwrap();
    for member in [&alice, &carol] {
        let mut m = next_message(member, WAIT).await;
        if member.user().as_str() == "alice" {
            assert_eq!(
                m.seq,
                Seq::new(1),
                "the creator's devices get the creation too"
            );
            m = next_message(member, WAIT).await;
        }
        assert_eq!((m.seq, text(&m)), (Seq::new(2), "hello trip"));
    }
    // Outsiders can neither read nor write.
    let denied = eve
        .send(ConversationRef::Group(group), "let me in", None)
        .await
        .unwrap_err();
    assert_eq!(denied.server_code(), Some(&ErrorCode::Forbidden));
    let denied = eve
        .history(ConversationRef::Group(group), None, 10)
        .await
        .unwrap_err();
    assert_eq!(denied.server_code(), Some(&ErrorCode::Forbidden));
    let missing = eve
        .history(
            ConversationRef::Group(piazza_protocol::GroupId::new(12345).unwrap()),
            None,
            10,
        )
        .await;
    assert_eq!(
        missing.unwrap_err().server_code(),
        Some(&ErrorCode::NotFound)
    );

    carol.leave_group(group).await.unwrap();
    let left = next_message(&alice, WAIT).await;
    assert!(matches!(
        left.body,
        MessageBody::System(SystemEvent::MemberLeft { .. })
    ));
    let denied = carol
        .send(ConversationRef::Group(group), "still here?", None)
        .await
        .unwrap_err();
    assert_eq!(denied.server_code(), Some(&ErrorCode::Forbidden));
    let page = alice
        .history(ConversationRef::Group(group), None, 10)
        .await
        .unwrap();
    assert_eq!(
        page.messages
            .iter()
            .map(|m| m.seq.get())
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    node.stop().await;
    assert_no_warnings();
}
