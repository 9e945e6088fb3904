//! Stripe-style webhook signatures: `Stripe-Signature: t=<unix secs>,v1=<hex>` where the hex is
//! HMAC-SHA256(secret, `"<t>.<body>"`).
//!
//! A header may carry several `v1` entries (while a secret is rolled, the provider signs with
//! both); one match is enough. Entries of other schemes (`v0`, …) are ignored. The signature is
//! checked before the timestamp, so an unsigned request learns nothing about the clock; the
//! comparison is ring's constant-time `hmac::verify`.

use ring::hmac;

use super::ProviderError;

/// The header's name (HTTP header names are case-insensitive; `HeaderMap` keys are lower case).
pub(crate) const SIGNATURE_HEADER: &str = "stripe-signature";

/// Longest signature header accepted, in bytes: a timestamp and a handful of 64-hex-digit
/// signatures fit in 600; anything longer is not from the provider.
pub(crate) const SIGNATURE_HEADER_BYTES_MAX: usize = 1024;

/// Most `v1` entries tried per header: two secrets during a roll, with room to spare, and a
/// bound on the HMAC work one request can cause.
pub(crate) const SIGNATURES_MAX: usize = 8;

/// Length of an HMAC-SHA256 tag in bytes.
const TAG_BYTES: usize = 32;

/// The hex HMAC-SHA256 of `"<timestamp_secs>.<body>"` under `secret` (what a provider computes;
/// the tests' provider server signs with it).
#[cfg(test)]
pub(crate) fn sign(secret: &[u8], timestamp_secs: u64, body: &[u8]) -> String {
    sign_with(
        &hmac::Key::new(hmac::HMAC_SHA256, secret),
        timestamp_secs,
        body,
    )
}

/// [`sign`] with a prepared key (a sender signing many bodies with one secret).
pub(crate) fn sign_with(key: &hmac::Key, timestamp_secs: u64, body: &[u8]) -> String {
    let tag = hmac::sign(key, &signed_payload(&timestamp_secs.to_string(), body));
    hex(tag.as_ref())
}

/// A whole header value, `t=<timestamp_secs>,v1=<signature>`, as the provider sends it.
#[cfg(test)]
pub(crate) fn header_value(secret: &[u8], timestamp_secs: u64, body: &[u8]) -> String {
    header_value_with(
        &hmac::Key::new(hmac::HMAC_SHA256, secret),
        timestamp_secs,
        body,
    )
}

/// [`header_value`] with a prepared key: also the `Piazza-Signature` of outgoing event
/// webhooks, which use the same scheme.
pub(crate) fn header_value_with(key: &hmac::Key, timestamp_secs: u64, body: &[u8]) -> String {
    format!(
        "t={timestamp_secs},v1={}",
        sign_with(key, timestamp_secs, body)
    )
}

/// Checks a signature header (`None`: the header was missing) against `body` at `now_ms`.
///
/// Errors: [`ProviderError::BadSignature`] when the header is missing, unreadable, has no `t`
/// or no `v1`, or no `v1` matches; [`ProviderError::StaleTimestamp`] when a signature matches
/// but `t` is more than `tolerance_secs` away from now (in either direction: a timestamp from
/// the future is as suspicious as an old one).
pub(crate) fn verify(
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
    now_ms: u64,
    tolerance_secs: u64,
) -> Result<(), ProviderError> {
    let header = header.ok_or(ProviderError::BadSignature)?;
    if header.len() > SIGNATURE_HEADER_BYTES_MAX {
        return Err(ProviderError::BadSignature);
    }
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let Some((name, value)) = item.trim().split_once('=') else {
            return Err(ProviderError::BadSignature);
        };
        match name {
            // Two timestamps make the signed payload ambiguous.
            "t" if timestamp.is_some() => return Err(ProviderError::BadSignature),
            "t" => timestamp = Some(value),
            "v1" if signatures.len() < SIGNATURES_MAX => {
                // An entry that is not 32 bytes of hex cannot match; skip it like the provider's
                // own libraries do.
                if let Some(tag) = unhex(value) {
                    signatures.push(tag);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(ProviderError::BadSignature)?;
    let timestamp_secs: u64 = timestamp.parse().map_err(|_| ProviderError::BadSignature)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let payload = signed_payload(timestamp, body);
    let matched = signatures
        .iter()
        .any(|tag| hmac::verify(&key, &payload, tag).is_ok());
    if !matched {
        return Err(ProviderError::BadSignature);
    }
    let now_secs = now_ms / 1000;
    if now_secs.abs_diff(timestamp_secs) > tolerance_secs {
        return Err(ProviderError::StaleTimestamp);
    }
    Ok(())
}

fn signed_payload(timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(timestamp.len() + 1 + body.len());
    payload.extend_from_slice(timestamp.as_bytes());
    payload.push(b'.');
    payload.extend_from_slice(body);
    payload
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Decodes exactly [`TAG_BYTES`] bytes of hex (either case).
fn unhex(s: &str) -> Option<[u8; TAG_BYTES]> {
    let digits = s.as_bytes();
    if digits.len() != TAG_BYTES * 2 {
        return None;
    }
    let mut out = [0u8; TAG_BYTES];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        out[i] = u8::try_from(high * 16 + low).ok()?;
    }
    Some(out)
}
