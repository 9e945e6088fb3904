//! Sessions: one actor per authenticated client connection.
//!
//! The transport reads a request frame from a stream and calls the session; the session checks
//! admission (rate limit), resolves which conversation the request is about, and forwards it with
//! its reply port to the actor that owns the data, which authorizes and answers. The session never
//! waits for a commit. Events for the client arrive from the relay in the session's bounded outbox,
//! which the transport drains onto the connection's event stream.

mod media;
mod rate;
mod sync;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use piazza_protocol::commerce::ShopOp;
use piazza_protocol::{
    ConversationId, ConversationRef, Datagram, DeviceId, ErrorCode, GroupId, PROTOCOL_VERSION,
    Request, Response, UserId,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::mpsc;

use self::rate::RateLimiter;
use crate::actors::conversation::core::Draft;
use crate::actors::conversation::{ChannelOp, ConversationMsg, GroupOp, UpdateRequest};
use crate::actors::relay::{Outbox, RelayMsg, SessionId};
use crate::node::NodeContext;

/// Datagrams queued per session: typing indicators are lossy and tiny.
const DATAGRAM_QUEUE_MAX: usize = 64;

/// Attempts to pick an unused random group id; a collision of 64-bit random ids is already
/// astronomically unlikely, so a second attempt is for form.
const GROUP_ID_ATTEMPTS_MAX: u32 = 3;

/// The receiving side of a session's outbox, drained by the transport.
#[derive(Debug)]
pub(crate) struct SessionIo {
    pub(crate) events: mpsc::Receiver<Bytes>,
    pub(crate) datagrams: mpsc::Receiver<Bytes>,
    pub(crate) overflowed: Arc<AtomicBool>,
}

/// Messages of a session actor.
#[derive(Debug)]
pub(crate) enum SessionMsg {
    /// A request read from one of the connection's streams.
    Request {
        request: Request,
        reply: RpcReplyPort<Response>,
    },
    /// A datagram from the client.
    Datagram(Datagram),
}

/// The session actor.
#[derive(Debug)]
pub(crate) struct SessionActor;

/// What a session starts from.
#[derive(Debug)]
pub(crate) struct SessionArgs {
    ctx: Arc<NodeContext>,
    id: SessionId,
    user: UserId,
    device: DeviceId,
    outbox: Outbox,
}

/// State of a session.
#[derive(Debug)]
pub(crate) struct SessionState {
    ctx: Arc<NodeContext>,
    id: SessionId,
    user: UserId,
    device: DeviceId,
    /// Sends per second.
    limiter: RateLimiter,
    /// Requests of any kind per second.
    request_limiter: RateLimiter,
}

/// Checks `Hello`'s version and token; returns the authenticated user.
pub(crate) fn authenticate(
    ctx: &NodeContext,
    protocol_version: u32,
    token: &str,
) -> Result<UserId, ErrorCode> {
    if protocol_version != PROTOCOL_VERSION {
        return Err(ErrorCode::invalid(
            "protocol_version",
            format!("this node speaks version {PROTOCOL_VERSION}, not {protocol_version}"),
        ));
    }
    ctx.tokens
        .verify(token)
        .map_err(|e| ErrorCode::Unauthenticated {
            reason: e.to_string(),
        })
}

/// Starts the session of an authenticated connection.
pub(crate) async fn open(
    ctx: &Arc<NodeContext>,
    user: UserId,
    device: DeviceId,
) -> Result<(ActorRef<SessionMsg>, SessionIo), ErrorCode> {
    let (events_tx, events) = mpsc::channel(ctx.config.limits.session_outbound_queue_max);
    let (datagrams_tx, datagrams) = mpsc::channel(DATAGRAM_QUEUE_MAX);
    let overflowed = Arc::new(AtomicBool::new(false));
    let outbox = Outbox {
        events: events_tx,
        datagrams: datagrams_tx,
        overflowed: overflowed.clone(),
    };
    let id = ctx.next_session_id();
    let args = SessionArgs {
        ctx: ctx.clone(),
        id,
        user,
        device,
        outbox,
    };
    let (actor, _join) = Actor::spawn_linked(None, SessionActor, args, ctx.supervisor.clone())
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot start session");
            ErrorCode::unavailable("cannot start session")
        })?;
    Ok((
        actor,
        SessionIo {
            events,
            datagrams,
            overflowed,
        },
    ))
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        let SessionArgs {
            ctx,
            id,
            user,
            device,
            outbox,
        } = args;
        ctx.relay.send_message(RelayMsg::Register {
            session: id,
            user: user.clone(),
            outbox,
        })?;
        let limits = &ctx.config.limits;
        let limiter = RateLimiter::new(limits.send_rate_per_s, limits.send_burst, Instant::now());
        let request_limiter = RateLimiter::new(
            limits.request_rate_per_s,
            limits.request_burst,
            Instant::now(),
        );
        metrics::gauge!("piazza_sessions_active").increment(1.0);
        tracing::debug!(session = id, %user, %device, "session opened");
        Ok(SessionState {
            ctx,
            id,
            user,
            device,
            limiter,
            request_limiter,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SessionMsg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        let _ = state.ctx.relay.send_message(RelayMsg::Unregister {
            session: state.id,
            user: state.user.clone(),
        });
        metrics::gauge!("piazza_sessions_active").decrement(1.0);
        tracing::debug!(session = state.id, user = %state.user, device = %state.device, "session closed");
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<SessionMsg>,
        message: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SessionMsg::Request { request, reply } => state.handle_request(request, reply).await,
            SessionMsg::Datagram(Datagram::Typing {
                conversation,
                active,
                ..
            }) => {
                let user = state.user.clone();
                state
                    .ctx
                    .send_to_conversation(&conversation, ConversationMsg::Typing { user, active })
                    .await;
            }
            // Presence goes from the node to clients only.
            SessionMsg::Datagram(Datagram::Presence(_)) => {}
        }
        Ok(())
    }
}

impl SessionState {
    async fn handle_request(&mut self, request: Request, reply: RpcReplyPort<Response>) {
        let now = Instant::now();
        let admitted = self
            .request_limiter
            .try_acquire(now)
            .and_then(|()| match request {
                // Everything that appends to a sequence counts as a message.
                Request::Send { .. }
                | Request::Reply { .. }
                | Request::Edit { .. }
                | Request::Delete { .. }
                | Request::React { .. }
                | Request::Pin { .. }
                | Request::Forward { .. }
                | Request::SendMedia { .. }
                | Request::SchedulePost { .. } => self.limiter.try_acquire(now),
                Request::Shop {
                    op:
                        ShopOp::SendProduct { .. }
                        | ShopOp::SendProductList { .. }
                        | ShopOp::AskAbout { .. }
                        | ShopOp::Checkout { .. },
                    ..
                } => self.limiter.try_acquire(now),
                _ => Ok(()),
            });
        if let Err(wait) = admitted {
            metrics::counter!("piazza_rate_limited_total").increment(1);
            let retry_after_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
            let _ = reply.send(Response::Error(ErrorCode::RateLimited { retry_after_ms }));
            return;
        }
        let ctx = self.ctx.clone();
        let user = self.user.clone();
        let resolve = |conversation: &ConversationRef| {
            conversation
                .resolve(&user)
                .map_err(|e| ErrorCode::invalid("conversation", e.to_string()))
        };
        match request {
            Request::Hello { .. } => {
                let _ = reply.send(Response::Error(ErrorCode::Conflict {
                    reason: "this connection is already authenticated".into(),
                }));
            }
            Request::Send {
                conversation,
                client_msg_id,
                text,
            } => match resolve(&conversation) {
                Err(code) => {
                    let _ = reply.send(Response::Error(code));
                }
                Ok(id) => {
                    let message = ConversationMsg::Send {
                        sender: user.clone(),
                        client_msg_id,
                        draft: Draft::text(text),
                        received: Instant::now(),
                        reply,
                    };
                    ctx.send_to_conversation(&id, message).await;
                }
            },
            Request::History {
                conversation,
                before,
                limit,
            } => match resolve(&conversation) {
                Err(code) => {
                    let _ = reply.send(Response::Error(code));
                }
                Ok(id) => {
                    let message = ConversationMsg::History {
                        user: user.clone(),
                        before,
                        limit,
                        reply,
                    };
                    ctx.send_to_conversation(&id, message).await;
                }
            },
            Request::Receipt {
                conversation,
                seq,
                kind,
            } => {
                let message = ConversationMsg::Receipt {
                    user: user.clone(),
                    seq,
                    kind,
                    reply,
                };
                ctx.send_to_conversation(&conversation, message).await;
            }
            Request::Receipts { conversation } => match resolve(&conversation) {
                Err(code) => {
                    let _ = reply.send(Response::Error(code));
                }
                Ok(id) => {
                    ctx.send_to_conversation(
                        &id,
                        ConversationMsg::Receipts {
                            user: user.clone(),
                            reply,
                        },
                    )
                    .await
                }
            },
            Request::CreateGroup { name, members } => {
                let members: Vec<UserId> = members
                    .into_iter()
                    .collect::<HashSet<_>>()
                    .into_iter()
                    .filter(|m| *m != user)
                    .collect();
                if members.len() + 1 > ctx.group_members_max() {
                    let _ = reply.send(Response::Error(ErrorCode::TooLarge {
                        what: "members".into(),
                        limit: ctx.group_members_max() as u64,
                    }));
                    return;
                }
                let mut id = None;
                for _ in 0..GROUP_ID_ATTEMPTS_MAX {
                    let Ok(candidate) = GroupId::new(crate::node::random_u64()) else {
                        continue;
                    };
                    match ctx.storage.group(candidate) {
                        Ok(None) => {
                            id = Some(candidate);
                            break;
                        }
                        Ok(Some(_)) => continue,
                        Err(e) => {
                            let _ = reply.send(Response::Error(e.to_error_code()));
                            return;
                        }
                    }
                }
                let Some(group) = id else {
                    let _ = reply.send(Response::Error(ErrorCode::unavailable("no free group id")));
                    return;
                };
                let message = ConversationMsg::Create {
                    owner: user.clone(),
                    name,
                    members,
                    reply,
                };
                ctx.send_to_conversation(&ConversationId::Group(group), message)
                    .await;
            }
            Request::LeaveGroup { group } => {
                let message = ConversationMsg::Leave {
                    user: user.clone(),
                    reply,
                };
                ctx.send_to_conversation(&ConversationId::Group(group), message)
                    .await;
            }
            Request::Reply {
                conversation,
                client_msg_id,
                reply_to,
                text,
            } => match resolve(&conversation) {
                Err(code) => {
                    let _ = reply.send(Response::Error(code));
                }
                Ok(id) => {
                    let draft = Draft {
                        reply_to: Some(reply_to),
                        ..Draft::text(text)
                    };
                    let message = ConversationMsg::Send {
                        sender: user.clone(),
                        client_msg_id,
                        draft,
                        received: Instant::now(),
                        reply,
                    };
                    ctx.send_to_conversation(&id, message).await;
                }
            },
            Request::Edit {
                conversation,
                client_msg_id,
                target,
                text,
            } => {
                self.update(
                    &conversation,
                    client_msg_id,
                    target,
                    UpdateRequest::Edit { text },
                    reply,
                )
                .await;
            }
            Request::Delete {
                conversation,
                client_msg_id,
                target,
            } => {
                self.update(
                    &conversation,
                    client_msg_id,
                    target,
                    UpdateRequest::Delete,
                    reply,
                )
                .await;
            }
            Request::React {
                conversation,
                client_msg_id,
                target,
                emoji,
                add,
            } => {
                let change = UpdateRequest::React { emoji, add };
                self.update(&conversation, client_msg_id, target, change, reply)
                    .await;
            }
            Request::Pin {
                conversation,
                client_msg_id,
                target,
                pinned,
            } => {
                self.update(
                    &conversation,
                    client_msg_id,
                    target,
                    UpdateRequest::Pin { pinned },
                    reply,
                )
                .await;
            }
            Request::Pinned { conversation } => match resolve(&conversation) {
                Err(code) => {
                    let _ = reply.send(Response::Error(code));
                }
                Ok(id) => {
                    ctx.send_to_conversation(
                        &id,
                        ConversationMsg::Pinned {
                            user: user.clone(),
                            reply,
                        },
                    )
                    .await
                }
            },
            Request::Forward {
                from,
                seq,
                to,
                client_msg_id,
            } => {
                let (from, to) = match (resolve(&from), resolve(&to)) {
                    (Ok(from), Ok(to)) => (from, to),
                    (Err(code), _) | (_, Err(code)) => {
                        let _ = reply.send(Response::Error(code));
                        return;
                    }
                };
                // Two actors in turn (read, then append): beside the session, like Sync.
                tokio::spawn(async move {
                    let response = forward(&ctx, user, from, seq, to, client_msg_id).await;
                    let _ = reply.send(response);
                });
            }
            Request::InviteMembers { group, users } => {
                self.group(group, GroupOp::Invite(users), reply).await
            }
            Request::CreateInviteLink { group } => {
                self.group(group, GroupOp::CreateLink, reply).await
            }
            Request::JoinByLink { link } => {
                let parsed = link.split_once('.').and_then(|(group, secret)| {
                    Some((group.parse::<GroupId>().ok()?, secret.to_owned()))
                });
                match parsed {
                    Some((group, secret)) => {
                        self.group(group, GroupOp::Join { secret }, reply).await
                    }
                    None => {
                        let _ = reply.send(Response::Error(ErrorCode::invalid(
                            "link",
                            "not an invite link",
                        )));
                    }
                }
            }
            Request::RemoveMember {
                group,
                user: target,
                ban,
            } => {
                self.group(group, GroupOp::Remove { user: target, ban }, reply)
                    .await;
            }
            Request::Unban {
                group,
                user: target,
            } => self.group(group, GroupOp::Unban(target), reply).await,
            Request::SetRole {
                group,
                user: target,
                role,
            } => {
                self.group(group, GroupOp::SetRole { user: target, role }, reply)
                    .await;
            }
            Request::UpdateGroupInfo {
                group,
                title,
                description,
            } => {
                self.group(group, GroupOp::UpdateInfo { title, description }, reply)
                    .await;
            }
            Request::GroupInfo { group } => self.group(group, GroupOp::Info, reply).await,
            Request::Members {
                group,
                after,
                limit,
            } => {
                self.group(group, GroupOp::Members { after, limit }, reply)
                    .await;
            }
            Request::Media(request) => media::handle(ctx, user, request, reply),
            Request::SendMedia {
                conversation,
                client_msg_id,
                media,
                caption,
            } => media::handle_send(
                ctx,
                user,
                conversation,
                client_msg_id,
                media,
                caption,
                reply,
            ),
            Request::CreateChannel {
                title,
                description,
                signed,
            } => {
                let channel = match free_channel_id(&ctx) {
                    Ok(channel) => channel,
                    Err(code) => {
                        let _ = reply.send(Response::Error(code));
                        return;
                    }
                };
                let op = ChannelOp::Create {
                    title,
                    description,
                    signed,
                };
                self.channel(channel, op, reply).await;
            }
            Request::Subscribe { channel } => {
                self.channel(channel, ChannelOp::Subscribe, reply).await
            }
            Request::Unsubscribe { channel } => {
                self.channel(channel, ChannelOp::Unsubscribe, reply).await
            }
            Request::UpdateChannel {
                channel,
                title,
                description,
                signed,
            } => {
                let op = ChannelOp::Update {
                    title,
                    description,
                    signed,
                };
                self.channel(channel, op, reply).await;
            }
            Request::SetChannelAdmin {
                channel,
                user: target,
                admin,
            } => {
                let op = ChannelOp::SetAdmin {
                    user: target,
                    admin,
                };
                self.channel(channel, op, reply).await;
            }
            Request::ChannelInfo { channel } => self.channel(channel, ChannelOp::Info, reply).await,
            Request::SchedulePost {
                channel,
                client_msg_id,
                text,
                at_ms,
            } => {
                let op = ChannelOp::Schedule {
                    client_msg_id,
                    text,
                    at_ms,
                };
                self.channel(channel, op, reply).await;
            }
            Request::ScheduledPosts { channel } => {
                self.channel(channel, ChannelOp::Scheduled, reply).await
            }
            Request::CancelScheduled {
                channel,
                client_msg_id,
            } => {
                self.channel(channel, ChannelOp::Cancel { client_msg_id }, reply)
                    .await
            }
            Request::ViewPosts { channel, posts } => {
                let op = ChannelOp::Stats { posts, view: true };
                self.channel(channel, op, reply).await;
            }
            Request::PostStats { channel, posts } => {
                let op = ChannelOp::Stats { posts, view: false };
                self.channel(channel, op, reply).await;
            }
            Request::SetAvatar {
                conversation,
                media,
            } => media::handle_set_avatar(ctx, user, conversation, media, reply),
            Request::SetPresence { visible } => {
                let sent = ctx.relay.send_message(RelayMsg::SetPresence {
                    session: self.id,
                    user: user.clone(),
                    visible,
                });
                let _ = reply.send(match sent {
                    Ok(()) => Response::Done,
                    Err(_) => Response::Error(ErrorCode::unavailable("node is shutting down")),
                });
            }
            Request::WatchPresence { conversation } => match resolve(&conversation) {
                Err(code) => {
                    let _ = reply.send(Response::Error(code));
                }
                Ok(id) => {
                    let session = self.id;
                    // The conversation's actor decides whom the user may watch; beside the session.
                    tokio::spawn(async move {
                        let response = watch_presence(&ctx, session, user, id).await;
                        let _ = reply.send(response);
                    });
                }
            },
            Request::Shop { shop, op } => {
                // The shop's actor decides; the session keeps serving meanwhile.
                tokio::spawn(async move {
                    let response = match media::shop_media_allowed(&ctx, &user, &op).await {
                        Ok(()) => ctx.ask_shop(&shop, user, op).await,
                        Err(code) => Response::Error(code),
                    };
                    let _ = reply.send(response);
                });
            }
            Request::Heads { after } => {
                // Index reads of committed data, bounded by HEADS_MAX: cheap enough inline.
                let _ = reply.send(sync::heads(&ctx, &user, after.as_ref()));
            }
            Request::Sync { cursors, limit } => {
                // Sync reads many conversations; it runs beside the session so the session keeps
                // serving the connection's other requests meanwhile.
                tokio::spawn(async move {
                    let response = sync::sync(&ctx, &user, cursors, limit).await;
                    let _ = reply.send(response);
                });
            }
        }
    }
}

impl SessionState {
    async fn channel(
        &self,
        channel: piazza_protocol::ChannelId,
        op: ChannelOp,
        reply: RpcReplyPort<Response>,
    ) {
        let message = ConversationMsg::Channel {
            user: self.user.clone(),
            op,
            reply,
        };
        self.ctx
            .send_to_conversation(&ConversationId::Channel(channel), message)
            .await;
    }

    async fn group(&self, group: GroupId, op: GroupOp, reply: RpcReplyPort<Response>) {
        let message = ConversationMsg::Group {
            user: self.user.clone(),
            op,
            reply,
        };
        self.ctx
            .send_to_conversation(&ConversationId::Group(group), message)
            .await;
    }

    async fn update(
        &self,
        conversation: &ConversationRef,
        client_msg_id: piazza_protocol::ClientMsgId,
        target: piazza_protocol::Seq,
        change: UpdateRequest,
        reply: RpcReplyPort<Response>,
    ) {
        match conversation.resolve(&self.user) {
            Err(e) => {
                let _ = reply.send(Response::Error(ErrorCode::invalid(
                    "conversation",
                    e.to_string(),
                )));
            }
            Ok(id) => {
                let message = ConversationMsg::Update {
                    user: self.user.clone(),
                    client_msg_id,
                    target,
                    change,
                    reply,
                };
                self.ctx.send_to_conversation(&id, message).await;
            }
        }
    }
}

/// Forwards message `seq` of `from` into `to`: reads it through `from`'s actor (which checks the
/// user may read it), then appends a copy to `to` naming its origin.
async fn forward(
    ctx: &Arc<NodeContext>,
    user: UserId,
    from: ConversationId,
    seq: piazza_protocol::Seq,
    to: ConversationId,
    client_msg_id: piazza_protocol::ClientMsgId,
) -> Response {
    let read = ctx
        .ask_conversation(&from, |reply| ConversationMsg::Read {
            user: user.clone(),
            seq,
            reply,
        })
        .await;
    let original = match read.and_then(|answer| answer) {
        Ok(message) => message,
        Err(code) => return Response::Error(code),
    };
    // A forwarded media message references its blob in the new conversation too, so the
    // recipients there may download it.
    if !matches!(
        original.body,
        piazza_protocol::MessageBody::Text(_) | piazza_protocol::MessageBody::Media { .. }
    ) {
        return Response::Error(ErrorCode::invalid(
            "seq",
            "only text and media messages can be forwarded",
        ));
    }
    // A forward of a forward names the first origin.
    let origin = original
        .forwarded_from
        .clone()
        .unwrap_or(piazza_protocol::ForwardedFrom {
            conversation: original.conversation.clone(),
            seq: original.seq,
            sender: original.sender.clone(),
            sent_at_ms: original.sent_at_ms,
        });
    let draft = Draft {
        body: original.body,
        reply_to: None,
        forwarded_from: Some(origin),
    };
    let sent = ctx
        .ask_conversation(&to, |reply| ConversationMsg::Send {
            sender: user,
            client_msg_id,
            draft,
            received: Instant::now(),
            reply,
        })
        .await;
    sent.unwrap_or_else(Response::Error)
}

/// An unused random channel id.
fn free_channel_id(ctx: &NodeContext) -> Result<piazza_protocol::ChannelId, ErrorCode> {
    for _ in 0..GROUP_ID_ATTEMPTS_MAX {
        let Ok(candidate) = piazza_protocol::ChannelId::new(crate::node::random_u64()) else {
            continue;
        };
        match ctx.storage.channel(candidate) {
            Ok(None) => return Ok(candidate),
            Ok(Some(_)) => continue,
            Err(e) => return Err(e.to_error_code()),
        }
    }
    Err(ErrorCode::unavailable("no free channel id"))
}

/// Asks the conversation's actor whom `user` may watch there, then registers the watches with the
/// relay and answers with their current presence.
async fn watch_presence(
    ctx: &Arc<NodeContext>,
    session: SessionId,
    user: UserId,
    conversation: ConversationId,
) -> Response {
    let targets = ctx
        .ask_conversation(&conversation, |reply| ConversationMsg::PresenceTargets {
            user: user.clone(),
            reply,
        })
        .await;
    let users = match targets.and_then(|answer| answer) {
        Ok(users) => users,
        Err(code) => return Response::Error(code),
    };
    let answer = ractor::call!(ctx.relay, |reply| RelayMsg::Watch {
        session,
        user,
        users,
        reply,
    });
    match answer {
        Ok(states) => Response::Presence(states),
        Err(_) => Response::Error(ErrorCode::unavailable("node is shutting down")),
    }
}

/// Marks whether a connection's events were dropped (for the transport's event writer).
pub(crate) fn take_overflow(flag: &AtomicBool) -> bool {
    flag.swap(false, Ordering::AcqRel)
}
