//! The admin HTTP server: `/healthz` (the process is up), `/readyz` (it accepts work: started, not
//! shutting down, storage healthy), `/metrics` (Prometheus text), and the payment provider's
//! webhook (`POST /payments/webhook`, signature-checked by the provider adapter).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::watch;

use crate::node::NodeContext;

pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    ctx: Arc<NodeContext>,
    payments: Option<crate::payments::PaymentsHandle>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Install the recorder before the first scrape so early metrics are not lost.
    let _ = crate::telemetry::prometheus();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(ctx)
        .merge(crate::payments::webhook_router(payments));
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "admin server failed");
    }
}

async fn readyz(State(ctx): State<Arc<NodeContext>>) -> impl IntoResponse {
    if ctx.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics_text() -> impl IntoResponse {
    match crate::telemetry::prometheus() {
        Some(handle) => {
            handle.run_upkeep();
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                handle.render(),
            )
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            "metrics recorder unavailable\n".to_owned(),
        ),
    }
}
