//! `/healthz`, `/readyz` and `/metrics` on `server.listen`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use super::metrics::{Metrics, CONTENT_TYPE};
use super::scheduler::Heartbeat;
use crate::shutdown::Shutdown;
use crate::storage::ContractStore;

/// How long `/readyz` waits for the database: under the 2 s timeout of the Kubernetes
/// probes, so a hanging database reads as "not ready" rather than as a probe timeout.
pub const READINESS_TIMEOUT: Duration = Duration::from_millis(1500);

/// What the handlers need.
#[derive(Debug, Clone)]
pub struct HttpState<S: ContractStore> {
    /// For `/readyz`.
    pub store: S,
    /// For `/healthz`.
    pub heartbeat: Arc<Heartbeat>,
    /// For `/metrics` (and `/readyz` updates `contractd_database_up`).
    pub metrics: Arc<Metrics>,
}

/// The routes.
pub fn router<S: ContractStore>(state: HttpState<S>) -> Router {
    Router::new()
        .route("/healthz", get(healthz::<S>))
        .route("/readyz", get(readyz::<S>))
        .route("/metrics", get(metrics::<S>))
        .with_state(state)
}

/// Serve `router` on `listener` until shutdown is requested.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.requested().await })
        .await
}

/// Liveness: the process answers and its tick loop keeps its schedule.
async fn healthz<S: ContractStore>(State(state): State<HttpState<S>>) -> impl IntoResponse {
    if state.heartbeat.is_alive() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the tick loop is stalled\n",
        )
    }
}

/// Readiness: the database answers and every migration is applied.
async fn readyz<S: ContractStore>(State(state): State<HttpState<S>>) -> impl IntoResponse {
    match probe_database(&state.store, &state.metrics).await {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

/// The metrics in the Prometheus text format.
async fn metrics<S: ContractStore>(State(state): State<HttpState<S>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.metrics.render(),
    )
}

/// Ask the database whether it is ready and record the answer in `contractd_database_up`.
/// The error says why not, without details that could carry credentials.
pub async fn probe_database<S: ContractStore>(
    store: &S,
    metrics: &Metrics,
) -> Result<(), &'static str> {
    let outcome = match tokio::time::timeout(READINESS_TIMEOUT, store.readiness()).await {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err("database migrations are not applied"),
        Ok(Err(_)) => Err("database unreachable"),
        Err(_) => Err("database did not answer in time"),
    };
    metrics.set_database_up(outcome.is_ok());
    outcome
}
