//! Who may use the HTTP API, and from where.
//!
//! Every route except `GET /healthz` and the login form needs a credential:
//! the API token in `Authorization: Bearer <token>` (scripts, Prometheus),
//! or a session cookie a browser got by posting the token to `/login`.
//! Requests that change something (`POST`) must also come from the host's
//! own pages when a browser sends them: an `Origin` (or, lacking one, a
//! `Referer`) naming another site is refused, and a cookie-authenticated
//! request that names no origin at all is refused too, since the cookie is
//! an ambient credential any page could make the browser attach. A bearer
//! token is never attached by a browser on its own, so bearer requests are
//! not subject to the origin rule.

use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRef, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use subtle::ConstantTimeEq as _;

use super::{ApiState, HttpStats, error};

/// Name of the browser session cookie.
pub const SESSION_COOKIE: &str = "latentcam_session";

/// How long a browser session lasts after logging in.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

/// Most browser sessions kept at once; logging in beyond it ends the one
/// that expires first.
pub const MAX_SESSIONS: usize = 256;

/// Shortest token accepted from a token file.
pub const MIN_TOKEN_LEN: usize = 16;

/// Routes anyone may request: the health check and the login form.
const PUBLIC: [&str; 2] = ["/healthz", "/login"];

/// The secret that opens the API. Neither `Debug` nor any log shows it.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(hidden)")
    }
}

/// Why the API token could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token file exists but could not be read.
    #[error("cannot read the HTTP token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The token file was missing and could not be created.
    #[error(
        "cannot create the HTTP token file {path}: {source} (does its directory exist, and may this user write there?)"
    )]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The token in the file is too short or holds characters a header
    /// cannot carry.
    #[error(
        "the HTTP token in {path} is not usable: it needs at least {MIN_TOKEN_LEN} printable ASCII characters without spaces (it has {len} characters); delete the file to have a random token generated"
    )]
    Weak {
        /// The file.
        path: PathBuf,
        /// Characters in it (after trimming the line end).
        len: usize,
    },
    /// The operating system gave no random bytes.
    #[error("cannot get random bytes from the operating system: {0}")]
    Random(String),
}

/// Hex of `n` random bytes from the operating system.
fn random_hex(n: usize) -> Result<String, TokenError> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
    Ok(hex::encode(bytes))
}

impl Token {
    /// A fresh random token: 32 bytes from the operating system, in hex.
    pub fn generate() -> Result<Self, TokenError> {
        Ok(Self(random_hex(32)?.into()))
    }

    /// A token from its text, if it is usable in a header and long enough
    /// ([`MIN_TOKEN_LEN`]).
    pub fn new(secret: &str) -> Option<Self> {
        (secret.len() >= MIN_TOKEN_LEN && secret.bytes().all(|b| b.is_ascii_graphic()))
            .then(|| Self(secret.into()))
    }

    /// Reads the token from `path`, or creates the file (mode 0600) with a
    /// fresh random token when it is missing. Logs where the token is,
    /// never the token; warns when the file is readable by other users.
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let created = Self::generate()?;
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut file) => {
                file.write_all(format!("{}\n", created.0).as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|source| TokenError::Create {
                        path: path.to_path_buf(),
                        source,
                    })?;
                tracing::info!(
                    "HTTP API token created in {} (mode 0600): send it as `Authorization: Bearer <token>` or log in at /login",
                    path.display()
                );
                return Ok(created);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(TokenError::Create {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
        let read = |source| TokenError::Read {
            path: path.to_path_buf(),
            source,
        };
        let text = std::fs::read_to_string(path).map_err(read)?;
        let secret = text.trim_end_matches(['\n', '\r']);
        let token = Self::new(secret).ok_or_else(|| TokenError::Weak {
            path: path.to_path_buf(),
            len: secret.chars().count(),
        })?;
        let mode = std::fs::metadata(path).map_err(read)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                "the HTTP token file {} is readable by other users (mode {:o}): chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
        tracing::info!("HTTP API token read from {}", path.display());
        Ok(token)
    }

    /// Whether `candidate` is this token, in time that does not depend on
    /// where they differ.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(candidate).into()
    }
}

/// Who may use the API.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Access {
    /// Requests need this token (as a bearer token, or through a browser
    /// session opened with it at `/login`).
    Token(Token),
    /// Anyone who reaches the address may use the API
    /// (`serve --http-allow-anonymous`). The origin rule still holds.
    Anonymous,
}

/// Open browser sessions: random ids with an expiry, at most
/// [`MAX_SESSIONS`].
#[derive(Debug, Default)]
struct Sessions {
    open: Mutex<Vec<(String, Instant)>>,
}

impl Sessions {
    /// Opens a session; returns its id.
    fn open(&self, now: Instant) -> Result<String, TokenError> {
        let id = random_hex(32)?;
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|(_, expires)| *expires > now);
        if open.len() >= MAX_SESSIONS
            && let Some(first) = open
                .iter()
                .enumerate()
                .min_by_key(|(_, (_, expires))| *expires)
                .map(|(i, _)| i)
        {
            open.swap_remove(first);
        }
        open.push((id.clone(), now + SESSION_LIFETIME));
        Ok(id)
    }

    /// Whether `id` is an open session. Compares with every session in
    /// constant time, so timing tells nothing about the ids.
    fn is_open(&self, id: &[u8], now: Instant) -> bool {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let mut found = subtle::Choice::from(0);
        for (candidate, expires) in open.iter() {
            let live = subtle::Choice::from(u8::from(*expires > now));
            found |= candidate.as_bytes().ct_eq(id) & live;
        }
        found.into()
    }
}

/// The API's access rule and its browser sessions.
#[derive(Debug)]
pub struct Guard {
    access: Access,
    sessions: Sessions,
    /// Whether cookies get `Secure` (the API is served over TLS).
    secure_cookies: bool,
    stats: Arc<HttpStats>,
}

impl Guard {
    /// A guard for `access`; `secure_cookies` when served over TLS.
    pub fn new(access: Access, secure_cookies: bool, stats: Arc<HttpStats>) -> Self {
        Self {
            access,
            sessions: Sessions::default(),
            secure_cookies,
            stats,
        }
    }

    /// Who may use the API.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// The credential a request carries, if it is valid.
    fn credential(&self, headers: &HeaderMap, now: Instant) -> Option<Credential> {
        let token = match &self.access {
            Access::Anonymous => return Some(Credential::Anonymous),
            Access::Token(token) => token,
        };
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            // A wrong Authorization header is refused, not retried as a
            // cookie: the client meant the header.
            let presented = value.as_bytes();
            let bearer = presented
                .get(..7)
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"bearer "));
            return (bearer && token.matches(presented[7..].trim_ascii()))
                .then_some(Credential::Bearer);
        }
        let session = cookie(headers, SESSION_COOKIE)?;
        self.sessions
            .is_open(session.as_bytes(), now)
            .then_some(Credential::Cookie)
    }
}

impl FromRef<ApiState> for Arc<Guard> {
    fn from_ref(state: &ApiState) -> Self {
        Arc::clone(&state.guard)
    }
}

/// What a request authenticated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Credential {
    /// `Authorization: Bearer <token>`: never attached by a browser on its own.
    Bearer,
    /// The session cookie: attached by the browser to any same-site request.
    Cookie,
    /// The API runs without authentication.
    Anonymous,
}

/// A cookie's value from the `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// `host[:port]` of an `http://` or `https://` URL.
fn authority(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Whether the request's `Origin` (or, lacking one, its `Referer`) names
/// the host the request was sent to (its `Host` header); `None` when it
/// carries neither. `Origin: null` (sandboxed frames, `file:` pages) names
/// no host and so is not the same origin.
fn same_origin(headers: &HeaderMap) -> Option<bool> {
    let claimed = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))?;
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let from = claimed.to_str().ok().and_then(authority);
    Some(matches!((from, host), (Some(from), Some(host)) if from.eq_ignore_ascii_case(host)))
}

/// Whether requests with this method change nothing (and so need no
/// origin check).
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// 401 with the JSON error every API client gets without a credential.
fn unauthorized() -> Response {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "authentication required: send `Authorization: Bearer <token>` with the token from the file given to `serve --http-token-file`, or log in at /login".into(),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"latentcam\""),
    );
    response
}

fn cross_site(stats: &HttpStats, why: &str) -> Response {
    stats.forbidden.fetch_add(1, Ordering::Relaxed);
    error(StatusCode::FORBIDDEN, why.into())
}

/// The access rule as middleware: a credential for every route but the
/// public ones, and the origin rule for requests that change something.
pub(super) async fn authenticate(
    State(guard): State<Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if PUBLIC.contains(&path) {
        return next.run(request).await;
    }
    let Some(credential) = guard.credential(request.headers(), Instant::now()) else {
        guard.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        // A browser opening the live page is shown the login form.
        if path == "/" && matches!(*request.method(), Method::GET | Method::HEAD) {
            return Redirect::to("/login").into_response();
        }
        return unauthorized();
    };
    if !is_safe(request.method()) {
        match (credential, same_origin(request.headers())) {
            (Credential::Bearer, _) | (_, Some(true)) => {}
            (_, Some(false)) => {
                return cross_site(
                    &guard.stats,
                    "cross-site request refused: its Origin (or Referer) is not this host",
                );
            }
            (Credential::Cookie, None) => {
                return cross_site(
                    &guard.stats,
                    "a request authenticated by the session cookie must carry an Origin or Referer header naming this host (scripts send `Authorization: Bearer <token>` instead)",
                );
            }
            (Credential::Anonymous, None) => {}
        }
    }
    next.run(request).await
}

/// `GET /login`: the login form (or, without authentication, the page).
pub(super) async fn login_page(State(guard): State<Arc<Guard>>) -> Response {
    match guard.access {
        Access::Anonymous => Redirect::to("/").into_response(),
        Access::Token(_) => Html(login_form("")).into_response(),
    }
}

/// `POST /login` (form body `token=...`): opens a session and sets its
/// cookie, then redirects to the live page.
pub(super) async fn login(
    State(guard): State<Arc<Guard>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Access::Token(token) = &guard.access else {
        return Redirect::to("/").into_response();
    };
    // A login posted from another site would plant that site's choice of
    // session in the browser.
    if same_origin(&headers) == Some(false) {
        return cross_site(
            &guard.stats,
            "cross-site login refused: its Origin (or Referer) is not this host",
        );
    }
    let presented = form_urlencoded::parse(&body)
        .find(|(key, _)| key == "token")
        .map(|(_, value)| value);
    if !presented.is_some_and(|p| token.matches(p.trim().as_bytes())) {
        guard.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("HTTP login with a wrong token");
        return (
            StatusCode::UNAUTHORIZED,
            Html(login_form("That is not the token.")),
        )
            .into_response();
    }
    let id = match guard.sessions.open(Instant::now()) {
        Ok(id) => id,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let cookie = format!(
        "{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        SESSION_LIFETIME.as_secs(),
        if guard.secure_cookies { "; Secure" } else { "" }
    );
    let mut response = Redirect::to("/").into_response();
    match HeaderValue::from_str(&cookie) {
        Ok(value) => {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
    response
}

/// The login page. A link ending in `#token=<token>` logs in at once (the
/// part after `#` never reaches a server or a log).
fn login_form(message: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>latentcam host: log in</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}.error{{color:#b00}}</style></head><body>
<h1>latentcam host</h1>
<p class="error">{message}</p>
<form method="post" action="/login">
<label>API token <input type="password" name="token" autocomplete="current-password" autofocus required></label>
<button type="submit">Log in</button>
</form>
<p>The token is in the file given to <code>latentcam-host serve --http-token-file</code>.</p>
<script>
const given=location.hash.match(/^#token=(.+)$/);
if(given){{history.replaceState(null,'',location.pathname);const f=document.forms[0];f.token.value=decodeURIComponent(given[1]);f.submit();}}
</script></body></html>
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        h
    }

    #[test]
    fn origin_must_name_the_host_the_request_was_sent_to() {
        let host = (header::HOST, "127.0.0.1:8080");
        assert_eq!(same_origin(&headers(std::slice::from_ref(&host))), None);
        for (claimed, same) in [
            ((header::ORIGIN, "http://127.0.0.1:8080"), true),
            ((header::ORIGIN, "https://127.0.0.1:8080"), true),
            ((header::REFERER, "http://127.0.0.1:8080/login?x#y"), true),
            ((header::ORIGIN, "http://127.0.0.1:8081"), false),
            ((header::ORIGIN, "http://evil.example"), false),
            ((header::ORIGIN, "null"), false),
            (
                (header::REFERER, "http://127.0.0.1:8080.evil.example/"),
                false,
            ),
            ((header::REFERER, "file:///tmp/x.html"), false),
        ] {
            let h = headers(&[host.clone(), claimed.clone()]);
            assert_eq!(same_origin(&h), Some(same), "{claimed:?}");
        }
        // Origin wins over Referer.
        let h = headers(&[
            host,
            (header::ORIGIN, "http://evil.example"),
            (header::REFERER, "http://127.0.0.1:8080/"),
        ]);
        assert_eq!(same_origin(&h), Some(false));
        // No Host to compare with: not the same origin.
        let h = headers(&[(header::ORIGIN, "http://127.0.0.1:8080")]);
        assert_eq!(same_origin(&h), Some(false));
    }

    #[test]
    fn bearer_token_or_open_session_authenticates() {
        let token = Token::new("0123456789abcdef0123").unwrap();
        let guard = Guard::new(Access::Token(token), false, Arc::new(HttpStats::default()));
        let now = Instant::now();
        let cred = |h: &[(header::HeaderName, &str)]| guard.credential(&headers(h), now);
        assert_eq!(cred(&[]), None);
        assert_eq!(
            cred(&[(header::AUTHORIZATION, "Bearer 0123456789abcdef0123")]),
            Some(Credential::Bearer)
        );
        assert_eq!(
            cred(&[(header::AUTHORIZATION, "bearer 0123456789abcdef0123")]),
            Some(Credential::Bearer)
        );
        assert_eq!(
            cred(&[(header::AUTHORIZATION, "Bearer 0123456789abcdef012")]),
            None
        );
        assert_eq!(
            cred(&[(header::AUTHORIZATION, "Basic 0123456789abcdef0123")]),
            None
        );
        let id = guard.sessions.open(now).unwrap();
        let session = format!("a=b; {SESSION_COOKIE}={id}");
        assert_eq!(
            cred(&[(header::COOKIE, &session)]),
            Some(Credential::Cookie)
        );
        assert_eq!(
            cred(&[(header::COOKIE, &format!("{SESSION_COOKIE}=0{id}"))]),
            None
        );
        // Expired.
        assert!(!guard.sessions.is_open(
            id.as_bytes(),
            now + SESSION_LIFETIME + Duration::from_secs(1)
        ));
    }

    #[test]
    fn sessions_are_bounded() {
        let sessions = Sessions::default();
        let start = Instant::now();
        let first = sessions.open(start).unwrap();
        for i in 1..=MAX_SESSIONS {
            sessions
                .open(start + Duration::from_millis(i as u64))
                .unwrap();
        }
        let open = sessions.open.lock().unwrap();
        assert_eq!(open.len(), MAX_SESSIONS);
        assert!(open.iter().all(|(id, _)| *id != first), "oldest evicted");
    }

    #[test]
    fn weak_tokens_are_refused() {
        assert!(Token::new("short").is_none());
        assert!(Token::new("sixteen chars ok").is_none(), "spaces");
        assert!(Token::new("sixteen-chars-ok").is_some());
        let generated = Token::generate().unwrap();
        assert_eq!(generated.0.len(), 64);
        assert_eq!(format!("{generated:?}"), "Token(hidden)");
    }
}
