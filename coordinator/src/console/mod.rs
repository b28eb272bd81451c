//! The web console: a few static files served at `/console/`, and the event stream it reads.
//!
//! The page (`index.html`, `console.js`, `console.css` in this directory, embedded with
//! `include_str!`) is plain HTML, CSS and one ES module: no framework, no build step, nothing
//! fetched from another origin. It talks to the REST API of the coordinator that served it,
//! with the API key the user types in, kept in the tab's `sessionStorage` and sent as
//! `Authorization: Bearer` on every request. Its pages (hash routes):
//!
//! - `#/submit`: the templates (`GET /api/v1/templates`), a form for the chosen template's
//!   parameters, the JSON it renders (`POST /api/v1/templates/{name}/render`), editable, and
//!   submit (`POST /api/v1/tasks`); or a wasm module from a file, with its inputs;
//! - `#/tasks`: the caller's tasks, kept current by the event stream ([`events`]);
//! - `#/task/{id}`: one task, its output, error and cost, its proof with a Verify button
//!   (`POST /api/v1/proofs/verify`), and Cancel;
//! - `#/nodes`: nodes, their health and reputation;
//! - `#/account`: the caller's credits.
//!
//! The live list reads `GET /api/v1/events` ([`events`]) with `fetch()` and parses the
//! server-sent events itself, since `EventSource` cannot send an `Authorization` header.
//!
//! Every file is served with a strict Content-Security-Policy ([`CSP`]): scripts, styles and
//! requests only from this origin, no inline script or style, no framing, no form posting
//! anywhere (the forms are handled by the script; were it not to run, a form would not send the
//! key in a URL). Every value from the API reaches the page as text, never as HTML.
//!
//! # Layout
//! - this module: the static files and their route.
//! - [`events`]: `GET /api/v1/events`, the caller's task changes as server-sent events.

pub mod events;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::api::AppState;

/// The console's Content-Security-Policy.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                       img-src 'self' data:; connect-src 'self'; form-action 'none'; \
                       frame-ancestors 'none'; base-uri 'none'";

const INDEX_HTML: &str = include_str!("index.html");
const CONSOLE_JS: &str = include_str!("console.js");
const CONSOLE_CSS: &str = include_str!("console.css");

/// What the console's routes share: the event streams' bounds, and the coordinator's shutdown,
/// which ends every open stream (an open stream would otherwise hold up the HTTP server's
/// graceful shutdown).
#[derive(Clone)]
pub struct Console {
    pub(crate) streams: Arc<events::Streams>,
    pub(crate) shutdown: CancellationToken,
}

impl Console {
    /// The console of a coordinator that stops when `shutdown` is cancelled.
    pub fn new(shutdown: CancellationToken) -> Console {
        Console {
            streams: Arc::default(),
            shutdown,
        }
    }
}

/// `GET /api/v1/events` for an authenticated `submitter` ([`events`]).
pub(crate) fn events(state: &AppState, submitter: String) -> Response {
    let c = &state.console;
    events::respond(
        state.store.clone(),
        &c.streams,
        c.shutdown.clone(),
        submitter,
    )
    .unwrap_or_else(IntoResponse::into_response)
}

/// The console's static routes: `/console` (redirects to `/console/`), `/console/`,
/// `/console/console.js` and `/console/console.css`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route(
            "/console/",
            get(|| async { file("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/console/console.js",
            get(|| async { file("text/javascript; charset=utf-8", CONSOLE_JS) }),
        )
        .route(
            "/console/console.css",
            get(|| async { file("text/css; charset=utf-8", CONSOLE_CSS) }),
        )
}

/// A static file with the console's headers.
fn file(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // Small and embedded in the binary: always revalidated, so a new build shows at once.
        (header::CACHE_CONTROL, "no-cache"),
    ];
    let mut response = (headers, body).into_response();
    response.headers_mut().insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file carries its content type and the console's security headers.
    #[test]
    fn files_carry_their_type_and_the_csp() {
        let r = file("text/css; charset=utf-8", CONSOLE_CSS);
        let h = r.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/css; charset=utf-8");
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP);
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
    }

    /// The page needs nothing the CSP forbids: no inline script, style or event handler, and
    /// nothing from another origin.
    #[test]
    fn the_page_fits_its_csp() {
        let html = INDEX_HTML.to_ascii_lowercase();
        for (i, _) in html.match_indices("<script") {
            let tag = &html[i..i + html[i..].find('>').expect("closed tag")];
            assert!(tag.contains("src="), "inline script: {tag}");
        }
        assert!(!html.contains("<style"), "inline style element");
        assert!(!html.contains(" style="), "inline style attribute");
        let handler = html.match_indices(" on").any(|(i, _)| {
            let rest = &html[i + 3..];
            let name = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            name > 0 && rest[name..].trim_start().starts_with('=')
        });
        assert!(!handler, "inline event handler");
        for text in [
            &html,
            &CONSOLE_JS.to_ascii_lowercase(),
            &CONSOLE_CSS.to_ascii_lowercase(),
        ] {
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "another origin"
            );
            assert!(!text.contains("innerhtml"), "HTML built from strings");
        }
        assert!(CSP.contains("script-src 'self'") && !CSP.contains("unsafe"));
    }
}
