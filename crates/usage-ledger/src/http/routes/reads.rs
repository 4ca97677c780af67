//! How a handler reaches the ledgers: on the blocking pool, with a reader's permit for
//! work that scales (`read`), or without one for documents the API keeps (`view`,
//! `drafted`: only their folding and rendering take one), and to the store holding a team.
use std::sync::Arc;

use ledger_core::{Catalog, Team, TeamId};
use ledger_store::Store;

use super::super::views::Query;
use super::super::Api;
use super::{json, no_team, ApiError, Shared, StatusCode};
use axum::response::Response;

/// Runs `f` over the stores held now, on the blocking pool, if a reader's permit is free
/// (503 with Retry-After when `--http-reads-max` reads run already).
pub async fn read<T: Send + 'static>(
    api: &Shared,
    f: impl FnOnce(&[Store]) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let permit = Arc::clone(&api.readers).try_acquire_owned().map_err(|_| busy())?;
    blocking(api, move |stores| {
        let _permit = permit;
        f(stores)
    })
    .await
}

/// Runs `f` over the stores held now on the blocking pool, without a reader's permit.
pub(super) async fn blocking<T: Send + 'static>(
    api: &Shared,
    f: impl FnOnce(&[Store]) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let api = Arc::clone(api);
    tokio::task::spawn_blocking(move || f(&api.ledgers.stores().map_err(ApiError::internal)?))
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!("a reader stopped: {e}")))?
}

pub(super) fn busy() -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is busy with other reads; retry in a second")
}

/// Runs `f` over the store holding `team` (`None` when no store does), on the blocking
/// pool.
pub(super) async fn with_team<T: Send + 'static>(
    api: &Shared,
    team: TeamId,
    f: impl FnOnce(Option<&Store>, &TeamId) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let shared = Arc::clone(api);
    read(api, move |stores| f(shared.views.home(stores, &team).map_err(ApiError::internal)?, &team)).await
}

/// The document `query` asks of the team, from the state kept of it (404 for a team no
/// store holds). Only folding and rendering take a reader's permit: a document already
/// rendered is served whatever the reads in progress.
pub(super) async fn view(
    api: &Shared,
    team: TeamId,
    query: Query,
    render: impl FnOnce(&mut Team, &Catalog) -> anyhow::Result<String> + Send + 'static,
) -> Result<Response, ApiError> {
    let shared = Arc::clone(api);
    blocking(api, move |stores| {
        let store = found(shared.views.home(stores, &team).map_err(ApiError::internal)?, &team)?;
        let body = drafted(&shared, store, &team, query, render)?;
        Ok(json(body.to_string()))
    })
    .await
}

/// `Views::get` with a reader's permit for the work.
pub(super) fn drafted(
    api: &Api,
    store: &Store,
    team: &TeamId,
    query: Query,
    render: impl FnOnce(&mut Team, &Catalog) -> anyhow::Result<String>,
) -> Result<Arc<String>, ApiError> {
    let admit = || Arc::clone(&api.readers).try_acquire_owned().ok();
    api.views.get(store, team, query, admit, render).map_err(ApiError::internal)?.ok_or_else(busy)
}

/// The team's store, or 404.
fn found<'a>(store: Option<&'a Store>, team: &TeamId) -> Result<&'a Store, ApiError> {
    store.ok_or_else(|| no_team(team))
}
