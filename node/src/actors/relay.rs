//! The relay: one actor per node that writes fan-out batches to the local sessions of the
//! recipients. Conversation actors send it one batch per committed message (and, with a cluster,
//! one per interested node). It never waits for a session: each session has a bounded outbox, and
//! a full outbox marks the session for `Resync` instead of blocking anyone.
//!
//! It also keeps presence, since it already knows every local session: which users share their
//! online state (opt-in, per connection), who watches whom, and when a visible user was last
//! seen. Changes go out as datagrams: cheap and lossy, a client re-asks with `WatchPresence`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use piazza_protocol::{Datagram, PresenceState, UserId, codec};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::mpsc;

use super::conversation::core::Recipients;

/// Identifies one session (connection) on this node.
pub(crate) type SessionId = u64;

/// The sending side of a session's outbound queues, held by the relay.
#[derive(Clone, Debug)]
pub(crate) struct Outbox {
    /// Encoded event frames, written to the connection's event stream in order.
    pub(crate) events: mpsc::Sender<Bytes>,
    /// Encoded datagram bodies (typing); lossy by nature.
    pub(crate) datagrams: mpsc::Sender<Bytes>,
    /// Set when an event had to be dropped; the session then tells its client to resync.
    pub(crate) overflowed: Arc<AtomicBool>,
}

/// Messages of the relay.
#[derive(Debug)]
pub(crate) enum RelayMsg {
    /// A session opened.
    Register {
        session: SessionId,
        user: UserId,
        outbox: Outbox,
    },
    /// A session closed.
    Unregister { session: SessionId, user: UserId },
    /// Deliver an encoded event frame to every local session of `recipients`.
    Deliver {
        recipients: Recipients,
        frame: Bytes,
    },
    /// Send a datagram to every local session of `recipients` except `except`'s.
    Datagram {
        recipients: Recipients,
        except: UserId,
        payload: Bytes,
    },
    /// A session shares (or stops sharing) its user's online state.
    SetPresence {
        session: SessionId,
        user: UserId,
        visible: bool,
    },
    /// A session watches `users` (already authorized by their conversation's actor); answers
    /// with the current state of those who share it.
    Watch {
        session: SessionId,
        user: UserId,
        users: Vec<UserId>,
        reply: RpcReplyPort<Vec<PresenceState>>,
    },
}

/// Most users one session watches; more watches replace none and are refused by truncation.
pub(crate) const PRESENCE_WATCHES_MAX: usize = 1000;
/// Most users whose last-seen time the relay remembers (forgotten all at once beyond it).
const LAST_SEEN_MAX: usize = 100_000;

/// The relay actor.
#[derive(Debug)]
pub(crate) struct Relay;

/// Local sessions by user, and presence.
#[derive(Debug, Default)]
pub(crate) struct RelayState {
    sessions: HashMap<UserId, Vec<(SessionId, Outbox)>>,
    /// Sessions that share their user's presence, per user.
    visible: HashMap<UserId, HashSet<SessionId>>,
    /// When a user who shared presence was last online (milliseconds since the Unix epoch).
    last_seen: HashMap<UserId, u64>,
    /// Who watches a user: watching session → its outbox.
    watchers: HashMap<UserId, HashMap<SessionId, Outbox>>,
    /// What a session watches, to clean up and bound it.
    watching: HashMap<SessionId, HashSet<UserId>>,
}

impl RelayState {
    /// Calls `f` for every local session of a recipient, walking whichever side is smaller: the
    /// recipients or the users online here.
    fn for_each_session(&self, recipients: &Recipients, mut f: impl FnMut(&UserId, &Outbox)) {
        if recipients.len() <= self.sessions.len() {
            for user in recipients.iter() {
                for (_, outbox) in self.sessions.get(user).into_iter().flatten() {
                    f(user, outbox);
                }
            }
        } else {
            for (user, sessions) in &self.sessions {
                if recipients.contains(user) {
                    for (_, outbox) in sessions {
                        f(user, outbox);
                    }
                }
            }
        }
    }
}

impl RelayState {
    fn outbox(&self, user: &UserId, session: SessionId) -> Option<&Outbox> {
        self.sessions
            .get(user)?
            .iter()
            .find(|(id, _)| *id == session)
            .map(|(_, outbox)| outbox)
    }

    fn presence_of(&self, user: &UserId) -> Option<PresenceState> {
        if self.visible.contains_key(user) {
            return Some(PresenceState {
                user: user.clone(),
                online: true,
                last_seen_ms: Some(crate::node::now_ms()),
            });
        }
        self.last_seen.get(user).map(|at| PresenceState {
            user: user.clone(),
            online: false,
            last_seen_ms: Some(*at),
        })
    }

    /// Tells `user`'s watchers their state.
    fn announce(&self, user: &UserId) {
        let Some(watchers) = self.watchers.get(user) else {
            return;
        };
        let Some(state) = self.presence_of(user) else {
            return;
        };
        let Ok(payload) = codec::encode(&Datagram::Presence(state)) else {
            return;
        };
        let payload = Bytes::from(payload);
        for outbox in watchers.values() {
            // Lossy by design: a full queue loses one change; the client can ask again.
            let _ = outbox.datagrams.try_send(payload.clone());
        }
    }

    fn set_visible(&mut self, session: SessionId, user: &UserId, visible: bool) {
        let was_online = self.visible.contains_key(user);
        if visible {
            self.visible
                .entry(user.clone())
                .or_default()
                .insert(session);
        } else if let Some(sessions) = self.visible.get_mut(user) {
            sessions.remove(&session);
            if sessions.is_empty() {
                self.visible.remove(user);
            }
        }
        let online = self.visible.contains_key(user);
        if was_online && !online {
            if self.last_seen.len() >= LAST_SEEN_MAX {
                self.last_seen.clear();
            }
            self.last_seen.insert(user.clone(), crate::node::now_ms());
        }
        if was_online != online {
            metrics::gauge!("piazza_presence_online").increment(if online { 1.0 } else { -1.0 });
            self.announce(user);
        }
    }

    fn unwatch_all(&mut self, session: SessionId) {
        for user in self.watching.remove(&session).into_iter().flatten() {
            if let Some(watchers) = self.watchers.get_mut(&user) {
                watchers.remove(&session);
                if watchers.is_empty() {
                    self.watchers.remove(&user);
                }
            }
        }
    }
}

impl Actor for Relay {
    type Msg = RelayMsg;
    type State = RelayState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<RelayMsg>,
        _args: (),
    ) -> Result<RelayState, ActorProcessingErr> {
        Ok(RelayState::default())
    }

    async fn handle(
        &self,
        _myself: ActorRef<RelayMsg>,
        message: RelayMsg,
        state: &mut RelayState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RelayMsg::Register {
                session,
                user,
                outbox,
            } => {
                state
                    .sessions
                    .entry(user)
                    .or_default()
                    .push((session, outbox));
            }
            RelayMsg::Unregister { session, user } => {
                state.set_visible(session, &user, false);
                state.unwatch_all(session);
                if let Some(list) = state.sessions.get_mut(&user) {
                    list.retain(|(id, _)| *id != session);
                    if list.is_empty() {
                        state.sessions.remove(&user);
                    }
                }
            }
            RelayMsg::Deliver { recipients, frame } => {
                let (mut delivered, mut dropped) = (0u64, 0u64);
                state.for_each_session(&recipients, |_, outbox| {
                    match outbox.events.try_send(frame.clone()) {
                        Ok(()) => delivered += 1,
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            outbox.overflowed.store(true, Ordering::Release);
                            dropped += 1;
                        }
                        // The session is closing; its client will sync on reconnect.
                        Err(mpsc::error::TrySendError::Closed(_)) => {}
                    }
                });
                metrics::counter!("piazza_deliveries_total").increment(delivered);
                if dropped > 0 {
                    metrics::counter!("piazza_deliveries_dropped_total").increment(dropped);
                }
            }
            RelayMsg::SetPresence {
                session,
                user,
                visible,
            } => state.set_visible(session, &user, visible),
            RelayMsg::Watch {
                session,
                user,
                users,
                reply,
            } => {
                let Some(outbox) = state.outbox(&user, session).cloned() else {
                    let _ = reply.send(Vec::new());
                    return Ok(());
                };
                let watching = state.watching.entry(session).or_default();
                let mut current = Vec::new();
                for watched in users {
                    if watching.len() >= PRESENCE_WATCHES_MAX && !watching.contains(&watched) {
                        break;
                    }
                    watching.insert(watched.clone());
                    state
                        .watchers
                        .entry(watched.clone())
                        .or_default()
                        .insert(session, outbox.clone());
                    current.push(watched);
                }
                let states = current
                    .iter()
                    .filter_map(|user| state.presence_of(user))
                    .collect();
                let _ = reply.send(states);
            }
            RelayMsg::Datagram {
                recipients,
                except,
                payload,
            } => {
                state.for_each_session(&recipients, |user, outbox| {
                    if *user != except {
                        // Typing indicators are best effort: a full queue just loses one.
                        let _ = outbox.datagrams.try_send(payload.clone());
                    }
                });
            }
        }
        Ok(())
    }
}
