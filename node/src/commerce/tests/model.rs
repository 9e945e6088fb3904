//! Property tests of the order and payment state machine, through [`Shop`], against a reference
//! model and a simulated payment provider.
//!
//! A case is a random sequence of operations: customers place orders (sharing scarce stock and
//! a limited coupon), customers and staff of every role issue commands (allowed or not), old
//! command ids are replayed, the provider processes requests (approving or declining), its
//! notifications are delivered in random order and duplicated, time passes (expiry,
//! instalments), and the node "restarts" and resends its pending requests. A notification the
//! core does not believe is answered with the provider's truthful snapshot, as the shop actor
//! will.
//!
//! Checked after every operation:
//!
//! * the reference model predicts every command's outcome (success, `Forbidden`,
//!   `InvalidTransition`, coupon and stock refusals) and every order's status; status changes
//!   the core makes on its own (paid, expired, refunded) must be justified by the provider's
//!   truth or the clock;
//! * the provider never sees a capture without authorization, a refund beyond what it captured,
//!   an operation on an unknown intent, or an idempotency key reused for another request;
//! * amounts conserve: per payment `captured <= amount`, `refunded + refunding <= captured`,
//!   and the core never believes more was captured or refunded than the provider did;
//! * no transition happens twice: each order event at most once per order, each payment event
//!   once per attempt, each refund event once per refund; a replayed command changes nothing;
//! * stock matches the model's ledger (never negative, never oversold) and the coupon's counters
//!   match the model and its limits.
//!
//! At the end everything in flight is settled; then the core agrees with the provider on every
//! payment, the events add up to the state, and closed or refunded orders hold no money.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::super::actor::{Actor, StaffRole};
use super::super::catalog::{Item, Stock, StockKey};
use super::super::coupon::{CouponSpec, Discount};
use super::super::error::Error;
use super::super::event::{CommerceEvent, Effects};
use super::super::ids::{CommandId, CouponCode, OrderId, PaymentId, RefundId};
use super::super::order::{OrderCommand, OrderStatus};
use super::super::payment::{
    INSTALMENT_INTERVAL_MS_MIN, Notification, NotificationKind, PaymentPlan, PaymentStatus,
    ProviderRequest, RefundSnapshot, RefundStatus, RequestKind, Snapshot, SnapshotStatus,
};
use super::super::shop::{Notified, Settings, Shop};
use super::{eur, id, product, user};

const DAY_MS: u64 = 24 * 60 * 60 * 1000;
/// Products: (id, price in cents, stock; `None` for unlimited).
const PRODUCTS: [(&str, i64, Option<u32>); 3] =
    [("a", 300, Some(3)), ("b", 500, Some(2)), ("c", 700, None)];
const ORDERS: u8 = 4;
const CUSTOMERS: u8 = 2;
const COUPON_TOTAL_MAX: u32 = 2;

#[derive(Clone, Debug)]
enum Op {
    Place {
        order: u8,
        customer: u8,
        /// Product index → quantity.
        lines: BTreeMap<u8, u8>,
        coupon: bool,
    },
    Command {
        order: u8,
        /// 0, 1: customers; 2: agent; 3: manager; 4: owner; 5: system; more: the actor who
        /// fits the command (the order's customer, an agent, a manager).
        actor: u8,
        /// 0..10: that command; more: the order's natural next command.
        kind: u8,
        amount: u16,
    },
    Replay(u16),
    Process {
        approve: bool,
    },
    Deliver {
        pick: u16,
        duplicate: bool,
    },
    Tick(u64),
    Restart,
    /// Someone refunds part of a captured intent in the provider's dashboard.
    ExternalRefund {
        pick: u16,
        amount: u16,
    },
    /// An authorization lapses at the provider.
    Lapse(u16),
    /// The shop reconciles one intent with the provider.
    Sync(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (
            0..ORDERS,
            0..CUSTOMERS,
            prop::collection::btree_map(0..3u8, 1..3u8, 1..3),
            any::<bool>(),
        )
            .prop_map(|(order, customer, lines, coupon)| {
                Op::Place { order, customer, lines, coupon }
            }),
        6 => (0..ORDERS, 0..12u8, 0..20u8, 0..2000u16)
            .prop_map(|(order, actor, kind, amount)| Op::Command { order, actor, kind, amount }),
        1 => any::<u16>().prop_map(Op::Replay),
        4 => (0..10u8).prop_map(|x| Op::Process { approve: x < 8 }),
        4 => (any::<u16>(), any::<bool>())
            .prop_map(|(pick, duplicate)| Op::Deliver { pick, duplicate }),
        1 => prop_oneof![4 => 0..3 * 60 * 60 * 1000u64, 1 => DAY_MS / 2..2 * DAY_MS]
            .prop_map(Op::Tick),
        1 => Just(Op::Restart),
        1 => (any::<u16>(), any::<u16>())
            .prop_map(|(pick, amount)| Op::ExternalRefund { pick, amount }),
        1 => any::<u16>().prop_map(Op::Lapse),
        1 => any::<u16>().prop_map(Op::Sync),
    ]
}

proptest! {
    // No failure files: a failing case prints its minimal input, which is what to keep.
    #![proptest_config(ProptestConfig {
        cases: super::proptest_cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn orders_and_payments_follow_the_model(ops in prop::collection::vec(op(), 1..200)) {
        let mut h = Harness::new();
        for op in ops {
            h.step(op)?;
            h.check()?;
            // The deadline index agrees with a pass over every order.
            prop_assert_eq!(h.shop.next_deadline_ms(), h.shop.next_deadline_ms_by_scan());
            prop_assert!(h.shop.unpaid_index_is_exact());
        }
        h.settle()?;
        h.check()?;
        h.check_settled()?;
    }
}

// --- The simulated provider. ---

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PStatus {
    Pending,
    Authorized,
    Captured,
    Voided,
    Failed,
}

/// One payment intent at the provider: one attempt of one payment.
#[derive(Clone, Debug)]
struct Intent {
    amount: i64,
    /// The provider authorized this intent at some point (a capture may then be asked).
    ever_authorized: bool,
    status: PStatus,
    captured: i64,
    refunds: BTreeMap<RefundId, (i64, RefundStatus)>,
    sequence: u64,
}

impl Intent {
    fn refunded(&self) -> i64 {
        self.refunds
            .values()
            .filter(|(_, s)| *s == RefundStatus::Succeeded)
            .map(|(a, _)| a)
            .sum()
    }

    fn held(&self) -> i64 {
        self.captured - self.refunded()
    }
}

#[derive(Default)]
struct Provider {
    intents: BTreeMap<(PaymentId, u32), Intent>,
    keys: BTreeMap<String, ProviderRequest>,
    queue: VecDeque<ProviderRequest>,
    outbox: Vec<Notification>,
    events: u64,
}

impl Provider {
    /// Receives a request: deduplicates by idempotency key and checks what a real provider
    /// would refuse (and what the core must never ask).
    fn receive(&mut self, r: &ProviderRequest) -> Result<(), TestCaseError> {
        if let Some(earlier) = self.keys.get(&r.idempotency_key) {
            prop_assert_eq!(earlier, r, "idempotency key reused for another request");
            return Ok(());
        }
        self.keys.insert(r.idempotency_key.clone(), r.clone());
        let key = (r.payment.clone(), r.attempt);
        match &r.kind {
            RequestKind::Authorize { amount } => {
                prop_assert!(
                    !self.intents.contains_key(&key),
                    "a second intent for {key:?}"
                );
                self.intents.insert(
                    key,
                    Intent {
                        amount: amount.minor(),
                        ever_authorized: false,
                        status: PStatus::Pending,
                        captured: 0,
                        refunds: BTreeMap::new(),
                        sequence: 0,
                    },
                );
            }
            RequestKind::Capture { amount } => {
                // The authorization may have lapsed since the core heard of it; it must exist.
                let intent = self.intents.get(&key);
                prop_assert!(
                    intent.is_some_and(|i| i.ever_authorized),
                    "capture without authorization: {r:?} at {intent:?}"
                );
                prop_assert_eq!(intent.map(|i| i.amount), Some(amount.minor()));
            }
            RequestKind::Void => {
                prop_assert!(
                    self.intents.contains_key(&key),
                    "void of an unknown intent {key:?}"
                );
            }
            RequestKind::Refund { refund, amount } => {
                let intent = self.intents.get_mut(&key);
                prop_assert!(intent.is_some(), "refund of an unknown intent {key:?}");
                let Some(intent) = intent else { return Ok(()) };
                prop_assert_eq!(
                    intent.status,
                    PStatus::Captured,
                    "refund of money not captured"
                );
                // Piazza's own refunds never exceed the capture. (Refunds made in the dashboard
                // that Piazza has not heard of yet may leave no room: the provider declines.)
                let ours: i64 = intent
                    .refunds
                    .iter()
                    .filter(|(id, (_, s))| {
                        !id.as_str().starts_with("ext-") && *s != RefundStatus::Failed
                    })
                    .map(|(_, (a, _))| a)
                    .sum();
                prop_assert!(
                    ours + amount.minor() <= intent.captured,
                    "refund beyond what was captured: {} + {} > {}",
                    ours,
                    amount.minor(),
                    intent.captured
                );
                // A refund that does not fit (after refunds made in the dashboard) is refused
                // at once, as a real provider's API does; the adapter reports it as failed.
                let outstanding: i64 = intent
                    .refunds
                    .values()
                    .filter(|(_, s)| *s != RefundStatus::Failed)
                    .map(|(a, _)| a)
                    .sum();
                if outstanding + amount.minor() > intent.captured {
                    intent
                        .refunds
                        .insert(refund.clone(), (amount.minor(), RefundStatus::Failed));
                    self.emit(
                        &key,
                        NotificationKind::RefundFailed {
                            refund: refund.clone(),
                        },
                    );
                    return Ok(());
                }
                intent
                    .refunds
                    .insert(refund.clone(), (amount.minor(), RefundStatus::Requested));
            }
        }
        self.queue.push_back(r.clone());
        Ok(())
    }

    /// Processes the oldest request (the adapter sends a payment's requests in order).
    fn process(&mut self, approve: bool) -> Result<(), TestCaseError> {
        let Some(r) = self.queue.pop_front() else {
            return Ok(());
        };
        let key = (r.payment.clone(), r.attempt);
        let Some(intent) = self.intents.get_mut(&key) else {
            prop_assert!(false, "request for an unknown intent {key:?}");
            return Ok(());
        };
        let kind = match &r.kind {
            RequestKind::Authorize { amount } if intent.status == PStatus::Pending => {
                if approve {
                    intent.status = PStatus::Authorized;
                    intent.ever_authorized = true;
                    Some(NotificationKind::Authorized { amount: *amount })
                } else {
                    intent.status = PStatus::Failed;
                    Some(NotificationKind::Failed)
                }
            }
            RequestKind::Authorize { .. } => None,
            RequestKind::Capture { amount } if intent.status == PStatus::Authorized => {
                intent.status = PStatus::Captured;
                intent.captured = amount.minor();
                Some(NotificationKind::Captured { amount: *amount })
            }
            // The authorization lapsed before the capture: the capture fails.
            RequestKind::Capture { .. } => Some(NotificationKind::Failed),
            RequestKind::Void => match intent.status {
                PStatus::Pending | PStatus::Authorized => {
                    intent.status = PStatus::Voided;
                    Some(NotificationKind::Voided)
                }
                PStatus::Voided | PStatus::Failed => None,
                PStatus::Captured => {
                    prop_assert!(false, "void after capture of {key:?}");
                    None
                }
            },
            RequestKind::Refund { refund, amount } => {
                let others: i64 = intent
                    .refunds
                    .iter()
                    .filter(|(id, (_, s))| *id != refund && *s != RefundStatus::Failed)
                    .map(|(_, (a, _))| a)
                    .sum();
                let approve = approve && others + amount.minor() <= intent.captured;
                let status = if approve {
                    RefundStatus::Succeeded
                } else {
                    RefundStatus::Failed
                };
                intent
                    .refunds
                    .insert(refund.clone(), (amount.minor(), status));
                Some(if approve {
                    NotificationKind::Refunded {
                        refund: refund.clone(),
                        amount: *amount,
                    }
                } else {
                    NotificationKind::RefundFailed {
                        refund: refund.clone(),
                    }
                })
            }
        };
        if let Some(kind) = kind {
            intent.sequence += 1;
            self.events += 1;
            self.outbox.push(Notification {
                event: id(&format!("evt-{}", self.events)),
                payment: r.payment.clone(),
                attempt: r.attempt,
                sequence: intent.sequence,
                kind,
            });
        }
        Ok(())
    }

    fn emit(&mut self, key: &(PaymentId, u32), kind: NotificationKind) {
        let Some(intent) = self.intents.get_mut(key) else {
            return;
        };
        intent.sequence += 1;
        self.events += 1;
        self.outbox.push(Notification {
            event: id(&format!("evt-{}", self.events)),
            payment: key.0.clone(),
            attempt: key.1,
            sequence: intent.sequence,
            kind,
        });
    }

    /// The `pick`th intent matching `f`.
    fn pick(&self, pick: u16, f: impl Fn(&Intent) -> bool) -> Option<(PaymentId, u32)> {
        let keys: Vec<&(PaymentId, u32)> = self
            .intents
            .iter()
            .filter(|(_, i)| f(i))
            .map(|(k, _)| k)
            .collect();
        (!keys.is_empty()).then(|| keys[usize::from(pick) % keys.len()].clone())
    }

    /// A refund made in the dashboard, of part of what is left.
    fn external_refund(&mut self, pick: u16, amount: u16) {
        let room = |i: &Intent| {
            i.captured
                - i.refunds
                    .values()
                    .filter(|(_, s)| *s != RefundStatus::Failed)
                    .map(|(a, _)| a)
                    .sum::<i64>()
        };
        let Some(key) = self.pick(pick, |i| i.status == PStatus::Captured && room(i) > 0) else {
            return;
        };
        let Some(intent) = self.intents.get_mut(&key) else {
            return;
        };
        let amount = 1 + i64::from(amount) % room(intent);
        let refund: RefundId = id(&format!("ext-{}", self.events + 1));
        intent
            .refunds
            .insert(refund.clone(), (amount, RefundStatus::Succeeded));
        self.emit(
            &key,
            NotificationKind::Refunded {
                refund,
                amount: eur(amount),
            },
        );
    }

    /// An authorization lapses.
    fn lapse(&mut self, pick: u16) {
        let Some(key) = self.pick(pick, |i| i.status == PStatus::Authorized) else {
            return;
        };
        if let Some(intent) = self.intents.get_mut(&key) {
            intent.status = PStatus::Voided;
        }
        self.emit(&key, NotificationKind::Voided);
    }

    /// The provider's truth about one intent, as a sync returns it.
    fn snapshot(&self, payment: &PaymentId, attempt: u32) -> Snapshot {
        let intent = self.intents.get(&(payment.clone(), attempt));
        let (status, authorized, captured, refunds, sequence) = match intent {
            None => (SnapshotStatus::Pending, 0, 0, Vec::new(), 0),
            Some(i) => (
                match i.status {
                    PStatus::Pending => SnapshotStatus::Pending,
                    PStatus::Authorized => SnapshotStatus::Authorized,
                    PStatus::Captured => SnapshotStatus::Captured,
                    PStatus::Voided => SnapshotStatus::Voided,
                    PStatus::Failed => SnapshotStatus::Failed,
                },
                if matches!(i.status, PStatus::Authorized | PStatus::Captured) {
                    i.amount
                } else {
                    0
                },
                i.captured,
                i.refunds
                    .iter()
                    .map(|(refund, (amount, status))| RefundSnapshot {
                        refund: refund.clone(),
                        amount: eur(*amount),
                        status: *status,
                    })
                    .collect(),
                i.sequence,
            ),
        };
        Snapshot {
            payment: payment.clone(),
            attempt,
            sequence,
            status,
            authorized: eur(authorized),
            captured: eur(captured),
            refunds,
        }
    }
}

// --- The reference model. ---

#[derive(Clone, Debug)]
struct ModelOrder {
    customer: u8,
    status: OrderStatus,
    lines: Vec<(usize, u32)>,
    coupon: bool,
    placed_ms: u64,
}

struct Model {
    orders: BTreeMap<u8, ModelOrder>,
    on_hand: [u32; 3],
    reserved: [u32; 3],
    coupon_total: u32,
    coupon_by: [u32; 2],
}

/// What the model expects of a command.
#[derive(Debug, PartialEq)]
enum Expect {
    /// Success, and the status after it (`None`: unchanged or decided by payments).
    Ok(Option<OrderStatus>),
    Forbidden,
    Invalid,
    /// The outcome depends on the payments; checked loosely.
    Payment,
}

impl Model {
    fn stock_move(&mut self, lines: &[(usize, u32)], from: OrderStatus, to: OrderStatus) {
        for &(p, q) in lines {
            if PRODUCTS[p].2.is_none() {
                continue;
            }
            match (from.is_unpaid(), from == OrderStatus::Paid, to) {
                (true, _, OrderStatus::Paid) => {
                    self.reserved[p] -= q;
                    self.on_hand[p] -= q;
                }
                (true, _, s) if s.is_closed() => self.reserved[p] -= q,
                (false, true, OrderStatus::Cancelled) => self.on_hand[p] += q,
                _ => {}
            }
        }
    }

    /// Moves an order to `to`, with what that means for stock and the coupon.
    fn transition(&mut self, order: u8, to: OrderStatus) {
        let Some(o) = self.orders.get(&order).cloned() else {
            return;
        };
        self.stock_move(&o.lines, o.status, to);
        // The coupon goes back when the order closes before it ships.
        if o.coupon && to.is_closed() && (o.status.is_unpaid() || o.status == OrderStatus::Paid) {
            self.coupon_total -= 1;
            self.coupon_by[usize::from(o.customer)] -= 1;
        }
        if let Some(m) = self.orders.get_mut(&order) {
            m.status = to;
        }
    }

    /// The authorization and transition table, written independently of the core.
    fn expect(&self, order: u8, actor: u8, command: &OrderCommand) -> Expect {
        use OrderCommand as C;
        use OrderStatus as S;
        let Some(o) = self.orders.get(&order) else {
            return Expect::Invalid;
        };
        let customer = actor < 2;
        let staff = (2..5).contains(&actor);
        let manager = actor == 3 || actor == 4;
        if customer && actor != o.customer {
            return Expect::Forbidden;
        }
        let kind_ok = match command {
            C::Accept | C::Reject { .. } | C::Fulfil { .. } => staff,
            C::RequestPayment { .. } | C::RetryPayment | C::Cancel { .. } => actor != 5,
            C::MarkDelivered | C::Complete => true,
            C::Refund { .. } => manager,
        };
        if !kind_ok {
            return Expect::Forbidden;
        }
        let unpaid = matches!(o.status, S::Placed | S::Accepted | S::AwaitingPayment);
        let paid = matches!(
            o.status,
            S::Paid | S::Fulfilled | S::Delivered | S::Completed
        );
        let closed = matches!(o.status, S::Rejected | S::Cancelled | S::Expired);
        let (valid, to) = match command {
            C::Accept => (o.status == S::Placed, Some(S::Accepted)),
            C::Reject { .. } => (o.status == S::Placed, Some(S::Rejected)),
            C::RequestPayment { .. } => (o.status == S::Accepted, Some(S::AwaitingPayment)),
            C::RetryPayment => (o.status == S::AwaitingPayment || paid, None),
            C::Cancel { .. } => (unpaid || o.status == S::Paid, Some(S::Cancelled)),
            C::Fulfil { .. } => (o.status == S::Paid, Some(S::Fulfilled)),
            C::MarkDelivered => (o.status == S::Fulfilled, Some(S::Delivered)),
            C::Complete => (o.status == S::Delivered, Some(S::Completed)),
            C::Refund { .. } => (paid || closed, None),
        };
        if !valid {
            return Expect::Invalid;
        }
        if matches!(command, C::Cancel { .. }) && !unpaid && !manager {
            return Expect::Forbidden;
        }
        match command {
            C::RetryPayment | C::Refund { .. } => Expect::Payment,
            // Cancelling while the first capture is in flight is refused; checked loosely.
            C::Cancel { .. } if o.status == S::AwaitingPayment => Expect::Payment,
            _ => Expect::Ok(to),
        }
    }
}

// --- The harness. ---

struct Harness {
    shop: Shop,
    now_ms: u64,
    provider: Provider,
    model: Model,
    coupon: CouponCode,
    /// Successful commands, to replay: (actor, id, order, command, effects).
    done: Vec<(Actor, CommandId, OrderId, OrderCommand, Effects)>,
    commands: u64,
    /// Events seen once (by a key naming the transition).
    seen: BTreeSet<String>,
    /// Per payment: captured and refunded according to the events.
    succeeded: BTreeMap<PaymentId, i64>,
    refund_issued: BTreeMap<PaymentId, i64>,
}

fn actor(n: u8) -> Actor {
    let staff = |name: &str, role| Actor::Staff {
        user: user(name),
        role,
    };
    match n {
        0 | 1 => Actor::Customer(user(&format!("u{n}"))),
        2 => staff("ada", StaffRole::Agent),
        3 => staff("mario", StaffRole::Manager),
        4 => staff("olga", StaffRole::Owner),
        _ => Actor::System,
    }
}

fn order_id(n: u8) -> OrderId {
    id(&format!("o{n}"))
}

fn stock_key(p: usize) -> StockKey {
    StockKey {
        product: id(PRODUCTS[p].0),
        variant: None,
    }
}

impl Harness {
    fn new() -> Harness {
        let mut shop = Shop::new(id("s"), Settings::default());
        let catalog = shop.catalog_mut();
        catalog
            .put_catalog(
                id("main"),
                super::super::catalog::Section { title: "M".into() },
            )
            .unwrap();
        for (p, (name, price, stock)) in PRODUCTS.iter().enumerate() {
            catalog.put_product(product(name, eur(*price))).unwrap();
            catalog.set_stock(&stock_key(p), *stock).unwrap();
        }
        let coupon: CouponCode = id("C10");
        shop.coupons_mut()
            .put(CouponSpec {
                code: coupon.clone(),
                discount: Discount::Percent { basis_points: 1000 },
                starts_ms: 0,
                ends_ms: u64::MAX,
                total_max: Some(COUPON_TOTAL_MAX),
                per_customer_max: Some(1),
                minimum: None,
            })
            .unwrap();
        let on_hand = PRODUCTS.map(|(_, _, s)| s.unwrap_or(0));
        Harness {
            shop,
            now_ms: 1_000,
            provider: Provider::default(),
            model: Model {
                orders: BTreeMap::new(),
                on_hand,
                reserved: [0; 3],
                coupon_total: 0,
                coupon_by: [0; 2],
            },
            coupon,
            done: Vec::new(),
            commands: 0,
            seen: BTreeSet::new(),
            succeeded: BTreeMap::new(),
            refund_issued: BTreeMap::new(),
        }
    }

    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Place {
                order,
                customer,
                lines,
                coupon,
            } => self.place(order, customer, lines, coupon),
            Op::Command {
                order,
                actor,
                kind,
                amount,
            } => self.command(order, actor, kind, amount),
            Op::Replay(pick) => self.replay(pick),
            Op::Process { approve } => self.provider.process(approve),
            Op::Deliver { pick, duplicate } => self.deliver(pick, duplicate),
            Op::Tick(advance_ms) => {
                self.now_ms += advance_ms;
                let effects = self.shop.tick(self.now_ms);
                self.absorb(effects)
            }
            Op::Restart => {
                for request in self.shop.pending_requests() {
                    self.provider.receive(&request)?;
                }
                Ok(())
            }
            Op::ExternalRefund { pick, amount } => {
                self.provider.external_refund(pick, amount);
                Ok(())
            }
            Op::Lapse(pick) => {
                self.provider.lapse(pick);
                Ok(())
            }
            Op::Sync(pick) => {
                let Some((payment, attempt)) = self.provider.pick(pick, |_| true) else {
                    return Ok(());
                };
                self.sync(&payment, attempt)
            }
        }
    }

    fn place(
        &mut self,
        order: u8,
        customer: u8,
        lines: BTreeMap<u8, u8>,
        coupon: bool,
    ) -> Result<(), TestCaseError> {
        self.commands += 1;
        let lines: Vec<(usize, u32)> = lines
            .into_iter()
            .map(|(p, q)| (usize::from(p), u32::from(q)))
            .collect();
        let items: Vec<Item> = lines
            .iter()
            .map(|&(p, q)| Item {
                key: stock_key(p),
                quantity: q,
            })
            .collect();
        let result = self.shop.place(
            &actor(customer),
            id(&format!("place-{}", self.commands)),
            order_id(order),
            items,
            coupon.then(|| self.coupon.clone()),
            self.now_ms,
        );
        // The model's prediction, in the core's order of checks: the id, the coupon, the stock.
        let m = &self.model;
        let expected = if m.orders.contains_key(&order) {
            Err(Error::OrderIdTaken(order_id(order)))
        } else if coupon && m.coupon_total >= COUPON_TOTAL_MAX {
            Err(Error::CouponExhausted(self.coupon.clone()))
        } else if coupon && m.coupon_by[usize::from(customer)] >= 1 {
            Err(Error::CouponCustomerLimit(self.coupon.clone()))
        } else if let Some(&(p, q)) = lines
            .iter()
            .find(|&&(p, q)| PRODUCTS[p].2.is_some() && m.on_hand[p] - m.reserved[p] < q)
        {
            Err(Error::OutOfStock {
                product: id(PRODUCTS[p].0),
                variant: None,
                requested: q,
                available: m.on_hand[p] - m.reserved[p],
            })
        } else {
            Ok(())
        };
        prop_assert_eq!(result.as_ref().map(|_| ()).map_err(Clone::clone), expected);
        if let Ok(effects) = result {
            for &(p, q) in &lines {
                if PRODUCTS[p].2.is_some() {
                    self.model.reserved[p] += q;
                }
            }
            if coupon {
                self.model.coupon_total += 1;
                self.model.coupon_by[usize::from(customer)] += 1;
            }
            self.model.orders.insert(
                order,
                ModelOrder {
                    customer,
                    status: OrderStatus::Placed,
                    lines,
                    coupon,
                    placed_ms: self.now_ms,
                },
            );
            self.absorb(effects)?;
        }
        Ok(())
    }

    fn command(&mut self, order: u8, who: u8, kind: u8, amount: u16) -> Result<(), TestCaseError> {
        self.commands += 1;
        let status = self.model.orders.get(&order).map(|o| o.status);
        let kind = if kind < 10 {
            kind
        } else {
            // The natural next step, sometimes a detour.
            let detour = amount.is_multiple_of(8);
            match status {
                Some(OrderStatus::Placed) if detour => 1,
                Some(OrderStatus::Placed) => 0,
                Some(OrderStatus::Accepted) => 2 + u8::from(amount.is_multiple_of(3)),
                Some(OrderStatus::AwaitingPayment) if detour => 5,
                Some(OrderStatus::AwaitingPayment) => 4,
                Some(OrderStatus::Paid) if detour => 5,
                Some(OrderStatus::Paid) if amount % 8 == 1 => 9,
                Some(OrderStatus::Paid) => 6,
                Some(OrderStatus::Fulfilled) if detour => 9,
                Some(OrderStatus::Fulfilled) => 7,
                Some(OrderStatus::Delivered) => 8,
                _ => 9,
            }
        };
        let who = if who < 6 {
            who
        } else {
            let customer = self.model.orders.get(&order).map_or(0, |o| o.customer);
            match kind {
                0 | 1 | 6 => 2,
                9 => 3 + (who % 2),
                5 if status == Some(OrderStatus::Paid) => 3,
                _ => customer,
            }
        };
        let command = match kind {
            0 => OrderCommand::Accept,
            1 => OrderCommand::Reject {
                reason: "no".into(),
            },
            2 => OrderCommand::RequestPayment {
                plan: PaymentPlan::Full,
            },
            3 => OrderCommand::RequestPayment {
                plan: PaymentPlan::Instalments {
                    count: 2 + u32::from(amount % 2),
                    interval_ms: INSTALMENT_INTERVAL_MS_MIN,
                },
            },
            4 => OrderCommand::RetryPayment,
            5 => OrderCommand::Cancel {
                reason: String::new(),
            },
            6 => OrderCommand::Fulfil { tracking: None },
            7 => OrderCommand::MarkDelivered,
            8 => OrderCommand::Complete,
            _ => {
                // Often exactly what is refundable (a full refund), else some amount.
                let refundable = self
                    .shop
                    .order(&order_id(order))
                    .and_then(|o| o.payments())
                    .map_or(0, |p| p.refundable().minor());
                let amount = if amount.is_multiple_of(3) && refundable > 0 {
                    refundable
                } else {
                    1 + i64::from(amount)
                };
                OrderCommand::Refund {
                    amount: eur(amount),
                }
            }
        };
        let expected = self.model.expect(order, who, &command);
        let command_id: CommandId = id(&format!("cmd-{}", self.commands));
        let result = self.shop.handle(
            &actor(who),
            command_id.clone(),
            &order_id(order),
            command.clone(),
            self.now_ms,
        );
        match (&expected, &result) {
            (Expect::Invalid, Err(Error::UnknownOrder(_)))
                if !self.model.orders.contains_key(&order) => {}
            (Expect::Invalid, Err(Error::InvalidTransition { .. })) => {}
            (Expect::Forbidden, Err(Error::Forbidden { .. })) => {}
            (Expect::Ok(_), Ok(_)) => {}
            (Expect::Payment, Ok(_)) => {}
            (
                Expect::Payment,
                Err(Error::NothingToRetry | Error::RefundExceedsRefundable { .. }),
            ) => {}
            (Expect::Payment, Err(Error::PaymentInProgress)) => {
                let o = self.shop.order(&order_id(order));
                prop_assert!(
                    o.is_some_and(|o| o.capture_in_flight()),
                    "PaymentInProgress without a capture"
                );
            }
            _ => prop_assert!(
                false,
                "{command:?} by {who} on o{order}: model {expected:?}, core {result:?}"
            ),
        }
        let Ok(effects) = result else { return Ok(()) };
        let to = match (&expected, &command) {
            (Expect::Ok(to), _) => *to,
            (Expect::Payment, OrderCommand::Cancel { .. }) => Some(OrderStatus::Cancelled),
            _ => None,
        };
        if let Some(to) = to {
            // A payment of nothing is paid at once; there is always something to pay here.
            self.model.transition(order, to);
        }
        self.done.push((
            actor(who),
            command_id,
            order_id(order),
            command,
            effects.clone(),
        ));
        self.absorb(effects)
    }

    fn replay(&mut self, pick: u16) -> Result<(), TestCaseError> {
        if self.done.is_empty() {
            return Ok(());
        }
        let (who, command_id, order, command, effects) =
            self.done[usize::from(pick) % self.done.len()].clone();
        let before = self.shop.clone();
        let again = self
            .shop
            .handle(&who, command_id, &order, command, self.now_ms);
        prop_assert!(again.is_ok(), "a replay failed: {again:?}");
        let Ok(again) = again else { return Ok(()) };
        prop_assert!(again.replayed);
        prop_assert_eq!(&again.events, &effects.events);
        prop_assert_eq!(&again.requests, &effects.requests);
        prop_assert!(self.shop == before, "a replay changed the state");
        // The actor may send the requests again: the provider deduplicates by key.
        for request in &again.requests {
            self.provider.receive(request)?;
        }
        Ok(())
    }

    fn deliver(&mut self, pick: u16, duplicate: bool) -> Result<(), TestCaseError> {
        if self.provider.outbox.is_empty() {
            return Ok(());
        }
        let index = usize::from(pick) % self.provider.outbox.len();
        let n = if duplicate {
            self.provider.outbox[index].clone()
        } else {
            self.provider.outbox.swap_remove(index)
        };
        self.notify(&n)
    }

    fn notify(&mut self, n: &Notification) -> Result<(), TestCaseError> {
        let outcome = self.shop.handle_notification(n, self.now_ms);
        prop_assert!(outcome.is_ok(), "notification refused: {outcome:?}");
        match outcome {
            Ok(Notified::Applied(effects)) => self.absorb(effects),
            Ok(Notified::NeedsSync { payment, attempt }) => self.sync(&payment, attempt),
            _ => Ok(()),
        }
    }

    /// Applies the provider's truth about one intent.
    fn sync(&mut self, payment: &PaymentId, attempt: u32) -> Result<(), TestCaseError> {
        let snapshot = self.provider.snapshot(payment, attempt);
        let synced = self.shop.apply_snapshot(&snapshot, self.now_ms);
        prop_assert!(
            synced.is_ok(),
            "truthful snapshot refused: {synced:?} for {snapshot:?}"
        );
        match synced {
            Ok(effects) => self.absorb(effects),
            Err(_) => Ok(()),
        }
    }

    /// Takes new effects: checks each event happens once and is justified, follows the core's
    /// own status changes in the model, and sends the requests to the provider.
    fn absorb(&mut self, effects: Effects) -> Result<(), TestCaseError> {
        prop_assert!(!effects.replayed);
        for event in &effects.events {
            let once = match event {
                CommerceEvent::PaymentAuthorized {
                    payment, attempt, ..
                }
                | CommerceEvent::PaymentSucceeded {
                    payment, attempt, ..
                }
                | CommerceEvent::PaymentFailed {
                    payment, attempt, ..
                }
                | CommerceEvent::PaymentVoided {
                    payment, attempt, ..
                } => {
                    format!("{} {payment} {attempt}", event.name())
                }
                CommerceEvent::RefundRequested { refund, .. }
                | CommerceEvent::RefundIssued { refund, .. }
                | CommerceEvent::RefundFailed { refund, .. } => {
                    format!("{} {refund}", event.name())
                }
                other => format!("{} {}", other.name(), other.order()),
            };
            prop_assert!(self.seen.insert(once.clone()), "twice: {once}");
            let order: u8 = event.order().as_str()[1..].parse().unwrap_or(u8::MAX);
            match event {
                CommerceEvent::PaymentSucceeded {
                    payment, amount, ..
                } => {
                    *self.succeeded.entry(payment.clone()).or_default() += amount.minor();
                }
                CommerceEvent::RefundIssued {
                    payment, amount, ..
                } => {
                    *self.refund_issued.entry(payment.clone()).or_default() += amount.minor();
                }
                CommerceEvent::OrderPaid { .. } => {
                    let status = self.model.orders.get(&order).map(|o| o.status);
                    if status != Some(OrderStatus::Paid) {
                        // Paid by a capture: the provider must have captured the first payment.
                        prop_assert_eq!(status, Some(OrderStatus::AwaitingPayment));
                        let first = PaymentId::new(&order_id(order), 1);
                        let captured = self
                            .provider
                            .intents
                            .iter()
                            .any(|((p, _), i)| p == &first && i.status == PStatus::Captured);
                        prop_assert!(captured, "paid without a capture at the provider");
                        self.model.transition(order, OrderStatus::Paid);
                    }
                }
                CommerceEvent::OrderExpired { .. } => {
                    let o = self.model.orders.get(&order).cloned();
                    prop_assert!(
                        o.as_ref().is_some_and(|o| o.status.is_unpaid()),
                        "expired: {o:?}"
                    );
                    let placed_ms = o.map_or(0, |o| o.placed_ms);
                    prop_assert!(self.now_ms >= placed_ms + Settings::default().unpaid_ttl_ms);
                    self.model.transition(order, OrderStatus::Expired);
                }
                CommerceEvent::OrderRefunded { .. } => {
                    let status = self.model.orders.get(&order).map(|o| o.status);
                    prop_assert!(
                        status.is_some_and(OrderStatus::is_paid),
                        "refunded from {status:?}"
                    );
                    let held: i64 = self
                        .provider
                        .intents
                        .iter()
                        .filter(|((p, _), _)| p.as_str().starts_with(&format!("o{order}#")))
                        .map(|(_, i)| i.held())
                        .sum();
                    prop_assert_eq!(held, 0, "refunded while the provider holds money");
                    self.model.transition(order, OrderStatus::Refunded);
                }
                _ => {}
            }
        }
        for request in &effects.requests {
            self.provider.receive(request)?;
        }
        Ok(())
    }

    /// The invariants that hold after every step.
    fn check(&self) -> Result<(), TestCaseError> {
        for (n, m) in &self.model.orders {
            let core = self.shop.order(&order_id(*n));
            prop_assert_eq!(core.map(|o| o.status()), Some(m.status), "status of o{}", n);
            let Some(payments) = core.and_then(|o| o.payments()) else {
                continue;
            };
            for part in payments.parts() {
                let (captured, refunded, refunding) = (
                    part.captured().minor(),
                    part.refunded().minor(),
                    part.refunding().minor(),
                );
                prop_assert!(0 <= captured && captured <= part.amount().minor());
                prop_assert!(captured == 0 || part.status() == PaymentStatus::Captured);
                prop_assert!(
                    refunded + refunding <= captured,
                    "refunds beyond captured: {part:?}"
                );
                let intent = self
                    .provider
                    .intents
                    .get(&(part.id().clone(), part.attempt()));
                prop_assert!(
                    captured <= intent.map_or(0, |i| i.captured),
                    "believes more captured"
                );
                prop_assert!(
                    refunded <= intent.map_or(0, Intent::refunded),
                    "believes more refunded"
                );
            }
        }
        for (p, (_, _, stock)) in PRODUCTS.iter().enumerate() {
            let actual = self.shop.catalog().stock(&stock_key(p));
            let expected = match stock {
                None => Stock::Unlimited,
                Some(_) => Stock::Tracked {
                    on_hand: self.model.on_hand[p],
                    reserved: self.model.reserved[p],
                },
            };
            prop_assert_eq!(actual, Some(expected), "stock of {}", PRODUCTS[p].0);
            if let Some(initial) = stock {
                prop_assert!(
                    self.model.reserved[p] <= self.model.on_hand[p]
                        && self.model.on_hand[p] <= *initial
                );
            }
        }
        let coupon = self.shop.coupons().coupon(&self.coupon);
        prop_assert_eq!(coupon.map(|c| c.redeemed()), Some(self.model.coupon_total));
        prop_assert!(self.model.coupon_total <= COUPON_TOTAL_MAX);
        for c in 0..CUSTOMERS {
            let by = coupon.map_or(0, |k| k.redeemed_by(&user(&format!("u{c}"))));
            prop_assert!(by <= 1 && by == self.model.coupon_by[usize::from(c)]);
        }
        Ok(())
    }

    /// Settles everything in flight: the provider approves what is queued, every notification
    /// arrives, and staff refund again what a failed refund left on closed or refunded orders.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        for round in 0..100 {
            while !self.provider.queue.is_empty() {
                self.provider.process(true)?;
            }
            let outbox = std::mem::take(&mut self.provider.outbox);
            for n in &outbox {
                self.notify(n)?;
            }
            let mut refunds = Vec::new();
            for o in self.shop.orders() {
                let Some(payments) = o.payments() else {
                    continue;
                };
                let leftover = payments.refundable();
                if (o.status().is_closed() || o.status() == OrderStatus::Refunded)
                    && leftover.minor() > 0
                {
                    refunds.push((o.id().clone(), leftover));
                }
            }
            for (order, amount) in &refunds {
                self.commands += 1;
                let result = self.shop.handle(
                    &actor(4),
                    id(&format!("cmd-{}", self.commands)),
                    order,
                    OrderCommand::Refund { amount: *amount },
                    self.now_ms,
                );
                prop_assert!(result.is_ok(), "refund of the leftover refused: {result:?}");
                if let Ok(effects) = result {
                    self.absorb(effects)?;
                }
            }
            if self.provider.queue.is_empty()
                && self.provider.outbox.is_empty()
                && refunds.is_empty()
            {
                return Ok(());
            }
            prop_assert!(round < 99, "did not settle");
        }
        Ok(())
    }

    /// Once everything settled: the core agrees with the provider, the events add up to the
    /// state, and money is only held for orders that are served.
    fn check_settled(&self) -> Result<(), TestCaseError> {
        for o in self.shop.orders() {
            let Some(payments) = o.payments() else {
                continue;
            };
            for part in payments.parts() {
                if part.attempt() == 0 {
                    continue;
                }
                let intent = self
                    .provider
                    .intents
                    .get(&(part.id().clone(), part.attempt()));
                prop_assert!(intent.is_some());
                let Some(intent) = intent else { continue };
                // Declined, voided (a lapse) and cancelled all mean "nothing held, may try again
                // while the order is open"; which one the core saw depends on the order the news
                // came in (a capture failing after a lapse says "failed").
                let expected = match intent.status {
                    PStatus::Pending => None,
                    PStatus::Authorized => Some(PaymentStatus::Authorized),
                    PStatus::Captured => Some(PaymentStatus::Captured),
                    PStatus::Voided | PStatus::Failed => Some(PaymentStatus::Failed),
                };
                let status = match part.status() {
                    PaymentStatus::Cancelled | PaymentStatus::Voided => PaymentStatus::Failed,
                    s => s,
                };
                prop_assert_eq!(Some(status), expected, "{:?} vs {:?}", part, intent);
                prop_assert_eq!(part.captured().minor(), intent.captured);
                prop_assert_eq!(part.refunded().minor(), intent.refunded());
                prop_assert_eq!(part.refunding().minor(), 0);
                let by_events = self.succeeded.get(part.id()).copied().unwrap_or(0);
                prop_assert_eq!(
                    by_events,
                    part.captured().minor(),
                    "PaymentSucceeded events"
                );
                let refunds_by_events = self.refund_issued.get(part.id()).copied().unwrap_or(0);
                prop_assert_eq!(
                    refunds_by_events,
                    part.refunded().minor(),
                    "RefundIssued events"
                );
            }
            if o.status().is_closed() || o.status() == OrderStatus::Refunded {
                for ((payment, attempt), intent) in &self.provider.intents {
                    if payment.as_str().starts_with(&format!("{}#", o.id())) {
                        prop_assert_eq!(
                            intent.held(),
                            0,
                            "money kept for {:?} {}",
                            o.status(),
                            payment
                        );
                        prop_assert!(
                            intent.status != PStatus::Authorized,
                            "authorization left on {} attempt {}",
                            payment,
                            attempt
                        );
                    }
                }
            }
        }
        Ok(())
    }
}
