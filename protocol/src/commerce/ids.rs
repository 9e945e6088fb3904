//! Typed ids of commerce. Like the other ids, each is built only by parsing (or, for the derived
//! ones, from the ids they are derived from), so holding one means it is valid; fields are
//! private. On the wire each is its string form, checked again when decoded.
//!
//! Customers and staff are plain [`piazza_protocol::UserId`]s: a customer is a user who talks to
//! the shop.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::IdError;
use crate::ids::{check_chars, string_id};

/// Longest id chosen by a client or by staff (order, command, product, … ids), in bytes: room for
/// a UUID (36) or a readable slug with a prefix, and small enough that derived ids
/// ([`PaymentId`], [`RefundId`]) and idempotency keys stay short.
pub const ID_BYTES_MAX: usize = 64;

/// Longest coupon code in bytes. Codes are typed by people; 32 is twice the longest code the big
/// shops print.
pub const COUPON_CODE_BYTES_MAX: usize = 32;

/// Longest provider-side id (event ids, refund ids made outside Piazza) in bytes: providers use
/// 20–40 characters; 128 leaves room for a prefix the adapter adds.
pub const PROVIDER_ID_BYTES_MAX: usize = 128;

/// Longest derived payment id: an order id, `#` and an instalment number.
pub const PAYMENT_ID_BYTES_MAX: usize = ID_BYTES_MAX + 12;

const _: () = assert!(PAYMENT_ID_BYTES_MAX + 12 <= PROVIDER_ID_BYTES_MAX);

/// The characters of client- and staff-chosen ids.
fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')
}

/// Derived ids add `#` between their parts; no chosen id contains it, so a derived id is never
/// ambiguous and never equal to a chosen one.
fn is_derived_id_char(c: char) -> bool {
    is_id_char(c) || c == '#'
}

string_id!(
    /// A shop.
    ShopId,
    "shop id",
    ID_BYTES_MAX,
    "A-Z a-z 0-9 _ . : -",
    is_id_char
);

string_id!(
    /// One of a shop's catalogs (a shop may show several: "menu", "merch", …).
    CatalogId,
    "catalog id",
    ID_BYTES_MAX,
    "A-Z a-z 0-9 _ . : -",
    is_id_char
);

string_id!(
    /// A category of products within a shop.
    CategoryId,
    "category id",
    ID_BYTES_MAX,
    "A-Z a-z 0-9 _ . : -",
    is_id_char
);

string_id!(
    /// A product, unique within its shop (across the shop's catalogs).
    ProductId,
    "product id",
    ID_BYTES_MAX,
    "A-Z a-z 0-9 _ . : -",
    is_id_char
);

string_id!(
    /// A variant of a product ("red / L"), unique within its product.
    VariantId,
    "variant id",
    ID_BYTES_MAX,
    "A-Z a-z 0-9 _ . : -",
    is_id_char
);

string_id!(
    /// A special offer or sales period (a price override valid in a time window).
    OfferId,
    "offer id",
    ID_BYTES_MAX,
    "A-Z a-z 0-9 _ . : -",
    is_id_char
);

string_id!(
    /// An order, chosen by the customer's client when it sends its cart, so that a retried
    /// checkout names the same order.
    OrderId,
    "order id",
    ID_BYTES_MAX,
    "A-Z a-z 0-9 _ . : -",
    is_id_char
);

string_id!(
    /// The client's id for one command on an order; a retried command with the same id gets the
    /// original outcome and changes nothing.
    CommandId,
    "command id",
    ID_BYTES_MAX,
    "A-Z a-z 0-9 _ . : -",
    is_id_char
);

string_id!(
    /// A promotion (a broadcast message from the shop to a segment of its customers).
    PromotionId,
    "promotion id",
    ID_BYTES_MAX,
    "A-Z a-z 0-9 _ . : -",
    is_id_char
);

string_id!(
    /// A label a shop puts on customers ("vip", "wholesale"), used by promotion segments.
    Label,
    "label",
    ID_BYTES_MAX,
    "A-Z a-z 0-9 _ . : -",
    is_id_char
);

string_id!(
    /// A provider's id of one notification (webhook event). A notification seen before changes
    /// nothing.
    ProviderEventId,
    "provider event id",
    PROVIDER_ID_BYTES_MAX,
    "A-Z a-z 0-9 _ . : - #",
    is_derived_id_char
);

string_id!(
    /// One tracked payment of an order: `<order>#<n>`, `n` counting instalments from 1 (a payment
    /// in full is `#1`). Built by [`PaymentId::new`]; parsing exists for ids coming back from a
    /// provider's metadata.
    PaymentId,
    "payment id",
    PAYMENT_ID_BYTES_MAX,
    "A-Z a-z 0-9 _ . : - #",
    is_derived_id_char
);

string_id!(
    /// One refund of a payment: `<payment>#r<k>` for refunds Piazza asked for; a refund made
    /// outside Piazza (in the provider's dashboard) is known by the id the adapter gives it when a
    /// sync reports it.
    RefundId,
    "refund id",
    PROVIDER_ID_BYTES_MAX,
    "A-Z a-z 0-9 _ . : - #",
    is_derived_id_char
);

impl PaymentId {
    /// The id of instalment `number` (from 1) of `order`.
    pub fn new(order: &OrderId, number: u32) -> PaymentId {
        // An order id is at most ID_BYTES_MAX bytes of id characters and a u32 has at most 10
        // digits, so this fits PAYMENT_ID_BYTES_MAX.
        PaymentId(format!("{order}#{number}"))
    }
}

impl RefundId {
    /// The id of the `number`th (from 1) refund Piazza asks for on `payment`.
    pub fn new(payment: &PaymentId, number: u32) -> RefundId {
        // PAYMENT_ID_BYTES_MAX + "#r" + 10 digits fits PROVIDER_ID_BYTES_MAX (asserted above).
        RefundId(format!("{payment}#r{number}"))
    }
}

/// A coupon code: 1–32 characters of `[A-Z0-9_-]`. Codes are typed by people, so parsing accepts
/// lower case and stores upper case: `summer-10` and `SUMMER-10` are the same coupon.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CouponCode(String);

impl TryFrom<String> for CouponCode {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        s.parse()
    }
}

impl From<CouponCode> for String {
    fn from(code: CouponCode) -> String {
        code.0
    }
}

impl CouponCode {
    /// The code as a string slice (upper case).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CouponCode {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let upper = s.to_ascii_uppercase();
        check_chars(
            "coupon code",
            &upper,
            COUPON_CODE_BYTES_MAX,
            "A-Z 0-9 _ -",
            |c| c.is_ascii_uppercase() || c.is_ascii_digit() || matches!(c, '_' | '-'),
        )?;
        Ok(CouponCode(upper))
    }
}

impl fmt::Display for CouponCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CouponCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CouponCode({:?})", self.0)
    }
}
