//! Requests, responses, server-pushed events and datagrams.
//!
//! A request travels alone on its own bidirectional stream and gets exactly one [`Response`].
//! [`Request::validate`] checks every wire limit; the node calls it before doing anything else, and
//! clients may call it to fail early.

use serde::{Deserialize, Serialize};

use crate::ErrorCode;
use crate::commerce::{CommerceBody, OrderView, ShopId, ShopOp, ShopReply};
use crate::ids::{
    ChannelId, ClientMsgId, ConversationId, ConversationRef, DeviceId, GroupId, Seq, UserId,
};
use crate::limits::{CAPTION_BYTES_MAX, POST_STATS_MAX};
use crate::limits::{
    EMOJI_BYTES_MAX, GROUP_CREATE_MEMBERS_MAX, GROUP_DESCRIPTION_BYTES_MAX, GROUP_INVITE_BATCH_MAX,
    GROUP_NAME_BYTES_MAX, HISTORY_PAGE_MAX, INVITE_LINK_BYTES_MAX, MEMBERS_PAGE_MAX,
    SYNC_CURSORS_MAX, SYNC_MESSAGES_MAX, TEXT_BYTES_MAX, TOKEN_BYTES_MAX,
};
use crate::media::{MediaId, MediaInfo, MediaRequest, MediaResponse};

/// A client request. The first one on a connection must be [`Request::Hello`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Authenticate the connection. Answered with [`Response::Welcome`].
    Hello {
        /// Must equal [`crate::PROTOCOL_VERSION`].
        protocol_version: u32,
        /// A signed token naming the user (see the node's `token` command).
        token: String,
        /// Which of the user's devices this connection is.
        device: DeviceId,
    },
    /// Append a text message. Answered with [`Response::Ack`] once it is durable.
    Send {
        /// Where to send it.
        conversation: ConversationRef,
        /// The client's id for this message; retries with the same id are answered with the
        /// original ack.
        client_msg_id: ClientMsgId,
        /// The text, at most [`TEXT_BYTES_MAX`] bytes.
        text: String,
    },
    /// A page of a conversation's history, oldest first. Answered with [`Response::History`].
    History {
        /// Which conversation.
        conversation: ConversationRef,
        /// Only messages with a seq below this one (`None`: the newest).
        before: Option<Seq>,
        /// At most this many messages, 1..=[`HISTORY_PAGE_MAX`].
        limit: u32,
    },
    /// Everything the device missed, in every conversation of the user. Answered with
    /// [`Response::Sync`].
    Sync {
        /// The last seq the device has per conversation; conversations not named are synced from
        /// the start.
        cursors: Vec<SyncCursor>,
        /// At most this many messages in the answer, 1..=[`SYNC_MESSAGES_MAX`].
        limit: u32,
    },
    /// Mark messages up to `seq` as delivered to or read by this user. Answered with
    /// [`Response::Done`]; other members get [`Event::Receipt`].
    Receipt {
        /// Which conversation.
        conversation: ConversationId,
        /// Up to and including this seq.
        seq: Seq,
        /// Delivered or read.
        kind: ReceiptKind,
    },
    /// The receipt positions of every member of a conversation. Answered with
    /// [`Response::Receipts`].
    Receipts {
        /// Which conversation.
        conversation: ConversationRef,
    },
    /// Create a group with the caller as owner. Answered with [`Response::GroupCreated`].
    CreateGroup {
        /// Display name, 1..=[`GROUP_NAME_BYTES_MAX`] bytes.
        name: String,
        /// Initial members besides the caller, at most [`GROUP_CREATE_MEMBERS_MAX`].
        members: Vec<UserId>,
    },
    /// Leave a group. Answered with [`Response::Done`].
    LeaveGroup {
        /// Which group.
        group: GroupId,
    },
    /// The newest seq of each of the caller's conversations, in conversation-id order, at most
    /// [`HEADS_MAX`] per answer. A device that wants only new messages starts its cursors here
    /// instead of reading the whole history. Answered with [`Response::Heads`].
    Heads {
        /// Only conversations after this one (the last of the previous page).
        after: Option<ConversationId>,
    },
    /// Append a text message that replies to (quotes) an earlier one. Answered with
    /// [`Response::Ack`].
    Reply {
        /// Where to send it.
        conversation: ConversationRef,
        /// The client's id for this message.
        client_msg_id: ClientMsgId,
        /// The message replied to, in the same conversation.
        reply_to: Seq,
        /// The text.
        text: String,
    },
    /// Change the text of one's own message within the edit window. Answered with
    /// [`Response::Ack`] for the update entry.
    Edit {
        /// The conversation.
        conversation: ConversationRef,
        /// The client's id for the update entry (retries are deduplicated like sends).
        client_msg_id: ClientMsgId,
        /// The message to edit.
        target: Seq,
        /// The new text.
        text: String,
    },
    /// Delete a message for everyone: one's own within the edit window, or any message as a group
    /// owner or admin. Answered with [`Response::Ack`] for the update entry.
    Delete {
        /// The conversation.
        conversation: ConversationRef,
        /// The client's id for the update entry.
        client_msg_id: ClientMsgId,
        /// The message to delete.
        target: Seq,
    },
    /// Add or remove one's reaction on a message. Answered with [`Response::Ack`] for the update
    /// entry, or [`Response::Done`] if nothing changed (already reacted, or nothing to remove).
    React {
        /// The conversation.
        conversation: ConversationRef,
        /// The client's id for the update entry.
        client_msg_id: ClientMsgId,
        /// The message.
        target: Seq,
        /// The emoji, 1..=[`EMOJI_BYTES_MAX`] bytes.
        emoji: String,
        /// Add (true) or remove (false).
        add: bool,
    },
    /// Pin or unpin a message (any member of a direct conversation; owners and admins in groups).
    /// Answered with [`Response::Ack`] for the update entry.
    Pin {
        /// The conversation.
        conversation: ConversationRef,
        /// The client's id for the update entry.
        client_msg_id: ClientMsgId,
        /// The message.
        target: Seq,
        /// Pin (true) or unpin (false).
        pinned: bool,
    },
    /// Forward a message the caller can read into another conversation. Answered with
    /// [`Response::Ack`] for the new message.
    Forward {
        /// Where the message is.
        from: ConversationRef,
        /// Its seq there.
        seq: Seq,
        /// Where to forward it.
        to: ConversationRef,
        /// The client's id for the new message.
        client_msg_id: ClientMsgId,
    },
    /// The pinned messages of a conversation, oldest pin first. Answered with
    /// [`Response::Pinned`].
    Pinned {
        /// The conversation.
        conversation: ConversationRef,
    },
    /// Add members to a group (owner and admins), at most [`GROUP_INVITE_BATCH_MAX`] per request.
    /// Answered with [`Response::Done`].
    InviteMembers {
        /// The group.
        group: GroupId,
        /// Who to add.
        users: Vec<UserId>,
    },
    /// Create (or replace) the group's invite link (owner and admins). Answered with
    /// [`Response::InviteLink`]; a new link invalidates the previous one.
    CreateInviteLink {
        /// The group.
        group: GroupId,
    },
    /// Join a group with an invite link. Answered with [`Response::GroupJoined`].
    JoinByLink {
        /// The link, as returned by `CreateInviteLink`.
        link: String,
    },
    /// Remove a member (owner and admins; only the owner removes admins; nobody removes the
    /// owner). With `ban`, the user cannot come back by link or invitation until unbanned.
    /// Answered with [`Response::Done`].
    RemoveMember {
        /// The group.
        group: GroupId,
        /// Who.
        user: UserId,
        /// Also ban them.
        ban: bool,
    },
    /// Lift a ban (owner and admins). Answered with [`Response::Done`].
    Unban {
        /// The group.
        group: GroupId,
        /// Who.
        user: UserId,
    },
    /// Change a member's role (owner only). Making someone `Owner` transfers ownership: the
    /// previous owner becomes an admin. Answered with [`Response::Done`].
    SetRole {
        /// The group.
        group: GroupId,
        /// Who.
        user: UserId,
        /// The new role.
        role: GroupRole,
    },
    /// Change the group's title or description (owner and admins). Answered with
    /// [`Response::Done`].
    UpdateGroupInfo {
        /// The group.
        group: GroupId,
        /// New title, if changing.
        title: Option<String>,
        /// New description, if changing.
        description: Option<String>,
    },
    /// The group's profile. Answered with [`Response::GroupInfo`].
    GroupInfo {
        /// The group.
        group: GroupId,
    },
    /// A page of members in user-id order. Answered with [`Response::Members`].
    Members {
        /// The group.
        group: GroupId,
        /// Only members after this user (the last of the previous page).
        after: Option<UserId>,
        /// At most this many, 1..=[`MEMBERS_PAGE_MAX`].
        limit: u32,
    },
    /// A media request (upload, download). See [`crate::media`].
    Media(MediaRequest),
    /// Send a message that shows an uploaded blob with a caption. The caller must have uploaded
    /// the blob, or it must already be referenced in this conversation. Answered with
    /// [`Response::Ack`].
    SendMedia {
        /// Where to send it.
        conversation: ConversationRef,
        /// The client's id for this message (retries are deduplicated like sends).
        client_msg_id: ClientMsgId,
        /// The blob.
        media: MediaId,
        /// The caption (may be empty), at most [`CAPTION_BYTES_MAX`] bytes.
        caption: String,
    },
    /// Create a channel with the caller as owner. Answered with [`Response::ChannelCreated`].
    /// Posts are ordinary sends (`Send`, `Reply`, `SendMedia`) to the channel's conversation,
    /// allowed to its owner and admins only.
    CreateChannel {
        /// Title, 1..=[`GROUP_NAME_BYTES_MAX`] bytes.
        title: String,
        /// Description, at most [`GROUP_DESCRIPTION_BYTES_MAX`] bytes.
        description: String,
        /// Whether posts show their author; otherwise their sender is [`UserId::channel`].
        signed: bool,
    },
    /// Subscribe to a channel (anyone). Answered with [`Response::Subscribed`]; the channel then
    /// appears in `Heads` and `Sync`.
    Subscribe {
        /// The channel.
        channel: ChannelId,
    },
    /// Unsubscribe (the owner cannot). Answered with [`Response::Done`].
    Unsubscribe {
        /// The channel.
        channel: ChannelId,
    },
    /// Change the channel's title, description or signing (owner and admins). Answered with
    /// [`Response::Done`].
    UpdateChannel {
        /// The channel.
        channel: ChannelId,
        /// New title, if changing.
        title: Option<String>,
        /// New description, if changing.
        description: Option<String>,
        /// Sign posts from now on, if changing.
        signed: Option<bool>,
    },
    /// Make a user an admin of the channel (subscribing them if needed) or back to a plain
    /// subscriber (owner only). Answered with [`Response::Done`].
    SetChannelAdmin {
        /// The channel.
        channel: ChannelId,
        /// Who.
        user: UserId,
        /// Admin (true) or subscriber (false).
        admin: bool,
    },
    /// The channel's profile (anyone). Answered with [`Response::ChannelInfo`].
    ChannelInfo {
        /// The channel.
        channel: ChannelId,
    },
    /// Schedule a text post for `at_ms` (owner and admins). It is published at that time (or at
    /// start-up if the node was down then) with `client_msg_id`, at most
    /// [`crate::limits::SCHEDULED_POSTS_MAX`] per channel. Answered with [`Response::Scheduled`].
    SchedulePost {
        /// The channel.
        channel: ChannelId,
        /// The id the post will carry; scheduling again with the same id is answered with the
        /// existing schedule.
        client_msg_id: ClientMsgId,
        /// The text.
        text: String,
        /// When to publish (milliseconds since the Unix epoch).
        at_ms: u64,
    },
    /// The channel's scheduled posts, earliest first (owner and admins). Answered with
    /// [`Response::ScheduledPosts`].
    ScheduledPosts {
        /// The channel.
        channel: ChannelId,
    },
    /// Cancel a scheduled post (owner and admins). Answered with [`Response::Done`], or
    /// `NotFound` if it was published or cancelled already.
    CancelScheduled {
        /// The channel.
        channel: ChannelId,
        /// The scheduled post.
        client_msg_id: ClientMsgId,
    },
    /// Count one view of each post by the caller (a user counts once per post) and return the
    /// posts' counters, at most [`POST_STATS_MAX`] posts. Answered with [`Response::PostStats`].
    ViewPosts {
        /// The channel.
        channel: ChannelId,
        /// The posts seen.
        posts: Vec<Seq>,
    },
    /// The counters of posts without counting a view. Answered with [`Response::PostStats`].
    PostStats {
        /// The channel.
        channel: ChannelId,
        /// The posts.
        posts: Vec<Seq>,
    },
    /// Set (or with `None` remove) the picture of a group or channel (owner and admins). The
    /// caller must have uploaded the blob, or it must already be referenced in the conversation.
    /// Members are told by a [`SystemEvent::AvatarChanged`] message. Answered with
    /// [`Response::Done`].
    SetAvatar {
        /// The group or channel.
        conversation: ConversationRef,
        /// The picture.
        media: Option<MediaId>,
    },
    /// Share this user's online state with people who watch it (opt-in, off by default, for
    /// as long as this connection is open). Answered with [`Response::Done`].
    SetPresence {
        /// Visible (true) or hidden (false).
        visible: bool,
    },
    /// Watch the presence of a conversation's other members: the peer of a direct conversation,
    /// or the members of a group up to the node's large-group size. Changes arrive as
    /// [`Datagram::Presence`] while this connection is open. Answered with
    /// [`Response::Presence`] (the current state of those who share it).
    WatchPresence {
        /// The conversation.
        conversation: ConversationRef,
    },
    /// One operation on a shop (see [`crate::commerce`]). Answered with [`Response::Shop`].
    Shop {
        /// The shop.
        shop: ShopId,
        /// What to do.
        op: ShopOp,
    },
}

impl Request {
    /// Checks every wire limit of the request. Pure; the node calls it first.
    pub fn validate(&self) -> Result<(), ErrorCode> {
        match self {
            Request::Hello { token, .. } => {
                check_len("token", token.len(), TOKEN_BYTES_MAX)?;
            }
            Request::Send { text, .. } => {
                if text.is_empty() {
                    return Err(ErrorCode::invalid("text", "empty message"));
                }
                check_len("text", text.len(), TEXT_BYTES_MAX)?;
            }
            Request::History { limit, .. } => check_range("limit", *limit, HISTORY_PAGE_MAX)?,
            Request::Sync { cursors, limit } => {
                check_len("cursors", cursors.len(), SYNC_CURSORS_MAX)?;
                check_range("limit", *limit, SYNC_MESSAGES_MAX)?;
            }
            Request::Receipt { .. }
            | Request::Receipts { .. }
            | Request::LeaveGroup { .. }
            | Request::Heads { .. }
            | Request::Delete { .. }
            | Request::Pin { .. }
            | Request::Forward { .. }
            | Request::Pinned { .. } => {}
            Request::Reply { text, .. } | Request::Edit { text, .. } => {
                if text.is_empty() {
                    return Err(ErrorCode::invalid("text", "empty message"));
                }
                check_len("text", text.len(), TEXT_BYTES_MAX)?;
            }
            Request::InviteMembers { users, .. } => {
                if users.is_empty() {
                    return Err(ErrorCode::invalid("users", "nobody to invite"));
                }
                check_len("users", users.len(), GROUP_INVITE_BATCH_MAX)?;
            }
            Request::JoinByLink { link } => check_len("link", link.len(), INVITE_LINK_BYTES_MAX)?,
            Request::UpdateGroupInfo {
                title, description, ..
            }
            | Request::UpdateChannel {
                title, description, ..
            } => check_profile(title.as_deref(), description.as_deref())?,
            Request::Members { limit, .. } => check_range("limit", *limit, MEMBERS_PAGE_MAX)?,
            Request::CreateInviteLink { .. }
            | Request::RemoveMember { .. }
            | Request::Unban { .. }
            | Request::SetRole { .. }
            | Request::GroupInfo { .. } => {}
            Request::Media(request) => request.validate()?,
            Request::SendMedia { caption, .. } => {
                check_len("caption", caption.len(), CAPTION_BYTES_MAX)?;
            }
            Request::CreateChannel {
                title, description, ..
            } => check_profile(Some(title), Some(description))?,
            Request::SchedulePost { text, .. } => {
                if text.is_empty() {
                    return Err(ErrorCode::invalid("text", "empty message"));
                }
                check_len("text", text.len(), TEXT_BYTES_MAX)?;
            }
            Request::ViewPosts { posts, .. } | Request::PostStats { posts, .. } => {
                if posts.is_empty() {
                    return Err(ErrorCode::invalid("posts", "no posts named"));
                }
                check_len("posts", posts.len(), POST_STATS_MAX)?;
                if posts.contains(&Seq::ZERO) {
                    return Err(ErrorCode::invalid("posts", "seq 0 is not a post"));
                }
            }
            Request::Subscribe { .. }
            | Request::Unsubscribe { .. }
            | Request::SetChannelAdmin { .. }
            | Request::ChannelInfo { .. }
            | Request::ScheduledPosts { .. }
            | Request::CancelScheduled { .. }
            | Request::SetPresence { .. }
            | Request::SetAvatar { .. }
            | Request::WatchPresence { .. } => {}
            Request::React { emoji, .. } => {
                if emoji.is_empty() || emoji.chars().any(char::is_whitespace) {
                    return Err(ErrorCode::invalid("emoji", "one emoji, no spaces"));
                }
                check_len("emoji", emoji.len(), EMOJI_BYTES_MAX)?;
            }
            Request::CreateGroup { name, members } => {
                if name.trim().is_empty() {
                    return Err(ErrorCode::invalid("name", "empty group name"));
                }
                check_len("name", name.len(), GROUP_NAME_BYTES_MAX)?;
                check_len("members", members.len(), GROUP_CREATE_MEMBERS_MAX)?;
            }
            Request::Shop { op, .. } => op.validate()?,
        }
        Ok(())
    }

    /// A short, stable label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::Send { .. } => "send",
            Request::History { .. } => "history",
            Request::Sync { .. } => "sync",
            Request::Receipt { .. } => "receipt",
            Request::Receipts { .. } => "receipts",
            Request::CreateGroup { .. } => "create_group",
            Request::LeaveGroup { .. } => "leave_group",
            Request::Heads { .. } => "heads",
            Request::Reply { .. } => "reply",
            Request::Edit { .. } => "edit",
            Request::Delete { .. } => "delete",
            Request::React { .. } => "react",
            Request::Pin { .. } => "pin",
            Request::Forward { .. } => "forward",
            Request::Pinned { .. } => "pinned",
            Request::InviteMembers { .. } => "invite_members",
            Request::CreateInviteLink { .. } => "create_invite_link",
            Request::JoinByLink { .. } => "join_by_link",
            Request::RemoveMember { .. } => "remove_member",
            Request::Unban { .. } => "unban",
            Request::SetRole { .. } => "set_role",
            Request::UpdateGroupInfo { .. } => "update_group_info",
            Request::GroupInfo { .. } => "group_info",
            Request::Members { .. } => "members",
            Request::Media(request) => request.label(),
            Request::SendMedia { .. } => "send_media",
            Request::CreateChannel { .. } => "create_channel",
            Request::Subscribe { .. } => "subscribe",
            Request::Unsubscribe { .. } => "unsubscribe",
            Request::UpdateChannel { .. } => "update_channel",
            Request::SetChannelAdmin { .. } => "set_channel_admin",
            Request::ChannelInfo { .. } => "channel_info",
            Request::SchedulePost { .. } => "schedule_post",
            Request::ScheduledPosts { .. } => "scheduled_posts",
            Request::CancelScheduled { .. } => "cancel_scheduled",
            Request::ViewPosts { .. } => "view_posts",
            Request::PostStats { .. } => "post_stats",
            Request::SetPresence { .. } => "set_presence",
            Request::SetAvatar { .. } => "set_avatar",
            Request::WatchPresence { .. } => "watch_presence",
            Request::Shop { .. } => "shop",
        }
    }
}

/// A group's or channel's title (non-blank) and description, when given.
fn check_profile(title: Option<&str>, description: Option<&str>) -> Result<(), ErrorCode> {
    if let Some(title) = title {
        if title.trim().is_empty() {
            return Err(ErrorCode::invalid("title", "empty title"));
        }
        check_len("title", title.len(), GROUP_NAME_BYTES_MAX)?;
    }
    if let Some(description) = description {
        check_len(
            "description",
            description.len(),
            GROUP_DESCRIPTION_BYTES_MAX,
        )?;
    }
    Ok(())
}

fn check_len(field: &str, len: usize, max: usize) -> Result<(), ErrorCode> {
    if len > max {
        return Err(ErrorCode::TooLarge {
            what: field.to_owned(),
            limit: max as u64,
        });
    }
    Ok(())
}

fn check_range(field: &str, value: u32, max: u32) -> Result<(), ErrorCode> {
    if value == 0 || value > max {
        return Err(ErrorCode::invalid(
            field,
            format!("must be between 1 and {max}"),
        ));
    }
    Ok(())
}

/// The last seq a device has seen in one conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncCursor {
    /// Which conversation.
    pub conversation: ConversationId,
    /// The last seq the device has (it wants everything after it).
    pub seq: Seq,
}

/// Delivered or read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReceiptKind {
    /// The message reached one of the user's devices.
    Delivered,
    /// The user has seen the message.
    Read,
}

/// The node's answer to one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// `Hello` accepted.
    Welcome {
        /// The authenticated user (the token's subject).
        user: UserId,
        /// Name of the node that serves this connection.
        node: String,
        /// The node's clock, for display purposes only.
        server_time_ms: u64,
    },
    /// A send is durable.
    Ack(SendAck),
    /// A history page.
    History(HistoryPage),
    /// A sync batch.
    Sync(SyncBatch),
    /// Receipt positions of a conversation's members.
    Receipts(Vec<ReceiptState>),
    /// A group was created.
    GroupCreated {
        /// The new group's conversation.
        conversation: ConversationId,
    },
    /// The request succeeded and has nothing else to say.
    Done,
    /// The request failed.
    Error(ErrorCode),
    /// Newest seqs of the caller's conversations.
    Heads {
        /// One cursor per conversation, at its newest seq, in conversation-id order.
        heads: Vec<SyncCursor>,
        /// Whether more conversations follow (ask again with `after` = the last one here).
        more: bool,
    },
    /// Pinned messages, oldest pin first.
    Pinned(Vec<Message>),
    /// An invite link.
    InviteLink {
        /// Give it to people who should be able to join.
        link: String,
    },
    /// Joined a group (or was already a member).
    GroupJoined {
        /// The group's conversation.
        conversation: ConversationId,
    },
    /// A group's profile.
    GroupInfo(GroupInfo),
    /// A page of members.
    Members {
        /// Members in user-id order.
        members: Vec<Member>,
        /// Whether more follow.
        more: bool,
    },
    /// The answer to a [`Request::Media`].
    Media(MediaResponse),
    /// Subscribed to a channel (or already was).
    Subscribed {
        /// The channel's conversation.
        conversation: ConversationId,
        /// Its newest seq when the subscription took effect: later posts are pushed; a device
        /// that wants no history starts its cursor here.
        head: Seq,
    },
    /// A channel was created.
    ChannelCreated {
        /// The new channel (its conversation is `ConversationId::Channel`).
        channel: ChannelId,
    },
    /// A channel's profile.
    ChannelInfo(ChannelInfo),
    /// A post is scheduled.
    Scheduled(ScheduledPost),
    /// Scheduled posts, earliest first.
    ScheduledPosts(Vec<ScheduledPost>),
    /// Counters of channel posts, in the order asked.
    PostStats(Vec<PostStats>),
    /// The presence of the watched users who share it.
    Presence(Vec<PresenceState>),
    /// The answer to a [`Request::Shop`].
    Shop(Box<ShopReply>),
}

/// A channel's profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelInfo {
    /// The channel.
    pub channel: ChannelId,
    /// Title.
    pub title: String,
    /// Description (may be empty).
    pub description: String,
    /// The owner.
    pub owner: UserId,
    /// Subscribers now, owner and admins included.
    pub subscriber_count: u64,
    /// When it was created (milliseconds since the Unix epoch).
    pub created_at_ms: u64,
    /// Whether posts show their author.
    pub signed: bool,
    /// The caller's role: `None` if not subscribed, `Member` for a plain subscriber.
    pub role: Option<GroupRole>,
    /// The channel's picture, downloadable by subscribers.
    pub avatar: Option<MediaId>,
}

/// A post waiting for its time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledPost {
    /// The id the post will carry.
    pub client_msg_id: ClientMsgId,
    /// When it will be published (milliseconds since the Unix epoch).
    pub at_ms: u64,
    /// Who scheduled it.
    pub author: UserId,
    /// The text.
    pub text: String,
}

/// Counters of one channel post.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostStats {
    /// The post.
    pub post: Seq,
    /// Distinct users who viewed it.
    pub views: u64,
    /// Comments in its thread.
    pub comments: u64,
}

/// Whether a user is online.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceState {
    /// The user.
    pub user: UserId,
    /// Online now (a visible connection is open).
    pub online: bool,
    /// When the user was last online, if this node has seen them since it started.
    pub last_seen_ms: Option<u64>,
}

/// A member's role in a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GroupRole {
    /// Created the group or received ownership; one per group.
    Owner,
    /// Moderates: invites, removes members, edits the profile, pins, deletes any message.
    Admin,
    /// Reads and writes.
    Member,
}

/// A group's profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    /// The group.
    pub group: GroupId,
    /// Title.
    pub title: String,
    /// Description (may be empty).
    pub description: String,
    /// The owner.
    pub owner: UserId,
    /// Members now.
    pub member_count: u32,
    /// When it was created (milliseconds since the Unix epoch).
    pub created_at_ms: u64,
    /// Whether typing indicators and receipts are suppressed because the group is large.
    pub large: bool,
    /// The group's picture, downloadable by members.
    pub avatar: Option<MediaId>,
}

/// One member of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The user.
    pub user: UserId,
    /// Their role.
    pub role: GroupRole,
}

/// Acknowledgement of a durable send.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendAck {
    /// The conversation the message is in.
    pub conversation: ConversationId,
    /// Its position.
    pub seq: Seq,
    /// The id the client gave it.
    pub client_msg_id: ClientMsgId,
    /// When the node accepted it (milliseconds since the Unix epoch).
    pub sent_at_ms: u64,
    /// True if this ack answers a retry of a message that was already stored.
    pub duplicate: bool,
}

/// A page of history, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// The conversation.
    pub conversation: ConversationId,
    /// Messages in ascending seq.
    pub messages: Vec<Message>,
    /// Whether older messages exist (ask again with `before` = the first seq of this page).
    pub more: bool,
}

/// Missed messages, grouped by conversation and in ascending seq within each conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncBatch {
    /// The messages.
    pub messages: Vec<Message>,
    /// Whether more remain: advance the cursors past these messages and ask again.
    pub more: bool,
}

/// Where one member stands in a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptState {
    /// The member.
    pub user: UserId,
    /// Highest seq delivered to one of the member's devices.
    pub delivered: Seq,
    /// Highest seq the member has read.
    pub read: Seq,
}

/// A stored message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The conversation it belongs to.
    pub conversation: ConversationId,
    /// Its position, gap-free from 1.
    pub seq: Seq,
    /// Who sent it.
    pub sender: UserId,
    /// The sender's id for it.
    pub client_msg_id: ClientMsgId,
    /// When the node accepted it (milliseconds since the Unix epoch).
    pub sent_at_ms: u64,
    /// What it says.
    pub body: MessageBody,
    /// The earlier message of the same conversation this one replies to (quotes).
    pub reply_to: Option<Seq>,
    /// Where this message was forwarded from, if it was.
    pub forwarded_from: Option<ForwardedFrom>,
    /// When the text was last edited; history and sync show the edited text.
    pub edited_at_ms: Option<u64>,
    /// Reactions so far, per emoji (history and sync show the current counts).
    pub reactions: Vec<ReactionCount>,
}

/// The origin of a forwarded message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedFrom {
    /// The conversation it was first sent in.
    pub conversation: ConversationId,
    /// Its seq there.
    pub seq: Seq,
    /// Who sent it originally.
    pub sender: UserId,
    /// When it was first sent.
    pub sent_at_ms: u64,
}

/// How many members reacted with one emoji.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReactionCount {
    /// The emoji.
    pub emoji: String,
    /// How many users reacted with it.
    pub count: u32,
}

/// The content of a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// Plain text.
    Text(String),
    /// Something that happened to the conversation, recorded in its sequence.
    System(SystemEvent),
    /// A change to an earlier message (edit, deletion, reaction, pin), recorded in the sequence
    /// so that every device, online or syncing later, applies it in order. The entry's `sender`
    /// is who made the change.
    Update(MessageUpdate),
    /// What history and sync show in place of a deleted message.
    Deleted,
    /// A media blob with a caption.
    Media {
        /// The blob's id, size and sniffed type.
        media: MediaInfo,
        /// The caption (may be empty).
        caption: String,
    },
    /// A product, product list, question about a product, order or promotion, in a customer's
    /// conversation with a shop.
    Commerce(Box<CommerceBody>),
}

/// A change to an earlier message of the same conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageUpdate {
    /// The text of `target` is now `text`.
    Edited {
        /// The edited message.
        target: Seq,
        /// Its new text.
        text: String,
    },
    /// `target` was deleted for everyone.
    Deleted {
        /// The deleted message.
        target: Seq,
    },
    /// The entry's sender added or removed a reaction on `target`.
    Reaction {
        /// The message reacted to.
        target: Seq,
        /// The emoji.
        emoji: String,
        /// Added (true) or removed (false).
        added: bool,
    },
    /// `target` was pinned or unpinned.
    Pinned {
        /// The message.
        target: Seq,
        /// Pinned (true) or unpinned (false).
        pinned: bool,
    },
    /// The order of order message `target` changed: history and sync show it updated.
    Order {
        /// The order message.
        target: Seq,
        /// The order as it is now.
        order: Box<OrderView>,
    },
}

/// Membership changes and other conversation events, stored in the sequence like messages so every
/// device sees them in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SystemEvent {
    /// The group was created.
    GroupCreated {
        /// Its name.
        name: String,
        /// How many members it started with, owner included.
        member_count: u32,
    },
    /// The channel was created.
    ChannelCreated {
        /// Its title.
        title: String,
    },
    /// The group's or channel's picture changed (`None`: removed).
    AvatarChanged {
        /// The new picture.
        media: Option<MediaInfo>,
    },
    /// A member left.
    MemberLeft {
        /// Who.
        user: UserId,
    },
    /// Members were added by invitation (`by`) or joined by link (`by` is `None`).
    MembersAdded {
        /// Who joined.
        users: Vec<UserId>,
        /// Who invited them.
        by: Option<UserId>,
    },
    /// A member was removed (and possibly banned).
    MemberRemoved {
        /// Who.
        user: UserId,
        /// By whom.
        by: UserId,
        /// Whether they were banned.
        banned: bool,
    },
    /// A member's role changed.
    RoleChanged {
        /// Whose.
        user: UserId,
        /// The new role.
        role: GroupRole,
        /// By whom.
        by: UserId,
    },
    /// The group's title or description changed.
    InfoChanged {
        /// The new title, if it changed.
        title: Option<String>,
        /// The new description, if it changed.
        description: Option<String>,
    },
}

/// Pushed by the node on the connection's event stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A new message in one of the user's conversations (also the user's own, for other devices).
    Message(Message),
    /// A member's receipt position moved.
    Receipt {
        /// Which conversation.
        conversation: ConversationId,
        /// Whose receipt.
        user: UserId,
        /// Delivered or read.
        kind: ReceiptKind,
        /// Up to and including this seq.
        seq: Seq,
    },
    /// The node had to drop events for this connection (it was too slow to read them): run
    /// `Sync` from the device's cursors to catch up.
    Resync,
}

/// A QUIC datagram: unreliable, unordered, cheap. Used for typing indicators.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Datagram {
    /// `user` is (or stopped) typing in `conversation`. From a client, `user` is ignored and
    /// replaced by the authenticated user.
    Typing {
        /// Which conversation.
        conversation: ConversationId,
        /// Who is typing.
        user: UserId,
        /// Typing started (true) or stopped (false).
        active: bool,
    },
    /// A watched user came online or went offline (node to client only).
    Presence(PresenceState),
}
