//! Durable state: the [`Storage`] trait, its errors and row types, and the embedded adapter.
//!
//! Writes go through [`Storage::submit`]: a bounded queue drained by one writer that commits whole
//! batches with one fsync (group commit) and then calls every batch's callback. The callback is the
//! only place an acknowledgement may come from: *nothing is acknowledged before it is durable*.
//! Batches from one submitter commit in submission order, so an empty batch is a barrier: its
//! callback runs after everything submitted before it is durable.
//!
//! Reads are synchronous point and range reads of committed data.
//!
//! Rows have their own encoding: messages are stored as a format byte plus the protocol's message
//! encoding; group rows are hand-encoded (internal types are not `Serialize`).

mod embedded;

use std::fmt;

use piazza_protocol::{
    ChannelId, ClientMsgId, ConversationId, GroupId, MediaId, Message, ReceiptState, ScheduledPost,
    Seq, UserId,
};

pub use embedded::EmbeddedStorage;

/// Why a storage operation failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StorageError {
    /// The write queue is full: the node is overloaded. Retry later (the client gets
    /// `Unavailable`).
    #[error("storage queue is full")]
    Overloaded,
    /// The store is closed (the node is shutting down).
    #[error("storage is closed")]
    Closed,
    /// The engine failed (I/O error, corruption). Writes are refused from then on; an operator
    /// must look at the node.
    #[error("storage engine: {0}")]
    Engine(String),
    /// A stored row does not decode. Indicates corruption or a format bug.
    #[error("corrupt row in {table}: {reason}")]
    Corrupt {
        /// Which table.
        table: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl StorageError {
    /// The wire error for a request that failed because of this storage error. The one place
    /// storage errors become wire errors; unexpected ones are logged with the id the client sees.
    pub(crate) fn to_error_code(&self) -> piazza_protocol::ErrorCode {
        use piazza_protocol::ErrorCode;
        match self {
            StorageError::Overloaded => ErrorCode::unavailable("storage is busy, retry"),
            StorageError::Closed => ErrorCode::unavailable("node is shutting down"),
            StorageError::Engine(_) | StorageError::Corrupt { .. } => {
                crate::actors::conversation::internal_error("storage", self)
            }
        }
    }
}

/// Called once a submitted batch is durable, or failed. Runs on the writer thread: keep it short
/// and non-blocking (send a message, answer a reply port).
pub type CommitCallback = Box<dyn FnOnce(Result<(), StorageError>) + Send>;

/// The role of a group member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Created the group or received ownership.
    Owner,
    /// Moderator.
    Admin,
    /// Any other member.
    Member,
}

impl Role {
    /// The wire role.
    pub fn to_wire(self) -> piazza_protocol::GroupRole {
        match self {
            Role::Owner => piazza_protocol::GroupRole::Owner,
            Role::Admin => piazza_protocol::GroupRole::Admin,
            Role::Member => piazza_protocol::GroupRole::Member,
        }
    }

    /// From the wire role.
    pub fn from_wire(role: piazza_protocol::GroupRole) -> Role {
        match role {
            piazza_protocol::GroupRole::Owner => Role::Owner,
            piazza_protocol::GroupRole::Admin => Role::Admin,
            piazza_protocol::GroupRole::Member => Role::Member,
        }
    }

    fn to_byte(self) -> u8 {
        match self {
            Role::Owner => 1,
            Role::Member => 2,
            Role::Admin => 3,
        }
    }

    fn from_byte(byte: u8) -> Result<Role, StorageError> {
        match byte {
            1 => Ok(Role::Owner),
            2 => Ok(Role::Member),
            3 => Ok(Role::Admin),
            other => Err(StorageError::Corrupt {
                table: "members",
                reason: format!("role {other}"),
            }),
        }
    }
}

/// What is stored about a group besides its members and messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRecord {
    /// Display name.
    pub name: String,
    /// The current owner.
    pub owner: UserId,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Description, possibly empty.
    pub description: String,
    /// Secret part of the current invite link, if one was created.
    pub invite_secret: Option<String>,
    /// Banned users, at most [`BANNED_MAX`].
    pub banned: Vec<UserId>,
    /// The group's picture.
    pub avatar: Option<MediaId>,
}

/// What is stored about a channel besides its subscribers (member rows) and posts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelRecord {
    /// Title.
    pub title: String,
    /// Description, possibly empty.
    pub description: String,
    /// The current owner.
    pub owner: UserId,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Whether new posts show their author.
    pub signed: bool,
    /// The channel's picture.
    pub avatar: Option<MediaId>,
}

/// A per-post counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterKind {
    /// Distinct viewers of a channel post (written by the channel's actor).
    Views,
    /// Comments in a post's thread (written by the thread's actor).
    Comments,
}

impl CounterKind {
    fn to_byte(self) -> u8 {
        match self {
            CounterKind::Views => 1,
            CounterKind::Comments => 2,
        }
    }
}

/// A scheduled post that is due, as the scheduler finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuePost {
    /// When it was due.
    pub at_ms: u64,
    /// The channel.
    pub channel: ChannelId,
    /// The post's id.
    pub client_msg_id: ClientMsgId,
}

/// Most banned users remembered per group (they live in the group row).
pub const BANNED_MAX: usize = 1000;

/// Tables of plain keyed rows, for state whose owner encodes its own keys and values (the
/// commerce layer: shop logs, the event outbox, sink delivery state). Keys sort bytewise; a
/// common prefix groups the rows of one owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KvTable {
    /// shop, entry seq → one applied shop input (the shop's state is a replay of these).
    ShopLog,
    /// shop, user → staff role: read by the actors of the shop's conversations.
    ShopStaff,
    /// shop, event seq → commerce event, written with the state change that produced it.
    Outbox,
    /// Delivery state of event sinks (cursors, pending retries), as the sinks encode it.
    Sinks,
    /// shop → the time (u64 big-endian ms) its next timer is due: the node wakes passivated
    /// shops by it.
    ShopWake,
}

impl KvTable {
    /// Every table, in a fixed order.
    pub const ALL: [KvTable; 5] = [
        KvTable::ShopLog,
        KvTable::ShopStaff,
        KvTable::Outbox,
        KvTable::Sinks,
        KvTable::ShopWake,
    ];

    /// The table's name (a keyspace name in the embedded store).
    pub fn name(self) -> &'static str {
        match self {
            KvTable::ShopLog => "shop_log",
            KvTable::ShopStaff => "shop_staff",
            KvTable::Outbox => "outbox",
            KvTable::Sinks => "sinks",
            KvTable::ShopWake => "shop_wake",
        }
    }
}

/// One keyed row: key and value.
pub type KvRow = (Vec<u8>, Vec<u8>);

/// Most rows one [`Storage::kv_scan`] returns.
pub const KV_SCAN_MAX: usize = 10_000;

/// One write in a batch.
#[derive(Clone, Debug)]
pub enum Write {
    /// Set a keyed row.
    Put {
        /// The table.
        table: KvTable,
        /// The row's key.
        key: Vec<u8>,
        /// Its value.
        value: Vec<u8>,
    },
    /// Remove a keyed row (nothing happens if it is absent).
    Delete {
        /// The table.
        table: KvTable,
        /// The row's key.
        key: Vec<u8>,
    },
    /// Append a message at its seq.
    Message(Message),
    /// Create a group.
    Group {
        /// The group.
        id: GroupId,
        /// Its record.
        record: GroupRecord,
    },
    /// Add `user` to a conversation: member list (groups) and the user's conversation index.
    AddMember {
        /// The conversation.
        conversation: ConversationId,
        /// The user.
        user: UserId,
        /// Their role.
        role: Role,
    },
    /// Remove `user` from a conversation and from their index.
    RemoveMember {
        /// The conversation.
        conversation: ConversationId,
        /// The user.
        user: UserId,
    },
    /// Record that a user takes part in a conversation (direct conversations have no member list:
    /// the id names both sides).
    IndexConversation {
        /// The user.
        user: UserId,
        /// The conversation.
        conversation: ConversationId,
    },
    /// Record (or remove) `user`'s reaction `emoji` on message `target`.
    Reaction {
        /// The conversation.
        conversation: ConversationId,
        /// The message.
        target: Seq,
        /// The emoji.
        emoji: String,
        /// Who.
        user: UserId,
        /// Added or removed.
        added: bool,
    },
    /// Pin or unpin message `target`.
    Pin {
        /// The conversation.
        conversation: ConversationId,
        /// The message.
        target: Seq,
        /// Pinned or not.
        pinned: bool,
    },
    /// A member's receipt positions.
    Receipt {
        /// The conversation.
        conversation: ConversationId,
        /// The member.
        user: UserId,
        /// Highest delivered seq.
        delivered: Seq,
        /// Highest read seq.
        read: Seq,
    },
    /// Record that a message of `conversation` references blob `media`, so its readers may
    /// download it.
    MediaRef {
        /// The blob.
        media: MediaId,
        /// The conversation.
        conversation: ConversationId,
    },
    /// Create or update a channel.
    Channel {
        /// The channel.
        id: ChannelId,
        /// Its record.
        record: ChannelRecord,
    },
    /// Schedule a post (and index it by due time).
    Schedule {
        /// The channel.
        channel: ChannelId,
        /// The post.
        post: ScheduledPost,
    },
    /// Remove a scheduled post (published or cancelled).
    Unschedule {
        /// The channel.
        channel: ChannelId,
        /// The post's id.
        client_msg_id: ClientMsgId,
        /// Its due time (the index key).
        at_ms: u64,
    },
    /// Record that `user` viewed post `post`.
    View {
        /// The channel's conversation.
        conversation: ConversationId,
        /// The post.
        post: Seq,
        /// Who.
        user: UserId,
    },
    /// Set a per-post counter.
    Counter {
        /// The channel's conversation.
        conversation: ConversationId,
        /// The post.
        post: Seq,
        /// Which counter.
        kind: CounterKind,
        /// Its new value.
        value: u64,
    },
}

/// The storage adapter interface. The embedded adapter is the single-node default; a PostgreSQL
/// adapter serves clusters later.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Queues a batch; `done` runs exactly once: when the batch is durable or failed. If the batch
    /// cannot be queued ([`StorageError::Overloaded`] when the queue is full,
    /// [`StorageError::Closed`], or an unhealthy store), `done` is called at once with the error and
    /// the error is also returned.
    fn submit(&self, writes: Vec<Write>, done: CommitCallback) -> Result<(), StorageError>;

    /// A group's record, if the group exists.
    fn group(&self, id: GroupId) -> Result<Option<GroupRecord>, StorageError>;

    /// Up to `max` members of a conversation, with roles.
    fn members(
        &self,
        conversation: &ConversationId,
        max: usize,
    ) -> Result<Vec<(UserId, Role)>, StorageError>;

    /// The highest stored seq of a conversation (`Seq::ZERO` if it has no messages).
    fn last_seq(&self, conversation: &ConversationId) -> Result<Seq, StorageError>;

    /// One message, if stored.
    fn message(
        &self,
        conversation: &ConversationId,
        seq: Seq,
    ) -> Result<Option<Message>, StorageError>;

    /// Whether `user` has reacted to message `target` with `emoji`.
    fn has_reacted(
        &self,
        conversation: &ConversationId,
        target: Seq,
        emoji: &str,
        user: &UserId,
    ) -> Result<bool, StorageError>;

    /// Pinned messages of a conversation, oldest pin first, at most `max`.
    fn pinned(&self, conversation: &ConversationId, max: usize) -> Result<Vec<Seq>, StorageError>;

    /// Up to `limit` messages with seq below `before` (or the newest), in ascending seq, and
    /// whether older ones exist.
    fn messages_before(
        &self,
        conversation: &ConversationId,
        before: Option<Seq>,
        limit: usize,
    ) -> Result<(Vec<Message>, bool), StorageError>;

    /// Up to `limit` messages with seq above `after`, in ascending seq, and whether more exist.
    fn messages_after(
        &self,
        conversation: &ConversationId,
        after: Seq,
        limit: usize,
    ) -> Result<(Vec<Message>, bool), StorageError>;

    /// Up to `max` conversations `user` takes part in, in id order, starting after `after`.
    fn user_conversations(
        &self,
        user: &UserId,
        after: Option<&ConversationId>,
        max: usize,
    ) -> Result<Vec<ConversationId>, StorageError>;

    /// Receipt positions of a conversation's members.
    fn receipts(&self, conversation: &ConversationId) -> Result<Vec<ReceiptState>, StorageError>;

    /// False once a commit has failed: the node is no longer ready.
    fn is_healthy(&self) -> bool;

    /// Whether a message of `conversation` references blob `media`.
    fn media_referenced(
        &self,
        media: &MediaId,
        conversation: &ConversationId,
    ) -> Result<bool, StorageError>;

    /// A channel's record, if the channel exists.
    fn channel(&self, id: ChannelId) -> Result<Option<ChannelRecord>, StorageError>;

    /// `user`'s role in a group or channel, if a member.
    fn member_role(
        &self,
        conversation: &ConversationId,
        user: &UserId,
    ) -> Result<Option<Role>, StorageError>;

    /// Up to `max` scheduled posts of a channel, in id order.
    fn scheduled(&self, channel: ChannelId, max: usize)
    -> Result<Vec<ScheduledPost>, StorageError>;

    /// Up to `max` scheduled posts of every channel due at or before `until_ms`, earliest
    /// first, and the due time of the next one after them, if any.
    fn due(&self, until_ms: u64, max: usize) -> Result<(Vec<DuePost>, Option<u64>), StorageError>;

    /// Whether `user` viewed post `post` of `conversation`.
    fn has_viewed(
        &self,
        conversation: &ConversationId,
        post: Seq,
        user: &UserId,
    ) -> Result<bool, StorageError>;

    /// A per-post counter (zero if never set).
    fn counter(
        &self,
        conversation: &ConversationId,
        post: Seq,
        kind: CounterKind,
    ) -> Result<u64, StorageError>;

    /// A keyed row, if present.
    fn kv_get(&self, table: KvTable, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Up to `max` (at most [`KV_SCAN_MAX`]) rows whose key starts with `prefix`, in key order,
    /// starting after the key `after` if given; and whether more follow.
    fn kv_scan(
        &self,
        table: KvTable,
        prefix: &[u8],
        after: Option<&[u8]>,
        max: usize,
    ) -> Result<(Vec<KvRow>, bool), StorageError>;

    /// The row with the greatest key starting with `prefix`, if any.
    fn kv_last(&self, table: KvTable, prefix: &[u8]) -> Result<Option<KvRow>, StorageError>;

    /// Commits everything queued, stops the writer and waits for it. Blocking: call from a
    /// blocking context. Later submissions fail with [`StorageError::Closed`].
    fn close(&self) -> Result<(), StorageError>;
}

/// Format byte of message rows.
const MESSAGE_ROW_V1: u8 = 1;
/// Format byte of group rows: v1 held name, owner and creation time; v2 adds the description,
/// the invite secret and the ban list; v3 the avatar.
const GROUP_ROW_V1: u8 = 1;
const GROUP_ROW_V2: u8 = 2;
const GROUP_ROW_V3: u8 = 3;

fn encode_message_row(message: &Message) -> Result<Vec<u8>, StorageError> {
    let body = piazza_protocol::codec::encode(message).map_err(|e| StorageError::Corrupt {
        table: "messages",
        reason: e.to_string(),
    })?;
    let mut row = Vec::with_capacity(1 + body.len());
    row.push(MESSAGE_ROW_V1);
    row.extend_from_slice(&body);
    Ok(row)
}

fn decode_message_row(row: &[u8]) -> Result<Message, StorageError> {
    let corrupt = |reason: String| StorageError::Corrupt {
        table: "messages",
        reason,
    };
    match row.split_first() {
        Some((&MESSAGE_ROW_V1, body)) => {
            piazza_protocol::codec::decode(body, piazza_protocol::limits::FRAME_BYTES_MAX as usize)
                .map_err(|e| corrupt(e.to_string()))
        }
        Some((version, _)) => Err(corrupt(format!("unknown row format {version}"))),
        None => Err(corrupt("empty row".into())),
    }
}

fn encode_group_row(record: &GroupRecord) -> Vec<u8> {
    let mut row = Vec::with_capacity(64 + record.name.len() + record.description.len());
    row.push(GROUP_ROW_V3);
    row.extend_from_slice(&record.created_at_ms.to_be_bytes());
    put_str(&mut row, record.owner.as_str());
    put_str(&mut row, &record.name);
    put_str(&mut row, &record.description);
    put_str(&mut row, record.invite_secret.as_deref().unwrap_or(""));
    // The ban list is bounded by BANNED_MAX, which fits in u16.
    row.extend_from_slice(&(record.banned.len() as u16).to_be_bytes());
    for user in &record.banned {
        put_str(&mut row, user.as_str());
    }
    put_str(&mut row, record.avatar.as_ref().map_or("", MediaId::as_str));
    row
}

fn read_avatar(reader: &mut RowReader<'_>) -> Result<Option<MediaId>, StorageError> {
    let avatar = reader.string()?;
    if avatar.is_empty() {
        return Ok(None);
    }
    avatar
        .parse::<MediaId>()
        .map(Some)
        .map_err(|_| reader.corrupt("avatar media id"))
}

/// Reads a hand-encoded row front to back.
struct RowReader<'a> {
    rest: &'a [u8],
    table: &'static str,
}

impl<'a> RowReader<'a> {
    fn corrupt(&self, reason: &str) -> StorageError {
        StorageError::Corrupt {
            table: self.table,
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StorageError> {
        if self.rest.len() < n {
            return Err(self.corrupt("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, StorageError> {
        let bytes = self.take(2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn u64(&mut self) -> Result<u64, StorageError> {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(bytes))
    }

    fn string(&mut self) -> Result<String, StorageError> {
        let len = usize::from(self.u16()?);
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| self.corrupt("utf-8"))
    }

    fn user(&mut self) -> Result<UserId, StorageError> {
        self.string()?
            .parse::<UserId>()
            .map_err(|_| self.corrupt("user id"))
    }
}

fn decode_group_row(row: &[u8]) -> Result<GroupRecord, StorageError> {
    let (version, rest) = match row.split_first() {
        Some((&v @ (GROUP_ROW_V1 | GROUP_ROW_V2 | GROUP_ROW_V3), rest)) => (v, rest),
        _ => {
            return Err(StorageError::Corrupt {
                table: "groups",
                reason: "unknown row format".into(),
            });
        }
    };
    let mut reader = RowReader {
        rest,
        table: "groups",
    };
    let created_at_ms = reader.u64()?;
    let owner = reader.user()?;
    let name = reader.string()?;
    let mut record = GroupRecord {
        name,
        owner,
        created_at_ms,
        description: String::new(),
        invite_secret: None,
        banned: Vec::new(),
        avatar: None,
    };
    if version >= GROUP_ROW_V2 {
        record.description = reader.string()?;
        let secret = reader.string()?;
        record.invite_secret = (!secret.is_empty()).then_some(secret);
        let count = usize::from(reader.u16()?);
        if count > BANNED_MAX {
            return Err(reader.corrupt("ban list over its limit"));
        }
        for _ in 0..count {
            record.banned.push(reader.user()?);
        }
    }
    if version >= GROUP_ROW_V3 {
        record.avatar = read_avatar(&mut reader)?;
    }
    Ok(record)
}

/// Format byte of channel rows.
const CHANNEL_ROW_V1: u8 = 1;
/// Format byte of scheduled-post rows.
const SCHEDULED_ROW_V1: u8 = 1;

fn put_str(row: &mut Vec<u8>, text: &str) {
    // Every string in a hand-encoded row is bounded below 64 KiB by protocol limits
    // (TEXT_BYTES_MAX is 16 KiB).
    row.extend_from_slice(&(text.len() as u16).to_be_bytes());
    row.extend_from_slice(text.as_bytes());
}

fn encode_channel_row(record: &ChannelRecord) -> Vec<u8> {
    let mut row = Vec::with_capacity(32 + record.title.len() + record.description.len());
    row.push(CHANNEL_ROW_V1);
    row.extend_from_slice(&record.created_at_ms.to_be_bytes());
    row.push(u8::from(record.signed));
    put_str(&mut row, record.owner.as_str());
    put_str(&mut row, &record.title);
    put_str(&mut row, &record.description);
    put_str(&mut row, record.avatar.as_ref().map_or("", MediaId::as_str));
    row
}

fn decode_channel_row(row: &[u8]) -> Result<ChannelRecord, StorageError> {
    let mut reader = RowReader {
        rest: row,
        table: "channels",
    };
    if reader.take(1)? != [CHANNEL_ROW_V1] {
        return Err(reader.corrupt("unknown row format"));
    }
    let created_at_ms = reader.u64()?;
    let signed = match reader.take(1)? {
        [0] => false,
        [1] => true,
        _ => return Err(reader.corrupt("signed flag")),
    };
    Ok(ChannelRecord {
        owner: reader.user()?,
        title: reader.string()?,
        description: reader.string()?,
        avatar: read_avatar(&mut reader)?,
        created_at_ms,
        signed,
    })
}

fn encode_scheduled_row(post: &ScheduledPost) -> Vec<u8> {
    let mut row = Vec::with_capacity(16 + post.text.len());
    row.push(SCHEDULED_ROW_V1);
    row.extend_from_slice(&post.at_ms.to_be_bytes());
    put_str(&mut row, post.author.as_str());
    put_str(&mut row, &post.text);
    row
}

fn decode_scheduled_row(
    client_msg_id: ClientMsgId,
    row: &[u8],
) -> Result<ScheduledPost, StorageError> {
    let mut reader = RowReader {
        rest: row,
        table: "scheduled",
    };
    if reader.take(1)? != [SCHEDULED_ROW_V1] {
        return Err(reader.corrupt("unknown row format"));
    }
    Ok(ScheduledPost {
        client_msg_id,
        at_ms: reader.u64()?,
        author: reader.user()?,
        text: reader.string()?,
    })
}

#[cfg(test)]
mod tests;
