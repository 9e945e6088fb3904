//! [`Error`]: why a commerce operation was refused, and its one mapping to the wire
//! ([`ErrorCode`]). Every variant says what the caller should do; none is a bug in the caller's
//! use of the API except where noted. A refused operation never changes state.

use piazza_protocol::{Currency, ErrorCode, Money, MoneyError};

use super::ids::{CommandId, CouponCode, OrderId, PaymentId, ProductId, PromotionId, VariantId};
use super::order::OrderStatus;

/// Why a commerce operation was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Error {
    // --- Bad input: do not retry unchanged (wire: `Invalid`). ---
    /// A quantity was zero or negative; remove the line instead of setting it to zero.
    #[error("quantity must be at least 1, got {quantity}")]
    QuantityNotPositive {
        /// The quantity asked for.
        quantity: i64,
    },
    /// A quantity is over a limit (a cart line's [`super::cart::LINE_QUANTITY_MAX`]).
    #[error("quantity {quantity} exceeds {max}")]
    QuantityTooLarge {
        /// The quantity asked for (after adding to what was there).
        quantity: i64,
        /// The limit.
        max: u32,
    },
    /// A field of a specification (product, coupon, offer, plan, …) is malformed or out of range.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Amounts in two currencies were combined (a cart or order mixing products priced in
    /// different currencies, a fixed coupon in a foreign currency, …).
    #[error("currency mix: {expected} and {found}")]
    CurrencyMix {
        /// The currency already in use.
        expected: Currency,
        /// The other currency.
        found: Currency,
    },
    /// A sum does not fit in 64 bits of minor units.
    #[error("amount overflow")]
    AmountOverflow,
    /// The product has variants and the line named none.
    #[error("product {0} has variants: name one")]
    VariantRequired(ProductId),
    /// The product has no variants and the line named one.
    #[error("product {0} has no variants")]
    VariantNotExpected(ProductId),
    /// Checkout of an empty cart, or an order without lines.
    #[error("the cart is empty")]
    EmptyCart,

    // --- Over a limit (wire: `TooLarge`). ---
    /// A collection is full (products in a catalog, lines in a cart, refunds of a payment, …).
    #[error("too many {what} (at most {max})")]
    TooMany {
        /// What there would be too many of.
        what: &'static str,
        /// The limit.
        max: usize,
    },

    // --- The thing named does not exist (wire: `NotFound`). ---
    /// No such product.
    #[error("unknown product {0}")]
    UnknownProduct(ProductId),
    /// The product exists but has no such variant.
    #[error("product {product} has no variant {variant}")]
    UnknownVariant {
        /// The product.
        product: ProductId,
        /// The variant asked for.
        variant: VariantId,
    },
    /// No such catalog, category or offer (named by `what`).
    #[error("unknown {what}")]
    Unknown {
        /// What kind of thing.
        what: &'static str,
    },
    /// No such line in the cart.
    #[error("no such line in the cart")]
    NotInCart,
    /// No such order.
    #[error("unknown order {0}")]
    UnknownOrder(OrderId),
    /// No such payment (a notification or sync for a payment this shop never created).
    #[error("unknown payment {0}")]
    UnknownPayment(PaymentId),
    /// No such coupon.
    #[error("unknown coupon {0}")]
    UnknownCoupon(CouponCode),
    /// No such promotion.
    #[error("unknown promotion {0}")]
    UnknownPromotion(PromotionId),
    /// No stock reservation is held for this order.
    #[error("no stock reservation for order {0}")]
    UnknownReservation(OrderId),

    // --- Not allowed for this actor (wire: `Forbidden`). ---
    /// The actor may not do this (a customer accepting an order, an agent refunding, a customer
    /// touching someone else's order).
    #[error("not allowed to {action}")]
    Forbidden {
        /// What was refused.
        action: &'static str,
    },

    // --- Conflicts with the current state (wire: `Conflict`); re-read the state first. ---
    /// The product is not on sale.
    #[error("product {0} is not active")]
    InactiveProduct(ProductId),
    /// Not enough stock to reserve every line; nothing was reserved.
    #[error("out of stock: {product} needs {requested}, {available} available")]
    OutOfStock {
        /// The product.
        product: ProductId,
        /// The variant, if the product has variants.
        variant: Option<VariantId>,
        /// How many the order needs.
        requested: u32,
        /// How many are free (on hand minus reserved).
        available: u32,
    },
    /// Stock may not be set below what placed orders have reserved.
    #[error("stock {requested} is below the {reserved} reserved by placed orders")]
    StockBelowReserved {
        /// The stock asked for.
        requested: u32,
        /// Units reserved by placed orders.
        reserved: u32,
    },
    /// The thing is held by placed orders or used by others (a product or variant with
    /// reserved stock, a catalog with products) and cannot be removed now.
    #[error("{what} is in use")]
    InUse {
        /// What is in use.
        what: &'static str,
    },
    /// A reservation for this order exists with different lines.
    #[error("order {0} already reserved other lines")]
    ReservationMismatch(OrderId),
    /// The order's reservation was already released, committed or restored, and cannot take
    /// this step.
    #[error("the reservation of order {0} is closed")]
    ReservationClosed(OrderId),
    /// The order id is taken by a different order.
    #[error("order id {0} is taken")]
    OrderIdTaken(OrderId),
    /// The command id was already used for a different command on this order.
    #[error("command id {0} was used for another command")]
    CommandIdReused(CommandId),
    /// The command is not valid in the order's current status.
    #[error("cannot {command} an order that is {status}")]
    InvalidTransition {
        /// The order's status.
        status: OrderStatus,
        /// The command refused.
        command: &'static str,
    },
    /// A payment operation is in flight with the provider (a capture); retry once it settled.
    #[error("a payment is in progress")]
    PaymentInProgress,
    /// There is no failed payment to try again, or the attempts are used up.
    #[error("no payment to retry")]
    NothingToRetry,
    /// A refund would exceed what was captured and not yet refunded (or being refunded).
    #[error("refund of {requested} exceeds the refundable {refundable}")]
    RefundExceedsRefundable {
        /// The refund asked for.
        requested: Money,
        /// Captured minus refunded minus refunds in flight.
        refundable: Money,
    },
    /// The coupon is disabled.
    #[error("coupon {0} is disabled")]
    CouponDisabled(CouponCode),
    /// The coupon's validity window has not started.
    #[error("coupon {0} is not valid yet")]
    CouponNotStarted(CouponCode),
    /// The coupon's validity window is over.
    #[error("coupon {0} has expired")]
    CouponExpired(CouponCode),
    /// The coupon reached its total redemption limit.
    #[error("coupon {0} is used up")]
    CouponExhausted(CouponCode),
    /// The customer reached the coupon's per-customer limit.
    #[error("coupon {0} was already used by this customer as often as allowed")]
    CouponCustomerLimit(CouponCode),
    /// The order is below the coupon's minimum.
    #[error("the coupon needs an order of at least {minimum}")]
    BelowMinimumOrder {
        /// The coupon's minimum order total.
        minimum: Money,
    },

    // --- The payment provider said something impossible (wire: `Internal`; page a human). ---
    /// A provider status (sync answer) is inconsistent in itself, names another payment or
    /// attempt, or would move money backwards (less captured or refunded than already
    /// confirmed). Nothing was applied; an operator must look at the payment.
    #[error("provider state of {payment} rejected: {reason}")]
    ProviderInconsistent {
        /// The payment.
        payment: PaymentId,
        /// What is wrong.
        reason: &'static str,
    },
}

impl From<MoneyError> for Error {
    fn from(e: MoneyError) -> Error {
        match e {
            MoneyError::CurrencyMismatch(expected, found) => Error::CurrencyMix { expected, found },
            MoneyError::Overflow => Error::AmountOverflow,
            MoneyError::BadCurrency => Error::InvalidField {
                field: "currency",
                reason: "not an ISO 4217 code",
            },
        }
    }
}

/// The one mapping from commerce errors to wire errors.
impl From<&Error> for ErrorCode {
    fn from(e: &Error) -> ErrorCode {
        match e {
            Error::QuantityNotPositive { .. } | Error::QuantityTooLarge { .. } => {
                ErrorCode::invalid("quantity", e.to_string())
            }
            Error::InvalidField { field, reason } => ErrorCode::invalid(field, *reason),
            Error::CurrencyMix { .. } | Error::AmountOverflow => {
                ErrorCode::invalid("amount", e.to_string())
            }
            Error::VariantRequired(_) | Error::VariantNotExpected(_) => {
                ErrorCode::invalid("variant", e.to_string())
            }
            Error::EmptyCart => ErrorCode::invalid("cart", e.to_string()),
            Error::TooMany { what, max } => ErrorCode::TooLarge {
                what: (*what).to_owned(),
                limit: u64::try_from(*max).unwrap_or(u64::MAX),
            },
            Error::UnknownProduct(_)
            | Error::UnknownVariant { .. }
            | Error::Unknown { .. }
            | Error::NotInCart
            | Error::UnknownOrder(_)
            | Error::UnknownPayment(_)
            | Error::UnknownCoupon(_)
            | Error::UnknownPromotion(_)
            | Error::UnknownReservation(_) => ErrorCode::NotFound,
            Error::Forbidden { .. } => ErrorCode::Forbidden,
            Error::InactiveProduct(_)
            | Error::OutOfStock { .. }
            | Error::StockBelowReserved { .. }
            | Error::InUse { .. }
            | Error::ReservationMismatch(_)
            | Error::ReservationClosed(_)
            | Error::OrderIdTaken(_)
            | Error::CommandIdReused(_)
            | Error::InvalidTransition { .. }
            | Error::PaymentInProgress
            | Error::NothingToRetry
            | Error::RefundExceedsRefundable { .. }
            | Error::CouponDisabled(_)
            | Error::CouponNotStarted(_)
            | Error::CouponExpired(_)
            | Error::CouponExhausted(_)
            | Error::CouponCustomerLimit(_)
            | Error::BelowMinimumOrder { .. } => ErrorCode::Conflict {
                reason: e.to_string(),
            },
            // Not a client's doing, and not from a client's request (syncs come from the
            // payments adapter). Should one ever reach a client, the handler logs the error
            // under its own correlation id and puts that id here; 0 is a placeholder.
            Error::ProviderInconsistent { .. } => ErrorCode::Internal { id: 0 },
        }
    }
}

impl From<Error> for ErrorCode {
    fn from(e: Error) -> ErrorCode {
        ErrorCode::from(&e)
    }
}
