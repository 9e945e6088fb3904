//! Promotions (broadcast messages from a shop to its customers), consent and quotas.
//!
//! * **Consent** is per (customer, scope) within the shop: none until the customer opts in;
//!   opting out takes effect at once, for promotions already on their way too.
//! * **Segments** are predicates over a [`CustomerProfile`] (labels, past purchases, interest in
//!   products), combined with all/any/not.
//! * **Quota**: a customer receives at most [`Quota::count_max`] promotions from the shop in any
//!   **rolling** window of [`Quota::window_ms`] (default 4 in 30 days). Rolling, not calendar:
//!   the core has no calendar or time zone, and a rolling window cannot be gamed by sending four
//!   on the 31st and four on the 1st.
//!
//! The shop actor computes the [`Promotions::audience`] when a promotion starts, then delivers
//! in batches; right before each delivery it calls [`Promotions::deliver`], which checks consent
//! and quota *at that moment* and counts the delivery. A customer who opted out after the
//! audience was computed is skipped; nobody gets the same promotion twice.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use piazza_protocol::UserId;

use super::error::Error;
use super::ids::{Label, ProductId, PromotionId};
#[cfg(test)]
pub(crate) use piazza_protocol::commerce::QUOTA_WINDOW_MS_DEFAULT;
pub(crate) use piazza_protocol::commerce::{Quota, Scope};

/// Most promotions a shop keeps (sent ones included, until it removes them).
pub(crate) const PROMOTIONS_MAX: usize = 1000;
/// Largest quota count: one promotion a day over a month is already more than any messaging
/// platform's business policy allows.
pub(crate) const QUOTA_COUNT_MAX: u32 = 31;
/// Shortest quota window: a day.
pub(crate) const QUOTA_WINDOW_MS_MIN: u64 = 24 * 60 * 60 * 1000;
/// Most nodes in a segment expression; segments are evaluated once per customer, so their size
/// bounds the cost of an audience.
pub(crate) const SEGMENT_NODES_MAX: usize = 32;
/// Most labels per customer.
pub(crate) const LABELS_MAX: usize = 32;
/// Most products remembered per customer as purchased or of interest (each set). Beyond this,
/// new ones are not recorded: segments on very old interests lose precision, memory stays
/// bounded.
pub(crate) const PROFILE_PRODUCTS_MAX: usize = 500;

/// A customer's consent to one scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Consent {
    pub(crate) granted: bool,
    /// When it was given or withdrawn (kept as evidence).
    pub(crate) at_ms: u64,
}

/// What the shop knows about a customer, for segments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CustomerProfile {
    pub(crate) labels: BTreeSet<Label>,
    /// Products in the customer's paid orders.
    pub(crate) purchased: BTreeSet<ProductId>,
    /// Products the customer asked about or viewed.
    pub(crate) interests: BTreeSet<ProductId>,
}

impl CustomerProfile {
    /// Adds a label (at most [`LABELS_MAX`]).
    pub(crate) fn add_label(&mut self, label: Label) -> Result<(), Error> {
        if !self.labels.contains(&label) && self.labels.len() >= LABELS_MAX {
            return Err(Error::TooMany {
                what: "labels of a customer",
                max: LABELS_MAX,
            });
        }
        self.labels.insert(label);
        Ok(())
    }

    /// Records a purchase (silently bounded by [`PROFILE_PRODUCTS_MAX`]).
    pub(crate) fn note_purchase(&mut self, product: ProductId) {
        if self.purchased.len() < PROFILE_PRODUCTS_MAX {
            self.purchased.insert(product);
        }
    }

    /// Records interest in a product (silently bounded by [`PROFILE_PRODUCTS_MAX`]).
    pub(crate) fn note_interest(&mut self, product: ProductId) {
        if self.interests.len() < PROFILE_PRODUCTS_MAX {
            self.interests.insert(product);
        }
    }
}

/// Which customers a promotion is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Every customer (who consented).
    Everyone,
    /// Customers with this label.
    Label(Label),
    /// Customers who ever paid for an order.
    PastPurchasers,
    /// Customers who paid for this product.
    Purchased(ProductId),
    /// Customers interested in this product.
    InterestedIn(ProductId),
    /// All of these.
    All(Vec<Segment>),
    /// Any of these.
    Any(Vec<Segment>),
    /// Not this.
    Not(Box<Segment>),
}

impl Segment {
    /// Whether `profile` is in the segment.
    pub(crate) fn matches(&self, profile: &CustomerProfile) -> bool {
        match self {
            Segment::Everyone => true,
            Segment::Label(label) => profile.labels.contains(label),
            Segment::PastPurchasers => !profile.purchased.is_empty(),
            Segment::Purchased(product) => profile.purchased.contains(product),
            Segment::InterestedIn(product) => profile.interests.contains(product),
            Segment::All(parts) => parts.iter().all(|s| s.matches(profile)),
            Segment::Any(parts) => parts.iter().any(|s| s.matches(profile)),
            Segment::Not(inner) => !inner.matches(profile),
        }
    }

    /// Nodes in the expression.
    fn nodes(&self) -> usize {
        match self {
            Segment::All(parts) | Segment::Any(parts) => {
                1 + parts.iter().map(Segment::nodes).sum::<usize>()
            }
            Segment::Not(inner) => 1 + inner.nodes(),
            _ => 1,
        }
    }
}

/// A promotion: its audience rule. The message itself is the shop actor's business.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Promotion {
    pub(crate) id: PromotionId,
    pub(crate) scope: Scope,
    pub(crate) segment: Segment,
}

/// Why a promotion may not be delivered to a customer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The promotion does not exist (any more).
    UnknownPromotion,
    /// The customer has not opted in to the promotion's scope, or opted out.
    NoConsent,
    /// The customer received the quota's count in the current window; the earliest moment one
    /// more would fit is given.
    QuotaReached { next_ms: u64 },
    /// The customer already received this promotion.
    AlreadyDelivered,
}

/// A shop's promotions, consents and delivery log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Promotions {
    quota: Quota,
    consents: BTreeMap<(UserId, Scope), Consent>,
    promotions: BTreeMap<PromotionId, Promotion>,
    /// Per customer, deliveries in the current window, oldest first (at most the quota's
    /// count: older ones are dropped as the window moves).
    deliveries: BTreeMap<UserId, VecDeque<(u64, PromotionId)>>,
}

impl Promotions {
    pub(crate) fn new() -> Promotions {
        Promotions::default()
    }

    pub(crate) fn quota(&self) -> Quota {
        self.quota
    }

    /// Changes the quota; deliveries already made count against the new one.
    pub(crate) fn set_quota(&mut self, quota: Quota) -> Result<(), Error> {
        if quota.count_max == 0 || quota.count_max > QUOTA_COUNT_MAX {
            return Err(Error::InvalidField {
                field: "quota count",
                reason: "must be 1..=31",
            });
        }
        if quota.window_ms < QUOTA_WINDOW_MS_MIN {
            return Err(Error::InvalidField {
                field: "quota window",
                reason: "must be at least a day",
            });
        }
        self.quota = quota;
        Ok(())
    }

    /// The customer opts in to `scope`.
    pub(crate) fn opt_in(&mut self, customer: &UserId, scope: Scope, now_ms: u64) {
        self.consents.insert(
            (customer.clone(), scope),
            Consent {
                granted: true,
                at_ms: now_ms,
            },
        );
    }

    /// The customer opts out of `scope`, with immediate effect.
    pub(crate) fn opt_out(&mut self, customer: &UserId, scope: Scope, now_ms: u64) {
        self.consents.insert(
            (customer.clone(), scope),
            Consent {
                granted: false,
                at_ms: now_ms,
            },
        );
    }

    /// The customer's consent record for `scope`, if they ever answered.
    pub(crate) fn consent(&self, customer: &UserId, scope: Scope) -> Option<Consent> {
        self.consents.get(&(customer.clone(), scope)).copied()
    }

    fn consents_to(&self, customer: &UserId, scope: Scope) -> bool {
        self.consent(customer, scope).is_some_and(|c| c.granted)
    }

    /// Creates or replaces a promotion.
    pub(crate) fn put(&mut self, promotion: Promotion) -> Result<(), Error> {
        if promotion.segment.nodes() > SEGMENT_NODES_MAX {
            return Err(Error::TooMany {
                what: "segment nodes",
                max: SEGMENT_NODES_MAX,
            });
        }
        if !self.promotions.contains_key(&promotion.id) && self.promotions.len() >= PROMOTIONS_MAX {
            return Err(Error::TooMany {
                what: "promotions",
                max: PROMOTIONS_MAX,
            });
        }
        self.promotions.insert(promotion.id.clone(), promotion);
        Ok(())
    }

    /// Removes a promotion; deliveries not yet made are then refused.
    pub(crate) fn remove(&mut self, id: &PromotionId) -> Result<(), Error> {
        self.promotions
            .remove(id)
            .map(|_| ())
            .ok_or_else(|| Error::UnknownPromotion(id.clone()))
    }

    pub(crate) fn promotion(&self, id: &PromotionId) -> Option<&Promotion> {
        self.promotions.get(id)
    }

    /// Who should receive the promotion now: customers in its segment who consent to its scope,
    /// have room in their quota and did not receive it yet. In the order `customers` gives.
    pub(crate) fn audience<'a>(
        &self,
        promotion: &PromotionId,
        customers: impl IntoIterator<Item = (&'a UserId, &'a CustomerProfile)>,
        now_ms: u64,
    ) -> Result<Vec<UserId>, Error> {
        let promo = self
            .promotions
            .get(promotion)
            .ok_or_else(|| Error::UnknownPromotion(promotion.clone()))?;
        Ok(customers
            .into_iter()
            .filter(|(_, profile)| promo.segment.matches(profile))
            .filter(|(customer, _)| self.may_deliver(customer, promotion, now_ms).is_ok())
            .map(|(customer, _)| customer.clone())
            .collect())
    }

    /// Whether the promotion may reach the customer now (consent, quota, not yet delivered),
    /// without counting anything.
    pub(crate) fn may_deliver(
        &self,
        customer: &UserId,
        promotion: &PromotionId,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        let promo = self
            .promotions
            .get(promotion)
            .ok_or(Refusal::UnknownPromotion)?;
        if !self.consents_to(customer, promo.scope) {
            return Err(Refusal::NoConsent);
        }
        let recent: Vec<&(u64, PromotionId)> = self
            .deliveries
            .get(customer)
            .map(|log| {
                log.iter()
                    .filter(|(at_ms, _)| self.in_window(*at_ms, now_ms))
                    .collect()
            })
            .unwrap_or_default();
        if recent.iter().any(|(_, id)| id == promotion) {
            return Err(Refusal::AlreadyDelivered);
        }
        if recent.len() >= self.quota.count_max as usize {
            // The oldest delivery in the window leaves it first.
            let oldest = recent.first().map_or(now_ms, |(at_ms, _)| *at_ms);
            return Err(Refusal::QuotaReached {
                next_ms: oldest.saturating_add(self.quota.window_ms),
            });
        }
        Ok(())
    }

    /// Checks [`Promotions::may_deliver`] and counts the delivery, in one step: call it right
    /// before handing the promotion to the customer's conversation.
    pub(crate) fn deliver(
        &mut self,
        customer: &UserId,
        promotion: &PromotionId,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        self.may_deliver(customer, promotion, now_ms)?;
        let window_ms = self.quota.window_ms;
        let log = self.deliveries.entry(customer.clone()).or_default();
        log.retain(|(at_ms, _)| now_ms.saturating_sub(*at_ms) < window_ms);
        log.push_back((now_ms, promotion.clone()));
        Ok(())
    }

    /// Deliveries to `customer` in the window ending at `now_ms`.
    pub(crate) fn delivered_in_window(&self, customer: &UserId, now_ms: u64) -> usize {
        self.deliveries.get(customer).map_or(0, |log| {
            log.iter()
                .filter(|(at_ms, _)| self.in_window(*at_ms, now_ms))
                .count()
        })
    }

    /// Drops delivery records that left the window (housekeeping; the checks ignore them anyway).
    pub(crate) fn prune(&mut self, now_ms: u64) {
        let window_ms = self.quota.window_ms;
        self.deliveries.retain(|_, log| {
            log.retain(|(at_ms, _)| now_ms.saturating_sub(*at_ms) < window_ms);
            !log.is_empty()
        });
    }

    /// A delivery at `at_ms` counts at `now_ms` if it is less than a window old. A delivery
    /// "in the future" (a clock step back) counts too: better one promotion fewer than one more.
    fn in_window(&self, at_ms: u64, now_ms: u64) -> bool {
        now_ms.saturating_sub(at_ms) < self.quota.window_ms
    }
}
