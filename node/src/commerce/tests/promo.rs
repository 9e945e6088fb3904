//! Promotions: consent, segments, rolling quotas, delivery-time checks.

use std::collections::BTreeMap;

use piazza_protocol::UserId;

use super::super::error::Error;
use super::super::ids::PromotionId;
use super::super::promo::{
    CustomerProfile, PROMOTIONS_MAX, Promotion, Promotions, QUOTA_WINDOW_MS_DEFAULT, Quota,
    Refusal, SEGMENT_NODES_MAX, Scope, Segment,
};
use super::{id, user};

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

fn promo(name: &str, scope: Scope, segment: Segment) -> Promotion {
    Promotion {
        id: id(name),
        scope,
        segment,
    }
}

fn pid(s: &str) -> PromotionId {
    id(s)
}

fn profiles() -> BTreeMap<UserId, CustomerProfile> {
    let mut profiles = BTreeMap::new();
    let mut alice = CustomerProfile::default();
    alice.add_label(id("vip")).unwrap();
    alice.note_purchase(id("tea"));
    let mut bob = CustomerProfile::default();
    bob.note_interest(id("mug"));
    profiles.insert(user("alice"), alice);
    profiles.insert(user("bob"), bob);
    profiles.insert(user("carol"), CustomerProfile::default());
    profiles
}

fn audience(p: &Promotions, name: &str, now_ms: u64) -> Vec<String> {
    let profiles = profiles();
    p.audience(&pid(name), &profiles, now_ms)
        .unwrap()
        .iter()
        .map(|u| u.as_str().to_owned())
        .collect()
}

#[test]
fn nobody_receives_anything_without_consent() {
    let mut p = Promotions::new();
    p.put(promo("all", Scope::Offers, Segment::Everyone))
        .unwrap();
    assert!(audience(&p, "all", 0).is_empty());
    assert_eq!(
        p.may_deliver(&user("alice"), &pid("all"), 0),
        Err(Refusal::NoConsent)
    );
    assert_eq!(
        p.deliver(&user("alice"), &pid("all"), 0),
        Err(Refusal::NoConsent)
    );
    // Consent is per scope.
    p.opt_in(&user("alice"), Scope::News, 1);
    assert!(audience(&p, "all", 2).is_empty());
    p.opt_in(&user("alice"), Scope::Offers, 3);
    assert_eq!(audience(&p, "all", 4), ["alice"]);
    assert_eq!(p.consent(&user("alice"), Scope::Offers).unwrap().at_ms, 3);
}

#[test]
fn opt_out_is_honoured_by_promotions_in_flight() {
    let mut p = Promotions::new();
    p.put(promo("all", Scope::Offers, Segment::Everyone))
        .unwrap();
    for who in ["alice", "bob"] {
        p.opt_in(&user(who), Scope::Offers, 0);
    }
    let targets = audience(&p, "all", 10);
    assert_eq!(targets, ["alice", "bob"]);
    // Bob opts out while the promotion is being delivered.
    p.opt_out(&user("bob"), Scope::Offers, 11);
    assert_eq!(p.deliver(&user("alice"), &pid("all"), 12), Ok(()));
    assert_eq!(
        p.deliver(&user("bob"), &pid("all"), 12),
        Err(Refusal::NoConsent)
    );
    assert!(!p.consent(&user("bob"), Scope::Offers).unwrap().granted);
    assert_eq!(
        p.deliver(&user("alice"), &pid("all"), 13),
        Err(Refusal::AlreadyDelivered)
    );
    assert!(audience(&p, "all", 14).is_empty());
}

#[test]
fn segments_select_customers() {
    let mut p = Promotions::new();
    for who in ["alice", "bob", "carol"] {
        p.opt_in(&user(who), Scope::Products, 0);
    }
    let cases: [(&str, Segment, &[&str]); 7] = [
        ("everyone", Segment::Everyone, &["alice", "bob", "carol"]),
        ("vip", Segment::Label(id("vip")), &["alice"]),
        ("buyers", Segment::PastPurchasers, &["alice"]),
        ("tea", Segment::Purchased(id("tea")), &["alice"]),
        ("mug", Segment::InterestedIn(id("mug")), &["bob"]),
        (
            "any",
            Segment::Any(vec![
                Segment::Label(id("vip")),
                Segment::InterestedIn(id("mug")),
            ]),
            &["alice", "bob"],
        ),
        (
            "not",
            Segment::All(vec![
                Segment::Everyone,
                Segment::Not(Box::new(Segment::PastPurchasers)),
            ]),
            &["bob", "carol"],
        ),
    ];
    for (name, segment, expected) in cases {
        p.put(promo(name, Scope::Products, segment)).unwrap();
        assert_eq!(audience(&p, name, 1), expected, "segment {name}");
    }
    let big = Segment::Any(vec![Segment::Everyone; SEGMENT_NODES_MAX]);
    assert_eq!(
        p.put(promo("big", Scope::Products, big)),
        Err(Error::TooMany {
            what: "segment nodes",
            max: SEGMENT_NODES_MAX
        })
    );
    let fits = Segment::Any(vec![Segment::Everyone; SEGMENT_NODES_MAX - 1]);
    p.put(promo("fits", Scope::Products, fits)).unwrap();
}

#[test]
fn quota_is_a_rolling_window() {
    let mut p = Promotions::new();
    assert_eq!(
        p.quota(),
        Quota {
            count_max: 4,
            window_ms: QUOTA_WINDOW_MS_DEFAULT
        }
    );
    let alice = user("alice");
    p.opt_in(&alice, Scope::Offers, 0);
    for i in 0..6 {
        p.put(promo(&format!("p{i}"), Scope::Offers, Segment::Everyone))
            .unwrap();
    }
    for i in 0..4u64 {
        p.deliver(&alice, &pid(&format!("p{i}")), 1_000 + i * DAY_MS)
            .unwrap();
    }
    let later = 1_000 + 10 * DAY_MS;
    assert_eq!(
        p.deliver(&alice, &pid("p4"), later),
        Err(Refusal::QuotaReached {
            next_ms: 1_000 + QUOTA_WINDOW_MS_DEFAULT
        })
    );
    assert!(audience(&p, "p4", later).is_empty());
    assert_eq!(p.delivered_in_window(&alice, later), 4);
    // One millisecond before the first delivery leaves the window: still full.
    let edge = 1_000 + QUOTA_WINDOW_MS_DEFAULT;
    assert!(matches!(
        p.deliver(&alice, &pid("p4"), edge - 1),
        Err(Refusal::QuotaReached { .. })
    ));
    assert_eq!(p.deliver(&alice, &pid("p4"), edge), Ok(()));
    assert!(matches!(
        p.deliver(&alice, &pid("p5"), edge),
        Err(Refusal::QuotaReached { .. })
    ));
    p.prune(edge + QUOTA_WINDOW_MS_DEFAULT);
    assert_eq!(
        p.delivered_in_window(&alice, edge + QUOTA_WINDOW_MS_DEFAULT),
        0
    );
}

#[test]
fn quota_changes_and_bounds() {
    let mut p = Promotions::new();
    assert!(
        p.set_quota(Quota {
            count_max: 0,
            window_ms: DAY_MS
        })
        .is_err()
    );
    assert!(
        p.set_quota(Quota {
            count_max: 32,
            window_ms: DAY_MS
        })
        .is_err()
    );
    assert!(
        p.set_quota(Quota {
            count_max: 1,
            window_ms: DAY_MS - 1
        })
        .is_err()
    );
    p.set_quota(Quota {
        count_max: 1,
        window_ms: DAY_MS,
    })
    .unwrap();
    let alice = user("alice");
    p.opt_in(&alice, Scope::News, 0);
    p.put(promo("a", Scope::News, Segment::Everyone)).unwrap();
    p.put(promo("b", Scope::News, Segment::Everyone)).unwrap();
    p.deliver(&alice, &pid("a"), 10).unwrap();
    assert!(matches!(
        p.deliver(&alice, &pid("b"), 11),
        Err(Refusal::QuotaReached { .. })
    ));
    assert_eq!(p.deliver(&alice, &pid("b"), 10 + DAY_MS), Ok(()));
    assert_eq!(
        p.may_deliver(&alice, &pid("zzz"), 0),
        Err(Refusal::UnknownPromotion)
    );
    p.remove(&pid("a")).unwrap();
    assert_eq!(p.remove(&pid("a")), Err(Error::UnknownPromotion(pid("a"))));
    assert!(p.audience(&pid("a"), &profiles(), 0).is_err());
    for i in 0..PROMOTIONS_MAX - 1 {
        p.put(promo(&format!("x{i}"), Scope::News, Segment::Everyone))
            .unwrap();
    }
    assert!(
        p.put(promo("extra", Scope::News, Segment::Everyone))
            .is_err()
    );
}
