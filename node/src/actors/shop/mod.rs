//! The shop actor: one per shop, activated on demand, state rebuilt from the shop's log.
//!
//! It owns the shop's data and decides every request about it ([`state::ShopState::apply`]):
//! profile, hours, staff, catalog, carts, orders, payments, coupons, promotions. A change is
//! applied in memory at once (later requests see it), and its log entry, its commerce events
//! (the outbox) and the staff rows go to storage in one group-committed batch; the caller is
//! answered, and everything the change implies outside the shop (order messages, provider
//! requests, promotion messages, sink wake-ups) starts, only once that batch is durable. A
//! failed commit stops the actor, so its next activation replays only what is durable.
//!
//! Messages into a customer's conversation with the shop (`s:<shop>:<customer>`) go through
//! that conversation's actor like any send: order messages, greetings, away messages and
//! promotions are sent as the reserved pseudo-user [`UserId::shop`]; product messages as the
//! staff member who sent them.

pub(crate) mod hours;
pub(crate) mod response;
pub(crate) mod state;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use piazza_protocol::commerce::{
    CommerceBody, OrderId, OrderView, PaymentId, ProductCard, ProductId, PromotionId,
    PromotionReport, ShopId, ShopOp, ShopReply, ShopStats, StaffRole,
};
use piazza_protocol::{ClientMsgId, ConversationId, ErrorCode, MessageBody, Response, Seq, UserId};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::actors::conversation::core::{Draft, ShopStaff};
use crate::actors::conversation::{ConversationMsg, UpdateRequest};
use crate::commerce::payment::{Notification, Snapshot};
use crate::commerce::shop::Settings;
use crate::node::NodeContext;
use crate::payments::{PaymentProvider, ProviderError};
use crate::storage::{KvTable, Storage, StorageError, Write};

use self::response::FirstResponses;
use self::state::{Applied, Entry, Input, ShopState};

/// Most log rows read per scan while replaying.
const REPLAY_PAGE: usize = 1000;
/// Largest encoded log entry.
const ENTRY_BYTES_MAX: usize = 1024 * 1024;
/// Customers handed a promotion per actor turn: opt-outs arriving meanwhile are honoured by
/// the next turn.
const PROMOTION_CHUNK: usize = 100;
/// Most audience members of one promotion.
const PROMOTION_AUDIENCE_MAX: usize = 1_000_000;
/// The away message goes to a customer at most once in this period.
const AWAY_REPEAT_MS: u64 = 60 * 60 * 1000;
/// Most customers remembered as having had the away message recently.
const AWAY_SENT_MAX: usize = 100_000;
/// Attempts at a provider request that fails transiently before leaving it to the next
/// activation (which resends pending requests).
const PROVIDER_ATTEMPTS_MAX: u32 = 8;
/// Most shops whose staff roster is cached.
const ROSTERS_CACHED_MAX: usize = 100_000;
/// Above this many orders in memory, the oldest final ones are archived whatever their age.
const ORDERS_HIGH_WATER: usize = crate::commerce::shop::ORDERS_MAX * 8 / 10;
/// How often a shop looks for final orders old enough to archive (besides memory pressure).
const ARCHIVE_CHECK_PERIOD: Duration = Duration::from_secs(60);
/// Most orders archived in one commit.
const ARCHIVE_BATCH: usize = 1000;

/// Something a customer or staff member wrote in a shop conversation, told to the shop so it
/// can greet, answer out of hours and measure first responses.
#[derive(Clone, Debug)]
pub(crate) struct ShopNotice {
    pub(crate) shop: ShopId,
    pub(crate) customer: UserId,
    pub(crate) from_staff: bool,
    pub(crate) at_ms: u64,
    pub(crate) seq: Seq,
}

impl ShopNotice {
    /// The notice for the message stored at `seq`.
    pub(crate) fn with_seq(mut self, seq: Seq) -> ShopNotice {
        self.seq = seq;
        self
    }
}

/// Messages of a shop actor.
#[derive(Debug)]
pub(crate) enum ShopMsg {
    /// A user's request.
    Request {
        user: UserId,
        op: ShopOp,
        reply: RpcReplyPort<Response>,
    },
    /// A message in one of the shop's conversations.
    Notice(ShopNotice),
    /// A verified provider notification.
    Notification(Notification),
    /// The provider's view of a payment attempt, fetched by this actor.
    Synced(Snapshot),
    /// Timers are due.
    Tick,
    /// The order message of `order` was stored at `seq`.
    OrderPosted { order: OrderId, seq: Seq },
    /// The next customers of a running promotion.
    PromoteNext(Box<PromotionRun>),
    /// A batch of this actor's is durable: do what it implies.
    Committed(Box<AfterCommit>),
    /// A batch of this actor's failed: stop, so the next activation replays what is durable.
    CommitFailed,
    /// Passivate if idle.
    IdleCheck,
    /// Nothing: activates a passivated shop whose timer is due (activation arms the timers).
    Wake,
}

impl ShopMsg {
    /// Answers the request inside, if any, with `code`.
    pub(crate) fn fail(self, code: ErrorCode) {
        if let ShopMsg::Request { reply, .. } = self {
            let _ = reply.send(Response::Error(code));
        }
    }
}

/// A promotion being handed out.
#[derive(Debug)]
pub(crate) struct PromotionRun {
    promotion: PromotionId,
    text: String,
    product: Option<ProductCard>,
    scope: piazza_protocol::commerce::Scope,
    remaining: Vec<UserId>,
    report: PromotionReport,
    reply: Option<RpcReplyPort<Response>>,
}

/// What a durable change implies.
#[derive(Debug, Default)]
pub(crate) struct AfterCommit {
    applied: Applied,
    log_seq: u64,
    promotion: Option<PromotionRun>,
    post: Option<(UserId, Draft, RpcReplyPort<Response>)>,
    /// A promotion chunk: the message and who it goes to.
    deliver: Option<(CommerceBody, Vec<UserId>, PromotionId)>,
    /// The rest of a running promotion.
    next: Option<PromotionRun>,
    /// A finished promotion: its caller and report.
    finished: Option<(RpcReplyPort<Response>, PromotionReport)>,
}

/// The node's shops: how to reach a shop's actor, and the staff rosters conversations read.
#[derive(Debug, Default)]
pub(crate) struct Shops {
    rosters: DashMap<ShopId, ShopStaff>,
    /// The payment provider, once the node started it.
    pub(crate) provider: std::sync::OnceLock<Arc<dyn PaymentProvider>>,
    /// Wakes the event sinks.
    pub(crate) sinks: std::sync::OnceLock<crate::sinks::SinksHandle>,
}

impl Shops {
    /// The staff roster of `shop` (empty: no such shop), from the cache or storage.
    pub(crate) fn staff(
        &self,
        storage: &Arc<dyn Storage>,
        shop: &ShopId,
    ) -> Result<ShopStaff, StorageError> {
        if let Some(roster) = self.rosters.get(shop) {
            return Ok(roster.clone());
        }
        let roster = Arc::new(load_roster(storage.as_ref(), shop)?);
        if self.rosters.len() >= ROSTERS_CACHED_MAX {
            self.rosters.clear();
        }
        self.rosters.insert(shop.clone(), roster.clone());
        Ok(roster)
    }

    fn publish(&self, shop: &ShopId, staff: &BTreeMap<UserId, StaffRole>) {
        self.rosters.insert(shop.clone(), Arc::new(staff.clone()));
    }
}

fn roster_prefix(shop: &ShopId) -> Vec<u8> {
    let mut key = shop.as_str().as_bytes().to_vec();
    key.push(0);
    key
}

fn roster_key(shop: &ShopId, user: &UserId) -> Vec<u8> {
    let mut key = roster_prefix(shop);
    key.extend_from_slice(user.as_str().as_bytes());
    key
}

fn role_byte(role: StaffRole) -> u8 {
    match role {
        StaffRole::Owner => 1,
        StaffRole::Manager => 2,
        StaffRole::Agent => 3,
    }
}

fn load_roster(
    storage: &dyn Storage,
    shop: &ShopId,
) -> Result<BTreeMap<UserId, StaffRole>, StorageError> {
    let prefix = roster_prefix(shop);
    let (rows, _) = storage.kv_scan(KvTable::ShopStaff, &prefix, None, state::STAFF_MAX)?;
    let mut roster = BTreeMap::new();
    for (key, value) in rows {
        let corrupt = |reason: &str| StorageError::Corrupt {
            table: "shop_staff",
            reason: reason.to_owned(),
        };
        let user = std::str::from_utf8(&key[prefix.len()..])
            .ok()
            .and_then(|s| s.parse::<UserId>().ok())
            .ok_or_else(|| corrupt("user"))?;
        let role = match value.first() {
            Some(1) => StaffRole::Owner,
            Some(2) => StaffRole::Manager,
            Some(3) => StaffRole::Agent,
            _ => return Err(corrupt("role")),
        };
        roster.insert(user, role);
    }
    Ok(roster)
}

fn log_prefix(shop: &ShopId) -> Vec<u8> {
    roster_prefix(shop)
}

/// Where a shop's first-response statistics are kept: after its log (`0x01` sorts after the
/// log prefix's `0x00`).
fn responses_key(shop: &ShopId) -> Vec<u8> {
    let mut key = shop.as_str().as_bytes().to_vec();
    key.extend_from_slice(b"\x01responses");
    key
}

/// Where the view of an archived order is kept (`0x02` after the shop id).
fn archive_key(shop: &ShopId, order: &OrderId) -> Vec<u8> {
    let mut key = shop.as_str().as_bytes().to_vec();
    key.push(2);
    key.extend_from_slice(order.as_str().as_bytes());
    key
}

fn log_key(shop: &ShopId, seq: u64) -> Vec<u8> {
    let mut key = log_prefix(shop);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The actor.
#[derive(Debug)]
pub(crate) struct ShopActor;

/// Its arguments.
#[derive(Debug)]
pub(crate) struct ShopArgs {
    pub(crate) id: ShopId,
    pub(crate) ctx: Arc<NodeContext>,
}

/// Its state.
#[derive(Debug)]
pub(crate) struct ShopActorState {
    ctx: Arc<NodeContext>,
    shop: ShopState,
    /// Seq of the newest log entry.
    log_seq: u64,
    /// Seq of the newest outbox event.
    event_seq: u64,
    responses: FirstResponses,
    away_sent: HashMap<UserId, u64>,
    timer: Option<tokio::task::JoinHandle<()>>,
    timer_at: Option<u64>,
    /// Promotions waiting for the running one to finish.
    promotions: std::collections::VecDeque<PromotionRun>,
    promoting: bool,
    /// What each order message shows, to update it only when that changes.
    shown: HashMap<OrderId, ShownKey>,
    /// The wake-up time last written for this shop.
    wake_written: Option<u64>,
    /// When archivable orders were last looked for.
    archive_checked: std::time::Instant,
    /// When the actor last handled something other than an idle check.
    last_active: std::time::Instant,
    /// Sends [`ShopMsg::IdleCheck`] periodically.
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Actor for ShopActor {
    type Msg = ShopMsg;
    type State = ShopActorState;
    type Arguments = ShopArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ShopMsg>,
        args: ShopArgs,
    ) -> Result<ShopActorState, ActorProcessingErr> {
        let ShopArgs { id, ctx } = args;
        crate::actors::conversation::barrier(&ctx).await?;
        let settings = Settings {
            unpaid_ttl_ms: ctx
                .config
                .commerce
                .unpaid_order_ttl_secs
                .saturating_mul(1000),
            ..Settings::default()
        };
        let mut shop = ShopState::new(id.clone(), settings);
        let prefix = log_prefix(&id);
        let mut after: Option<Vec<u8>> = None;
        let mut log_seq = 0;
        loop {
            let (rows, more) =
                ctx.storage
                    .kv_scan(KvTable::ShopLog, &prefix, after.as_deref(), REPLAY_PAGE)?;
            for (key, value) in &rows {
                let entry: Entry =
                    piazza_protocol::codec::decode(value, ENTRY_BYTES_MAX).map_err(|e| {
                        StorageError::Corrupt {
                            table: "shop_log",
                            reason: e.to_string(),
                        }
                    })?;
                // A refusal during replay means the code changed under the log: keep going with
                // what applies, and say so.
                if let Err(code) = shop.apply(&entry.input, entry.at_ms) {
                    tracing::warn!(shop = %id, error = %code, "log entry no longer applies");
                }
                log_seq = key
                    .get(prefix.len()..)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map_or(log_seq, u64::from_be_bytes);
            }
            after = rows.last().map(|(key, _)| key.clone());
            if !more {
                break;
            }
        }
        let event_seq = crate::sinks::outbox::last_outbox_seq(ctx.storage.as_ref(), &id)?;
        // First-response measurements are statistics, saved when the actor stops.
        let responses = match ctx.storage.kv_get(KvTable::ShopLog, &responses_key(&id))? {
            Some(bytes) => FirstResponses::decode(&bytes).unwrap_or_else(|e| {
                tracing::warn!(shop = %id, error = %e, "first-response statistics unreadable");
                FirstResponses::new()
            }),
            None => FirstResponses::new(),
        };
        ctx.shops.publish(&id, &shop.staff);
        metrics::counter!("piazza_actor_activations_total", "kind" => "shop").increment(1);
        let mut state = ShopActorState {
            ctx,
            shop,
            log_seq,
            event_seq,
            responses,
            away_sent: HashMap::new(),
            timer: None,
            timer_at: None,
            promotions: std::collections::VecDeque::new(),
            promoting: false,
            last_active: std::time::Instant::now(),
            ticker: None,
            wake_written: None,
            shown: HashMap::new(),
            archive_checked: std::time::Instant::now()
                .checked_sub(ARCHIVE_CHECK_PERIOD)
                .unwrap_or_else(std::time::Instant::now),
        };
        state.wake_written = match state
            .ctx
            .storage
            .kv_get(KvTable::ShopWake, id.as_str().as_bytes())?
        {
            Some(bytes) => <[u8; 8]>::try_from(bytes.as_slice())
                .ok()
                .map(u64::from_be_bytes),
            None => None,
        };
        // Like conversations, an idle shop passivates (its state is its log).
        let period =
            Duration::from_millis((state.ctx.config.limits.conversation_idle_ms / 2).max(10));
        let me = myself.clone();
        state.ticker = Some(tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.tick().await;
            loop {
                interval.tick().await;
                if me.send_message(ShopMsg::IdleCheck).is_err() {
                    break;
                }
            }
        }));
        // After a restart: requests the provider may not have received, and order messages
        // that may not have been posted.
        for request in state.shop.core.pending_requests() {
            state.send_to_provider(request);
        }
        let unposted: Vec<OrderId> = state
            .shop
            .core
            .orders()
            .filter(|o| !state.shop.order_messages.contains_key(o.id()))
            .map(|o| o.id().clone())
            .collect();
        for order in unposted {
            state.post_order(&order);
        }
        state.arm_timer(&myself);
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ShopMsg>,
        state: &mut ShopActorState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.timer.take() {
            timer.abort();
        }
        if let Some(ticker) = state.ticker.take() {
            ticker.abort();
        }
        let save = vec![Write::Put {
            table: KvTable::ShopLog,
            key: responses_key(&state.shop.id),
            value: state.responses.encode(),
        }];
        if let Err(e) = state.ctx.storage.submit(save, Box::new(|_| {})) {
            tracing::debug!(error = %e, "first-response statistics not saved");
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ShopMsg>,
        message: ShopMsg,
        state: &mut ShopActorState,
    ) -> Result<(), ActorProcessingErr> {
        if !matches!(message, ShopMsg::IdleCheck) {
            state.last_active = std::time::Instant::now();
        }
        match message {
            ShopMsg::Wake => {}
            ShopMsg::IdleCheck => {
                let idle = Duration::from_millis(state.ctx.config.limits.conversation_idle_ms);
                if state.last_active.elapsed() >= idle
                    && !state.promoting
                    && state.promotions.is_empty()
                {
                    // Timers (expiry, instalments) are rebuilt from the log on the next
                    // activation; a due one activates the shop through the scheduler below.
                    myself.stop(Some("idle".into()));
                }
                return Ok(());
            }
            ShopMsg::Request { user, op, reply } => state.request(&myself, user, op, reply),
            ShopMsg::Notice(notice) => state.notice(notice),
            ShopMsg::Notification(notification) => {
                state.change(&myself, Input::Notification(notification));
            }
            ShopMsg::Synced(snapshot) => state.change(&myself, Input::Snapshot(snapshot)),
            ShopMsg::Tick => {
                state.timer_at = None;
                state.change(&myself, Input::Tick);
            }
            ShopMsg::OrderPosted { order, seq } => {
                state.change(
                    &myself,
                    Input::OrderMessage {
                        order: order.clone(),
                        seq,
                    },
                );
                // The order may have moved on while its message was being posted.
                let log_seq = state.log_seq;
                state.update_order_message(&order, log_seq, 0);
            }
            ShopMsg::PromoteNext(run) => state.promote_next(&myself, *run),
            ShopMsg::Committed(after) => state.after_commit(&myself, *after),
            ShopMsg::CommitFailed => {
                tracing::error!(shop = %state.shop.id, "commit failed; stopping the shop actor");
                myself.stop(Some("commit failed".into()));
            }
        }
        state.arm_timer(&myself);
        Ok(())
    }
}

impl ShopActorState {
    fn now(&self) -> u64 {
        crate::node::now_ms()
    }

    fn open_now(&self, now: u64) -> bool {
        self.shop
            .hours
            .as_ref()
            .is_none_or(|hours| hours::is_open(hours, now))
    }

    fn request(
        &mut self,
        myself: &ActorRef<ShopMsg>,
        user: UserId,
        op: ShopOp,
        reply: RpcReplyPort<Response>,
    ) {
        let now = self.now();
        metrics::counter!("piazza_shop_requests_total", "op" => op.name()).increment(1);
        let answer = |reply: RpcReplyPort<Response>, result: Result<ShopReply, ErrorCode>| {
            let _ = reply.send(match result {
                Ok(r) => Response::Shop(Box::new(r)),
                Err(code) => Response::Error(code),
            });
        };
        // Reads first: they change nothing and are answered at once.
        let exists = self.shop.created;
        let read = match &op {
            ShopOp::Info if exists => Some(Ok(ShopReply::Info(self.shop.info(&user, now)))),
            ShopOp::Stats if exists => Some(self.stats(&user)),
            ShopOp::Products {
                catalog,
                category,
                after,
                limit,
            } if exists => Some(Ok(self.products(
                &user,
                catalog.as_ref(),
                category.as_ref(),
                after.as_ref(),
                *limit as usize,
                now,
            ))),
            ShopOp::Product { product } if exists => Some(
                self.shop
                    .core
                    .catalog()
                    .product(product)
                    .filter(|p| p.spec().active || self.shop.is_staff(&user))
                    .map(|p| ShopReply::Product(self.shop.product_view(p, now)))
                    .ok_or(ErrorCode::NotFound),
            ),
            ShopOp::Cart if exists => Some(self.shop.cart_view(&user, now).map(ShopReply::Cart)),
            ShopOp::Order { order } if exists => {
                Some(self.order_view(&user, order).map(ShopReply::Order))
            }
            ShopOp::Orders { after, limit } if exists => {
                Some(Ok(self.orders(&user, after.as_ref(), *limit as usize)))
            }
            ShopOp::Coupons if exists => {
                Some(self.shop.coupons_view(&user).map(ShopReply::Coupons))
            }
            ShopOp::Consents if exists => {
                Some(Ok(ShopReply::Consents(self.shop.consents_view(&user))))
            }
            ShopOp::SendProduct { customer, product } if exists => {
                match self.product_message(&user, customer, product, now) {
                    Ok(draft) => {
                        self.post_as(customer.clone(), user, draft, reply);
                        return;
                    }
                    Err(code) => Some(Err(code)),
                }
            }
            ShopOp::SendProductList {
                customer,
                header,
                sections,
            } if exists => match self.product_list(&user, customer, header, sections, now) {
                Ok(draft) => {
                    self.post_as(customer.clone(), user, draft, reply);
                    return;
                }
                Err(code) => Some(Err(code)),
            },
            ShopOp::SetVerified { .. }
                if !self
                    .ctx
                    .config
                    .commerce
                    .operators
                    .iter()
                    .any(|o| o == user.as_str()) =>
            {
                Some(Err(ErrorCode::Forbidden))
            }
            _ => None,
        };
        if let Some(result) = read {
            answer(reply, result);
            return;
        }
        // A change.
        let input = Input::Op {
            user: user.clone(),
            op: op.clone(),
        };
        let applied = match self.shop.apply(&input, now) {
            Ok(applied) => applied,
            Err(code) => {
                answer(reply, Err(code));
                return;
            }
        };
        // Only a change is logged (a retried promotion, a replayed command change nothing).
        let logged = applied.changed.then_some(input);
        let result = match &op {
            ShopOp::Create { .. } => Ok(ShopReply::Info(self.shop.info(&user, now))),
            ShopOp::CartAdd { .. }
            | ShopOp::CartSet { .. }
            | ShopOp::CartRemove { .. }
            | ShopOp::CartClear => self.shop.cart_view(&user, now).map(ShopReply::Cart),
            ShopOp::Checkout { order, .. } | ShopOp::Command { order, .. } => {
                self.shop.order_view(&user, order).map(ShopReply::Order)
            }
            _ => Ok(ShopReply::Done),
        };
        let mut after = AfterCommit::default();
        match &op {
            ShopOp::AskAbout { product, text } => {
                match self.ask_message(product, text, now) {
                    Ok(draft) => after.post = Some((user.clone(), draft, reply)),
                    Err(code) => answer(reply, Err(code)),
                }
                self.commit(myself, logged, applied, after, now);
                return;
            }
            ShopOp::Promote {
                promotion,
                scope,
                text,
                product,
                ..
            } => {
                let card = product
                    .as_ref()
                    .and_then(|p| self.shop.core.catalog().product(p))
                    .map(|p| card_of(&self.shop, p, now));
                let audience = self
                    .shop
                    .core
                    .promotions()
                    .audience(promotion, self.shop.core.profiles().iter(), now)
                    .unwrap_or_default();
                let mut remaining = audience;
                remaining.truncate(PROMOTION_AUDIENCE_MAX);
                remaining.reverse();
                after.promotion = Some(PromotionRun {
                    promotion: promotion.clone(),
                    text: text.clone(),
                    product: card,
                    scope: *scope,
                    report: PromotionReport {
                        audience: remaining.len() as u64,
                        delivered: 0,
                        over_quota: 0,
                        skipped: 0,
                    },
                    remaining,
                    reply: Some(reply),
                });
                self.commit(myself, logged, applied, after, now);
                return;
            }
            _ => {}
        }
        // Answer once durable.
        self.commit_then(myself, logged, applied, after, now, move |res| {
            answer(reply, res.map_err(|e| e.to_error_code()).and(result));
        });
    }

    /// Applies a non-request input and commits it.
    fn change(&mut self, myself: &ActorRef<ShopMsg>, input: Input) {
        let now = self.now();
        match self.shop.apply(&input, now) {
            Ok(applied) => {
                if let Some((payment, attempt)) = applied.needs_sync.clone() {
                    self.sync(payment, attempt);
                }
                if applied.changed {
                    self.commit(myself, Some(input), applied, AfterCommit::default(), now);
                }
            }
            Err(code) => {
                tracing::warn!(shop = %self.shop.id, error = %code, "shop input refused");
            }
        }
    }

    fn commit(
        &mut self,
        myself: &ActorRef<ShopMsg>,
        input: Option<Input>,
        applied: Applied,
        after: AfterCommit,
        now: u64,
    ) {
        self.commit_then(myself, input, applied, after, now, |_| {});
    }

    /// Persists `input` (if any) with the events and staff rows `applied` carries, in one batch;
    /// once durable, runs `done` and hands `after` back to the actor.
    fn commit_then(
        &mut self,
        myself: &ActorRef<ShopMsg>,
        input: Option<Input>,
        applied: Applied,
        after: AfterCommit,
        now: u64,
        done: impl FnOnce(Result<(), StorageError>) + Send + 'static,
    ) {
        self.commit_with(myself, input, applied, after, now, Vec::new(), done);
    }

    /// [`Self::commit_then`] with `extra` writes in the same batch.
    #[allow(clippy::too_many_arguments)]
    fn commit_with(
        &mut self,
        myself: &ActorRef<ShopMsg>,
        input: Option<Input>,
        applied: Applied,
        mut after: AfterCommit,
        now: u64,
        extra: Vec<Write>,
        done: impl FnOnce(Result<(), StorageError>) + Send + 'static,
    ) {
        let mut writes = extra;
        // Keep the shop's wake-up row equal to its next timer, so a passivated shop is woken.
        let wake = self.shop.core.next_deadline_ms();
        if wake != self.wake_written {
            let key = self.shop.id.as_str().as_bytes().to_vec();
            writes.push(match wake {
                Some(at) => Write::Put {
                    table: KvTable::ShopWake,
                    key,
                    value: at.to_be_bytes().to_vec(),
                },
                None => Write::Delete {
                    table: KvTable::ShopWake,
                    key,
                },
            });
            self.wake_written = wake;
        }
        if let Some(input) = input {
            let entry = Entry { at_ms: now, input };
            match piazza_protocol::codec::encode(&entry) {
                Ok(bytes) => {
                    self.log_seq += 1;
                    writes.push(Write::Put {
                        table: KvTable::ShopLog,
                        key: log_key(&self.shop.id, self.log_seq),
                        value: bytes,
                    });
                }
                Err(e) => {
                    tracing::error!(shop = %self.shop.id, error = %e, "cannot encode log entry");
                    done(Err(StorageError::Engine(e.to_string())));
                    let _ = myself.send_message(ShopMsg::CommitFailed);
                    return;
                }
            }
        }
        if !applied.effects.replayed {
            for event in &applied.effects.events {
                self.event_seq += 1;
                metrics::counter!("piazza_commerce_events_total", "type" => event.name())
                    .increment(1);
                writes.push(crate::sinks::outbox::outbox_write(
                    &self.shop.id,
                    self.event_seq,
                    now,
                    event,
                ));
            }
        }
        if applied.staff_changed {
            let stored = load_roster(self.ctx.storage.as_ref(), &self.shop.id).unwrap_or_default();
            for user in stored.keys() {
                if !self.shop.staff.contains_key(user) {
                    writes.push(Write::Delete {
                        table: KvTable::ShopStaff,
                        key: roster_key(&self.shop.id, user),
                    });
                }
            }
            for (user, role) in &self.shop.staff {
                writes.push(Write::Put {
                    table: KvTable::ShopStaff,
                    key: roster_key(&self.shop.id, user),
                    value: vec![role_byte(*role)],
                });
            }
        }
        after.log_seq = self.log_seq;
        after.applied = applied;
        let me = myself.clone();
        let result = self.ctx.storage.submit(
            writes,
            Box::new(move |res| {
                let ok = res.is_ok();
                done(res);
                let _ = me.send_message(if ok {
                    ShopMsg::Committed(Box::new(after))
                } else {
                    ShopMsg::CommitFailed
                });
            }),
        );
        if let Err(e) = result {
            // `done` already ran with the error; the in-memory change is ahead of storage.
            tracing::warn!(shop = %self.shop.id, error = %e, "shop change not queued");
        }
    }

    fn after_commit(&mut self, myself: &ActorRef<ShopMsg>, after: AfterCommit) {
        let AfterCommit {
            applied,
            log_seq,
            promotion,
            post,
            deliver,
            next,
            finished,
        } = after;
        if deliver.is_some() || next.is_some() || finished.is_some() {
            self.delivered(myself, deliver, next, finished);
        }
        if applied.staff_changed {
            self.ctx.shops.publish(&self.shop.id, &self.shop.staff);
        }
        if !applied.effects.events.is_empty()
            && let Some(sinks) = self.ctx.shops.sinks.get()
        {
            sinks.notify();
        }
        for request in applied.effects.requests.clone() {
            self.send_to_provider(request);
        }
        if let Some(order) = &applied.placed {
            self.post_order(order);
        }
        for (i, order) in applied.orders.iter().enumerate() {
            self.update_order_message(order, log_seq, i);
        }
        if let Some((user, draft, reply)) = post {
            let customer = user.clone();
            self.post_as(customer, user, draft, reply);
        }
        // Looking for archivable orders is a pass over the shop's orders: only under memory
        // pressure, or once a minute.
        if (applied.placed.is_some() || !applied.orders.is_empty())
            && (self.shop.core.order_count() > ORDERS_HIGH_WATER
                || self.archive_checked.elapsed()
                    >= ARCHIVE_CHECK_PERIOD.min(Duration::from_secs(
                        self.ctx.config.commerce.archive_after_secs,
                    )))
        {
            self.archive_checked = std::time::Instant::now();
            self.archive(myself);
        }
        if let Some(run) = promotion {
            self.promotions.push_back(run);
            if !self.promoting
                && let Some(run) = self.promotions.pop_front()
            {
                self.promoting = true;
                let _ = myself.send_message(ShopMsg::PromoteNext(Box::new(run)));
            }
        }
    }

    /// Moves old (or, under memory pressure, the oldest) final orders out of memory: their
    /// views are stored for reads, and the archive is logged so a replay drops them too.
    fn archive(&mut self, myself: &ActorRef<ShopMsg>) {
        let now = self.now();
        // Final orders stay in memory for `commerce.archive_after_secs` after their last change
        // (refunds of completed orders remain possible meanwhile).
        let after_ms = self
            .ctx
            .config
            .commerce
            .archive_after_secs
            .saturating_mul(1000);
        let orders = self.shop.archivable(
            now.saturating_sub(after_ms),
            ORDERS_HIGH_WATER,
            ARCHIVE_BATCH,
        );
        if orders.is_empty() {
            return;
        }
        let mut views = Vec::new();
        for order in &orders {
            if let Some(view) = self.shop.core.order(order).map(|o| self.shop.view_of(o))
                && let Ok(bytes) = piazza_protocol::codec::encode(&view)
            {
                views.push(Write::Put {
                    table: KvTable::ShopLog,
                    key: archive_key(&self.shop.id, order),
                    value: bytes,
                });
            }
        }
        let input = Input::Archive { orders };
        match self.shop.apply(&input, now) {
            Ok(applied) => {
                metrics::counter!("piazza_shop_orders_archived_total")
                    .increment(views.len() as u64);
                let after = AfterCommit::default();
                self.commit_with(myself, Some(input), applied, after, now, views, |_| {});
            }
            Err(code) => tracing::warn!(shop = %self.shop.id, error = %code, "archive refused"),
        }
    }

    /// An order from memory or, once archived, from its stored view.
    fn order_view(&self, user: &UserId, order: &OrderId) -> Result<OrderView, ErrorCode> {
        match self.shop.order_view(user, order) {
            Err(ErrorCode::NotFound) if self.shop.core.order(order).is_none() => {
                let bytes = self
                    .ctx
                    .storage
                    .kv_get(KvTable::ShopLog, &archive_key(&self.shop.id, order))
                    .map_err(|e| e.to_error_code())?
                    .ok_or(ErrorCode::NotFound)?;
                let view: OrderView = piazza_protocol::codec::decode(&bytes, ENTRY_BYTES_MAX)
                    .map_err(|_| ErrorCode::unavailable("archived order unreadable"))?;
                if view.customer != *user && !self.shop.is_staff(user) {
                    return Err(ErrorCode::NotFound);
                }
                Ok(view)
            }
            other => other,
        }
    }

    // ------------------------------------------------------------------------ conversations

    fn conversation(&self, customer: &UserId) -> ConversationId {
        ConversationId::Shop {
            shop: self.shop.id.clone(),
            customer: customer.clone(),
        }
    }

    /// Sends `draft` as `sender` into `customer`'s conversation with the shop and answers
    /// `reply` with where it landed.
    fn post_as(
        &self,
        customer: UserId,
        sender: UserId,
        draft: Draft,
        reply: RpcReplyPort<Response>,
    ) {
        let ctx = self.ctx.clone();
        let conversation = self.conversation(&customer);
        let client_msg_id =
            message_id(&format!("{}.{:x}", self.log_seq, crate::node::random_u64()));
        tokio::spawn(async move {
            let Some(client_msg_id) = client_msg_id else {
                let _ = reply.send(Response::Error(ErrorCode::unavailable("no message id")));
                return;
            };
            let answer = send(&ctx, &conversation, sender, client_msg_id, draft).await;
            let _ = reply.send(match answer {
                Ok(seq) => Response::Shop(Box::new(ShopReply::Posted { conversation, seq })),
                Err(code) => Response::Error(code),
            });
        });
    }

    /// Posts the order message of `order` (its id is the message's client id, so a repost
    /// after a restart lands on the same message).
    fn post_order(&mut self, order: &OrderId) {
        let Some(view) = self.shop.core.order(order).map(|o| self.shop.view_of(o)) else {
            return;
        };
        let Ok(client_msg_id) = order.as_str().parse::<ClientMsgId>() else {
            return;
        };
        if self.shown.len() >= state::ORDER_MESSAGES_MAX {
            self.shown.clear();
        }
        self.shown.insert(order.clone(), shown_key(&view));
        let ctx = self.ctx.clone();
        let conversation = self.conversation(&view.customer);
        let order = order.clone();
        let shop = self.shop.id.clone();
        tokio::spawn(async move {
            let draft = commerce_draft(CommerceBody::Order(view));
            match send(&ctx, &conversation, UserId::shop(), client_msg_id, draft).await {
                Ok(seq) => {
                    // Through the router: the shop may have passivated meanwhile.
                    ctx.send_to_shop(&shop, ShopMsg::OrderPosted { order, seq })
                        .await;
                }
                Err(code) => {
                    tracing::warn!(%conversation, error = %code, "order message not posted");
                }
            }
        });
    }

    /// Shows `order`'s new state in its order message.
    fn update_order_message(&mut self, order: &OrderId, log_seq: u64, index: usize) {
        let Some(target) = self.shop.order_messages.get(order).copied() else {
            return;
        };
        let Some(view) = self.shop.core.order(order).map(|o| self.shop.view_of(o)) else {
            return;
        };
        // Only what the customer sees changes the message: a payment moving from authorizing to
        // authorized, or a refund asked for but not done, does not.
        let key = shown_key(&view);
        if self.shown.get(order) == Some(&key) {
            return;
        }
        if self.shown.len() >= state::ORDER_MESSAGES_MAX {
            self.shown.clear();
        }
        self.shown.insert(order.clone(), key);
        let Some(client_msg_id) = message_id(&format!("{log_seq}.{index}")) else {
            return;
        };
        let ctx = self.ctx.clone();
        let conversation = self.conversation(&view.customer);
        tokio::spawn(async move {
            let result = ctx
                .ask_conversation(&conversation, |reply| ConversationMsg::Update {
                    user: UserId::shop(),
                    client_msg_id,
                    target,
                    change: UpdateRequest::Order {
                        order: Box::new(view),
                    },
                    reply,
                })
                .await;
            if let Ok(Response::Error(code)) | Err(code) = result {
                tracing::warn!(%conversation, error = %code, "order message not updated");
            }
        });
    }

    fn notice(&mut self, notice: ShopNotice) {
        if !self.shop.created {
            return;
        }
        if notice.from_staff {
            if let Some(waited) = self.responses.staff_message(&notice.customer, notice.at_ms) {
                metrics::histogram!("piazza_shop_first_response_seconds")
                    .record(waited as f64 / 1000.0);
            }
            return;
        }
        self.responses
            .customer_message(&notice.customer, notice.at_ms);
        let now = self.now();
        let mut texts = Vec::new();
        if notice.seq == Seq::new(1)
            && let Some(greeting) = &self.shop.greeting
        {
            texts.push(greeting.clone());
        }
        if !self.open_now(now)
            && let Some(away) = &self.shop.away
        {
            let recent = self
                .away_sent
                .get(&notice.customer)
                .is_some_and(|at| now.saturating_sub(*at) < AWAY_REPEAT_MS);
            if !recent {
                if self.away_sent.len() >= AWAY_SENT_MAX {
                    self.away_sent.clear();
                }
                self.away_sent.insert(notice.customer.clone(), now);
                texts.push(away.clone());
            }
        }
        for (i, text) in texts.into_iter().enumerate() {
            let Some(client_msg_id) = message_id(&format!("auto.{}.{i}", notice.seq)) else {
                continue;
            };
            let ctx = self.ctx.clone();
            let conversation = self.conversation(&notice.customer);
            tokio::spawn(async move {
                let draft = Draft::text(text);
                if let Err(code) =
                    send(&ctx, &conversation, UserId::shop(), client_msg_id, draft).await
                {
                    tracing::warn!(%conversation, error = %code, "automatic message not sent");
                }
            });
        }
    }

    // ----------------------------------------------------------------------------- promotions

    fn promote_next(&mut self, myself: &ActorRef<ShopMsg>, mut run: PromotionRun) {
        let now = self.now();
        let delivered = self.shop.promotion_chunk(
            &run.promotion,
            &mut run.remaining,
            PROMOTION_CHUNK,
            &mut run.report,
            now,
        );
        let input = Input::Delivered {
            promotion: run.promotion.clone(),
            customers: delivered.clone(),
        };
        let applied = match self.shop.apply(&input, now) {
            Ok(applied) => applied,
            Err(code) => {
                if let Some(reply) = run.reply.take() {
                    let _ = reply.send(Response::Error(code));
                }
                return;
            }
        };
        let body = CommerceBody::Promotion {
            shop: self.shop.id.clone(),
            promotion: run.promotion.clone(),
            scope: run.scope,
            text: run.text.clone(),
            product: run.product.clone(),
        };
        let finished = run.remaining.is_empty();
        let mut after = AfterCommit {
            deliver: Some((body, delivered.clone(), run.promotion.clone())),
            ..AfterCommit::default()
        };
        if finished {
            if let Some(reply) = run.reply.take() {
                after.finished = Some((reply, run.report.clone()));
            }
        } else {
            after.next = Some(run);
        }
        let logged = (!delivered.is_empty()).then_some(input);
        self.commit(myself, logged, applied, after, now);
    }

    /// Hands a committed promotion chunk to the customers' conversations, then goes on.
    fn delivered(
        &mut self,
        myself: &ActorRef<ShopMsg>,
        deliver: Option<(CommerceBody, Vec<UserId>, PromotionId)>,
        next: Option<PromotionRun>,
        finished: Option<(RpcReplyPort<Response>, PromotionReport)>,
    ) {
        if let Some((body, customers, promotion)) = deliver
            && let Some(client_msg_id) = message_id(&format!("promo.{promotion}"))
        {
            for customer in customers {
                let ctx = self.ctx.clone();
                let body = body.clone();
                let client_msg_id = client_msg_id.clone();
                let conversation = self.conversation(&customer);
                tokio::spawn(async move {
                    let draft = commerce_draft(body);
                    if let Err(code) =
                        send(&ctx, &conversation, UserId::shop(), client_msg_id, draft).await
                    {
                        tracing::warn!(%conversation, error = %code, "promotion not delivered");
                    }
                });
            }
        }
        if let Some((reply, report)) = finished {
            let _ = reply.send(Response::Shop(Box::new(ShopReply::Promoted(report))));
        }
        match next {
            Some(run) => {
                let _ = myself.send_message(ShopMsg::PromoteNext(Box::new(run)));
            }
            None if self.promoting => {
                self.promoting = false;
                if let Some(run) = self.promotions.pop_front() {
                    self.promoting = true;
                    let _ = myself.send_message(ShopMsg::PromoteNext(Box::new(run)));
                }
            }
            None => {}
        }
    }

    // ------------------------------------------------------------------------------ payments

    fn send_to_provider(&self, request: crate::commerce::payment::ProviderRequest) {
        let Some(provider) = self.ctx.shops.provider.get().cloned() else {
            tracing::warn!(shop = %self.shop.id, "no payment provider configured");
            return;
        };
        let ctx = self.ctx.clone();
        let shop = self.shop.id.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            for attempt in 1..=PROVIDER_ATTEMPTS_MAX {
                match provider.send(&shop, &request).await {
                    Ok(notifications) => {
                        for n in notifications {
                            ctx.send_to_shop(&shop, ShopMsg::Notification(n)).await;
                        }
                        return;
                    }
                    Err(ProviderError::Transient(reason)) if attempt < PROVIDER_ATTEMPTS_MAX => {
                        tracing::debug!(%shop, %reason, attempt, "provider unavailable, retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(30));
                    }
                    Err(e) => {
                        // In doubt, refused or still failing: ask the provider what it knows.
                        tracing::warn!(%shop, error = %e, "provider request failed; syncing");
                        sync_task(&provider, &ctx, &shop, &request.payment, request.attempt).await;
                        return;
                    }
                }
            }
        });
    }

    fn sync(&self, payment: PaymentId, attempt: u32) {
        let Some(provider) = self.ctx.shops.provider.get().cloned() else {
            return;
        };
        let ctx = self.ctx.clone();
        let shop = self.shop.id.clone();
        tokio::spawn(async move {
            sync_task(&provider, &ctx, &shop, &payment, attempt).await;
        });
    }

    fn arm_timer(&mut self, myself: &ActorRef<ShopMsg>) {
        let next = self.shop.core.next_deadline_ms();
        if next == self.timer_at {
            return;
        }
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
        self.timer_at = next;
        if let Some(at) = next {
            let me = myself.clone();
            let wait = at.saturating_sub(self.now());
            self.timer = Some(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(wait)).await;
                let _ = me.send_message(ShopMsg::Tick);
            }));
        }
    }

    // --------------------------------------------------------------------------------- reads

    fn stats(&self, user: &UserId) -> Result<ShopReply, ErrorCode> {
        if !self.shop.is_staff(user) {
            return Err(ErrorCode::Forbidden);
        }
        let mut orders: BTreeMap<piazza_protocol::commerce::OrderStatus, u64> = BTreeMap::new();
        for order in self.shop.core.orders() {
            *orders.entry(order.status()).or_default() += 1;
        }
        let mut assignments: BTreeMap<UserId, u64> = BTreeMap::new();
        for agent in self.shop.assignments.values() {
            *assignments.entry(agent.clone()).or_default() += 1;
        }
        Ok(ShopReply::Stats(ShopStats {
            conversations: self.responses.conversations(),
            awaiting_response: self.responses.awaiting(),
            first_responses: self.responses.measured(),
            first_response_p50_ms: self.responses.percentile_ms(50),
            first_response_p90_ms: self.responses.percentile_ms(90),
            orders: orders.into_iter().collect(),
            assignments: assignments.into_iter().collect(),
        }))
    }

    fn products(
        &self,
        user: &UserId,
        catalog: Option<&piazza_protocol::commerce::CatalogId>,
        category: Option<&piazza_protocol::commerce::CategoryId>,
        after: Option<&ProductId>,
        limit: usize,
        now: u64,
    ) -> ShopReply {
        let staff = self.shop.is_staff(user);
        let mut matching = self
            .shop
            .core
            .catalog()
            .products()
            .filter(|p| staff || p.spec().active)
            .filter(|p| catalog.is_none_or(|c| &p.spec().catalog == c))
            .filter(|p| category.is_none_or(|c| p.spec().categories.contains(c)))
            .filter(|p| after.is_none_or(|a| &p.spec().id > a));
        let products: Vec<_> = matching
            .by_ref()
            .take(limit)
            .map(|p| self.shop.product_view(p, now))
            .collect();
        let more = matching.next().is_some();
        ShopReply::Products { products, more }
    }

    fn orders(&self, user: &UserId, after: Option<&OrderId>, limit: usize) -> ShopReply {
        let staff = self.shop.is_staff(user);
        let mut matching = self
            .shop
            .core
            .orders()
            .filter(|o| staff || o.customer() == user)
            .filter(|o| after.is_none_or(|a| o.id() > a));
        let orders: Vec<_> = matching
            .by_ref()
            .take(limit)
            .map(|o| self.shop.view_of(o))
            .collect();
        let more = matching.next().is_some();
        ShopReply::Orders { orders, more }
    }

    /// Staff may send product messages, and only to customers.
    fn check_staff_to_customer(&self, user: &UserId, customer: &UserId) -> Result<(), ErrorCode> {
        if !self.shop.is_staff(user) {
            return Err(ErrorCode::Forbidden);
        }
        if customer.is_reserved() || self.shop.is_staff(customer) {
            return Err(ErrorCode::invalid("customer", "not a customer"));
        }
        Ok(())
    }

    /// The card of a product of this shop, priced now.
    fn card(&self, product: &ProductId, now: u64) -> Result<ProductCard, ErrorCode> {
        let product = self
            .shop
            .core
            .catalog()
            .product(product)
            .ok_or(ErrorCode::NotFound)?;
        Ok(card_of(&self.shop, product, now))
    }

    fn product_message(
        &self,
        user: &UserId,
        customer: &UserId,
        product: &ProductId,
        now: u64,
    ) -> Result<Draft, ErrorCode> {
        self.check_staff_to_customer(user, customer)?;
        Ok(commerce_draft(CommerceBody::Product {
            shop: self.shop.id.clone(),
            product: self.card(product, now)?,
        }))
    }

    fn product_list(
        &self,
        user: &UserId,
        customer: &UserId,
        header: &str,
        sections: &[(String, Vec<ProductId>)],
        now: u64,
    ) -> Result<Draft, ErrorCode> {
        self.check_staff_to_customer(user, customer)?;
        let sections = sections
            .iter()
            .map(|(title, products)| {
                let cards = products
                    .iter()
                    .map(|p| self.card(p, now))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((title.clone(), cards))
            })
            .collect::<Result<Vec<_>, ErrorCode>>()?;
        Ok(commerce_draft(CommerceBody::ProductList {
            shop: self.shop.id.clone(),
            header: header.to_owned(),
            sections,
        }))
    }

    fn ask_message(&self, product: &ProductId, text: &str, now: u64) -> Result<Draft, ErrorCode> {
        Ok(commerce_draft(CommerceBody::AskAbout {
            shop: self.shop.id.clone(),
            product: self.card(product, now)?,
            text: text.to_owned(),
        }))
    }
}

async fn sync_task(
    provider: &Arc<dyn PaymentProvider>,
    ctx: &Arc<NodeContext>,
    shop: &ShopId,
    payment: &PaymentId,
    attempt: u32,
) {
    let mut delay = Duration::from_millis(200);
    for _ in 0..PROVIDER_ATTEMPTS_MAX {
        match provider.fetch(shop, payment, attempt).await {
            Ok(snapshot) => {
                ctx.send_to_shop(shop, ShopMsg::Synced(snapshot)).await;
                return;
            }
            Err(ProviderError::Transient(_) | ProviderError::InDoubt(_)) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            Err(e) => {
                tracing::warn!(%shop, %payment, error = %e, "payment sync failed");
                return;
            }
        }
    }
}

/// What an order message shows a customer: status, tracking, money captured and refunded.
type ShownKey = (
    piazza_protocol::commerce::OrderStatus,
    Option<String>,
    i64,
    i64,
);

fn shown_key(view: &OrderView) -> ShownKey {
    let captured = view.payments.iter().map(|p| p.captured.minor()).sum();
    let refunded = view.payments.iter().map(|p| p.refunded.minor()).sum();
    (view.status, view.tracking.clone(), captured, refunded)
}

/// A product as a message shows it.
fn card_of(shop: &ShopState, product: &crate::commerce::catalog::Product, now: u64) -> ProductCard {
    let view = shop.product_view(product, now);
    let spec = product.spec();
    ProductCard {
        product: spec.id.clone(),
        title: spec.title.clone(),
        price: view
            .prices
            .iter()
            .copied()
            .min_by_key(|m| m.minor())
            .unwrap_or(spec.price),
        media: spec.media.first().cloned(),
    }
}

fn commerce_draft(body: CommerceBody) -> Draft {
    Draft {
        body: MessageBody::Commerce(Box::new(body)),
        reply_to: None,
        forwarded_from: None,
    }
}

/// A client message id for one of the shop's own messages: `#` never appears in order ids, so
/// these never collide with order messages (whose id is the order's).
fn message_id(tag: &str) -> Option<ClientMsgId> {
    let id = format!("#{tag}");
    let cut = (0..=id.len().min(64))
        .rev()
        .find(|i| id.is_char_boundary(*i))
        .unwrap_or(0);
    id[..cut].parse().ok()
}

/// Sends into a conversation and returns the stored seq.
async fn send(
    ctx: &Arc<NodeContext>,
    conversation: &ConversationId,
    sender: UserId,
    client_msg_id: ClientMsgId,
    draft: Draft,
) -> Result<Seq, ErrorCode> {
    let response = ctx
        .ask_conversation(conversation, |reply| ConversationMsg::Send {
            sender,
            client_msg_id,
            draft,
            received: std::time::Instant::now(),
            reply,
        })
        .await?;
    match response {
        Response::Ack(ack) => Ok(ack.seq),
        Response::Error(code) => Err(code),
        _ => Err(ErrorCode::unavailable("unexpected answer")),
    }
}

// --------------------------------------------------------------------------------- routing

impl NodeContext {
    fn shop_actor_name(&self, id: &ShopId) -> String {
        format!("{}/shop/{id}", self.instance)
    }

    /// Delivers `message` to the actor of shop `id`, activating it if needed; a request inside
    /// is answered with the error if it cannot be delivered.
    pub(crate) async fn send_to_shop(self: &Arc<Self>, id: &ShopId, message: ShopMsg) {
        let activate = || {
            let args = ShopArgs {
                id: id.clone(),
                ctx: self.clone(),
            };
            self.activate_named(self.shop_actor_name(id), ShopActor, args)
        };
        if let Err((message, code)) = self.deliver(message, activate).await {
            tracing::debug!(shop = %id, error = %code, "shop not reached");
            message.fail(code);
        }
    }

    /// Asks shop `id` a request and waits for the answer (bounded by the actor call timeout).
    pub(crate) async fn ask_shop(
        self: &Arc<Self>,
        id: &ShopId,
        user: UserId,
        op: ShopOp,
    ) -> Response {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send_to_shop(
            id,
            ShopMsg::Request {
                user,
                op,
                reply: tx.into(),
            },
        )
        .await;
        let timeout = Duration::from_millis(self.config.limits.actor_call_timeout_ms);
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Response::Error(ErrorCode::unavailable("shop did not answer")),
            Err(_) => Response::Error(ErrorCode::unavailable("shop timed out")),
        }
    }

    /// Tells a shop about a message in one of its conversations.
    pub(crate) async fn notify_shop(self: &Arc<Self>, notice: ShopNotice) {
        let shop = notice.shop.clone();
        self.send_to_shop(&shop, ShopMsg::Notice(notice)).await;
    }
}

/// Hands verified provider notifications (sandbox settlements, webhooks) to their shops until
/// shutdown.
pub(crate) async fn route_notifications(
    ctx: Arc<NodeContext>,
    mut inbound: tokio::sync::mpsc::Receiver<crate::payments::Inbound>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            next = inbound.recv() => match next {
                Some(crate::payments::Inbound { shop, notification }) => {
                    ctx.send_to_shop(&shop, ShopMsg::Notification(notification)).await;
                }
                None => return,
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// How often the node looks for passivated shops whose timers are due, and how far ahead.
const WAKE_PERIOD: Duration = Duration::from_secs(5);

/// Wakes passivated shops whose next timer (unpaid order expiry, an instalment, a retry) is due
/// within [`WAKE_PERIOD`]: activation arms the shop's own timer, which then fires on time.
/// Also what activates such shops after a node restart.
pub(crate) async fn run_waker(
    ctx: Arc<NodeContext>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let horizon = crate::node::now_ms().saturating_add(WAKE_PERIOD.as_millis() as u64);
        let mut after: Option<Vec<u8>> = None;
        loop {
            let (rows, more) =
                match ctx
                    .storage
                    .kv_scan(KvTable::ShopWake, &[], after.as_deref(), REPLAY_PAGE)
                {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::warn!(error = %e, "shop wake-ups unreadable");
                        break;
                    }
                };
            for (key, value) in &rows {
                let due = <[u8; 8]>::try_from(value.as_slice()).map(u64::from_be_bytes);
                let shop = std::str::from_utf8(key)
                    .ok()
                    .and_then(|s| s.parse::<ShopId>().ok());
                if let (Ok(due), Some(shop)) = (due, shop)
                    && due <= horizon
                    && ActorRef::<ShopMsg>::where_is(ctx.shop_actor_name(&shop)).is_none()
                {
                    ctx.send_to_shop(&shop, ShopMsg::Wake).await;
                }
            }
            after = rows.last().map(|(key, _)| key.clone());
            if !more {
                break;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(WAKE_PERIOD) => {}
            _ = shutdown.changed() => return,
        }
    }
}
