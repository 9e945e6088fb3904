//! Admin HTTP and graceful shutdown.

use std::time::Duration;

use piazza_client::ConversationRef;
use piazza_tests::*;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let node = TestNode::start().await;
    assert_eq!(node.admin_get("/healthz").await.0, 200);
    assert_eq!(node.admin_get("/readyz").await.0, 200);
    let alice = node.client("alice").await;
    alice
        .send(
            ConversationRef::Direct { peer: user("bob") },
            "count me",
            None,
        )
        .await
        .unwrap();
    let (status, body) = node.admin_get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "piazza_sends_total",
        "piazza_send_seconds_bucket",
        "piazza_storage_commits_total",
        "piazza_storage_commit_seconds_bucket",
        "piazza_connections_total",
        "piazza_requests_total",
    ] {
        assert!(body.contains(name), "/metrics lacks {name}:\n{body}");
    }
    assert!(
        !body.contains("alice"),
        "metric labels never carry user ids"
    );
    assert_eq!(node.admin_get("/nope").await.0, 404);
    node.stop().await;
    assert_no_warnings();
}

/// Shutdown closes client connections with the shutdown code, and data written before is kept.
#[tokio::test]
async fn graceful_shutdown_closes_clients_with_a_reason() {
    let node = TestNode::start().await;
    let raw = RawConnection::connect(node.addr, &node.ca).await;
    let hello = piazza_protocol::Request::Hello {
        protocol_version: piazza_protocol::PROTOCOL_VERSION,
        token: node.token("alice"),
        device: "d".parse().unwrap(),
    };
    assert!(matches!(
        raw.request(&hello).await,
        Some(piazza_protocol::Response::Welcome { .. })
    ));
    let admin = node.admin;
    let dir = node.stop().await;
    let reason = tokio::time::timeout(Duration::from_secs(5), raw.connection.closed())
        .await
        .unwrap();
    match reason {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(
                close.error_code.into_inner(),
                u64::from(piazza_protocol::close_code::SHUTDOWN)
            );
            assert_eq!(&close.reason[..], b"shutting down");
        }
        other => panic!("unexpected close: {other:?}"),
    }
    assert!(
        std::net::TcpStream::connect(admin).is_err(),
        "admin server stopped"
    );
    drop(dir);
    assert_no_warnings();
}
