//! A harness for the criterion benches in `benches/` (not an API: hidden from the docs, used by
//! `piazza-benches` only). It exposes just enough of the node's internals to measure them in
//! process, without QUIC or storage in the way.
//!
//! [`FanoutBench`] spawns the real relay actor (`actors/relay.rs`) and registers simulated
//! sessions with it: each session's outbox is a real bounded queue, drained by its own tokio task
//! that checks every frame it receives. One [`FanoutBench::deliver`] hands one pre-encoded frame
//! to the relay with the recipient set, exactly as a conversation actor does after a commit, and
//! returns when every consumer has received it.

#![doc(hidden)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use piazza_protocol::UserId;
use ractor::{Actor, ActorRef};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::actors::conversation::core::Recipients;
use crate::actors::relay::{Outbox, Relay, RelayMsg, SessionId};

/// What a fan-out bench is made of.
#[derive(Clone, Copy, Debug)]
pub struct FanoutConfig {
    /// Users registered with the relay (online): each gets the frame once per delivery.
    pub online: usize,
    /// Recipients that are not registered (offline members of the conversation): the relay looks
    /// them up and finds no session.
    pub offline: usize,
    /// Outboxes (simulated sessions, one consumer task each) the online users are spread over,
    /// round-robin: `online` gives every user its own session, fewer put several users' pushes
    /// into one queue.
    pub sessions: usize,
}

/// Why the harness could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The configuration cannot be run as asked.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The relay actor could not be spawned or messaged.
    #[error("relay: {0}")]
    Relay(String),
    /// Not every consumer received the frame in time.
    #[error("{pending} of {sessions} sessions did not receive the frame within {timeout_ms} ms")]
    Timeout {
        /// Sessions still waiting.
        pending: usize,
        /// All sessions.
        sessions: usize,
        /// The time allowed.
        timeout_ms: u128,
    },
    /// A consumer task failed (panicked or was cancelled).
    #[error("consumer task: {0}")]
    Consumer(String),
}

/// What the consumers saw over the whole run, returned by [`FanoutBench::finish`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FanoutTally {
    /// Deliveries made ([`FanoutBench::deliver`] calls that completed).
    pub rounds: u64,
    /// Frames received by all consumers together.
    pub frames: u64,
    /// Frames that were not the very frame handed to the relay (other bytes, or a copy).
    pub foreign_frames: u64,
    /// Outboxes the relay marked as overflowed (it dropped a frame for them).
    pub overflowed_sessions: u64,
    /// Frames left over in queues after the last round (more than one per user per round).
    pub leftover_frames: u64,
}

impl FanoutTally {
    /// Whether every online user received exactly the frame of every round, once.
    pub fn is_exact(&self, online: usize) -> bool {
        self.foreign_frames == 0
            && self.overflowed_sessions == 0
            && self.leftover_frames == 0
            && Some(self.frames) == self.rounds.checked_mul(online as u64)
    }
}

/// The relay with simulated sessions; see the module docs.
#[derive(Debug)]
pub struct FanoutBench {
    config: FanoutConfig,
    relay: ActorRef<RelayMsg>,
    relay_task: Option<JoinHandle<()>>,
    recipients: Recipients,
    shared: Arc<Shared>,
    consumers: Vec<JoinHandle<ConsumerTally>>,
    overflowed: Vec<Arc<AtomicBool>>,
    rounds: u64,
}

impl FanoutBench {
    /// Spawns the relay, registers the sessions and starts their consumers. Must run inside a tokio
    /// runtime. Registration is asynchronous, but the relay's mailbox is in order, so a delivery
    /// sent afterwards finds every session registered.
    pub async fn start(config: FanoutConfig) -> Result<FanoutBench, BenchError> {
        if config.online == 0 || config.sessions == 0 || config.sessions > config.online {
            return Err(BenchError::Config(format!(
                "need 1 <= sessions <= online, got {config:?}"
            )));
        }
        let (relay, relay_task) = Actor::spawn(None, Relay, ())
            .await
            .map_err(|e| BenchError::Relay(e.to_string()))?;
        let shared = Arc::new(Shared {
            pending: AtomicUsize::new(0),
            done: Notify::new(),
            expected_ptr: AtomicUsize::new(0),
            expected_len: AtomicUsize::new(0),
        });
        let mut bench = FanoutBench {
            config,
            relay,
            relay_task: Some(relay_task),
            recipients: Arc::new(HashSet::new()),
            shared,
            consumers: Vec::with_capacity(config.sessions),
            overflowed: Vec::with_capacity(config.sessions),
            rounds: 0,
        };
        let mut recipients = HashSet::with_capacity(config.online + config.offline);
        for session in 0..config.sessions {
            // Round-robin: session `s` serves users s, s + sessions, s + 2 * sessions, …
            let users = (config.online - session).div_ceil(config.sessions);
            // A session receives one frame per user per round and is drained before the next
            // round starts, so `users` slots can never overflow; the slack only keeps the queue
            // from being exactly full, which is not what is measured.
            let (events_tx, events) = mpsc::channel(users + 1);
            let (datagrams_tx, datagrams) = mpsc::channel(1);
            let overflowed = Arc::new(AtomicBool::new(false));
            let outbox = Outbox {
                events: events_tx,
                datagrams: datagrams_tx,
                overflowed: overflowed.clone(),
            };
            for k in 0..users {
                let user = bench_user(session + k * config.sessions, "on")?;
                recipients.insert(user.clone());
                bench
                    .relay
                    .cast(RelayMsg::Register {
                        session: session as SessionId,
                        user,
                        outbox: outbox.clone(),
                    })
                    .map_err(|e| BenchError::Relay(e.to_string()))?;
            }
            let shared = bench.shared.clone();
            bench
                .consumers
                .push(tokio::spawn(consume(events, datagrams, users, shared)));
            bench.overflowed.push(overflowed);
        }
        for i in 0..config.offline {
            recipients.insert(bench_user(i, "off")?);
        }
        bench.recipients = Arc::new(recipients);
        Ok(bench)
    }

    /// Recipients of each delivery, online and offline.
    pub fn recipients(&self) -> usize {
        self.recipients.len()
    }

    /// Hands `frame` to the relay for every recipient and waits until every session's consumer
    /// has received it (at most `timeout`). Returns the time from the hand-over to the last
    /// reception. The frame is shared: consumers check they got this very allocation.
    pub async fn deliver(
        &mut self,
        frame: &Bytes,
        timeout: Duration,
    ) -> Result<Duration, BenchError> {
        self.shared
            .expected_ptr
            .store(frame.as_ptr() as usize, Ordering::Release);
        self.shared
            .expected_len
            .store(frame.len(), Ordering::Release);
        self.shared
            .pending
            .store(self.consumers.len(), Ordering::Release);
        let start = Instant::now();
        self.relay
            .cast(RelayMsg::Deliver {
                recipients: self.recipients.clone(),
                frame: frame.clone(),
            })
            .map_err(|e| BenchError::Relay(e.to_string()))?;
        if tokio::time::timeout(timeout, self.shared.done.notified())
            .await
            .is_err()
        {
            return Err(BenchError::Timeout {
                pending: self.shared.pending.load(Ordering::Acquire),
                sessions: self.consumers.len(),
                timeout_ms: timeout.as_millis(),
            });
        }
        let elapsed = start.elapsed();
        self.rounds += 1;
        Ok(elapsed)
    }

    /// Lets the relay work through its mailbox and stop (which drops its outboxes, so every
    /// consumer sees its queue close once drained), waits for the consumers and returns what they
    /// saw.
    pub async fn finish(mut self) -> Result<FanoutTally, BenchError> {
        // Not `stop`: ractor handles a stop before queued messages, which would hide deliveries
        // still in the mailbox from the tally.
        self.relay
            .drain()
            .map_err(|e| BenchError::Relay(e.to_string()))?;
        if let Some(task) = self.relay_task.take() {
            tokio::time::timeout(FINISH_TIMEOUT, task)
                .await
                .map_err(|_| BenchError::Relay("the relay did not stop".to_owned()))?
                .map_err(|e| BenchError::Relay(format!("relay task: {e}")))?;
        }
        let mut tally = FanoutTally {
            rounds: self.rounds,
            ..FanoutTally::default()
        };
        for consumer in std::mem::take(&mut self.consumers) {
            let seen = tokio::time::timeout(FINISH_TIMEOUT, consumer)
                .await
                .map_err(|_| BenchError::Consumer("did not end".to_owned()))?
                .map_err(|e| BenchError::Consumer(e.to_string()))?;
            tally.frames += seen.frames;
            tally.foreign_frames += seen.foreign;
            tally.leftover_frames += seen.leftover;
        }
        tally.overflowed_sessions = self
            .overflowed
            .iter()
            .filter(|flag| flag.load(Ordering::Acquire))
            .count() as u64;
        Ok(tally)
    }

    /// The configuration this harness was started with.
    pub fn config(&self) -> FanoutConfig {
        self.config
    }
}

impl Drop for FanoutBench {
    fn drop(&mut self) {
        // A harness dropped without `finish` (an error, a panic) must not leave the relay and its
        // consumers running in the benchmark's runtime.
        self.relay.stop(None);
        for consumer in &self.consumers {
            consumer.abort();
        }
    }
}

/// State the harness shares with the consumers.
#[derive(Debug)]
struct Shared {
    /// Sessions that have not yet received every frame of the current round.
    pending: AtomicUsize,
    /// Notified by the consumer that brings `pending` to zero.
    done: Notify,
    /// Address and length of the frame of the current round.
    expected_ptr: AtomicUsize,
    expected_len: AtomicUsize,
}

/// What one consumer saw.
#[derive(Debug, Default)]
struct ConsumerTally {
    frames: u64,
    foreign: u64,
    leftover: u64,
}

/// Longest wait for the relay to drain and stop, and for each consumer to end, in `finish`.
const FINISH_TIMEOUT: Duration = Duration::from_secs(30);

/// Rounds one consumer serves at most; far more than any benchmark runs, it only bounds the loop.
const ROUNDS_MAX: u64 = 1 << 40;

/// Drains one session's outbox: `users` frames per round, each checked to be the round's frame,
/// then reports the round done. Ends when the queue closes (the relay stopped).
async fn consume(
    mut events: mpsc::Receiver<Bytes>,
    // Held so the relay's datagram queue stays open, as a live session's does.
    _datagrams: mpsc::Receiver<Bytes>,
    users: usize,
    shared: Arc<Shared>,
) -> ConsumerTally {
    let mut tally = ConsumerTally::default();
    for _ in 0..ROUNDS_MAX {
        for received in 0..users {
            let Some(frame) = events.recv().await else {
                // The queue closes after the last round; frames of an unfinished round are ones
                // no delivery accounts for (the harness waits for every round to complete).
                tally.leftover = received as u64;
                return tally;
            };
            tally.frames += 1;
            let same = frame.as_ptr() as usize == shared.expected_ptr.load(Ordering::Acquire)
                && frame.len() == shared.expected_len.load(Ordering::Acquire);
            if !same {
                tally.foreign += 1;
            }
        }
        if shared.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            shared.done.notify_one();
        }
    }
    tally
}

fn bench_user(index: usize, prefix: &str) -> Result<UserId, BenchError> {
    format!("{prefix}{index}")
        .parse()
        .map_err(|e| BenchError::Config(format!("user name: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn config(online: usize, offline: usize, sessions: usize) -> FanoutConfig {
        FanoutConfig {
            online,
            offline,
            sessions,
        }
    }

    #[tokio::test]
    async fn every_online_user_gets_the_shared_frame_once_per_round() {
        for cfg in [config(50, 0, 50), config(50, 20, 7), config(1, 3, 1)] {
            let mut bench = FanoutBench::start(cfg).await.unwrap();
            assert_eq!(bench.recipients(), cfg.online + cfg.offline);
            for round in 0..3u8 {
                let frame = Bytes::from(vec![round; 64]);
                bench.deliver(&frame, TIMEOUT).await.unwrap();
            }
            let tally = bench.finish().await.unwrap();
            assert_eq!(tally.rounds, 3);
            assert_eq!(tally.frames, 3 * cfg.online as u64);
            assert!(tally.is_exact(cfg.online), "{cfg:?}: {tally:?}");
        }
    }

    #[tokio::test]
    async fn a_copied_frame_is_counted_as_foreign() {
        let mut bench = FanoutBench::start(config(4, 0, 4)).await.unwrap();
        let frame = Bytes::from_static(b"the frame");
        bench.deliver(&frame, TIMEOUT).await.unwrap();
        // Same bytes, another allocation: what a relay that copied the frame would hand out.
        let copy = Bytes::copy_from_slice(&frame);
        bench
            .relay
            .cast(RelayMsg::Deliver {
                recipients: bench.recipients.clone(),
                frame: copy,
            })
            .unwrap();
        let tally = bench.finish().await.unwrap();
        assert_eq!((tally.frames, tally.foreign_frames), (8, 4), "{tally:?}");
        assert!(!tally.is_exact(4));
    }

    #[tokio::test]
    async fn an_extra_delivery_is_not_exact() {
        // Several users per session: the extra frames are left over in the queues.
        let mut bench = FanoutBench::start(config(6, 0, 2)).await.unwrap();
        let frame = Bytes::from_static(b"once");
        bench.deliver(&frame, TIMEOUT).await.unwrap();
        let mut only_one: HashSet<UserId> = HashSet::new();
        only_one.insert(bench_user(0, "on").unwrap());
        bench
            .relay
            .cast(RelayMsg::Deliver {
                recipients: Arc::new(only_one),
                frame: frame.clone(),
            })
            .unwrap();
        let tally = bench.finish().await.unwrap();
        assert_eq!((tally.frames, tally.leftover_frames), (7, 1), "{tally:?}");
        assert!(!tally.is_exact(6));
    }

    #[tokio::test]
    async fn an_overflowing_outbox_is_reported() {
        let mut bench = FanoutBench::start(config(2, 0, 2)).await.unwrap();
        let frame = Bytes::from_static(b"x");
        bench.deliver(&frame, TIMEOUT).await.unwrap();
        bench.overflowed[1].store(true, Ordering::Release);
        let tally = bench.finish().await.unwrap();
        assert_eq!(tally.overflowed_sessions, 1);
        assert!(!tally.is_exact(2));
    }

    #[tokio::test]
    async fn a_missing_delivery_times_out() {
        let mut bench = FanoutBench::start(config(3, 0, 3)).await.unwrap();
        // Without its session the third user never receives anything.
        bench
            .relay
            .cast(RelayMsg::Unregister {
                session: 2,
                user: bench_user(2, "on").unwrap(),
            })
            .unwrap();
        let frame = Bytes::from_static(b"x");
        let error = bench
            .deliver(&frame, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                BenchError::Timeout {
                    pending: 1,
                    sessions: 3,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[tokio::test]
    async fn impossible_configurations_are_refused() {
        for cfg in [config(0, 5, 1), config(5, 0, 0), config(5, 0, 6)] {
            assert!(FanoutBench::start(cfg).await.is_err(), "{cfg:?}");
        }
    }
}
