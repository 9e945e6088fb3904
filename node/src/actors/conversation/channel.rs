//! The channel side of the conversation actor: administration, scheduled posts and post
//! counters. Decisions are the core's (`core/channel.rs`); this file reads what they need from
//! storage, persists their writes and answers after the commit.

use std::collections::HashSet;
use std::time::Instant;

use piazza_protocol::{ClientMsgId, ConversationId, ErrorCode, PostStats, Response, Seq, UserId};
use ractor::{ActorRef, RpcReplyPort};

use super::core::Publish;
use super::{ConversationMsg, ConversationState};
use crate::storage::{CounterKind, Write};

/// Most (post, viewer) pairs remembered between commits to count each viewer once; the set is
/// cleared when it is this large and nothing is in flight (storage then has every view).
const VIEWED_REMEMBERED_MAX: usize = 100_000;

/// A channel operation, checked by the core against the caller's role.
#[derive(Debug)]
pub(crate) enum ChannelOp {
    Create {
        title: String,
        description: String,
        signed: bool,
    },
    Subscribe,
    Unsubscribe,
    Update {
        title: Option<String>,
        description: Option<String>,
        signed: Option<bool>,
    },
    SetAdmin {
        user: UserId,
        admin: bool,
    },
    Info,
    Schedule {
        client_msg_id: ClientMsgId,
        text: String,
        at_ms: u64,
    },
    Scheduled,
    Cancel {
        client_msg_id: ClientMsgId,
    },
    /// From the scheduler: publish the post due at `at_ms`.
    Publish {
        client_msg_id: ClientMsgId,
        at_ms: u64,
    },
    /// Post counters, counting a view by the caller if `view`.
    Stats {
        posts: Vec<Seq>,
        view: bool,
    },
}

impl ConversationState {
    pub(super) fn handle_channel(
        &mut self,
        myself: &ActorRef<ConversationMsg>,
        user: UserId,
        op: ChannelOp,
        reply: RpcReplyPort<Response>,
    ) {
        let now = crate::node::now_ms();
        let subscribers_max = self.ctx.config.limits.channel_subscribers_max;
        let result = match op {
            ChannelOp::Create {
                title,
                description,
                signed,
            } => {
                let channel = match self.core.id() {
                    ConversationId::Channel(channel) => *channel,
                    _ => {
                        let _ = reply.send(Response::Error(ErrorCode::invalid(
                            "conversation",
                            "not a channel",
                        )));
                        return;
                    }
                };
                match self
                    .core
                    .handle_create_channel(&user, title, description, signed, now)
                {
                    Ok((writes, message)) => {
                        let done = Response::ChannelCreated { channel };
                        return self.publish_change(myself, writes, message, done, reply);
                    }
                    Err(code) => Err(code),
                }
            }
            ChannelOp::Subscribe => {
                let subscribed = Response::Subscribed {
                    conversation: self.core.id().clone(),
                    head: self.core.last_seq(),
                };
                self.core
                    .handle_subscribe(&user, subscribers_max)
                    .map(|writes| (writes.unwrap_or_default(), subscribed))
            }
            ChannelOp::Unsubscribe => self
                .core
                .handle_unsubscribe(&user)
                .map(|writes| (writes, Response::Done)),
            ChannelOp::SetAdmin {
                user: target,
                admin,
            } => self
                .core
                .handle_set_channel_admin(&user, &target, admin, subscribers_max)
                .map(|writes| (writes, Response::Done)),
            ChannelOp::Update {
                title,
                description,
                signed,
            } => match self
                .core
                .handle_update_channel(&user, title, description, signed, now)
            {
                Ok((writes, Some(message))) => {
                    return self.publish_change(myself, writes, message, Response::Done, reply);
                }
                Ok((writes, None)) => Ok((writes, Response::Done)),
                Err(code) => Err(code),
            },
            ChannelOp::Info => self
                .core
                .channel_info(&user)
                .map(|info| (Vec::new(), Response::ChannelInfo(info))),
            ChannelOp::Schedule {
                client_msg_id,
                text,
                at_ms,
            } => match self.core.handle_schedule(&user, client_msg_id, text, at_ms) {
                Ok((writes, post)) => {
                    let scheduler = self.ctx.scheduler.clone();
                    let writes = writes.unwrap_or_default();
                    let response = Response::Scheduled(post);
                    let submitted = self.submit(myself, writes, move |res| {
                        // Wake the scheduler: this post may be due before what it waits for.
                        scheduler.notify_one();
                        let _ = reply.send(
                            res.map_or_else(|e| Response::Error(e.to_error_code()), |()| response),
                        );
                    });
                    if let Err(e) = submitted {
                        tracing::debug!(error = %e, "schedule not queued");
                    }
                    return;
                }
                Err(code) => Err(code),
            },
            ChannelOp::Scheduled => self
                .core
                .scheduled_posts(&user)
                .map(|posts| (Vec::new(), Response::ScheduledPosts(posts))),
            ChannelOp::Cancel { client_msg_id } => self
                .core
                .handle_cancel_scheduled(&user, &client_msg_id)
                .map(|writes| (writes, Response::Done)),
            ChannelOp::Publish {
                client_msg_id,
                at_ms,
            } => match self.core.handle_publish(&client_msg_id, now) {
                Ok(Publish::Post(outcome)) => {
                    return self.execute(myself, Ok(outcome), Instant::now(), reply);
                }
                Ok(Publish::Already { writes }) => Ok((writes, Response::Done)),
                Ok(Publish::Stale) => {
                    let channel = match self.core.id() {
                        ConversationId::Channel(channel) => *channel,
                        _ => return,
                    };
                    let unschedule = Write::Unschedule {
                        channel,
                        client_msg_id,
                        at_ms,
                    };
                    Ok((vec![unschedule], Response::Done))
                }
                // The channel is gone or was never created: drop the stale index row.
                Err(ErrorCode::NotFound) => match self.core.id() {
                    ConversationId::Channel(channel) => Ok((
                        vec![Write::Unschedule {
                            channel: *channel,
                            client_msg_id,
                            at_ms,
                        }],
                        Response::Done,
                    )),
                    _ => Err(ErrorCode::NotFound),
                },
                Err(code) => Err(code),
            },
            ChannelOp::Stats { posts, view } => self.post_stats(&user, posts, view),
        };
        match result {
            Err(code) => {
                let _ = reply.send(Response::Error(code));
            }
            Ok((writes, response)) if writes.is_empty() => {
                let _ = reply.send(response);
            }
            Ok((writes, response)) => {
                let submitted = self.submit(myself, writes, move |res| {
                    let _ = reply.send(
                        res.map_or_else(|e| Response::Error(e.to_error_code()), |()| response),
                    );
                });
                if let Err(e) = submitted {
                    tracing::debug!(error = %e, "channel change not queued");
                }
            }
        }
    }

    /// Persists a change that also appended `message`; fans it out and answers `done` after the
    /// commit. If the batch cannot be queued, the in-memory change is dropped by restarting.
    pub(super) fn publish_change(
        &mut self,
        myself: &ActorRef<ConversationMsg>,
        writes: Vec<Write>,
        message: piazza_protocol::Message,
        done: Response,
        reply: RpcReplyPort<Response>,
    ) {
        let recipients = self.core.recipients();
        let undo = message.clone();
        let published = self.persist_and_publish(myself, writes, message, recipients, move |res| {
            let _ = reply.send(res.map_or_else(Response::Error, |()| done));
        });
        if !published {
            self.core.undo_append(&undo);
            let _ = myself.send_message(ConversationMsg::CommitFailed);
        }
    }

    /// Counters of `posts`; with `view`, counts the caller once per post.
    fn post_stats(
        &mut self,
        user: &UserId,
        posts: Vec<Seq>,
        view: bool,
    ) -> Result<(Vec<Write>, Response), ErrorCode> {
        self.core.authorize(user)?;
        let id = self.core.id().clone();
        let last = self.core.last_seq();
        let storage = self.ctx.storage.clone();
        let mut seen = HashSet::new();
        let mut writes = Vec::new();
        let mut stats = Vec::with_capacity(posts.len());
        if self.viewed.len() >= VIEWED_REMEMBERED_MAX && self.idle_storage() {
            self.viewed.clear();
            self.views.clear();
        }
        for post in posts {
            if post > last {
                return Err(ErrorCode::invalid("posts", format!("no post {post}")));
            }
            let views = match self.views.get(&post) {
                Some(views) => *views,
                None => storage
                    .counter(&id, post, CounterKind::Views)
                    .map_err(|e| e.to_error_code())?,
            };
            let mut views_now = views;
            let key = (post, user.clone());
            if view
                && seen.insert(post)
                && !self.viewed.contains(&key)
                && !storage
                    .has_viewed(&id, post, user)
                    .map_err(|e| e.to_error_code())?
            {
                views_now += 1;
                self.viewed.insert(key);
                writes.push(Write::View {
                    conversation: id.clone(),
                    post,
                    user: user.clone(),
                });
                writes.push(Write::Counter {
                    conversation: id.clone(),
                    post,
                    kind: CounterKind::Views,
                    value: views_now,
                });
            }
            self.views.insert(post, views_now);
            let comments = storage
                .counter(&id, post, CounterKind::Comments)
                .map_err(|e| e.to_error_code())?;
            stats.push(PostStats {
                post,
                views: views_now,
                comments,
            });
        }
        Ok((writes, Response::PostStats(stats)))
    }
}
