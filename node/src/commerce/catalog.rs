//! A shop's catalog: catalogs and categories, products with variants, prices and special offers,
//! and stock with per-order reservations.
//!
//! **Prices.** A product has a base price; a variant may override it. Offers (special offers and
//! sales periods) are price overrides valid in a half-open time window `[starts_ms, ends_ms)`:
//! a fixed price for one product or variant, or a percentage off for a product, a category, a
//! catalog or the whole shop. [`Catalog::effective_price`] is the lowest of the base price and
//! every offer valid at `now_ms`: offers never raise a price, and overlapping offers do not stack.
//!
//! **Stock.** Each sellable unit (a product without variants, or one variant) has a [`Stock`]:
//! unlimited, or tracked as units on hand and units reserved by placed orders. A reservation
//! belongs to one order and moves through
//!
//! ```text
//! reserve ──► Held ──commit──► Committed ──restore──► Restored
//!               └──release──► Released
//! ```
//!
//! `reserve` is all-or-nothing and never takes more than is free (`on_hand - reserved`), so stock
//! is never oversold; every step is idempotent per order id (repeating it changes nothing and
//! answers [`Change::Unchanged`]); a step from the wrong state is [`Error::ReservationClosed`].

use std::collections::{BTreeMap, BTreeSet};

use piazza_protocol::{Currency, Money};

use super::error::Error;
use super::ids::{CatalogId, CategoryId, OfferId, OrderId, ProductId, VariantId};
pub(crate) use piazza_protocol::commerce::{
    Offer, OfferPrice, OfferTarget, ProductSpec, Section, VariantSpec,
};

/// Most products per shop (across its catalogs). The whole catalog lives in the shop actor's
/// memory; 10,000 products with a few variants each is a few megabytes.
pub(crate) const PRODUCTS_MAX: usize = 10_000;
/// Most variants per product (sizes × colours of clothing stay well below).
pub(crate) const VARIANTS_MAX: usize = 100;
/// Most options per variant ("colour", "size", "material", …).
pub(crate) const VARIANT_OPTIONS_MAX: usize = 8;
/// Most catalogs per shop.
pub(crate) const CATALOGS_MAX: usize = 20;
/// Most categories per shop.
pub(crate) const CATEGORIES_MAX: usize = 200;
/// Most categories one product is in.
pub(crate) const PRODUCT_CATEGORIES_MAX: usize = 10;
/// Most media (pictures, videos) per product.
pub(crate) const PRODUCT_MEDIA_MAX: usize = 10;
/// Most offers per shop, valid or not. Offers are checked on every price lookup, so this also
/// bounds the cost of one [`Catalog::effective_price`].
pub(crate) const OFFERS_MAX: usize = 500;
/// Longest title (product, variant, catalog, category) in bytes.
pub(crate) const TITLE_BYTES_MAX: usize = 200;
/// Longest product description in bytes.
pub(crate) const DESCRIPTION_BYTES_MAX: usize = 4096;
/// Longest variant option name or value in bytes.
pub(crate) const OPTION_BYTES_MAX: usize = 64;
/// 100 % in basis points.
pub(crate) const BASIS_POINTS_MAX: u16 = 10_000;
/// Most held and closed reservations kept. Closed ones are only needed to answer a repeated
/// step idempotently; the shop [`Catalog::forget`]s them when it archives the order. A reserve
/// beyond this fails with [`Error::TooMany`] rather than growing without bound.
pub(crate) const RESERVATIONS_MAX: usize = 100_000;

/// The stock of one sellable unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stock {
    /// Never runs out (services, digital goods). Reservations are recorded but not counted.
    Unlimited,
    /// Counted units. Invariant: `reserved <= on_hand`.
    Tracked {
        /// Units in the shop's hands, including reserved ones. Committed sales are subtracted.
        on_hand: u32,
        /// Units held by placed, not yet paid orders.
        reserved: u32,
    },
}

impl Stock {
    /// Units free to reserve; `None` when unlimited.
    pub(crate) fn available(self) -> Option<u32> {
        match self {
            Stock::Unlimited => None,
            Stock::Tracked { on_hand, reserved } => Some(on_hand.saturating_sub(reserved)),
        }
    }
}

/// A sellable unit: a product, and its variant if it has variants.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct StockKey {
    pub(crate) product: ProductId,
    pub(crate) variant: Option<VariantId>,
}

/// A quantity of one sellable unit (a cart or order line before pricing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Item {
    pub(crate) key: StockKey,
    pub(crate) quantity: u32,
}

/// An item priced at a moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PricedItem {
    pub(crate) key: StockKey,
    /// The product's title, and the variant's after " – " if any: what the order message shows.
    pub(crate) title: String,
    pub(crate) quantity: u32,
    pub(crate) unit_price: Money,
    pub(crate) line_total: Money,
}

/// Items priced at a moment, all in one currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Quote {
    pub(crate) items: Vec<PricedItem>,
    /// The sum of the line totals; `None` only for no items.
    pub(crate) subtotal: Option<Money>,
}

/// Whether an idempotent step changed anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// The step happened now.
    Applied,
    /// The step had already happened; nothing changed.
    Unchanged,
}

/// Where an order's reservation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReservationState {
    /// Units are held (counted in `reserved`).
    Held,
    /// Units were sold: removed from `on_hand`.
    Committed,
    /// Units were given back to the free stock before being sold.
    Released,
    /// Sold units were put back on hand (a paid order cancelled before it shipped).
    Restored,
}

/// A product in the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Product {
    spec: ProductSpec,
}

impl Product {
    /// The product as staff defined it.
    pub(crate) fn spec(&self) -> &ProductSpec {
        &self.spec
    }

    fn variant(&self, id: &VariantId) -> Option<&VariantSpec> {
        self.spec.variants.iter().find(|v| &v.id == id)
    }

    fn stock_keys(&self) -> Vec<StockKey> {
        if self.spec.variants.is_empty() {
            return vec![StockKey {
                product: self.spec.id.clone(),
                variant: None,
            }];
        }
        self.spec
            .variants
            .iter()
            .map(|v| StockKey {
                product: self.spec.id.clone(),
                variant: Some(v.id.clone()),
            })
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Reservation {
    lines: BTreeMap<StockKey, u32>,
    state: ReservationState,
}

/// Everything a shop sells, and its stock.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Catalog {
    catalogs: BTreeMap<CatalogId, Section>,
    categories: BTreeMap<CategoryId, Section>,
    products: BTreeMap<ProductId, Product>,
    offers: BTreeMap<OfferId, Offer>,
    stock: BTreeMap<StockKey, Stock>,
    reservations: BTreeMap<OrderId, Reservation>,
}

impl Catalog {
    /// An empty catalog.
    pub(crate) fn new() -> Catalog {
        Catalog::default()
    }

    /// Creates or renames a catalog.
    pub(crate) fn put_catalog(&mut self, id: CatalogId, section: Section) -> Result<(), Error> {
        check_text("title", &section.title, TITLE_BYTES_MAX, false)?;
        if !self.catalogs.contains_key(&id) && self.catalogs.len() >= CATALOGS_MAX {
            return Err(Error::TooMany {
                what: "catalogs",
                max: CATALOGS_MAX,
            });
        }
        self.catalogs.insert(id, section);
        Ok(())
    }

    /// Removes an empty catalog.
    pub(crate) fn remove_catalog(&mut self, id: &CatalogId) -> Result<(), Error> {
        if !self.catalogs.contains_key(id) {
            return Err(Error::Unknown { what: "catalog" });
        }
        if self.products.values().any(|p| &p.spec.catalog == id) {
            return Err(Error::InUse { what: "catalog" });
        }
        self.catalogs.remove(id);
        Ok(())
    }

    /// Creates or renames a category.
    pub(crate) fn put_category(&mut self, id: CategoryId, section: Section) -> Result<(), Error> {
        check_text("title", &section.title, TITLE_BYTES_MAX, false)?;
        if !self.categories.contains_key(&id) && self.categories.len() >= CATEGORIES_MAX {
            return Err(Error::TooMany {
                what: "categories",
                max: CATEGORIES_MAX,
            });
        }
        self.categories.insert(id, section);
        Ok(())
    }

    /// Removes a category; its products simply leave it.
    pub(crate) fn remove_category(&mut self, id: &CategoryId) -> Result<(), Error> {
        if self.categories.remove(id).is_none() {
            return Err(Error::Unknown { what: "category" });
        }
        for product in self.products.values_mut() {
            product.spec.categories.retain(|c| c != id);
        }
        Ok(())
    }

    /// Creates or replaces a product. A new product's units start with tracked stock 0; a
    /// replaced product keeps the stock of the variants it keeps. Removing a variant that placed
    /// orders hold is refused ([`Error::InUse`]).
    pub(crate) fn put_product(&mut self, spec: ProductSpec) -> Result<(), Error> {
        self.check_product(&spec)?;
        let existing = self.products.get(&spec.id);
        if existing.is_none() && self.products.len() >= PRODUCTS_MAX {
            return Err(Error::TooMany {
                what: "products",
                max: PRODUCTS_MAX,
            });
        }
        let product = Product { spec };
        let keys: BTreeSet<StockKey> = product.stock_keys().into_iter().collect();
        let old_keys = existing.map(Product::stock_keys).unwrap_or_default();
        let dropped: Vec<StockKey> = old_keys.into_iter().filter(|k| !keys.contains(k)).collect();
        if dropped.iter().any(|k| self.held_units(k) > 0) {
            return Err(Error::InUse { what: "variant" });
        }
        for key in &dropped {
            self.stock.remove(key);
        }
        for key in keys {
            self.stock.entry(key).or_insert(Stock::Tracked {
                on_hand: 0,
                reserved: 0,
            });
        }
        self.products.insert(product.spec.id.clone(), product);
        Ok(())
    }

    /// Puts a product on sale or takes it off. Orders already placed are not affected.
    pub(crate) fn set_active(&mut self, id: &ProductId, active: bool) -> Result<(), Error> {
        let product = self
            .products
            .get_mut(id)
            .ok_or_else(|| Error::UnknownProduct(id.clone()))?;
        product.spec.active = active;
        Ok(())
    }

    /// Removes a product, refused while placed orders hold its stock.
    pub(crate) fn remove_product(&mut self, id: &ProductId) -> Result<(), Error> {
        let product = self
            .products
            .get(id)
            .ok_or_else(|| Error::UnknownProduct(id.clone()))?;
        let keys = product.stock_keys();
        if keys.iter().any(|k| self.held_units(k) > 0) {
            return Err(Error::InUse { what: "product" });
        }
        for key in &keys {
            self.stock.remove(key);
        }
        self.products.remove(id);
        Ok(())
    }

    /// The product, if it exists.
    pub(crate) fn product(&self, id: &ProductId) -> Option<&Product> {
        self.products.get(id)
    }

    /// All products, by id.
    pub(crate) fn products(&self) -> impl Iterator<Item = &Product> {
        self.products.values()
    }

    /// The products of one catalog, by id.
    pub(crate) fn products_in_catalog<'a>(
        &'a self,
        catalog: &'a CatalogId,
    ) -> impl Iterator<Item = &'a Product> + 'a {
        self.products
            .values()
            .filter(move |p| &p.spec.catalog == catalog)
    }

    /// The products in one category, by id.
    pub(crate) fn products_in_category<'a>(
        &'a self,
        category: &'a CategoryId,
    ) -> impl Iterator<Item = &'a Product> + 'a {
        self.products
            .values()
            .filter(move |p| p.spec.categories.contains(category))
    }

    /// Creates or replaces an offer.
    pub(crate) fn put_offer(&mut self, offer: Offer) -> Result<(), Error> {
        if offer.starts_ms >= offer.ends_ms {
            return Err(Error::InvalidField {
                field: "offer window",
                reason: "must end after it starts",
            });
        }
        match (&offer.target, offer.price) {
            (OfferTarget::Product(p) | OfferTarget::Variant(p, _), OfferPrice::Fixed(price)) => {
                // A fixed price is compared with the price it replaces: the variant's, or the
                // product's base price.
                let base = match &offer.target {
                    OfferTarget::Variant(_, v) => self.base_price(p, Some(v))?,
                    _ => self
                        .products
                        .get(p)
                        .map(|product| product.spec.price)
                        .ok_or_else(|| Error::UnknownProduct(p.clone()))?,
                };
                check_price("offer price", price)?;
                same_currency(base.currency(), price.currency())?;
            }
            (_, OfferPrice::Fixed(_)) => {
                return Err(Error::InvalidField {
                    field: "offer price",
                    reason: "a fixed price needs a product or variant target",
                });
            }
            (target, OfferPrice::PercentOff { basis_points }) => {
                if basis_points == 0 || basis_points > BASIS_POINTS_MAX {
                    return Err(Error::InvalidField {
                        field: "offer percent",
                        reason: "must be 1..=10000 basis points",
                    });
                }
                self.check_target(target)?;
            }
        }
        if !self.offers.contains_key(&offer.id) && self.offers.len() >= OFFERS_MAX {
            return Err(Error::TooMany {
                what: "offers",
                max: OFFERS_MAX,
            });
        }
        self.offers.insert(offer.id.clone(), offer);
        Ok(())
    }

    /// Removes an offer.
    pub(crate) fn remove_offer(&mut self, id: &OfferId) -> Result<(), Error> {
        self.offers
            .remove(id)
            .map(|_| ())
            .ok_or(Error::Unknown { what: "offer" })
    }

    /// The price of one unit at `now_ms`: the lowest of the base price and every offer valid
    /// then. Fixed offers in another currency (the product's price changed currency after the
    /// offer was made) are ignored.
    pub(crate) fn effective_price(
        &self,
        product: &ProductId,
        variant: Option<&VariantId>,
        now_ms: u64,
    ) -> Result<Money, Error> {
        let base = self.base_price(product, variant)?;
        let spec = self
            .products
            .get(product)
            .map(Product::spec)
            .ok_or_else(|| Error::UnknownProduct(product.clone()))?;
        let mut best = base;
        for offer in self.offers.values() {
            if !(offer.starts_ms <= now_ms && now_ms < offer.ends_ms) {
                continue;
            }
            let applies = match &offer.target {
                OfferTarget::All => true,
                OfferTarget::Catalog(c) => &spec.catalog == c,
                OfferTarget::Category(c) => spec.categories.contains(c),
                OfferTarget::Product(p) => p == product,
                OfferTarget::Variant(p, v) => p == product && Some(v) == variant,
            };
            if !applies {
                continue;
            }
            let price = match offer.price {
                OfferPrice::Fixed(price) if price.currency() == base.currency() => price,
                OfferPrice::Fixed(_) => continue,
                OfferPrice::PercentOff { basis_points } => percent_off(base, basis_points),
            };
            if price.minor() < best.minor() {
                best = price;
            }
        }
        Ok(best)
    }

    /// Prices `items` at `now_ms`: every product must exist and be active, every variant must
    /// match, and all prices must be in one currency.
    pub(crate) fn quote(&self, items: &[Item], now_ms: u64) -> Result<Quote, Error> {
        let mut priced = Vec::with_capacity(items.len());
        let mut subtotal: Option<Money> = None;
        for item in items {
            let product = self.sellable(&item.key)?;
            let unit_price =
                self.effective_price(&item.key.product, item.key.variant.as_ref(), now_ms)?;
            let line_total = unit_price.checked_mul(item.quantity)?;
            subtotal = Some(match subtotal {
                None => line_total,
                Some(sum) => sum.checked_add(line_total)?,
            });
            let title = match &item.key.variant {
                Some(v) => {
                    let variant = product.variant(v).map(|v| v.title.as_str()).unwrap_or("");
                    format!("{} – {}", product.spec.title, variant)
                }
                None => product.spec.title.clone(),
            };
            priced.push(PricedItem {
                key: item.key.clone(),
                title,
                quantity: item.quantity,
                unit_price,
                line_total,
            });
        }
        Ok(Quote {
            items: priced,
            subtotal,
        })
    }

    /// Checks that `key` names an existing, active product and a matching variant.
    pub(crate) fn sellable(&self, key: &StockKey) -> Result<&Product, Error> {
        let product = self.product_for(key)?;
        if !product.spec.active {
            return Err(Error::InactiveProduct(key.product.clone()));
        }
        Ok(product)
    }

    /// Sets the stock of one unit: `None` for unlimited, `Some(n)` for `n` units on hand. Tracked
    /// stock may not go below what placed orders hold.
    pub(crate) fn set_stock(&mut self, key: &StockKey, on_hand: Option<u32>) -> Result<(), Error> {
        self.product_for(key)?;
        let held = self.held_units(key);
        let stock = match on_hand {
            None => Stock::Unlimited,
            Some(on_hand) if on_hand < held => {
                return Err(Error::StockBelowReserved {
                    requested: on_hand,
                    reserved: held,
                });
            }
            Some(on_hand) => Stock::Tracked {
                on_hand,
                reserved: held,
            },
        };
        self.stock.insert(key.clone(), stock);
        Ok(())
    }

    /// The stock of one unit.
    pub(crate) fn stock(&self, key: &StockKey) -> Option<Stock> {
        self.stock.get(key).copied()
    }

    /// Every unit's stock, by key.
    pub(crate) fn stocks(&self) -> impl Iterator<Item = (&StockKey, &Stock)> {
        self.stock.iter()
    }

    /// Reserves every item for `order`, or nothing. Items naming the same unit are added up.
    /// Repeating the reservation of a held order with the same items changes nothing; with other
    /// items it is [`Error::ReservationMismatch`].
    pub(crate) fn reserve(&mut self, order: &OrderId, items: &[Item]) -> Result<Change, Error> {
        let mut lines: BTreeMap<StockKey, u32> = BTreeMap::new();
        for item in items {
            if item.quantity == 0 {
                return Err(Error::QuantityNotPositive { quantity: 0 });
            }
            let sum = lines.entry(item.key.clone()).or_insert(0);
            *sum = sum
                .checked_add(item.quantity)
                .ok_or(Error::QuantityTooLarge {
                    quantity: i64::from(*sum) + i64::from(item.quantity),
                    max: u32::MAX,
                })?;
        }
        if lines.is_empty() {
            return Err(Error::EmptyCart);
        }
        if let Some(existing) = self.reservations.get(order) {
            return match existing.state {
                ReservationState::Held if existing.lines == lines => Ok(Change::Unchanged),
                ReservationState::Held => Err(Error::ReservationMismatch(order.clone())),
                _ => Err(Error::ReservationClosed(order.clone())),
            };
        }
        if self.reservations.len() >= RESERVATIONS_MAX {
            return Err(Error::TooMany {
                what: "reservations",
                max: RESERVATIONS_MAX,
            });
        }
        // Check everything before changing anything: all or nothing.
        for (key, &requested) in &lines {
            self.product_for(key)?;
            let stock = self.stock.get(key).copied().ok_or_else(|| {
                Error::UnknownProduct(key.product.clone()) // unreachable: products have stock
            })?;
            if let Some(available) = stock.available()
                && available < requested
            {
                return Err(Error::OutOfStock {
                    product: key.product.clone(),
                    variant: key.variant.clone(),
                    requested,
                    available,
                });
            }
        }
        for (key, &quantity) in &lines {
            if let Some(Stock::Tracked { reserved, .. }) = self.stock.get_mut(key) {
                // available >= quantity was checked above, so reserved + quantity <= on_hand.
                *reserved += quantity;
            }
        }
        self.reservations.insert(
            order.clone(),
            Reservation {
                lines,
                state: ReservationState::Held,
            },
        );
        Ok(Change::Applied)
    }

    /// Gives the order's held units back to the free stock (cancel, reject, expiry).
    pub(crate) fn release(&mut self, order: &OrderId) -> Result<Change, Error> {
        self.step(
            order,
            ReservationState::Held,
            ReservationState::Released,
            |stock, quantity| {
                if let Stock::Tracked { reserved, .. } = stock {
                    *reserved = reserved.saturating_sub(quantity);
                }
            },
        )
    }

    /// Turns the order's held units into a sale: they leave `on_hand` (payment).
    pub(crate) fn commit(&mut self, order: &OrderId) -> Result<Change, Error> {
        self.step(
            order,
            ReservationState::Held,
            ReservationState::Committed,
            |stock, quantity| {
                if let Stock::Tracked { on_hand, reserved } = stock {
                    *reserved = reserved.saturating_sub(quantity);
                    *on_hand = on_hand.saturating_sub(quantity);
                }
            },
        )
    }

    /// Puts a committed order's units back on hand (a paid order cancelled before it shipped:
    /// the goods never left). Refunds after shipping do not restock; staff do that by hand.
    pub(crate) fn restore(&mut self, order: &OrderId) -> Result<Change, Error> {
        self.step(
            order,
            ReservationState::Committed,
            ReservationState::Restored,
            |stock, quantity| {
                if let Stock::Tracked { on_hand, .. } = stock {
                    *on_hand = on_hand.saturating_add(quantity);
                }
            },
        )
    }

    /// Where the order's reservation is, if it has one.
    pub(crate) fn reservation(&self, order: &OrderId) -> Option<ReservationState> {
        self.reservations.get(order).map(|r| r.state)
    }

    /// The units of the order's reservation, by unit.
    pub(crate) fn reserved_lines(&self, order: &OrderId) -> Option<&BTreeMap<StockKey, u32>> {
        self.reservations.get(order).map(|r| &r.lines)
    }

    /// Drops a closed reservation (the order is archived); a held one is kept (returns false).
    pub(crate) fn forget(&mut self, order: &OrderId) -> bool {
        match self.reservations.get(order) {
            Some(r) if r.state != ReservationState::Held => {
                self.reservations.remove(order);
                true
            }
            _ => false,
        }
    }

    fn step(
        &mut self,
        order: &OrderId,
        from: ReservationState,
        to: ReservationState,
        apply: impl Fn(&mut Stock, u32),
    ) -> Result<Change, Error> {
        let reservation = self
            .reservations
            .get_mut(order)
            .ok_or_else(|| Error::UnknownReservation(order.clone()))?;
        if reservation.state == to {
            return Ok(Change::Unchanged);
        }
        if reservation.state != from {
            return Err(Error::ReservationClosed(order.clone()));
        }
        for (key, &quantity) in &reservation.lines {
            // A unit whose product was removed has no stock left to adjust; that is only
            // possible for closed reservations (removal is refused while units are held), so
            // `commit` and `release` always find theirs.
            if let Some(stock) = self.stock.get_mut(key) {
                apply(stock, quantity);
            }
        }
        reservation.state = to;
        Ok(Change::Applied)
    }

    /// Units of `key` held by reservations.
    fn held_units(&self, key: &StockKey) -> u32 {
        self.reservations
            .values()
            .filter(|r| r.state == ReservationState::Held)
            .filter_map(|r| r.lines.get(key))
            .fold(0u32, |sum, &q| sum.saturating_add(q))
    }

    fn product_for(&self, key: &StockKey) -> Result<&Product, Error> {
        let product = self
            .products
            .get(&key.product)
            .ok_or_else(|| Error::UnknownProduct(key.product.clone()))?;
        match (&key.variant, product.spec.variants.is_empty()) {
            (None, true) => Ok(product),
            (None, false) => Err(Error::VariantRequired(key.product.clone())),
            (Some(_), true) => Err(Error::VariantNotExpected(key.product.clone())),
            (Some(v), false) => match product.variant(v) {
                Some(_) => Ok(product),
                None => Err(Error::UnknownVariant {
                    product: key.product.clone(),
                    variant: v.clone(),
                }),
            },
        }
    }

    fn base_price(&self, product: &ProductId, variant: Option<&VariantId>) -> Result<Money, Error> {
        let key = StockKey {
            product: product.clone(),
            variant: variant.cloned(),
        };
        let found = self.product_for(&key)?;
        Ok(variant
            .and_then(|v| found.variant(v))
            .and_then(|v| v.price)
            .unwrap_or(found.spec.price))
    }

    fn check_target(&self, target: &OfferTarget) -> Result<(), Error> {
        match target {
            OfferTarget::All => Ok(()),
            OfferTarget::Catalog(c) if self.catalogs.contains_key(c) => Ok(()),
            OfferTarget::Catalog(_) => Err(Error::Unknown { what: "catalog" }),
            OfferTarget::Category(c) if self.categories.contains_key(c) => Ok(()),
            OfferTarget::Category(_) => Err(Error::Unknown { what: "category" }),
            OfferTarget::Product(p) => self
                .products
                .get(p)
                .map(|_| ())
                .ok_or_else(|| Error::UnknownProduct(p.clone())),
            OfferTarget::Variant(p, v) => self
                .product_for(&StockKey {
                    product: p.clone(),
                    variant: Some(v.clone()),
                })
                .map(|_| ()),
        }
    }

    fn check_product(&self, spec: &ProductSpec) -> Result<(), Error> {
        check_text("title", &spec.title, TITLE_BYTES_MAX, false)?;
        check_text(
            "description",
            &spec.description,
            DESCRIPTION_BYTES_MAX,
            true,
        )?;
        check_price("price", spec.price)?;
        if !self.catalogs.contains_key(&spec.catalog) {
            return Err(Error::Unknown { what: "catalog" });
        }
        if spec.categories.len() > PRODUCT_CATEGORIES_MAX {
            return Err(Error::TooMany {
                what: "categories of a product",
                max: PRODUCT_CATEGORIES_MAX,
            });
        }
        if let Some(_missing) = spec
            .categories
            .iter()
            .find(|c| !self.categories.contains_key(c))
        {
            return Err(Error::Unknown { what: "category" });
        }
        if spec.media.len() > PRODUCT_MEDIA_MAX {
            return Err(Error::TooMany {
                what: "media of a product",
                max: PRODUCT_MEDIA_MAX,
            });
        }
        if spec.variants.len() > VARIANTS_MAX {
            return Err(Error::TooMany {
                what: "variants",
                max: VARIANTS_MAX,
            });
        }
        let mut ids = BTreeSet::new();
        for variant in &spec.variants {
            if !ids.insert(&variant.id) {
                return Err(Error::InvalidField {
                    field: "variant id",
                    reason: "duplicate",
                });
            }
            check_text("variant title", &variant.title, TITLE_BYTES_MAX, false)?;
            if variant.options.len() > VARIANT_OPTIONS_MAX {
                return Err(Error::TooMany {
                    what: "variant options",
                    max: VARIANT_OPTIONS_MAX,
                });
            }
            for (name, value) in &variant.options {
                check_text("option name", name, OPTION_BYTES_MAX, false)?;
                check_text("option value", value, OPTION_BYTES_MAX, false)?;
            }
            if let Some(price) = variant.price {
                check_price("variant price", price)?;
                same_currency(spec.price.currency(), price.currency())?;
            }
        }
        Ok(())
    }
}

/// `price` minus `basis_points` of it, the discount rounded half up (in the customer's favour).
pub(crate) fn percent_off(price: Money, basis_points: u16) -> Money {
    let bp = i128::from(basis_points.min(BASIS_POINTS_MAX));
    let minor = i128::from(price.minor());
    let discount = (minor * bp + 5_000) / 10_000;
    // 0 <= discount <= minor for non-negative prices, so the difference fits in an i64.
    let rest = i64::try_from(minor - discount).unwrap_or(0);
    Money::new(rest, price.currency())
}

/// Refuses negative amounts.
pub(crate) fn check_price(field: &'static str, price: Money) -> Result<(), Error> {
    if price.minor() < 0 {
        return Err(Error::InvalidField {
            field,
            reason: "must not be negative",
        });
    }
    Ok(())
}

/// Refuses two different currencies.
pub(crate) fn same_currency(expected: Currency, found: Currency) -> Result<(), Error> {
    if expected != found {
        return Err(Error::CurrencyMix { expected, found });
    }
    Ok(())
}

/// Refuses text over `max` bytes, and empty text unless `may_be_empty`.
pub(crate) fn check_text(
    field: &'static str,
    text: &str,
    max: usize,
    may_be_empty: bool,
) -> Result<(), Error> {
    if !may_be_empty && text.trim().is_empty() {
        return Err(Error::InvalidField {
            field,
            reason: "must not be empty",
        });
    }
    if text.len() > max {
        return Err(Error::InvalidField {
            field,
            reason: "too long",
        });
    }
    Ok(())
}
