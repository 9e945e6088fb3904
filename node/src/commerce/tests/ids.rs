//! Typed ids: parsing, limits, derived ids.

use piazza_protocol::IdError;

use super::super::ids::{
    COUPON_CODE_BYTES_MAX, CouponCode, ID_BYTES_MAX, OrderId, PaymentId, ProductId, RefundId,
};
use super::id;

#[test]
fn ids_parse_within_their_limits() {
    let at_limit = "a".repeat(ID_BYTES_MAX);
    assert_eq!(at_limit.parse::<ProductId>().unwrap().as_str(), at_limit);
    let over = "a".repeat(ID_BYTES_MAX + 1);
    assert_eq!(
        over.parse::<ProductId>(),
        Err(IdError::TooLong {
            kind: "product id",
            max: ID_BYTES_MAX
        })
    );
    assert_eq!(
        "".parse::<OrderId>(),
        Err(IdError::Empty { kind: "order id" })
    );
    assert!(matches!(
        "o 1".parse::<OrderId>(),
        Err(IdError::BadChar { ch: ' ', .. })
    ));
    // `#` is reserved for derived ids, so a chosen id never collides with one.
    assert!(matches!(
        "o#1".parse::<OrderId>(),
        Err(IdError::BadChar { ch: '#', .. })
    ));
    assert_eq!(
        "O-1_x.y:z".parse::<OrderId>().unwrap().to_string(),
        "O-1_x.y:z"
    );
}

#[test]
fn coupon_codes_are_case_insensitive() {
    let lower: CouponCode = id("summer-10");
    let upper: CouponCode = id("SUMMER-10");
    assert_eq!(lower, upper);
    assert_eq!(lower.as_str(), "SUMMER-10");
    assert!(
        "a".repeat(COUPON_CODE_BYTES_MAX)
            .parse::<CouponCode>()
            .is_ok()
    );
    assert!(matches!(
        "a".repeat(COUPON_CODE_BYTES_MAX + 1).parse::<CouponCode>(),
        Err(IdError::TooLong { .. })
    ));
    assert!(matches!(
        "10%OFF".parse::<CouponCode>(),
        Err(IdError::BadChar { ch: '%', .. })
    ));
}

#[test]
fn derived_ids_round_trip_through_parsing() {
    let order: OrderId = id(&"o".repeat(ID_BYTES_MAX));
    let payment = PaymentId::new(&order, u32::MAX);
    assert_eq!(payment.as_str().parse::<PaymentId>().unwrap(), payment);
    let refund = RefundId::new(&payment, u32::MAX);
    assert_eq!(refund.as_str().parse::<RefundId>().unwrap(), refund);
    assert_eq!(
        RefundId::new(&PaymentId::new(&id("o-1"), 2), 3).as_str(),
        "o-1#2#r3"
    );
}
