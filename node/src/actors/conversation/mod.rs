//! The conversation actor: one per conversation, activated on demand on the node that owns its
//! key, passivated when idle. It owns the conversation's sequence: it runs the pure
//! [`core::ConversationCore`], persists what the core returns through group commit, and only in the
//! commit callback acknowledges the sender and hands the message to the relay for fan-out.
//!
//! Because callbacks run on the storage writer in commit order, acks and fan-out of one
//! conversation happen in seq order without the actor waiting for any commit.

mod channel;
pub(crate) mod core;
#[cfg(test)]
mod tests;

pub(crate) use channel::ChannelOp;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use piazza_protocol::{
    ClientMsgId, ConversationId, Datagram, ErrorCode, Event, HistoryPage, Message, ReceiptKind,
    Response, Seq, UserId, codec,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::task::JoinHandle;

use self::core::{Change, ConversationCore, Draft, Restored, SendOutcome};
use crate::actors::relay::RelayMsg;
use crate::node::NodeContext;
use crate::storage::{StorageError, Write};

/// Messages of a conversation actor. Every request carries its reply port and is answered exactly
/// once, with data (errors included).
#[derive(Debug)]
pub(crate) enum ConversationMsg {
    /// Append a new message.
    Send {
        sender: UserId,
        client_msg_id: ClientMsgId,
        draft: Draft,
        received: Instant,
        reply: RpcReplyPort<Response>,
    },
    /// Change an existing message (edit, delete, react, pin).
    Update {
        user: UserId,
        client_msg_id: ClientMsgId,
        target: Seq,
        change: UpdateRequest,
        reply: RpcReplyPort<Response>,
    },
    /// One message, for forwarding.
    Read {
        user: UserId,
        seq: Seq,
        reply: RpcReplyPort<Result<Message, ErrorCode>>,
    },
    /// Whether `user` may read this conversation (for media downloads).
    Authorize {
        user: UserId,
        reply: RpcReplyPort<Result<(), ErrorCode>>,
    },
    /// The pinned messages.
    Pinned {
        user: UserId,
        reply: RpcReplyPort<Response>,
    },
    /// Group administration and profile.
    Group {
        user: UserId,
        op: GroupOp,
        reply: RpcReplyPort<Response>,
    },
    /// A page of history.
    History {
        user: UserId,
        before: Option<Seq>,
        limit: u32,
        reply: RpcReplyPort<Response>,
    },
    /// Messages after `after`, for `Sync`.
    ReadAfter {
        user: UserId,
        after: Seq,
        limit: u32,
        reply: RpcReplyPort<Result<(Vec<Message>, bool), ErrorCode>>,
    },
    /// Move a receipt position.
    Receipt {
        user: UserId,
        seq: Seq,
        kind: ReceiptKind,
        reply: RpcReplyPort<Response>,
    },
    /// Receipt positions of every member.
    Receipts {
        user: UserId,
        reply: RpcReplyPort<Response>,
    },
    /// Create this group.
    Create {
        owner: UserId,
        name: String,
        members: Vec<UserId>,
        reply: RpcReplyPort<Response>,
    },
    /// Leave this group.
    Leave {
        user: UserId,
        reply: RpcReplyPort<Response>,
    },
    /// Channel administration, scheduled posts and post counters.
    Channel {
        user: UserId,
        op: ChannelOp,
        reply: RpcReplyPort<Response>,
    },
    /// Set or remove the picture of a group or channel (the blob was checked by the session).
    SetAvatar {
        user: UserId,
        media: Option<piazza_protocol::MediaInfo>,
        reply: RpcReplyPort<Response>,
    },
    /// The members whose presence `user` may watch here.
    PresenceTargets {
        user: UserId,
        reply: RpcReplyPort<Result<Vec<UserId>, ErrorCode>>,
    },
    /// A typing indicator to relay.
    Typing { user: UserId, active: bool },
    /// A commit of this conversation failed: restart from storage.
    CommitFailed,
    /// Periodic check for passivation.
    IdleCheck,
}

impl ConversationMsg {
    /// Answers the request with `code` without processing it (used when it cannot be delivered).
    pub(crate) fn fail(self, code: ErrorCode) {
        match self {
            ConversationMsg::Send { reply, .. }
            | ConversationMsg::Update { reply, .. }
            | ConversationMsg::Pinned { reply, .. }
            | ConversationMsg::Group { reply, .. }
            | ConversationMsg::Channel { reply, .. }
            | ConversationMsg::SetAvatar { reply, .. }
            | ConversationMsg::History { reply, .. }
            | ConversationMsg::Receipt { reply, .. }
            | ConversationMsg::Receipts { reply, .. }
            | ConversationMsg::Create { reply, .. }
            | ConversationMsg::Leave { reply, .. } => {
                let _ = reply.send(Response::Error(code));
            }
            ConversationMsg::ReadAfter { reply, .. } => {
                let _ = reply.send(Err(code));
            }
            ConversationMsg::Read { reply, .. } => {
                let _ = reply.send(Err(code));
            }
            ConversationMsg::Authorize { reply, .. } => {
                let _ = reply.send(Err(code));
            }
            ConversationMsg::PresenceTargets { reply, .. } => {
                let _ = reply.send(Err(code));
            }
            ConversationMsg::Typing { .. }
            | ConversationMsg::CommitFailed
            | ConversationMsg::IdleCheck => {}
        }
    }
}

impl ConversationMsg {
    /// The user a request comes from, if it carries one.
    fn user(&self) -> Option<&UserId> {
        match self {
            ConversationMsg::Send { sender: user, .. }
            | ConversationMsg::Update { user, .. }
            | ConversationMsg::Read { user, .. }
            | ConversationMsg::Authorize { user, .. }
            | ConversationMsg::PresenceTargets { user, .. }
            | ConversationMsg::Pinned { user, .. }
            | ConversationMsg::Group { user, .. }
            | ConversationMsg::Channel { user, .. }
            | ConversationMsg::SetAvatar { user, .. }
            | ConversationMsg::History { user, .. }
            | ConversationMsg::ReadAfter { user, .. }
            | ConversationMsg::Receipt { user, .. }
            | ConversationMsg::Receipts { user, .. }
            | ConversationMsg::Leave { user, .. }
            | ConversationMsg::Typing { user, .. } => Some(user),
            ConversationMsg::Create { owner, .. } => Some(owner),
            ConversationMsg::CommitFailed | ConversationMsg::IdleCheck => None,
        }
    }
}

/// A requested change, before the actor has looked up what it needs from storage.
#[derive(Clone, Debug)]
pub(crate) enum UpdateRequest {
    Edit {
        text: String,
    },
    Delete,
    React {
        emoji: String,
        add: bool,
    },
    Pin {
        pinned: bool,
    },
    /// The shop shows an order's new state in its order message.
    Order {
        order: Box<piazza_protocol::commerce::OrderView>,
    },
}

/// A group operation, checked by the core against the caller's role.
#[derive(Debug)]
pub(crate) enum GroupOp {
    Invite(Vec<UserId>),
    CreateLink,
    Join {
        secret: String,
    },
    Remove {
        user: UserId,
        ban: bool,
    },
    Unban(UserId),
    SetRole {
        user: UserId,
        role: piazza_protocol::GroupRole,
    },
    UpdateInfo {
        title: Option<String>,
        description: Option<String>,
    },
    Info,
    Members {
        after: Option<UserId>,
        limit: u32,
    },
}

/// The conversation actor.
#[derive(Debug)]
pub(crate) struct ConversationActor;

/// What a conversation actor starts from.
#[derive(Debug)]
pub(crate) struct ConversationArgs {
    pub(crate) id: ConversationId,
    pub(crate) ctx: Arc<NodeContext>,
}

/// State of a live conversation actor.
#[derive(Debug)]
pub(crate) struct ConversationState {
    core: ConversationCore,
    ctx: Arc<NodeContext>,
    /// Batches submitted and not yet committed; the actor passivates only at zero.
    in_flight: Arc<AtomicUsize>,
    last_active: Instant,
    ticker: JoinHandle<()>,
    /// Views per channel post, ahead of storage while view writes are in flight.
    views: HashMap<Seq, u64>,
    /// (post, viewer) pairs counted during this activation, so a viewer counts once even before
    /// their first view is durable.
    viewed: HashSet<(Seq, UserId)>,
    /// Message rows and reactions this actor rewrote, newer than storage while in flight.
    written: Written,
}

/// Rows an actor rewrote (message rows changed by edits, deletions, reactions; reaction marks),
/// read before storage so two changes to one message in quick succession never start from the
/// same committed row. Only this actor writes these rows, so an entry is never older than
/// storage; entries are dropped only when nothing is in flight.
#[derive(Debug, Default)]
struct Written {
    targets: HashMap<Seq, Message>,
    reacted: HashMap<(Seq, String, UserId), bool>,
}

/// Entries [`Written`] keeps before it forgets them (at a moment nothing is in flight).
const WRITTEN_REMEMBERED_MAX: usize = 1024;

impl Written {
    /// Records the rows of an update's writes. `idle`: nothing of this actor is in flight, so
    /// storage has everything remembered so far.
    fn remember(&mut self, writes: &[Write], idle: bool) {
        if idle && self.targets.len() + self.reacted.len() >= WRITTEN_REMEMBERED_MAX {
            self.targets.clear();
            self.reacted.clear();
        }
        for write in writes {
            match write {
                Write::Message(message) => {
                    self.targets.insert(message.seq, message.clone());
                }
                Write::Reaction {
                    target,
                    emoji,
                    user,
                    added,
                    ..
                } => {
                    self.reacted
                        .insert((*target, emoji.clone(), user.clone()), *added);
                }
                _ => {}
            }
        }
    }
}

impl Actor for ConversationActor {
    type Msg = ConversationMsg;
    type State = ConversationState;
    type Arguments = ConversationArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ConversationMsg>,
        args: ConversationArgs,
    ) -> Result<ConversationState, ActorProcessingErr> {
        let ConversationArgs { id, ctx } = args;
        // A previous activation of this conversation may still have writes queued: wait until
        // everything submitted so far is durable before reading state, or a seq could be reused.
        barrier(&ctx).await?;
        let limits = &ctx.config.limits;
        let storage = &ctx.storage;
        let mut restored = Restored::default();
        match &id {
            ConversationId::Group(g) => {
                restored.group = storage.group(*g)?;
                restored.members = storage.members(&id, limits.group_members_max)?;
            }
            ConversationId::Channel(c) => {
                restored.channel = storage.channel(*c)?;
                restored.members = storage.members(&id, limits.channel_subscribers_max)?;
                restored.scheduled =
                    storage.scheduled(*c, piazza_protocol::limits::SCHEDULED_POSTS_MAX)?;
            }
            ConversationId::Comments { channel, post } => {
                let channel_id = ConversationId::Channel(*channel);
                restored.post_exists = storage.channel(*channel)?.is_some()
                    && storage.message(&channel_id, *post)?.is_some_and(|m| {
                        matches!(
                            m.body,
                            piazza_protocol::MessageBody::Text(_)
                                | piazza_protocol::MessageBody::Media { .. }
                        )
                    });
                restored.comments =
                    storage.counter(&channel_id, *post, crate::storage::CounterKind::Comments)?;
                restored.members = storage.members(&id, limits.channel_subscribers_max)?;
            }
            ConversationId::Shop { shop, .. } => {
                restored.shop_staff = ctx.shops.staff(&ctx.storage, shop)?;
            }
            ConversationId::Direct { .. } => {}
        }
        restored.last_seq = storage.last_seq(&id)?;
        restored.recent = storage
            .messages_before(&id, None, limits.dedup_window_max)?
            .0;
        restored.receipts = storage.receipts(&id)?;
        restored.pinned = storage.pinned(&id, piazza_protocol::limits::PINNED_MAX)?;
        let core = ConversationCore::restore(id, restored, limits.dedup_window_max);

        let period = Duration::from_millis((limits.conversation_idle_ms / 2).max(10));
        let me = myself.clone();
        let ticker = tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.tick().await;
            loop {
                interval.tick().await;
                if me.send_message(ConversationMsg::IdleCheck).is_err() {
                    break;
                }
            }
        });
        ctx.conversations_active.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("piazza_actors_active", "kind" => "conversation").increment(1.0);
        metrics::counter!("piazza_actor_activations_total", "kind" => "conversation").increment(1);
        Ok(ConversationState {
            core,
            ctx,
            in_flight: Arc::new(AtomicUsize::new(0)),
            last_active: Instant::now(),
            ticker,
            views: HashMap::new(),
            viewed: HashSet::new(),
            written: Written::default(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ConversationMsg>,
        state: &mut ConversationState,
    ) -> Result<(), ActorProcessingErr> {
        state.ticker.abort();
        state
            .ctx
            .conversations_active
            .fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("piazza_actors_active", "kind" => "conversation").decrement(1.0);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ConversationMsg>,
        message: ConversationMsg,
        state: &mut ConversationState,
    ) -> Result<(), ActorProcessingErr> {
        if !matches!(message, ConversationMsg::IdleCheck) {
            state.last_active = Instant::now();
        }
        if let (Some(channel), Some(user)) = (state.core.comments_of(), message.user()) {
            // Who may read and write a comment thread is decided by the channel's member rows
            // (committed: a subscription is acknowledged only once durable).
            let role = state
                .ctx
                .storage
                .member_role(&ConversationId::Channel(channel), user)
                .map_err(|e| e.to_error_code());
            match role {
                Ok(role) => {
                    let user = user.clone();
                    state.core.note_channel_role(&user, role);
                }
                Err(code) => {
                    message.fail(code);
                    return Ok(());
                }
            }
        }
        if let Some((shop, _)) = state.core.shop_of() {
            // Who is on the shop's staff is the shop actor's to say: take its latest roster.
            match state.ctx.shops.staff(&state.ctx.storage, shop) {
                Ok(roster) => state.core.note_shop_staff(roster),
                Err(e) => {
                    message.fail(e.to_error_code());
                    return Ok(());
                }
            }
        }
        match message {
            ConversationMsg::Send {
                sender,
                client_msg_id,
                draft,
                received,
                reply,
            } => {
                let now = crate::node::now_ms();
                let notice = state.shop_notice(&sender, &draft, now);
                let outcome = state.core.handle_send(&sender, client_msg_id, draft, now);
                if let (Some(notice), Ok(SendOutcome::Append { message, .. })) = (notice, &outcome)
                {
                    // The shop answers first contacts and out-of-hours messages, and measures
                    // how long customers wait for staff.
                    let seq = message.seq;
                    let ctx = state.ctx.clone();
                    tokio::spawn(async move { ctx.notify_shop(notice.with_seq(seq)).await });
                }
                state.execute(&myself, outcome, received, reply);
            }
            ConversationMsg::Update {
                user,
                client_msg_id,
                target,
                change,
                reply,
            } => {
                let received = Instant::now();
                let outcome = state.handle_update(user, client_msg_id, target, change);
                match outcome {
                    Ok(None) => {
                        let _ = reply.send(Response::Done);
                    }
                    Ok(Some(outcome)) => state.execute(&myself, Ok(outcome), received, reply),
                    Err(code) => state.execute(&myself, Err(code), received, reply),
                }
            }
            ConversationMsg::Authorize { user, reply } => {
                let _ = reply.send(state.core.authorize(&user));
            }
            ConversationMsg::PresenceTargets { user, reply } => {
                let large = state.ctx.config.limits.group_large_members;
                let _ = reply.send(state.core.presence_targets(&user, large));
            }
            ConversationMsg::Read { user, seq, reply } => {
                let result = state.core.authorize(&user).and_then(|()| {
                    state
                        .ctx
                        .storage
                        .message(state.core.id(), seq)
                        .map_err(|e| e.to_error_code())?
                        .ok_or(ErrorCode::NotFound)
                });
                let _ = reply.send(result);
            }
            ConversationMsg::Group { user, op, reply } => {
                state.handle_group(&myself, user, op, reply)
            }
            ConversationMsg::Channel { user, op, reply } => {
                state.handle_channel(&myself, user, op, reply)
            }
            ConversationMsg::SetAvatar { user, media, reply } => {
                match state
                    .core
                    .handle_set_avatar(&user, media, crate::node::now_ms())
                {
                    Err(code) => {
                        let _ = reply.send(Response::Error(code));
                    }
                    Ok(None) => {
                        let _ = reply.send(Response::Done);
                    }
                    Ok(Some((writes, message))) => {
                        state.publish_change(&myself, writes, message, Response::Done, reply);
                    }
                }
            }
            ConversationMsg::Pinned { user, reply } => {
                let result = state.core.authorize(&user).and_then(|()| {
                    let mut messages = Vec::new();
                    for seq in state.core.pinned() {
                        let stored = state.ctx.storage.message(state.core.id(), *seq);
                        if let Some(message) = stored.map_err(|e| e.to_error_code())? {
                            messages.push(message);
                        }
                    }
                    Ok(messages)
                });
                let _ = reply.send(result.map_or_else(Response::Error, Response::Pinned));
            }
            ConversationMsg::History {
                user,
                before,
                limit,
                reply,
            } => {
                let result = state.core.authorize(&user).and_then(|()| {
                    let (messages, more) = state
                        .ctx
                        .storage
                        .messages_before(state.core.id(), before, limit as usize)
                        .map_err(|e| e.to_error_code())?;
                    Ok(HistoryPage {
                        conversation: state.core.id().clone(),
                        messages,
                        more,
                    })
                });
                let _ = reply.send(result.map_or_else(Response::Error, Response::History));
            }
            ConversationMsg::ReadAfter {
                user,
                after,
                limit,
                reply,
            } => {
                let result = state.core.authorize(&user).and_then(|()| {
                    state
                        .ctx
                        .storage
                        .messages_after(state.core.id(), after, limit as usize)
                        .map_err(|e| e.to_error_code())
                });
                let _ = reply.send(result);
            }
            ConversationMsg::Receipt {
                user,
                seq,
                kind,
                reply,
            } => {
                state.handle_receipt(&myself, user, seq, kind, reply);
            }
            ConversationMsg::Receipts { user, reply } => {
                let result = state.core.authorize(&user).and_then(|()| {
                    state
                        .ctx
                        .storage
                        .receipts(state.core.id())
                        .map_err(|e| e.to_error_code())
                });
                let _ = reply.send(result.map_or_else(Response::Error, Response::Receipts));
            }
            ConversationMsg::Create {
                owner,
                name,
                members,
                reply,
            } => {
                let now_ms = crate::node::now_ms();
                match state.core.handle_create(&owner, name, members, now_ms) {
                    Err(code) => {
                        let _ = reply.send(Response::Error(code));
                    }
                    Ok((writes, message)) => {
                        let conversation = state.core.id().clone();
                        let recipients = state.core.recipients();
                        state.persist_and_publish(
                            &myself,
                            writes,
                            message,
                            recipients,
                            move |res| {
                                let _ = reply.send(match res {
                                    Ok(()) => Response::GroupCreated { conversation },
                                    Err(code) => Response::Error(code),
                                });
                            },
                        );
                    }
                }
            }
            ConversationMsg::Leave { user, reply } => {
                match state.core.handle_leave(&user, crate::node::now_ms()) {
                    Err(code) => {
                        let _ = reply.send(Response::Error(code));
                    }
                    Ok((writes, message, recipients)) => {
                        state.persist_and_publish(
                            &myself,
                            writes,
                            message,
                            recipients,
                            move |res| {
                                let _ = reply
                                    .send(res.map_or_else(Response::Error, |()| Response::Done));
                            },
                        );
                    }
                }
            }
            ConversationMsg::Typing { user, active } => {
                let large = state
                    .core
                    .is_large(state.ctx.config.limits.group_large_members);
                if !large && state.core.authorize(&user).is_ok() {
                    let datagram = Datagram::Typing {
                        conversation: state.core.id().clone(),
                        user: user.clone(),
                        active,
                    };
                    if let Ok(payload) = codec::encode(&datagram) {
                        let _ = state.ctx.relay.send_message(RelayMsg::Datagram {
                            recipients: state.core.recipients(),
                            except: user,
                            payload: Bytes::from(payload),
                        });
                    }
                }
            }
            ConversationMsg::CommitFailed => {
                // The in-memory sequence may be ahead of storage: restart from storage.
                return Err("a commit of this conversation failed".into());
            }
            ConversationMsg::IdleCheck => {
                let idle = Duration::from_millis(state.ctx.config.limits.conversation_idle_ms);
                if state.last_active.elapsed() >= idle
                    && state.in_flight.load(Ordering::Acquire) == 0
                {
                    // Drain: messages already queued are still processed, later ones are refused
                    // and the router re-activates the conversation for them.
                    tracing::debug!(conversation = %state.core.id(), "passivating idle conversation");
                    let _ = myself.drain();
                }
            }
        }
        Ok(())
    }
}

impl ConversationState {
    /// For a message by `sender` in a shop conversation, what to tell the shop once it is
    /// stored (the seq is filled in then). Only what people write counts: text, media and
    /// questions about products; not the shop's own messages.
    fn shop_notice(
        &self,
        sender: &UserId,
        draft: &Draft,
        now_ms: u64,
    ) -> Option<crate::actors::shop::ShopNotice> {
        let (shop, customer) = self.core.shop_of()?;
        if *sender == UserId::shop() {
            return None;
        }
        let written = match &draft.body {
            piazza_protocol::MessageBody::Text(_) | piazza_protocol::MessageBody::Media { .. } => {
                true
            }
            piazza_protocol::MessageBody::Commerce(body) => matches!(
                body.as_ref(),
                piazza_protocol::commerce::CommerceBody::AskAbout { .. }
                    | piazza_protocol::commerce::CommerceBody::Product { .. }
                    | piazza_protocol::commerce::CommerceBody::ProductList { .. }
            ),
            _ => false,
        };
        written.then(|| crate::actors::shop::ShopNotice {
            shop: shop.clone(),
            customer: customer.clone(),
            from_staff: sender != customer && self.core.is_shop_staff(sender),
            at_ms: now_ms,
            seq: Seq::ZERO,
        })
    }

    /// Executes the outcome of a send or an update: persist, then ack and fan out.
    fn execute(
        &mut self,
        myself: &ActorRef<ConversationMsg>,
        outcome: Result<SendOutcome, ErrorCode>,
        received: Instant,
        reply: RpcReplyPort<Response>,
    ) {
        match outcome {
            Err(code) => {
                let _ = reply.send(Response::Error(code));
            }
            Ok(SendOutcome::Quiet { writes }) => {
                let submitted = self.submit(myself, writes, move |res| {
                    let _ =
                        reply.send(res.map_or_else(
                            |e| Response::Error(e.to_error_code()),
                            |()| Response::Done,
                        ));
                });
                if let Err(e) = submitted {
                    tracing::debug!(error = %e, "quiet change not queued");
                }
            }
            Ok(SendOutcome::Duplicate { ack }) => {
                metrics::counter!("piazza_sends_duplicate_total").increment(1);
                // The original may still be in flight: answer once everything before is durable.
                let submitted = self.submit(myself, Vec::new(), move |res| {
                    let _ = reply.send(match res {
                        Ok(()) => Response::Ack(ack),
                        Err(e) => Response::Error(e.to_error_code()),
                    });
                });
                if let Err(e) = submitted {
                    tracing::debug!(error = %e, "duplicate barrier refused");
                }
            }
            Ok(SendOutcome::Append {
                message,
                writes,
                ack,
            }) => {
                let recipients = self.core.recipients();
                let undo = message.clone();
                let published =
                    self.persist_and_publish(myself, writes, message, recipients, move |res| {
                        if res.is_ok() {
                            metrics::counter!("piazza_sends_total").increment(1);
                            metrics::histogram!("piazza_send_seconds")
                                .record(received.elapsed().as_secs_f64());
                        }
                        let _ =
                            reply.send(res.map_or_else(Response::Error, |()| Response::Ack(ack)));
                    });
                if !published {
                    self.core.undo_append(&undo);
                }
            }
        }
    }

    fn handle_group(
        &mut self,
        myself: &ActorRef<ConversationMsg>,
        user: UserId,
        op: GroupOp,
        reply: RpcReplyPort<Response>,
    ) {
        let now = crate::node::now_ms();
        let limits = &self.ctx.config.limits;
        let (members_max, large) = (limits.group_members_max, limits.group_large_members);
        let conversation = self.core.id().clone();
        let quiet = |writes: Vec<Write>, response: Response| (writes, None, response);
        let with_message = |(writes, message): (Vec<Write>, Message), response: Response| {
            (writes, Some((message, None)), response)
        };
        let result = match op {
            GroupOp::Info => self
                .core
                .group_info(&user, large)
                .map(|info| quiet(Vec::new(), Response::GroupInfo(info))),
            GroupOp::Members { after, limit } => self
                .core
                .members_page(&user, after.as_ref(), limit as usize)
                .map(|(members, more)| quiet(Vec::new(), Response::Members { members, more })),
            GroupOp::Invite(users) => {
                self.core
                    .handle_invite(&user, users, now, members_max)
                    .map(|change| match change {
                        Some(change) => with_message(change, Response::Done),
                        None => quiet(Vec::new(), Response::Done),
                    })
            }
            GroupOp::CreateLink => {
                let secret = format!(
                    "{:016x}{:016x}",
                    crate::node::random_u64(),
                    crate::node::random_u64()
                );
                let link = match &conversation {
                    ConversationId::Group(group) => format!("{group}.{secret}"),
                    _ => String::new(),
                };
                self.core
                    .handle_create_link(&user, secret)
                    .map(|writes| quiet(writes, Response::InviteLink { link }))
            }
            GroupOp::Join { secret } => {
                let joined = Response::GroupJoined {
                    conversation: conversation.clone(),
                };
                self.core
                    .handle_join(&user, &secret, now, members_max)
                    .map(|change| match change {
                        Some(change) => with_message(change, joined),
                        None => quiet(Vec::new(), joined),
                    })
            }
            GroupOp::Remove { user: target, ban } => self
                .core
                .handle_remove(&user, &target, ban, now)
                .map(|(writes, message, recipients)| {
                    (writes, Some((message, Some(recipients))), Response::Done)
                }),
            GroupOp::Unban(target) => self
                .core
                .handle_unban(&user, &target)
                .map(|writes| quiet(writes, Response::Done)),
            GroupOp::SetRole { user: target, role } => self
                .core
                .handle_set_role(&user, &target, role, now)
                .map(|change| match change {
                    Some(change) => with_message(change, Response::Done),
                    None => quiet(Vec::new(), Response::Done),
                }),
            GroupOp::UpdateInfo { title, description } => self
                .core
                .handle_update_info(&user, title, description, now)
                .map(|change| match change {
                    Some(change) => with_message(change, Response::Done),
                    None => quiet(Vec::new(), Response::Done),
                }),
        };
        match result {
            Err(code) => {
                let _ = reply.send(Response::Error(code));
            }
            Ok((writes, None, response)) if writes.is_empty() => {
                let _ = reply.send(response);
            }
            Ok((writes, None, response)) => {
                let result = self.submit(myself, writes, move |res| {
                    let _ = reply.send(
                        res.map_or_else(|e| Response::Error(e.to_error_code()), |()| response),
                    );
                });
                if let Err(e) = result {
                    tracing::debug!(error = %e, "group change not queued");
                }
            }
            Ok((writes, Some((message, recipients)), response)) => {
                let recipients = recipients.unwrap_or_else(|| self.core.recipients());
                let undo = message.clone();
                let published =
                    self.persist_and_publish(myself, writes, message, recipients, move |res| {
                        let _ = reply.send(res.map_or_else(Response::Error, |()| response));
                    });
                if !published {
                    // The membership change stays in memory but not on disk: restart from storage.
                    self.core.undo_append(&undo);
                    let _ = myself.send_message(ConversationMsg::CommitFailed);
                }
            }
        }
    }

    /// Looks up what an update needs from storage (the target, whether the user already reacted)
    /// and runs it through the core.
    fn handle_update(
        &mut self,
        user: UserId,
        client_msg_id: ClientMsgId,
        target: Seq,
        change: UpdateRequest,
    ) -> Result<Option<SendOutcome>, ErrorCode> {
        self.core.authorize(&user)?;
        let storage = &self.ctx.storage;
        // Rows this actor rewrote may still be in flight: its own cache is newer than storage.
        let stored = match self.written.targets.get(&target) {
            Some(message) => Some(message.clone()),
            None => storage
                .message(self.core.id(), target)
                .map_err(|e| e.to_error_code())?,
        };
        let change = match change {
            UpdateRequest::Edit { text } => Change::Edit { text },
            UpdateRequest::Delete => Change::Delete,
            UpdateRequest::Pin { pinned } => Change::Pin { pinned },
            UpdateRequest::Order { order } => Change::Order { order },
            UpdateRequest::React { emoji, add } => {
                let key = (target, emoji, user.clone());
                let already = match self.written.reacted.get(&key) {
                    Some(reacted) => *reacted,
                    None => storage
                        .has_reacted(self.core.id(), target, &key.1, &user)
                        .map_err(|e| e.to_error_code())?,
                };
                Change::React {
                    emoji: key.1,
                    add,
                    already,
                }
            }
        };
        let window = self.ctx.config.limits.edit_window_ms;
        let outcome = self.core.handle_update(
            &user,
            client_msg_id,
            stored,
            change,
            crate::node::now_ms(),
            window,
        )?;
        if let Some(SendOutcome::Append { writes, .. } | SendOutcome::Quiet { writes }) = &outcome {
            let idle = self.idle_storage();
            self.written.remember(writes, idle);
        }
        Ok(outcome)
    }

    fn handle_receipt(
        &mut self,
        myself: &ActorRef<ConversationMsg>,
        user: UserId,
        seq: Seq,
        kind: ReceiptKind,
        reply: RpcReplyPort<Response>,
    ) {
        // Receipts in large groups are not stored nor relayed: with thousands of members they
        // would multiply traffic by the member count for little value.
        if self
            .core
            .is_large(self.ctx.config.limits.group_large_members)
        {
            let _ = reply.send(
                self.core
                    .authorize(&user)
                    .map_or_else(Response::Error, |()| Response::Done),
            );
            return;
        }
        let write = match self.core.handle_receipt(&user, seq, kind) {
            Err(code) => {
                let _ = reply.send(Response::Error(code));
                return;
            }
            Ok(None) => {
                let _ = reply.send(Response::Done);
                return;
            }
            Ok(Some(write)) => write,
        };
        let event = Event::Receipt {
            conversation: self.core.id().clone(),
            user,
            kind,
            seq,
        };
        let frame = match codec::encode_frame(&event) {
            Ok(frame) => Bytes::from(frame),
            Err(e) => {
                let _ = reply.send(Response::Error(internal_error("encode receipt", &e)));
                return;
            }
        };
        let recipients = self.core.recipients();
        let relay = self.ctx.relay.clone();
        let result = self.submit(myself, vec![write], move |res| {
            if res.is_ok() {
                let _ = relay.send_message(RelayMsg::Deliver { recipients, frame });
            }
            let _ = reply
                .send(res.map_or_else(|e| Response::Error(e.to_error_code()), |()| Response::Done));
        });
        if let Err(e) = result {
            tracing::debug!(error = %e, "receipt not queued");
        }
    }

    /// Persists `writes` and, once durable, fans `message` out to `recipients` and calls `done`.
    /// Returns false if the batch could not even be queued (then `done` has already been called
    /// with the error and the caller must undo what the core assigned).
    fn persist_and_publish(
        &mut self,
        myself: &ActorRef<ConversationMsg>,
        writes: Vec<Write>,
        message: Message,
        recipients: core::Recipients,
        done: impl FnOnce(Result<(), ErrorCode>) + Send + 'static,
    ) -> bool {
        let frame = match codec::encode_frame(&Event::Message(message)) {
            Ok(frame) => Bytes::from(frame),
            Err(e) => {
                done(Err(internal_error("encode message event", &e)));
                return false;
            }
        };
        let relay = self.ctx.relay.clone();
        self.submit(myself, writes, move |res| match res {
            Ok(()) => {
                // The ack first: its task is then queued ahead of the fan-out's wake-ups (a post
                // to thousands wakes thousands of session writers on the same workers).
                done(Ok(()));
                let _ = relay.send_message(RelayMsg::Deliver { recipients, frame });
            }
            Err(e) => done(Err(e.to_error_code())),
        })
        .is_ok()
    }

    /// Whether every batch this actor submitted is durable.
    fn idle_storage(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// Submits a batch, tracking it as in flight. `done` is called exactly once, also when the
    /// batch cannot be queued.
    fn submit(
        &self,
        myself: &ActorRef<ConversationMsg>,
        writes: Vec<Write>,
        done: impl FnOnce(Result<(), StorageError>) + Send + 'static,
    ) -> Result<(), StorageError> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let in_flight = self.in_flight.clone();
        let me = myself.clone();
        let result = self.ctx.storage.submit(
            writes,
            Box::new(move |res: Result<(), StorageError>| {
                in_flight.fetch_sub(1, Ordering::AcqRel);
                if let Err(StorageError::Engine(_) | StorageError::Corrupt { .. }) = &res {
                    let _ = me.send_message(ConversationMsg::CommitFailed);
                }
                done(res);
            }),
        );
        if let Err(StorageError::Engine(_)) = &result {
            let _ = myself.send_message(ConversationMsg::CommitFailed);
        }
        result
    }
}

/// Waits until everything submitted to storage so far is durable.
pub(crate) async fn barrier(ctx: &NodeContext) -> Result<(), StorageError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    ctx.storage.submit(
        Vec::new(),
        Box::new(move |res| {
            let _ = tx.send(res);
        }),
    )?;
    let timeout = Duration::from_millis(ctx.config.limits.actor_call_timeout_ms);
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(res)) => res,
        Ok(Err(_)) => Err(StorageError::Closed),
        Err(_) => Err(StorageError::Overloaded),
    }
}

/// Logs an unexpected failure with a fresh id and returns the wire error carrying only that id.
pub(crate) fn internal_error(what: &str, error: &dyn std::fmt::Display) -> ErrorCode {
    let id = crate::node::random_u64();
    tracing::error!(error_id = id, "{what}: {error}");
    ErrorCode::Internal { id }
}
