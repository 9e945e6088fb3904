//! Commerce in the SDK: every shop operation is one [`Request::Shop`] naming the shop and carrying
//! one [`ShopOp`], answered with one [`ShopReply`]. [`Client::shop`] sends any operation; the
//! other methods here build the operation for the common flows and unpack the one reply variant
//! they expect (anything else is a [`ClientError::Protocol`]).
//!
//! Customers talk to a shop in the conversation `ConversationId::Shop { shop, customer }`
//! (`s:<shop>:<customer>`): send text there with [`Client::send`] and
//! `ConversationRef::Id(..)`, read it with [`Client::history`]. Product, order and promotion
//! messages arrive there as [`crate::MessageBody::Commerce`] and order changes as
//! [`crate::MessageUpdate::Order`] entries, through [`Client::next_event`] and
//! [`Client::sync`] like any other message.
//!
//! **Retries after a lost connection.** Operations that name what they change absolutely (put,
//! set, remove, a checkout under its order id, a command under its command id, a promotion under
//! its id) are sent again on the new connection, like sends. Creating a shop, adding to a cart
//! (which adds the quantity again) and posting product messages (which carry no id) are not: they
//! fail with [`ClientError::ConnectionLost`] and the caller checks before trying again.

use std::str::FromStr;
use std::sync::atomic::Ordering;

use piazza_protocol::commerce::{
    CartView, CatalogId, CategoryId, CommandId, ConsentView, CouponCode, CouponSpec, CouponView,
    Hours, Label, Offer, OfferId, OrderCommand, OrderId, OrderView, ProductId, ProductSpec,
    ProductView, PromotionId, PromotionReport, QuickReply, Quota, Scope, Section, SegmentSpec,
    ShopId, ShopInfo, ShopOp, ShopProfile, ShopReply, ShopStats, StaffRole, VariantId,
};
use piazza_protocol::{ConversationId, IdError, Request, Response, Seq, UserId};

use super::{Client, Retry};
use crate::error::ClientError;
use crate::transport;

/// A message a shop operation posted into a customer's conversation with the shop (product
/// cards, product lists, questions about a product).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posted {
    /// The conversation, `s:<shop>:<customer>`.
    pub conversation: ConversationId,
    /// The message's seq there.
    pub seq: Seq,
}

/// A page of products ([`Client::products`]) or orders ([`Client::orders`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// The items, in id order.
    pub items: Vec<T>,
    /// Whether more follow: ask again with `after` set to the last item's id.
    pub more: bool,
}

/// Which products [`Client::products`] lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProductFilter {
    /// Only this catalog.
    pub catalog: Option<CatalogId>,
    /// Only this category.
    pub category: Option<CategoryId>,
}

impl Client {
    /// Sends one operation to `shop` and returns the node's reply, whatever its variant. The
    /// typed methods below are shorthands for this. The operation's wire limits are checked
    /// before anything is sent ([`ShopOp::validate`]; a violation is [`ClientError::Invalid`]).
    pub async fn shop(&self, shop: &ShopId, op: ShopOp) -> Result<ShopReply, ClientError> {
        let what = op.name();
        let retry = retry_of(&op);
        let request = Request::Shop {
            shop: shop.clone(),
            op,
        };
        match self.call(request, retry).await? {
            Response::Shop(reply) => Ok(*reply),
            other => Err(transport::unexpected(what, &other)),
        }
    }

    /// A fresh order id for [`Client::checkout`]: `o-<salt>-<counter>`, unique across this
    /// process and (with overwhelming probability) across processes. Keep it until the checkout
    /// is answered: checking out again with the same id answers the same order instead of
    /// placing a second one.
    pub fn new_order_id(&self) -> OrderId {
        self.new_commerce_id("o")
    }

    /// A fresh command id for [`Client::order_command`], unique like [`Client::new_order_id`].
    /// Repeating a command with the same id changes nothing and answers the original outcome.
    pub fn new_command_id(&self) -> CommandId {
        self.new_commerce_id("c")
    }

    fn new_commerce_id<T: FromStr<Err = IdError>>(&self, prefix: &str) -> T {
        let counter = self.msg_ids.counter.fetch_add(1, Ordering::Relaxed);
        #[allow(clippy::expect_used)]
        // Holds: a one-letter prefix, 16 hex digits, at most 20 decimal digits and two dashes are
        // id characters within ID_BYTES_MAX, which every commerce id type accepts;
        // `generated_commerce_ids_are_valid` checks the longest.
        commerce_id(prefix, self.msg_ids.salt, counter)
            .parse()
            .expect("generated commerce id is valid")
    }

    // ------------------------------------------------------------------------------ the shop

    /// Creates `shop` with the caller as its owner and returns its settings. Not retried after a
    /// lost connection (a second attempt would find the shop taken).
    pub async fn create_shop(
        &self,
        shop: &ShopId,
        profile: ShopProfile,
    ) -> Result<ShopInfo, ClientError> {
        match self.shop(shop, ShopOp::Create { profile }).await? {
            ShopReply::Info(info) => Ok(info),
            other => Err(unexpected_reply("create", &other)),
        }
    }

    /// The shop's profile and settings (staff also see quick replies and staff).
    pub async fn shop_info(&self, shop: &ShopId) -> Result<ShopInfo, ClientError> {
        match self.shop(shop, ShopOp::Info).await? {
            ShopReply::Info(info) => Ok(info),
            other => Err(unexpected_reply("info", &other)),
        }
    }

    /// Staff statistics: conversations, first-response times, orders per status, assignments.
    pub async fn shop_stats(&self, shop: &ShopId) -> Result<ShopStats, ClientError> {
        match self.shop(shop, ShopOp::Stats).await? {
            ShopReply::Stats(stats) => Ok(stats),
            other => Err(unexpected_reply("stats", &other)),
        }
    }

    /// Replaces the shop's profile (owner, manager). Every field is replaced: read
    /// [`Client::shop_info`] first to change only some.
    pub async fn update_shop_profile(
        &self,
        shop: &ShopId,
        profile: ShopProfile,
    ) -> Result<(), ClientError> {
        self.shop_done(shop, ShopOp::UpdateProfile { profile })
            .await
    }

    /// Sets or clears the verified badge (node operators only).
    pub async fn set_verified(&self, shop: &ShopId, verified: bool) -> Result<(), ClientError> {
        self.shop_done(shop, ShopOp::SetVerified { verified }).await
    }

    /// Sets the opening hours, or with `None` makes the shop always open (owner, manager).
    pub async fn set_hours(&self, shop: &ShopId, hours: Option<Hours>) -> Result<(), ClientError> {
        self.shop_done(shop, ShopOp::SetHours { hours }).await
    }

    /// Sets the greeting (sent on a customer's first contact) and the away message (sent when a
    /// customer writes outside opening hours); `None` turns one off (owner, manager).
    pub async fn set_auto_replies(
        &self,
        shop: &ShopId,
        greeting: Option<String>,
        away: Option<String>,
    ) -> Result<(), ClientError> {
        self.shop_done(shop, ShopOp::SetAutoReplies { greeting, away })
            .await
    }

    /// Adds or replaces the quick reply `shortcut` (staff).
    pub async fn put_quick_reply(
        &self,
        shop: &ShopId,
        shortcut: impl Into<String>,
        text: impl Into<String>,
    ) -> Result<(), ClientError> {
        let reply = QuickReply {
            shortcut: shortcut.into(),
            text: text.into(),
        };
        self.shop_done(shop, ShopOp::PutQuickReply(reply)).await
    }

    /// Removes the quick reply `shortcut` (staff).
    pub async fn remove_quick_reply(
        &self,
        shop: &ShopId,
        shortcut: impl Into<String>,
    ) -> Result<(), ClientError> {
        let shortcut = shortcut.into();
        self.shop_done(shop, ShopOp::RemoveQuickReply { shortcut })
            .await
    }

    /// Gives `user` a staff role, or with `None` removes them from the staff (owner).
    pub async fn set_staff(
        &self,
        shop: &ShopId,
        user: UserId,
        role: Option<StaffRole>,
    ) -> Result<(), ClientError> {
        self.shop_done(shop, ShopOp::SetStaff { user, role }).await
    }

    /// Assigns a customer's conversation to `agent`, or with `None` unassigns it (owner and
    /// manager; an agent may take an unassigned customer for themselves).
    pub async fn assign(
        &self,
        shop: &ShopId,
        customer: UserId,
        agent: Option<UserId>,
    ) -> Result<(), ClientError> {
        self.shop_done(shop, ShopOp::Assign { customer, agent })
            .await
    }

    /// Adds (`add`) or removes a label on a customer (staff). Promotions can target labels.
    pub async fn label_customer(
        &self,
        shop: &ShopId,
        customer: UserId,
        label: Label,
        add: bool,
    ) -> Result<(), ClientError> {
        let op = ShopOp::LabelCustomer {
            customer,
            label,
            add,
        };
        self.shop_done(shop, op).await
    }

    // ------------------------------------------------------------------------------- catalog

    /// Creates or renames a catalog (owner, manager).
    pub async fn put_catalog(
        &self,
        shop: &ShopId,
        catalog: CatalogId,
        title: impl Into<String>,
    ) -> Result<(), ClientError> {
        let section = Section {
            title: title.into(),
        };
        self.shop_done(shop, ShopOp::PutCatalog { catalog, section })
            .await
    }

    /// Creates or renames a category (owner, manager).
    pub async fn put_category(
        &self,
        shop: &ShopId,
        category: CategoryId,
        title: impl Into<String>,
    ) -> Result<(), ClientError> {
        let section = Section {
            title: title.into(),
        };
        self.shop_done(shop, ShopOp::PutCategory { category, section })
            .await
    }

    /// Creates or replaces a product (owner, manager). Its stock is set separately
    /// ([`Client::set_stock`]), so replacing a product never touches reservations.
    pub async fn put_product(&self, shop: &ShopId, spec: ProductSpec) -> Result<(), ClientError> {
        self.shop_done(shop, ShopOp::PutProduct(spec)).await
    }

    /// Activates or deactivates a product (owner, manager): inactive products stay listed for
    /// staff but cannot be added to carts or ordered.
    pub async fn set_product_active(
        &self,
        shop: &ShopId,
        product: ProductId,
        active: bool,
    ) -> Result<(), ClientError> {
        self.shop_done(shop, ShopOp::SetProductActive { product, active })
            .await
    }

    /// Sets the units on hand of a product, or of one variant of a product with variants; `None`
    /// stops tracking stock (unlimited) (owner, manager).
    pub async fn set_stock(
        &self,
        shop: &ShopId,
        product: ProductId,
        variant: Option<VariantId>,
        on_hand: Option<u32>,
    ) -> Result<(), ClientError> {
        let op = ShopOp::SetStock {
            product,
            variant,
            on_hand,
        };
        self.shop_done(shop, op).await
    }

    /// Creates or replaces a special offer (owner, manager).
    pub async fn put_offer(&self, shop: &ShopId, offer: Offer) -> Result<(), ClientError> {
        self.shop_done(shop, ShopOp::PutOffer(offer)).await
    }

    /// Removes an offer (owner, manager).
    pub async fn remove_offer(&self, shop: &ShopId, offer: OfferId) -> Result<(), ClientError> {
        self.shop_done(shop, ShopOp::RemoveOffer { offer }).await
    }

    /// A page of up to `limit` (1..=100) products after `after`, with their prices now and stock
    /// (customers see active products only).
    pub async fn products(
        &self,
        shop: &ShopId,
        filter: ProductFilter,
        after: Option<ProductId>,
        limit: u32,
    ) -> Result<Page<ProductView>, ClientError> {
        let op = ShopOp::Products {
            catalog: filter.catalog,
            category: filter.category,
            after,
            limit,
        };
        match self.shop(shop, op).await? {
            ShopReply::Products { products, more } => Ok(Page {
                items: products,
                more,
            }),
            other => Err(unexpected_reply("products", &other)),
        }
    }

    /// One product with its price now and its stock.
    pub async fn product(
        &self,
        shop: &ShopId,
        product: ProductId,
    ) -> Result<ProductView, ClientError> {
        match self.shop(shop, ShopOp::Product { product }).await? {
            ShopReply::Product(view) => Ok(view),
            other => Err(unexpected_reply("product", &other)),
        }
    }

    // ------------------------------------------------------------------------------ messages

    /// Sends a product card into a customer's conversation with the shop (staff). Not retried
    /// after a lost connection.
    pub async fn send_product(
        &self,
        shop: &ShopId,
        customer: UserId,
        product: ProductId,
    ) -> Result<Posted, ClientError> {
        self.shop_posted(shop, ShopOp::SendProduct { customer, product })
            .await
    }

    /// Sends a list of products in titled sections (at most 30 products in 10 sections) into a
    /// customer's conversation with the shop (staff). Not retried after a lost connection.
    pub async fn send_product_list(
        &self,
        shop: &ShopId,
        customer: UserId,
        header: impl Into<String>,
        sections: Vec<(String, Vec<ProductId>)>,
    ) -> Result<Posted, ClientError> {
        let op = ShopOp::SendProductList {
            customer,
            header: header.into(),
            sections,
        };
        self.shop_posted(shop, op).await
    }

    /// Asks the shop about a product (customer): a message quoting the product, in the caller's
    /// conversation with the shop. Not retried after a lost connection.
    pub async fn ask_about(
        &self,
        shop: &ShopId,
        product: ProductId,
        text: impl Into<String>,
    ) -> Result<Posted, ClientError> {
        let op = ShopOp::AskAbout {
            product,
            text: text.into(),
        };
        self.shop_posted(shop, op).await
    }

    // ---------------------------------------------------------------------------------- cart

    /// Adds `quantity` (1..) units to the caller's cart and returns the cart. Not retried after
    /// a lost connection (it would add them twice); [`Client::cart_set`] is.
    pub async fn cart_add(
        &self,
        shop: &ShopId,
        product: ProductId,
        variant: Option<VariantId>,
        quantity: u32,
    ) -> Result<CartView, ClientError> {
        let op = ShopOp::CartAdd {
            product,
            variant,
            quantity,
        };
        self.shop_cart_change(shop, op).await
    }

    /// Sets the quantity of a cart line (0 removes it) and returns the cart.
    pub async fn cart_set(
        &self,
        shop: &ShopId,
        product: ProductId,
        variant: Option<VariantId>,
        quantity: u32,
    ) -> Result<CartView, ClientError> {
        let op = ShopOp::CartSet {
            product,
            variant,
            quantity,
        };
        self.shop_cart_change(shop, op).await
    }

    /// Removes a cart line and returns the cart.
    pub async fn cart_remove(
        &self,
        shop: &ShopId,
        product: ProductId,
        variant: Option<VariantId>,
    ) -> Result<CartView, ClientError> {
        self.shop_cart_change(shop, ShopOp::CartRemove { product, variant })
            .await
    }

    /// Empties the caller's cart and returns it.
    pub async fn cart_clear(&self, shop: &ShopId) -> Result<CartView, ClientError> {
        self.shop_cart_change(shop, ShopOp::CartClear).await
    }

    /// The caller's cart, priced now.
    pub async fn cart(&self, shop: &ShopId) -> Result<CartView, ClientError> {
        match self.shop(shop, ShopOp::Cart).await? {
            ShopReply::Cart(cart) => Ok(cart),
            other => Err(unexpected_reply("cart", &other)),
        }
    }

    // -------------------------------------------------------------------------------- orders

    /// Sends the caller's cart as order `order` (from [`Client::new_order_id`]), redeeming
    /// `coupon`: stock is reserved and an order message is posted into the caller's conversation
    /// with the shop. Checking out again with the same id answers the same order, so this is
    /// retried after a lost connection.
    pub async fn checkout(
        &self,
        shop: &ShopId,
        order: OrderId,
        coupon: Option<CouponCode>,
    ) -> Result<OrderView, ClientError> {
        self.shop_order(shop, ShopOp::Checkout { order, coupon })
            .await
    }

    /// Runs `command` on an order (who may run which depends on the caller: the customer, or a
    /// staff role) and returns the order after it. `command_id` (from
    /// [`Client::new_command_id`]) makes a repeat harmless: the same id answers the original
    /// outcome.
    pub async fn order_command(
        &self,
        shop: &ShopId,
        order: OrderId,
        command_id: CommandId,
        command: OrderCommand,
    ) -> Result<OrderView, ClientError> {
        let op = ShopOp::Command {
            order,
            command_id,
            command,
        };
        self.shop_order(shop, op).await
    }

    /// One order (the caller's own, or any, for staff).
    pub async fn order(&self, shop: &ShopId, order: OrderId) -> Result<OrderView, ClientError> {
        self.shop_order(shop, ShopOp::Order { order }).await
    }

    /// A page of up to `limit` (1..=100) orders after `after`: the caller's own, or everyone's
    /// for staff.
    pub async fn orders(
        &self,
        shop: &ShopId,
        after: Option<OrderId>,
        limit: u32,
    ) -> Result<Page<OrderView>, ClientError> {
        match self.shop(shop, ShopOp::Orders { after, limit }).await? {
            ShopReply::Orders { orders, more } => Ok(Page {
                items: orders,
                more,
            }),
            other => Err(unexpected_reply("orders", &other)),
        }
    }

    // ------------------------------------------------------------------------------- coupons

    /// Creates or changes a coupon (owner, manager).
    pub async fn put_coupon(&self, shop: &ShopId, spec: CouponSpec) -> Result<(), ClientError> {
        self.shop_done(shop, ShopOp::PutCoupon(spec)).await
    }

    /// Enables or disables a coupon (owner, manager).
    pub async fn set_coupon_enabled(
        &self,
        shop: &ShopId,
        code: CouponCode,
        enabled: bool,
    ) -> Result<(), ClientError> {
        self.shop_done(shop, ShopOp::SetCouponEnabled { code, enabled })
            .await
    }

    /// Every coupon of the shop with its counters, in code order (owner, manager).
    pub async fn coupons(&self, shop: &ShopId) -> Result<Vec<CouponView>, ClientError> {
        match self.shop(shop, ShopOp::Coupons).await? {
            ShopReply::Coupons(coupons) => Ok(coupons),
            other => Err(unexpected_reply("coupons", &other)),
        }
    }

    // ---------------------------------------------------------------------------- promotions

    /// Consents to promotions of `scope` from the shop (customer).
    pub async fn opt_in(&self, shop: &ShopId, scope: Scope) -> Result<(), ClientError> {
        self.shop_done(shop, ShopOp::OptIn { scope }).await
    }

    /// Withdraws consent to promotions of `scope`; promotions already on their way to the caller
    /// are stopped (customer).
    pub async fn opt_out(&self, shop: &ShopId, scope: Scope) -> Result<(), ClientError> {
        self.shop_done(shop, ShopOp::OptOut { scope }).await
    }

    /// The caller's consents with the shop.
    pub async fn consents(&self, shop: &ShopId) -> Result<Vec<ConsentView>, ClientError> {
        match self.shop(shop, ShopOp::Consents).await? {
            ShopReply::Consents(consents) => Ok(consents),
            other => Err(unexpected_reply("consents", &other)),
        }
    }

    /// Sets how many promotions one customer may receive per rolling window (owner, manager).
    pub async fn set_quota(&self, shop: &ShopId, quota: Quota) -> Result<(), ClientError> {
        self.shop_done(shop, ShopOp::SetQuota(quota)).await
    }

    /// Sends promotion `promotion` to the customers of `segment` who consented to `scope`,
    /// within their quota, optionally showing `product` (owner, manager). Repeating it with the
    /// same id reaches nobody twice, so it is retried after a lost connection.
    pub async fn promote(
        &self,
        shop: &ShopId,
        promotion: PromotionId,
        scope: Scope,
        segment: SegmentSpec,
        text: impl Into<String>,
        product: Option<ProductId>,
    ) -> Result<PromotionReport, ClientError> {
        let op = ShopOp::Promote {
            promotion,
            scope,
            segment,
            text: text.into(),
            product,
        };
        match self.shop(shop, op).await? {
            ShopReply::Promoted(report) => Ok(report),
            other => Err(unexpected_reply("promote", &other)),
        }
    }

    // ------------------------------------------------------------------------------- helpers

    async fn shop_done(&self, shop: &ShopId, op: ShopOp) -> Result<(), ClientError> {
        let what = op.name();
        match self.shop(shop, op).await? {
            ShopReply::Done => Ok(()),
            other => Err(unexpected_reply(what, &other)),
        }
    }

    async fn shop_posted(&self, shop: &ShopId, op: ShopOp) -> Result<Posted, ClientError> {
        let what = op.name();
        match self.shop(shop, op).await? {
            ShopReply::Posted { conversation, seq } => Ok(Posted { conversation, seq }),
            other => Err(unexpected_reply(what, &other)),
        }
    }

    async fn shop_order(&self, shop: &ShopId, op: ShopOp) -> Result<OrderView, ClientError> {
        let what = op.name();
        match self.shop(shop, op).await? {
            ShopReply::Order(order) => Ok(order),
            other => Err(unexpected_reply(what, &other)),
        }
    }

    /// A cart change answered with the cart after it, or (a node that answers only `Done`) read
    /// right after it.
    async fn shop_cart_change(&self, shop: &ShopId, op: ShopOp) -> Result<CartView, ClientError> {
        let what = op.name();
        match self.shop(shop, op).await? {
            ShopReply::Cart(cart) => Ok(cart),
            ShopReply::Done => self.cart(shop).await,
            other => Err(unexpected_reply(what, &other)),
        }
    }
}

/// Whether `op` may be sent again after the connection broke while it was in flight: only if
/// doing it twice is the same as doing it once.
pub(super) fn retry_of(op: &ShopOp) -> Retry {
    match op {
        // A second create finds the shop taken; a second add adds the quantity again; product
        // messages carry no id the node could deduplicate them by.
        ShopOp::Create { .. }
        | ShopOp::CartAdd { .. }
        | ShopOp::SendProduct { .. }
        | ShopOp::SendProductList { .. }
        | ShopOp::AskAbout { .. } => Retry::Never,
        // Reads; absolute puts, sets and removals; and the operations deduplicated by an id the
        // client chose (checkout by order id, commands by command id, promotions by their id).
        ShopOp::UpdateProfile { .. }
        | ShopOp::SetVerified { .. }
        | ShopOp::SetHours { .. }
        | ShopOp::SetAutoReplies { .. }
        | ShopOp::PutQuickReply(_)
        | ShopOp::RemoveQuickReply { .. }
        | ShopOp::SetStaff { .. }
        | ShopOp::Assign { .. }
        | ShopOp::LabelCustomer { .. }
        | ShopOp::Info
        | ShopOp::Stats
        | ShopOp::PutCatalog { .. }
        | ShopOp::PutCategory { .. }
        | ShopOp::PutProduct(_)
        | ShopOp::SetProductActive { .. }
        | ShopOp::SetStock { .. }
        | ShopOp::PutOffer(_)
        | ShopOp::RemoveOffer { .. }
        | ShopOp::Products { .. }
        | ShopOp::Product { .. }
        | ShopOp::CartSet { .. }
        | ShopOp::CartRemove { .. }
        | ShopOp::CartClear
        | ShopOp::Cart
        | ShopOp::Checkout { .. }
        | ShopOp::Command { .. }
        | ShopOp::Order { .. }
        | ShopOp::Orders { .. }
        | ShopOp::PutCoupon(_)
        | ShopOp::SetCouponEnabled { .. }
        | ShopOp::Coupons
        | ShopOp::OptIn { .. }
        | ShopOp::OptOut { .. }
        | ShopOp::Consents
        | ShopOp::SetQuota(_)
        | ShopOp::Promote { .. } => Retry::Safe,
    }
}

/// `<prefix>-<salt as 16 hex digits>-<counter>`.
pub(super) fn commerce_id(prefix: &str, salt: u64, counter: u64) -> String {
    format!("{prefix}-{salt:016x}-{counter}")
}

/// A reply of another variant than the operation is answered with: a node bug or another
/// protocol version.
fn unexpected_reply(what: &str, reply: &ShopReply) -> ClientError {
    let kind = match reply {
        ShopReply::Done => "Done",
        ShopReply::Info(_) => "Info",
        ShopReply::Stats(_) => "Stats",
        ShopReply::Products { .. } => "Products",
        ShopReply::Product(_) => "Product",
        ShopReply::Posted { .. } => "Posted",
        ShopReply::Cart(_) => "Cart",
        ShopReply::Order(_) => "Order",
        ShopReply::Orders { .. } => "Orders",
        ShopReply::Coupons(_) => "Coupons",
        ShopReply::Consents(_) => "Consents",
        ShopReply::Promoted(_) => "Promoted",
    };
    ClientError::Protocol(format!("unexpected {kind} reply to shop {what}"))
}
