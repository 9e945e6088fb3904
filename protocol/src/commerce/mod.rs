//! Commerce on the wire: shops, catalogs, carts, orders, payments, coupons and promotions.
//!
//! Every shop request is [`crate::Request::Shop`] naming the shop and carrying one [`ShopOp`];
//! it is answered with [`crate::Response::Shop`] carrying one [`ShopReply`] (or an error). The
//! node routes it to the shop's actor, which owns the shop's state and checks who may do what
//! (customer, staff role, operator).
//!
//! The definition types here ([`ProductSpec`], [`Offer`], [`CouponSpec`], [`OrderCommand`], …)
//! are the same values the node's commerce core works with: the core validates them (lengths,
//! currencies, windows) and returns typed errors. [`ShopOp::validate`] checks the wire limits
//! (collection sizes, text lengths) first, so nothing unbounded reaches the core.
//!
//! Customers talk to a shop in the conversation [`crate::ConversationId::Shop`] (`s:<shop>:<user>`);
//! product, order and promotion messages appear there as [`CommerceBody`] messages, and order
//! status changes as [`crate::MessageUpdate::OrderStatus`] entries.

mod ids;

use serde::{Deserialize, Serialize};

pub use ids::{
    COUPON_CODE_BYTES_MAX, CatalogId, CategoryId, CommandId, CouponCode, ID_BYTES_MAX, Label,
    OfferId, OrderId, PAYMENT_ID_BYTES_MAX, PROVIDER_ID_BYTES_MAX, PaymentId, ProductId,
    PromotionId, ProviderEventId, RefundId, ShopId, VariantId,
};

use crate::{ConversationId, ErrorCode, MediaId, Money, Seq, UserId};

/// Longest shop name, quick-reply text or auto-reply in bytes.
pub const SHOP_TEXT_BYTES_MAX: usize = 4096;
/// Longest short shop field (name, category, website, address line, shortcut) in bytes.
pub const SHOP_FIELD_BYTES_MAX: usize = 256;
/// Most weekly opening windows.
pub const HOURS_WINDOWS_MAX: usize = 28;
/// Most dated exceptions to the weekly hours.
pub const HOURS_EXCEPTIONS_MAX: usize = 100;
/// Most products in one product-list message.
pub const PRODUCT_LIST_ITEMS_MAX: usize = 30;
/// Most sections in one product-list message.
pub const PRODUCT_LIST_SECTIONS_MAX: usize = 10;
/// Most products or orders in one page.
pub const COMMERCE_PAGE_MAX: u32 = 100;
/// Most terms in a wire segment (all clauses together).
pub const SEGMENT_TERMS_MAX: usize = 32;
/// Most variants of a product on the wire (the core may allow fewer).
pub const VARIANTS_WIRE_MAX: usize = 100;
/// Most options of a variant, categories or media of a product on the wire.
pub const PRODUCT_PARTS_WIRE_MAX: usize = 10;

// ------------------------------------------------------------------------------- definitions

/// A staff member's role in a shop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StaffRole {
    /// Runs the shop: everything a manager may, plus staff administration and the profile.
    Owner,
    /// Manages catalog, coupons and promotions, cancels paid orders and refunds.
    Manager,
    /// Serves customers: accepts, rejects, fulfils and delivers orders. Never moves money back.
    Agent,
}

/// A product as staff define it. Stock is set separately ([`ShopOp::SetStock`]), so editing a
/// product never touches reservations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductSpec {
    /// Its id, unique within the shop.
    pub id: ProductId,
    /// The catalog it is listed in.
    pub catalog: CatalogId,
    /// Title shown to customers.
    pub title: String,
    /// Description.
    pub description: String,
    /// The base price; variants may override it. Never negative (zero is allowed: free samples).
    pub price: Money,
    /// Categories it is in.
    pub categories: Vec<CategoryId>,
    /// Pictures (blobs uploaded by staff).
    pub media: Vec<MediaId>,
    /// Empty for a product sold as one thing; otherwise every order line names a variant.
    pub variants: Vec<VariantSpec>,
    /// Inactive products stay in the catalog but cannot be added to carts or ordered.
    pub active: bool,
}

/// One variant of a product.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariantSpec {
    /// Its id, unique within the product.
    pub id: VariantId,
    /// Title ("red / L").
    pub title: String,
    /// Option name and value pairs, e.g. `("size", "L")`.
    pub options: Vec<(String, String)>,
    /// Overrides the product's base price, in the same currency.
    pub price: Option<Money>,
}

/// A catalog or a category: a named list shown to customers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    /// Its title.
    pub title: String,
}

/// A price override (special offer, sales period) valid in `[starts_ms, ends_ms)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// Its id.
    pub id: OfferId,
    /// What it applies to.
    pub target: OfferTarget,
    /// The price it sets.
    pub price: OfferPrice,
    /// From (ms since the Unix epoch).
    pub starts_ms: u64,
    /// Until (exclusive).
    pub ends_ms: u64,
}

/// What an offer applies to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OfferTarget {
    /// Every product of the shop (a sales period).
    All,
    /// Every product of one catalog.
    Catalog(CatalogId),
    /// Every product in one category.
    Category(CategoryId),
    /// One product, all its variants.
    Product(ProductId),
    /// One variant of one product.
    Variant(ProductId, VariantId),
}

/// The price an offer sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OfferPrice {
    /// This price (only for a product or variant target: it must be in the product's currency).
    Fixed(Money),
    /// This much off, in basis points (1 % = 100). The discount is rounded to the nearest minor
    /// unit, halves in the customer's favour.
    PercentOff {
        /// 1..=10,000.
        basis_points: u16,
    },
}

/// How an order is paid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentPlan {
    /// One payment of the whole total, now.
    Full,
    /// `count` payments, the first now and one every `interval_ms` after (buy now, pay later).
    /// The total is split evenly; the first instalment carries the remainder.
    Instalments {
        /// How many payments (2..).
        count: u32,
        /// Time between two payments.
        interval_ms: u64,
    },
}

/// Where an order is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum OrderStatus {
    /// Sent by the customer; stock reserved. Waiting for the shop.
    Placed,
    /// The shop will serve it. Waiting for the customer to choose how to pay.
    Accepted,
    /// The shop refused it (closed).
    Rejected,
    /// A payment plan is chosen; waiting for the first payment.
    AwaitingPayment,
    /// Paid in full, or its first instalment: stock is sold, the shop ships.
    Paid,
    /// Shipped or handed over.
    Fulfilled,
    /// Arrived.
    Delivered,
    /// Done (still refundable).
    Completed,
    /// Cancelled by the customer or the shop (closed).
    Cancelled,
    /// Not paid in time (closed).
    Expired,
    /// Everything paid was refunded and nothing more will be charged (closed).
    Refunded,
}

impl OrderStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [OrderStatus; 11] = [
        OrderStatus::Placed,
        OrderStatus::Accepted,
        OrderStatus::Rejected,
        OrderStatus::AwaitingPayment,
        OrderStatus::Paid,
        OrderStatus::Fulfilled,
        OrderStatus::Delivered,
        OrderStatus::Completed,
        OrderStatus::Cancelled,
        OrderStatus::Expired,
        OrderStatus::Refunded,
    ];

    /// Not yet paid: stock is held, the coupon may be given back, the order may expire.
    pub fn is_unpaid(self) -> bool {
        matches!(
            self,
            OrderStatus::Placed | OrderStatus::Accepted | OrderStatus::AwaitingPayment
        )
    }

    /// Paid and not refunded: instalments run, refunds may be asked.
    pub fn is_paid(self) -> bool {
        matches!(
            self,
            OrderStatus::Paid
                | OrderStatus::Fulfilled
                | OrderStatus::Delivered
                | OrderStatus::Completed
        )
    }

    /// Closed without being served: money that still arrives is given back.
    pub fn is_closed(self) -> bool {
        matches!(
            self,
            OrderStatus::Rejected | OrderStatus::Cancelled | OrderStatus::Expired
        )
    }

    /// Nothing more will happen to the order's status.
    pub fn is_final(self) -> bool {
        self.is_closed() || matches!(self, OrderStatus::Completed | OrderStatus::Refunded)
    }

    /// A stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Placed => "placed",
            OrderStatus::Accepted => "accepted",
            OrderStatus::Rejected => "rejected",
            OrderStatus::AwaitingPayment => "awaiting_payment",
            OrderStatus::Paid => "paid",
            OrderStatus::Fulfilled => "fulfilled",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Completed => "completed",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Expired => "expired",
            OrderStatus::Refunded => "refunded",
        }
    }
}

impl std::fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A command on an existing order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderCommand {
    /// Staff accept the order.
    Accept,
    /// Staff reject the order.
    Reject {
        /// Why (shown to the customer).
        reason: String,
    },
    /// Choose how to pay; starts the first payment.
    RequestPayment {
        /// In full or in instalments.
        plan: PaymentPlan,
    },
    /// Try a declined payment again (the first one while awaiting payment, else the earliest
    /// failed instalment).
    RetryPayment,
    /// Cancel the order (customer before shipping, staff per role).
    Cancel {
        /// Why.
        reason: String,
    },
    /// Staff shipped or handed over the order.
    Fulfil {
        /// Carrier and number, or a URL.
        tracking: Option<String>,
    },
    /// The order arrived.
    MarkDelivered,
    /// The order is done.
    Complete,
    /// Refund `amount`; refunding everything refundable also stops instalments not yet charged.
    Refund {
        /// How much (partial refunds allowed).
        amount: Money,
    },
}

impl OrderCommand {
    /// A stable name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            OrderCommand::Accept => "accept",
            OrderCommand::Reject { .. } => "reject",
            OrderCommand::RequestPayment { .. } => "request payment for",
            OrderCommand::RetryPayment => "retry payment of",
            OrderCommand::Cancel { .. } => "cancel",
            OrderCommand::Fulfil { .. } => "fulfil",
            OrderCommand::MarkDelivered => "mark delivered",
            OrderCommand::Complete => "complete",
            OrderCommand::Refund { .. } => "refund",
        }
    }
}

/// What a coupon takes off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Discount {
    /// A share of the order total, in basis points (1 % = 100).
    Percent {
        /// 1..=10,000.
        basis_points: u16,
    },
    /// A fixed amount, never more than the order total.
    Amount(Money),
}

/// A coupon as staff define it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CouponSpec {
    /// The code customers type.
    pub code: CouponCode,
    /// What it takes off.
    pub discount: Discount,
    /// Valid from (ms since the Unix epoch).
    pub starts_ms: u64,
    /// Valid until (exclusive).
    pub ends_ms: u64,
    /// Most redemptions in all; `None` for no limit.
    pub total_max: Option<u32>,
    /// Most redemptions per customer; `None` for no limit.
    pub per_customer_max: Option<u32>,
    /// Smallest order total (before the discount) the coupon applies to.
    pub minimum: Option<Money>,
}

/// What a customer consents to receive from a shop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Discounts, sales and coupons.
    Offers,
    /// New products, restocks.
    Products,
    /// News about the shop.
    News,
}

/// How many promotions a customer may receive per rolling window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// At most this many promotions …
    pub count_max: u32,
    /// … per this rolling window.
    pub window_ms: u64,
}

/// Default promotion quota: at most this many per window …
pub const QUOTA_COUNT_DEFAULT: u32 = 4;
/// … of this length (30 days).
pub const QUOTA_WINDOW_MS_DEFAULT: u64 = 30 * 24 * 60 * 60 * 1000;

impl Default for Quota {
    fn default() -> Quota {
        Quota {
            count_max: QUOTA_COUNT_DEFAULT,
            window_ms: QUOTA_WINDOW_MS_DEFAULT,
        }
    }
}

/// Which customers a promotion is for, in disjunctive normal form: a customer is in the segment
/// when every term of at least one clause holds (no clause: every customer). Flat on purpose, so
/// decoding never recurses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentSpec {
    /// Any of these clauses.
    pub any: Vec<Vec<SegmentTerm>>,
}

/// One condition of a segment clause.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentTerm {
    /// The condition does *not* hold.
    pub negated: bool,
    /// The condition.
    pub atom: SegmentAtom,
}

/// A condition on a customer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SegmentAtom {
    /// The customer has this label.
    Label(Label),
    /// The customer ever paid for an order.
    PastPurchaser,
    /// The customer paid for this product.
    Purchased(ProductId),
    /// The customer asked about or was shown interest in this product.
    InterestedIn(ProductId),
}

// ---------------------------------------------------------------------------------- profile

/// A shop's public profile.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShopProfile {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Postal address.
    pub address: String,
    /// Category ("bakery", "electronics").
    pub category: String,
    /// Website.
    pub website: String,
    /// Picture (a blob the caller uploaded).
    pub avatar: Option<MediaId>,
}

/// Weekly opening hours in a time zone, with dated exceptions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hours {
    /// An IANA time zone name (`Europe/Rome`, `Asia/Tokyo`, `UTC`).
    pub time_zone: String,
    /// Opening windows per weekday.
    pub weekly: Vec<OpenWindow>,
    /// Days that differ from the weekly pattern (holidays, late openings).
    pub exceptions: Vec<HoursException>,
}

/// One opening window on a weekday, in local time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenWindow {
    /// 1 = Monday … 7 = Sunday.
    pub weekday: u8,
    /// Opens at this minute of the day (0..1440).
    pub opens_min: u16,
    /// Closes at this minute of the day (after `opens_min`, at most 1440).
    pub closes_min: u16,
}

/// A dated exception: on `date` the shop is open only in `windows` (none: closed all day).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoursException {
    /// Local date, `YYYY-MM-DD`.
    pub date: String,
    /// `(opens_min, closes_min)` windows of that day.
    pub windows: Vec<(u16, u16)>,
}

/// A canned answer staff insert with a shortcut.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuickReply {
    /// The shortcut (`/thanks`).
    pub shortcut: String,
    /// The text.
    pub text: String,
}

/// A staff member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaffMember {
    /// Who.
    pub user: UserId,
    /// Their role.
    pub role: StaffRole,
}

// --------------------------------------------------------------------------------- requests

/// One operation on a shop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShopOp {
    // --- the shop
    /// Create the shop; the caller becomes its owner. Answered with [`ShopReply::Info`].
    Create {
        /// Its profile.
        profile: ShopProfile,
    },
    /// Replace the profile (owner, manager).
    UpdateProfile {
        /// The new profile.
        profile: ShopProfile,
    },
    /// Set or clear the verified badge (node operators only).
    SetVerified {
        /// Verified or not.
        verified: bool,
    },
    /// Set (or clear) opening hours (owner, manager).
    SetHours {
        /// `None`: always open.
        hours: Option<Hours>,
    },
    /// Set the automatic messages (owner, manager): `greeting` on a customer's first contact,
    /// `away` when a customer writes outside opening hours. `None` turns one off.
    SetAutoReplies {
        /// Greeting text.
        greeting: Option<String>,
        /// Away text.
        away: Option<String>,
    },
    /// Add or replace a quick reply (staff).
    PutQuickReply(QuickReply),
    /// Remove a quick reply (staff).
    RemoveQuickReply {
        /// Its shortcut.
        shortcut: String,
    },
    /// Add, change or (with `None`) remove a staff member (owner).
    SetStaff {
        /// Who.
        user: UserId,
        /// Their role, or `None` to remove them.
        role: Option<StaffRole>,
    },
    /// Assign a customer's conversation to an agent, or unassign it (owner, manager; an agent may
    /// take an unassigned one for themselves).
    Assign {
        /// The customer.
        customer: UserId,
        /// The agent, or `None`.
        agent: Option<UserId>,
    },
    /// Add or remove a label on a customer (staff).
    LabelCustomer {
        /// The customer.
        customer: UserId,
        /// The label.
        label: Label,
        /// Add (true) or remove (false).
        add: bool,
    },
    /// The shop's profile and settings. Answered with [`ShopReply::Info`].
    Info,
    /// Staff statistics: first-response times, conversations, orders. Answered with
    /// [`ShopReply::Stats`].
    Stats,

    // --- catalog (owner, manager)
    /// Create or rename a catalog.
    PutCatalog {
        /// Its id.
        catalog: CatalogId,
        /// Its title.
        section: Section,
    },
    /// Create or rename a category.
    PutCategory {
        /// Its id.
        category: CategoryId,
        /// Its title.
        section: Section,
    },
    /// Create or replace a product.
    PutProduct(ProductSpec),
    /// Activate or deactivate a product.
    SetProductActive {
        /// Which.
        product: ProductId,
        /// Active or not.
        active: bool,
    },
    /// Set the units on hand of a product or variant (`None`: not tracked, unlimited).
    SetStock {
        /// The product.
        product: ProductId,
        /// The variant (products with variants track stock per variant).
        variant: Option<VariantId>,
        /// Units on hand.
        on_hand: Option<u32>,
    },
    /// Create or replace a special offer.
    PutOffer(Offer),
    /// Remove an offer.
    RemoveOffer {
        /// Which.
        offer: OfferId,
    },
    /// A page of products (customers see active ones only). Answered with
    /// [`ShopReply::Products`].
    Products {
        /// Only this catalog.
        catalog: Option<CatalogId>,
        /// Only this category.
        category: Option<CategoryId>,
        /// Products after this id.
        after: Option<ProductId>,
        /// At most this many, 1..=[`COMMERCE_PAGE_MAX`].
        limit: u32,
    },
    /// One product with its current price and stock. Answered with [`ShopReply::Product`].
    Product {
        /// Which.
        product: ProductId,
    },

    // --- messages into a customer's conversation
    /// Send a product message to a customer (staff).
    SendProduct {
        /// To whom.
        customer: UserId,
        /// Which product.
        product: ProductId,
    },
    /// Send a product list (up to [`PRODUCT_LIST_ITEMS_MAX`] products in sections) to a
    /// customer (staff).
    SendProductList {
        /// To whom.
        customer: UserId,
        /// Header text.
        header: String,
        /// Titled sections of product ids.
        sections: Vec<(String, Vec<ProductId>)>,
    },
    /// Ask the shop about a product (customer): a message quoting the product.
    AskAbout {
        /// Which product.
        product: ProductId,
        /// The question.
        text: String,
    },

    // --- the caller's cart
    /// Add `quantity` units to the cart.
    CartAdd {
        /// The product.
        product: ProductId,
        /// Its variant, if it has variants.
        variant: Option<VariantId>,
        /// How many (1..).
        quantity: u32,
    },
    /// Set a line's quantity (0 removes it).
    CartSet {
        /// The product.
        product: ProductId,
        /// Its variant.
        variant: Option<VariantId>,
        /// How many.
        quantity: u32,
    },
    /// Remove a line.
    CartRemove {
        /// The product.
        product: ProductId,
        /// Its variant.
        variant: Option<VariantId>,
    },
    /// Empty the cart.
    CartClear,
    /// The cart, priced now. Answered with [`ShopReply::Cart`].
    Cart,

    // --- orders
    /// Send the cart as order `order`: reserves stock, redeems the coupon, posts one order
    /// message into the customer's conversation with the shop. Retrying with the same id
    /// answers the same order. Answered with [`ShopReply::Order`].
    Checkout {
        /// The client's id for the order.
        order: OrderId,
        /// A coupon code to redeem.
        coupon: Option<CouponCode>,
    },
    /// A command on an order; `command_id` makes a retry harmless. Answered with
    /// [`ShopReply::Order`].
    Command {
        /// The order.
        order: OrderId,
        /// The client's id for this command.
        command_id: CommandId,
        /// What to do.
        command: OrderCommand,
    },
    /// One order. Answered with [`ShopReply::Order`].
    Order {
        /// Which.
        order: OrderId,
    },
    /// A page of orders: the caller's own, or (staff) everyone's. Answered with
    /// [`ShopReply::Orders`].
    Orders {
        /// Orders after this id.
        after: Option<OrderId>,
        /// At most this many, 1..=[`COMMERCE_PAGE_MAX`].
        limit: u32,
    },

    // --- coupons (owner, manager)
    /// Create or change a coupon.
    PutCoupon(CouponSpec),
    /// Enable or disable a coupon.
    SetCouponEnabled {
        /// Which.
        code: CouponCode,
        /// Enabled or not.
        enabled: bool,
    },
    /// Every coupon with its counters. Answered with [`ShopReply::Coupons`].
    Coupons,

    // --- promotions
    /// Consent to promotions of `scope` from this shop (customer).
    OptIn {
        /// Which kind.
        scope: Scope,
    },
    /// Withdraw consent; promotions already on their way are stopped (customer).
    OptOut {
        /// Which kind.
        scope: Scope,
    },
    /// The caller's consents with this shop. Answered with [`ShopReply::Consents`].
    Consents,
    /// Set the promotion quota per customer (owner, manager).
    SetQuota(Quota),
    /// Send a promotion to the customers of `segment` who consented to `scope`, within the
    /// quota (owner, manager). Answered with [`ShopReply::Promoted`].
    Promote {
        /// Its id (a retry with the same id reaches nobody twice).
        promotion: PromotionId,
        /// Its kind.
        scope: Scope,
        /// Who it is for.
        segment: SegmentSpec,
        /// The message.
        text: String,
        /// A product to show with it.
        product: Option<ProductId>,
    },
}

impl ShopOp {
    /// Checks the wire limits of the operation (the shop's actor checks the rest).
    pub fn validate(&self) -> Result<(), ErrorCode> {
        match self {
            ShopOp::Create { profile } | ShopOp::UpdateProfile { profile } => {
                check_len("name", profile.name.len(), SHOP_FIELD_BYTES_MAX)?;
                check_len(
                    "description",
                    profile.description.len(),
                    SHOP_TEXT_BYTES_MAX,
                )?;
                check_len("address", profile.address.len(), SHOP_FIELD_BYTES_MAX)?;
                check_len("category", profile.category.len(), SHOP_FIELD_BYTES_MAX)?;
                check_len("website", profile.website.len(), SHOP_FIELD_BYTES_MAX)?;
                if profile.name.trim().is_empty() {
                    return Err(ErrorCode::invalid("name", "a shop needs a name"));
                }
            }
            ShopOp::SetHours { hours: Some(hours) } => {
                check_len("time_zone", hours.time_zone.len(), SHOP_FIELD_BYTES_MAX)?;
                check_len("weekly", hours.weekly.len(), HOURS_WINDOWS_MAX)?;
                check_len("exceptions", hours.exceptions.len(), HOURS_EXCEPTIONS_MAX)?;
                for exception in &hours.exceptions {
                    check_len("date", exception.date.len(), 10)?;
                    check_len("windows", exception.windows.len(), 4)?;
                }
            }
            ShopOp::SetAutoReplies { greeting, away } => {
                for (field, text) in [("greeting", greeting), ("away", away)] {
                    if let Some(text) = text {
                        check_text(field, text, SHOP_TEXT_BYTES_MAX)?;
                    }
                }
            }
            ShopOp::PutQuickReply(reply) => {
                check_text("shortcut", &reply.shortcut, SHOP_FIELD_BYTES_MAX)?;
                check_text("text", &reply.text, SHOP_TEXT_BYTES_MAX)?;
            }
            ShopOp::RemoveQuickReply { shortcut } => {
                check_len("shortcut", shortcut.len(), SHOP_FIELD_BYTES_MAX)?;
            }
            ShopOp::PutProduct(spec) => {
                check_len("variants", spec.variants.len(), VARIANTS_WIRE_MAX)?;
                check_len("categories", spec.categories.len(), PRODUCT_PARTS_WIRE_MAX)?;
                check_len("media", spec.media.len(), PRODUCT_PARTS_WIRE_MAX)?;
                check_len("title", spec.title.len(), SHOP_FIELD_BYTES_MAX)?;
                check_len("description", spec.description.len(), SHOP_TEXT_BYTES_MAX)?;
                for variant in &spec.variants {
                    check_len("options", variant.options.len(), PRODUCT_PARTS_WIRE_MAX)?;
                }
            }
            ShopOp::PutCatalog { section, .. } | ShopOp::PutCategory { section, .. } => {
                check_text("title", &section.title, SHOP_FIELD_BYTES_MAX)?;
            }
            ShopOp::Products { limit, .. } | ShopOp::Orders { limit, .. }
                if *limit == 0 || *limit > COMMERCE_PAGE_MAX =>
            {
                return Err(ErrorCode::invalid(
                    "limit",
                    format!("must be 1..={COMMERCE_PAGE_MAX}"),
                ));
            }
            ShopOp::SendProductList {
                header, sections, ..
            } => {
                check_len("header", header.len(), SHOP_FIELD_BYTES_MAX)?;
                check_len("sections", sections.len(), PRODUCT_LIST_SECTIONS_MAX)?;
                let items: usize = sections.iter().map(|(_, products)| products.len()).sum();
                if items == 0 {
                    return Err(ErrorCode::invalid("sections", "no products"));
                }
                check_len("products", items, PRODUCT_LIST_ITEMS_MAX)?;
                for (title, _) in sections {
                    check_len("section title", title.len(), SHOP_FIELD_BYTES_MAX)?;
                }
            }
            ShopOp::AskAbout { text, .. } => {
                check_text("text", text, crate::limits::TEXT_BYTES_MAX)?;
            }
            ShopOp::CartAdd { quantity: 0, .. } => {
                return Err(ErrorCode::invalid("quantity", "must be at least 1"));
            }
            ShopOp::Promote { segment, text, .. } => {
                check_text("text", text, crate::limits::TEXT_BYTES_MAX)?;
                let terms: usize = segment.any.iter().map(Vec::len).sum();
                check_len("segment", segment.any.len() + terms, SEGMENT_TERMS_MAX)?;
            }
            ShopOp::Command { command, .. } => match command {
                OrderCommand::Reject { reason } | OrderCommand::Cancel { reason } => {
                    check_len("reason", reason.len(), SHOP_TEXT_BYTES_MAX)?;
                }
                OrderCommand::Fulfil {
                    tracking: Some(tracking),
                } => check_len("tracking", tracking.len(), SHOP_FIELD_BYTES_MAX)?,
                _ => {}
            },
            _ => {}
        }
        Ok(())
    }

    /// A stable name, for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            ShopOp::Create { .. } => "create",
            ShopOp::UpdateProfile { .. } => "update_profile",
            ShopOp::SetVerified { .. } => "set_verified",
            ShopOp::SetHours { .. } => "set_hours",
            ShopOp::SetAutoReplies { .. } => "set_auto_replies",
            ShopOp::PutQuickReply(_) => "put_quick_reply",
            ShopOp::RemoveQuickReply { .. } => "remove_quick_reply",
            ShopOp::SetStaff { .. } => "set_staff",
            ShopOp::Assign { .. } => "assign",
            ShopOp::LabelCustomer { .. } => "label_customer",
            ShopOp::Info => "info",
            ShopOp::Stats => "stats",
            ShopOp::PutCatalog { .. } => "put_catalog",
            ShopOp::PutCategory { .. } => "put_category",
            ShopOp::PutProduct(_) => "put_product",
            ShopOp::SetProductActive { .. } => "set_product_active",
            ShopOp::SetStock { .. } => "set_stock",
            ShopOp::PutOffer(_) => "put_offer",
            ShopOp::RemoveOffer { .. } => "remove_offer",
            ShopOp::Products { .. } => "products",
            ShopOp::Product { .. } => "product",
            ShopOp::SendProduct { .. } => "send_product",
            ShopOp::SendProductList { .. } => "send_product_list",
            ShopOp::AskAbout { .. } => "ask_about",
            ShopOp::CartAdd { .. } => "cart_add",
            ShopOp::CartSet { .. } => "cart_set",
            ShopOp::CartRemove { .. } => "cart_remove",
            ShopOp::CartClear => "cart_clear",
            ShopOp::Cart => "cart",
            ShopOp::Checkout { .. } => "checkout",
            ShopOp::Command { .. } => "command",
            ShopOp::Order { .. } => "order",
            ShopOp::Orders { .. } => "orders",
            ShopOp::PutCoupon(_) => "put_coupon",
            ShopOp::SetCouponEnabled { .. } => "set_coupon_enabled",
            ShopOp::Coupons => "coupons",
            ShopOp::OptIn { .. } => "opt_in",
            ShopOp::OptOut { .. } => "opt_out",
            ShopOp::Consents => "consents",
            ShopOp::SetQuota(_) => "set_quota",
            ShopOp::Promote { .. } => "promote",
        }
    }
}

fn check_len(field: &str, len: usize, max: usize) -> Result<(), ErrorCode> {
    if len > max {
        return Err(ErrorCode::TooLarge {
            what: field.to_owned(),
            limit: max as u64,
        });
    }
    Ok(())
}

fn check_text(field: &str, text: &str, max: usize) -> Result<(), ErrorCode> {
    if text.trim().is_empty() {
        return Err(ErrorCode::invalid(field, "must not be empty"));
    }
    check_len(field, text.len(), max)
}

// ---------------------------------------------------------------------------------- replies

/// The answer to a shop operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShopReply {
    /// Done; nothing else to say.
    Done,
    /// The shop's profile and settings.
    Info(ShopInfo),
    /// Staff statistics.
    Stats(ShopStats),
    /// A page of products.
    Products {
        /// Products in id order.
        products: Vec<ProductView>,
        /// Whether more follow.
        more: bool,
    },
    /// One product.
    Product(ProductView),
    /// A message was posted into a customer's conversation with the shop.
    Posted {
        /// The conversation.
        conversation: ConversationId,
        /// The message's seq.
        seq: Seq,
    },
    /// The caller's cart.
    Cart(CartView),
    /// One order.
    Order(OrderView),
    /// A page of orders.
    Orders {
        /// Orders in id order.
        orders: Vec<OrderView>,
        /// Whether more follow.
        more: bool,
    },
    /// Coupons in code order.
    Coupons(Vec<CouponView>),
    /// The caller's consents.
    Consents(Vec<ConsentView>),
    /// How a promotion went.
    Promoted(PromotionReport),
}

/// A shop's profile and settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShopInfo {
    /// The shop.
    pub shop: ShopId,
    /// Its profile.
    pub profile: ShopProfile,
    /// Verified by an operator.
    pub verified: bool,
    /// Opening hours (`None`: always open).
    pub hours: Option<Hours>,
    /// Open right now.
    pub open_now: bool,
    /// When the shop next opens or closes (within a week), for "open until 19:00".
    pub next_change_ms: Option<u64>,
    /// Greeting on first contact.
    pub greeting: Option<String>,
    /// Away message outside hours.
    pub away: Option<String>,
    /// Quick replies (staff only; empty for customers).
    pub quick_replies: Vec<QuickReply>,
    /// Staff (staff only; empty for customers).
    pub staff: Vec<StaffMember>,
    /// The caller's role, if staff.
    pub your_role: Option<StaffRole>,
}

/// Staff statistics of a shop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShopStats {
    /// Customer conversations the shop has had.
    pub conversations: u64,
    /// Customer messages still waiting for a first staff answer.
    pub awaiting_response: u64,
    /// First responses measured.
    pub first_responses: u64,
    /// Median time from a customer's message to the first staff answer, in ms.
    pub first_response_p50_ms: Option<u64>,
    /// 90th percentile of the same.
    pub first_response_p90_ms: Option<u64>,
    /// Orders per status (only statuses that have some).
    pub orders: Vec<(OrderStatus, u64)>,
    /// Assignments: agent and how many customers they hold.
    pub assignments: Vec<(UserId, u64)>,
}

/// A product with its price now and its stock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductView {
    /// Its definition.
    pub spec: ProductSpec,
    /// The effective price now (after offers), per variant in the order of `spec.variants`, or
    /// one price for a product without variants.
    pub prices: Vec<Money>,
    /// Units available per variant (same order), or one figure; `None`: not tracked.
    pub available: Vec<Option<u32>>,
}

/// A product as shown in a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductCard {
    /// The product.
    pub product: ProductId,
    /// Its title.
    pub title: String,
    /// Its price when the message was sent (the lowest, for a product with variants).
    pub price: Money,
    /// Its first picture.
    pub media: Option<MediaId>,
}

/// One priced line of a cart or order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineView {
    /// The product.
    pub product: ProductId,
    /// The variant.
    pub variant: Option<VariantId>,
    /// Title (product and variant).
    pub title: String,
    /// Units.
    pub quantity: u32,
    /// Price of one unit.
    pub unit_price: Money,
    /// `quantity × unit_price`.
    pub line_total: Money,
}

/// A cart, priced now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartView {
    /// Its lines.
    pub lines: Vec<LineView>,
    /// Sum of the lines (`None` for an empty cart).
    pub subtotal: Option<Money>,
    /// Changes with every edit (devices compare it to know they are in sync).
    pub version: u64,
}

/// Where one payment of an order is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentState {
    /// A later instalment, not yet due.
    Scheduled,
    /// Authorization asked for.
    Authorizing,
    /// Money held.
    Authorized,
    /// Capture asked for.
    Capturing,
    /// Money taken.
    Captured,
    /// Release asked for.
    Voiding,
    /// Authorization released.
    Voided,
    /// Declined or failed.
    Failed,
    /// Never charged and never will be.
    Cancelled,
}

/// One payment (the whole order, or an instalment).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentView {
    /// Its id.
    pub payment: PaymentId,
    /// Instalment number, from 1.
    pub number: u32,
    /// What it charges.
    pub amount: Money,
    /// When it is due.
    pub due_ms: u64,
    /// Where it is.
    pub state: PaymentState,
    /// Captured so far.
    pub captured: Money,
    /// Refunded so far.
    pub refunded: Money,
}

/// An order as both sides see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    /// The shop.
    pub shop: ShopId,
    /// The order.
    pub order: OrderId,
    /// Who ordered.
    pub customer: UserId,
    /// Where it is.
    pub status: OrderStatus,
    /// Its lines.
    pub lines: Vec<LineView>,
    /// Before the coupon.
    pub subtotal: Money,
    /// What the coupon took off.
    pub discount: Money,
    /// What the customer pays.
    pub total: Money,
    /// The coupon redeemed.
    pub coupon: Option<CouponCode>,
    /// When it was placed.
    pub placed_ms: u64,
    /// An unpaid order is released at this time.
    pub expires_ms: u64,
    /// Tracking reference, once fulfilled.
    pub tracking: Option<String>,
    /// Its payments, once a plan is chosen.
    pub payments: Vec<PaymentView>,
    /// The order message in the customer's conversation with the shop.
    pub message: Option<Seq>,
}

/// A coupon and its counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CouponView {
    /// Its definition.
    pub spec: CouponSpec,
    /// Enabled or not.
    pub enabled: bool,
    /// Redemptions so far (open orders included).
    pub redeemed: u32,
}

/// A customer's consent to one scope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentView {
    /// The scope.
    pub scope: Scope,
    /// Given (true) or withdrawn.
    pub granted: bool,
    /// When.
    pub at_ms: u64,
}

/// How a promotion went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionReport {
    /// Customers in the segment who consented.
    pub audience: u64,
    /// Customers it was delivered to.
    pub delivered: u64,
    /// Customers skipped because their quota was reached.
    pub over_quota: u64,
    /// Customers skipped because they withdrew consent meanwhile or already had it.
    pub skipped: u64,
}

// --------------------------------------------------------------------------------- messages

/// A commerce message in a customer's conversation with a shop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommerceBody {
    /// One product, sent by staff.
    Product {
        /// The shop.
        shop: ShopId,
        /// The product.
        product: ProductCard,
    },
    /// A list of products in sections, sent by staff.
    ProductList {
        /// The shop.
        shop: ShopId,
        /// Header text.
        header: String,
        /// Titled sections.
        sections: Vec<(String, Vec<ProductCard>)>,
    },
    /// A customer's question about a product.
    AskAbout {
        /// The shop.
        shop: ShopId,
        /// The product.
        product: ProductCard,
        /// The question.
        text: String,
    },
    /// An order the customer sent; its status changes arrive as
    /// [`crate::MessageUpdate::OrderStatus`] entries.
    Order(OrderView),
    /// A promotion the customer consented to.
    Promotion {
        /// The shop.
        shop: ShopId,
        /// The promotion.
        promotion: PromotionId,
        /// Its kind.
        scope: Scope,
        /// The text.
        text: String,
        /// A product shown with it.
        product: Option<ProductCard>,
    },
}
