//! A harness for the criterion benches in `benches/` (not an API: hidden from the docs, used by
//! `piazza-benches` only). It exposes just enough of the node's internals to measure them in
//! process, without QUIC or storage in the way.
//!
//! [`FanoutBench`] spawns the real relay actor (`actors/relay.rs`) and registers simulated
//! sessions with it: each session's outbox is a real bounded queue, drained by its own tokio task
//! that checks every frame it receives. One [`FanoutBench::deliver`] hands one pre-encoded frame
//! to the relay with the recipient set, exactly as a conversation actor does after a commit, and
//! returns when every consumer has received it.
//!
//! [`CommerceBench`] drives the pure commerce core (`commerce/shop.rs`, `Shop`) of one shop
//! through an order's transitions — place (cart → checkout), accept, request payment, the
//! provider's authorization and capture notifications, fulfil — exactly as the shop actor calls
//! it, without the actor, its log or storage. Orders are retired (delivered, completed, archived)
//! afterwards so the shop's order count stays where the bench put it.

#![doc(hidden)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use piazza_protocol::commerce::{OrderStatus, PaymentPlan};
use piazza_protocol::{Money, UserId};
use ractor::{Actor, ActorRef};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::actors::conversation::core::Recipients;
use crate::actors::relay::{Outbox, Relay, RelayMsg, SessionId};
use crate::commerce::actor::{Actor as Who, StaffRole};
use crate::commerce::catalog::{ProductSpec, Section, StockKey};
use crate::commerce::ids::{CommandId, OrderId, PaymentId, ProviderEventId};
use crate::commerce::order::OrderCommand;
use crate::commerce::payment::{Notification, NotificationKind};
use crate::commerce::shop::{Notified, Settings, Shop};

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
    /// The commerce core refused a step the bench expected it to take.
    #[error("commerce: {0}")]
    Commerce(String),
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

/// One transition of an order, in lifecycle order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CommerceStep {
    /// Add one unit to the customer's cart and check it out: prices the line, checks the
    /// customer's unpaid orders, reserves stock.
    Place,
    /// The owner accepts the order.
    Accept,
    /// The customer chooses to pay in full: the first payment and its authorization request.
    RequestPayment,
    /// The provider's authorization notification: the capture request follows at once.
    Authorized,
    /// The provider's capture notification: the order is paid and its stock committed.
    Captured,
    /// The owner ships the order.
    Fulfil,
}

impl CommerceStep {
    /// Every step, in lifecycle order.
    pub const ALL: [CommerceStep; 6] = [
        CommerceStep::Place,
        CommerceStep::Accept,
        CommerceStep::RequestPayment,
        CommerceStep::Authorized,
        CommerceStep::Captured,
        CommerceStep::Fulfil,
    ];

    /// A short name for bench ids.
    pub fn name(self) -> &'static str {
        match self {
            CommerceStep::Place => "place",
            CommerceStep::Accept => "accept",
            CommerceStep::RequestPayment => "request_payment",
            CommerceStep::Authorized => "authorized",
            CommerceStep::Captured => "captured",
            CommerceStep::Fulfil => "fulfil",
        }
    }
}

/// One shop's commerce core with a catalog and existing paid orders; see the module docs.
/// Bench order `i` is `b-<i>`, placed by customer `i mod` [`COMMERCE_CUSTOMERS`].
#[derive(Debug)]
pub struct CommerceBench {
    shop: Shop,
    owner: Who,
    customers: Vec<UserId>,
    products: Vec<StockKey>,
    price: Money,
}

/// Customers of the bench orders: with at most `UNPAID_ORDERS_PER_CUSTOMER_MAX`
/// unpaid orders each, up to 10,000 bench orders may be between placement and payment at once.
pub const COMMERCE_CUSTOMERS: usize = 1_000;

/// The fixed "now" of every call (the core takes time as an argument): 2026-01-01.
const COMMERCE_NOW_MS: u64 = 1_767_225_600_000;

/// Units on hand of every product: far more than any bench sells.
const COMMERCE_STOCK: u32 = 1_000_000_000;

impl CommerceBench {
    /// A shop with `products` products (10.00 EUR each, tracked stock) in one catalog, and
    /// `orders` existing orders, each placed, accepted and paid in full (what a busy shop holds
    /// in memory). At most `PRODUCTS_MAX` products and
    /// `ORDERS_MAX` orders, less the bench's own.
    pub fn new(products: usize, orders: usize) -> Result<CommerceBench, BenchError> {
        if products == 0 || products > crate::commerce::catalog::PRODUCTS_MAX {
            return Err(BenchError::Config(format!(
                "products: 1..=10000, got {products}"
            )));
        }
        let shop_id = parse("bench-shop")?;
        let mut shop = Shop::new(shop_id, Settings::default());
        let price = Money::new(1000, parse("EUR")?);
        let catalog = parse("main")?;
        shop.catalog_mut()
            .put_catalog(
                catalog,
                Section {
                    title: "Main".to_owned(),
                },
            )
            .map_err(commerce)?;
        let mut keys = Vec::with_capacity(products);
        for p in 0..products {
            let key = StockKey {
                product: parse(&format!("p{p}"))?,
                variant: None,
            };
            shop.catalog_mut()
                .put_product(ProductSpec {
                    id: key.product.clone(),
                    catalog: parse("main")?,
                    title: format!("Product {p}"),
                    description: String::new(),
                    price,
                    categories: Vec::new(),
                    media: Vec::new(),
                    variants: Vec::new(),
                    active: true,
                })
                .map_err(commerce)?;
            shop.catalog_mut()
                .set_stock(&key, Some(COMMERCE_STOCK))
                .map_err(commerce)?;
            keys.push(key);
        }
        let customers = (0..COMMERCE_CUSTOMERS)
            .map(|c| parse(&format!("customer{c}")))
            .collect::<Result<Vec<UserId>, _>>()?;
        let mut bench = CommerceBench {
            shop,
            owner: Who::Staff {
                user: parse("owner")?,
                role: StaffRole::Owner,
            },
            customers,
            products: keys,
            price,
        };
        for i in 0..orders as u64 {
            let order = parse::<OrderId>(&format!("e-{i}"))?;
            for step in &CommerceStep::ALL[..5] {
                bench.apply(*step, &order, i)?;
            }
        }
        Ok(bench)
    }

    /// Orders held in memory.
    pub fn orders(&self) -> usize {
        self.shop.orders().count()
    }

    /// Runs `step` on bench order `i`, which must have gone through the steps before it.
    pub fn step(&mut self, step: CommerceStep, i: u64) -> Result<(), BenchError> {
        self.apply(step, &bench_order(i)?, i)
    }

    /// Runs every step before `step` on bench order `i` (none for [`CommerceStep::Place`]).
    pub fn prepare(&mut self, step: CommerceStep, i: u64) -> Result<(), BenchError> {
        let order = bench_order(i)?;
        for earlier in CommerceStep::ALL.iter().take_while(|s| **s < step) {
            self.apply(*earlier, &order, i)?;
        }
        Ok(())
    }

    /// The whole lifecycle of bench order `i`, from the cart to fulfilment.
    pub fn place_accept_pay_fulfil(&mut self, i: u64) -> Result<(), BenchError> {
        let order = bench_order(i)?;
        for step in CommerceStep::ALL {
            self.apply(step, &order, i)?;
        }
        Ok(())
    }

    /// Takes bench order `i`, which went through `done` and the steps before it, the rest of the
    /// way (up to fulfilment, then delivered and completed) and archives it, so the shop holds
    /// as many orders as before it was placed.
    pub fn retire(&mut self, done: CommerceStep, i: u64) -> Result<(), BenchError> {
        let order = bench_order(i)?;
        for later in CommerceStep::ALL.iter().filter(|s| **s > done) {
            self.apply(*later, &order, i)?;
        }
        for (suffix, command) in [
            ("d", OrderCommand::MarkDelivered),
            ("c", OrderCommand::Complete),
        ] {
            let id = command_id(&order, suffix)?;
            self.shop
                .handle(&Who::System, id, &order, command, COMMERCE_NOW_MS)
                .map_err(commerce)?;
        }
        self.shop.archive(&order).map_err(commerce)
    }

    /// What the shop actor computes after every message to arm its timer: a pass over every
    /// order in memory.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.shop.next_deadline_ms()
    }

    fn apply(&mut self, step: CommerceStep, order: &OrderId, i: u64) -> Result<(), BenchError> {
        let customer = self.customers[(i % self.customers.len() as u64) as usize].clone();
        let key = self.products[(i % self.products.len() as u64) as usize].clone();
        let now = COMMERCE_NOW_MS;
        let payment = PaymentId::new(order, 1);
        let notify = |shop: &mut Shop, sequence: u64, kind: NotificationKind| {
            let notification = Notification {
                event: parse::<ProviderEventId>(&format!("{order}-{sequence}"))?,
                payment: payment.clone(),
                attempt: 1,
                sequence,
                kind,
            };
            match shop
                .handle_notification(&notification, now)
                .map_err(commerce)?
            {
                Notified::Applied(_) => Ok(()),
                other => Err(BenchError::Commerce(format!("{order}: {other:?}"))),
            }
        };
        let owner = self.owner.clone();
        let buyer = Who::Customer(customer.clone());
        let command = |shop: &mut Shop, who: &Who, suffix: &str, command: OrderCommand| {
            shop.handle(who, command_id(order, suffix)?, order, command, now)
                .map(|_| ())
                .map_err(commerce)
        };
        match step {
            CommerceStep::Place => {
                self.shop
                    .cart_add(&customer, &key, 1, now)
                    .map_err(commerce)?;
                let id = parse::<CommandId>(order.as_str())?;
                self.shop
                    .checkout(&buyer, id, order.clone(), None, now)
                    .map_err(commerce)?;
            }
            CommerceStep::Accept => command(&mut self.shop, &owner, "a", OrderCommand::Accept)?,
            CommerceStep::RequestPayment => command(
                &mut self.shop,
                &buyer,
                "p",
                OrderCommand::RequestPayment {
                    plan: PaymentPlan::Full,
                },
            )?,
            CommerceStep::Authorized => notify(
                &mut self.shop,
                1,
                NotificationKind::Authorized { amount: self.price },
            )?,
            CommerceStep::Captured => {
                notify(
                    &mut self.shop,
                    2,
                    NotificationKind::Captured { amount: self.price },
                )?;
                let status = self.shop.order(order).map(|o| o.status());
                if status != Some(OrderStatus::Paid) {
                    return Err(BenchError::Commerce(format!(
                        "{order} is {status:?}, not paid"
                    )));
                }
            }
            CommerceStep::Fulfil => command(
                &mut self.shop,
                &owner,
                "f",
                OrderCommand::Fulfil { tracking: None },
            )?,
        }
        Ok(())
    }
}

fn bench_order(i: u64) -> Result<OrderId, BenchError> {
    parse(&format!("b-{i}"))
}

fn command_id(order: &OrderId, suffix: &str) -> Result<CommandId, BenchError> {
    parse(&format!("{order}-{suffix}"))
}

fn parse<T: std::str::FromStr>(text: &str) -> Result<T, BenchError>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e| BenchError::Config(format!("{text:?}: {e}")))
}

fn commerce(error: crate::commerce::error::Error) -> BenchError {
    BenchError::Commerce(error.to_string())
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

    #[test]
    fn a_commerce_bench_order_goes_through_every_step_and_leaves_no_trace() {
        let mut bench = CommerceBench::new(10, 25).unwrap();
        assert_eq!(bench.orders(), 25);
        bench.place_accept_pay_fulfil(0).unwrap();
        assert_eq!(bench.orders(), 26);
        bench.retire(CommerceStep::Fulfil, 0).unwrap();
        assert_eq!(bench.orders(), 25);
        for (i, step) in CommerceStep::ALL.into_iter().enumerate() {
            let i = 1 + i as u64;
            bench.prepare(step, i).unwrap();
            bench.step(step, i).unwrap();
            bench.retire(step, i).unwrap();
        }
        assert_eq!(bench.orders(), 25);
        assert!(bench.next_deadline_ms().is_none(), "every order is paid");
        // A step out of order is refused, not skipped.
        assert!(bench.step(CommerceStep::Accept, 99).is_err());
        assert!(CommerceBench::new(0, 0).is_err());
    }

    #[tokio::test]
    async fn impossible_configurations_are_refused() {
        for cfg in [config(0, 5, 1), config(5, 0, 0), config(5, 0, 6)] {
            assert!(FanoutBench::start(cfg).await.is_err(), "{cfg:?}");
        }
    }
}
