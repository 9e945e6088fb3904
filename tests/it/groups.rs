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

/// Roles and moderation: invitations, invite links, removal and bans, role changes and ownership
/// transfer, profile edits and member paging — each permission checked in the group's actor.
#[tokio::test]
async fn administration_and_permissions() {
    use piazza_protocol::{GroupRole, SystemEvent};
    let node = TestNode::start().await;
    let owner = node.client("owner").await;
    let admin = node.client("admin").await;
    let member = node.client("member").await;
    let outsider = node.client("outsider").await;
    let conversation = owner
        .create_group("club", vec![user("admin"), user("member")])
        .await
        .unwrap();
    let piazza_protocol::ConversationId::Group(group) = conversation.clone() else {
        panic!()
    };

    // Only the owner changes roles.
    let denied = member
        .set_role(group, user("admin"), GroupRole::Admin)
        .await
        .unwrap_err();
    assert_eq!(denied.server_code(), Some(&ErrorCode::Forbidden));
    owner
        .set_role(group, user("admin"), GroupRole::Admin)
        .await
        .unwrap();

    // Admins invite; members cannot.
    let denied = member
        .invite(group, vec![user("newbie")])
        .await
        .unwrap_err();
    assert_eq!(denied.server_code(), Some(&ErrorCode::Forbidden));
    admin
        .invite(group, vec![user("newbie"), user("member")])
        .await
        .unwrap();
    let newbie = node
        .client_with("newbie", "d", piazza_client::EventStart::Off)
        .await;
    newbie
        .send(ConversationRef::Group(group), "hi all", None)
        .await
        .unwrap();

    // Invite links: a bad secret is NotFound; the real one lets the outsider in.
    let link = admin.create_invite_link(group).await.unwrap();
    let (prefix, _) = link.split_once('.').unwrap();
    let bad = outsider
        .join_by_link(format!("{prefix}.0000"))
        .await
        .unwrap_err();
    assert_eq!(bad.server_code(), Some(&ErrorCode::NotFound));
    assert_eq!(
        outsider.join_by_link(link.clone()).await.unwrap(),
        conversation
    );
    assert_eq!(
        outsider.join_by_link(link.clone()).await.unwrap(),
        conversation,
        "joining twice is harmless"
    );

    // Removal and bans: admins cannot remove admins or the owner; a banned user cannot rejoin.
    let denied = admin
        .remove_member(group, user("owner"), false)
        .await
        .unwrap_err();
    assert_eq!(denied.server_code(), Some(&ErrorCode::Forbidden));
    admin
        .remove_member(group, user("outsider"), true)
        .await
        .unwrap();
    let denied = outsider.join_by_link(link.clone()).await.unwrap_err();
    assert_eq!(denied.server_code(), Some(&ErrorCode::Forbidden));
    let denied = outsider
        .send(ConversationRef::Group(group), "let me back", None)
        .await
        .unwrap_err();
    assert_eq!(denied.server_code(), Some(&ErrorCode::Forbidden));
    admin.unban(group, user("outsider")).await.unwrap();
    outsider.join_by_link(link).await.unwrap();

    // Profile and members.
    let denied = member
        .update_group_info(group, Some("mine now".into()), None)
        .await
        .unwrap_err();
    assert_eq!(denied.server_code(), Some(&ErrorCode::Forbidden));
    admin
        .update_group_info(group, Some("book club".into()), Some("we read".into()))
        .await
        .unwrap();
    let info = member.group_info(group).await.unwrap();
    assert_eq!(
        (
            info.title.as_str(),
            info.description.as_str(),
            info.member_count
        ),
        ("book club", "we read", 5)
    );
    let (page, more) = member.members(group, None, 2).await.unwrap();
    assert_eq!(
        page.iter().map(|m| m.user.as_str()).collect::<Vec<_>>(),
        ["admin", "member"]
    );
    assert!(more);
    let (rest, more) = member
        .members(group, Some(user("member")), 10)
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|m| m.user.as_str()).collect::<Vec<_>>(),
        ["newbie", "outsider", "owner"]
    );
    assert!(!more);
    assert_eq!(rest[2].role, GroupRole::Owner);

    // The owner cannot leave before handing over; after the transfer they can.
    let refused = owner.leave_group(group).await.unwrap_err();
    assert!(
        matches!(refused.server_code(), Some(ErrorCode::Conflict { .. })),
        "{refused}"
    );
    owner
        .set_role(group, user("admin"), GroupRole::Owner)
        .await
        .unwrap();
    assert_eq!(
        member.group_info(group).await.unwrap().owner.as_str(),
        "admin"
    );
    owner.leave_group(group).await.unwrap();

    // Everything above is in the sequence, survives a restart, and the roles too.
    let node = node.restart().await;
    let admin = node
        .client_with("admin", "d", piazza_client::EventStart::Off)
        .await;
    let info = admin.group_info(group).await.unwrap();
    assert_eq!((info.owner.as_str(), info.member_count), ("admin", 4));
    let history = admin
        .history(ConversationRef::Group(group), None, 100)
        .await
        .unwrap();
    let events = history
        .messages
        .iter()
        .filter(|m| {
            matches!(
                m.body,
                MessageBody::System(SystemEvent::MemberRemoved { banned: true, .. })
            )
        })
        .count();
    assert_eq!(events, 1);
    node.stop().await;
    assert_no_warnings();
}

/// Typing and receipts are suppressed in groups above `limits.group_large_members`.
#[tokio::test]
async fn large_groups_suppress_receipts() {
    let node = TestNode::start_with(|c| c.limits.group_large_members = 2).await;
    let alice = node.client("alice").await;
    let bob = node.client("bob").await;
    let conversation = alice
        .create_group("big", vec![user("bob"), user("carol")])
        .await
        .unwrap();
    let piazza_protocol::ConversationId::Group(group) = conversation.clone() else {
        panic!()
    };
    assert!(alice.group_info(group).await.unwrap().large);
    let ack = alice
        .send(ConversationRef::Group(group), "hello", None)
        .await
        .unwrap();
    bob.receipt(
        conversation.clone(),
        ack.seq,
        piazza_client::ReceiptKind::Read,
    )
    .await
    .unwrap();
    let states = alice.receipts(ConversationRef::Group(group)).await.unwrap();
    assert!(
        states.is_empty(),
        "receipts are not stored in large groups: {states:?}"
    );
    node.stop().await;
    assert_no_warnings();
}
