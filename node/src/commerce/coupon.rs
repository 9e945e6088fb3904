//! Coupon codes: a percentage or an amount off an order, valid in a window, with a total and a
//! per-customer redemption limit and a minimum order.
//!
//! [`Coupons::redeem`] checks and counts in one call, so the limits hold however many customers
//! race for the last redemption (the shop actor serializes calls; the state is never read and
//! written in two steps). A redemption belongs to an order: redeeming again for the same order
//! returns the same discount without counting twice, and [`Coupons::release`] gives it back when
//! the order is cancelled, rejected or expires. Once the order ships the redemption is final
//! ([`Coupons::settle`]): refunds do not give coupons back.

use std::collections::BTreeMap;

use piazza_protocol::{Money, UserId};

use super::catalog::{BASIS_POINTS_MAX, Change, check_price, percent_off, same_currency};
use super::error::Error;
use super::ids::{CouponCode, OrderId};
pub(crate) use piazza_protocol::commerce::{CouponSpec, Discount};

/// Most coupons per shop. They are checked one by one only by code (a map lookup); the bound is
/// for memory and for the coupon list staff page through.
pub(crate) const COUPONS_MAX: usize = 1000;

/// One redemption, held by an order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Redemption {
    pub(crate) code: CouponCode,
    pub(crate) customer: UserId,
    pub(crate) discount: Money,
}

/// A coupon and its counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Coupon {
    spec: CouponSpec,
    enabled: bool,
    /// Redemptions counted (open and settled).
    redeemed: u32,
    per_customer: BTreeMap<UserId, u32>,
    /// Redemptions that may still be released, by order.
    open: BTreeMap<OrderId, Redemption>,
}

impl Coupon {
    pub(crate) fn spec(&self) -> &CouponSpec {
        &self.spec
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// Redemptions counted against the total limit.
    pub(crate) fn redeemed(&self) -> u32 {
        self.redeemed
    }

    /// Redemptions counted for `customer`.
    pub(crate) fn redeemed_by(&self, customer: &UserId) -> u32 {
        self.per_customer.get(customer).copied().unwrap_or(0)
    }

    /// Orders whose redemption may still be released.
    pub(crate) fn open_orders(&self) -> impl Iterator<Item = &OrderId> {
        self.open.keys()
    }
}

/// A shop's coupons.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Coupons {
    coupons: BTreeMap<CouponCode, Coupon>,
}

impl Coupons {
    pub(crate) fn new() -> Coupons {
        Coupons::default()
    }

    /// Creates a coupon, or changes one keeping its counters (a limit lowered below the count
    /// only stops further redemptions).
    pub(crate) fn put(&mut self, spec: CouponSpec) -> Result<(), Error> {
        if spec.starts_ms >= spec.ends_ms {
            return Err(Error::InvalidField {
                field: "coupon window",
                reason: "must end after it starts",
            });
        }
        match spec.discount {
            Discount::Percent { basis_points }
                if basis_points == 0 || basis_points > BASIS_POINTS_MAX =>
            {
                return Err(Error::InvalidField {
                    field: "coupon percent",
                    reason: "must be 1..=10000 basis points",
                });
            }
            Discount::Amount(amount) if amount.minor() <= 0 => {
                return Err(Error::InvalidField {
                    field: "coupon amount",
                    reason: "must be positive",
                });
            }
            _ => {}
        }
        if spec.total_max == Some(0) || spec.per_customer_max == Some(0) {
            return Err(Error::InvalidField {
                field: "coupon limit",
                reason: "must be at least 1 (disable the coupon instead)",
            });
        }
        if let Some(minimum) = spec.minimum {
            check_price("coupon minimum", minimum)?;
            if let Discount::Amount(amount) = spec.discount {
                same_currency(amount.currency(), minimum.currency())?;
            }
        }
        match self.coupons.get_mut(&spec.code) {
            Some(coupon) => coupon.spec = spec,
            None => {
                if self.coupons.len() >= COUPONS_MAX {
                    return Err(Error::TooMany {
                        what: "coupons",
                        max: COUPONS_MAX,
                    });
                }
                self.coupons.insert(
                    spec.code.clone(),
                    Coupon {
                        spec,
                        enabled: true,
                        redeemed: 0,
                        per_customer: BTreeMap::new(),
                        open: BTreeMap::new(),
                    },
                );
            }
        }
        Ok(())
    }

    /// Enables or disables a coupon. Redemptions already made stay.
    pub(crate) fn set_enabled(&mut self, code: &CouponCode, enabled: bool) -> Result<(), Error> {
        let coupon = self
            .coupons
            .get_mut(code)
            .ok_or_else(|| Error::UnknownCoupon(code.clone()))?;
        coupon.enabled = enabled;
        Ok(())
    }

    pub(crate) fn coupon(&self, code: &CouponCode) -> Option<&Coupon> {
        self.coupons.get(code)
    }

    pub(crate) fn coupons(&self) -> impl Iterator<Item = &Coupon> {
        self.coupons.values()
    }

    /// What the coupon would take off `order_total` for `customer` at `now_ms`, without
    /// counting it (to show the discount before checkout).
    pub(crate) fn preview(
        &self,
        code: &CouponCode,
        customer: &UserId,
        order_total: Money,
        now_ms: u64,
    ) -> Result<Money, Error> {
        let coupon = self
            .coupons
            .get(code)
            .ok_or_else(|| Error::UnknownCoupon(code.clone()))?;
        check(coupon, customer, order_total, now_ms)
    }

    /// Checks every rule and counts the redemption for `order`, in one step. Redeeming again
    /// for an order that holds a redemption of this coupon returns it unchanged.
    pub(crate) fn redeem(
        &mut self,
        code: &CouponCode,
        customer: &UserId,
        order: &OrderId,
        order_total: Money,
        now_ms: u64,
    ) -> Result<(Redemption, Change), Error> {
        let coupon = self
            .coupons
            .get_mut(code)
            .ok_or_else(|| Error::UnknownCoupon(code.clone()))?;
        if let Some(existing) = coupon.open.get(order) {
            return Ok((existing.clone(), Change::Unchanged));
        }
        let discount = check(coupon, customer, order_total, now_ms)?;
        coupon.redeemed += 1;
        *coupon.per_customer.entry(customer.clone()).or_insert(0) += 1;
        let redemption = Redemption {
            code: code.clone(),
            customer: customer.clone(),
            discount,
        };
        coupon.open.insert(order.clone(), redemption.clone());
        Ok((redemption, Change::Applied))
    }

    /// Gives back the redemption `order` holds (the order was cancelled, rejected or expired).
    /// Releasing twice, or a redemption already settled, changes nothing.
    pub(crate) fn release(&mut self, code: &CouponCode, order: &OrderId) -> Change {
        let Some(coupon) = self.coupons.get_mut(code) else {
            return Change::Unchanged;
        };
        let Some(redemption) = coupon.open.remove(order) else {
            return Change::Unchanged;
        };
        coupon.redeemed = coupon.redeemed.saturating_sub(1);
        if let Some(count) = coupon.per_customer.get_mut(&redemption.customer) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                coupon.per_customer.remove(&redemption.customer);
            }
        }
        Change::Applied
    }

    /// Makes the redemption `order` holds final: it still counts, and can no longer be released.
    pub(crate) fn settle(&mut self, code: &CouponCode, order: &OrderId) -> Change {
        match self.coupons.get_mut(code) {
            Some(coupon) if coupon.open.contains_key(order) => {
                coupon.open.remove(order);
                Change::Applied
            }
            _ => Change::Unchanged,
        }
    }
}

/// Every rule of `coupon` for this redemption; the discount if it may be redeemed.
fn check(
    coupon: &Coupon,
    customer: &UserId,
    order_total: Money,
    now_ms: u64,
) -> Result<Money, Error> {
    let spec = &coupon.spec;
    let code = || spec.code.clone();
    if !coupon.enabled {
        return Err(Error::CouponDisabled(code()));
    }
    if now_ms < spec.starts_ms {
        return Err(Error::CouponNotStarted(code()));
    }
    if now_ms >= spec.ends_ms {
        return Err(Error::CouponExpired(code()));
    }
    if let Some(minimum) = spec.minimum {
        same_currency(minimum.currency(), order_total.currency())?;
        if order_total.minor() < minimum.minor() {
            return Err(Error::BelowMinimumOrder { minimum });
        }
    }
    if spec.total_max.is_some_and(|max| coupon.redeemed >= max) {
        return Err(Error::CouponExhausted(code()));
    }
    if spec
        .per_customer_max
        .is_some_and(|max| coupon.redeemed_by(customer) >= max)
    {
        return Err(Error::CouponCustomerLimit(code()));
    }
    let discount = match spec.discount {
        Discount::Percent { basis_points } => {
            let rest = percent_off(order_total, basis_points);
            order_total.checked_sub(rest)?
        }
        Discount::Amount(amount) => {
            same_currency(amount.currency(), order_total.currency())?;
            Money::new(
                amount.minor().min(order_total.minor().max(0)),
                amount.currency(),
            )
        }
    };
    Ok(discount)
}
