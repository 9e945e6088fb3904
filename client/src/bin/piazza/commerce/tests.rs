//! The commerce commands without a node: that every command line of the walkthrough parses into
//! the operation it should, that the multi-part arguments (hours, variants, sections, windows)
//! are read exactly and refused when wrong, and the shape of the text and JSON output.

use clap::{CommandFactory, Parser};
use piazza_client::commerce::{
    CartView, Discount, LineView, OfferPrice, OfferTarget, OpenWindow, OrderStatus, OrderView,
    PaymentState, PaymentView, SegmentAtom, ShopProfile, StaffRole,
};
use piazza_client::{Currency, Message, MessageBody, MessageUpdate, Money, Page, Seq};

use super::parse::{self, DAY_MS};
use super::{
    CatalogCommand, CouponCommand, PromoCommand, ShopCommand, page_json, refundable, show_cart,
    show_hours, show_order, show_product,
};
use crate::{Cli, Command};

const NOW_MS: u64 = 1_780_000_000_000;

fn eur(minor: i64) -> Money {
    Money::new(minor, currency("EUR"))
}

fn currency(code: &str) -> Currency {
    code.parse().unwrap()
}

fn cli(line: &str) -> Command {
    let args: Vec<String> = std::iter::once("piazza".to_owned())
        .chain(split(line))
        .collect();
    match Cli::try_parse_from(args) {
        Ok(cli) => cli.command,
        Err(error) => panic!("{line}: {error}"),
    }
}

fn refused(line: &str) {
    let args: Vec<String> = std::iter::once("piazza".to_owned())
        .chain(split(line))
        .collect();
    assert!(
        Cli::try_parse_from(args).is_err(),
        "{line} should be refused"
    );
}

/// Splits on spaces, keeping "double-quoted parts" together, and stops at a shell comment or
/// pipe (enough for these tests and the walkthrough).
fn split(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    if let Some(end) = words.iter().position(|w| w.starts_with('#') || w == "|") {
        words.truncate(end);
    }
    words
}

/// The `piazza` command lines of the walkthrough (continuations joined, the token variable and
/// program name removed).
fn walkthrough_commands() -> Vec<String> {
    const WALKTHROUGH: &str = include_str!("../../../../../docs/commerce-walkthrough.md");
    let joined = WALKTHROUGH.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|line| line.trim().strip_prefix("PIAZZA_TOKEN=$"))
        .filter_map(|rest| {
            rest.split_once(" piazza ")
                .map(|(_, command)| command.to_owned())
        })
        .collect()
}

#[test]
fn the_command_line_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn every_walkthrough_command_parses() {
    // Every subcommand, in the forms the walkthrough does not show as well.
    for line in [
        "shop create bakery --name \"Forno Rossi\" --description \"Bread since 1962\" --address \"Via Roma 1\" --category bakery --website https://forno.example",
        "shop info bakery",
        "shop stats bakery",
        "shop edit bakery --website https://rossi.example --no-avatar",
        "shop verify bakery",
        "shop verify bakery --off",
        "shop hours bakery --tz Europe/Rome --open \"mon-fri 07:00-13:00,15:00-19:00\" --open \"sat 08:00-12:00\" --closed 2026-12-25 --special \"2026-12-24 07:00-12:00\"",
        "shop hours bakery --clear",
        "shop replies bakery --greeting \"Ciao!\" --away \"We are closed\"",
        "shop quick-reply bakery /thanks \"Thank you!\"",
        "shop quick-reply bakery /thanks --remove",
        "shop staff bakery bob --role agent",
        "shop staff bakery bob --role none",
        "shop assign bakery alice --agent bob",
        "shop assign bakery alice",
        "shop label bakery alice vip",
        "shop label bakery alice vip --remove",
        "shop send-product bakery alice croissant",
        "shop send-list bakery alice --header \"Today\" --section \"Breakfast=croissant,cornetto\" --section \"Bread=loaf\"",
        "shop ask bakery croissant \"Are they vegan?\"",
        "shop chat bakery \"Hello\"",
        "shop chat bakery --customer alice \"Hello Alice\"",
        "shop history bakery --customer alice --limit 10",
        "catalog put bakery menu --title Menu",
        "catalog category bakery pastry --title Pastry",
        "catalog product bakery croissant --catalog menu --title Croissant --price 1.50 --currency EUR --category pastry --description Buttery",
        "catalog product bakery tshirt --catalog menu --title T-shirt --price 20 --currency EUR --variant \"s:Small\" --variant \"l:Large:22.00\" --inactive",
        "catalog stock bakery croissant --on-hand 40",
        "catalog stock bakery tshirt --variant s --untracked",
        "catalog offer bakery happy-hour --category pastry --percent-off 20 --for-secs 3600",
        "catalog offer bakery cheap --product croissant --price 1.20 --currency EUR --from-ms 1 --until-ms 2",
        "catalog offer bakery sale --all --percent-off 10 --until-ms 1900000000000",
        "catalog remove-offer bakery sale",
        "catalog list bakery --catalog menu --limit 100",
        "catalog list bakery --after croissant",
        "catalog show bakery croissant",
        "cart add bakery croissant --quantity 4",
        "cart add bakery tshirt --variant l",
        "cart set bakery croissant --quantity 2",
        "cart remove bakery croissant",
        "cart clear bakery",
        "cart show bakery",
        "order checkout bakery --coupon welcome10",
        "order checkout bakery --order o-1 --coupon WELCOME10",
        "order accept bakery o-1",
        "order reject bakery o-1 --reason \"sold out\"",
        "order pay bakery o-1",
        "order pay bakery o-1 --instalments 3 --every-days 30 --command-id pay-1",
        "order retry-pay bakery o-1",
        "order cancel bakery o-1 --reason changed",
        "order fulfil bakery o-1 --tracking \"DHL 12345\"",
        "order deliver bakery o-1",
        "order complete bakery o-1",
        "order refund bakery o-1",
        "order refund bakery o-1 --amount 1.50",
        "order refund bakery o-1 --amount 1.50 --currency EUR",
        "order show bakery o-1",
        "order list bakery --after o-1 --limit 10",
        "coupon put bakery welcome10 --percent 10 --for-days 30 --per-customer-max 1",
        "coupon put bakery fiver --amount 5.00 --currency EUR --minimum 20.00 --from-ms 1 --until-ms 2 --total-max 100",
        "coupon enable bakery fiver",
        "coupon disable bakery fiver",
        "coupon list bakery",
        "promo opt-in bakery --scope offers",
        "promo opt-out bakery --scope news",
        "promo consents bakery",
        "promo quota bakery --count 2 --window-days 7",
        "promo send bakery spring --scope offers --text \"20% off pastry\" --label vip --past-purchasers --product croissant",
    ] {
        cli(line);
    }
}

#[test]
fn every_command_of_the_walkthrough_parses() {
    let commands = walkthrough_commands();
    assert!(commands.len() > 40, "found only {}", commands.len());
    for line in &commands {
        cli(line);
    }
}

#[test]
fn incomplete_or_contradictory_commands_are_refused() {
    for line in [
        // Stock needs a figure or --untracked, not both.
        "catalog stock bakery croissant",
        "catalog stock bakery croissant --on-hand 1 --untracked",
        // An offer needs exactly one target, a price and an end.
        "catalog offer bakery o --percent-off 10 --for-secs 60",
        "catalog offer bakery o --all --product p --percent-off 10 --for-secs 60",
        "catalog offer bakery o --all --for-secs 60",
        "catalog offer bakery o --all --percent-off 10",
        "catalog offer bakery o --product p --price 1.00 --for-secs 60",
        // Amounts need their currency; instalments need their interval.
        "coupon put bakery c --amount 5.00 --for-days 1",
        "coupon put bakery c --percent 10 --amount 5 --currency EUR --for-days 1",
        "coupon put bakery c --percent 10",
        "coupon put bakery c --percent 10 --minimum 20 --for-days 1",
        "order pay bakery o-1 --instalments 3",
        "order pay bakery o-1 --instalments 1 --every-days 30",
        "order refund bakery o-1 --currency EUR",
        "catalog product bakery p --catalog m --title T --price 1.00",
        "catalog list bakery --limit 101",
        "catalog list bakery --limit 0",
        "cart add bakery p --quantity 0",
        "shop staff bakery bob --role boss",
        "shop hours bakery --open \"mon 09:00-10:00\"",
        "shop hours bakery --clear --tz UTC",
        "shop quick-reply bakery /x",
        "promo opt-in bakery --scope spam",
        "shop create bad!id --name X",
        "order checkout bakery --order \"has space\"",
    ] {
        refused(line);
    }
}

#[test]
fn opening_hours_are_read_per_day_and_window() {
    let week = parse::open_spec("mon-fri 09:00-18:00").unwrap();
    assert_eq!(week.len(), 5);
    assert_eq!(
        week[0],
        OpenWindow {
            weekday: 1,
            opens_min: 9 * 60,
            closes_min: 18 * 60
        }
    );
    assert_eq!(week[4].weekday, 5);

    // Ranges wrap past Sunday; lists and several windows multiply.
    let days = |spec: &str| {
        parse::open_spec(spec)
            .unwrap()
            .iter()
            .map(|w| w.weekday)
            .collect::<Vec<_>>()
    };
    assert_eq!(days("fri-mon 10:00-12:00"), [5, 6, 7, 1]);
    assert_eq!(days("Sat,SUNDAY 10:00-13:00,15:00-18:00"), [6, 6, 7, 7]);
    assert_eq!(days("mon,mon-tue 10:00-11:00"), [1, 2]);
    let whole_day = parse::open_spec("sun 00:00-24:00").unwrap();
    assert_eq!((whole_day[0].opens_min, whole_day[0].closes_min), (0, 1440));

    for bad in [
        "mon",
        "mon 18:00-09:00",
        "mon 09:00-09:00",
        "mon 09:00-24:01",
        "mon 09:00-25:00",
        "mon 9:00-10:00",
        "mon 09:60-10:00",
        "xyz 09:00-10:00",
        "mon-xyz 09:00-10:00",
        "mon 09:00",
        "mon 09:00-10:00,",
    ] {
        assert!(parse::open_spec(bad).is_err(), "{bad:?}");
    }

    // All --open together: sorted, and at most 28 windows.
    let weekly = parse::weekly(&[
        "sat 10:00-13:00".to_owned(),
        "mon-fri 09:00-18:00".to_owned(),
    ])
    .unwrap();
    assert_eq!(
        weekly.iter().map(|w| w.weekday).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    let four_a_day = "mon-sun 06:00-07:00,08:00-09:00,10:00-11:00,12:00-13:00".to_owned();
    assert_eq!(
        parse::weekly(std::slice::from_ref(&four_a_day))
            .unwrap()
            .len(),
        28
    );
    assert!(parse::weekly(&[four_a_day, "mon 20:00-21:00".to_owned()]).is_err());
}

#[test]
fn dated_exceptions_are_closed_days_or_special_windows() {
    let closed = parse::closed_day("2026-12-25").unwrap();
    assert_eq!(closed.date, "2026-12-25");
    assert!(closed.windows.is_empty());
    let special = parse::special_day("2026-12-24 07:00-12:00,16:00-18:00").unwrap();
    assert_eq!(special.windows, [(420, 720), (960, 1080)]);
    for bad in [
        "2026-13-01",
        "2026-12-32",
        "26-12-25",
        "2026/12/25",
        "2026-1-05",
        "",
    ] {
        assert!(parse::closed_day(bad).is_err(), "{bad:?}");
    }
    assert!(parse::special_day("2026-12-24").is_err());

    let hours = piazza_client::commerce::Hours {
        time_zone: "Europe/Rome".into(),
        weekly: parse::open_spec("mon 09:00-18:30").unwrap(),
        exceptions: vec![closed, special],
    };
    assert_eq!(
        show_hours(&hours),
        "Europe/Rome: mon 09:00-18:30; closed 2026-12-25; 2026-12-24 07:00-12:00,16:00-18:00"
    );
}

#[test]
fn variants_are_id_title_and_optional_price() {
    let eur = currency("EUR");
    let large = parse::variant("l:Large:22.00", eur).unwrap();
    assert_eq!(
        (large.id.as_str(), large.title.as_str(), large.price),
        ("l", "Large", Some(self::eur(2200)))
    );
    let small = parse::variant("s:Small", eur).unwrap();
    assert_eq!((small.title.as_str(), small.price), ("Small", None));
    // A title with ':' needs the price part, which may be empty.
    let colon = parse::variant("x:Size: 42:", eur).unwrap();
    assert_eq!((colon.title.as_str(), colon.price), ("Size: 42", None));
    let colon_priced = parse::variant("x:Size: 42:9.5", eur).unwrap();
    assert_eq!(colon_priced.price, Some(self::eur(950)));
    for bad in [
        "x",
        "x:",
        "x: :1.00",
        "bad id:Red",
        "x:Red:1.005",
        "x:Red:-1",
        ":Red",
    ] {
        assert!(parse::variant(bad, eur).is_err(), "{bad:?}");
    }
}

#[test]
fn sections_are_a_title_and_product_ids() {
    let (title, products) = parse::section("Breakfast=croissant, cornetto").unwrap();
    assert_eq!(title, "Breakfast");
    assert_eq!(
        products.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        ["croissant", "cornetto"]
    );
    // The last '=' separates: product ids never contain one.
    assert_eq!(parse::section("2=1 deals=p1").unwrap().0, "2=1 deals");
    for bad in [
        "no products",
        "=p1",
        "Title=",
        "Title=p1,,p2",
        "Title=bad id",
    ] {
        assert!(parse::section(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn windows_start_now_unless_told_and_must_not_be_empty() {
    assert_eq!(
        parse::window(NOW_MS, None, None, Some(60_000)).unwrap(),
        (NOW_MS, NOW_MS + 60_000)
    );
    assert_eq!(
        parse::window(NOW_MS, Some(5), Some(9), None).unwrap(),
        (5, 9)
    );
    assert!(parse::window(NOW_MS, None, None, None).is_err());
    assert!(parse::window(NOW_MS, None, Some(NOW_MS + 1), Some(1)).is_err());
    assert!(parse::window(NOW_MS, Some(9), Some(9), None).is_err());
    assert!(parse::window(NOW_MS, None, Some(NOW_MS - 1), None).is_err());
    assert!(parse::window(NOW_MS, None, None, Some(0)).is_err());
}

#[test]
fn offers_become_the_wire_offer() {
    let Command::Catalog(CatalogCommand::Offer(args)) = cli(
        "catalog offer bakery o1 --product tshirt --variant l --percent-off 12.5 --for-secs 60",
    ) else {
        panic!("not an offer");
    };
    let (shop, offer) = args.offer(NOW_MS).unwrap();
    assert_eq!(shop.as_str(), "bakery");
    assert_eq!(
        offer.target,
        OfferTarget::Variant("tshirt".parse().unwrap(), "l".parse().unwrap())
    );
    assert_eq!(offer.price, OfferPrice::PercentOff { basis_points: 1250 });
    assert_eq!((offer.starts_ms, offer.ends_ms), (NOW_MS, NOW_MS + 60_000));

    let Command::Catalog(CatalogCommand::Offer(args)) = cli(
        "catalog offer bakery o2 --product croissant --price 1.20 --currency EUR --from-ms 10 --until-ms 20",
    ) else {
        panic!("not an offer");
    };
    let (_, offer) = args.offer(NOW_MS).unwrap();
    assert_eq!(
        offer.target,
        OfferTarget::Product("croissant".parse().unwrap())
    );
    assert_eq!(offer.price, OfferPrice::Fixed(eur(120)));
    assert_eq!((offer.starts_ms, offer.ends_ms), (10, 20));

    let Command::Catalog(CatalogCommand::Offer(args)) =
        cli("catalog offer bakery o3 --all --percent-off 101 --for-secs 60")
    else {
        panic!("not an offer");
    };
    assert!(args.offer(NOW_MS).is_err(), "more than 100 % off");

    let Command::Catalog(CatalogCommand::Offer(args)) =
        cli("catalog offer bakery o4 --category pastry --price 1.00 --currency EUR --for-secs 60")
    else {
        panic!("not an offer");
    };
    assert!(
        args.offer(NOW_MS).is_err(),
        "one fixed price for many products"
    );
}

#[test]
fn products_become_the_wire_product() {
    let Command::Catalog(CatalogCommand::Product(args)) = cli(
        "catalog product bakery tshirt --catalog merch --title T-shirt --price 20 --currency EUR --category clothes --variant s:Small --variant l:Large:22.50 --inactive",
    ) else {
        panic!("not a product");
    };
    let (_, spec) = args.spec().unwrap();
    assert_eq!(spec.price, eur(2000));
    assert_eq!(spec.variants.len(), 2);
    assert_eq!(spec.variants[1].price, Some(eur(2250)));
    assert_eq!(spec.categories[0].as_str(), "clothes");
    assert!(!spec.active);

    let Command::Catalog(CatalogCommand::Product(args)) = cli(
        "catalog product bakery onigiri --catalog menu --title Onigiri --price 1.5 --currency JPY",
    ) else {
        panic!("not a product");
    };
    assert!(args.spec().is_err(), "yen have no decimals");
}

#[test]
fn coupons_become_the_wire_coupon() {
    let Command::Coupon(CouponCommand::Put(args)) =
        cli("coupon put bakery welcome10 --percent 10 --for-days 30 --per-customer-max 1")
    else {
        panic!("not a coupon");
    };
    let (_, spec) = args.spec(NOW_MS).unwrap();
    assert_eq!(spec.code.as_str(), "WELCOME10");
    assert_eq!(spec.discount, Discount::Percent { basis_points: 1000 });
    assert_eq!(
        (spec.starts_ms, spec.ends_ms),
        (NOW_MS, NOW_MS + 30 * DAY_MS)
    );
    assert_eq!(
        (spec.total_max, spec.per_customer_max, spec.minimum),
        (None, Some(1), None)
    );

    let Command::Coupon(CouponCommand::Put(args)) = cli(
        "coupon put bakery fiver --amount 5 --currency EUR --minimum 20.00 --until-ms 1900000000000",
    ) else {
        panic!("not a coupon");
    };
    let (_, spec) = args.spec(NOW_MS).unwrap();
    assert_eq!(spec.discount, Discount::Amount(eur(500)));
    assert_eq!(spec.minimum, Some(eur(2000)));
}

#[test]
fn promotion_conditions_form_one_clause() {
    let segment = |line: &str| {
        let Command::Promo(PromoCommand::Send(args)) = cli(line) else {
            panic!("not a promotion");
        };
        args.segment()
    };
    assert!(
        segment("promo send bakery p --scope news --text Hi")
            .any
            .is_empty()
    );
    let one = segment(
        "promo send bakery p --scope offers --text Hi --label vip --without-label staff --past-purchasers --purchased croissant --interested-in loaf",
    );
    assert_eq!(one.any.len(), 1);
    let clause = &one.any[0];
    assert_eq!(clause.len(), 5);
    assert_eq!(clause[0].atom, SegmentAtom::Label("vip".parse().unwrap()));
    assert!(!clause[0].negated);
    assert!(clause[1].negated, "--without-label negates");
    assert_eq!(clause[2].atom, SegmentAtom::PastPurchaser);
}

#[test]
fn staff_roles_include_none() {
    let Command::Shop(ShopCommand::Staff { role, .. }) =
        cli("shop staff bakery bob --role manager")
    else {
        panic!("not staff");
    };
    assert_eq!(role, parse::RoleChoice(Some(StaffRole::Manager)));
    let Command::Shop(ShopCommand::Staff { role, .. }) = cli("shop staff bakery bob --role none")
    else {
        panic!("not staff");
    };
    assert_eq!(role, parse::RoleChoice(None));
}

#[test]
fn profile_edits_keep_what_was_not_given() {
    let profile = ShopProfile {
        name: "Forno".into(),
        website: "https://old.example".into(),
        avatar: Some("a".repeat(64).parse().unwrap()),
        ..ShopProfile::default()
    };
    let changes = |line: &str| {
        let Command::Shop(ShopCommand::Edit { changes, .. }) = cli(line) else {
            panic!("not an edit");
        };
        changes
    };
    assert_eq!(changes("shop edit bakery").apply(profile.clone()), None);
    let edited = changes("shop edit bakery --website https://new.example --no-avatar")
        .apply(profile.clone())
        .unwrap();
    assert_eq!(edited.name, "Forno");
    assert_eq!(edited.website, "https://new.example");
    assert_eq!(edited.avatar, None);
}

fn line(product: &str, title: &str, quantity: u32, unit_minor: i64) -> LineView {
    LineView {
        product: product.parse().unwrap(),
        variant: None,
        title: title.into(),
        quantity,
        unit_price: eur(unit_minor),
        line_total: eur(unit_minor * i64::from(quantity)),
    }
}

fn order() -> OrderView {
    OrderView {
        shop: "bakery".parse().unwrap(),
        order: "o-1".parse().unwrap(),
        customer: "alice".parse().unwrap(),
        status: OrderStatus::Paid,
        lines: vec![
            line("croissant", "Croissant", 2, 150),
            line("loaf", "Loaf", 1, 300),
        ],
        subtotal: eur(600),
        discount: eur(60),
        total: eur(540),
        coupon: Some("WELCOME10".parse().unwrap()),
        placed_ms: NOW_MS,
        expires_ms: NOW_MS + DAY_MS,
        tracking: None,
        payments: vec![PaymentView {
            payment: "o-1#1".parse().unwrap(),
            number: 1,
            amount: eur(540),
            due_ms: NOW_MS,
            state: PaymentState::Captured,
            captured: eur(540),
            refunded: eur(150),
        }],
        message: Some(Seq::new(3)),
    }
}

#[test]
fn orders_print_status_lines_and_total() {
    assert_eq!(
        show_order(&order()),
        "order o-1 (alice) paid: 2 lines, total 5.40 EUR\n  \
         2 × Croissant at 1.50 EUR = 3.00 EUR\n  \
         1 × Loaf at 3.00 EUR = 3.00 EUR\n  \
         subtotal 6.00 EUR, coupon WELCOME10 -0.60 EUR\n  \
         payment o-1#1: 5.40 EUR captured (captured 5.40 EUR, refunded 1.50 EUR)"
    );
    // What `order refund` refunds when given no amount.
    assert_eq!(refundable(&order()).unwrap(), eur(390));
}

#[test]
fn carts_print_lines_and_subtotal() {
    let empty = CartView {
        lines: Vec::new(),
        subtotal: None,
        version: 0,
    };
    assert_eq!(show_cart(&empty), "your cart is empty");
    let cart = CartView {
        lines: vec![line("croissant", "Croissant", 4, 150)],
        subtotal: Some(eur(600)),
        version: 3,
    };
    assert_eq!(
        show_cart(&cart),
        "4 × Croissant at 1.50 EUR = 6.00 EUR\nsubtotal 6.00 EUR"
    );
}

#[test]
fn products_print_offer_prices_and_stock() {
    let Command::Catalog(CatalogCommand::Product(args)) = cli(
        "catalog product bakery croissant --catalog menu --title Croissant --price 1.50 --currency EUR",
    ) else {
        panic!("not a product");
    };
    let (_, spec) = args.spec().unwrap();
    let view = piazza_client::commerce::ProductView {
        spec,
        prices: vec![eur(120)],
        available: vec![Some(12)],
    };
    assert_eq!(
        show_product(&view),
        "croissant Croissant: 1.20 EUR (was 1.50 EUR), 12 available"
    );
}

#[test]
fn json_output_is_the_wire_payload() {
    let value = serde_json::to_value(order()).unwrap();
    assert_eq!(value["order"], "o-1");
    assert_eq!(value["shop"], "bakery");
    assert_eq!(value["customer"], "alice");
    assert_eq!(value["status"], "Paid");
    assert_eq!(value["coupon"], "WELCOME10");
    assert_eq!(
        value["total"],
        serde_json::json!({ "minor": 540, "currency": "EUR" })
    );
    assert_eq!(value["lines"][0]["quantity"], 2);
    assert_eq!(value["payments"][0]["state"], "Captured");
    assert_eq!(value["message"], 3);

    let page = Page {
        items: vec![order()],
        more: true,
    };
    let value = page_json("orders", &page);
    assert_eq!(value["more"], true);
    assert_eq!(value["orders"][0]["order"], "o-1");
}

#[test]
fn commerce_messages_appear_in_message_json() {
    let message = |body| Message {
        conversation: "s:bakery:alice".parse().unwrap(),
        seq: Seq::new(4),
        sender: "alice".parse().unwrap(),
        client_msg_id: "m-1".parse().unwrap(),
        sent_at_ms: NOW_MS,
        body,
        reply_to: None,
        forwarded_from: None,
        edited_at_ms: None,
        reactions: Vec::new(),
    };
    let placed = message(MessageBody::Commerce(Box::new(
        piazza_client::commerce::CommerceBody::Order(order()),
    )));
    assert_eq!(crate::commerce_json(&placed.body)["Order"]["order"], "o-1");
    assert_eq!(
        crate::describe(&placed),
        (
            "[order o-1 (alice) paid: 2 lines, total 5.40 EUR]".to_owned(),
            false
        )
    );

    let update = message(MessageBody::Update(MessageUpdate::Order {
        target: Seq::new(3),
        order: Box::new(order()),
    }));
    let value = crate::commerce_json(&update.body);
    assert_eq!(value["order_update"]["target"], 3);
    assert_eq!(value["order_update"]["order"]["status"], "Paid");
    assert_eq!(
        crate::describe(&update).0,
        "order o-1 [3] is now paid, total 5.40 EUR"
    );
    assert_eq!(
        crate::commerce_json(&MessageBody::Text("hi".into())),
        serde_json::Value::Null
    );
}
