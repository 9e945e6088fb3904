//! [`Client`]: the SDK's entry point. One method per request, each a thin wrapper that builds the
//! wire [`Request`], sends it on its own stream (retrying across a reconnect when that is safe)
//! and returns the payload of the wire [`Response`].

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use piazza_protocol::limits::{
    CLIENT_MSG_ID_BYTES_MAX, DATAGRAM_BYTES_MAX, SYNC_CURSORS_MAX, SYNC_MESSAGES_MAX,
};
use piazza_protocol::{
    ClientMsgId, ConversationId, ConversationRef, Datagram, DeviceId, ErrorCode, GroupId,
    GroupInfo, GroupRole, HistoryPage, Member, Message, PresenceState, ReceiptKind, ReceiptState,
    Request, Response, SendAck, Seq, SyncCursor, UserId, codec,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tracing::{Instrument, debug, info_span, warn};

use crate::config::{ClientConfig, EventStart};
use crate::cursors::Cursors;
use crate::driver::{self, DriverParts, EVENT_QUEUE_CAPACITY, LinkState, SYNC_ROUNDS_MAX};
use crate::error::ClientError;
use crate::transport::{self, Settings};

/// A connection to a Piazza node, kept alive and re-established in the background.
///
/// All methods take `&self`: share a client between tasks with an `Arc`. Requests run
/// concurrently, each on its own QUIC stream with the configured deadline.
///
/// **Reconnects.** If the connection drops, a request in flight that is safe to repeat (a send
/// with its `client_msg_id`, reads, receipts) waits for the background task to reconnect and is
/// sent again; group creation and leaving are not repeated and fail with
/// [`ClientError::ConnectionLost`]. After the reconnect budget ([`crate::ReconnectPolicy`]) is
/// spent, the client is closed: requests fail and [`Client::next_event`] returns `None`.
///
/// Dropping the client closes the connection in the background; [`Client::close`] does it and
/// waits (briefly) until the node has been told.
#[derive(Debug)]
pub struct Client {
    user: UserId,
    settings: Arc<Settings>,
    endpoint: quinn::Endpoint,
    link: watch::Receiver<LinkState>,
    /// Behind an async mutex so that `next_event` can take `&self`; only one task can usefully
    /// wait on the event stream anyway.
    events: tokio::sync::Mutex<mpsc::Receiver<ClientEvent>>,
    cursors: Arc<Mutex<Cursors>>,
    shutdown: oneshot::Sender<()>,
    driver: JoinHandle<()>,
    msg_ids: MsgIds,
}

/// Something the node told this client without being asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// A new message in one of the user's conversations, the user's own included (sent from any
    /// device). Delivered once, in sequence order within its conversation.
    Message(Message),
    /// A member's delivered or read position moved.
    Receipt {
        /// Which conversation.
        conversation: ConversationId,
        /// Whose position.
        user: UserId,
        /// Delivered or read.
        kind: ReceiptKind,
        /// Up to and including this seq.
        seq: Seq,
    },
    /// Someone started or stopped typing. Best effort: these can be lost or arrive late.
    Typing {
        /// Which conversation.
        conversation: ConversationId,
        /// Who.
        user: UserId,
        /// Started (true) or stopped (false).
        active: bool,
    },
    /// A watched user came online or went offline. Best effort, like typing.
    Presence(PresenceState),
    /// The connection was lost and is back (possibly to another node). Messages missed meanwhile
    /// follow this event, before live ones.
    Reconnected {
        /// The node now serving the client.
        node: String,
    },
}

/// Whether a request may be sent again after the connection broke while it was in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    /// Repeating it has the same effect as sending it once.
    Safe,
    /// Repeating it could act twice; report the loss instead.
    Never,
}

/// Most times one request is sent: the first attempt plus retries after reconnects. A request cut
/// off by three consecutive connection losses reports the loss instead of looping.
const REQUEST_ATTEMPTS_MAX: u32 = 3;

/// How long [`Client::close`] waits for the background task and for the close to reach the node.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Longest device prefix in a generated `client_msg_id`, leaving room for the separators, the
/// 16-digit salt and a 20-digit counter within [`CLIENT_MSG_ID_BYTES_MAX`].
const MSG_ID_DEVICE_PREFIX_BYTES_MAX: usize = CLIENT_MSG_ID_BYTES_MAX - 2 - 16 - 20;

impl Client {
    /// Connects to the node, authenticates with `Hello`, and starts the background task.
    ///
    /// With [`EventStart::Now`] (the default) it also asks the node for the newest seq of each
    /// of the user's conversations (`Heads`, no message bodies) to start its cursors there.
    ///
    /// The first connection is not retried: an unreachable node or a refused token is reported
    /// here, and the caller decides. Reconnecting applies to connections lost later.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let settings = Arc::new(Settings::from_config(&config)?);
        let endpoint = transport::bind(&settings).await?;
        let link = transport::open(&endpoint, &settings).await?;

        let (cursors, tracking, initial_sync) = match &config.events {
            EventStart::Now => {
                let mut cursors = Cursors::new();
                baseline(&link.connection, &mut cursors, &settings).await?;
                (cursors, true, false)
            }
            EventStart::Beginning => (Cursors::new(), true, true),
            EventStart::After(list) => (Cursors::from_sync_cursors(list), true, true),
            EventStart::Off => (Cursors::new(), false, false),
        };
        let cursors = Arc::new(Mutex::new(cursors));
        let (link_tx, link_rx) = watch::channel(LinkState::Up {
            generation: 0,
            link: link.clone(),
        });
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE_CAPACITY);
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let span = info_span!("piazza_client", user = %link.user, device = %settings.device);
        let driver = tokio::spawn(
            driver::run(DriverParts {
                settings: Arc::clone(&settings),
                endpoint: endpoint.clone(),
                link: link.clone(),
                link_tx,
                events_tx,
                cursors: Arc::clone(&cursors),
                tracking,
                initial_sync,
                shutdown: shutdown_rx,
            })
            .instrument(span),
        );
        Ok(Client {
            msg_ids: MsgIds::new(&settings.device),
            user: link.user,
            settings,
            endpoint,
            link: link_rx,
            events: tokio::sync::Mutex::new(events_rx),
            cursors,
            shutdown: shutdown_tx,
            driver,
        })
    }

    /// The authenticated user (the token's subject).
    pub fn user(&self) -> &UserId {
        &self.user
    }

    /// This client's device id.
    pub fn device(&self) -> &DeviceId {
        &self.settings.device
    }

    /// The node serving the client now, or `None` while reconnecting or after closing.
    pub fn node(&self) -> Option<String> {
        match &*self.link.borrow() {
            LinkState::Up { link, .. } => Some(link.node.clone()),
            LinkState::Reconnecting | LinkState::Closed(_) => None,
        }
    }

    /// A fresh `client_msg_id`, unique across this process and (with overwhelming probability)
    /// across processes of the same device. Useful to retry a send yourself after a timeout: send
    /// again with the same id and the node answers with the original ack.
    pub fn new_client_msg_id(&self) -> ClientMsgId {
        self.msg_ids.next()
    }

    /// Sends a text message and returns the ack once the node has stored it durably.
    ///
    /// Without `client_msg_id` one is generated. If the connection drops, the send is repeated
    /// on the new connection with the same id; `ack.duplicate` is then true if the first attempt
    /// had in fact been stored.
    pub async fn send(
        &self,
        conversation: ConversationRef,
        text: impl Into<String>,
        client_msg_id: Option<ClientMsgId>,
    ) -> Result<SendAck, ClientError> {
        let request = Request::Send {
            conversation,
            client_msg_id: client_msg_id.unwrap_or_else(|| self.new_client_msg_id()),
            text: text.into(),
        };
        match self.call(request, Retry::Safe).await? {
            Response::Ack(ack) => Ok(ack),
            other => Err(transport::unexpected("send", &other)),
        }
    }

    /// A page of a conversation's history, oldest first: up to `limit` (1..=100) messages before
    /// seq `before` (`None`: the newest). `page.more` says whether older ones exist.
    pub async fn history(
        &self,
        conversation: ConversationRef,
        before: Option<Seq>,
        limit: u32,
    ) -> Result<HistoryPage, ClientError> {
        let request = Request::History {
            conversation,
            before,
            limit,
        };
        match self.call(request, Retry::Safe).await? {
            Response::History(page) => Ok(page),
            other => Err(transport::unexpected("history", &other)),
        }
    }

    /// Every message after `cursors` in all the user's conversations (conversations not named:
    /// from the start), grouped by conversation in ascending seq. Asks again while the node has
    /// more, up to 100,000 messages per call; call again from the advanced cursors for the rest.
    ///
    /// This is a plain request: it does not change what [`Client::next_event`] delivers.
    pub async fn sync(&self, cursors: &[SyncCursor]) -> Result<Vec<Message>, ClientError> {
        if cursors.len() > SYNC_CURSORS_MAX {
            return Err(ClientError::Invalid(ErrorCode::TooLarge {
                what: "cursors".into(),
                limit: SYNC_CURSORS_MAX as u64,
            }));
        }
        let mut tracker = Cursors::from_sync_cursors(cursors);
        let mut messages = Vec::new();
        for _ in 0..SYNC_ROUNDS_MAX {
            let request = Request::Sync {
                cursors: tracker.sync_cursors(),
                limit: SYNC_MESSAGES_MAX,
            };
            let batch = match self.call(request, Retry::Safe).await? {
                Response::Sync(batch) => batch,
                other => return Err(transport::unexpected("sync", &other)),
            };
            let step = tracker.handle_sync_batch(batch);
            messages.extend(step.fresh);
            if step.stalled {
                warn!("sync returned nothing new but claims more; stopping");
            }
            if !step.more {
                return Ok(messages);
            }
        }
        warn!(
            messages = messages.len(),
            "sync stopped after {SYNC_ROUNDS_MAX} rounds"
        );
        Ok(messages)
    }

    /// Marks messages up to and including `seq` as delivered to or read by this user.
    pub async fn receipt(
        &self,
        conversation: ConversationId,
        seq: Seq,
        kind: ReceiptKind,
    ) -> Result<(), ClientError> {
        let request = Request::Receipt {
            conversation,
            seq,
            kind,
        };
        match self.call(request, Retry::Safe).await? {
            Response::Done => Ok(()),
            other => Err(transport::unexpected("receipt", &other)),
        }
    }

    /// Where every member of a conversation stands (delivered and read seqs).
    pub async fn receipts(
        &self,
        conversation: ConversationRef,
    ) -> Result<Vec<ReceiptState>, ClientError> {
        let request = Request::Receipts { conversation };
        match self.call(request, Retry::Safe).await? {
            Response::Receipts(states) => Ok(states),
            other => Err(transport::unexpected("receipts", &other)),
        }
    }

    /// Creates a group owned by this user with the given other members, and returns its
    /// conversation (a [`ConversationId::Group`]). Not retried after a lost connection.
    pub async fn create_group(
        &self,
        name: impl Into<String>,
        members: Vec<UserId>,
    ) -> Result<ConversationId, ClientError> {
        let request = Request::CreateGroup {
            name: name.into(),
            members,
        };
        match self.call(request, Retry::Never).await? {
            Response::GroupCreated { conversation } => Ok(conversation),
            other => Err(transport::unexpected("create_group", &other)),
        }
    }

    /// Sends a text that replies to (quotes) message `reply_to` of the same conversation.
    pub async fn reply(
        &self,
        conversation: ConversationRef,
        reply_to: Seq,
        text: impl Into<String>,
        client_msg_id: Option<ClientMsgId>,
    ) -> Result<SendAck, ClientError> {
        let request = Request::Reply {
            conversation,
            client_msg_id: client_msg_id.unwrap_or_else(|| self.new_client_msg_id()),
            reply_to,
            text: text.into(),
        };
        self.ack_call("reply", request).await
    }

    /// Edits the text of one's own message (within the node's edit window). The ack is that of
    /// the update entry appended to the conversation.
    pub async fn edit(
        &self,
        conversation: ConversationRef,
        target: Seq,
        text: impl Into<String>,
    ) -> Result<SendAck, ClientError> {
        let request = Request::Edit {
            conversation,
            client_msg_id: self.new_client_msg_id(),
            target,
            text: text.into(),
        };
        self.ack_call("edit", request).await
    }

    /// Deletes a message for everyone (one's own within the edit window; any, as a group owner).
    pub async fn delete(
        &self,
        conversation: ConversationRef,
        target: Seq,
    ) -> Result<SendAck, ClientError> {
        let request = Request::Delete {
            conversation,
            client_msg_id: self.new_client_msg_id(),
            target,
        };
        self.ack_call("delete", request).await
    }

    /// Adds (`add`) or removes a reaction. `None` when nothing changed (already reacted, or no
    /// reaction to remove).
    pub async fn react(
        &self,
        conversation: ConversationRef,
        target: Seq,
        emoji: impl Into<String>,
        add: bool,
    ) -> Result<Option<SendAck>, ClientError> {
        let request = Request::React {
            conversation,
            client_msg_id: self.new_client_msg_id(),
            target,
            emoji: emoji.into(),
            add,
        };
        self.optional_ack_call("react", request).await
    }

    /// Pins or unpins a message. `None` when nothing changed.
    pub async fn pin(
        &self,
        conversation: ConversationRef,
        target: Seq,
        pinned: bool,
    ) -> Result<Option<SendAck>, ClientError> {
        let request = Request::Pin {
            conversation,
            client_msg_id: self.new_client_msg_id(),
            target,
            pinned,
        };
        self.optional_ack_call("pin", request).await
    }

    /// Forwards message `seq` of `from` into `to`; the copy names its original sender and place.
    pub async fn forward(
        &self,
        from: ConversationRef,
        seq: Seq,
        to: ConversationRef,
    ) -> Result<SendAck, ClientError> {
        let request = Request::Forward {
            from,
            seq,
            to,
            client_msg_id: self.new_client_msg_id(),
        };
        self.ack_call("forward", request).await
    }

    /// The pinned messages of a conversation, oldest pin first.
    pub async fn pinned(&self, conversation: ConversationRef) -> Result<Vec<Message>, ClientError> {
        match self
            .call(Request::Pinned { conversation }, Retry::Safe)
            .await?
        {
            Response::Pinned(messages) => Ok(messages),
            other => Err(transport::unexpected("pinned", &other)),
        }
    }

    /// Adds users to a group (owner and admins). Not retried after a lost connection.
    pub async fn invite(&self, group: GroupId, users: Vec<UserId>) -> Result<(), ClientError> {
        self.done_call(
            "invite",
            Request::InviteMembers { group, users },
            Retry::Never,
        )
        .await
    }

    /// Creates a new invite link for a group, invalidating the previous one.
    pub async fn create_invite_link(&self, group: GroupId) -> Result<String, ClientError> {
        match self
            .call(Request::CreateInviteLink { group }, Retry::Never)
            .await?
        {
            Response::InviteLink { link } => Ok(link),
            other => Err(transport::unexpected("create_invite_link", &other)),
        }
    }

    /// Joins a group with an invite link; joining twice is harmless, so it is retried.
    pub async fn join_by_link(
        &self,
        link: impl Into<String>,
    ) -> Result<ConversationId, ClientError> {
        match self
            .call(Request::JoinByLink { link: link.into() }, Retry::Safe)
            .await?
        {
            Response::GroupJoined { conversation } => Ok(conversation),
            other => Err(transport::unexpected("join_by_link", &other)),
        }
    }

    /// Removes (and optionally bans) a member.
    pub async fn remove_member(
        &self,
        group: GroupId,
        user: UserId,
        ban: bool,
    ) -> Result<(), ClientError> {
        self.done_call(
            "remove_member",
            Request::RemoveMember { group, user, ban },
            Retry::Never,
        )
        .await
    }

    /// Lifts a ban.
    pub async fn unban(&self, group: GroupId, user: UserId) -> Result<(), ClientError> {
        self.done_call("unban", Request::Unban { group, user }, Retry::Never)
            .await
    }

    /// Changes a member's role (owner only); `Owner` transfers ownership.
    pub async fn set_role(
        &self,
        group: GroupId,
        user: UserId,
        role: GroupRole,
    ) -> Result<(), ClientError> {
        self.done_call(
            "set_role",
            Request::SetRole { group, user, role },
            Retry::Never,
        )
        .await
    }

    /// Changes a group's title and/or description.
    pub async fn update_group_info(
        &self,
        group: GroupId,
        title: Option<String>,
        description: Option<String>,
    ) -> Result<(), ClientError> {
        let request = Request::UpdateGroupInfo {
            group,
            title,
            description,
        };
        self.done_call("update_group_info", request, Retry::Never)
            .await
    }

    /// A group's profile.
    pub async fn group_info(&self, group: GroupId) -> Result<GroupInfo, ClientError> {
        match self.call(Request::GroupInfo { group }, Retry::Safe).await? {
            Response::GroupInfo(info) => Ok(info),
            other => Err(transport::unexpected("group_info", &other)),
        }
    }

    /// One page of a group's members, in user-id order, after `after`; and whether more follow.
    pub async fn members(
        &self,
        group: GroupId,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<(Vec<Member>, bool), ClientError> {
        match self
            .call(
                Request::Members {
                    group,
                    after,
                    limit,
                },
                Retry::Safe,
            )
            .await?
        {
            Response::Members { members, more } => Ok((members, more)),
            other => Err(transport::unexpected("members", &other)),
        }
    }

    async fn done_call(
        &self,
        what: &str,
        request: Request,
        retry: Retry,
    ) -> Result<(), ClientError> {
        match self.call(request, retry).await? {
            Response::Done => Ok(()),
            other => Err(transport::unexpected(what, &other)),
        }
    }

    /// A request answered with an ack. Safe to retry: the `client_msg_id` deduplicates it.
    async fn ack_call(&self, what: &str, request: Request) -> Result<SendAck, ClientError> {
        match self.call(request, Retry::Safe).await? {
            Response::Ack(ack) => Ok(ack),
            other => Err(transport::unexpected(what, &other)),
        }
    }

    async fn optional_ack_call(
        &self,
        what: &str,
        request: Request,
    ) -> Result<Option<SendAck>, ClientError> {
        match self.call(request, Retry::Safe).await? {
            Response::Ack(ack) => Ok(Some(ack)),
            Response::Done => Ok(None),
            other => Err(transport::unexpected(what, &other)),
        }
    }

    /// Leaves a group. Not retried after a lost connection.
    pub async fn leave_group(&self, group: GroupId) -> Result<(), ClientError> {
        match self
            .call(Request::LeaveGroup { group }, Retry::Never)
            .await?
        {
            Response::Done => Ok(()),
            other => Err(transport::unexpected("leave_group", &other)),
        }
    }

    /// Tells the other members that this user started (`true`) or stopped typing. A datagram:
    /// best effort, never retried, and an error only if there is no connection right now.
    pub fn typing(&self, conversation: ConversationId, active: bool) -> Result<(), ClientError> {
        let datagram = Datagram::Typing {
            conversation,
            // Replaced by the node with the authenticated user; sent for completeness.
            user: self.user.clone(),
            active,
        };
        let body = codec::encode(&datagram)
            .map_err(|e| ClientError::Protocol(format!("cannot encode typing: {e}")))?;
        if body.len() > DATAGRAM_BYTES_MAX as usize {
            return Err(ClientError::Invalid(ErrorCode::TooLarge {
                what: "datagram".into(),
                limit: u64::from(DATAGRAM_BYTES_MAX),
            }));
        }
        let connection = match &*self.link.borrow() {
            LinkState::Up { link, .. } => link.connection.clone(),
            LinkState::Reconnecting => {
                return Err(ClientError::ConnectionLost("reconnecting".into()));
            }
            LinkState::Closed(error) => return Err(error.clone()),
        };
        transport::send_datagram(&connection, Bytes::from(body))
    }

    /// The next event, waiting for one. `None` once the client is closed (or gave up
    /// reconnecting) and every queued event was taken. Cancel-safe.
    pub async fn next_event(&self) -> Option<ClientEvent> {
        self.events.lock().await.recv().await
    }

    /// The next event if one is queued right now (or `None`, also while another task is inside
    /// [`Client::next_event`]).
    pub fn try_next_event(&self) -> Option<ClientEvent> {
        self.events.try_lock().ok()?.try_recv().ok()
    }

    /// The cursors of everything delivered by [`Client::next_event`] so far (more precisely: taken
    /// into the client's queue). Save them to resume later with
    /// [`EventStart::After`].
    pub fn cursors(&self) -> Vec<SyncCursor> {
        self.cursors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .sync_cursors()
    }

    /// Closes the connection and stops the background task, waiting at most about two seconds
    /// for the node to be told. Requests still running fail with [`ClientError::Closed`].
    pub async fn close(self) {
        let Client {
            link,
            shutdown,
            driver,
            endpoint,
            ..
        } = self;
        if let LinkState::Up { link, .. } = &*link.borrow() {
            transport::close_if_open(&link.connection, b"client closed");
        }
        // Either outcome is fine: `Err` means the task has already stopped.
        let _ = shutdown.send(());
        if timeout(CLOSE_WAIT, driver).await.is_err() {
            debug!("background task did not stop in time");
        }
        // Lets the close frame reach the node, so it sees a clean close rather than waiting for
        // the idle timeout.
        let _ = timeout(CLOSE_WAIT, endpoint.wait_idle()).await;
    }

    /// Sends a request, retrying it on a newer connection if the connection broke under it and
    /// `retry` allows. A `Response::Error` becomes [`ClientError::Server`].
    async fn call(&self, request: Request, retry: Retry) -> Result<Response, ClientError> {
        request.validate().map_err(ClientError::Invalid)?;
        let label = request.label();
        let mut lost_generation = None;
        for attempt in 1..=REQUEST_ATTEMPTS_MAX {
            let (generation, connection) = self.connection(lost_generation).await?;
            let answer =
                transport::round_trip(&connection, &request, self.settings.request_timeout).await;
            match answer {
                Ok(Response::Error(code)) => return Err(ClientError::Server(code)),
                Err(ClientError::ConnectionLost(why)) if retry == Retry::Never => {
                    return Err(ClientError::ConnectionLost(format!(
                        "{why}; the {label} request may or may not have taken effect"
                    )));
                }
                Err(ClientError::ConnectionLost(why)) => {
                    debug!(attempt, "{label} cut off ({why}); retrying after reconnect");
                    lost_generation = Some(generation);
                }
                other => return other,
            }
        }
        Err(ClientError::ConnectionLost(format!(
            "{label}: the connection was lost {REQUEST_ATTEMPTS_MAX} times while sending it"
        )))
    }

    /// The current connection, waiting for one newer than `lost_generation` if given.
    async fn connection(
        &self,
        lost_generation: Option<u64>,
    ) -> Result<(u64, quinn::Connection), ClientError> {
        let mut link = self.link.clone();
        // The background task settles every reconnect within its budget (each attempt bounded
        // by the request timeout); the margin covers the last attempt.
        let bound = self.settings.reconnect.give_up_after + 2 * self.settings.request_timeout;
        let ready = |state: &LinkState| match state {
            LinkState::Up { generation, .. } => {
                lost_generation.is_none_or(|lost| *generation > lost)
            }
            LinkState::Closed(_) => true,
            LinkState::Reconnecting => false,
        };
        let state = match timeout(bound, link.wait_for(ready)).await {
            Err(_) => {
                return Err(ClientError::ConnectionLost(
                    "reconnecting took too long".into(),
                ));
            }
            // The task is gone without publishing a final state (it panicked).
            Ok(Err(_)) => return Err(ClientError::Closed),
            Ok(Ok(state)) => state,
        };
        match &*state {
            LinkState::Up { generation, link } => Ok((*generation, link.connection.clone())),
            LinkState::Closed(error) => Err(error.clone()),
            LinkState::Reconnecting => Err(ClientError::Closed),
        }
    }
}

/// Moves the cursors to the newest stored message of every conversation, delivering nothing
/// ([`EventStart::Now`]).
async fn baseline(
    connection: &quinn::Connection,
    cursors: &mut Cursors,
    settings: &Settings,
) -> Result<(), ClientError> {
    let mut after = None;
    for _ in 0..SYNC_ROUNDS_MAX {
        let request = Request::Heads {
            after: after.clone(),
        };
        match transport::round_trip(connection, &request, settings.request_timeout).await? {
            Response::Heads { heads, more } => {
                for head in &heads {
                    cursors.advance_to(&head.conversation, head.seq);
                }
                match heads.last() {
                    Some(last) if more => after = Some(last.conversation.clone()),
                    _ => return Ok(()),
                }
            }
            Response::Error(code) => return Err(ClientError::Server(code)),
            other => return Err(transport::unexpected("heads", &other)),
        }
    }
    warn!("initial heads stopped after {SYNC_ROUNDS_MAX} rounds; older messages may be delivered");
    Ok(())
}

/// Generator of `client_msg_id`s: `<device prefix>-<salt>-<counter>`.
#[derive(Debug)]
struct MsgIds {
    prefix: String,
    /// Random per client, so two processes of the same device never collide (a collision would
    /// make the node answer the second message with the first one's ack and drop it).
    salt: u64,
    counter: AtomicU64,
}

impl MsgIds {
    fn new(device: &DeviceId) -> MsgIds {
        MsgIds {
            prefix: device_prefix(device),
            salt: random_salt(),
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self) -> ClientMsgId {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        client_msg_id(&self.prefix, self.salt, n)
    }
}

/// The device id cut to [`MSG_ID_DEVICE_PREFIX_BYTES_MAX`] bytes (device ids are ASCII, so any
/// cut is on a character boundary).
fn device_prefix(device: &DeviceId) -> String {
    device
        .as_str()
        .chars()
        .take(MSG_ID_DEVICE_PREFIX_BYTES_MAX)
        .collect()
}

fn client_msg_id(prefix: &str, salt: u64, counter: u64) -> ClientMsgId {
    let id = format!("{prefix}-{salt:016x}-{counter}");
    #[allow(clippy::expect_used)]
    // Holds: the prefix is at most MSG_ID_DEVICE_PREFIX_BYTES_MAX bytes of a device id (visible
    // ASCII), and the rest is hex and decimal digits and dashes within the remaining budget;
    // `generated_ids_are_valid_at_the_limits` checks the longest case.
    id.parse()
        .expect("generated client_msg_id is visible ASCII within the length limit")
}

/// 64 random bits from the standard library's randomly keyed hasher, mixed with the time and the
/// process id. Not cryptographic; only needs to make collisions between clients unlikely.
fn random_salt() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    hasher.finish()
}

mod channel;
mod media;
mod shop;
#[cfg(test)]
mod tests;

pub use self::media::{Downloaded, UploadProgress, Uploaded};
pub use self::shop::{Page, Posted, ProductFilter};
