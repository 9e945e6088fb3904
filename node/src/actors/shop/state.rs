//! [`ShopState`]: everything one shop's actor holds — the commerce core's [`Shop`] plus the
//! business profile, hours, automatic messages, quick replies, staff and assignments — and the
//! one way to change it, [`ShopState::apply`], a pure function of the state, an [`Input`] and
//! the time.
//!
//! **Persistence by replay.** Every input that changed the state is appended to the shop's log
//! (`KvTable::ShopLog`) in the same commit as the outbox events it produced. Activating the
//! shop replays the log through the same `apply`: determinism (no clock, no randomness, no
//! reads outside the state) makes the replay exact. Authorization that depends on the node's
//! configuration (operators) is checked before an input is logged, never during replay.

use std::collections::BTreeMap;

use piazza_protocol::commerce::{
    CartView, ConsentView, CouponView, LineView, OrderView, PaymentState, PaymentView, ProductView,
    PromotionId, QuickReply, SegmentAtom, SegmentSpec, ShopInfo, ShopOp, ShopProfile, StaffMember,
    StaffRole,
};
use piazza_protocol::{ErrorCode, Seq, UserId};
use serde::{Deserialize, Serialize};

use crate::commerce::actor::{Actor, Permission};
use crate::commerce::catalog::{PricedItem, StockKey};
use crate::commerce::error::Error;
use crate::commerce::event::Effects;
use crate::commerce::ids::{CommandId, OrderId, ShopId};
use crate::commerce::order::Order;
use crate::commerce::payment::{Notification, PaymentStatus, Snapshot};
use crate::commerce::promo::{Promotion, Segment};
use crate::commerce::shop::{Notified, Settings, Shop};

/// Most staff members of a shop.
pub(crate) const STAFF_MAX: usize = 100;
/// Most quick replies of a shop.
pub(crate) const QUICK_REPLIES_MAX: usize = 200;
/// Most customers assigned to agents.
pub(crate) const ASSIGNMENTS_MAX: usize = 100_000;
/// Most order messages remembered (orders still in memory).
pub(crate) const ORDER_MESSAGES_MAX: usize = 100_000;

/// One input that changed a shop, as logged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Input {
    /// A user's operation (the caller's staff role is taken from the state itself).
    Op { user: UserId, op: ShopOp },
    /// A verified provider notification.
    Notification(Notification),
    /// A payment attempt as the provider reported it when asked.
    Snapshot(Snapshot),
    /// Timers: expiry of unpaid orders, instalments due, retries.
    Tick,
    /// The order message of an order was posted at `seq` of the customer's conversation.
    OrderMessage { order: OrderId, seq: Seq },
    /// A promotion was handed to these customers' conversations (counted against quotas).
    Delivered {
        promotion: PromotionId,
        customers: Vec<UserId>,
    },
    /// These final orders were stored as views and leave memory.
    Archive { orders: Vec<OrderId> },
}

/// A logged input with the time it was applied at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) at_ms: u64,
    pub(crate) input: Input,
}

/// What applying an input did.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// Commerce events and provider requests.
    pub(crate) effects: Effects,
    /// Orders whose view changed (their order message is updated).
    pub(crate) orders: Vec<OrderId>,
    /// An order to post a message for (checkout).
    pub(crate) placed: Option<OrderId>,
    /// Whether the staff roster changed (it is published to conversations).
    pub(crate) staff_changed: bool,
    /// Whether the state changed at all (only then is the input logged).
    pub(crate) changed: bool,
    /// A notification contradicted the state: fetch this payment attempt from the provider.
    pub(crate) needs_sync: Option<(piazza_protocol::commerce::PaymentId, u32)>,
}

/// Everything one shop's actor holds.
#[derive(Debug)]
pub(crate) struct ShopState {
    pub(crate) id: ShopId,
    pub(crate) created: bool,
    pub(crate) profile: ShopProfile,
    pub(crate) verified: bool,
    pub(crate) hours: Option<piazza_protocol::commerce::Hours>,
    pub(crate) greeting: Option<String>,
    pub(crate) away: Option<String>,
    pub(crate) quick_replies: BTreeMap<String, String>,
    pub(crate) staff: BTreeMap<UserId, StaffRole>,
    /// Customer → agent.
    pub(crate) assignments: BTreeMap<UserId, UserId>,
    pub(crate) core: Shop,
    /// Order → its message's seq in the customer's conversation.
    pub(crate) order_messages: BTreeMap<OrderId, Seq>,
}

impl ShopState {
    /// A shop that does not exist yet.
    pub(crate) fn new(id: ShopId, settings: Settings) -> ShopState {
        ShopState {
            core: Shop::new(id.clone(), settings),
            id,
            created: false,
            profile: ShopProfile::default(),
            verified: false,
            hours: None,
            greeting: None,
            away: None,
            quick_replies: BTreeMap::new(),
            staff: BTreeMap::new(),
            assignments: BTreeMap::new(),
            order_messages: BTreeMap::new(),
        }
    }

    /// Who `user` is to this shop.
    pub(crate) fn actor(&self, user: &UserId) -> Actor {
        match self.staff.get(user) {
            Some(role) => Actor::Staff {
                user: user.clone(),
                role: *role,
            },
            None => Actor::Customer(user.clone()),
        }
    }

    fn require_staff(&self, user: &UserId, roles: &[StaffRole]) -> Result<(), ErrorCode> {
        match self.staff.get(user) {
            Some(role) if roles.contains(role) => Ok(()),
            _ => Err(ErrorCode::Forbidden),
        }
    }

    fn require(&self, user: &UserId, permission: Permission) -> Result<(), ErrorCode> {
        self.actor(user)
            .require(permission)
            .map_err(|e| ErrorCode::from(&e))
    }

    /// Applies one input at `at_ms`. A refused input changes nothing.
    pub(crate) fn apply(&mut self, input: &Input, at_ms: u64) -> Result<Applied, ErrorCode> {
        let mut applied = Applied {
            changed: true,
            ..Applied::default()
        };
        match input {
            Input::Op { user, op } => return self.apply_op(user, op, at_ms),
            Input::Notification(notification) => {
                match self
                    .core
                    .handle_notification(notification, at_ms)
                    .map_err(|e| ErrorCode::from(&e))?
                {
                    Notified::Applied(effects) => {
                        applied.orders = orders_of(&effects);
                        applied.effects = effects;
                    }
                    Notified::NeedsSync { payment, attempt } => {
                        applied.changed = false;
                        applied.needs_sync = Some((payment, attempt));
                    }
                    Notified::Duplicate | Notified::Stale | Notified::Unchanged => {
                        applied.changed = false;
                    }
                }
            }
            Input::Snapshot(snapshot) => {
                let effects = self
                    .core
                    .apply_snapshot(snapshot, at_ms)
                    .map_err(|e| ErrorCode::from(&e))?;
                applied.changed = !effects.events.is_empty() || !effects.requests.is_empty();
                applied.orders = orders_of(&effects);
                applied.effects = effects;
            }
            Input::Tick => {
                let effects = self.core.tick(at_ms);
                applied.orders = orders_of(&effects);
                applied.effects = effects;
            }
            Input::OrderMessage { order, seq } => {
                if self.order_messages.len() >= ORDER_MESSAGES_MAX {
                    // Oldest ids first: forget one to stay bounded (its message just stops
                    // being updated).
                    self.order_messages.pop_first();
                }
                self.order_messages.insert(order.clone(), *seq);
            }
            Input::Archive { orders } => {
                for order in orders {
                    // One that is no longer archivable (code changed under the log) stays.
                    if self.core.archive(order).is_ok() {
                        self.order_messages.remove(order);
                    }
                }
            }
            Input::Delivered {
                promotion,
                customers,
            } => {
                let promotions = self.core.promotions_mut();
                for customer in customers {
                    // Refused ones were not handed over; they are not in the list.
                    let _ = promotions.deliver(customer, promotion, at_ms);
                }
            }
        }
        Ok(applied)
    }

    fn apply_op(&mut self, user: &UserId, op: &ShopOp, now: u64) -> Result<Applied, ErrorCode> {
        let mut applied = Applied {
            changed: true,
            ..Applied::default()
        };
        let err = |e: Error| ErrorCode::from(&e);
        if !self.created && !matches!(op, ShopOp::Create { .. }) {
            return Err(ErrorCode::NotFound);
        }
        let managers = [StaffRole::Owner, StaffRole::Manager];
        let everyone = [StaffRole::Owner, StaffRole::Manager, StaffRole::Agent];
        match op {
            ShopOp::Create { profile } => {
                if self.created {
                    return Err(ErrorCode::Conflict {
                        reason: "the shop exists".into(),
                    });
                }
                self.created = true;
                self.profile = profile.clone();
                self.staff.insert(user.clone(), StaffRole::Owner);
                applied.staff_changed = true;
            }
            ShopOp::UpdateProfile { profile } => {
                self.require_staff(user, &managers)?;
                self.profile = profile.clone();
            }
            ShopOp::SetVerified { verified } => self.verified = *verified,
            ShopOp::SetHours { hours } => {
                self.require_staff(user, &managers)?;
                if let Some(hours) = hours {
                    super::hours::validate(hours)?;
                }
                self.hours = hours.clone();
            }
            ShopOp::SetAutoReplies { greeting, away } => {
                self.require_staff(user, &managers)?;
                self.greeting = greeting.clone();
                self.away = away.clone();
            }
            ShopOp::PutQuickReply(QuickReply { shortcut, text }) => {
                self.require_staff(user, &everyone)?;
                if !self.quick_replies.contains_key(shortcut)
                    && self.quick_replies.len() >= QUICK_REPLIES_MAX
                {
                    return Err(too_many("quick replies", QUICK_REPLIES_MAX));
                }
                self.quick_replies.insert(shortcut.clone(), text.clone());
            }
            ShopOp::RemoveQuickReply { shortcut } => {
                self.require_staff(user, &everyone)?;
                if self.quick_replies.remove(shortcut).is_none() {
                    return Err(ErrorCode::NotFound);
                }
            }
            ShopOp::SetStaff { user: member, role } => {
                self.require_staff(user, &[StaffRole::Owner])?;
                if member.is_reserved() {
                    return Err(ErrorCode::invalid("user", "a reserved pseudo-user"));
                }
                let owners = self
                    .staff
                    .values()
                    .filter(|r| **r == StaffRole::Owner)
                    .count();
                let demotes_owner = self.staff.get(member) == Some(&StaffRole::Owner)
                    && *role != Some(StaffRole::Owner);
                if demotes_owner && owners == 1 {
                    return Err(ErrorCode::Conflict {
                        reason: "a shop keeps at least one owner".into(),
                    });
                }
                match role {
                    Some(role) => {
                        if !self.staff.contains_key(member) && self.staff.len() >= STAFF_MAX {
                            return Err(too_many("staff members", STAFF_MAX));
                        }
                        self.staff.insert(member.clone(), *role);
                    }
                    None => {
                        self.staff.remove(member);
                        self.assignments.retain(|_, agent| agent != member);
                    }
                }
                applied.staff_changed = true;
            }
            ShopOp::Assign { customer, agent } => {
                let role = self.staff.get(user).copied().ok_or(ErrorCode::Forbidden)?;
                let current = self.assignments.get(customer);
                let self_take = role == StaffRole::Agent
                    && agent.as_ref() == Some(user)
                    && current.is_none_or(|a| a == user);
                if !managers.contains(&role) && !self_take {
                    return Err(ErrorCode::Forbidden);
                }
                match agent {
                    Some(agent) => {
                        if !self.staff.contains_key(agent) {
                            return Err(ErrorCode::invalid("agent", "not on the shop's staff"));
                        }
                        if current.is_none() && self.assignments.len() >= ASSIGNMENTS_MAX {
                            return Err(too_many("assignments", ASSIGNMENTS_MAX));
                        }
                        self.assignments.insert(customer.clone(), agent.clone());
                    }
                    None => {
                        self.assignments.remove(customer);
                    }
                }
            }
            ShopOp::LabelCustomer {
                customer,
                label,
                add,
            } => {
                self.require(user, Permission::LabelCustomers)?;
                let profile = self.core.profile_mut(customer);
                if *add {
                    profile.add_label(label.clone()).map_err(err)?;
                } else {
                    profile.labels.remove(label);
                }
            }
            ShopOp::PutCatalog { catalog, section } => {
                self.require(user, Permission::ManageCatalog)?;
                self.core
                    .catalog_mut()
                    .put_catalog(catalog.clone(), section.clone())
                    .map_err(err)?;
            }
            ShopOp::PutCategory { category, section } => {
                self.require(user, Permission::ManageCatalog)?;
                self.core
                    .catalog_mut()
                    .put_category(category.clone(), section.clone())
                    .map_err(err)?;
            }
            ShopOp::PutProduct(spec) => {
                self.require(user, Permission::ManageCatalog)?;
                self.core
                    .catalog_mut()
                    .put_product(spec.clone())
                    .map_err(err)?;
            }
            ShopOp::SetProductActive { product, active } => {
                self.require(user, Permission::ManageCatalog)?;
                self.core
                    .catalog_mut()
                    .set_active(product, *active)
                    .map_err(err)?;
            }
            ShopOp::SetStock {
                product,
                variant,
                on_hand,
            } => {
                self.require(user, Permission::ManageCatalog)?;
                let key = StockKey {
                    product: product.clone(),
                    variant: variant.clone(),
                };
                self.core
                    .catalog_mut()
                    .set_stock(&key, *on_hand)
                    .map_err(err)?;
            }
            ShopOp::PutOffer(offer) => {
                self.require(user, Permission::ManageCatalog)?;
                self.core
                    .catalog_mut()
                    .put_offer(offer.clone())
                    .map_err(err)?;
            }
            ShopOp::RemoveOffer { offer } => {
                self.require(user, Permission::ManageCatalog)?;
                self.core.catalog_mut().remove_offer(offer).map_err(err)?;
            }
            ShopOp::AskAbout { product, .. } => {
                if self.staff.contains_key(user) {
                    return Err(ErrorCode::invalid("user", "staff answer, customers ask"));
                }
                if self.core.catalog().product(product).is_none() {
                    return Err(ErrorCode::NotFound);
                }
                self.core.profile_mut(user).note_interest(product.clone());
            }
            ShopOp::CartAdd {
                product,
                variant,
                quantity,
            } => {
                let key = stock_key(product, variant.as_ref());
                self.core
                    .cart_add(user, &key, i64::from(*quantity), now)
                    .map_err(err)?;
            }
            ShopOp::CartSet {
                product,
                variant,
                quantity,
            } => {
                let key = stock_key(product, variant.as_ref());
                if *quantity == 0 {
                    self.core.cart_remove(user, &key, now).map_err(err)?;
                } else {
                    self.core
                        .cart_set(user, &key, i64::from(*quantity), now)
                        .map_err(err)?;
                }
            }
            ShopOp::CartRemove { product, variant } => {
                let key = stock_key(product, variant.as_ref());
                self.core.cart_remove(user, &key, now).map_err(err)?;
            }
            ShopOp::CartClear => self.core.cart_clear(user, now),
            ShopOp::Checkout { order, coupon } => {
                let actor = self.actor(user);
                let command_id = checkout_command(order)?;
                let effects = self
                    .core
                    .checkout(&actor, command_id, order.clone(), coupon.clone(), now)
                    .map_err(err)?;
                applied.changed = !effects.replayed;
                if !effects.replayed {
                    applied.placed = Some(order.clone());
                }
                applied.effects = effects;
            }
            ShopOp::Command {
                order,
                command_id,
                command,
            } => {
                let actor = self.actor(user);
                let effects = self
                    .core
                    .handle(&actor, command_id.clone(), order, command.clone(), now)
                    .map_err(err)?;
                applied.changed = !effects.replayed;
                if !effects.replayed {
                    applied.orders = vec![order.clone()];
                }
                applied.effects = effects;
            }
            ShopOp::PutCoupon(spec) => {
                self.require(user, Permission::ManageCoupons)?;
                self.core.coupons_mut().put(spec.clone()).map_err(err)?;
            }
            ShopOp::SetCouponEnabled { code, enabled } => {
                self.require(user, Permission::ManageCoupons)?;
                self.core
                    .coupons_mut()
                    .set_enabled(code, *enabled)
                    .map_err(err)?;
            }
            ShopOp::OptIn { scope } => {
                // Consent makes the customer known to the shop's segments.
                let _ = self.core.profile_mut(user);
                self.core.promotions_mut().opt_in(user, *scope, now);
            }
            ShopOp::OptOut { scope } => self.core.promotions_mut().opt_out(user, *scope, now),
            ShopOp::SetQuota(quota) => {
                self.require(user, Permission::SendPromotions)?;
                self.core.promotions_mut().set_quota(*quota).map_err(err)?;
            }
            ShopOp::Promote {
                promotion,
                scope,
                segment,
                ..
            } => {
                self.require(user, Permission::SendPromotions)?;
                let promotion = Promotion {
                    id: promotion.clone(),
                    scope: *scope,
                    segment: segment_of(segment),
                };
                if self.core.promotions().promotion(&promotion.id).is_some() {
                    // A retry: the audience is computed again and reaches nobody twice.
                    applied.changed = false;
                } else {
                    self.core.promotions_mut().put(promotion).map_err(err)?;
                }
            }
            // Reads and messages change nothing.
            ShopOp::Info
            | ShopOp::Stats
            | ShopOp::Products { .. }
            | ShopOp::Product { .. }
            | ShopOp::SendProduct { .. }
            | ShopOp::SendProductList { .. }
            | ShopOp::Cart
            | ShopOp::Order { .. }
            | ShopOp::Orders { .. }
            | ShopOp::Coupons
            | ShopOp::Consents => applied.changed = false,
        }
        Ok(applied)
    }

    /// The profile as `user` may see it.
    pub(crate) fn info(&self, user: &UserId, now_ms: u64) -> ShopInfo {
        let open_now = self
            .hours
            .as_ref()
            .is_none_or(|hours| super::hours::is_open(hours, now_ms));
        let next_change_ms = self
            .hours
            .as_ref()
            .and_then(|hours| super::hours::next_change_ms(hours, now_ms));
        let your_role = self.staff.get(user).copied();
        let staff_view = your_role.is_some();
        ShopInfo {
            shop: self.id.clone(),
            profile: self.profile.clone(),
            verified: self.verified,
            hours: self.hours.clone(),
            open_now,
            next_change_ms,
            greeting: self.greeting.clone(),
            away: self.away.clone(),
            quick_replies: if staff_view {
                self.quick_replies
                    .iter()
                    .map(|(shortcut, text)| QuickReply {
                        shortcut: shortcut.clone(),
                        text: text.clone(),
                    })
                    .collect()
            } else {
                Vec::new()
            },
            staff: if staff_view {
                self.staff
                    .iter()
                    .map(|(user, role)| StaffMember {
                        user: user.clone(),
                        role: *role,
                    })
                    .collect()
            } else {
                Vec::new()
            },
            your_role,
        }
    }

    /// A product with its prices and stock now.
    pub(crate) fn product_view(
        &self,
        product: &crate::commerce::catalog::Product,
        now: u64,
    ) -> ProductView {
        let spec = product.spec();
        let catalog = self.core.catalog();
        let keys: Vec<Option<&piazza_protocol::commerce::VariantId>> = if spec.variants.is_empty() {
            vec![None]
        } else {
            spec.variants.iter().map(|v| Some(&v.id)).collect()
        };
        let prices = keys
            .iter()
            .map(|variant| {
                catalog
                    .effective_price(&spec.id, *variant, now)
                    .unwrap_or(spec.price)
            })
            .collect();
        let available = keys
            .iter()
            .map(|variant| {
                catalog
                    .stock(&stock_key(&spec.id, *variant))
                    .and_then(|stock| stock.available())
            })
            .collect();
        ProductView {
            spec: spec.clone(),
            prices,
            available,
        }
    }

    /// `user`'s cart, priced now.
    pub(crate) fn cart_view(&self, user: &UserId, now: u64) -> Result<CartView, ErrorCode> {
        let Some(cart) = self.core.cart(user) else {
            return Ok(CartView {
                lines: Vec::new(),
                subtotal: None,
                version: 0,
            });
        };
        let quote = cart
            .totals(self.core.catalog(), now)
            .map_err(|e| ErrorCode::from(&e))?;
        Ok(CartView {
            lines: quote.items.iter().map(line_view).collect(),
            subtotal: quote.subtotal,
            version: cart.version(),
        })
    }

    /// An order as `user` may see it (its customer or staff).
    pub(crate) fn order_view(&self, user: &UserId, id: &OrderId) -> Result<OrderView, ErrorCode> {
        let order = self.core.order(id).ok_or(ErrorCode::NotFound)?;
        if order.customer() != user && !self.staff.contains_key(user) && *user != UserId::shop() {
            return Err(ErrorCode::NotFound);
        }
        Ok(self.view_of(order))
    }

    /// An order as both sides see it.
    pub(crate) fn view_of(&self, order: &Order) -> OrderView {
        let payments = order
            .payments()
            .map(|payments| {
                payments
                    .parts()
                    .iter()
                    .map(|p| PaymentView {
                        payment: p.id().clone(),
                        number: p.number(),
                        amount: p.amount(),
                        due_ms: p.due_ms(),
                        state: payment_state(p.status()),
                        captured: p.captured(),
                        refunded: p.refunded(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        OrderView {
            shop: self.id.clone(),
            order: order.id().clone(),
            customer: order.customer().clone(),
            status: order.status(),
            lines: order.lines().iter().map(line_view).collect(),
            subtotal: order.subtotal(),
            discount: order.discount(),
            total: order.total(),
            coupon: order.coupon().cloned(),
            placed_ms: order.placed_ms(),
            expires_ms: order.expires_ms(),
            tracking: order.tracking().map(str::to_owned),
            payments,
            message: self.order_messages.get(order.id()).copied(),
        }
    }

    /// Coupons with their counters (managers).
    pub(crate) fn coupons_view(&self, user: &UserId) -> Result<Vec<CouponView>, ErrorCode> {
        self.require(user, Permission::ManageCoupons)?;
        Ok(self
            .core
            .coupons()
            .coupons()
            .map(|c| CouponView {
                spec: c.spec().clone(),
                enabled: c.enabled(),
                redeemed: c.redeemed(),
            })
            .collect())
    }

    /// `user`'s consents with this shop.
    pub(crate) fn consents_view(&self, user: &UserId) -> Vec<ConsentView> {
        use piazza_protocol::commerce::Scope;
        [Scope::Offers, Scope::Products, Scope::News]
            .into_iter()
            .filter_map(|scope| {
                self.core
                    .promotions()
                    .consent(user, scope)
                    .map(|c| ConsentView {
                        scope,
                        granted: c.granted,
                        at_ms: c.at_ms,
                    })
            })
            .collect()
    }

    /// Up to `max` final, settled orders to archive: those untouched since `before_ms`, or,
    /// when memory holds more than `high_water` orders, the least recently updated final ones.
    pub(crate) fn archivable(&self, before_ms: u64, high_water: usize, max: usize) -> Vec<OrderId> {
        let pressed = self.core.order_count() > high_water;
        let mut candidates: Vec<(u64, OrderId)> = self
            .core
            .orders()
            .filter(|o| o.status().is_final())
            .filter(|o| pressed || o.updated_ms() < before_ms)
            .filter(|o| {
                o.payments().is_none_or(|p| {
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
                })
            })
            .map(|o| (o.updated_ms(), o.id().clone()))
            .collect();
        candidates.sort();
        candidates.truncate(max);
        candidates.into_iter().map(|(_, id)| id).collect()
    }

    /// The next customers (up to `max`, taken from the end of `remaining`) a running promotion
    /// may reach now: consent and quota are checked at this moment, so a customer who opted out
    /// since the promotion started is skipped. Counts the outcome into `report`; the caller
    /// logs [`Input::Delivered`] with the result before handing the promotion out.
    pub(crate) fn promotion_chunk(
        &self,
        promotion: &PromotionId,
        remaining: &mut Vec<UserId>,
        max: usize,
        report: &mut piazza_protocol::commerce::PromotionReport,
        now: u64,
    ) -> Vec<UserId> {
        let mut delivered = Vec::new();
        for _ in 0..max {
            let Some(customer) = remaining.pop() else {
                break;
            };
            match self
                .core
                .promotions()
                .may_deliver(&customer, promotion, now)
            {
                Ok(()) => delivered.push(customer),
                Err(crate::commerce::promo::Refusal::QuotaReached { .. }) => {
                    report.over_quota += 1;
                }
                Err(_) => report.skipped += 1,
            }
        }
        report.delivered += delivered.len() as u64;
        delivered
    }

    /// Whether `user` is on the staff.
    pub(crate) fn is_staff(&self, user: &UserId) -> bool {
        self.staff.contains_key(user)
    }
}

fn too_many(what: &str, max: usize) -> ErrorCode {
    ErrorCode::TooLarge {
        what: what.to_owned(),
        limit: max as u64,
    }
}

fn stock_key(
    product: &piazza_protocol::commerce::ProductId,
    variant: Option<&piazza_protocol::commerce::VariantId>,
) -> StockKey {
    StockKey {
        product: product.clone(),
        variant: variant.cloned(),
    }
}

/// The command id of a checkout: the order id itself (a checkout happens once per order id).
fn checkout_command(order: &OrderId) -> Result<CommandId, ErrorCode> {
    order
        .as_str()
        .parse()
        .map_err(|_| ErrorCode::invalid("order", "not usable as a command id"))
}

fn line_view(item: &PricedItem) -> LineView {
    LineView {
        product: item.key.product.clone(),
        variant: item.key.variant.clone(),
        title: item.title.clone(),
        quantity: item.quantity,
        unit_price: item.unit_price,
        line_total: item.line_total,
    }
}

fn payment_state(status: PaymentStatus) -> PaymentState {
    match status {
        PaymentStatus::Scheduled => PaymentState::Scheduled,
        PaymentStatus::Authorizing => PaymentState::Authorizing,
        PaymentStatus::Authorized => PaymentState::Authorized,
        PaymentStatus::Capturing => PaymentState::Capturing,
        PaymentStatus::Captured => PaymentState::Captured,
        PaymentStatus::Voiding => PaymentState::Voiding,
        PaymentStatus::Voided => PaymentState::Voided,
        PaymentStatus::Failed => PaymentState::Failed,
        PaymentStatus::Cancelled => PaymentState::Cancelled,
    }
}

/// The orders effects are about, each once.
fn orders_of(effects: &Effects) -> Vec<OrderId> {
    let mut orders: Vec<OrderId> = effects.events.iter().map(|e| e.order().clone()).collect();
    orders.sort();
    orders.dedup();
    orders
}

/// The core's segment expression of a wire segment (any of all of terms).
pub(crate) fn segment_of(spec: &SegmentSpec) -> Segment {
    if spec.any.is_empty() {
        return Segment::Everyone;
    }
    Segment::Any(
        spec.any
            .iter()
            .map(|clause| {
                Segment::All(
                    clause
                        .iter()
                        .map(|term| {
                            let atom = match &term.atom {
                                SegmentAtom::Label(label) => Segment::Label(label.clone()),
                                SegmentAtom::PastPurchaser => Segment::PastPurchasers,
                                SegmentAtom::Purchased(p) => Segment::Purchased(p.clone()),
                                SegmentAtom::InterestedIn(p) => Segment::InterestedIn(p.clone()),
                            };
                            if term.negated {
                                Segment::Not(Box::new(atom))
                            } else {
                                atom
                            }
                        })
                        .collect(),
                )
            })
            .collect(),
    )
}
