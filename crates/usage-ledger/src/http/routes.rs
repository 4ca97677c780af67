//! The routes: who may call each (`Caller`), the query they take, and the document they
//! return (rendered by `documents`). Store reads run on the blocking pool.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, Request, State};
use axum::http::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST, REFERRER_POLICY, RETRY_AFTER, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, NaiveDate, Utc};
use ledger_core::{Catalog, Team, TeamId};
use ledger_store::Store;
use sha2::Digest as _;
use tracing::{error, warn};

mod reads;

use super::auth::{Principal, Scope};
use super::views::Query;
use super::{dashboard, Api};
use crate::documents;
pub use reads::read;
use reads::{blocking, drafted, view, with_team};

type Shared = Arc<Api>;

pub fn router(api: Shared) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(|| async { json(OPENAPI.to_string()) }))
        .route("/v1/teams/{team}/balance", get(balance))
        .route("/v1/teams/{team}/usage", get(usage))
        .route("/v1/teams/{team}/invoices", get(invoices))
        .route("/v1/teams/{team}/invoices/{period}", get(invoice))
        .route("/v1/teams/{team}/invoices/{period}/verification", get(verification))
        .route("/v1/teams/{team}/alerts", get(alerts))
        .route("/v1/teams/{team}/entries", get(entries))
        .route("/v1/teams/{team}/portal-links", post(team_link))
        .route("/v1/portal-links", post(finance_link))
        .route("/v1/invoices", get(month_invoices))
        .route("/v1/close", post(close))
        .route("/", get(dashboard::home))
        .route("/dashboard.js", get(dashboard::script))
        .route("/dashboard.css", get(dashboard::styles))
        .route("/teams/{team}", get(dashboard::team))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such path") })
        .layer(DefaultBodyLimit::max(api.body_max_bytes))
        .layer(middleware::from_fn_with_state(Arc::clone(&api), guard))
        .with_state(api)
}

/// The API's OpenAPI document (checked in; a test matches it against `router`).
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// An error as the API answers it: a status and `{"error": "one line"}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }

    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    fn internal(e: anyhow::Error) -> ApiError {
        let message = format!("{e:#}").replace('\n', " ");
        error!(error = %message, "An API request failed.");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message }).to_string();
        let mut response = (self.status, [(CONTENT_TYPE, "application/json")], body).into_response();
        if matches!(self.status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

fn json(body: String) -> Response {
    ([(CONTENT_TYPE, "application/json")], body).into_response()
}

fn csv(body: String) -> Response {
    ([(CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response()
}

/// Paths any client may call as often as it likes: cheap, and what health checkers and
/// scrapers behind one proxy address need to keep working while the API is flooded.
fn unlimited(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics" | "/openapi.json" | "/dashboard.js" | "/dashboard.css")
}

/// The cheap limit per client address (before any credential is checked), body size, the
/// security headers, and a log line (without the credential, rate-limited) for every
/// refusal.
async fn guard(
    State(api): State<Shared>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let length = request.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let mut response = if !unlimited(&path) && !api.address_limiter.allow(client.ip()) {
        too_many().into_response()
    } else if length.is_some_and(|n| n > api.body_max_bytes) {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request body over {} bytes", api.body_max_bytes))
            .into_response()
    } else {
        next.run(request).await
    };
    // Pages carry a portal link in their URL: no Referer ever takes it elsewhere.
    response.headers_mut().insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response.headers_mut().insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    let status = response.status();
    api.metrics.http_requests.get_or_create(&crate::metrics::Code { code: status.as_u16().to_string() }).inc();
    if status.is_client_error() && status != StatusCode::NOT_FOUND {
        if let Some(suppressed) = api.refusal_log.lock().expect("not poisoned").allow() {
            warn!(%method, %path, status = status.as_u16(), client = %client.ip(), suppressed, "Refused an HTTP request.");
        }
    }
    response
}

fn too_many() -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too many requests; retry in a second")
}

/// The caller, from its bearer token or portal link (401 without a valid one).
pub struct Caller(pub Principal);

impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Shared) -> Result<Caller, ApiError> {
        let credential = bearer(&parts.headers).ok_or_else(unauthorized)?;
        let caller = api.auth.principal(credential, Utc::now()).map(Caller).ok_or_else(unauthorized)?;
        let key: [u8; 32] = sha2::Sha256::digest(credential.as_bytes()).into();
        if !api.credential_limiter.allow(key) {
            return Err(too_many());
        }
        Ok(caller)
    }
}

pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(str::trim).filter(|t| !t.is_empty())
}

fn unauthorized() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "a bearer token or portal link is needed (Authorization: Bearer ...)")
}

/// The same answer whether or not the team exists.
fn forbidden() -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "this credential does not give access to that")
}

impl Caller {
    /// The team of the path, if the caller reads it.
    fn team(&self, team: &str) -> Result<TeamId, ApiError> {
        if !self.0.reads(team) {
            return Err(forbidden());
        }
        ledger_proto::new_team(team.to_string()).map_err(|e| ApiError::bad(format!("team {team:?}: {e}")))
    }

    fn finance(&self) -> Result<(), ApiError> {
        if self.0.reads_all() {
            Ok(())
        } else {
            Err(forbidden())
        }
    }

    fn admin(&self) -> Result<(), ApiError> {
        if self.0.is_admin() {
            Ok(())
        } else {
            Err(forbidden())
        }
    }
}

/// The query string as name → value (the last of repeated names wins).
pub struct Params(HashMap<String, String>);

impl FromRequestParts<Shared> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &Shared) -> Result<Params, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(query).map_err(|e| ApiError::bad(format!("query string: {e}")))?;
        Ok(Params(pairs.into_iter().collect()))
    }
}

impl Params {
    /// A portal link given in the query (pages only).
    pub fn link(&self) -> Option<&str> {
        self.get("link")
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn instant(&self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        self.get(name)
            .map(|v| v.parse().map_err(|_| ApiError::bad(format!("{name}={v:?} is not an RFC 3339 instant"))))
            .transpose()
    }

    /// An instant no later than now + the future skew: the work a balance or usage
    /// document takes grows with the cycles up to it (`at=9999-12-31` derived ~96,000).
    fn until_now(&self, name: &str, future_skew: chrono::Duration) -> Result<Option<DateTime<Utc>>, ApiError> {
        let at = self.instant(name)?;
        let latest = crate::window(future_skew).latest;
        match at {
            Some(at) if at > latest => Err(ApiError::bad(format!(
                "{name}={} is after now + the allowed skew ({})",
                at.to_rfc3339(),
                latest.to_rfc3339()
            ))),
            _ => Ok(at),
        }
    }

    fn number(&self, name: &str, default: u64) -> Result<u64, ApiError> {
        self.get(name).map_or(Ok(default), |v| {
            v.parse().map_err(|_| ApiError::bad(format!("{name}={v:?} is not a whole number")))
        })
    }

    fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(v) => Err(ApiError::bad(format!("{name}={v:?}: true or false"))),
        }
    }

    /// `format=json|csv`, else the Accept header.
    fn wants_csv(&self, headers: &HeaderMap) -> Result<bool, ApiError> {
        match self.get("format") {
            Some("csv") => Ok(true),
            Some("json") => Ok(false),
            Some(v) => Err(ApiError::bad(format!("format={v:?}: json or csv"))),
            None => Ok(headers.get(ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/csv"))),
        }
    }
}

/// A rendered JSON document as the response.
fn doc(rendered: anyhow::Result<String>) -> Result<Response, ApiError> {
    rendered.map(json).map_err(ApiError::internal)
}

fn day(period: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(period, "%Y-%m-%d")
        .map_err(|_| ApiError::bad(format!("{period:?} is not a date (YYYY-MM-DD)")))
}

fn no_invoice(team: &TeamId, day: NaiveDate) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("team {team} has no final invoice for a period starting {day}"))
}

fn no_team(team: &TeamId) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("team {team} has no ledger entries"))
}

async fn readyz(State(api): State<Shared>) -> Response {
    match api.ledgers.readiness() {
        Ok(()) => json(serde_json::json!({"ready": true}).to_string()),
        Err(why) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

async fn metrics(State(api): State<Shared>) -> Result<Response, ApiError> {
    metrics_text(Arc::clone(&api.ledgers), Arc::clone(&api.metrics)).await
}

/// A router serving only `GET /metrics` (`run --metrics-addr`).
pub fn metrics_router(ledgers: Arc<dyn super::Ledgers>, metrics: Arc<crate::metrics::Metrics>) -> Router {
    let handler = move || metrics_text(Arc::clone(&ledgers), Arc::clone(&metrics));
    Router::new().route("/metrics", get(handler))
}

/// The metrics as Prometheus text, the store gauges (outbox depth, bytes) read first.
async fn metrics_text(
    ledgers: Arc<dyn super::Ledgers>,
    metrics: Arc<crate::metrics::Metrics>,
) -> Result<Response, ApiError> {
    let text = tokio::task::spawn_blocking(move || {
        metrics.refresh(&ledgers.stores()?)?;
        anyhow::Ok(metrics.text())
    })
    .await
    .map_err(|e| ApiError::internal(anyhow::anyhow!("metrics stopped: {e}")))?
    .map_err(ApiError::internal)?;
    Ok(([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

async fn balance(
    State(api): State<Shared>,
    caller: Caller,
    Path(team): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let (team, at) = (caller.team(&team)?, q.until_now("at", api.future_skew)?);
    view(&api, team, Query::Balance { at }, move |state, catalog| documents::balance_of(state, catalog, at)).await
}

async fn usage(
    State(api): State<Shared>,
    caller: Caller,
    Path(team): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let (team, at) = (caller.team(&team)?, q.until_now("at", api.future_skew)?);
    let points = q.number("points", 48)?;
    if !(2..=u64::from(documents::POINTS_MAX)).contains(&points) {
        return Err(ApiError::bad(format!("points={points}: 2 to {}", documents::POINTS_MAX)));
    }
    let points = points as u32;
    let query = Query::Usage { at, points };
    view(&api, team, query, move |state, catalog| documents::usage_of(state, catalog, at, points)).await
}

async fn invoices(
    State(api): State<Shared>,
    caller: Caller,
    Path(team): Path<String>,
    q: Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (team, draft, as_csv) = (caller.team(&team)?, q.flag("draft")?, q.wants_csv(&headers)?);
    let shared = Arc::clone(&api);
    let f = move |stores: &[Store]| {
        let store = shared.views.home(stores, &team).map_err(ApiError::internal)?;
        let mut items = documents::team_invoices(store, &team, false).map_err(ApiError::internal)?;
        if let (Some(store), true) = (store, draft) {
            let render =
                |state: &mut Team, catalog: &Catalog| Ok(documents::draft_invoice(state, catalog).unwrap_or_default());
            let drafted = drafted(&shared, store, &team, Query::Draft, render)?;
            items.extend((!drafted.is_empty()).then(|| drafted.to_string()));
        }
        render_invoices(&items, as_csv)
    };
    blocking(&api, f).await
}

fn render_invoices(items: &[String], as_csv: bool) -> Result<Response, ApiError> {
    if as_csv {
        documents::invoices_csv(items).map(csv).map_err(ApiError::internal)
    } else {
        Ok(json(documents::json_array(items)))
    }
}

async fn invoice(
    State(api): State<Shared>,
    caller: Caller,
    Path((team, period)): Path<(String, String)>,
    q: Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (team, day, as_csv) = (caller.team(&team)?, day(&period)?, q.wants_csv(&headers)?);
    with_team(&api, team, move |store, team| {
        let item = documents::invoice_on(store, team, day).map_err(ApiError::internal)?;
        let item = item.ok_or_else(|| no_invoice(team, day))?;
        if as_csv {
            render_invoices(&[item], true)
        } else {
            Ok(json(item))
        }
    })
    .await
}

async fn verification(
    State(api): State<Shared>,
    caller: Caller,
    Path((team, period)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (team, day) = (caller.team(&team)?, day(&period)?);
    with_team(&api, team, move |store, team| {
        let check = documents::verification(store, team, day).map_err(ApiError::internal)?;
        doc(documents::to_json(&check.ok_or_else(|| no_invoice(team, day))?))
    })
    .await
}

async fn alerts(State(api): State<Shared>, caller: Caller, Path(team): Path<String>) -> Result<Response, ApiError> {
    let team = caller.team(&team)?;
    with_team(&api, team, move |store, team| doc(documents::alerts(store, team))).await
}

async fn entries(
    State(api): State<Shared>,
    caller: Caller,
    Path(team): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let team = caller.team(&team)?;
    let (after, limit) = (q.number("after_seq", 0)?, q.number("limit", 100)?);
    if limit == 0 || limit > documents::PAGE_LIMIT_MAX as u64 {
        return Err(ApiError::bad(format!("limit={limit}: 1 to {}", documents::PAGE_LIMIT_MAX)));
    }
    with_team(&api, team, move |store, team| doc(documents::entries_page(store, team, after, limit as usize))).await
}

async fn month_invoices(
    State(api): State<Shared>,
    caller: Caller,
    q: Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.finance()?;
    let month = q.get("period").ok_or_else(|| ApiError::bad("period=YYYY-MM is required"))?;
    let month = crate::month(month).map_err(ApiError::bad)?;
    let as_csv = q.wants_csv(&headers)?;
    read(&api, move |stores| {
        let items = documents::month_invoices(stores, &month).map_err(ApiError::internal)?;
        render_invoices(&items, as_csv)
    })
    .await
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseRequest {
    until: DateTime<Utc>,
    #[serde(default)]
    allow_future: bool,
}

async fn close(
    State(api): State<Shared>,
    caller: Caller,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    caller.admin()?;
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let request: CloseRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("body: {e} (expected {{\"until\": RFC3339}})")))?;
    crate::commands::close_allowed(request.until, api.future_skew, request.allow_future, "\"allow_future\": true")
        .map_err(|e| ApiError::bad(e.to_string()))?;
    let until = request.until;
    let ledgers = Arc::clone(&api.ledgers);
    let (invoices, entries) = tokio::task::spawn_blocking(move || ledgers.close(until))
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!("close stopped: {e}")))?
        .map_err(ApiError::internal)?;
    let report = serde_json::json!({"until": until.to_rfc3339(), "invoices": invoices, "entries": entries});
    Ok(json(serde_json::to_string_pretty(&report).expect("serializes")))
}

async fn team_link(
    State(api): State<Shared>,
    caller: Caller,
    Path(team): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.admin()?;
    let team = caller.team(&team)?;
    let path = format!("/teams/{team}");
    link(&api, &Scope::Team(team), &path, &headers)
}

async fn finance_link(State(api): State<Shared>, caller: Caller, headers: HeaderMap) -> Result<Response, ApiError> {
    caller.admin()?;
    link(&api, &Scope::Finance, "/", &headers)
}

/// `{"url", "expires_at"}`: the page at `path` opened with a signed link for `scope`,
/// at `public_url`, else at the request's Host if it is a plain `host[:port]`.
fn link(api: &Api, scope: &Scope, path: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    let base = match &api.public_url {
        Some(url) => url.clone(),
        None => {
            let host = headers.get(HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1:8080");
            if !plain_host(host) {
                return Err(ApiError::bad(
                    "the Host header is not a plain host[:port]; set http.public_url (--http-public-url) for portal links",
                ));
            }
            format!("http://{host}")
        }
    };
    let (credential, expires) = api.auth.mint(scope, Utc::now());
    let url = format!("{}{path}?link={credential}", base.trim_end_matches('/'));
    let body = serde_json::json!({"url": url, "expires_at": ledger_core::report::fmt_time(expires)});
    Ok(([(CONTENT_TYPE, "application/json")], Body::from(body.to_string())).into_response())
}

/// A DNS name or IPv4 address with an optional port, or a bracketed IPv6 address: what
/// a URL's authority may be without user info, path or markup.
fn plain_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') || name.ends_with(']') => (name, Some(port)),
        _ => (host, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let name_ok = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !name.is_empty()
                && name.len() <= 253
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        }
    };
    port_ok && name_ok
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_a_plain_host_names_a_portal_link() {
        for ok in ["127.0.0.1:8080", "billing.example.com", "[::1]:8080", "localhost"] {
            assert!(super::plain_host(ok), "{ok}");
        }
        for bad in ["\"><script>", "a@b", "a/b", "", "x:", "x:123456", "[zz]:1", "a b", "::1"] {
            assert!(!super::plain_host(bad), "{bad}");
        }
    }
}
