//! The relay: one actor per node that writes fan-out batches to the local sessions of the
//! recipients. Conversation actors send it one batch per committed message (and, with a cluster,
//! one per interested node). It never waits for a session: each session has a bounded outbox, and
//! a full outbox marks the session for `Resync` instead of blocking anyone.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use piazza_protocol::UserId;
use ractor::{Actor, ActorProcessingErr, ActorRef};
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
}

/// The relay actor.
#[derive(Debug)]
pub(crate) struct Relay;

/// Local sessions by user.
#[derive(Debug, Default)]
pub(crate) struct RelayState {
    sessions: HashMap<UserId, Vec<(SessionId, Outbox)>>,
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
