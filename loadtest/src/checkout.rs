//! The `checkout` scenario: customers buying in shops, from the cart to a paid order, through
//! the real SDK and the node's real shop actors, stores and payment provider.
//!
//! **Set-up** (not measured). `S` shops (`--shops`, default one per 100 customers), each created
//! by its own owner user `lt<run>o-<s>` on its own connection: the shop `lt<run>-shop-<s>`, a
//! catalog and one product at 10.00 EUR with tracked stock ([`STOCK_UNITS`], far above what a
//! run can sell). Customers `lt<run>k-<i>` (`--clients`), each on its own connection, shop at
//! shop `i mod S`.
//!
//! **One checkout** of customer `c`, number `n`, order id `o<run>-<c>-<n>` ([`order_id`]):
//!
//! 1. the customer adds one unit to its cart and checks out (one at a time per customer: the
//!    cart is the customer's, so two checkouts must not interleave) — **placed**;
//! 2. the shop's owner accepts the order — **accepted**;
//! 3. the customer asks to pay in full — **payment requested**: the node sends the authorization
//!    to the payment provider (the built-in sandbox on a spawned node), which settles it
//!    asynchronously; the node captures on the authorization and the order becomes paid on the
//!    capture notification;
//! 4. the customer sees the order **paid**: the `MessageUpdate::Order` entry with status `Paid`
//!    in its conversation with the shop, pushed by the node like any message (see *Why the
//!    event stream*).
//!
//! Every latency is measured from the checkout's *intended* start (the open-loop schedule of
//! `pacing.rs`, like every other scenario; closed loop: the instant it starts), so a stall shows
//! in full. A checkout ends in exactly one of: paid (`delivered`), failed (`errors`, by step and
//! error label), or lost (no error, yet not seen paid [`PAID_WAIT`] after its payment was
//! requested; then the order is read once: if it is paid after all it counts as paid but
//! *unnotified* and has no latency).
//!
//! **Why the event stream, not polling.** Polling `order` would put one more request per poll
//! through the very shop actor being measured and would quantize the latency to the poll
//! interval. The pushed update is what a customer's app shows, and it is honest: it exists only
//! after the capture was applied, durably logged, and the order message updated (stored in the
//! conversation) and pushed. Polling is only the fallback for a checkout whose update never came.
//!
//! **Limits of the node honoured here.** The core keeps at most 100,000 orders in memory per
//! shop, and a paid order stays in memory (it is not final), so a shop takes at most
//! [`SHOP_ORDERS_MAX`] checkouts in a run: an open loop that would need more is refused before
//! it starts ([`check_capacity`]), and a closed loop stops starting checkouts in a full shop
//! (`shop_full`). A customer may hold at most 10 unpaid orders, so one customer has at most
//! [`IN_FLIGHT_PER_CUSTOMER_MAX`] checkouts under way; orders left unpaid after a failure are
//! cancelled, and if that fails too they lower the customer's allowance (`stuck`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use piazza_client::commerce::{
    CatalogId, CommerceBody, OrderCommand, OrderId, OrderStatus, PaymentPlan, ProductId,
    ProductSpec, ShopId, ShopProfile,
};
use piazza_client::{
    Client, ClientError, ClientEvent, Currency, MessageBody, MessageUpdate, Money,
};
use serde::Serialize;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout_at};

use crate::hist::{LatencyHist, Percentiles};
use crate::ledger::Tally;
use crate::node::Target;
use crate::pacing;
use crate::progress::{self, Live};
use crate::traffic::{self, TrafficOutcome, error_label};

/// Customers per shop when `--shops` is not given.
pub(crate) const CUSTOMERS_PER_SHOP_DEFAULT: usize = 100;

/// Most shops (each has its own owner connection).
pub(crate) const SHOPS_MAX: usize = 1_000;

/// Most checkouts started in one shop in a run. The core keeps at most 100,000 orders in memory
/// per shop (`ORDERS_MAX`, and as many stock reservations), and a paid order is neither final nor
/// archived, so every checkout of the run stays there; 5 % below it leaves room for the orders a
/// run abandons and never archives.
pub(crate) const SHOP_ORDERS_MAX: u64 = 95_000;

/// The core's limit of unpaid orders per customer (`UNPAID_ORDERS_PER_CUSTOMER_MAX`).
const UNPAID_PER_CUSTOMER_MAX: usize = 10;

/// Most checkouts of one customer under way at once (each holds an unpaid order until it is
/// paid): two below the node's limit of 10 unpaid orders, for orders left unpaid by failures.
pub(crate) const IN_FLIGHT_PER_CUSTOMER_MAX: usize = 8;

/// Units on hand of each shop's product: far more than [`SHOP_ORDERS_MAX`] checkouts of one unit.
const STOCK_UNITS: u32 = 1_000_000_000;

/// The product's price, 10.00 EUR. Not ending in `02` minor units, which the sandbox declines
/// like a test card.
const PRICE_MINOR: i64 = 1_000;

/// How long a checkout waits for its `Paid` update after the payment was requested, before it
/// reads the order once and, if unpaid, counts as lost. Far above the sandbox's default 20 ms
/// (+ up to 10 ms jitter) per settlement; [`paid_wait`] adds the configured sandbox delays.
pub(crate) const PAID_WAIT: Duration = Duration::from_secs(5);

/// How late a paced customer may still start a checkout after the load ended; beyond it the rest
/// of its schedule is abandoned and reported as `unsent`, as in the message scenarios.
const LATE_START_GRACE: Duration = Duration::from_secs(10);

/// Upper bound on one customer's checkouts in the closed loop: a safety net far above what a
/// bounded run does (the shop's [`SHOP_ORDERS_MAX`] stops it long before).
const CLOSED_LOOP_MAX_PER_CUSTOMER: u64 = 10_000_000;

/// Shops set up at once.
const SETUP_CONCURRENCY: usize = 16;

/// Lead time between the end of set-up and the first due checkout, so every task is waiting.
const START_LEAD: Duration = Duration::from_millis(200);

/// How long a receiver waits beyond the last possible checkout before it stops on its own (it is
/// normally told to stop earlier).
const RECEIVER_GRACE: Duration = Duration::from_secs(30);

const _: () = assert!(STOCK_UNITS as u64 >= SHOP_ORDERS_MAX);
const _: () = assert!(IN_FLIGHT_PER_CUSTOMER_MAX < UNPAID_PER_CUSTOMER_MAX);
const _: () = assert!(SHOP_ORDERS_MAX < 100_000);

/// How the checkouts run.
#[derive(Clone, Debug)]
pub(crate) struct CheckoutParams {
    /// Checkouts started per second across all customers; `None`: closed loop.
    pub(crate) rate: Option<u64>,
    /// How the open-loop instants are spread (`--arrivals`).
    pub(crate) arrivals: pacing::Arrivals,
    /// Show the live progress line on stderr.
    pub(crate) progress: bool,
    /// Closed loop: checkouts of one customer under way at once (1 to
    /// [`IN_FLIGHT_PER_CUSTOMER_MAX`]).
    pub(crate) in_flight: usize,
    /// Warmup before the measured window.
    pub(crate) warmup: Duration,
    /// The measured window.
    pub(crate) duration: Duration,
    /// How long to wait for a checkout's `Paid` update ([`paid_wait`]).
    pub(crate) paid_wait: Duration,
    /// The node's pid, for CPU sampling over the measured window.
    pub(crate) node_pid: Option<u32>,
    /// Clock ticks per second for `/proc` CPU times.
    pub(crate) ticks_per_s: u64,
}

/// The checkout figures beyond the common report fields (the report's `checkout` object).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct CheckoutSummary {
    /// Shops, each with its own owner.
    pub(crate) shops: usize,
    /// Customers (`clients` counts the owners too).
    pub(crate) customers: usize,
    /// Intended start → checkout answered (order placed, stock reserved, durable).
    pub(crate) placed_us: Percentiles,
    /// Intended start → the owner's accept answered.
    pub(crate) accepted_us: Percentiles,
    /// Intended start → the customer's payment request answered.
    pub(crate) payment_requested_us: Percentiles,
    /// Payment requested → `Paid` update received: the provider's two settlements, the node's
    /// capture and the update's way to the customer.
    pub(crate) requested_to_paid_us: Percentiles,
    /// Checkouts found paid only by reading the order after [`PAID_WAIT`]: no update came.
    pub(crate) paid_unnotified: u64,
    /// Checkouts not started because their shop had taken [`SHOP_ORDERS_MAX`] (part of
    /// `unsent`).
    pub(crate) shop_full: u64,
    /// Placed orders cancelled by the generator after a later step failed or the order was lost.
    pub(crate) cancelled: u64,
    /// Orders left unpaid on the node (their cancel failed as well).
    pub(crate) stuck: u64,
}

/// One shop and its owner.
#[derive(Debug)]
struct ShopHandle {
    id: ShopId,
    product: ProductId,
    owner: Arc<Client>,
    /// Checkouts this shop may still take in this run.
    budget: Arc<AtomicU64>,
}

/// What [`setup`] made: the shops with their owners, and the customers with their shop.
#[derive(Debug)]
pub(crate) struct CheckoutSetup {
    shops: Vec<ShopHandle>,
    customers: Vec<(Arc<Client>, usize)>,
    run_tag: String,
}

impl CheckoutSetup {
    /// Connections (owners and customers).
    pub(crate) fn users(&self) -> usize {
        self.shops.len() + self.customers.len()
    }
}

/// The number of shops: `--shops`, or one per [`CUSTOMERS_PER_SHOP_DEFAULT`] customers (at
/// least one).
pub(crate) fn shop_count(customers: usize, shops: Option<usize>) -> usize {
    shops
        .unwrap_or(customers / CUSTOMERS_PER_SHOP_DEFAULT)
        .max(1)
}

/// Refuses an open loop that would start more checkouts in a shop than it may take
/// ([`SHOP_ORDERS_MAX`]): `rate` per second for `load_s` seconds, spread over `shops` shops.
pub(crate) fn check_capacity(rate: u64, load_s: u64, shops: usize) -> Result<(), String> {
    let planned = rate.saturating_mul(load_s);
    let capacity = SHOP_ORDERS_MAX.saturating_mul(shops as u64);
    if planned > capacity {
        let needed = planned.div_ceil(SHOP_ORDERS_MAX);
        return Err(format!(
            "--rate {rate} for {load_s} s starts {planned} checkouts, more than {shops} shop(s) \
             may hold ({SHOP_ORDERS_MAX} orders each: the node keeps at most 100,000 orders in \
             memory per shop): give --shops {needed} or more (and at least as many --clients), \
             or a shorter run"
        ));
    }
    Ok(())
}

/// The order id of checkout `number` of customer `customer`: `o<run>-<customer>-<number>`.
/// Unique per run, customer and checkout, and valid as an order id and as the order message's
/// client message id (at most 64 id characters).
pub(crate) fn order_id(run_tag: &str, customer: usize, number: u64) -> Result<OrderId> {
    format!("o{run_tag}-{customer}-{number}")
        .parse()
        .map_err(|e| anyhow!("order id: {e}"))
}

/// How long to wait for a `Paid` update: [`PAID_WAIT`] plus the sandbox's two settlements with
/// their largest jitter, when the spawned node was given them.
pub(crate) fn paid_wait(
    sandbox_latency_ms: Option<u64>,
    sandbox_jitter_ms: Option<u64>,
) -> Duration {
    let settle_ms = sandbox_latency_ms
        .unwrap_or(0)
        .saturating_add(sandbox_jitter_ms.unwrap_or(0));
    PAID_WAIT + Duration::from_millis(settle_ms.saturating_mul(2))
}

/// Connects the owners and customers and sets up the shops (see the module docs).
pub(crate) async fn setup(
    customers: usize,
    shops: usize,
    run_tag: &str,
    target: &Target,
) -> Result<CheckoutSetup> {
    if customers == 0 || shops == 0 || shops > customers || shops > SHOPS_MAX {
        return Err(anyhow!(
            "the checkout scenario needs 1 to {SHOPS_MAX} shops and at least one customer per \
             shop (got {shops} shops, {customers} customers)"
        ));
    }
    let owner_names = traffic::user_names(&format!("{run_tag}o"), shops)?;
    let customer_names = traffic::user_names(&format!("{run_tag}k"), customers)?;
    let owners = traffic::connect_users(target, &owner_names).await?;
    let clients = traffic::connect_users(target, &customer_names).await?;

    let eur: Currency = "EUR".parse().map_err(|e| anyhow!("currency: {e}"))?;
    let catalog: CatalogId = "main".parse().map_err(|e| anyhow!("catalog id: {e}"))?;
    let product: ProductId = "p1".parse().map_err(|e| anyhow!("product id: {e}"))?;
    let mut handles: Vec<Option<ShopHandle>> = (0..shops).map(|_| None).collect();
    let mut pending = JoinSet::new();
    let mut owners = owners.into_iter().enumerate();
    // Bounded: each turn starts a set-up or finishes one, `shops` of each.
    loop {
        while pending.len() < SETUP_CONCURRENCY {
            let Some((index, owner)) = owners.next() else {
                break;
            };
            let id: ShopId = format!("lt{run_tag}-shop-{index}")
                .parse()
                .map_err(|e| anyhow!("shop id: {e}"))?;
            let spec = ProductSpec {
                id: product.clone(),
                catalog: catalog.clone(),
                title: "Load-test espresso".to_owned(),
                description: String::new(),
                price: Money::new(PRICE_MINOR, eur),
                categories: Vec::new(),
                media: Vec::new(),
                variants: Vec::new(),
                active: true,
            };
            let catalog = catalog.clone();
            pending.spawn(async move {
                let result = create_shop(&owner, &id, catalog, spec).await;
                (index, id, owner, result)
            });
        }
        let Some(joined) = pending.join_next().await else {
            break;
        };
        let (index, id, owner, result) = joined.context("shop set-up task")?;
        result.with_context(|| format!("set up shop {id}"))?;
        handles[index] = Some(ShopHandle {
            id,
            product: product.clone(),
            owner: Arc::new(owner),
            budget: Arc::new(AtomicU64::new(SHOP_ORDERS_MAX)),
        });
    }
    let shops = handles
        .into_iter()
        .enumerate()
        .map(|(i, h)| h.ok_or_else(|| anyhow!("shop {i} was not set up")))
        .collect::<Result<Vec<_>>>()?;
    let customers = clients
        .into_iter()
        .enumerate()
        .map(|(i, client)| (Arc::new(client), i % shops.len()))
        .collect();
    Ok(CheckoutSetup {
        shops,
        customers,
        run_tag: run_tag.to_owned(),
    })
}

/// Creates the shop with a catalog and its one product in stock.
async fn create_shop(
    owner: &Client,
    shop: &ShopId,
    catalog: CatalogId,
    spec: ProductSpec,
) -> Result<(), ClientError> {
    let profile = ShopProfile {
        name: format!("Load test {shop}"),
        ..ShopProfile::default()
    };
    owner.create_shop(shop, profile).await?;
    owner.put_catalog(shop, catalog, "Everything").await?;
    let product = spec.id.clone();
    owner.put_product(shop, spec).await?;
    owner
        .set_stock(shop, product, None, Some(STOCK_UNITS))
        .await
}

/// Nanoseconds from `t0` to now (0 before `t0`).
fn since(t0: Instant) -> u64 {
    u64::try_from(Instant::now().saturating_duration_since(t0).as_nanos()).unwrap_or(u64::MAX)
}

/// Checkouts waiting for their order's `Paid` (or closing) update, by order id. Each entry lives
/// from the checkout's start to its end, so a customer has at most
/// [`IN_FLIGHT_PER_CUSTOMER_MAX`].
#[derive(Debug, Default)]
struct Waiters {
    by_order: Mutex<HashMap<OrderId, oneshot::Sender<(u64, OrderStatus)>>>,
}

impl Waiters {
    fn register(&self, order: OrderId) -> oneshot::Receiver<(u64, OrderStatus)> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(order, tx);
        rx
    }

    fn forget(&self, order: &OrderId) {
        self.lock().remove(order);
    }

    /// Wakes the checkout of `order` with the instant and status of its update.
    fn settle(&self, order: &OrderId, at_ns: u64, status: OrderStatus) {
        // The lock is held for one map operation, never across an await.
        let waiter = self.lock().remove(order);
        if let Some(tx) = waiter {
            let _ = tx.send((at_ns, status));
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<OrderId, oneshot::Sender<(u64, OrderStatus)>>> {
        self.by_order.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What one customer's checkouts share.
struct CustomerCtx {
    client: Arc<Client>,
    owner: Arc<Client>,
    shop: ShopId,
    product: ProductId,
    index: usize,
    run_tag: String,
    /// One cart per customer: checkouts take it in turn.
    cart: tokio::sync::Mutex<()>,
    waiters: Arc<Waiters>,
    t0: Instant,
    paid_wait: Duration,
    live: Arc<Live>,
}

/// How a checkout ended.
#[derive(Debug)]
enum End {
    /// The `Paid` update arrived at this instant (ns after `t0`).
    Paid(u64),
    /// No update came, but the order was paid when read.
    PaidUnnotified,
    /// A step failed: its label; whether the generator cancelled the order afterwards; whether
    /// the order may still hold an unpaid slot on the node.
    Failed {
        label: String,
        cancelled: bool,
        stuck: bool,
    },
    /// Not paid within the wait; cancelled (or `stuck`, if that failed too).
    Lost { cancelled: bool, stuck: bool },
}

/// One finished checkout, instants in ns after `t0`.
#[derive(Debug)]
struct Finished {
    intended_ns: u64,
    placed_ns: Option<u64>,
    accepted_ns: Option<u64>,
    requested_ns: Option<u64>,
    end: End,
}

impl Finished {
    fn new(intended_ns: u64) -> Finished {
        Finished {
            intended_ns,
            placed_ns: None,
            accepted_ns: None,
            requested_ns: None,
            end: End::Lost {
                cancelled: false,
                stuck: false,
            },
        }
    }

    fn failed(mut self, label: String, cancelled: bool, stuck: bool) -> Finished {
        self.end = End::Failed {
            label,
            cancelled,
            stuck,
        };
        self
    }
}

/// Cancels `order` as its customer. True when the order no longer holds an unpaid slot: it was
/// cancelled, or the node does not know it.
async fn cancel(ctx: &CustomerCtx, order: &OrderId) -> bool {
    let command = OrderCommand::Cancel {
        reason: "load test: a step failed".to_owned(),
    };
    let result = ctx
        .client
        .order_command(
            &ctx.shop,
            order.clone(),
            ctx.client.new_command_id(),
            command,
        )
        .await;
    match result {
        Ok(view) => !view.status.is_unpaid(),
        Err(ClientError::Server(piazza_client::ErrorCode::NotFound)) => true,
        Err(_) => false,
    }
}

/// One checkout, from the cart to the `Paid` update (see the module docs).
async fn checkout_one(ctx: Arc<CustomerCtx>, number: u64, intended_ns: u64) -> Finished {
    let mut done = Finished::new(intended_ns);
    let order = match order_id(&ctx.run_tag, ctx.index, number) {
        Ok(order) => order,
        Err(e) => return done.failed(format!("order_id {e}"), false, false),
    };
    let paid = ctx.waiters.register(order.clone());
    {
        // One cart per customer: hold it from adding the unit to checking it out.
        let _cart = ctx.cart.lock().await;
        if let Err(e) = ctx
            .client
            .cart_add(&ctx.shop, ctx.product.clone(), None, 1)
            .await
        {
            ctx.waiters.forget(&order);
            return done.failed(format!("cart_add {}", error_label(&e)), false, false);
        }
        if let Err(e) = ctx.client.checkout(&ctx.shop, order.clone(), None).await {
            ctx.waiters.forget(&order);
            // The unit may still be in the cart: empty it so the next checkout buys one unit.
            let _ = ctx.client.cart_clear(&ctx.shop).await;
            // A checkout that timed out may have been placed all the same.
            let unsure = matches!(
                e,
                ClientError::Timeout { .. } | ClientError::ConnectionLost(_)
            );
            let stuck = unsure && !cancel(&ctx, &order).await;
            return done.failed(
                format!("checkout {}", error_label(&e)),
                unsure && !stuck,
                stuck,
            );
        }
    }
    done.placed_ns = Some(since(ctx.t0));
    ctx.live.acked.fetch_add(1, Ordering::Relaxed);
    ctx.live.expected.fetch_add(1, Ordering::Relaxed);
    let unplaced = |ctx: &CustomerCtx| ctx.live.expected.fetch_sub(1, Ordering::Relaxed);

    let accept = ctx
        .owner
        .order_command(
            &ctx.shop,
            order.clone(),
            ctx.owner.new_command_id(),
            OrderCommand::Accept,
        )
        .await;
    if let Err(e) = accept {
        ctx.waiters.forget(&order);
        unplaced(&ctx);
        let cancelled = cancel(&ctx, &order).await;
        return done.failed(format!("accept {}", error_label(&e)), cancelled, !cancelled);
    }
    done.accepted_ns = Some(since(ctx.t0));

    let pay = OrderCommand::RequestPayment {
        plan: PaymentPlan::Full,
    };
    let requested = ctx
        .client
        .order_command(&ctx.shop, order.clone(), ctx.client.new_command_id(), pay)
        .await;
    if let Err(e) = requested {
        ctx.waiters.forget(&order);
        unplaced(&ctx);
        let cancelled = cancel(&ctx, &order).await;
        return done.failed(
            format!("request_payment {}", error_label(&e)),
            cancelled,
            !cancelled,
        );
    }
    done.requested_ns = Some(since(ctx.t0));

    done.end = match timeout_at(Instant::now() + ctx.paid_wait, paid).await {
        Ok(Ok((at_ns, status))) if status.is_paid() => End::Paid(at_ns),
        Ok(Ok((_, status))) => {
            unplaced(&ctx);
            // Closed (declined and expired, rejected, cancelled): it holds nothing.
            End::Failed {
                label: format!("order {status}"),
                cancelled: false,
                stuck: false,
            }
        }
        Ok(Err(_)) | Err(_) => {
            ctx.waiters.forget(&order);
            let read = ctx.client.order(&ctx.shop, order.clone()).await;
            if read.as_ref().is_ok_and(|view| view.status.is_paid()) {
                End::PaidUnnotified
            } else {
                unplaced(&ctx);
                let cancelled = cancel(&ctx, &order).await;
                End::Lost {
                    cancelled,
                    stuck: !cancelled,
                }
            }
        }
    };
    done
}

/// One customer's running figures.
struct CustomerTally {
    attempts: u64,
    unsent: u64,
    shop_full: u64,
    placed: u64,
    paid: u64,
    paid_unnotified: u64,
    lost: u64,
    cancelled: u64,
    stuck: u64,
    errors: BTreeMap<String, u64>,
    placed_in_window: u64,
    paid_in_window: u64,
    send_lag: LatencyHist,
    placed_hist: LatencyHist,
    accepted_hist: LatencyHist,
    requested_hist: LatencyHist,
    paid_hist: LatencyHist,
    requested_to_paid: LatencyHist,
}

impl CustomerTally {
    fn new() -> Result<CustomerTally> {
        Ok(CustomerTally {
            attempts: 0,
            unsent: 0,
            shop_full: 0,
            placed: 0,
            paid: 0,
            paid_unnotified: 0,
            lost: 0,
            cancelled: 0,
            stuck: 0,
            errors: BTreeMap::new(),
            placed_in_window: 0,
            paid_in_window: 0,
            send_lag: LatencyHist::new()?,
            placed_hist: LatencyHist::new()?,
            accepted_hist: LatencyHist::new()?,
            requested_hist: LatencyHist::new()?,
            paid_hist: LatencyHist::new()?,
            requested_to_paid: LatencyHist::new()?,
        })
    }

    /// Checkouts this customer may have under way now: at most `wanted`, and never so many that
    /// they and the orders stuck unpaid exceed the node's limit of unpaid orders.
    fn allowance(&self, wanted: usize) -> usize {
        let stuck = usize::try_from(self.stuck).unwrap_or(usize::MAX);
        wanted.min(UNPAID_PER_CUSTOMER_MAX.saturating_sub(stuck))
    }

    fn record(&mut self, done: Finished, window: &Window, live: &Live) {
        let measured = done.intended_ns >= window.warmup_ns;
        let since_intended = |at: Option<u64>| at.map(|at| at.saturating_sub(done.intended_ns));
        if done.placed_ns.is_some() {
            self.placed += 1;
            if window.contains(done.intended_ns) {
                self.placed_in_window += 1;
            }
        }
        if measured {
            for (hist, at) in [
                (&mut self.placed_hist, done.placed_ns),
                (&mut self.accepted_hist, done.accepted_ns),
                (&mut self.requested_hist, done.requested_ns),
            ] {
                if let Some(ns) = since_intended(at) {
                    hist.record_ns(ns);
                }
            }
        }
        match done.end {
            End::Paid(at_ns) => {
                self.paid += 1;
                live.delivered.fetch_add(1, Ordering::Relaxed);
                live.last_delivery_ns.fetch_max(at_ns, Ordering::Relaxed);
                if measured {
                    let latency = at_ns.saturating_sub(done.intended_ns);
                    self.paid_hist.record_ns(latency);
                    live.latency.record_ns(latency);
                    if let Some(requested) = done.requested_ns {
                        self.requested_to_paid
                            .record_ns(at_ns.saturating_sub(requested));
                    }
                }
                if window.contains(at_ns) {
                    self.paid_in_window += 1;
                }
            }
            End::PaidUnnotified => {
                self.paid += 1;
                self.paid_unnotified += 1;
                live.delivered.fetch_add(1, Ordering::Relaxed);
            }
            End::Failed {
                label,
                cancelled,
                stuck,
            } => {
                live.errors.fetch_add(1, Ordering::Relaxed);
                *self.errors.entry(label).or_default() += 1;
                self.cancelled += u64::from(cancelled);
                self.stuck += u64::from(stuck);
            }
            End::Lost { cancelled, stuck } => {
                self.lost += 1;
                self.cancelled += u64::from(cancelled);
                self.stuck += u64::from(stuck);
            }
        }
    }
}

/// The load's time frame, in ns after `t0`.
#[derive(Clone, Copy, Debug)]
struct Window {
    warmup_ns: u64,
    total_ns: u64,
}

impl Window {
    /// Whether `ns` falls in the measured window `[warmup, warmup + duration)`.
    fn contains(&self, ns: u64) -> bool {
        (self.warmup_ns..self.total_ns).contains(&ns)
    }
}

/// Takes one checkout from the shop's budget; false when the shop is full.
fn take_budget(budget: &AtomicU64) -> bool {
    budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
            left.checked_sub(1)
        })
        .is_ok()
}

/// The checkouts of one customer: paced (open loop) or back to back (closed loop).
async fn customer(
    ctx: Arc<CustomerCtx>,
    budget: Arc<AtomicU64>,
    params: CheckoutParams,
    customers: u64,
    window: Window,
) -> Result<CustomerTally> {
    let mut tally = CustomerTally::new()?;
    let mut in_flight: JoinSet<Finished> = JoinSet::new();
    let live = Arc::clone(&ctx.live);
    let t0 = ctx.t0;
    match params.rate {
        Some(rate) => {
            let mut schedule = pacing::Schedule::new(
                params.arrivals,
                ctx.index as u64,
                customers,
                rate,
                window.total_ns,
            );
            let late_limit_ns = window
                .total_ns
                .saturating_add(u64::try_from(LATE_START_GRACE.as_nanos()).unwrap_or(u64::MAX));
            let mut number = 0u64;
            while let Some(intended_ns) = schedule.next() {
                let due = t0 + Duration::from_nanos(intended_ns);
                // Wait for the due instant, collecting finished checkouts meanwhile.
                loop {
                    tokio::select! {
                        biased;
                        () = sleep_until(due) => break,
                        Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                            tally.record(joined.context("checkout task")?, &window, &live);
                        }
                    }
                }
                // At most the allowance under way; each turn collects one (bounded by it).
                while in_flight.len() >= tally.allowance(IN_FLIGHT_PER_CUSTOMER_MAX)
                    && let Some(joined) = in_flight.join_next().await
                {
                    tally.record(joined.context("checkout task")?, &window, &live);
                }
                let now_ns = since(t0);
                if tally.allowance(IN_FLIGHT_PER_CUSTOMER_MAX) == 0 || now_ns > late_limit_ns {
                    tally.unsent += 1 + schedule.count() as u64;
                    break;
                }
                if !take_budget(&budget) {
                    let rest = 1 + schedule.count() as u64;
                    tally.unsent += rest;
                    tally.shop_full += rest;
                    break;
                }
                if intended_ns >= window.warmup_ns {
                    tally.send_lag.record_ns(now_ns.saturating_sub(intended_ns));
                }
                tally.attempts += 1;
                live.attempts.fetch_add(1, Ordering::Relaxed);
                in_flight.spawn(checkout_one(Arc::clone(&ctx), number, intended_ns));
                number += 1;
            }
        }
        None => {
            sleep_until(t0).await;
            for number in 0..CLOSED_LOOP_MAX_PER_CUSTOMER {
                while in_flight.len() >= tally.allowance(params.in_flight)
                    && let Some(joined) = in_flight.join_next().await
                {
                    tally.record(joined.context("checkout task")?, &window, &live);
                }
                let intended_ns = since(t0);
                if intended_ns >= window.total_ns || tally.allowance(params.in_flight) == 0 {
                    break;
                }
                if !take_budget(&budget) {
                    tally.shop_full += 1;
                    tally.unsent += 1;
                    break;
                }
                tally.attempts += 1;
                live.attempts.fetch_add(1, Ordering::Relaxed);
                in_flight.spawn(checkout_one(Arc::clone(&ctx), number, intended_ns));
            }
        }
    }
    // Checkouts under way end by themselves: every step has the SDK's request deadline and the
    // wait for `Paid` is bounded.
    while let Some(joined) = in_flight.join_next().await {
        tally.record(joined.context("checkout task")?, &window, &live);
    }
    Ok(tally)
}

/// What a receiver saw.
#[derive(Debug, Default)]
struct ReceiverTally {
    foreign: u64,
    reconnects: u64,
}

/// Reads `client`'s events until told to stop (or `deadline`): order updates wake the waiting
/// checkouts (`waiters`; `None` for an owner, whose events are only drained so its connection
/// never backs up).
async fn receive(
    client: Arc<Client>,
    waiters: Option<Arc<Waiters>>,
    t0: Instant,
    deadline: Instant,
    mut stop: watch::Receiver<bool>,
) -> ReceiverTally {
    let mut tally = ReceiverTally::default();
    // Bounded in time by `deadline`, and normally ended earlier by `stop`.
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            () = sleep_until(deadline) => break,
            event = client.next_event() => match event {
                None => break,
                Some(ClientEvent::Message(message)) => {
                    let at_ns = since(t0);
                    let view = match &message.body {
                        MessageBody::Update(MessageUpdate::Order { order, .. }) => Some(&**order),
                        MessageBody::Commerce(body) => match &**body {
                            CommerceBody::Order(view) => Some(view),
                            _ => None,
                        },
                        _ => None,
                    };
                    match (view, &waiters) {
                        (Some(view), Some(waiters))
                            if view.status.is_paid() || view.status.is_closed() =>
                        {
                            waiters.settle(&view.order, at_ns, view.status);
                        }
                        (Some(_), _) => {}
                        (None, _) => tally.foreign += 1,
                    }
                }
                Some(ClientEvent::Reconnected { .. }) => tally.reconnects += 1,
                Some(_) => {}
            },
        }
    }
    tally
}

/// Runs the checkouts and returns the common figures and the checkout ones.
pub(crate) async fn run(
    params: &CheckoutParams,
    setup: CheckoutSetup,
) -> Result<(TrafficOutcome, CheckoutSummary)> {
    let CheckoutSetup {
        shops,
        customers,
        run_tag,
    } = setup;
    let window = Window {
        warmup_ns: u64::try_from(params.warmup.as_nanos()).unwrap_or(u64::MAX),
        total_ns: u64::try_from((params.warmup + params.duration).as_nanos()).unwrap_or(u64::MAX),
    };
    let total = params.warmup + params.duration;
    let live = Arc::new(Live::default());
    let t0 = Instant::now() + START_LEAD;
    // The last checkout may start LATE_START_GRACE after the load and take its four requests
    // (each bounded by the SDK's deadline) and the wait for `Paid`.
    let last_end =
        total + LATE_START_GRACE + 5 * piazza_client::REQUEST_TIMEOUT_DEFAULT + params.paid_wait;
    let deadline = t0 + last_end + RECEIVER_GRACE;
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut receivers = JoinSet::new();
    for shop in &shops {
        receivers.spawn(receive(
            Arc::clone(&shop.owner),
            None,
            t0,
            deadline,
            stop_rx.clone(),
        ));
    }
    let customer_count = customers.len() as u64;
    let shop_count = shops.len();
    let mut tasks = JoinSet::new();
    for (index, (client, shop_index)) in customers.iter().enumerate() {
        let Some(shop) = shops.get(*shop_index) else {
            return Err(anyhow!("internal: shop {shop_index} out of range"));
        };
        let waiters = Arc::new(Waiters::default());
        receivers.spawn(receive(
            Arc::clone(client),
            Some(Arc::clone(&waiters)),
            t0,
            deadline,
            stop_rx.clone(),
        ));
        let ctx = Arc::new(CustomerCtx {
            client: Arc::clone(client),
            owner: Arc::clone(&shop.owner),
            shop: shop.id.clone(),
            product: shop.product.clone(),
            index,
            run_tag: run_tag.clone(),
            cart: tokio::sync::Mutex::new(()),
            waiters,
            t0,
            paid_wait: params.paid_wait,
            live: Arc::clone(&live),
        });
        tasks.spawn(customer(
            ctx,
            Arc::clone(&shop.budget),
            params.clone(),
            customer_count,
            window,
        ));
    }
    let progress = params.progress.then(|| {
        tokio::spawn(progress::run(
            Arc::clone(&live),
            t0,
            total,
            last_end,
            stop_rx.clone(),
        ))
    });
    let cpu_window = tokio::spawn(traffic::cpu_window(
        params.node_pid,
        params.ticks_per_s,
        t0 + params.warmup,
        t0 + total,
    ));

    let mut sum = CustomerTally::new()?;
    while let Some(joined) = tasks.join_next().await {
        let tally = joined.context("customer task")??;
        sum.attempts += tally.attempts;
        sum.unsent += tally.unsent;
        sum.shop_full += tally.shop_full;
        sum.placed += tally.placed;
        sum.paid += tally.paid;
        sum.paid_unnotified += tally.paid_unnotified;
        sum.lost += tally.lost;
        sum.cancelled += tally.cancelled;
        sum.stuck += tally.stuck;
        sum.placed_in_window += tally.placed_in_window;
        sum.paid_in_window += tally.paid_in_window;
        for (label, count) in tally.errors {
            *sum.errors.entry(label).or_default() += count;
        }
        for (into, from) in [
            (&mut sum.send_lag, &tally.send_lag),
            (&mut sum.placed_hist, &tally.placed_hist),
            (&mut sum.accepted_hist, &tally.accepted_hist),
            (&mut sum.requested_hist, &tally.requested_hist),
            (&mut sum.paid_hist, &tally.paid_hist),
            (&mut sum.requested_to_paid, &tally.requested_to_paid),
        ] {
            into.merge(from)?;
        }
    }
    // Every checkout has ended: the drain is how long after the load that took.
    let drain = Instant::now().saturating_duration_since(t0 + total);
    let _ = stop_tx.send(true);
    let mut foreign = 0;
    let mut reconnects = 0;
    while let Some(joined) = receivers.join_next().await {
        let tally = joined.context("receiver task")?;
        foreign += tally.foreign;
        reconnects += tally.reconnects;
    }
    if let Some(progress) = progress {
        let _ = progress.await;
    }
    let cpu = cpu_window.await.context("CPU sampling task")?;

    // Close every connection (each waits briefly for the node to hear about it), all at once.
    let mut closing = JoinSet::new();
    let clients = shops
        .into_iter()
        .map(|s| s.owner)
        .chain(customers.into_iter().map(|(client, _)| client));
    for client in clients {
        if let Ok(client) = Arc::try_unwrap(client) {
            closing.spawn(client.close());
        }
    }
    while closing.join_next().await.is_some() {}

    let errors_total: u64 = sum.errors.values().sum();
    let summary = CheckoutSummary {
        shops: shop_count,
        customers: customer_count as usize,
        placed_us: sum.placed_hist.percentiles(),
        accepted_us: sum.accepted_hist.percentiles(),
        payment_requested_us: sum.requested_hist.percentiles(),
        requested_to_paid_us: sum.requested_to_paid.percentiles(),
        paid_unnotified: sum.paid_unnotified,
        shop_full: sum.shop_full,
        cancelled: sum.cancelled,
        stuck: sum.stuck,
    };
    debug_assert_eq!(sum.attempts, sum.paid + errors_total + sum.lost);
    let outcome = TrafficOutcome {
        attempts: sum.attempts,
        unsent: sum.unsent,
        tally: Tally {
            acked: sum.placed,
            delivered: sum.paid,
            lost: sum.lost,
            ..Tally::default()
        },
        errors: sum.errors,
        latency: sum.paid_hist,
        ack_latency: sum.placed_hist,
        send_lag: sum.send_lag,
        delivered_in_window: sum.paid_in_window,
        acked_in_window: sum.placed_in_window,
        drain,
        foreign,
        reconnects,
        cpu,
        fanout_complete: None,
    };
    Ok((outcome, summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_are_unique_valid_and_fit_the_longest_case() {
        let a = order_id("m3k9z1", 0, 0).unwrap();
        assert_eq!(a.as_str(), "om3k9z1-0-0");
        // Customer 1 checkout 10 and customer 11 checkout 0 must differ.
        assert_ne!(order_id("t", 1, 10).unwrap(), order_id("t", 11, 0).unwrap());
        assert_ne!(order_id("t", 1, 10).unwrap(), order_id("u", 1, 10).unwrap());
        // A run tag is at most 25 base-36 digits; customers up to 10,000.
        let longest = order_id(&"z".repeat(25), 9_999, CLOSED_LOOP_MAX_PER_CUSTOMER).unwrap();
        assert!(longest.as_str().len() <= 64);
        // The node posts the order message under the order id as its client message id.
        assert!(
            longest
                .as_str()
                .parse::<piazza_client::ClientMsgId>()
                .is_ok()
        );
        assert!(order_id("not valid", 0, 0).is_err());
    }

    #[test]
    fn shops_default_to_one_per_hundred_customers_and_at_least_one() {
        assert_eq!(shop_count(20, None), 1);
        assert_eq!(shop_count(100, None), 1);
        assert_eq!(shop_count(250, None), 2);
        assert_eq!(shop_count(1_000, None), 10);
        assert_eq!(shop_count(1_000, Some(4)), 4);
        assert_eq!(shop_count(5, Some(0)), 1);
    }

    #[test]
    fn an_open_loop_must_fit_the_shops_order_limit() {
        assert!(check_capacity(1_000, 11, 1).is_ok());
        // Exactly the limit, and one more.
        assert!(check_capacity(SHOP_ORDERS_MAX, 1, 1).is_ok());
        let over = check_capacity(SHOP_ORDERS_MAX + 1, 1, 1).unwrap_err();
        assert!(over.contains("--shops 2"), "{over}");
        let big = check_capacity(25_000, 11, 1).unwrap_err();
        assert!(big.contains("--shops 3"), "{big}");
        assert!(check_capacity(25_000, 11, 3).is_ok());
    }

    #[test]
    fn the_paid_wait_covers_two_sandbox_settlements() {
        assert_eq!(paid_wait(None, None), PAID_WAIT);
        assert_eq!(paid_wait(Some(0), Some(0)), PAID_WAIT);
        assert_eq!(
            paid_wait(Some(20), Some(10)),
            PAID_WAIT + Duration::from_millis(60)
        );
    }

    #[test]
    fn a_shop_budget_runs_out_and_stays_out() {
        let budget = AtomicU64::new(2);
        assert!(take_budget(&budget));
        assert!(take_budget(&budget));
        assert!(!take_budget(&budget));
        assert_eq!(budget.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn stuck_orders_lower_a_customers_allowance_to_the_unpaid_limit() {
        let mut tally = CustomerTally::new().unwrap();
        assert_eq!(tally.allowance(IN_FLIGHT_PER_CUSTOMER_MAX), 8);
        assert_eq!(tally.allowance(1), 1);
        tally.stuck = 3;
        assert_eq!(tally.allowance(IN_FLIGHT_PER_CUSTOMER_MAX), 7);
        tally.stuck = 10;
        assert_eq!(tally.allowance(IN_FLIGHT_PER_CUSTOMER_MAX), 0);
    }

    #[test]
    fn a_checkout_is_tallied_once_by_how_it_ended() {
        let window = Window {
            warmup_ns: 1_000,
            total_ns: 10_000,
        };
        let live = Live::default();
        let mut tally = CustomerTally::new().unwrap();
        // Measured, paid in the window, 900 ns after its intended start.
        let mut paid = Finished::new(2_000);
        paid.placed_ns = Some(2_100);
        paid.accepted_ns = Some(2_200);
        paid.requested_ns = Some(2_300);
        paid.end = End::Paid(2_900);
        tally.record(paid, &window, &live);
        // In the warmup: counted, not timed.
        let mut early = Finished::new(500);
        early.placed_ns = Some(600);
        early.end = End::PaidUnnotified;
        tally.record(early, &window, &live);
        tally.record(
            Finished::new(3_000).failed("cart_add rate_limited".into(), false, false),
            &window,
            &live,
        );
        let mut lost = Finished::new(4_000);
        lost.placed_ns = Some(4_100);
        lost.end = End::Lost {
            cancelled: false,
            stuck: true,
        };
        tally.record(lost, &window, &live);
        assert_eq!((tally.placed, tally.paid, tally.lost), (3, 2, 1));
        assert_eq!((tally.paid_unnotified, tally.stuck), (1, 1));
        assert_eq!(tally.errors.get("cart_add rate_limited"), Some(&1));
        assert_eq!((tally.paid_in_window, tally.placed_in_window), (1, 2));
        assert_eq!(tally.paid_hist.count(), 1);
        assert_eq!(tally.placed_hist.count(), 2);
        assert_eq!(tally.requested_to_paid.count(), 1);
        assert_eq!(live.delivered.load(Ordering::Relaxed), 2);
        assert_eq!(live.errors.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn waiters_wake_once_and_forget_cleanly() {
        let waiters = Waiters::default();
        let order = order_id("t", 0, 0).unwrap();
        let mut rx = waiters.register(order.clone());
        waiters.settle(&order, 42, OrderStatus::Paid);
        assert_eq!(rx.try_recv().unwrap(), (42, OrderStatus::Paid));
        // A second update for the same order finds no waiter.
        waiters.settle(&order, 43, OrderStatus::Paid);
        let other = order_id("t", 0, 1).unwrap();
        let _rx = waiters.register(other.clone());
        waiters.forget(&other);
        assert!(waiters.lock().is_empty());
    }
}
