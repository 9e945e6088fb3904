//! Pure parts of the transport glue: server names, CA loading, close classification.

use std::path::PathBuf;

use bytes::Bytes;
use piazza_protocol::close_code;
use quinn::{ApplicationClose, ConnectionError, VarInt};

use super::{Closed, classify_close, quic_config, server_name_of};
use crate::ClientError;

fn check_name(server: &str, expected: Option<&str>) {
    let got = server_name_of(server).ok();
    assert_eq!(got.as_deref(), expected, "server {server:?}");
}

#[test]
fn server_name_is_the_host_part() {
    check_name("127.0.0.1:4433", Some("127.0.0.1"));
    check_name("localhost:4433", Some("localhost"));
    check_name("[::1]:4433", Some("::1"));
    check_name("node-1.example.org:1", Some("node-1.example.org"));
}

#[test]
fn server_without_port_or_with_bare_ipv6_is_refused() {
    check_name("localhost", None);
    check_name(":4433", None);
    check_name("::1:4433", None);
    check_name("[::1]4433", None);
    check_name("[::1", None);
    check_name("[]:4433", None);
}

#[test]
fn missing_ca_file_is_a_config_error() {
    crate::install_crypto_provider();
    let missing = PathBuf::from("/nonexistent/piazza/ca.pem");
    assert!(matches!(quic_config(&missing), Err(ClientError::Config(_))));
}

/// A self-signed CA (public certificate only; the key was thrown away), valid until 2126.
const FIXTURE_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBpzCCAU2gAwIBAgIUKFUTrOujsIYrtAxfSOdp0mwsilIwCgYIKoZIzj0EAwIw
KDEmMCQGA1UEAwwdcGlhenphIGNsaWVudCB0ZXN0IGZpeHR1cmUgQ0EwIBcNMjYx
MTIyMjAwMDIwWhgPMjEyNjEwMjkyMDAwMjBaMCgxJjAkBgNVBAMMHXBpYXp6YSBj
bGllbnQgdGVzdCBmaXh0dXJlIENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE
r7y9LA6bFMLnprVNFWv49/uUpxnxVAOVd7ryQStyPOGwb6aHXGiSaMVm5c098HA6
wQ9uD0mcjX1yk+t7SurgBqNTMFEwHQYDVR0OBBYEFIsVzpulJghyypo55RpTszq+
16tkMB8GA1UdIwQYMBaAFIsVzpulJghyypo55RpTszq+16tkMA8GA1UdEwEB/wQF
MAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIhALiJMKSAvtWw9VMGg0WJxEw1nxnmB/TE
p+9X/tLFfEgnAiBNGvmuGCDZkn9+zN4Yoq475mYGtYyZ4S+lSjb5sNMlAQ==
-----END CERTIFICATE-----
";

/// Writes `contents` to a file unique to this test and process, runs `f` on its path, removes it.
fn with_file<T>(name: &str, contents: &str, f: impl FnOnce(&std::path::Path) -> T) -> T {
    let path =
        std::env::temp_dir().join(format!("piazza-client-{name}-{}.pem", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    let result = f(&path);
    std::fs::remove_file(&path).unwrap();
    result
}

#[test]
fn a_pem_ca_file_builds_a_quic_config() {
    crate::install_crypto_provider();
    with_file("ca", FIXTURE_CA_PEM, |path| quic_config(path).unwrap());
    // Several certificates in one file (a CA bundle) are all accepted.
    let bundle = format!("{FIXTURE_CA_PEM}{FIXTURE_CA_PEM}");
    with_file("bundle", &bundle, |path| quic_config(path).unwrap());
}

#[test]
fn ca_file_without_certificates_is_a_config_error() {
    crate::install_crypto_provider();
    let result = with_file("empty-ca", "not a certificate\n", quic_config);
    match result {
        Err(ClientError::Config(reason)) => assert!(reason.contains("no certificate"), "{reason}"),
        other => panic!("expected a config error, got {other:?}"),
    }
}

fn app_close(code: u32) -> ConnectionError {
    ConnectionError::ApplicationClosed(ApplicationClose {
        error_code: VarInt::from_u32(code),
        reason: Bytes::from_static(b"why"),
    })
}

#[test]
fn shutdown_and_network_failures_reconnect() {
    assert!(matches!(
        classify_close(&app_close(close_code::SHUTDOWN)),
        Closed::Reconnect(_)
    ));
    assert!(matches!(
        classify_close(&ConnectionError::TimedOut),
        Closed::Reconnect(_)
    ));
    assert!(matches!(
        classify_close(&ConnectionError::Reset),
        Closed::Reconnect(_)
    ));
}

#[test]
fn refusals_are_fatal_and_local_close_is_local() {
    assert!(matches!(
        classify_close(&app_close(close_code::UNAUTHENTICATED)),
        Closed::Fatal(ClientError::Server(_))
    ));
    assert!(matches!(
        classify_close(&app_close(close_code::PROTOCOL_VIOLATION)),
        Closed::Fatal(ClientError::Protocol(_))
    ));
    assert!(matches!(
        classify_close(&ConnectionError::LocallyClosed),
        Closed::Local
    ));
}
