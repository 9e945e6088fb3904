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

#[test]
fn ca_file_without_certificates_is_a_config_error() {
    crate::install_crypto_provider();
    let path =
        std::env::temp_dir().join(format!("piazza-client-empty-ca-{}.pem", std::process::id()));
    std::fs::write(&path, "not a certificate\n").unwrap();
    let result = quic_config(&path);
    std::fs::remove_file(&path).unwrap();
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
