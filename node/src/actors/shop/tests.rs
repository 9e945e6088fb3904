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

#[test]
fn an_opt_out_stops_a_promotion_already_under_way() {
    use piazza_protocol::commerce::{PromotionReport, Scope, SegmentSpec};
    let mut shop = ShopState::new("s".parse().unwrap(), Settings::default());
    shop.apply(&script()[0], 1).unwrap();
    let customers: Vec<UserId> = (0..5).map(|i| user(&format!("c{i}"))).collect();
    for customer in &customers {
        shop.apply(
            &Input::Op {
                user: customer.clone(),
                op: ShopOp::OptIn { scope: Scope::News },
            },
            2,
        )
        .unwrap();
    }
    let promotion = "p".parse().unwrap();
    let promote = op(
        "olga",
        ShopOp::Promote {
            promotion: "p".parse().unwrap(),
            scope: Scope::News,
            segment: SegmentSpec::default(),
            text: "news".into(),
            product: None,
        },
    );
    shop.apply(&promote, 3).unwrap();
    let mut remaining = shop
        .core
        .promotions()
        .audience(&promotion, shop.core.profiles().iter(), 3)
        .unwrap();
    assert_eq!(remaining.len(), 5);
    remaining.reverse();
    let mut report = PromotionReport {
        audience: 5,
        delivered: 0,
        over_quota: 0,
        skipped: 0,
    };
    // The first turn reaches two customers; then c4 opts out; the rest of the run skips them.
    let first = shop.promotion_chunk(&promotion, &mut remaining, 2, &mut report, 4);
    assert_eq!(first, vec![user("c0"), user("c1")]);
    let delivered = Input::Delivered {
        promotion: "p".parse().unwrap(),
        customers: first,
    };
    shop.apply(&delivered, 4).unwrap();
    shop.apply(
        &Input::Op {
            user: user("c4"),
            op: ShopOp::OptOut { scope: Scope::News },
        },
        5,
    )
    .unwrap();
    let rest = shop.promotion_chunk(&promotion, &mut remaining, 10, &mut report, 6);
    assert_eq!(rest, vec![user("c2"), user("c3")]);
    assert_eq!((report.delivered, report.skipped), (4, 1));
}
