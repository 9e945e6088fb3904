//! Webhook signatures: one `check` per case.

use crate::payments::ProviderError;
use crate::payments::signature::{header_value, sign, verify};

const SECRET: &[u8] = b"whsec_test";
const BODY: &[u8] = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;
/// 2023-11-14T22:13:20Z.
const NOW_SECS: u64 = 1_700_000_000;
const TOLERANCE_SECS: u64 = 300;

fn check(header: Option<&str>, body: &[u8]) -> Result<(), ProviderError> {
    verify(SECRET, header, body, NOW_SECS * 1000 + 500, TOLERANCE_SECS)
}

#[test]
fn a_good_signature_verifies() {
    let header = header_value(SECRET, NOW_SECS, BODY);
    check(Some(&header), BODY).unwrap();
    // Within the tolerance on both sides, to the second.
    for t in [NOW_SECS - TOLERANCE_SECS, NOW_SECS + TOLERANCE_SECS] {
        check(Some(&header_value(SECRET, t, BODY)), BODY).unwrap();
    }
}

#[test]
fn the_signature_is_hex_hmac_sha256_of_timestamp_dot_body() {
    // The published HMAC-SHA256 test vector: ring is the standard HMAC.
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"key");
    let fox = ring::hmac::sign(&key, b"The quick brown fox jumps over the lazy dog");
    assert_eq!(
        fox.as_ref()[..4],
        [0xf7, 0xbc, 0x83, 0xf4],
        "HMAC-SHA256 test vector"
    );
    // And the signed payload is "<t>.<body>", hex in lower case.
    let tag = ring::hmac::sign(&key, b"42.hello");
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(sign(b"key", 42, b"hello"), hex);
    assert_eq!(header_value(b"key", 42, b"hello"), format!("t=42,v1={hex}"));
}

#[test]
fn a_wrong_secret_is_a_bad_signature() {
    let header = header_value(b"whsec_other", NOW_SECS, BODY);
    assert!(matches!(
        check(Some(&header), BODY),
        Err(ProviderError::BadSignature)
    ));
}

#[test]
fn a_tampered_body_is_a_bad_signature() {
    let header = header_value(SECRET, NOW_SECS, BODY);
    let tampered = br#"{"id":"evt_1","type":"payment_intent.canceled"}"#;
    assert!(matches!(
        check(Some(&header), tampered),
        Err(ProviderError::BadSignature)
    ));
}

#[test]
fn a_stale_or_future_timestamp_is_refused() {
    for t in [
        NOW_SECS - TOLERANCE_SECS - 1,
        NOW_SECS + TOLERANCE_SECS + 1,
        0,
    ] {
        let header = header_value(SECRET, t, BODY);
        assert!(
            matches!(
                check(Some(&header), BODY),
                Err(ProviderError::StaleTimestamp)
            ),
            "t = {t}"
        );
    }
}

#[test]
fn a_changed_timestamp_breaks_the_signature() {
    // The timestamp is signed: moving it into the window does not help a replay.
    let old = header_value(SECRET, NOW_SECS - 3600, BODY);
    let moved = old.replacen(
        &format!("t={}", NOW_SECS - 3600),
        &format!("t={NOW_SECS}"),
        1,
    );
    assert!(matches!(
        check(Some(&moved), BODY),
        Err(ProviderError::BadSignature)
    ));
}

#[test]
fn one_matching_v1_among_several_is_enough() {
    let good = sign(SECRET, NOW_SECS, BODY);
    let other = sign(b"whsec_old", NOW_SECS, BODY);
    let header = format!("t={NOW_SECS},v1={other},v0=abc,v1={good}");
    check(Some(&header), BODY).unwrap();
    // Upper-case hex and spaces after commas are accepted.
    let header = format!("t={NOW_SECS}, v1={}", good.to_uppercase());
    check(Some(&header), BODY).unwrap();
    // None matching.
    let header = format!("t={NOW_SECS},v1={other},v1={other}");
    assert!(matches!(
        check(Some(&header), BODY),
        Err(ProviderError::BadSignature)
    ));
}

#[test]
fn missing_or_malformed_headers_are_bad_signatures() {
    let good = sign(SECRET, NOW_SECS, BODY);
    let long = format!("t={NOW_SECS},{}", "v1=00,".repeat(200));
    let cases = [
        None,
        Some(String::new()),
        Some("garbage".to_owned()),
        Some(format!("v1={good}")),
        Some(format!("t={NOW_SECS}")),
        Some(format!("t=soon,v1={good}")),
        Some(format!("t={NOW_SECS},t={NOW_SECS},v1={good}")),
        Some(format!("t={NOW_SECS},v1=zz{}", &good[2..])),
        Some(format!("t={NOW_SECS},v1={}", &good[..62])),
        Some(format!("t=-{NOW_SECS},v1={good}")),
        Some(long),
    ];
    for header in cases {
        assert!(
            matches!(
                check(header.as_deref(), BODY),
                Err(ProviderError::BadSignature)
            ),
            "{header:?}"
        );
    }
}
