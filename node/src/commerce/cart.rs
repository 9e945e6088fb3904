//! A server-side cart: one per (shop, customer), kept by the shop, so every device of the customer
//! sees the same cart. Each change bumps [`Cart::version`], which devices compare to know they are
//! current.
//!
//! A cart is a wish list: adding checks that the product exists, is on sale, matches its variant
//! and is priced in the cart's currency, but does not hold stock. Stock is checked and reserved
//! when the cart is sent as an order ([`super::shop::Shop::checkout`]), and prices are those in
//! force at that moment ([`Cart::totals`] shows them at any moment before).

use piazza_protocol::{Currency, Money, UserId};

use super::catalog::{Catalog, Item, Quote, StockKey};
use super::error::Error;

/// Most lines in a cart (distinct products or variants). WhatsApp caps a cart at 99 distinct
/// items; chat orders are small, and 50 lines keep an order message readable.
pub(crate) const CART_LINES_MAX: usize = 50;

/// Most units of one line: more is a wholesale order, which a shop handles in the conversation.
pub(crate) const LINE_QUANTITY_MAX: u32 = 999;

/// One customer's cart at one shop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cart {
    customer: UserId,
    /// In the order the customer added them.
    lines: Vec<Item>,
    version: u64,
    updated_ms: u64,
}

impl Cart {
    /// An empty cart.
    pub(crate) fn new(customer: UserId, now_ms: u64) -> Cart {
        Cart {
            customer,
            lines: Vec::new(),
            version: 0,
            updated_ms: now_ms,
        }
    }

    /// Whose cart this is.
    pub(crate) fn customer(&self) -> &UserId {
        &self.customer
    }

    /// The lines, in the order they were added.
    pub(crate) fn items(&self) -> &[Item] {
        &self.lines
    }

    /// Whether the cart has no lines.
    pub(crate) fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Bumped by every change.
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// When the cart last changed.
    pub(crate) fn updated_ms(&self) -> u64 {
        self.updated_ms
    }

    /// Adds `quantity` units of `key`, to its line if the cart has one.
    pub(crate) fn add(
        &mut self,
        catalog: &Catalog,
        key: &StockKey,
        quantity: i64,
        now_ms: u64,
    ) -> Result<(), Error> {
        let quantity = positive(quantity)?;
        let existing = self.lines.iter().position(|l| &l.key == key);
        let current = existing.map(|i| self.lines[i].quantity).unwrap_or(0);
        let total = i64::from(current) + i64::from(quantity);
        self.check_line(catalog, key, total, now_ms)?;
        if existing.is_none() && self.lines.len() >= CART_LINES_MAX {
            return Err(Error::TooMany {
                what: "cart lines",
                max: CART_LINES_MAX,
            });
        }
        let total = limited(total)?;
        match existing {
            Some(i) => self.lines[i].quantity = total,
            None => self.lines.push(Item {
                key: key.clone(),
                quantity: total,
            }),
        }
        self.touch(now_ms);
        Ok(())
    }

    /// Sets the quantity of an existing line. Zero is refused like a negative quantity: removing
    /// a line is [`Cart::remove`], so a stale "0" from another device never deletes by accident.
    pub(crate) fn set_quantity(
        &mut self,
        catalog: &Catalog,
        key: &StockKey,
        quantity: i64,
        now_ms: u64,
    ) -> Result<(), Error> {
        let quantity = positive(quantity)?;
        let index = self
            .lines
            .iter()
            .position(|l| &l.key == key)
            .ok_or(Error::NotInCart)?;
        self.check_line(catalog, key, i64::from(quantity), now_ms)?;
        self.lines[index].quantity = limited(i64::from(quantity))?;
        self.touch(now_ms);
        Ok(())
    }

    /// Removes a line.
    pub(crate) fn remove(&mut self, key: &StockKey, now_ms: u64) -> Result<(), Error> {
        let index = self
            .lines
            .iter()
            .position(|l| &l.key == key)
            .ok_or(Error::NotInCart)?;
        self.lines.remove(index);
        self.touch(now_ms);
        Ok(())
    }

    /// Empties the cart (also after a checkout).
    pub(crate) fn clear(&mut self, now_ms: u64) {
        if !self.lines.is_empty() {
            self.lines.clear();
            self.touch(now_ms);
        }
    }

    /// The lines priced at `now_ms`, with their subtotal. Fails if a line can no longer be sold
    /// (the product was deactivated or removed since it was added) or the prices now mix
    /// currencies; the customer then removes that line.
    pub(crate) fn totals(&self, catalog: &Catalog, now_ms: u64) -> Result<Quote, Error> {
        catalog.quote(&self.lines, now_ms)
    }

    /// Checks that `key` may be in this cart with `quantity` units.
    fn check_line(
        &self,
        catalog: &Catalog,
        key: &StockKey,
        quantity: i64,
        now_ms: u64,
    ) -> Result<(), Error> {
        limited(quantity)?;
        catalog.sellable(key)?;
        let price = catalog.effective_price(&key.product, key.variant.as_ref(), now_ms)?;
        if let Some(other) = self.other_currency(catalog, key, price, now_ms) {
            return Err(Error::CurrencyMix {
                expected: other,
                found: price.currency(),
            });
        }
        Ok(())
    }

    /// The currency of another line, if it differs from `price`'s. Lines that cannot be priced
    /// any more are skipped: [`Cart::totals`] reports them.
    fn other_currency(
        &self,
        catalog: &Catalog,
        key: &StockKey,
        price: Money,
        now_ms: u64,
    ) -> Option<Currency> {
        self.lines
            .iter()
            .filter(|l| &l.key != key)
            .filter_map(|l| {
                catalog
                    .effective_price(&l.key.product, l.key.variant.as_ref(), now_ms)
                    .ok()
            })
            .map(|p| p.currency())
            .find(|&c| c != price.currency())
    }

    fn touch(&mut self, now_ms: u64) {
        self.version += 1;
        self.updated_ms = self.updated_ms.max(now_ms);
    }
}

/// Refuses zero and negative quantities.
fn positive(quantity: i64) -> Result<u32, Error> {
    if quantity <= 0 {
        return Err(Error::QuantityNotPositive { quantity });
    }
    limited(quantity)
}

/// Refuses quantities over [`LINE_QUANTITY_MAX`].
fn limited(quantity: i64) -> Result<u32, Error> {
    match u32::try_from(quantity) {
        Ok(q) if q <= LINE_QUANTITY_MAX => Ok(q),
        _ => Err(Error::QuantityTooLarge {
            quantity,
            max: LINE_QUANTITY_MAX,
        }),
    }
}
