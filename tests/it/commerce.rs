//! Shops inside the chat, end to end over QUIC with the sandbox payment provider: browse → cart
//! → order → pay → fulfil → refund, order messages updated in the customer's conversation,
//! stock never oversold under concurrent checkouts, greetings, typed errors for bad input, and
//! a shop's state surviving a restart.

use std::time::Duration;

use piazza_client::Client;
use piazza_protocol::commerce::{
    CommerceBody, CouponSpec, Discount, OrderCommand, OrderStatus, PaymentPlan, ProductSpec,
    ShopId, ShopOp, ShopProfile, ShopReply,
};
use piazza_protocol::{ConversationId, ErrorCode, MessageBody, MessageUpdate, Money};
use piazza_tests::*;

const WAIT: Duration = Duration::from_secs(15);

fn eur(minor: i64) -> Money {
    Money::new(minor, "EUR".parse().unwrap())
}

fn code(error: piazza_client::ClientError) -> ErrorCode {
    error
        .server_code()
        .cloned()
        .unwrap_or_else(|| panic!("{error}"))
}

fn product(id: &str, price: i64) -> ProductSpec {
    ProductSpec {
        id: id.parse().unwrap(),
        catalog: "main".parse().unwrap(),
        title: format!("{id} title"),
        description: String::new(),
        price: eur(price),
        categories: Vec::new(),
        media: Vec::new(),
        variants: Vec::new(),
        active: true,
    }
}

/// A shop owned by `owner` with product `bread` (2.50 EUR, `stock` units).
async fn open_shop(owner: &Client, shop: &ShopId, stock: u32) {
    let profile = ShopProfile {
        name: "Bakery".into(),
        ..ShopProfile::default()
    };
    owner.create_shop(shop, profile).await.unwrap();
    owner
        .put_catalog(shop, "main".parse().unwrap(), "Menu")
        .await
        .unwrap();
    owner
        .put_product(shop, product("bread", 250))
        .await
        .unwrap();
    owner
        .set_stock(shop, "bread".parse().unwrap(), None, Some(stock))
        .await
        .unwrap();
}

/// Waits until `check` accepts the order as `client` sees it.
async fn wait_order(
    client: &Client,
    shop: &ShopId,
    order: &str,
    check: impl Fn(&piazza_protocol::commerce::OrderView) -> bool,
) -> piazza_protocol::commerce::OrderView {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let view = client.order(shop, order.parse().unwrap()).await.unwrap();
        if check(&view) {
            return view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "order never reached the expected state: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn browse_cart_order_pay_fulfil_refund() {
    let node = TestNode::start().await;
    let olga = node.client("olga").await;
    let alice = node.client("alice").await;
    let shop: ShopId = "bakery".parse().unwrap();
    open_shop(&olga, &shop, 10).await;
    olga.put_coupon(
        &shop,
        CouponSpec {
            code: "WELCOME".parse().unwrap(),
            discount: Discount::Amount(eur(100)),
            starts_ms: 0,
            ends_ms: u64::MAX,
            total_max: Some(10),
            per_customer_max: Some(1),
            minimum: None,
        },
    )
    .await
    .unwrap();

    // Browse.
    let page = alice
        .products(&shop, piazza_client::ProductFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].prices, vec![eur(250)]);
    assert_eq!(page.items[0].available, vec![Some(10)]);

    // Cart, synced across devices.
    alice
        .cart_add(&shop, "bread".parse().unwrap(), None, 3)
        .await
        .unwrap();
    let phone = node
        .client_with("alice", "phone", piazza_client::EventStart::Now)
        .await;
    let cart = phone.cart(&shop).await.unwrap();
    assert_eq!(cart.lines.len(), 1);
    assert_eq!(cart.lines[0].quantity, 3);
    assert_eq!(cart.subtotal, Some(eur(750)));

    // Checkout posts one order message into alice's conversation with the shop.
    let order = alice
        .checkout(
            &shop,
            "o-1".parse().unwrap(),
            Some("welcome".parse().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(order.status, OrderStatus::Placed);
    assert_eq!(order.total, eur(650));
    assert_eq!(order.discount, eur(100));
    let message = next_message(&alice, WAIT).await;
    assert_eq!(
        message.conversation,
        ConversationId::Shop {
            shop: shop.clone(),
            customer: user("alice")
        }
    );
    match &message.body {
        MessageBody::Commerce(body) => match body.as_ref() {
            CommerceBody::Order(view) => assert_eq!(view.total, eur(650)),
            other => panic!("not an order message: {other:?}"),
        },
        other => panic!("not a commerce message: {other:?}"),
    }
    // Retrying the checkout answers the same order and reserves nothing more.
    let again = alice
        .checkout(
            &shop,
            "o-1".parse().unwrap(),
            Some("welcome".parse().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(again.order, order.order);
    let bread = alice
        .product(&shop, "bread".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(bread.available, vec![Some(7)]);
    // The cart was emptied by the checkout.
    assert!(alice.cart(&shop).await.unwrap().lines.is_empty());

    // Staff accept; the customer pays in full through the sandbox, which settles asynchronously.
    let o1 = "o-1".parse::<piazza_protocol::commerce::OrderId>().unwrap();
    olga.order_command(
        &shop,
        o1.clone(),
        olga.new_command_id(),
        OrderCommand::Accept,
    )
    .await
    .unwrap();
    // A customer may not accept their own order.
    let refused = alice
        .order_command(
            &shop,
            o1.clone(),
            alice.new_command_id(),
            OrderCommand::Accept,
        )
        .await
        .unwrap_err();
    assert_eq!(code(refused), ErrorCode::Forbidden);
    alice
        .order_command(
            &shop,
            o1.clone(),
            alice.new_command_id(),
            OrderCommand::RequestPayment {
                plan: PaymentPlan::Full,
            },
        )
        .await
        .unwrap();
    let paid = wait_order(&alice, &shop, "o-1", |o| o.status == OrderStatus::Paid).await;
    assert_eq!(paid.payments.len(), 1);
    assert_eq!(paid.payments[0].captured, eur(650));

    // Fulfil, then refund part of it.
    olga.order_command(
        &shop,
        o1.clone(),
        olga.new_command_id(),
        OrderCommand::Fulfil {
            tracking: Some("DHL 123".into()),
        },
    )
    .await
    .unwrap();
    olga.order_command(
        &shop,
        o1.clone(),
        olga.new_command_id(),
        OrderCommand::Refund { amount: eur(250) },
    )
    .await
    .unwrap();
    let refunded = wait_order(&olga, &shop, "o-1", |o| {
        o.payments.first().is_some_and(|p| p.refunded == eur(250))
    })
    .await;
    assert_eq!(refunded.status, OrderStatus::Fulfilled);

    // The order message was updated in place along the way: history shows the newest state,
    // and the sequence carries the updates.
    let mut saw_paid_update = false;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !saw_paid_update && tokio::time::Instant::now() < deadline {
        let message = next_message(&alice, WAIT).await;
        if let MessageBody::Update(MessageUpdate::Order { order, .. }) = &message.body {
            saw_paid_update |= order.status == OrderStatus::Paid;
        }
    }
    assert!(saw_paid_update, "no order update showing the payment");
}

#[tokio::test]
async fn stock_is_never_oversold_under_concurrent_checkouts() {
    let node = TestNode::start().await;
    let olga = node.client("olga").await;
    let shop: ShopId = "tiny".parse().unwrap();
    open_shop(&olga, &shop, 5).await;
    let mut customers = Vec::new();
    for i in 0..12 {
        let client = node.client(&format!("c{i}")).await;
        client
            .cart_add(&shop, "bread".parse().unwrap(), None, 1)
            .await
            .unwrap();
        customers.push(client);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, client) in customers.into_iter().enumerate() {
        let shop = shop.clone();
        tasks.spawn(async move {
            client
                .checkout(&shop, format!("o{i}").parse().unwrap(), None)
                .await
        });
    }
    let results = tasks.join_all().await;
    let placed = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(placed, 5, "exactly the stock was sold: {results:?}");
    for result in results.into_iter().filter_map(Result::err) {
        assert!(
            matches!(code(result), ErrorCode::Conflict { .. }),
            "out of stock is a conflict"
        );
    }
    let bread = olga.product(&shop, "bread".parse().unwrap()).await.unwrap();
    assert_eq!(bread.available, vec![Some(0)]);
}

#[tokio::test]
async fn greeting_on_first_contact_and_staff_see_the_conversation() {
    let node = TestNode::start().await;
    let olga = node.client("olga").await;
    let bob = node.client("bob").await;
    let shop: ShopId = "greeter".parse().unwrap();
    open_shop(&olga, &shop, 1).await;
    olga.set_auto_replies(&shop, Some("Welcome to the bakery!".into()), None)
        .await
        .unwrap();
    let conversation = ConversationId::Shop {
        shop: shop.clone(),
        customer: user("bob"),
    };
    bob.send(
        piazza_client::ConversationRef::Id(conversation.clone()),
        "hello, do you deliver?",
        None,
    )
    .await
    .unwrap();
    let mut texts = Vec::new();
    while texts.len() < 2 {
        let message = next_message(&bob, WAIT).await;
        texts.push((message.sender.clone(), text(&message).to_owned()));
    }
    assert_eq!(texts[0].1, "hello, do you deliver?");
    assert_eq!(
        texts[1],
        (
            piazza_protocol::UserId::shop(),
            "Welcome to the bakery!".into()
        )
    );
    // The owner sees the customer's message (staff are members of shop conversations).
    let seen = next_message(&olga, WAIT).await;
    assert_eq!(seen.conversation, conversation);
    // The owner answers; the first response is measured.
    olga.send(
        piazza_client::ConversationRef::Id(conversation.clone()),
        "yes, within 2 km",
        None,
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stats = olga.shop_stats(&shop).await.unwrap();
        if stats.first_responses == 1 {
            assert!(stats.first_response_p50_ms.is_some());
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no first response: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Someone else may not read bob's conversation with the shop.
    let eve = node.client("eve").await;
    let refused = eve
        .history(piazza_client::ConversationRef::Id(conversation), None, 10)
        .await
        .unwrap_err();
    assert_eq!(code(refused), ErrorCode::Forbidden);
}

#[tokio::test]
async fn bad_input_gets_typed_errors() {
    let node = TestNode::start().await;
    let olga = node.client("olga").await;
    let alice = node.client("alice").await;
    let shop: ShopId = "strict".parse().unwrap();
    open_shop(&olga, &shop, 3).await;
    // Unknown product.
    let e = alice
        .cart_add(&shop, "cake".parse().unwrap(), None, 1)
        .await
        .unwrap_err();
    assert_eq!(code(e), ErrorCode::NotFound);
    // Zero quantity is refused on the wire.
    let e = alice
        .shop(
            &shop,
            ShopOp::CartAdd {
                product: "bread".parse().unwrap(),
                variant: None,
                quantity: 0,
            },
        )
        .await
        .unwrap_err();
    // Checked by the SDK before sending (and by the node with the same rule).
    assert!(
        matches!(
            e,
            piazza_client::ClientError::Invalid(ErrorCode::Invalid { .. })
        ),
        "{e}"
    );
    // A product in another currency cannot join a cart in euros.
    let mut dollars = product("muffin", 300);
    dollars.price = Money::new(300, "USD".parse().unwrap());
    olga.put_product(&shop, dollars).await.unwrap();
    alice
        .cart_add(&shop, "bread".parse().unwrap(), None, 1)
        .await
        .unwrap();
    let e = alice
        .cart_add(&shop, "muffin".parse().unwrap(), None, 1)
        .await
        .unwrap_err();
    assert!(matches!(code(e), ErrorCode::Invalid { .. }), "currency mix");
    // A customer may not edit the catalog.
    let e = alice
        .put_product(&shop, product("free", 0))
        .await
        .unwrap_err();
    assert_eq!(code(e), ErrorCode::Forbidden);
    // An unknown shop.
    let e = alice
        .shop(&"nowhere".parse().unwrap(), ShopOp::Info)
        .await
        .unwrap_err();
    assert_eq!(code(e), ErrorCode::NotFound);
    // Only operators set the verified badge.
    let e = olga.set_verified(&shop, true).await.unwrap_err();
    assert_eq!(code(e), ErrorCode::Forbidden);
}

#[tokio::test]
async fn a_shop_survives_a_restart() {
    let node = TestNode::start().await;
    let shop: ShopId = "durable".parse().unwrap();
    {
        let olga = node.client("olga").await;
        let alice = node.client("alice").await;
        open_shop(&olga, &shop, 4).await;
        alice
            .cart_add(&shop, "bread".parse().unwrap(), None, 2)
            .await
            .unwrap();
        alice
            .checkout(&shop, "keep".parse().unwrap(), None)
            .await
            .unwrap();
    }
    let node = node.restart().await;
    let alice = node.client("alice").await;
    let order = alice.order(&shop, "keep".parse().unwrap()).await.unwrap();
    assert_eq!(order.status, OrderStatus::Placed);
    assert_eq!(order.total, eur(500));
    assert!(order.message.is_some(), "the order message was recorded");
    let bread = alice
        .product(&shop, "bread".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(bread.available, vec![Some(2)]);
    match alice.shop(&shop, ShopOp::Info).await.unwrap() {
        ShopReply::Info(info) => assert_eq!(info.profile.name, "Bakery"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn coupon_limits_hold_under_concurrent_checkouts() {
    let node = TestNode::start().await;
    let olga = node.client("olga").await;
    let shop: ShopId = "coupons".parse().unwrap();
    open_shop(&olga, &shop, 100).await;
    olga.put_coupon(
        &shop,
        CouponSpec {
            code: "FIRST3".parse().unwrap(),
            discount: Discount::Percent { basis_points: 1000 },
            starts_ms: 0,
            ends_ms: u64::MAX,
            total_max: Some(3),
            per_customer_max: Some(1),
            minimum: None,
        },
    )
    .await
    .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let client = node.client(&format!("k{i}")).await;
        client
            .cart_add(&shop, "bread".parse().unwrap(), None, 1)
            .await
            .unwrap();
        let shop = shop.clone();
        tasks.spawn(async move {
            client
                .checkout(
                    &shop,
                    format!("k{i}").parse().unwrap(),
                    Some("first3".parse().unwrap()),
                )
                .await
        });
    }
    let results = tasks.join_all().await;
    let placed: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(placed.len(), 3, "{results:?}");
    for order in placed {
        assert_eq!(order.discount, eur(25));
    }
    let coupons = olga.coupons(&shop).await.unwrap();
    assert_eq!(coupons[0].redeemed, 3);
}

#[tokio::test]
async fn promotions_reach_only_consenting_customers_within_quota() {
    use piazza_protocol::commerce::{Quota, Scope, SegmentAtom, SegmentSpec, SegmentTerm};
    let node = TestNode::start().await;
    let olga = node.client("olga").await;
    let shop: ShopId = "promos".parse().unwrap();
    open_shop(&olga, &shop, 10).await;
    olga.set_quota(
        &shop,
        Quota {
            count_max: 1,
            window_ms: 24 * 60 * 60 * 1000,
        },
    )
    .await
    .unwrap();
    let yes = node.client("yes").await;
    let no = node.client("no").await;
    let gone = node.client("gone").await;
    let vip = node.client("vip").await;
    yes.opt_in(&shop, Scope::Offers).await.unwrap();
    vip.opt_in(&shop, Scope::Offers).await.unwrap();
    gone.opt_in(&shop, Scope::Offers).await.unwrap();
    gone.opt_out(&shop, Scope::Offers).await.unwrap();
    // `no` only talks to the shop: known, but never consented.
    no.cart_add(&shop, "bread".parse().unwrap(), None, 1)
        .await
        .unwrap();
    olga.label_customer(&shop, user("vip"), "vip".parse().unwrap(), true)
        .await
        .unwrap();

    // Only VIPs first.
    let vips = SegmentSpec {
        any: vec![vec![SegmentTerm {
            negated: false,
            atom: SegmentAtom::Label("vip".parse().unwrap()),
        }]],
    };
    let report = olga
        .promote(
            &shop,
            "p1".parse().unwrap(),
            Scope::Offers,
            vips,
            "VIP sale",
            None,
        )
        .await
        .unwrap();
    assert_eq!((report.audience, report.delivered), (1, 1), "{report:?}");
    let message = next_message(&vip, WAIT).await;
    assert!(
        matches!(&message.body, MessageBody::Commerce(b) if matches!(b.as_ref(), CommerceBody::Promotion { .. }))
    );

    // Everyone who consented; the VIP is at their quota of one.
    let report = olga
        .promote(
            &shop,
            "p2".parse().unwrap(),
            Scope::Offers,
            SegmentSpec::default(),
            "Bread for all",
            Some("bread".parse().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(report.delivered, 1, "only `yes`: {report:?}");
    let message = next_message(&yes, WAIT).await;
    match &message.body {
        MessageBody::Commerce(body) => match body.as_ref() {
            CommerceBody::Promotion { text, product, .. } => {
                assert_eq!(text, "Bread for all");
                assert_eq!(product.as_ref().unwrap().price, eur(250));
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    // Nobody without consent received anything: their conversations with the shop are empty.
    for (client, name) in [(&no, "no"), (&gone, "gone")] {
        let conversation = ConversationId::Shop {
            shop: shop.clone(),
            customer: user(name),
        };
        let page = client
            .history(piazza_client::ConversationRef::Id(conversation), None, 10)
            .await
            .unwrap();
        assert!(page.messages.is_empty(), "{name} got {:?}", page.messages);
    }
    // A retry of p2 reaches nobody twice.
    let again = olga
        .promote(
            &shop,
            "p2".parse().unwrap(),
            Scope::Offers,
            SegmentSpec::default(),
            "Bread for all",
            None,
        )
        .await
        .unwrap();
    assert_eq!(again.delivered, 0, "{again:?}");
}

#[tokio::test]
async fn instalments_away_message_and_assignment() {
    use piazza_protocol::commerce::{Hours, PaymentState, StaffRole};
    let node = TestNode::start().await;
    let olga = node.client("olga").await;
    let ada = node.client("ada").await;
    let bob = node.client("bob").await;
    let shop: ShopId = "night".parse().unwrap();
    open_shop(&olga, &shop, 10).await;

    // Buy now, pay later: two instalments a day apart; the first is charged now.
    bob.cart_add(&shop, "bread".parse().unwrap(), None, 3)
        .await
        .unwrap();
    bob.checkout(&shop, "bnpl".parse().unwrap(), None)
        .await
        .unwrap();
    olga.order_command(
        &shop,
        "bnpl".parse().unwrap(),
        olga.new_command_id(),
        OrderCommand::Accept,
    )
    .await
    .unwrap();
    bob.order_command(
        &shop,
        "bnpl".parse().unwrap(),
        bob.new_command_id(),
        OrderCommand::RequestPayment {
            plan: PaymentPlan::Instalments {
                count: 2,
                interval_ms: 24 * 60 * 60 * 1000,
            },
        },
    )
    .await
    .unwrap();
    let paid = wait_order(&bob, &shop, "bnpl", |o| o.status == OrderStatus::Paid).await;
    assert_eq!(paid.payments.len(), 2);
    assert_eq!(paid.payments[0].captured, eur(375));
    assert_eq!(paid.payments[1].state, PaymentState::Scheduled);
    assert_eq!(paid.payments[1].amount, eur(375));

    // Closed every day: a customer's message gets the away message within a second.
    olga.set_hours(
        &shop,
        Some(Hours {
            time_zone: "Europe/Rome".into(),
            weekly: Vec::new(),
            exceptions: Vec::new(),
        }),
    )
    .await
    .unwrap();
    olga.set_auto_replies(&shop, None, Some("We are closed, back tomorrow".into()))
        .await
        .unwrap();
    assert!(!olga.shop_info(&shop).await.unwrap().open_now);
    let conversation = ConversationId::Shop {
        shop: shop.clone(),
        customer: user("bob"),
    };
    // Skip the order message and its updates.
    while next_message_quick(&bob).await.is_some() {}
    let sent = bob
        .send(
            piazza_client::ConversationRef::Id(conversation.clone()),
            "are you open?",
            None,
        )
        .await
        .unwrap();
    let away = loop {
        let message = next_message(&bob, WAIT).await;
        if message.sender == piazza_protocol::UserId::shop() {
            break message;
        }
    };
    assert_eq!(text(&away), "We are closed, back tomorrow");
    assert!(
        away.sent_at_ms - sent.sent_at_ms < 1000,
        "away message took too long"
    );

    // Staff and assignment: an agent takes bob's conversation; agents cannot reassign it.
    olga.set_staff(&shop, user("ada"), Some(StaffRole::Agent))
        .await
        .unwrap();
    ada.assign(&shop, user("bob"), Some(user("ada")))
        .await
        .unwrap();
    let e = ada
        .assign(&shop, user("bob"), Some(user("olga")))
        .await
        .unwrap_err();
    assert_eq!(code(e), ErrorCode::Forbidden);
    let stats = olga.shop_stats(&shop).await.unwrap();
    assert_eq!(stats.assignments, vec![(user("ada"), 1)]);
    // An agent cannot refund.
    let e = ada
        .order_command(
            &shop,
            "bnpl".parse().unwrap(),
            ada.new_command_id(),
            OrderCommand::Refund { amount: eur(100) },
        )
        .await
        .unwrap_err();
    assert_eq!(code(e), ErrorCode::Forbidden);
}

/// The next message if one arrives within 300 ms.
async fn next_message_quick(client: &Client) -> Option<piazza_protocol::Message> {
    loop {
        match tokio::time::timeout(Duration::from_millis(300), client.next_event()).await {
            Ok(Some(piazza_client::ClientEvent::Message(m))) => return Some(m),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn final_orders_are_archived_and_still_readable() {
    let node = TestNode::start_with(|config| config.commerce.archive_after_secs = 0).await;
    let olga = node.client("olga").await;
    let alice = node.client("alice").await;
    let shop: ShopId = "archive".parse().unwrap();
    open_shop(&olga, &shop, 5).await;
    alice
        .cart_add(&shop, "bread".parse().unwrap(), None, 2)
        .await
        .unwrap();
    alice
        .checkout(&shop, "old".parse().unwrap(), None)
        .await
        .unwrap();
    olga.order_command(
        &shop,
        "old".parse().unwrap(),
        olga.new_command_id(),
        OrderCommand::Reject {
            reason: "closed today".into(),
        },
    )
    .await
    .unwrap();
    // The next change archives the rejected order: it leaves the order list, stays readable,
    // and its stock is back.
    alice
        .cart_add(&shop, "bread".parse().unwrap(), None, 1)
        .await
        .unwrap();
    alice
        .checkout(&shop, "new".parse().unwrap(), None)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let page = olga.orders(&shop, None, 10).await.unwrap();
        if page.items.len() == 1 {
            assert_eq!(page.items[0].order.as_str(), "new");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never archived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let old = alice.order(&shop, "old".parse().unwrap()).await.unwrap();
    assert_eq!(old.status, OrderStatus::Rejected);
    let e = node
        .client("eve")
        .await
        .order(&shop, "old".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(code(e), ErrorCode::NotFound);
    // Archived orders stay archived across a restart (the archive is in the log).
    let node = node.restart().await;
    let olga = node.client("olga").await;
    assert_eq!(olga.orders(&shop, None, 10).await.unwrap().items.len(), 1);
    let old = olga.order(&shop, "old".parse().unwrap()).await.unwrap();
    assert_eq!(old.status, OrderStatus::Rejected);
}

/// One request a receiver saw: headers (names lower-cased) and body.
type Seen = (Vec<(String, String)>, String);

/// A webhook receiver on loopback: records every request (headers lower-cased, body) and answers
/// 200 when `accept` is set, 500 otherwise.
struct Receiver {
    addr: std::net::SocketAddr,
    accept: std::sync::Arc<std::sync::atomic::AtomicBool>,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (a, s) = (accept.clone(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (a, s) = (a.clone(), s.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let (head, body_start) = loop {
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break (String::from_utf8_lossy(&buf[..i]).to_string(), i + 4);
                        }
                    };
                    let headers: Vec<(String, String)> = head
                        .lines()
                        .skip(1)
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                        .collect();
                    let length: usize = headers
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .map_or(0, |(_, v)| v.parse().unwrap());
                    while buf.len() < body_start + length {
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let body = String::from_utf8_lossy(&buf[body_start..body_start + length]);
                    s.lock().unwrap().push((headers, body.to_string()));
                    let status = if a.load(std::sync::atomic::Ordering::SeqCst) {
                        "200 OK"
                    } else {
                        "500 Internal Server Error"
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        Receiver {
            addr,
            accept,
            seen,
            task,
        }
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn order_events_reach_the_shops_webhook_and_delivery_resumes_after_a_restart() {
    let receiver = Receiver::start().await;
    let sink = |config: &mut piazza_node::Config| {
        config.sinks.webhooks = vec![piazza_node::config::WebhookSink {
            name: Some("backend".into()),
            shop: "hooks".into(),
            url: format!("http://{}/events", receiver.addr),
            secret: Some("a-long-enough-webhook-secret".into()),
            secret_file: None,
            event_types: vec!["OrderPlaced".into(), "OrderAccepted".into()],
            max_age_secs: 7 * 24 * 60 * 60,
            initial_backoff_ms: 50,
            max_backoff_ms: 200,
            concurrency: 4,
        }];
    };
    let node = TestNode::start_with(sink).await;
    let shop: ShopId = "hooks".parse().unwrap();
    {
        let olga = node.client("olga").await;
        let alice = node.client("alice").await;
        open_shop(&olga, &shop, 5).await;
        alice
            .cart_add(&shop, "bread".parse().unwrap(), None, 1)
            .await
            .unwrap();
        alice
            .checkout(&shop, "h1".parse().unwrap(), None)
            .await
            .unwrap();
    }
    // The backend is down: the event is attempted (and retried) but not delivered.
    let deadline = tokio::time::Instant::now() + WAIT;
    while receiver.requests().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no attempts");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dir = node.stop().await;
    // The backend recovers while the node is down; the node comes back and delivers.
    receiver
        .accept
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let attempts_before = receiver.requests().len();
    let node = TestNode::start_in_dir_with(dir, sink).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let requests = receiver.requests();
        if requests.len() > attempts_before {
            let (headers, body) = &requests[attempts_before];
            assert_eq!(header(headers, "piazza-event-type"), Some("OrderPlaced"));
            assert_eq!(header(headers, "piazza-redelivery"), Some("true"));
            assert!(header(headers, "piazza-signature").is_some_and(|s| s.contains("v1=")));
            assert!(
                body.contains("\"OrderPlaced\"") && body.contains("\"h1\""),
                "{body}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never redelivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // New events flow normally; filtered ones (StockReserved, CouponRedeemed…) never come.
    let olga = node.client("olga").await;
    olga.order_command(
        &shop,
        "h1".parse().unwrap(),
        olga.new_command_id(),
        OrderCommand::Accept,
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let types: Vec<String> = receiver
            .requests()
            .iter()
            .filter_map(|(h, _)| header(h, "piazza-event-type").map(str::to_owned))
            .collect();
        if types.iter().any(|t| t == "OrderAccepted") {
            assert!(
                types
                    .iter()
                    .all(|t| t == "OrderPlaced" || t == "OrderAccepted")
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no OrderAccepted: {types:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn product_messages_offers_and_quick_replies() {
    use piazza_protocol::commerce::{Offer, OfferPrice, OfferTarget};
    let node = TestNode::start().await;
    let olga = node.client("olga").await;
    let alice = node.client("alice").await;
    let shop: ShopId = "cards".parse().unwrap();
    open_shop(&olga, &shop, 10).await;
    olga.put_product(&shop, product("cake", 1800))
        .await
        .unwrap();
    // 20 % off bread for an hour: prices, carts and product cards follow.
    let now = piazza_protocol_now();
    olga.put_offer(
        &shop,
        Offer {
            id: "morning".parse().unwrap(),
            target: OfferTarget::Product("bread".parse().unwrap()),
            price: OfferPrice::PercentOff { basis_points: 2000 },
            starts_ms: now - 1000,
            ends_ms: now + 3_600_000,
        },
    )
    .await
    .unwrap();
    let bread = alice
        .product(&shop, "bread".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(bread.prices, vec![eur(200)]);

    let posted = olga
        .send_product(&shop, user("alice"), "bread".parse().unwrap())
        .await
        .unwrap();
    let message = next_message(&alice, WAIT).await;
    assert_eq!(message.seq, posted.seq);
    assert_eq!(
        message.sender,
        user("olga"),
        "product messages come from the staff member"
    );
    match &message.body {
        MessageBody::Commerce(body) => match body.as_ref() {
            CommerceBody::Product { product, .. } => assert_eq!(product.price, eur(200)),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    olga.send_product_list(
        &shop,
        user("alice"),
        "Today",
        vec![
            ("Bread".into(), vec!["bread".parse().unwrap()]),
            ("Cakes".into(), vec!["cake".parse().unwrap()]),
        ],
    )
    .await
    .unwrap();
    let message = next_message(&alice, WAIT).await;
    match &message.body {
        MessageBody::Commerce(body) => match body.as_ref() {
            CommerceBody::ProductList { sections, .. } => {
                assert_eq!(sections.len(), 2);
                assert_eq!(sections[1].1[0].price, eur(1800));
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    // More than 30 products in a list is refused on the wire.
    let too_many = vec![("All".to_string(), vec!["bread".parse().unwrap(); 31])];
    let e = olga
        .send_product_list(&shop, user("alice"), "Everything", too_many)
        .await
        .unwrap_err();
    assert!(matches!(e, piazza_client::ClientError::Invalid(_)), "{e}");
    // Product messages and lists go to customers only, not to staff.
    let e = olga
        .send_product_list(
            &shop,
            user("olga"),
            "Staff",
            vec![("Bread".into(), vec!["bread".parse().unwrap()])],
        )
        .await
        .unwrap_err();
    assert!(matches!(code(e), ErrorCode::Invalid { .. }));
    let e = olga
        .send_product(&shop, user("olga"), "bread".parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(code(e), ErrorCode::Invalid { .. }));
    // Customers cannot send product messages.
    let e = alice
        .send_product(&shop, user("bob"), "bread".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(code(e), ErrorCode::Forbidden);
    // Quick replies are staff-only knowledge.
    olga.put_quick_reply(&shop, "/thanks", "Thank you, see you soon!")
        .await
        .unwrap();
    assert_eq!(olga.shop_info(&shop).await.unwrap().quick_replies.len(), 1);
    assert!(
        alice
            .shop_info(&shop)
            .await
            .unwrap()
            .quick_replies
            .is_empty()
    );
}

fn piazza_protocol_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn unpaid_orders_expire_on_time_and_release_their_stock() {
    let node = TestNode::start_with(|config| config.commerce.unpaid_order_ttl_secs = 1).await;
    let olga = node.client("olga").await;
    let alice = node.client("alice").await;
    let shop: ShopId = "expiry".parse().unwrap();
    open_shop(&olga, &shop, 3).await;
    alice
        .cart_add(&shop, "bread".parse().unwrap(), None, 3)
        .await
        .unwrap();
    alice
        .checkout(&shop, "late".parse().unwrap(), None)
        .await
        .unwrap();
    let bread = alice
        .product(&shop, "bread".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(bread.available, vec![Some(0)]);
    // Nobody pays: the shop's timer expires the order after a second.
    let expired = wait_order(&alice, &shop, "late", |o| o.status == OrderStatus::Expired).await;
    assert!(expired.payments.is_empty());
    let bread = alice
        .product(&shop, "bread".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(bread.available, vec![Some(3)]);
    // The order message shows it.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let message = next_message(&alice, WAIT).await;
        if let MessageBody::Update(MessageUpdate::Order { order, .. }) = &message.body
            && order.status == OrderStatus::Expired
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
    }
}

#[tokio::test]
async fn a_passivated_or_restarted_shop_is_woken_for_its_timers() {
    let tweak = |config: &mut piazza_node::Config| {
        config.commerce.unpaid_order_ttl_secs = 2;
        config.limits.conversation_idle_ms = 200;
    };
    let node = TestNode::start_with(tweak).await;
    let shop: ShopId = "sleepy".parse().unwrap();
    {
        let olga = node.client("olga").await;
        let alice = node.client("alice").await;
        open_shop(&olga, &shop, 3).await;
        alice
            .cart_add(&shop, "bread".parse().unwrap(), None, 1)
            .await
            .unwrap();
        alice
            .checkout(&shop, "nap".parse().unwrap(), None)
            .await
            .unwrap();
    }
    // The node restarts before the order expires; nobody touches the shop afterwards: the
    // node's waker activates it for its timer, and alice sees the order expire.
    let dir = node.stop().await;
    let node = TestNode::start_in_dir_with(dir, tweak).await;
    let alice = node.client("alice").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline - tokio::time::Instant::now();
        let message = next_message(&alice, left).await;
        if let MessageBody::Update(MessageUpdate::Order { order, .. }) = &message.body
            && order.status == OrderStatus::Expired
        {
            break;
        }
    }
    // And a shop that passivated while idle is woken the same way.
    let bob = node.client("bob").await;
    bob.cart_add(&shop, "bread".parse().unwrap(), None, 1)
        .await
        .unwrap();
    bob.checkout(&shop, "nap2".parse().unwrap(), None)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline - tokio::time::Instant::now();
        let message = next_message(&bob, left).await;
        if let MessageBody::Update(MessageUpdate::Order { order, .. }) = &message.body
            && order.status == OrderStatus::Expired
        {
            break;
        }
    }
}
