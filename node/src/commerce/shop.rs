//! [`Shop`]: the commerce state of one shop — catalog, carts, orders with their payments,
//! coupons, promotions and customer profiles — and the only way to change orders, so that an
//! order's transition and what it implies for stock, coupons and money happen in one call or not
//! at all:
//!
//! * placing an order prices its lines, reserves its stock and redeems its coupon;
//! * rejection, cancellation and expiry release stock (or restore sold stock of a paid order not
//!   yet shipped), give the coupon back, stop the payment plan and refund captured money;
//! * an authorization is captured at once, or voided if the order was closed meanwhile; money
//!   captured for a closed order is refunded at once;
//! * the first capture makes the order paid and commits its stock;
//! * fulfilment makes the coupon redemption final;
//! * refunds of everything paid, with nothing more to charge, make the order refunded.
//!
//! A refused call changes nothing: every check runs before the first change.

use std::collections::{BTreeMap, BTreeSet};

use piazza_protocol::{Money, UserId};

use super::actor::Actor;
use super::cart::{CART_LINES_MAX, Cart, LINE_QUANTITY_MAX};
use super::catalog::{Catalog, Change, Item, StockKey, check_text};
use super::coupon::Coupons;
use super::error::Error;
use super::event::{CommerceEvent, Effects};
use super::ids::{CommandId, CouponCode, OrderId, PaymentId, ShopId};
use super::order::{
    Fingerprint, Order, OrderCommand, OrderStatus, REASON_BYTES_MAX, TRACKING_BYTES_MAX, authorize,
};
use super::payment::{
    Handled, Notification, OrderPayments, Payment, PaymentStatus, ProviderRequest, Snapshot,
};
use super::promo::{CustomerProfile, Promotions};

/// How long an unpaid order holds its stock by default: a day, because in chat commerce the
/// shop may accept hours after the customer sends the cart, and the customer pays after that.
pub(crate) const UNPAID_ORDER_TTL_MS_DEFAULT: u64 = 24 * 60 * 60 * 1000;
/// How long after a declined instalment the next automatic attempt is made by default.
pub(crate) const INSTALMENT_RETRY_MS_DEFAULT: u64 = 24 * 60 * 60 * 1000;
/// Most orders held in memory; final ones are [`Shop::archive`]d by the actor once stored.
pub(crate) const ORDERS_MAX: usize = 100_000;
/// Most unpaid orders per customer: without it one customer could reserve a shop's whole stock
/// with many small orders.
pub(crate) const UNPAID_ORDERS_PER_CUSTOMER_MAX: usize = 10;
/// Most carts per shop.
pub(crate) const CARTS_MAX: usize = 100_000;
/// A cart untouched this long is dropped by [`Shop::tick`] (30 days).
pub(crate) const CART_IDLE_MS_MAX: u64 = 30 * 24 * 60 * 60 * 1000;

/// Per-shop settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Settings {
    /// How long an unpaid order may hold stock, from placement.
    pub(crate) unpaid_ttl_ms: u64,
    /// Delay before retrying a declined instalment automatically.
    pub(crate) instalment_retry_ms: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            unpaid_ttl_ms: UNPAID_ORDER_TTL_MS_DEFAULT,
            instalment_retry_ms: INSTALMENT_RETRY_MS_DEFAULT,
        }
    }
}

/// How a provider notification was taken by the shop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Notified {
    /// Seen before: nothing changed.
    Duplicate,
    /// Older than what was applied: nothing changed.
    Stale,
    /// Restates the current state: nothing changed.
    Unchanged,
    /// Contradicts the local state: nothing changed. Fetch a [`Snapshot`] of this payment
    /// attempt from the provider and pass it to [`Shop::apply_snapshot`].
    NeedsSync { payment: PaymentId, attempt: u32 },
    /// Applied: the events and the provider requests it led to.
    Applied(Effects),
}

/// The commerce state of one shop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Shop {
    id: ShopId,
    settings: Settings,
    catalog: Catalog,
    coupons: Coupons,
    promotions: Promotions,
    carts: BTreeMap<UserId, Cart>,
    profiles: BTreeMap<UserId, CustomerProfile>,
    orders: BTreeMap<OrderId, Order>,
    /// Which order each payment belongs to, for notifications.
    payment_orders: BTreeMap<PaymentId, OrderId>,
    /// Each order's next timer ([`order_deadline`]), and the orders by it: the actor asks for
    /// the next one after every change, which must not cost a pass over every order.
    deadlines: BTreeSet<(u64, OrderId)>,
    deadline_of: BTreeMap<OrderId, u64>,
    /// Each customer's unpaid orders (the unpaid-orders limit reads one set, not every order).
    unpaid_by_customer: BTreeMap<UserId, BTreeSet<OrderId>>,
}

/// Everything an order's transition may touch besides the order.
struct Books<'a> {
    settings: Settings,
    catalog: &'a mut Catalog,
    coupons: &'a mut Coupons,
    profiles: &'a mut BTreeMap<UserId, CustomerProfile>,
}

impl Shop {
    /// An empty shop.
    pub(crate) fn new(id: ShopId, settings: Settings) -> Shop {
        Shop {
            id,
            settings,
            catalog: Catalog::new(),
            coupons: Coupons::new(),
            promotions: Promotions::new(),
            carts: BTreeMap::new(),
            profiles: BTreeMap::new(),
            orders: BTreeMap::new(),
            payment_orders: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            deadline_of: BTreeMap::new(),
            unpaid_by_customer: BTreeMap::new(),
        }
    }

    /// Brings the indexes up to date with `order` (changed, placed or archived): its next timer
    /// (if any) in the deadline index, and whether it counts as its customer's unpaid order.
    fn refresh_deadline(&mut self, order: &OrderId) {
        if let Some(old) = self.deadline_of.remove(order) {
            self.deadlines.remove(&(old, order.clone()));
        }
        let Some(current) = self.orders.get(order) else {
            // Archived: it was final, so not unpaid either.
            return;
        };
        if let Some(at) = order_deadline(current) {
            self.deadline_of.insert(order.clone(), at);
            self.deadlines.insert((at, order.clone()));
        }
        let customer = current.customer.clone();
        if current.status.is_unpaid() {
            self.unpaid_by_customer
                .entry(customer)
                .or_default()
                .insert(order.clone());
        } else if let Some(unpaid) = self.unpaid_by_customer.get_mut(&customer) {
            unpaid.remove(order);
            if unpaid.is_empty() {
                self.unpaid_by_customer.remove(&customer);
            }
        }
    }

    pub(crate) fn id(&self) -> &ShopId {
        &self.id
    }

    pub(crate) fn settings(&self) -> Settings {
        self.settings
    }

    pub(crate) fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// For staff edits (check [`Actor::require`] first). Reservations are only made by orders.
    pub(crate) fn catalog_mut(&mut self) -> &mut Catalog {
        &mut self.catalog
    }

    pub(crate) fn coupons(&self) -> &Coupons {
        &self.coupons
    }

    /// For staff edits (check [`Actor::require`] first). Redemptions are only made by orders.
    pub(crate) fn coupons_mut(&mut self) -> &mut Coupons {
        &mut self.coupons
    }

    pub(crate) fn promotions(&self) -> &Promotions {
        &self.promotions
    }

    pub(crate) fn promotions_mut(&mut self) -> &mut Promotions {
        &mut self.promotions
    }

    /// Every customer profile (for [`Promotions::audience`]).
    pub(crate) fn profiles(&self) -> &BTreeMap<UserId, CustomerProfile> {
        &self.profiles
    }

    /// A customer's profile, created empty if needed (labels, interests).
    pub(crate) fn profile_mut(&mut self, customer: &UserId) -> &mut CustomerProfile {
        self.profiles.entry(customer.clone()).or_default()
    }

    pub(crate) fn cart(&self, customer: &UserId) -> Option<&Cart> {
        self.carts.get(customer)
    }

    pub(crate) fn order(&self, id: &OrderId) -> Option<&Order> {
        self.orders.get(id)
    }

    pub(crate) fn orders(&self) -> impl Iterator<Item = &Order> {
        self.orders.values()
    }

    /// How many orders are held in memory.
    pub(crate) fn order_count(&self) -> usize {
        self.orders.len()
    }

    /// Adds to the customer's cart (creating it).
    pub(crate) fn cart_add(
        &mut self,
        customer: &UserId,
        key: &StockKey,
        quantity: i64,
        now_ms: u64,
    ) -> Result<&Cart, Error> {
        if !self.carts.contains_key(customer) && self.carts.len() >= CARTS_MAX {
            return Err(Error::TooMany {
                what: "carts",
                max: CARTS_MAX,
            });
        }
        let mut cart = self
            .carts
            .get(customer)
            .cloned()
            .unwrap_or_else(|| Cart::new(customer.clone(), now_ms));
        cart.add(&self.catalog, key, quantity, now_ms)?;
        self.carts.insert(customer.clone(), cart);
        self.carts.get(customer).ok_or(Error::NotInCart)
    }

    /// Sets the quantity of a line of the customer's cart.
    pub(crate) fn cart_set(
        &mut self,
        customer: &UserId,
        key: &StockKey,
        quantity: i64,
        now_ms: u64,
    ) -> Result<&Cart, Error> {
        let cart = self.carts.get_mut(customer).ok_or(Error::NotInCart)?;
        cart.set_quantity(&self.catalog, key, quantity, now_ms)?;
        Ok(cart)
    }

    /// Removes a line from the customer's cart.
    pub(crate) fn cart_remove(
        &mut self,
        customer: &UserId,
        key: &StockKey,
        now_ms: u64,
    ) -> Result<&Cart, Error> {
        let cart = self.carts.get_mut(customer).ok_or(Error::NotInCart)?;
        cart.remove(key, now_ms)?;
        Ok(cart)
    }

    /// Empties the customer's cart.
    pub(crate) fn cart_clear(&mut self, customer: &UserId, now_ms: u64) {
        if let Some(cart) = self.carts.get_mut(customer) {
            cart.clear(now_ms);
        }
    }

    /// Sends the customer's cart as order `order_id`: places it and empties the cart. A retry
    /// with the same command id returns the original effects (and leaves the cart alone).
    pub(crate) fn checkout(
        &mut self,
        actor: &Actor,
        command_id: CommandId,
        order_id: OrderId,
        coupon: Option<CouponCode>,
        now_ms: u64,
    ) -> Result<Effects, Error> {
        let fingerprint = Fingerprint::Checkout {
            actor: actor.clone(),
            coupon: coupon.clone(),
        };
        if let Some(order) = self.orders.get(&order_id) {
            return match order.replay(&command_id, &fingerprint)? {
                Some(effects) => Ok(effects),
                None => Err(Error::OrderIdTaken(order_id)),
            };
        }
        let Actor::Customer(customer) = actor else {
            return Err(Error::Forbidden {
                action: "check out another's cart",
            });
        };
        let items = self
            .carts
            .get(customer)
            .map(|c| c.items().to_vec())
            .unwrap_or_default();
        let effects = self.place_new(
            actor,
            command_id,
            order_id,
            items,
            coupon,
            fingerprint,
            now_ms,
        )?;
        self.cart_clear(customer, now_ms);
        Ok(effects)
    }

    /// Places an order of explicit items (all lines at once, as from a product-list message).
    pub(crate) fn place(
        &mut self,
        actor: &Actor,
        command_id: CommandId,
        order_id: OrderId,
        items: Vec<Item>,
        coupon: Option<CouponCode>,
        now_ms: u64,
    ) -> Result<Effects, Error> {
        let fingerprint = Fingerprint::Place {
            actor: actor.clone(),
            items: items.clone(),
            coupon: coupon.clone(),
        };
        if let Some(order) = self.orders.get(&order_id) {
            return match order.replay(&command_id, &fingerprint)? {
                Some(effects) => Ok(effects),
                None => Err(Error::OrderIdTaken(order_id)),
            };
        }
        self.place_new(
            actor,
            command_id,
            order_id,
            items,
            coupon,
            fingerprint,
            now_ms,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn place_new(
        &mut self,
        actor: &Actor,
        command_id: CommandId,
        order_id: OrderId,
        items: Vec<Item>,
        coupon: Option<CouponCode>,
        fingerprint: Fingerprint,
        now_ms: u64,
    ) -> Result<Effects, Error> {
        let Actor::Customer(customer) = actor else {
            return Err(Error::Forbidden {
                action: "place an order for a customer",
            });
        };
        check_items(&items)?;
        if self.orders.len() >= ORDERS_MAX {
            return Err(Error::TooMany {
                what: "orders",
                max: ORDERS_MAX,
            });
        }
        let unpaid = self
            .unpaid_by_customer
            .get(customer)
            .map_or(0, BTreeSet::len);
        if unpaid >= UNPAID_ORDERS_PER_CUSTOMER_MAX {
            return Err(Error::TooMany {
                what: "unpaid orders of a customer",
                max: UNPAID_ORDERS_PER_CUSTOMER_MAX,
            });
        }
        let quote = self.catalog.quote(&items, now_ms)?;
        let subtotal = quote.subtotal.ok_or(Error::EmptyCart)?;
        let discount = match &coupon {
            Some(code) => self.coupons.preview(code, customer, subtotal, now_ms)?,
            None => Money::new(0, subtotal.currency()),
        };
        let total = subtotal.checked_sub(discount)?;
        let expires_ms = now_ms.saturating_add(self.settings.unpaid_ttl_ms);

        // Every check passed; the two steps below re-check and are all-or-nothing each, so a
        // failure of the second (impossible after the preview, but cheap to handle) undoes the
        // first.
        self.catalog.reserve(&order_id, &items)?;
        let mut effects = Effects::none();
        effects.event(CommerceEvent::OrderPlaced {
            order: order_id.clone(),
            customer: customer.clone(),
            lines: u32::try_from(quote.items.len()).unwrap_or(u32::MAX),
            subtotal,
            discount,
            total,
        });
        effects.event(CommerceEvent::StockReserved {
            order: order_id.clone(),
        });
        if let Some(code) = &coupon {
            match self
                .coupons
                .redeem(code, customer, &order_id, subtotal, now_ms)
            {
                Ok((redemption, _)) => effects.event(CommerceEvent::CouponRedeemed {
                    order: order_id.clone(),
                    code: code.clone(),
                    discount: redemption.discount,
                }),
                Err(e) => {
                    let _ = self.catalog.release(&order_id);
                    self.catalog.forget(&order_id);
                    return Err(e);
                }
            }
        }
        let mut order = Order {
            id: order_id.clone(),
            customer: customer.clone(),
            lines: quote.items,
            subtotal,
            discount,
            total,
            coupon,
            status: OrderStatus::Placed,
            placed_ms: now_ms,
            expires_ms,
            updated_ms: now_ms,
            tracking: None,
            payments: None,
            log: BTreeMap::new(),
        };
        order.record(command_id, fingerprint, &effects);
        self.orders.insert(order_id.clone(), order);
        self.refresh_deadline(&order_id);
        Ok(effects)
    }

    /// Applies a command to an order (see [`super::order`] for who may do what, when).
    pub(crate) fn handle(
        &mut self,
        actor: &Actor,
        command_id: CommandId,
        order_id: &OrderId,
        command: OrderCommand,
        now_ms: u64,
    ) -> Result<Effects, Error> {
        self.on_order(order_id, |shop| {
            shop.handle_command(actor, command_id, order_id, command, now_ms)
        })
    }

    /// Runs `change` on order `id`, then brings the order indexes up to date with it.
    fn on_order<T>(
        &mut self,
        id: &OrderId,
        change: impl FnOnce(&mut Shop) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let result = change(self);
        self.refresh_deadline(id);
        result
    }

    fn handle_command(
        &mut self,
        actor: &Actor,
        command_id: CommandId,
        order_id: &OrderId,
        command: OrderCommand,
        now_ms: u64,
    ) -> Result<Effects, Error> {
        let (order, mut books) = self.split(order_id)?;
        let fingerprint = Fingerprint::Command {
            actor: actor.clone(),
            command: command.clone(),
        };
        if let Some(effects) = order.replay(&command_id, &fingerprint)? {
            return Ok(effects);
        }
        order.check_log_room()?;
        authorize(actor, order, &command)?;
        let effects = apply(order, &mut books, actor, &command, now_ms)?;
        let mut new_payments = Vec::new();
        if matches!(command, OrderCommand::RequestPayment { .. })
            && let Some(payments) = &order.payments
        {
            new_payments = payments.parts().iter().map(|p| p.id().clone()).collect();
        }
        order.updated_ms = order.updated_ms.max(now_ms);
        order.record(command_id, fingerprint, &effects);
        for payment in new_payments {
            self.payment_orders.insert(payment, order_id.clone());
        }
        Ok(effects)
    }

    /// The order a payment belongs to.
    fn order_of_payment(&self, payment: &PaymentId) -> Result<OrderId, Error> {
        self.payment_orders
            .get(payment)
            .cloned()
            .ok_or_else(|| Error::UnknownPayment(payment.clone()))
    }

    /// Applies a verified provider notification.
    pub(crate) fn handle_notification(
        &mut self,
        notification: &Notification,
        now_ms: u64,
    ) -> Result<Notified, Error> {
        let order_id = self.order_of_payment(&notification.payment)?;
        self.on_order(&order_id, |shop| {
            shop.notify_order(&order_id, notification, now_ms)
        })
    }

    fn notify_order(
        &mut self,
        order_id: &OrderId,
        notification: &Notification,
        now_ms: u64,
    ) -> Result<Notified, Error> {
        let (order, mut books) = self.split(order_id)?;
        let part = payment_of(order, &notification.payment)?;
        Ok(match part.handle(notification) {
            Handled::Duplicate => Notified::Duplicate,
            Handled::Stale => Notified::Stale,
            Handled::Unchanged => Notified::Unchanged,
            Handled::NeedsSync { payment, attempt } => Notified::NeedsSync { payment, attempt },
            Handled::Applied { events, requests } => {
                let effects = react(order, &mut books, events, requests, now_ms);
                order.updated_ms = order.updated_ms.max(now_ms);
                Notified::Applied(effects)
            }
        })
    }

    /// Applies the provider's view of a payment attempt (the answer to
    /// [`Notified::NeedsSync`], or a periodic reconciliation).
    pub(crate) fn apply_snapshot(
        &mut self,
        snapshot: &Snapshot,
        now_ms: u64,
    ) -> Result<Effects, Error> {
        let order_id = self.order_of_payment(&snapshot.payment)?;
        self.on_order(&order_id, |shop| {
            shop.snapshot_order(&order_id, snapshot, now_ms)
        })
    }

    fn snapshot_order(
        &mut self,
        order_id: &OrderId,
        snapshot: &Snapshot,
        now_ms: u64,
    ) -> Result<Effects, Error> {
        let (order, mut books) = self.split(order_id)?;
        let part = payment_of(order, &snapshot.payment)?;
        match part.apply_snapshot(snapshot)? {
            Handled::Applied { events, requests } => {
                let effects = react(order, &mut books, events, requests, now_ms);
                order.updated_ms = order.updated_ms.max(now_ms);
                Ok(effects)
            }
            _ => Ok(Effects::none()),
        }
    }

    /// Runs the timers due at `now_ms`: expires unpaid orders past their deadline (unless their
    /// capture is in flight: the provider settles it within seconds), starts due instalments and
    /// retries declined ones, drops idle carts and old promotion records.
    pub(crate) fn tick(&mut self, now_ms: u64) -> Effects {
        let mut effects = Effects::none();
        let Shop {
            settings,
            catalog,
            coupons,
            profiles,
            orders,
            carts,
            promotions,
            ..
        } = self;
        let mut books = Books {
            settings: *settings,
            catalog,
            coupons,
            profiles,
        };
        for order in orders.values_mut() {
            if order.status.is_unpaid() && now_ms >= order.expires_ms && !order.capture_in_flight()
            {
                effects.event(CommerceEvent::OrderExpired {
                    order: order.id.clone(),
                });
                effects.extend(close(order, &mut books, OrderStatus::Expired));
                order.updated_ms = order.updated_ms.max(now_ms);
                continue;
            }
            if !order.status.is_paid() {
                continue;
            }
            let Some(payments) = order.payments.as_mut() else {
                continue;
            };
            if payments.is_stopped() {
                continue;
            }
            let ids: Vec<PaymentId> = payments.parts().iter().map(|p| p.id().clone()).collect();
            for id in ids {
                let Some(part) = payments.part_mut(&id) else {
                    continue;
                };
                let due = match part.status() {
                    PaymentStatus::Scheduled => part.due_ms() <= now_ms,
                    PaymentStatus::Failed | PaymentStatus::Voided => {
                        part.can_retry() && part.retry_at_ms().is_some_and(|at| at <= now_ms)
                    }
                    _ => false,
                };
                if due && let Ok(request) = part.authorize() {
                    effects.request(request);
                    order.updated_ms = order.updated_ms.max(now_ms);
                }
            }
        }
        carts.retain(|_, cart| {
            !cart.is_empty() && now_ms.saturating_sub(cart.updated_ms()) < CART_IDLE_MS_MAX
        });
        promotions.prune(now_ms);
        // Ticks are rare (only at deadlines) and may touch any order: rebuild the index.
        let ids: Vec<OrderId> = self.orders.keys().cloned().collect();
        for id in ids {
            self.refresh_deadline(&id);
        }
        effects
    }

    /// When [`Shop::tick`] next has something to do (an expiry, a due instalment, a retry); the
    /// actor sets its timer for it. Idle carts are dropped by whatever tick comes.
    pub(crate) fn next_deadline_ms(&self) -> Option<u64> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// [`Shop::next_deadline_ms`] by a pass over every order: what the index must agree with.
    #[cfg(test)]
    pub(crate) fn next_deadline_ms_by_scan(&self) -> Option<u64> {
        self.orders.values().filter_map(order_deadline).min()
    }

    /// Whether the unpaid-orders index holds exactly the unpaid orders, by a pass over every
    /// order.
    #[cfg(test)]
    pub(crate) fn unpaid_index_is_exact(&self) -> bool {
        let mut expected: BTreeMap<UserId, BTreeSet<OrderId>> = BTreeMap::new();
        for order in self.orders.values().filter(|o| o.status.is_unpaid()) {
            expected
                .entry(order.customer.clone())
                .or_default()
                .insert(order.id.clone());
        }
        expected == self.unpaid_by_customer
    }

    /// Every provider request still waiting for an answer, to send again after the actor
    /// restarts (same idempotency keys, so the provider does each once).
    pub(crate) fn pending_requests(&self) -> Vec<ProviderRequest> {
        self.orders
            .values()
            .filter_map(|o| o.payments.as_ref())
            .flat_map(OrderPayments::pending_requests)
            .collect()
    }

    /// Drops a final order from memory once the actor stored it: nothing may still happen to
    /// it (no money in flight, nothing more to charge).
    pub(crate) fn archive(&mut self, order_id: &OrderId) -> Result<(), Error> {
        let order = self
            .orders
            .get(order_id)
            .ok_or_else(|| Error::UnknownOrder(order_id.clone()))?;
        let settled = order.payments.as_ref().is_none_or(|p| {
            !p.outstanding()
                && p.refunding().minor() == 0
                && p.parts().iter().all(|part| {
                    !matches!(
                        part.status(),
                        PaymentStatus::Authorizing
                            | PaymentStatus::Authorized
                            | PaymentStatus::Capturing
                            | PaymentStatus::Voiding
                    )
                })
        });
        if !order.status.is_final() || !settled {
            return Err(Error::InUse { what: "order" });
        }
        if let Some(payments) = &order.payments {
            for part in payments.parts() {
                self.payment_orders.remove(part.id());
            }
        }
        self.catalog.forget(order_id);
        self.orders.remove(order_id);
        self.refresh_deadline(order_id);
        Ok(())
    }

    /// The order and the books its transitions touch, borrowed apart.
    fn split(&mut self, order_id: &OrderId) -> Result<(&mut Order, Books<'_>), Error> {
        let order = self
            .orders
            .get_mut(order_id)
            .ok_or_else(|| Error::UnknownOrder(order_id.clone()))?;
        Ok((
            order,
            Books {
                settings: self.settings,
                catalog: &mut self.catalog,
                coupons: &mut self.coupons,
                profiles: &mut self.profiles,
            },
        ))
    }
}

/// Checks an order's items: some, not too many, no unit twice, sane quantities.
fn check_items(items: &[Item]) -> Result<(), Error> {
    if items.is_empty() {
        return Err(Error::EmptyCart);
    }
    if items.len() > CART_LINES_MAX {
        return Err(Error::TooMany {
            what: "order lines",
            max: CART_LINES_MAX,
        });
    }
    let mut keys = BTreeSet::new();
    for item in items {
        if item.quantity == 0 {
            return Err(Error::QuantityNotPositive { quantity: 0 });
        }
        if item.quantity > LINE_QUANTITY_MAX {
            return Err(Error::QuantityTooLarge {
                quantity: i64::from(item.quantity),
                max: LINE_QUANTITY_MAX,
            });
        }
        if !keys.insert(&item.key) {
            return Err(Error::InvalidField {
                field: "order lines",
                reason: "the same product twice",
            });
        }
    }
    Ok(())
}

/// Applies an authorized command whose transition the state machine allows.
fn apply(
    order: &mut Order,
    books: &mut Books<'_>,
    actor: &Actor,
    command: &OrderCommand,
    now_ms: u64,
) -> Result<Effects, Error> {
    let mut effects = Effects::none();
    let id = order.id.clone();
    match command {
        OrderCommand::Accept => {
            order.status = OrderStatus::Accepted;
            effects.event(CommerceEvent::OrderAccepted {
                order: id,
                by: actor.clone(),
            });
        }
        OrderCommand::Reject { reason } => {
            check_text("reason", reason, REASON_BYTES_MAX, true)?;
            effects.event(CommerceEvent::OrderRejected {
                order: id,
                by: actor.clone(),
                reason: reason.clone(),
            });
            effects.extend(close(order, books, OrderStatus::Rejected));
        }
        OrderCommand::RequestPayment { plan } => {
            if order.total.minor() == 0 {
                // Nothing to pay (a 100 % coupon): paid at once, no provider involved.
                order.status = OrderStatus::AwaitingPayment;
                effects.event(CommerceEvent::PaymentRequested {
                    order: id,
                    plan: *plan,
                    total: order.total,
                });
                effects.extend(mark_paid(order, books));
            } else {
                let mut payments = OrderPayments::new(&id, order.total, *plan, now_ms)?;
                let request = payments
                    .first_mut()
                    .ok_or(Error::InvalidField {
                        field: "payment plan",
                        reason: "no payment",
                    })?
                    .authorize()?;
                order.payments = Some(payments);
                order.status = OrderStatus::AwaitingPayment;
                effects.event(CommerceEvent::PaymentRequested {
                    order: id,
                    plan: *plan,
                    total: order.total,
                });
                effects.request(request);
            }
        }
        OrderCommand::RetryPayment => {
            let payments = order
                .payments
                .as_mut()
                .filter(|p| !p.is_stopped())
                .ok_or(Error::NothingToRetry)?;
            let awaiting = order.status == OrderStatus::AwaitingPayment;
            let part = if awaiting {
                payments.first_mut().filter(|p| p.can_retry())
            } else {
                let id = payments
                    .parts()
                    .iter()
                    .skip(1)
                    .find(|p| p.can_retry())
                    .map(|p| p.id().clone());
                id.and_then(|id| payments.part_mut(&id))
            };
            let part = part.ok_or(Error::NothingToRetry)?;
            effects.request(part.authorize()?);
        }
        OrderCommand::Cancel { reason } => {
            check_text("reason", reason, REASON_BYTES_MAX, true)?;
            if order.status.is_unpaid() && order.capture_in_flight() {
                return Err(Error::PaymentInProgress);
            }
            effects.event(CommerceEvent::OrderCancelled {
                order: id,
                by: actor.clone(),
                reason: reason.clone(),
            });
            effects.extend(close(order, books, OrderStatus::Cancelled));
        }
        OrderCommand::Fulfil { tracking } => {
            if let Some(tracking) = tracking {
                check_text("tracking", tracking, TRACKING_BYTES_MAX, false)?;
            }
            order.status = OrderStatus::Fulfilled;
            order.tracking = tracking.clone();
            if let Some(code) = &order.coupon {
                books.coupons.settle(code, &id);
            }
            effects.event(CommerceEvent::OrderFulfilled {
                order: id,
                by: actor.clone(),
                tracking: tracking.clone(),
            });
        }
        OrderCommand::MarkDelivered => {
            order.status = OrderStatus::Delivered;
            effects.event(CommerceEvent::OrderDelivered {
                order: id,
                by: actor.clone(),
            });
        }
        OrderCommand::Complete => {
            order.status = OrderStatus::Completed;
            effects.event(CommerceEvent::OrderCompleted {
                order: id,
                by: actor.clone(),
            });
        }
        OrderCommand::Refund { amount } => {
            let Some(payments) = order.payments.as_mut() else {
                return Err(Error::RefundExceedsRefundable {
                    requested: *amount,
                    refundable: Money::new(0, order.total.currency()),
                });
            };
            let everything = payments.refundable() == *amount;
            effects.extend(payments.refund(*amount)?);
            if everything {
                // A full refund: nothing more is charged either.
                for request in payments.stop() {
                    effects.request(request);
                }
            }
        }
    }
    Ok(effects)
}

/// Closes an unpaid or paid, unshipped order (`Rejected`, `Cancelled`, `Expired`): gives its
/// stock and coupon back, stops its payments and refunds what was captured. The caller has
/// already recorded the closing event.
fn close(order: &mut Order, books: &mut Books<'_>, status: OrderStatus) -> Effects {
    let mut effects = Effects::none();
    let id = order.id.clone();
    let was_paid = order.status == OrderStatus::Paid;
    order.status = status;
    // By construction an unpaid order holds its reservation and a paid one has committed it,
    // so these steps apply; `Unchanged` or an error would mean they already happened.
    let stock = if was_paid {
        books.catalog.restore(&id)
    } else {
        books.catalog.release(&id)
    };
    debug_assert!(stock.is_ok(), "closing order {id}: {stock:?}");
    if let Ok(Change::Applied) = stock {
        effects.event(if was_paid {
            CommerceEvent::StockRestored { order: id.clone() }
        } else {
            CommerceEvent::StockReleased { order: id.clone() }
        });
    }
    if let Some(code) = &order.coupon
        && books.coupons.release(code, &id) == Change::Applied
    {
        effects.event(CommerceEvent::CouponReleased {
            order: id.clone(),
            code: code.clone(),
        });
    }
    if let Some(payments) = order.payments.as_mut() {
        for request in payments.stop() {
            effects.request(request);
        }
        let refundable = payments.refundable();
        // Only the refund-count limit can refuse a refund of exactly the refundable amount; the
        // money then stays refundable and staff refund it by hand.
        if refundable.minor() > 0
            && let Ok(refunds) = payments.refund(refundable)
        {
            effects.extend(refunds);
        }
    }
    effects
}

/// The first payment was captured (or there is nothing to pay): the order is paid and its stock
/// sold.
fn mark_paid(order: &mut Order, books: &mut Books<'_>) -> Effects {
    let mut effects = Effects::none();
    let id = order.id.clone();
    order.status = OrderStatus::Paid;
    effects.event(CommerceEvent::OrderPaid { order: id.clone() });
    let committed = books.catalog.commit(&id);
    debug_assert!(committed.is_ok(), "paying order {id}: {committed:?}");
    if let Ok(Change::Applied) = committed {
        effects.event(CommerceEvent::StockCommitted { order: id.clone() });
    }
    let profile = books.profiles.entry(order.customer.clone()).or_default();
    for line in &order.lines {
        profile.note_purchase(line.key.product.clone());
    }
    effects
}

/// Follows up what the provider confirmed: capture or void an authorization, mark the order
/// paid, give back money that reached a closed or stopped order, schedule instalment retries,
/// notice a full refund.
fn react(
    order: &mut Order,
    books: &mut Books<'_>,
    events: Vec<CommerceEvent>,
    requests: Vec<ProviderRequest>,
    now_ms: u64,
) -> Effects {
    let mut effects = Effects {
        events: Vec::new(),
        requests,
        replayed: false,
    };
    for event in events {
        let mut follow = Effects::none();
        let closed = order.status.is_closed()
            || order.status == OrderStatus::Refunded
            || order
                .payments
                .as_ref()
                .is_some_and(OrderPayments::is_stopped);
        match &event {
            CommerceEvent::PaymentAuthorized { payment, .. } => {
                if let Some(part) = order.payments.as_mut().and_then(|p| p.part_mut(payment)) {
                    let request = if closed { part.stop() } else { part.capture() };
                    if let Some(request) = request {
                        follow.request(request);
                    }
                }
            }
            CommerceEvent::PaymentSucceeded { payment, .. } => {
                let first = order
                    .payments
                    .as_ref()
                    .and_then(|p| p.part(payment))
                    .is_some_and(|p| p.number() == 1);
                if closed {
                    if let Some(part) = order.payments.as_mut().and_then(|p| p.part_mut(payment)) {
                        let refundable = part.refundable();
                        if refundable.minor() > 0
                            && let Ok((request, refund)) = part.refund(refundable)
                        {
                            follow.event(CommerceEvent::RefundRequested {
                                order: order.id.clone(),
                                payment: payment.clone(),
                                refund,
                                amount: refundable,
                            });
                            follow.request(request);
                        }
                    }
                } else if first && order.status == OrderStatus::AwaitingPayment {
                    follow.extend(mark_paid(order, books));
                }
            }
            CommerceEvent::PaymentFailed { payment, .. }
            | CommerceEvent::PaymentVoided { payment, .. } => {
                if !closed
                    && let Some(part) = order.payments.as_mut().and_then(|p| p.part_mut(payment))
                    && part.number() > 1
                    && part.can_retry()
                {
                    part.schedule_retry(now_ms.saturating_add(books.settings.instalment_retry_ms));
                }
            }
            _ => {}
        }
        effects.event(event);
        effects.extend(follow);
    }
    // After any payment news (a refund confirmed, or the last capture in flight failing): is
    // everything paid back, with nothing more to come?
    if order.status.is_paid()
        && order
            .payments
            .as_ref()
            .is_some_and(OrderPayments::fully_refunded)
    {
        order.status = OrderStatus::Refunded;
        effects.event(CommerceEvent::OrderRefunded {
            order: order.id.clone(),
        });
    }
    effects
}

/// One payment (instalment) of `order`.
fn payment_of<'o>(order: &'o mut Order, payment: &PaymentId) -> Result<&'o mut Payment, Error> {
    order
        .payments
        .as_mut()
        .and_then(|p| p.part_mut(payment))
        .ok_or_else(|| Error::UnknownPayment(payment.clone()))
}

/// When [`Shop::tick`] next has something to do for `order`: its expiry while unpaid, or a due
/// instalment or retry while paid.
fn order_deadline(order: &Order) -> Option<u64> {
    let mut next: Option<u64> = None;
    let mut consider = |at: u64| next = Some(next.map_or(at, |n| n.min(at)));
    if order.status.is_unpaid() {
        consider(order.expires_ms);
    }
    if order.status.is_paid()
        && let Some(payments) = &order.payments
        && !payments.is_stopped()
    {
        for part in payments.parts() {
            match part.status() {
                PaymentStatus::Scheduled => consider(part.due_ms()),
                PaymentStatus::Failed | PaymentStatus::Voided if part.can_retry() => {
                    if let Some(at) = part.retry_at_ms() {
                        consider(at);
                    }
                }
                _ => {}
            }
        }
    }
    next
}
