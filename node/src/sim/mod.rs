//! Seeded simulation of the conversation core (test-only), in the spirit of quinn's `Pair` and
//! TigerBeetle's VOPR: a pseudo-random schedule of sends, client retries, group commits and node
//! crashes (which lose everything not yet committed) drives a [`ConversationCore`] against a
//! simulated store, and the delivery invariants are checked every 100 steps and at the end (ack
//! stability of retries on every step):
//!
//! * the stored sequence is gap-free from 1;
//! * no `(sender, client_msg_id)` is stored twice;
//! * an acknowledged message is stored at the seq of its ack, and every later retry of it is
//!   answered with that same seq;
//! * nothing acknowledged is ever lost, across any number of crashes.
//!
//! A failure prints the seed; `PIAZZA_SIM_SEED=<seed>` replays exactly that run.

use std::collections::{HashMap, HashSet};

use piazza_protocol::{ClientMsgId, ConversationId, Message, Seq, UserId};

use crate::actors::conversation::core::{ConversationCore, Restored, SendOutcome};
use crate::storage::Write;

/// Steps per run; bounded so the suite stays fast.
const STEPS_MAX: usize = 1_500;
/// Runs with different seeds when no seed is given.
const RUNS: u64 = 16;
/// The dedup window used by the simulated node; retries reach back at most this far.
const DEDUP_WINDOW: usize = 4096;

/// xorshift64*: tiny, deterministic, good enough to pick actions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Sim {
    rng: Rng,
    id: ConversationId,
    users: [UserId; 2],
    core: ConversationCore,
    /// Durable messages, by seq - 1.
    stored: Vec<Message>,
    /// Appended by the core, queued for the next group commit, with the ack to give.
    pending: Vec<(Message, Seq)>,
    /// Acks the client received: (sender, id) → seq.
    acked: HashMap<(UserId, ClientMsgId), Seq>,
    /// Every id ever sent, acked or not, for retries.
    sent: Vec<(UserId, ClientMsgId)>,
    next_id: u64,
    now_ms: u64,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let users: [UserId; 2] = ["alice".parse().unwrap(), "bob".parse().unwrap()];
        let id = ConversationId::direct(users[0].clone(), users[1].clone()).unwrap();
        let core = ConversationCore::restore(id.clone(), Restored::default(), DEDUP_WINDOW);
        Sim {
            rng: Rng(seed | 1),
            id,
            users,
            core,
            stored: Vec::new(),
            pending: Vec::new(),
            acked: HashMap::new(),
            sent: Vec::new(),
            next_id: 0,
            now_ms: 1_000,
        }
    }

    fn step(&mut self) {
        self.now_ms += self.rng.below(5);
        match self.rng.below(100) {
            0..=44 => {
                let sender = self.users[self.rng.below(2) as usize].clone();
                let id: ClientMsgId = format!("m{}", self.next_id).parse().unwrap();
                self.next_id += 1;
                self.sent.push((sender.clone(), id.clone()));
                self.send(sender, id);
            }
            45..=64 => {
                if !self.sent.is_empty() {
                    let (sender, id) =
                        self.sent[self.rng.below(self.sent.len() as u64) as usize].clone();
                    self.send(sender, id);
                }
            }
            65..=94 => self.commit(),
            _ => self.crash(),
        }
    }

    fn send(&mut self, sender: UserId, id: ClientMsgId) {
        match self
            .core
            .handle_send(&sender, id.clone(), "t".into(), self.now_ms)
            .unwrap()
        {
            SendOutcome::Append {
                message,
                writes,
                ack,
            } => {
                assert!(
                    !self.acked.contains_key(&(sender.clone(), id.clone())),
                    "an acknowledged message was appended again: {sender} {id}"
                );
                assert!(writes.iter().any(|w| matches!(w, Write::Message(_))));
                self.pending.push((message, ack.seq));
            }
            SendOutcome::Quiet { .. } => unreachable!("a send is never quiet"),
            SendOutcome::Duplicate { ack } => {
                // Answered only after earlier writes commit (a barrier); in the simulation it is
                // checked against what the client was told before, if anything.
                if let Some(seq) = self.acked.get(&(sender.clone(), id.clone())) {
                    assert_eq!(
                        *seq, ack.seq,
                        "a retry got a different seq than the original ack"
                    );
                }
            }
        }
    }

    /// A group commit of some prefix of the queue: durable, then acked in order.
    fn commit(&mut self) {
        let n = self.rng.below(self.pending.len() as u64 + 1) as usize;
        for (message, ack_seq) in self.pending.drain(..n) {
            assert_eq!(
                message.seq.get(),
                self.stored.len() as u64 + 1,
                "commit out of order"
            );
            assert_eq!(message.seq, ack_seq);
            self.acked.insert(
                (message.sender.clone(), message.client_msg_id.clone()),
                ack_seq,
            );
            self.stored.push(message);
        }
    }

    /// The node dies: queued writes are lost (never acked), the actor is rebuilt from storage.
    fn crash(&mut self) {
        self.pending.clear();
        let from = self.stored.len().saturating_sub(DEDUP_WINDOW);
        let restored = Restored {
            last_seq: Seq::new(self.stored.len() as u64),
            recent: self.stored[from..].to_vec(),
            ..Restored::default()
        };
        self.core = ConversationCore::restore(self.id.clone(), restored, DEDUP_WINDOW);
    }

    fn check(&self) {
        let mut seen = HashSet::new();
        for (i, message) in self.stored.iter().enumerate() {
            assert_eq!(
                message.seq.get(),
                i as u64 + 1,
                "gap in the stored sequence"
            );
            assert!(
                seen.insert((message.sender.clone(), message.client_msg_id.clone())),
                "stored twice: {} {}",
                message.sender,
                message.client_msg_id
            );
        }
        for ((sender, id), seq) in &self.acked {
            let stored = &self.stored[(seq.get() - 1) as usize];
            assert!(
                &stored.sender == sender && &stored.client_msg_id == id,
                "acked message lost or moved"
            );
        }
    }
}

fn run(seed: u64) {
    let mut sim = Sim::new(seed);
    for step in 0..STEPS_MAX {
        sim.step();
        // The full check is O(stored); every 100 steps keeps a run fast and still localises a
        // failure to a short window of the (replayable) schedule.
        if step % 100 == 99 {
            sim.check();
        }
    }
    sim.check();
}

#[test]
fn conversation_core_under_crashes_and_retries() {
    let seeds: Vec<u64> = match std::env::var("PIAZZA_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("PIAZZA_SIM_SEED must be a number")],
        Err(_) => (1..=RUNS)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect(),
    };
    for seed in seeds {
        let result = std::panic::catch_unwind(|| run(seed));
        if let Err(panic) = result {
            eprintln!("simulation failed; replay with PIAZZA_SIM_SEED={seed}");
            std::panic::resume_unwind(panic);
        }
    }
}
