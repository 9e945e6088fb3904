//! The shop's state is a replay of its log: applying the logged inputs to a fresh state gives
//! the same shop.

use piazza_protocol::commerce::{
    OrderCommand, PaymentPlan, ProductSpec, Section, ShopOp, ShopProfile, StaffRole,
};
use piazza_protocol::{ErrorCode, Money, UserId};

use super::state::{Entry, Input, ShopState};
use crate::commerce::shop::Settings;

fn user(name: &str) -> UserId {
    name.parse().unwrap()
}

fn op(name: &str, op: ShopOp) -> Input {
    Input::Op {
        user: user(name),
        op,
    }
}

fn script() -> Vec<Input> {
    let eur = |minor| Money::new(minor, "EUR".parse().unwrap());
    vec![
        op(
            "olga",
            ShopOp::Create {
                profile: ShopProfile {
                    name: "Bakery".into(),
                    ..ShopProfile::default()
                },
            },
        ),
        op(
            "olga",
            ShopOp::SetStaff {
                user: user("ada"),
                role: Some(StaffRole::Agent),
            },
        ),
        op(
            "olga",
            ShopOp::PutCatalog {
                catalog: "main".parse().unwrap(),
                section: Section {
                    title: "Menu".into(),
                },
            },
        ),
        op(
            "olga",
            ShopOp::PutProduct(ProductSpec {
                id: "bread".parse().unwrap(),
                catalog: "main".parse().unwrap(),
                title: "Bread".into(),
                description: String::new(),
                price: eur(250),
                categories: Vec::new(),
                media: Vec::new(),
                variants: Vec::new(),
                active: true,
            }),
        ),
        op(
            "olga",
            ShopOp::SetStock {
                product: "bread".parse().unwrap(),
                variant: None,
                on_hand: Some(5),
            },
        ),
        op(
            "alice",
            ShopOp::CartAdd {
                product: "bread".parse().unwrap(),
                variant: None,
                quantity: 2,
            },
        ),
        op(
            "alice",
            ShopOp::Checkout {
                order: "o1".parse().unwrap(),
                coupon: None,
            },
        ),
        op(
            "ada",
            ShopOp::Command {
                order: "o1".parse().unwrap(),
                command_id: "c1".parse().unwrap(),
                command: OrderCommand::Accept,
            },
        ),
        op(
            "alice",
            ShopOp::Command {
                order: "o1".parse().unwrap(),
                command_id: "c2".parse().unwrap(),
                command: OrderCommand::RequestPayment {
                    plan: PaymentPlan::Full,
                },
            },
        ),
    ]
}

#[test]
fn replaying_the_log_rebuilds_the_same_shop() {
    let mut live = ShopState::new("s".parse().unwrap(), Settings::default());
    let mut log = Vec::new();
    for (i, input) in script().into_iter().enumerate() {
        let at_ms = 1_000 + i as u64;
        let applied = live.apply(&input, at_ms).unwrap();
        if applied.changed {
            let entry = Entry { at_ms, input };
            log.push(piazza_protocol::codec::encode(&entry).unwrap());
        }
    }
    let mut replayed = ShopState::new("s".parse().unwrap(), Settings::default());
    for bytes in &log {
        let entry: Entry = piazza_protocol::codec::decode(bytes, 1 << 20).unwrap();
        replayed.apply(&entry.input, entry.at_ms).unwrap();
    }
    let order = "o1".parse().unwrap();
    assert_eq!(
        live.order_view(&user("alice"), &order).unwrap(),
        replayed.order_view(&user("alice"), &order).unwrap()
    );
    assert_eq!(live.staff, replayed.staff);
    assert_eq!(
        live.core.pending_requests(),
        replayed.core.pending_requests()
    );
    assert_eq!(live.core, replayed.core);
}

#[test]
fn refused_inputs_change_nothing_and_roles_are_checked() {
    let mut shop = ShopState::new("s".parse().unwrap(), Settings::default());
    // Nothing but creation works on a shop that does not exist.
    let e = shop.apply(&op("olga", ShopOp::CartClear), 1).unwrap_err();
    assert_eq!(e, ErrorCode::NotFound);
    for input in script().into_iter().take(5) {
        shop.apply(&input, 2).unwrap();
    }
    // An agent may not edit the catalog, a customer may not add staff.
    let e = shop
        .apply(
            &op(
                "ada",
                ShopOp::SetProductActive {
                    product: "bread".parse().unwrap(),
                    active: false,
                },
            ),
            3,
        )
        .unwrap_err();
    assert_eq!(e, ErrorCode::Forbidden);
    let e = shop
        .apply(
            &op(
                "alice",
                ShopOp::SetStaff {
                    user: user("alice"),
                    role: Some(StaffRole::Owner),
                },
            ),
            3,
        )
        .unwrap_err();
    assert_eq!(e, ErrorCode::Forbidden);
    // The last owner stays an owner.
    let e = shop
        .apply(
            &op(
                "olga",
                ShopOp::SetStaff {
                    user: user("olga"),
                    role: None,
                },
            ),
            3,
        )
        .unwrap_err();
    assert!(matches!(e, ErrorCode::Conflict { .. }));
}
