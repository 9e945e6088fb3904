//! Typed ids of the commerce core: the protocol's commerce ids (they cross the wire in shop
//! requests), re-exported under the core's names. Each is built only by parsing (or, for the
//! derived ones, from the ids they are derived from), so holding one means it is valid.
//!
//! Customers and staff are plain [`piazza_protocol::UserId`]s: a customer is a user who talks to
//! the shop.

#[cfg(test)]
pub(crate) use piazza_protocol::commerce::COUPON_CODE_BYTES_MAX;
pub(crate) use piazza_protocol::commerce::{
    CatalogId, CategoryId, CommandId, CouponCode, ID_BYTES_MAX, Label, OfferId, OrderId, PaymentId,
    ProductId, PromotionId, ProviderEventId, RefundId, ShopId, VariantId,
};
