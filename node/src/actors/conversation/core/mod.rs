//! The pure core of a conversation: sequence assignment, deduplication of retried sends,
//! membership and authorization, receipts. No I/O, no clock: the actor passes `now_ms` in, loads
//! state from storage, and executes the effects (writes to persist, messages to fan out) this core
//! returns. Tested without a runtime in `tests.rs`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use piazza_protocol::limits::{PINNED_MAX, REACTIONS_DISTINCT_MAX};
use piazza_protocol::{
    ChannelId, ClientMsgId, ConversationId, ErrorCode, ForwardedFrom, GroupId, GroupInfo,
    GroupRole, MediaInfo, Member, Message, MessageBody, MessageUpdate, ReactionCount, ReceiptKind,
    ReceiptState, ScheduledPost, SendAck, Seq, SystemEvent, UserId,
};

use piazza_protocol::commerce::StaffRole;

use crate::storage::{BANNED_MAX, ChannelRecord, CounterKind, GroupRecord, Role, Write};

mod channel;
pub(crate) use channel::Publish;

/// The members a message is delivered to; shared by every fan-out of the conversation until
/// membership changes.
pub(crate) type Recipients = Arc<HashSet<UserId>>;

/// What the conversation is.
#[derive(Debug)]
enum Kind {
    /// A direct conversation: its two members are named by its id.
    Direct,
    /// A group; `None` until created.
    Group {
        id: GroupId,
        record: Option<GroupRecord>,
        roles: BTreeMap<UserId, Role>,
    },
    /// A channel; `None` until created. Subscribers are `members`; only the owner and admins
    /// are in `staff`, so a million subscribers are one set, not two.
    Channel {
        id: ChannelId,
        record: Option<ChannelRecord>,
        staff: BTreeMap<UserId, Role>,
        scheduled: BTreeMap<ClientMsgId, ScheduledPost>,
    },
    /// The comment thread of a channel post. Its `members` are the users who commented (they get
    /// new comments pushed and synced); any subscriber of the channel may read and comment.
    Comments {
        channel: ChannelId,
        post: Seq,
        /// Whether the post exists (and the channel with it).
        exists: bool,
        /// Channel roles of recent callers, refreshed from the channel's member rows by the
        /// actor before every request ([`ConversationCore::note_channel_role`]).
        roles: HashMap<UserId, Role>,
        /// Comments in the thread (text and media, not deleted).
        comments: u64,
    },
    /// A customer's conversation with a shop. `members` are the customer and the shop's staff;
    /// `staff` is the shop actor's published roster (empty: no such shop), refreshed by the
    /// actor before every request ([`ConversationCore::note_shop_staff`]).
    Shop { customer: UserId, staff: ShopStaff },
}

/// A shop's staff roster as its shop actor publishes it.
pub(crate) type ShopStaff = Arc<BTreeMap<UserId, StaffRole>>;

/// Most callers whose channel role a comment thread remembers; the map is cleared when full
/// (the actor refreshes the caller's role before each request anyway).
const COMMENT_ROLES_MAX: usize = 4096;

/// The state of one conversation.
#[derive(Debug)]
pub(crate) struct ConversationCore {
    id: ConversationId,
    kind: Kind,
    members: Recipients,
    last_seq: Seq,
    dedup: DedupWindow,
    receipts: HashMap<UserId, (Seq, Seq)>,
    pinned: Vec<Seq>,
}

/// The outcome of a send that passed every check.
#[derive(Debug)]
pub(crate) enum SendOutcome {
    /// A new message: persist `writes`, then ack and fan out `message`.
    Append {
        message: Message,
        writes: Vec<Write>,
        ack: SendAck,
    },
    /// A retry of an already assigned message: answer with `ack` once everything before is
    /// durable (the original may still be in flight).
    Duplicate { ack: SendAck },
    /// A change stored without a sequence entry (a subscriber's reaction to a channel post: a
    /// broadcast per reaction would cost a delivery per subscriber). Persist `writes`, then
    /// answer `Done`.
    Quiet { writes: Vec<Write> },
}

/// What storage held for a conversation when its actor was activated.
#[derive(Debug, Default)]
pub(crate) struct Restored {
    pub(crate) group: Option<GroupRecord>,
    pub(crate) members: Vec<(UserId, Role)>,
    pub(crate) last_seq: Seq,
    /// The most recent messages, ascending, to rebuild the deduplication window.
    pub(crate) recent: Vec<Message>,
    pub(crate) receipts: Vec<ReceiptState>,
    /// Pinned seqs, oldest pin first.
    pub(crate) pinned: Vec<Seq>,
    /// A channel's record.
    pub(crate) channel: Option<ChannelRecord>,
    /// A channel's scheduled posts.
    pub(crate) scheduled: Vec<ScheduledPost>,
    /// For a comment thread: whether its post exists.
    pub(crate) post_exists: bool,
    /// For a comment thread: its comment counter.
    pub(crate) comments: u64,
    /// For a shop conversation: the shop's staff.
    pub(crate) shop_staff: ShopStaff,
}

/// The content of a new message.
#[derive(Debug)]
pub(crate) struct Draft {
    pub(crate) body: MessageBody,
    pub(crate) reply_to: Option<Seq>,
    pub(crate) forwarded_from: Option<ForwardedFrom>,
}

impl Draft {
    /// A plain text message.
    pub(crate) fn text(text: String) -> Draft {
        Draft {
            body: MessageBody::Text(text),
            reply_to: None,
            forwarded_from: None,
        }
    }
}

/// A change to an existing message.
#[derive(Clone, Debug)]
pub(crate) enum Change {
    Edit {
        text: String,
    },
    Delete,
    /// `already` is whether the user has reacted with this emoji before (the actor reads it from
    /// storage, keeping the core free of I/O).
    React {
        emoji: String,
        add: bool,
        already: bool,
    },
    Pin {
        pinned: bool,
    },
    /// The shop shows an order's new state in its order message.
    Order {
        order: Box<piazza_protocol::commerce::OrderView>,
    },
}

impl ConversationCore {
    /// Rebuilds the state of `id` from what storage held.
    pub(crate) fn restore(
        id: ConversationId,
        restored: Restored,
        dedup_max: usize,
    ) -> ConversationCore {
        let (kind, members) = match &id {
            ConversationId::Direct { low, high } => {
                (Kind::Direct, HashSet::from([low.clone(), high.clone()]))
            }
            ConversationId::Group(group) => {
                let roles: BTreeMap<UserId, Role> = restored.members.into_iter().collect();
                let members = roles.keys().cloned().collect();
                (
                    Kind::Group {
                        id: *group,
                        record: restored.group,
                        roles,
                    },
                    members,
                )
            }
            ConversationId::Channel(channel) => {
                let staff = restored
                    .members
                    .iter()
                    .filter(|(_, role)| *role != Role::Member)
                    .cloned()
                    .collect();
                let members = restored.members.into_iter().map(|(user, _)| user).collect();
                let scheduled = restored
                    .scheduled
                    .into_iter()
                    .map(|post| (post.client_msg_id.clone(), post))
                    .collect();
                (
                    Kind::Channel {
                        id: *channel,
                        record: restored.channel,
                        staff,
                        scheduled,
                    },
                    members,
                )
            }
            ConversationId::Comments { channel, post } => (
                Kind::Comments {
                    channel: *channel,
                    post: *post,
                    exists: restored.post_exists,
                    roles: HashMap::new(),
                    comments: restored.comments,
                },
                restored.members.into_iter().map(|(user, _)| user).collect(),
            ),
            ConversationId::Shop { customer, .. } => {
                let members = shop_members(customer, &restored.shop_staff);
                (
                    Kind::Shop {
                        customer: customer.clone(),
                        staff: restored.shop_staff,
                    },
                    members,
                )
            }
        };
        let mut dedup = DedupWindow::new(dedup_max);
        for message in &restored.recent {
            dedup.insert(
                (message.sender.clone(), message.client_msg_id.clone()),
                (message.seq, message.sent_at_ms),
            );
        }
        let receipts = restored
            .receipts
            .into_iter()
            .map(|r| (r.user, (r.delivered, r.read)))
            .collect();
        ConversationCore {
            id,
            kind,
            members: Arc::new(members),
            last_seq: restored.last_seq,
            dedup,
            receipts,
            pinned: restored.pinned,
        }
    }

    /// The conversation's id.
    pub(crate) fn id(&self) -> &ConversationId {
        &self.id
    }

    /// The highest assigned seq.
    pub(crate) fn last_seq(&self) -> Seq {
        self.last_seq
    }

    /// Current members.
    pub(crate) fn recipients(&self) -> Recipients {
        self.members.clone()
    }

    /// Number of members.
    #[cfg(test)]
    pub(crate) fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Whether `user` may read and write this conversation.
    pub(crate) fn authorize(&self, user: &UserId) -> Result<(), ErrorCode> {
        match &self.kind {
            Kind::Direct => {
                if self.members.contains(user) {
                    Ok(())
                } else {
                    Err(ErrorCode::Forbidden)
                }
            }
            Kind::Group { record: None, .. } | Kind::Channel { record: None, .. } => {
                Err(ErrorCode::NotFound)
            }
            Kind::Group { .. } | Kind::Channel { .. } if self.members.contains(user) => Ok(()),
            Kind::Group { .. } | Kind::Channel { .. } => Err(ErrorCode::Forbidden),
            Kind::Comments { exists: false, .. } => Err(ErrorCode::NotFound),
            Kind::Comments { roles, .. } if roles.contains_key(user) => Ok(()),
            Kind::Comments { .. } => Err(ErrorCode::Forbidden),
            Kind::Shop { staff, .. } if staff.is_empty() => Err(ErrorCode::NotFound),
            Kind::Shop { .. } if self.members.contains(user) || *user == UserId::shop() => Ok(()),
            Kind::Shop { .. } => Err(ErrorCode::Forbidden),
        }
    }

    /// For a shop conversation: takes the shop's current staff roster (a no-op when it is the
    /// one already held).
    pub(crate) fn note_shop_staff(&mut self, roster: ShopStaff) {
        if let Kind::Shop { customer, staff } = &mut self.kind
            && !Arc::ptr_eq(staff, &roster)
        {
            self.members = Arc::new(shop_members(customer, &roster));
            *staff = roster;
        }
    }

    /// For a shop conversation: the shop and the customer.
    pub(crate) fn shop_of(&self) -> Option<(&piazza_protocol::commerce::ShopId, &UserId)> {
        match (&self.id, &self.kind) {
            (ConversationId::Shop { shop, .. }, Kind::Shop { customer, .. }) => {
                Some((shop, customer))
            }
            _ => None,
        }
    }

    /// Whether `user` is on the staff of this conversation's shop.
    pub(crate) fn is_shop_staff(&self, user: &UserId) -> bool {
        matches!(&self.kind, Kind::Shop { staff, .. } if staff.contains_key(user))
    }

    /// Who a new entry by `user` is sent as: the user, or [`UserId::channel`] for posts of a
    /// channel that does not sign them. Checks that the user may send here at all (only the
    /// owner and admins post in a channel).
    fn author(&self, user: &UserId) -> Result<UserId, ErrorCode> {
        self.authorize(user)?;
        match &self.kind {
            Kind::Channel { record, .. } => {
                if !self.is_moderator(user) {
                    return Err(ErrorCode::Forbidden);
                }
                match record {
                    Some(record) if !record.signed => Ok(UserId::channel()),
                    _ => Ok(user.clone()),
                }
            }
            _ => Ok(user.clone()),
        }
    }

    /// A user sends a new message.
    pub(crate) fn handle_send(
        &mut self,
        sender: &UserId,
        client_msg_id: ClientMsgId,
        draft: Draft,
        now_ms: u64,
    ) -> Result<SendOutcome, ErrorCode> {
        let author = self.author(sender)?;
        let sender = &author;
        if let Some(ack) = self.duplicate(sender, &client_msg_id) {
            return Ok(SendOutcome::Duplicate { ack });
        }
        if let Some(target) = draft.reply_to
            && (target == Seq::ZERO || target > self.last_seq)
        {
            return Err(ErrorCode::invalid(
                "reply_to",
                "no such message in this conversation",
            ));
        }
        // The append's own write is rebuilt below, once the message carries its reply and origin.
        let (mut message, _) = self.append(sender.clone(), client_msg_id, draft.body, now_ms)?;
        message.reply_to = draft.reply_to;
        message.forwarded_from = draft.forwarded_from;
        let mut writes = vec![Write::Message(message.clone())];
        if let MessageBody::Media { media, .. } = &message.body {
            // From this commit on, readers of this conversation may download the blob.
            writes.push(Write::MediaRef {
                media: media.id.clone(),
                conversation: self.id.clone(),
            });
        }
        if let MessageBody::Commerce(body) = &message.body {
            // Product pictures shown in a shop conversation become downloadable there.
            for media in commerce_media(body) {
                writes.push(Write::MediaRef {
                    media: media.clone(),
                    conversation: self.id.clone(),
                });
            }
        }
        if matches!(self.kind, Kind::Direct | Kind::Shop { .. }) && message.seq == Seq::new(1) {
            // The first message makes the conversation appear in both users' Sync (a shop's:
            // the customer's and that of the staff at the time).
            for user in self.members.iter() {
                writes.push(Write::IndexConversation {
                    user: user.clone(),
                    conversation: self.id.clone(),
                });
            }
        }
        if let Kind::Comments {
            channel,
            post,
            comments,
            ..
        } = &mut self.kind
        {
            *comments += 1;
            writes.push(Write::Counter {
                conversation: ConversationId::Channel(*channel),
                post: *post,
                kind: CounterKind::Comments,
                value: *comments,
            });
            if !self.members.contains(sender) {
                // A commenter follows the thread from now on: pushes and Sync.
                Arc::make_mut(&mut self.members).insert(sender.clone());
                writes.push(Write::AddMember {
                    conversation: self.id.clone(),
                    user: sender.clone(),
                    role: Role::Member,
                });
            }
        }
        Ok(self.outcome(message, writes))
    }

    /// A user changes an existing message (`target`, as stored, or `None` if there is none):
    /// edit, delete, react, pin. Returns `Ok(None)` when nothing changes (a reaction that is
    /// already there, a pin already set). Otherwise the outcome carries the update entry
    /// (appended to the sequence) and the rewritten target.
    pub(crate) fn handle_update(
        &mut self,
        user: &UserId,
        client_msg_id: ClientMsgId,
        target: Option<Message>,
        change: Change,
        now_ms: u64,
        edit_window_ms: u64,
    ) -> Result<Option<SendOutcome>, ErrorCode> {
        self.authorize(user)?;
        // In a channel that does not sign posts, admins' changes are the channel's too.
        let is_channel = matches!(self.kind, Kind::Channel { .. });
        let actor = if is_channel && !matches!(change, Change::React { .. }) {
            self.author(user)?
        } else {
            user.clone()
        };
        if let Some(ack) = self.duplicate(&actor, &client_msg_id) {
            return Ok(Some(SendOutcome::Duplicate { ack }));
        }
        let mut target = target.ok_or(ErrorCode::NotFound)?;
        if let Change::Order { order } = change {
            // Only the shop itself rewrites an order message, to show the order as it is now.
            if *user != UserId::shop() {
                return Err(ErrorCode::Forbidden);
            }
            let MessageBody::Commerce(body) = &mut target.body else {
                return Err(ErrorCode::invalid("target", "not an order message"));
            };
            let piazza_protocol::commerce::CommerceBody::Order(shown) = body.as_mut() else {
                return Err(ErrorCode::invalid("target", "not an order message"));
            };
            if shown.order != order.order {
                return Err(ErrorCode::invalid("target", "another order's message"));
            }
            *shown = (*order).clone();
            let update = MessageUpdate::Order {
                target: target.seq,
                order,
            };
            let (message, mut writes) =
                self.append(actor, client_msg_id, MessageBody::Update(update), now_ms)?;
            writes.push(Write::Message(target));
            return Ok(Some(self.outcome(message, writes)));
        }
        // Media messages can be reacted to, pinned and deleted, but not edited (see below).
        if !matches!(
            target.body,
            MessageBody::Text(_) | MessageBody::Media { .. }
        ) {
            return Err(ErrorCode::invalid(
                "target",
                "only text and media messages can be changed",
            ));
        }
        let within_window = now_ms.saturating_sub(target.sent_at_ms) <= edit_window_ms;
        let is_moderator = self.is_moderator(user);
        let (update, extra) = match change {
            // Handled above, before the text-and-media check.
            Change::Order { .. } => return Err(ErrorCode::invalid("target", "not an order")),
            Change::Edit { text } => {
                if !matches!(target.body, MessageBody::Text(_)) {
                    return Err(ErrorCode::invalid(
                        "target",
                        "only text messages can be edited",
                    ));
                }
                // Channel admins edit every post (unsigned posts have no author to match).
                if &target.sender != user && !(is_channel && is_moderator) {
                    return Err(ErrorCode::Forbidden);
                }
                if !within_window {
                    return Err(ErrorCode::Conflict {
                        reason: "the edit window has passed".into(),
                    });
                }
                target.body = MessageBody::Text(text.clone());
                target.edited_at_ms = Some(now_ms);
                (
                    MessageUpdate::Edited {
                        target: target.seq,
                        text,
                    },
                    None,
                )
            }
            Change::Delete => {
                let own = &target.sender == user && within_window;
                if !own && !is_moderator {
                    return Err(ErrorCode::Forbidden);
                }
                if let Kind::Comments { comments, .. } = &mut self.kind {
                    *comments = comments.saturating_sub(1);
                }
                target.body = MessageBody::Deleted;
                target.reactions.clear();
                target.reply_to = None;
                target.forwarded_from = None;
                (MessageUpdate::Deleted { target: target.seq }, None)
            }
            Change::React {
                emoji,
                add,
                already,
            } => {
                if add == already {
                    return Ok(None);
                }
                let position = target.reactions.iter().position(|r| r.emoji == emoji);
                match (add, position) {
                    (true, Some(i)) => {
                        target.reactions[i].count = target.reactions[i].count.saturating_add(1)
                    }
                    (true, None) => {
                        if target.reactions.len() >= REACTIONS_DISTINCT_MAX {
                            return Err(ErrorCode::TooLarge {
                                what: "distinct reactions".into(),
                                limit: REACTIONS_DISTINCT_MAX as u64,
                            });
                        }
                        target.reactions.push(ReactionCount {
                            emoji: emoji.clone(),
                            count: 1,
                        });
                    }
                    (false, Some(i)) => {
                        target.reactions[i].count = target.reactions[i].count.saturating_sub(1);
                        if target.reactions[i].count == 0 {
                            target.reactions.remove(i);
                        }
                    }
                    // The user's reaction is recorded but the count is not: repair by not counting.
                    (false, None) => {}
                }
                let write = Write::Reaction {
                    conversation: self.id.clone(),
                    target: target.seq,
                    emoji: emoji.clone(),
                    user: user.clone(),
                    added: add,
                };
                (
                    MessageUpdate::Reaction {
                        target: target.seq,
                        emoji,
                        added: add,
                    },
                    Some(write),
                )
            }
            Change::Pin { pinned } => {
                if !matches!(self.kind, Kind::Direct) && !is_moderator {
                    return Err(ErrorCode::Forbidden);
                }
                let is_pinned = self.pinned.contains(&target.seq);
                if pinned == is_pinned {
                    return Ok(None);
                }
                if pinned {
                    if self.pinned.len() >= PINNED_MAX {
                        return Err(ErrorCode::TooLarge {
                            what: "pinned messages".into(),
                            limit: PINNED_MAX as u64,
                        });
                    }
                    self.pinned.push(target.seq);
                } else {
                    self.pinned.retain(|s| *s != target.seq);
                }
                let write = Write::Pin {
                    conversation: self.id.clone(),
                    target: target.seq,
                    pinned,
                };
                (
                    MessageUpdate::Pinned {
                        target: target.seq,
                        pinned,
                    },
                    Some(write),
                )
            }
        };
        if is_channel && matches!(update, MessageUpdate::Reaction { .. }) {
            // Reactions to posts update the post's counts (history shows them) without a
            // sequence entry: one reaction must not cost a delivery to every subscriber.
            let mut writes = vec![Write::Message(target)];
            writes.extend(extra);
            return Ok(Some(SendOutcome::Quiet { writes }));
        }
        let deleted = matches!(update, MessageUpdate::Deleted { .. });
        let (message, mut writes) =
            self.append(actor, client_msg_id, MessageBody::Update(update), now_ms)?;
        writes.push(Write::Message(target));
        writes.extend(extra);
        if let (
            true,
            Kind::Comments {
                channel,
                post,
                comments,
                ..
            },
        ) = (deleted, &self.kind)
        {
            writes.push(Write::Counter {
                conversation: ConversationId::Channel(*channel),
                post: *post,
                kind: CounterKind::Comments,
                value: *comments,
            });
        }
        Ok(Some(self.outcome(message, writes)))
    }

    /// Pinned seqs, oldest pin first.
    pub(crate) fn pinned(&self) -> &[Seq] {
        &self.pinned
    }

    /// Whether `user` may moderate: the owner or an admin of a group.
    fn is_moderator(&self, user: &UserId) -> bool {
        matches!(self.role(user), Some(Role::Owner | Role::Admin))
    }

    fn role(&self, user: &UserId) -> Option<Role> {
        match &self.kind {
            Kind::Group { roles, .. } => roles.get(user).copied(),
            Kind::Channel { staff, .. } => staff
                .get(user)
                .copied()
                .or_else(|| self.members.contains(user).then_some(Role::Member)),
            Kind::Comments { roles, .. } => roles.get(user).copied(),
            Kind::Shop { staff, .. } => match staff.get(user) {
                Some(StaffRole::Owner) => Some(Role::Owner),
                Some(StaffRole::Manager | StaffRole::Agent) => Some(Role::Admin),
                None => self.members.contains(user).then_some(Role::Member),
            },
            Kind::Direct => None,
        }
    }

    /// The group's parts, or `Invalid` for a direct conversation and `NotFound` before creation.
    fn group_mut(
        &mut self,
    ) -> Result<(GroupId, &mut GroupRecord, &mut BTreeMap<UserId, Role>), ErrorCode> {
        match &mut self.kind {
            Kind::Group {
                id,
                record: Some(record),
                roles,
            } => Ok((*id, record, roles)),
            Kind::Group { record: None, .. } => Err(ErrorCode::NotFound),
            _ => Err(ErrorCode::invalid("conversation", "not a group")),
        }
    }

    /// Adds to the member set in place (copy-on-write: the set is copied only while a fan-out
    /// still holds it), so growing a group by invitation is not quadratic.
    fn add_members<'a>(&mut self, users: impl IntoIterator<Item = &'a UserId>) {
        let members = Arc::make_mut(&mut self.members);
        for user in users {
            members.insert(user.clone());
        }
    }

    fn require_moderator(&self, user: &UserId) -> Result<(), ErrorCode> {
        self.authorize(user)?;
        if self.is_moderator(user) {
            Ok(())
        } else {
            Err(ErrorCode::Forbidden)
        }
    }

    /// Appends a system message by `by`, with a client id unique to its seq.
    fn system(
        &mut self,
        by: &UserId,
        event: SystemEvent,
        now_ms: u64,
    ) -> Result<(Message, Vec<Write>), ErrorCode> {
        let client_msg_id = system_msg_id(&format!("{}", self.last_seq.get() + 1))?;
        self.append(
            by.clone(),
            client_msg_id,
            MessageBody::System(event),
            now_ms,
        )
    }

    /// Adds `users` (by invitation of `by`). Already-present members are skipped; banned users
    /// are refused unless a moderator invites them, which lifts the ban.
    pub(crate) fn handle_invite(
        &mut self,
        by: &UserId,
        users: Vec<UserId>,
        now_ms: u64,
        members_max: usize,
    ) -> Result<Option<(Vec<Write>, Message)>, ErrorCode> {
        self.require_moderator(by)?;
        let conversation = self.id.clone();
        let (id, record, roles) = self.group_mut()?;
        let mut added = Vec::new();
        for user in users {
            if roles.contains_key(&user) || added.contains(&user) {
                continue;
            }
            added.push(user);
        }
        if added.is_empty() {
            return Ok(None);
        }
        if roles.len() + added.len() > members_max {
            return Err(ErrorCode::TooLarge {
                what: "group members".into(),
                limit: members_max as u64,
            });
        }
        let mut writes = Vec::new();
        let unbanned = record.banned.len();
        record.banned.retain(|b| !added.contains(b));
        if record.banned.len() != unbanned {
            writes.push(Write::Group {
                id,
                record: record.clone(),
            });
        }
        for user in &added {
            roles.insert(user.clone(), Role::Member);
            writes.push(Write::AddMember {
                conversation: conversation.clone(),
                user: user.clone(),
                role: Role::Member,
            });
        }
        self.add_members(&added);
        let event = SystemEvent::MembersAdded {
            users: added,
            by: Some(by.clone()),
        };
        let (message, more) = self.system(by, event, now_ms)?;
        writes.extend(more);
        Ok(Some((writes, message)))
    }

    /// Sets a new invite-link secret (chosen by the actor) and returns the writes.
    pub(crate) fn handle_create_link(
        &mut self,
        by: &UserId,
        secret: String,
    ) -> Result<Vec<Write>, ErrorCode> {
        self.require_moderator(by)?;
        let (id, record, _) = self.group_mut()?;
        record.invite_secret = Some(secret);
        Ok(vec![Write::Group {
            id,
            record: record.clone(),
        }])
    }

    /// `user` joins with the secret of an invite link. `Ok(None)`: already a member.
    pub(crate) fn handle_join(
        &mut self,
        user: &UserId,
        secret: &str,
        now_ms: u64,
        members_max: usize,
    ) -> Result<Option<(Vec<Write>, Message)>, ErrorCode> {
        let conversation = self.id.clone();
        let (_, record, roles) = self.group_mut()?;
        let valid = record
            .invite_secret
            .as_deref()
            .is_some_and(|s| constant_time_eq(s.as_bytes(), secret.as_bytes()));
        if !valid {
            return Err(ErrorCode::NotFound);
        }
        if record.banned.contains(user) {
            return Err(ErrorCode::Forbidden);
        }
        if roles.contains_key(user) {
            return Ok(None);
        }
        if roles.len() >= members_max {
            return Err(ErrorCode::TooLarge {
                what: "group members".into(),
                limit: members_max as u64,
            });
        }
        roles.insert(user.clone(), Role::Member);
        let mut writes = vec![Write::AddMember {
            conversation,
            user: user.clone(),
            role: Role::Member,
        }];
        self.add_members([user]);
        let event = SystemEvent::MembersAdded {
            users: vec![user.clone()],
            by: None,
        };
        let (message, more) = self.system(user, event, now_ms)?;
        writes.extend(more);
        Ok(Some((writes, message)))
    }

    /// `by` removes `user`, optionally banning them. Returns the writes, the system message and
    /// its recipients (the removed user's devices hear of it too).
    pub(crate) fn handle_remove(
        &mut self,
        by: &UserId,
        user: &UserId,
        ban: bool,
        now_ms: u64,
    ) -> Result<(Vec<Write>, Message, Recipients), ErrorCode> {
        self.require_moderator(by)?;
        if by == user {
            return Err(ErrorCode::invalid("user", "use LeaveGroup to leave"));
        }
        let by_role = self.role(by);
        let target_role = self.role(user);
        match (by_role, target_role) {
            (_, Some(Role::Owner)) => return Err(ErrorCode::Forbidden),
            (Some(Role::Admin), Some(Role::Admin)) => return Err(ErrorCode::Forbidden),
            _ => {}
        }
        let recipients = self.members.clone();
        let conversation = self.id.clone();
        let (id, record, roles) = self.group_mut()?;
        let was_member = roles.remove(user).is_some();
        let mut writes = Vec::new();
        if was_member {
            writes.push(Write::RemoveMember {
                conversation,
                user: user.clone(),
            });
        }
        if ban && !record.banned.contains(user) {
            if record.banned.len() >= BANNED_MAX {
                return Err(ErrorCode::TooLarge {
                    what: "ban list".into(),
                    limit: BANNED_MAX as u64,
                });
            }
            record.banned.push(user.clone());
            writes.push(Write::Group {
                id,
                record: record.clone(),
            });
        }
        if !was_member && !ban {
            return Err(ErrorCode::NotFound);
        }
        Arc::make_mut(&mut self.members).remove(user);
        self.receipts.remove(user);
        let event = SystemEvent::MemberRemoved {
            user: user.clone(),
            by: by.clone(),
            banned: ban,
        };
        let (message, more) = self.system(by, event, now_ms)?;
        writes.extend(more);
        Ok((writes, message, recipients))
    }

    /// Lifts a ban. Quiet: no system message.
    pub(crate) fn handle_unban(
        &mut self,
        by: &UserId,
        user: &UserId,
    ) -> Result<Vec<Write>, ErrorCode> {
        self.require_moderator(by)?;
        let (id, record, _) = self.group_mut()?;
        if !record.banned.contains(user) {
            return Err(ErrorCode::NotFound);
        }
        record.banned.retain(|b| b != user);
        Ok(vec![Write::Group {
            id,
            record: record.clone(),
        }])
    }

    /// The owner changes `user`'s role; `Owner` transfers ownership.
    pub(crate) fn handle_set_role(
        &mut self,
        by: &UserId,
        user: &UserId,
        role: GroupRole,
        now_ms: u64,
    ) -> Result<Option<(Vec<Write>, Message)>, ErrorCode> {
        self.authorize(by)?;
        if self.role(by) != Some(Role::Owner) {
            return Err(ErrorCode::Forbidden);
        }
        if by == user {
            return Err(ErrorCode::invalid(
                "user",
                "give ownership to someone else instead",
            ));
        }
        let new_role = Role::from_wire(role);
        let conversation = self.id.clone();
        let (id, record, roles) = self.group_mut()?;
        let Some(current) = roles.get(user).copied() else {
            return Err(ErrorCode::NotFound);
        };
        if current == new_role {
            return Ok(None);
        }
        let mut writes = Vec::new();
        roles.insert(user.clone(), new_role);
        writes.push(Write::AddMember {
            conversation: conversation.clone(),
            user: user.clone(),
            role: new_role,
        });
        if new_role == Role::Owner {
            roles.insert(by.clone(), Role::Admin);
            writes.push(Write::AddMember {
                conversation,
                user: by.clone(),
                role: Role::Admin,
            });
            record.owner = user.clone();
            writes.push(Write::Group {
                id,
                record: record.clone(),
            });
        }
        let event = SystemEvent::RoleChanged {
            user: user.clone(),
            role,
            by: by.clone(),
        };
        let (message, more) = self.system(by, event, now_ms)?;
        writes.extend(more);
        Ok(Some((writes, message)))
    }

    /// A moderator changes the title or description.
    pub(crate) fn handle_update_info(
        &mut self,
        by: &UserId,
        title: Option<String>,
        description: Option<String>,
        now_ms: u64,
    ) -> Result<Option<(Vec<Write>, Message)>, ErrorCode> {
        self.require_moderator(by)?;
        let (id, record, _) = self.group_mut()?;
        let title = title.filter(|t| *t != record.name);
        let description = description.filter(|d| *d != record.description);
        if title.is_none() && description.is_none() {
            return Ok(None);
        }
        if let Some(title) = &title {
            record.name = title.clone();
        }
        if let Some(description) = &description {
            record.description = description.clone();
        }
        let mut writes = vec![Write::Group {
            id,
            record: record.clone(),
        }];
        let (message, more) =
            self.system(by, SystemEvent::InfoChanged { title, description }, now_ms)?;
        writes.extend(more);
        Ok(Some((writes, message)))
    }

    /// A moderator sets or removes the picture of a group or channel. Returns the writes (the
    /// record, and a media reference so members may download it) and the announcement.
    pub(crate) fn handle_set_avatar(
        &mut self,
        by: &UserId,
        media: Option<MediaInfo>,
        now_ms: u64,
    ) -> Result<Option<(Vec<Write>, Message)>, ErrorCode> {
        self.require_moderator(by)?;
        let id = media.as_ref().map(|m| m.id.clone());
        let mut writes = match &mut self.kind {
            Kind::Group {
                id: group,
                record: Some(record),
                ..
            } => {
                if record.avatar == id {
                    return Ok(None);
                }
                record.avatar = id.clone();
                vec![Write::Group {
                    id: *group,
                    record: record.clone(),
                }]
            }
            Kind::Channel {
                id: channel,
                record: Some(record),
                ..
            } => {
                if record.avatar == id {
                    return Ok(None);
                }
                record.avatar = id.clone();
                vec![Write::Channel {
                    id: *channel,
                    record: record.clone(),
                }]
            }
            _ => {
                return Err(ErrorCode::invalid(
                    "conversation",
                    "only groups and channels have a picture",
                ));
            }
        };
        if let Some(media) = id {
            writes.push(Write::MediaRef {
                media,
                conversation: self.id.clone(),
            });
        }
        let sender = self.author(by)?;
        let (message, more) = self.system(&sender, SystemEvent::AvatarChanged { media }, now_ms)?;
        writes.extend(more);
        Ok(Some((writes, message)))
    }

    /// The group's profile, for a member.
    pub(crate) fn group_info(
        &self,
        user: &UserId,
        large_members: usize,
    ) -> Result<GroupInfo, ErrorCode> {
        self.authorize(user)?;
        match &self.kind {
            Kind::Group {
                id,
                record: Some(record),
                ..
            } => Ok(GroupInfo {
                group: *id,
                title: record.name.clone(),
                description: record.description.clone(),
                owner: record.owner.clone(),
                member_count: u32::try_from(self.members.len()).unwrap_or(u32::MAX),
                created_at_ms: record.created_at_ms,
                large: self.members.len() > large_members,
                avatar: record.avatar.clone(),
            }),
            _ => Err(ErrorCode::invalid("conversation", "not a group")),
        }
    }

    /// A page of members after `after`, in user-id order, for a member.
    pub(crate) fn members_page(
        &self,
        user: &UserId,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<(Vec<Member>, bool), ErrorCode> {
        self.authorize(user)?;
        let Kind::Group { roles, .. } = &self.kind else {
            return Err(ErrorCode::invalid("conversation", "not a group"));
        };
        let range = match after {
            Some(after) => roles
                .range::<UserId, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => roles.range::<UserId, _>(..),
        };
        let mut members = Vec::new();
        let mut more = false;
        for (user, role) in range {
            if members.len() == limit {
                more = true;
                break;
            }
            members.push(Member {
                user: user.clone(),
                role: role.to_wire(),
            });
        }
        Ok((members, more))
    }

    /// Whether the group is above the size where typing and receipts are suppressed.
    pub(crate) fn is_large(&self, large_members: usize) -> bool {
        match self.kind {
            Kind::Direct => false,
            Kind::Group { .. } => self.members.len() > large_members,
            // Broadcasts: receipts, typing and presence would multiply by the audience.
            Kind::Channel { .. } | Kind::Comments { .. } => true,
            // A customer and a few staff: typing and receipts are the point.
            Kind::Shop { .. } => false,
        }
    }

    /// The other members, whose presence `user` may watch: only in direct conversations and
    /// groups up to `large_members`.
    pub(crate) fn presence_targets(
        &self,
        user: &UserId,
        large_members: usize,
    ) -> Result<Vec<UserId>, ErrorCode> {
        self.authorize(user)?;
        if self.is_large(large_members) {
            return Err(ErrorCode::Conflict {
                reason: "presence is off in large groups and channels".into(),
            });
        }
        Ok(self
            .members
            .iter()
            .filter(|m| *m != user)
            .cloned()
            .collect())
    }

    fn duplicate(&self, sender: &UserId, client_msg_id: &ClientMsgId) -> Option<SendAck> {
        let key = (sender.clone(), client_msg_id.clone());
        self.dedup.get(&key).map(|&(seq, sent_at_ms)| SendAck {
            conversation: self.id.clone(),
            seq,
            client_msg_id: client_msg_id.clone(),
            sent_at_ms,
            duplicate: true,
        })
    }

    /// Records the new entry for deduplication and builds its ack.
    fn outcome(&mut self, message: Message, writes: Vec<Write>) -> SendOutcome {
        self.dedup.insert(
            (message.sender.clone(), message.client_msg_id.clone()),
            (message.seq, message.sent_at_ms),
        );
        let ack = SendAck {
            conversation: self.id.clone(),
            seq: message.seq,
            client_msg_id: message.client_msg_id.clone(),
            sent_at_ms: message.sent_at_ms,
            duplicate: false,
        };
        SendOutcome::Append {
            message,
            writes,
            ack,
        }
    }

    /// Takes back the most recent append because it could not be submitted to storage, so the
    /// next send reuses its seq and the sequence stays gap-free.
    pub(crate) fn undo_append(&mut self, message: &Message) {
        if message.seq == self.last_seq {
            self.last_seq = Seq::new(self.last_seq.get().saturating_sub(1));
            self.dedup
                .remove(&(message.sender.clone(), message.client_msg_id.clone()));
        }
    }

    /// Creates the group with `owner` and `members`. Returns the writes and the creation message
    /// (seq 1), which every member receives.
    pub(crate) fn handle_create(
        &mut self,
        owner: &UserId,
        name: String,
        members: Vec<UserId>,
        now_ms: u64,
    ) -> Result<(Vec<Write>, Message), ErrorCode> {
        let Kind::Group { id, record, roles } = &mut self.kind else {
            return Err(ErrorCode::invalid("conversation", "not a group"));
        };
        if record.is_some() || self.last_seq != Seq::ZERO {
            return Err(ErrorCode::Conflict {
                reason: "group already exists".into(),
            });
        }
        let group_record = GroupRecord {
            name: name.clone(),
            owner: owner.clone(),
            created_at_ms: now_ms,
            description: String::new(),
            invite_secret: None,
            banned: Vec::new(),
            avatar: None,
        };
        let mut writes = vec![Write::Group {
            id: *id,
            record: group_record.clone(),
        }];
        roles.insert(owner.clone(), Role::Owner);
        for member in members {
            roles.entry(member).or_insert(Role::Member);
        }
        for (user, role) in roles.iter() {
            writes.push(Write::AddMember {
                conversation: self.id.clone(),
                user: user.clone(),
                role: *role,
            });
        }
        *record = Some(group_record);
        let member_count = u32::try_from(roles.len()).unwrap_or(u32::MAX);
        self.members = Arc::new(roles.keys().cloned().collect());
        let client_msg_id = system_msg_id("created")?;
        let body = MessageBody::System(SystemEvent::GroupCreated { name, member_count });
        let (message, more) = self.append(owner.clone(), client_msg_id, body, now_ms)?;
        writes.extend(more);
        Ok((writes, message))
    }

    /// `user` leaves the group. Returns the writes, the system message, and the recipients of that
    /// message (the remaining members plus the one who left, so their other devices learn of it).
    pub(crate) fn handle_leave(
        &mut self,
        user: &UserId,
        now_ms: u64,
    ) -> Result<(Vec<Write>, Message, Recipients), ErrorCode> {
        self.authorize(user)?;
        let Kind::Group { roles, .. } = &mut self.kind else {
            return Err(ErrorCode::invalid(
                "conversation",
                "cannot leave a direct conversation",
            ));
        };
        if roles.get(user) == Some(&Role::Owner) && roles.len() > 1 {
            return Err(ErrorCode::Conflict {
                reason: "transfer ownership before leaving".into(),
            });
        }
        roles.remove(user);
        let recipients = self.members.clone();
        let mut members = (*self.members).clone();
        members.remove(user);
        self.members = Arc::new(members);
        self.receipts.remove(user);
        let client_msg_id = system_msg_id(&format!("left-{}", self.last_seq.get() + 1))?;
        let body = MessageBody::System(SystemEvent::MemberLeft { user: user.clone() });
        let (message, mut writes) = self.append(user.clone(), client_msg_id, body, now_ms)?;
        writes.push(Write::RemoveMember {
            conversation: self.id.clone(),
            user: user.clone(),
        });
        Ok((writes, message, recipients))
    }

    /// `user` has received or read up to `seq`. Returns the write and the new positions, or `None`
    /// if nothing moved (receipts only move forward; `Read` implies `Delivered`).
    pub(crate) fn handle_receipt(
        &mut self,
        user: &UserId,
        seq: Seq,
        kind: ReceiptKind,
    ) -> Result<Option<Write>, ErrorCode> {
        self.authorize(user)?;
        if seq > self.last_seq {
            return Err(ErrorCode::invalid(
                "seq",
                format!("beyond the last message {}", self.last_seq),
            ));
        }
        let (delivered, read) = self.receipts.get(user).copied().unwrap_or_default();
        let (new_delivered, new_read) = match kind {
            ReceiptKind::Delivered => (delivered.max(seq), read),
            ReceiptKind::Read => (delivered.max(seq), read.max(seq)),
        };
        if (new_delivered, new_read) == (delivered, read) {
            return Ok(None);
        }
        self.receipts
            .insert(user.clone(), (new_delivered, new_read));
        Ok(Some(Write::Receipt {
            conversation: self.id.clone(),
            user: user.clone(),
            delivered: new_delivered,
            read: new_read,
        }))
    }

    fn append(
        &mut self,
        sender: UserId,
        client_msg_id: ClientMsgId,
        body: MessageBody,
        now_ms: u64,
    ) -> Result<(Message, Vec<Write>), ErrorCode> {
        let seq = self.last_seq.next().ok_or_else(|| ErrorCode::Conflict {
            reason: "conversation is full".into(),
        })?;
        self.last_seq = seq;
        let message = Message {
            conversation: self.id.clone(),
            seq,
            sender,
            client_msg_id,
            sent_at_ms: now_ms,
            body,
            reply_to: None,
            forwarded_from: None,
            edited_at_ms: None,
            reactions: Vec::new(),
        };
        let writes = vec![Write::Message(message.clone())];
        Ok((message, writes))
    }
}

/// Compares secrets without an early exit on the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Client message ids of system messages; `#` cannot start a client's own id by convention of
/// the SDK, and deduplication is per sender anyway.
fn system_msg_id(name: &str) -> Result<ClientMsgId, ErrorCode> {
    format!("#sys-{name}")
        .parse()
        .map_err(|_| ErrorCode::Internal { id: 0 })
}

/// The most recent `(sender, client_msg_id)` pairs of a conversation and what they were assigned,
/// bounded by evicting the oldest.
#[derive(Debug)]
struct DedupWindow {
    max: usize,
    map: HashMap<(UserId, ClientMsgId), (Seq, u64)>,
    order: VecDeque<(UserId, ClientMsgId)>,
}

impl DedupWindow {
    fn new(max: usize) -> DedupWindow {
        DedupWindow {
            max,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn get(&self, key: &(UserId, ClientMsgId)) -> Option<&(Seq, u64)> {
        self.map.get(key)
    }

    fn insert(&mut self, key: (UserId, ClientMsgId), value: (Seq, u64)) {
        if self.map.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > self.max {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    fn remove(&mut self, key: &(UserId, ClientMsgId)) {
        if self.map.remove(key).is_some() {
            self.order.retain(|k| k != key);
        }
    }
}

/// The customer and the staff of a shop conversation (nobody but the customer when the shop does
/// not exist: such a conversation refuses every request anyway).
fn shop_members(customer: &UserId, staff: &BTreeMap<UserId, StaffRole>) -> HashSet<UserId> {
    let mut members: HashSet<UserId> = staff.keys().cloned().collect();
    members.insert(customer.clone());
    members
}

/// The pictures a commerce message shows.
fn commerce_media(
    body: &piazza_protocol::commerce::CommerceBody,
) -> Vec<&piazza_protocol::MediaId> {
    use piazza_protocol::commerce::CommerceBody;
    match body {
        CommerceBody::Product { product, .. } | CommerceBody::AskAbout { product, .. } => {
            product.media.iter().collect()
        }
        CommerceBody::ProductList { sections, .. } => sections
            .iter()
            .flat_map(|(_, cards)| cards.iter().filter_map(|c| c.media.as_ref()))
            .collect(),
        CommerceBody::Promotion { product, .. } => product
            .as_ref()
            .and_then(|p| p.media.as_ref())
            .into_iter()
            .collect(),
        CommerceBody::Order(_) => Vec::new(),
    }
}
