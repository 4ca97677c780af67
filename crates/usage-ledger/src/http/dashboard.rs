//! The dashboard pages: one team's cycle (usage against the bucket with the 80 % and
//! 100 % lines, what is left at each API's rate, the forecast, alerts, invoices with
//! their verification and CSV), and the finance view of a month. One embedded HTML file
//! with its script and styles served from this origin (no inline script, no external
//! asset); the script calls the API with the credential the page was opened with (a
//! portal link, `?link=...`) and polls it to follow new events.
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;

use super::auth::Principal;
use super::routes::{bearer, Params};
use super::Api;

const PAGE: &str = include_str!("dashboard.html");
const SCRIPT: &str = include_str!("dashboard.js");
const STYLES: &str = include_str!("dashboard.css");

/// The page's own script and styles from this origin only, nothing inline; the API on
/// the same origin; never framed (clickjacking).
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /dashboard.js`: the pages' script (no credential needed: it holds none).
pub async fn script() -> Response {
    ([(CONTENT_TYPE, "text/javascript; charset=utf-8"), (CACHE_CONTROL, "no-cache")], SCRIPT).into_response()
}

/// `GET /dashboard.css`: the pages' styles.
pub async fn styles() -> Response {
    ([(CONTENT_TYPE, "text/css; charset=utf-8"), (CACHE_CONTROL, "no-cache")], STYLES).into_response()
}

/// `GET /`: the finance view for a finance credential, a team's page for a team one.
pub async fn home(State(api): State<Arc<Api>>, q: Params, headers: HeaderMap) -> Response {
    match principal(&api, &q, &headers) {
        Some(Principal::Team(team)) => page(team.as_str(), "team"),
        Some(_) => page("", "finance"),
        None => refused(StatusCode::UNAUTHORIZED, "Open this page with a portal link or a token."),
    }
}

/// `GET /teams/{team}`: that team's page, for a credential that reads the team.
pub async fn team(State(api): State<Arc<Api>>, Path(team): Path<String>, q: Params, headers: HeaderMap) -> Response {
    match principal(&api, &q, &headers) {
        Some(p) if p.reads(&team) && ledger_proto::new_team(team.clone()).is_ok() => page(&team, "team"),
        Some(_) => refused(StatusCode::FORBIDDEN, "This link does not open that team's page."),
        None => refused(StatusCode::UNAUTHORIZED, "Open this page with a portal link or a token."),
    }
}

/// The credential of a page request: a portal link in the query, or a bearer header.
fn principal(api: &Api, q: &Params, headers: &HeaderMap) -> Option<Principal> {
    let credential = q.link().or_else(|| bearer(headers))?;
    api.auth.principal(credential, Utc::now())
}

fn page(team: &str, mode: &str) -> Response {
    // Team ids are [A-Za-z0-9._:-]; escaped all the same, as attribute values.
    let html = PAGE.replace("{{TEAM}}", &attribute(team)).replace("{{MODE}}", &attribute(mode));
    ([(CONTENT_TYPE, "text/html; charset=utf-8"), (CONTENT_SECURITY_POLICY, POLICY), (CACHE_CONTROL, "no-store")], html)
        .into_response()
}

fn attribute(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;").replace('\'', "&#39;")
}

fn refused(status: StatusCode, why: &str) -> Response {
    let html = format!("<!doctype html><meta charset=utf-8><title>usage-ledger</title><p>{why}</p>");
    (status, [(CONTENT_TYPE, "text/html; charset=utf-8"), (CONTENT_SECURITY_POLICY, POLICY)], html).into_response()
}
