//! Generated message ids: valid at the limits and unique.

use std::collections::HashSet;

use piazza_protocol::DeviceId;
use piazza_protocol::limits::{CLIENT_MSG_ID_BYTES_MAX, DEVICE_ID_BYTES_MAX};

use super::{MsgIds, client_msg_id, device_prefix, random_salt};

#[test]
fn generated_ids_are_valid_at_the_limits() {
    let device: DeviceId = "d".repeat(DEVICE_ID_BYTES_MAX).parse().unwrap();
    let id = client_msg_id(&device_prefix(&device), u64::MAX, u64::MAX);
    assert!(id.as_str().len() <= CLIENT_MSG_ID_BYTES_MAX, "{id:?}");
    let short = client_msg_id(&device_prefix(&"cli".parse().unwrap()), 0, 0);
    assert_eq!(short.as_str(), "cli-0000000000000000-0");
}

#[test]
fn ids_of_one_client_are_unique() {
    let ids = MsgIds::new(&"phone:1".parse().unwrap());
    let seen: HashSet<String> = (0..1000).map(|_| ids.next().to_string()).collect();
    assert_eq!(seen.len(), 1000);
}

#[test]
fn two_clients_of_one_device_do_not_collide() {
    // Two CLI invocations in the same millisecond must not produce the same first id.
    let device: DeviceId = "cli".parse().unwrap();
    let (a, b) = (MsgIds::new(&device), MsgIds::new(&device));
    assert_ne!(a.next(), b.next());
    assert_ne!(random_salt(), random_salt());
}

#[test]
fn generated_commerce_ids_are_valid() {
    use piazza_protocol::commerce::{CommandId, ID_BYTES_MAX, OrderId};

    use super::shop::commerce_id;

    // The longest generated id still parses as every id type the SDK generates.
    let longest = commerce_id("o", u64::MAX, u64::MAX);
    assert!(longest.len() <= ID_BYTES_MAX, "{longest}");
    longest.parse::<OrderId>().unwrap();
    commerce_id("c", u64::MAX, u64::MAX)
        .parse::<CommandId>()
        .unwrap();
    assert_eq!(commerce_id("o", 0, 7), "o-0000000000000000-7");
}

#[test]
fn only_shop_operations_that_are_harmless_twice_are_retried() {
    use piazza_protocol::commerce::{ShopOp, ShopProfile};

    use super::Retry;
    use super::shop::retry_of;

    let product = || "p1".parse().unwrap();
    let never = [
        ShopOp::Create {
            profile: ShopProfile::default(),
        },
        // Adding twice would add the quantity twice.
        ShopOp::CartAdd {
            product: product(),
            variant: None,
            quantity: 1,
        },
        ShopOp::SendProduct {
            customer: "alice".parse().unwrap(),
            product: product(),
        },
        ShopOp::AskAbout {
            product: product(),
            text: "in red?".into(),
        },
    ];
    for op in never {
        assert_eq!(retry_of(&op), Retry::Never, "{}", op.name());
    }
    let safe = [
        ShopOp::CartSet {
            product: product(),
            variant: None,
            quantity: 2,
        },
        ShopOp::Checkout {
            order: "o-1".parse().unwrap(),
            coupon: None,
        },
        ShopOp::Command {
            order: "o-1".parse().unwrap(),
            command_id: "c-1".parse().unwrap(),
            command: piazza_protocol::commerce::OrderCommand::Accept,
        },
        ShopOp::Cart,
    ];
    for op in safe {
        assert_eq!(retry_of(&op), Retry::Safe, "{}", op.name());
    }
}
