//! The host's HTTP API, Prometheus metrics and live page.
//!
//! | route | what |
//! |---|---|
//! | `GET /healthz` | `ok`, to anyone: for load balancers and supervisors; tells nothing else |
//! | `GET /login`, `POST /login` (form `token=...`) | the login form; a right token opens a browser session (cookie) and redirects to `/` |
//! | `GET /` | live page: a card per device (online or offline, last seen, fps, spool depth, drops, encoder time, CPU temperature, latest ImageNet and few-shot labels, a sparkline of the anomaly score with alarms marked) and forms to enrol a photo and search by photo (refreshes itself; without a session, redirects to `/login`) |
//! | `GET /assets/live.js`, `GET /assets/live.css` | the live page's script and style, embedded in the binary |
//! | `GET /api/devices?offset=O&limit=L` | a page of devices (default 100, at most 1000): `online`, `last_seen` (ISO-8601 UTC), `seen_seconds_ago`, `spool_depth`, `anomaly` (latest score, alarms, the last 120 scores), identity, counters, fps, last heartbeat, latest result; `total` and `next_offset` |
//! | `GET /api/devices/{id}/latest` | a device's latest result line |
//! | `GET /api/search?device=D&seq=N&k=K` | frames like a stored one (needs `serve --index`) |
//! | `POST /api/search` `{"latent": [...], "k": K}` (`application/json`) | frames like a given latent |
//! | `POST /api/search/image?k=K` (body: `image/jpeg` or `image/png`) | frames like a photo (encoded here) |
//! | `POST /api/enroll?label=L` (body: `image/jpeg` or `image/png`) | one more example for the few-shot head (needs `serve --fewshot`); saved, then used for the next latent |
//! | `GET /metrics` | Prometheus text: frames in, gaps, duplicates, drops, per-head latency, queue depth, device authentication failures, HTTP connections and refusals |
//!
//! Every route but `/healthz` and `/login` needs the API token, as
//! `Authorization: Bearer <token>` or through a browser session; `POST`s
//! from a browser must come from this host's own pages, and must have the
//! route's content type (else 415). See [`auth`] for the rules. With
//! [`HttpOptions::tls`] the API is served over HTTPS ([`tls`]).
//!
//! Limits, so an exposed API cannot be used to exhaust the host: at most
//! [`HttpLimits::max_connections`] connections (more are closed at once),
//! a request head within [`HttpLimits::header_timeout`] of the connection
//! opening or of its previous response, a body within
//! [`HttpLimits::body_timeout`], at most [`MAX_IMAGE_BYTES`] per photo and
//! [`MAX_UPLOADS_IN_FLIGHT`] photos being received or encoded at once,
//! photos of at most 40 megapixels (checked from their header, see
//! `latentcam_model::picture`), and pages of at most
//! [`MAX_PAGE`] devices.

pub mod auth;
mod server;
pub mod tls;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt as _;
use latentcam_model::picture::PictureError;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, watch};

use super::metrics::{Scalar, Scrape};
use super::{Context, Job};
use crate::encode::EncodeError;
pub use auth::{Access, Guard, Token, TokenError};
pub use tls::{Tls, TlsError};

/// Largest photo accepted by `/api/enroll` and `/api/search/image`.
pub const MAX_IMAGE_BYTES: usize = 16 << 20;

/// Largest JSON body (`POST /api/search`: a latent of a few thousand
/// numbers).
pub const MAX_JSON_BYTES: usize = 1 << 20;

/// Largest login form.
const MAX_FORM_BYTES: usize = 4 << 10;

/// Photos being received, decoded or encoded at once; more wait (within
/// the body timeout), so concurrent uploads cannot add up to gigabytes.
pub const MAX_UPLOADS_IN_FLIGHT: usize = 4;

/// Devices per page of `/api/devices` when the query names no `limit`.
pub const DEFAULT_PAGE: usize = 100;

/// Most devices per page of `/api/devices`.
pub const MAX_PAGE: usize = 1000;

/// The HTTP API's limits on connections and time.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Most connections open at once; more are closed at accept, counted
    /// in `/metrics`.
    pub max_connections: usize,
    /// Time a connection gets to send a complete request head, from when it
    /// opens or its previous response was sent (so also the keep-alive idle
    /// timeout).
    pub header_timeout: Duration,
    /// Time a request gets to send its whole body.
    pub body_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// How the HTTP API is served.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// `host:port` to listen on.
    pub address: String,
    /// Who may use it.
    pub access: Access,
    /// Connection and time limits.
    pub limits: HttpLimits,
    /// Serve HTTPS with this certificate instead of plain HTTP.
    pub tls: Option<Tls>,
}

/// Counters of the HTTP server, for `/metrics`.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections closed at accept because [`HttpLimits::max_connections`]
    /// were open.
    pub refused: AtomicU64,
    /// Connections closed because no complete request head came in time.
    pub header_timeouts: AtomicU64,
    /// Requests whose body did not arrive within the body timeout.
    pub body_timeouts: AtomicU64,
    /// Requests refused for a missing or wrong credential.
    pub unauthorized: AtomicU64,
    /// Requests refused by the origin rule.
    pub forbidden: AtomicU64,
}

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// Registry, live results, limits.
    pub context: Arc<Context>,
    /// The job queue, for its depth (weak: the API must not keep it open).
    pub jobs: mpsc::WeakSender<Job>,
    /// The access rule and browser sessions.
    pub guard: Arc<Guard>,
    /// Connection and time limits.
    pub limits: HttpLimits,
    /// Server counters.
    pub stats: Arc<HttpStats>,
    /// Photos in flight ([`MAX_UPLOADS_IN_FLIGHT`]).
    pub uploads: Arc<Semaphore>,
}

impl ApiState {
    /// The state for an API with `options`' access rule and limits.
    pub fn new(context: Arc<Context>, jobs: mpsc::WeakSender<Job>, options: &HttpOptions) -> Self {
        let stats = Arc::new(HttpStats::default());
        Self {
            context,
            jobs,
            guard: Arc::new(Guard::new(
                options.access.clone(),
                options.tls.is_some(),
                Arc::clone(&stats),
            )),
            limits: options.limits,
            stats,
            uploads: Arc::new(Semaphore::new(MAX_UPLOADS_IN_FLIGHT)),
        }
    }
}

/// What a `POST` route accepts: content types, size, and whether it is a
/// photo (which takes one of [`MAX_UPLOADS_IN_FLIGHT`]).
#[derive(Clone)]
struct Upload {
    types: &'static [&'static str],
    max_bytes: usize,
    photo: bool,
    state: ApiState,
}

const PHOTO_TYPES: &[&str] = &["image/jpeg", "image/png"];
const JSON_TYPES: &[&str] = &["application/json"];
const FORM_TYPES: &[&str] = &["application/x-www-form-urlencoded"];

/// The API's routes, behind the access rule.
pub fn router(state: ApiState) -> Router {
    let upload = |types, max_bytes, photo| {
        middleware::from_fn_with_state(
            Upload {
                types,
                max_bytes,
                photo,
                state: state.clone(),
            },
            read_upload,
        )
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route(
            "/login",
            get(auth::login_page).merge(post(auth::login).layer(upload(
                FORM_TYPES,
                MAX_FORM_BYTES,
                false,
            ))),
        )
        .route("/", get(page))
        .route("/assets/live.js", get(page_js))
        .route("/assets/live.css", get(page_css))
        .route("/api/devices", get(devices))
        .route("/api/devices/{id}/latest", get(latest))
        .route(
            "/api/search",
            get(search_stored).merge(
                post(search_latent)
                    .layer::<_, Infallible>(upload(JSON_TYPES, MAX_JSON_BYTES, false))
                    .layer(DefaultBodyLimit::max(MAX_JSON_BYTES)),
            ),
        )
        .route(
            "/api/search/image",
            post(search_image)
                .layer::<_, Infallible>(upload(PHOTO_TYPES, MAX_IMAGE_BYTES, true))
                .layer(DefaultBodyLimit::max(MAX_IMAGE_BYTES)),
        )
        .route(
            "/api/enroll",
            post(enroll)
                .layer::<_, Infallible>(upload(PHOTO_TYPES, MAX_IMAGE_BYTES, true))
                .layer(DefaultBodyLimit::max(MAX_IMAGE_BYTES)),
        )
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state.guard),
            auth::authenticate,
        ))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// Serves the API on `listener` (over TLS when `tls` is given) until
/// `shutdown` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    tls: Option<Tls>,
    shutdown: watch::Receiver<bool>,
) {
    if matches!(state.guard.access(), Access::Anonymous) {
        tracing::warn!(
            "HTTP API WITHOUT AUTHENTICATION (--http-allow-anonymous): anyone who reaches {} can read every device and enrol photos",
            listener
                .local_addr()
                .map_or_else(|_| "it".to_owned(), |a| a.to_string())
        );
    }
    let (limits, stats) = (state.limits, Arc::clone(&state.stats));
    server::run(listener, router(state), limits, tls, stats, shutdown).await;
}

/// Headers on every answer: no sniffing content types, no framing (the
/// login form must not be clickjacked), no caching of device data.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::CONTENT_SECURITY_POLICY,
            "frame-ancestors 'none'; form-action 'self'",
        ),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Checks a `POST`'s content type (415), then reads its body within the
/// body timeout (408) and size limit (413), so handlers get it whole.
async fn read_upload(State(upload): State<Upload>, request: Request, next: Next) -> Response {
    let media = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    if !media.as_deref().is_some_and(|m| upload.types.contains(&m)) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type must be {} (got {})",
                upload.types.join(" or "),
                media.as_deref().unwrap_or("none")
            ),
        );
    }
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {} bytes", upload.max_bytes),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > upload.max_bytes as u64) {
        return too_large();
    }
    let state = &upload.state;
    let deadline = tokio::time::Instant::now() + state.limits.body_timeout;
    let timed_out = || {
        state.stats.body_timeouts.fetch_add(1, Ordering::Relaxed);
        let mut response = error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s",
                state.limits.body_timeout.as_secs_f64()
            ),
        );
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    };
    // Held until the handler is done: receiving, decoding and encoding.
    let _in_flight = if upload.photo {
        match tokio::time::timeout_at(deadline, Arc::clone(&state.uploads).acquire_owned()).await {
            Ok(Ok(permit)) => Some(permit),
            Ok(Err(_)) => return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down".into()),
            Err(_) => return timed_out(),
        }
    } else {
        None
    };
    let (parts, body) = request.into_parts();
    let limited = http_body_util::Limited::new(body, upload.max_bytes);
    let bytes = match tokio::time::timeout_at(deadline, limited.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Ok(Err(e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            );
        }
        Err(_) => return timed_out(),
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// `GET /healthz`: answers while the host runs; reveals nothing.
async fn healthz() -> &'static str {
    "ok"
}

fn queue_depth(jobs: &mpsc::WeakSender<Job>) -> usize {
    jobs.upgrade()
        .map(|s| s.max_capacity() - s.capacity())
        .unwrap_or(0)
}

/// Query of `GET /api/devices`.
#[derive(Debug, serde::Deserialize)]
pub struct PageQuery {
    /// Devices to skip (in id order; default 0).
    pub offset: Option<usize>,
    /// Devices wanted (default [`DEFAULT_PAGE`], at most [`MAX_PAGE`]).
    pub limit: Option<usize>,
}

async fn devices(
    State(state): State<ApiState>,
    axum::extract::Query(q): axum::extract::Query<PageQuery>,
) -> Json<Value> {
    let now = Instant::now();
    let live = &state.context.live;
    let offset = q.offset.unwrap_or(0);
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    // Only the page is copied out of the registry and becomes JSON.
    let wall = SystemTime::now();
    let registry = &state.context.registry;
    let (total, page) = registry.page(offset, limit);
    let list: Vec<Value> = page
        .into_iter()
        .map(|(id, record)| {
            let presence = registry.presence(&record, now, wall);
            json!({
                "id": id,
                "online": presence.online,
                "last_seen": presence.last_seen(),
                "seen_seconds_ago": presence.seen_seconds_ago,
                "spool_depth": presence.spool_depth,
                "fps": live.fps(&id, now),
                "anomaly": live.anomaly(&id),
                "record": record,
                "latest": live.latest(&id),
            })
        })
        .collect();
    let end = offset.saturating_add(list.len());
    Json(json!({
        "devices": list,
        "total": total,
        "offset": offset,
        "limit": limit,
        "next_offset": (end < total).then_some(end),
        "processed": live.processed(),
    }))
}

async fn latest(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    match state.context.live.latest(&id) {
        Some(line) => Json(line).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no result from device {id:?} yet")})),
        )
            .into_response(),
    }
}

/// Query of `GET /api/search`.
#[derive(Debug, serde::Deserialize)]
pub struct StoredQuery {
    /// Device of the stored frame.
    pub device: String,
    /// Its sequence number.
    pub seq: u64,
    /// Hits wanted (default 10, at most 1000).
    pub k: Option<usize>,
}

/// Body of `POST /api/search`.
#[derive(Debug, serde::Deserialize)]
pub struct LatentQuery {
    /// The query latent.
    pub latent: Vec<f32>,
    /// Hits wanted (default 10, at most 1000).
    pub k: Option<usize>,
}

/// A JSON error answer: `{"error": message}`.
fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn hits_json(hits: &[crate::heads::search::SearchHit]) -> Response {
    let hits: Vec<Value> = hits
        .iter()
        .map(|h| {
            json!({"device": h.device, "seq": h.seq, "capture_us": h.capture_us, "similarity": h.similarity})
        })
        .collect();
    Json(json!({ "hits": hits })).into_response()
}

async fn search_stored(
    State(state): State<ApiState>,
    axum::extract::Query(q): axum::extract::Query<StoredQuery>,
) -> Response {
    let Some(index) = state.context.index.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "no index: start serve with --index FILE".into(),
        );
    };
    let k = q.k.unwrap_or(10).clamp(1, 1000);
    let found =
        tokio::task::spawn_blocking(move || index.lock().search_stored(&q.device, q.seq, k)).await;
    match found {
        Ok(Some(hits)) => hits_json(&hits),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "that frame is not in the index".into(),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn search_latent(State(state): State<ApiState>, Json(q): Json<LatentQuery>) -> Response {
    let Some(index) = state.context.index.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "no index: start serve with --index FILE".into(),
        );
    };
    let k = q.k.unwrap_or(10).clamp(1, 1000);
    let found = tokio::task::spawn_blocking(move || index.lock().search(&q.latent, k)).await;
    match found {
        Ok(Ok(hits)) => hits_json(&hits),
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Query of `POST /api/search/image`.
#[derive(Debug, serde::Deserialize)]
pub struct ImageQuery {
    /// Hits wanted (default 10, at most 1000).
    pub k: Option<usize>,
}

/// Query of `POST /api/enroll`.
#[derive(Debug, serde::Deserialize)]
pub struct EnrollQuery {
    /// The label the photo shows.
    pub label: String,
}

/// Runs the host's encoder on an uploaded photo, off the async threads.
async fn encode_upload(state: &ApiState, body: Bytes) -> Result<Vec<f32>, Response> {
    let Some(encoder) = state.context.encoder.clone() else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "this host has no encoder loaded".into(),
        ));
    };
    let encoded = tokio::task::spawn_blocking(move || {
        encoder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .encode_bytes(&body)
    })
    .await;
    match encoded {
        Ok(Ok(latent)) => Ok(latent),
        Ok(Err(e @ EncodeError::Image(PictureError::TooLarge { .. }))) => {
            Err(error(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()))
        }
        Ok(Err(e)) => Err(error(StatusCode::BAD_REQUEST, e.to_string())),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

async fn search_image(
    State(state): State<ApiState>,
    axum::extract::Query(q): axum::extract::Query<ImageQuery>,
    body: Bytes,
) -> Response {
    let Some(index) = state.context.index.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "no index: start serve with --index FILE".into(),
        );
    };
    let latent = match encode_upload(&state, body).await {
        Ok(l) => l,
        Err(response) => return response,
    };
    let k = q.k.unwrap_or(10).clamp(1, 1000);
    let found = tokio::task::spawn_blocking(move || index.lock().search(&latent, k)).await;
    match found {
        Ok(Ok(hits)) => hits_json(&hits),
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn enroll(
    State(state): State<ApiState>,
    axum::extract::Query(q): axum::extract::Query<EnrollQuery>,
    body: Bytes,
) -> Response {
    let Some(fewshot) = state.context.fewshot.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "no few-shot head: start serve with --fewshot STORE".into(),
        );
    };
    let latent = match encode_upload(&state, body).await {
        Ok(l) => l,
        Err(response) => return response,
    };
    let label = q.label.clone();
    let enrolled = tokio::task::spawn_blocking(move || fewshot.enroll(&label, &latent)).await;
    match enrolled {
        Ok(Ok(examples)) => {
            tracing::info!(label = %q.label, examples, "enrolled over HTTP");
            Json(json!({"label": q.label, "examples": examples})).into_response()
        }
        Ok(Err(e @ crate::heads::HeadError::Io { .. })) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let context = &state.context;
    let registry = &context.registry;
    let live = &context.live;
    let http = &state.stats;
    let scalar = |name, help, gauge, value| Scalar {
        name,
        help,
        gauge,
        value,
    };
    let scrape = Scrape {
        devices: registry
            .snapshot()
            .into_iter()
            .map(|(id, record)| {
                let presence = registry.presence(&record, now, wall);
                (id, record, presence)
            })
            .collect(),
        anomaly: live.anomaly_summary(),
        heads: live.heads(),
        scalars: vec![
            scalar(
                "latentcam_processed_total",
                "Latents the heads ran on.",
                false,
                live.processed(),
            ),
            scalar(
                "latentcam_head_batches_total",
                "Batches the head worker ran (processed / batches is the mean batch size).",
                false,
                live.batches(),
            ),
            scalar(
                "latentcam_queue_depth",
                "Latents waiting for the heads.",
                true,
                queue_depth(&state.jobs) as u64,
            ),
            scalar(
                "latentcam_auth_failures_total",
                "Device connections refused at authentication.",
                false,
                context.auth.failures(),
            ),
            scalar(
                "latentcam_http_connections_open",
                "HTTP connections open now.",
                true,
                http.open.load(Ordering::Relaxed),
            ),
            scalar(
                "latentcam_http_connections_refused_total",
                "HTTP connections closed at accept: the connection limit was reached.",
                false,
                http.refused.load(Ordering::Relaxed),
            ),
            scalar(
                "latentcam_http_header_timeouts_total",
                "HTTP connections closed for not sending a request head in time.",
                false,
                http.header_timeouts.load(Ordering::Relaxed),
            ),
            scalar(
                "latentcam_http_body_timeouts_total",
                "HTTP requests whose body did not arrive in time.",
                false,
                http.body_timeouts.load(Ordering::Relaxed),
            ),
            scalar(
                "latentcam_http_unauthorized_total",
                "HTTP requests without a valid token or session.",
                false,
                http.unauthorized.load(Ordering::Relaxed),
            ),
            scalar(
                "latentcam_http_cross_site_total",
                "HTTP requests refused by the origin rule.",
                false,
                http.forbidden.load(Ordering::Relaxed),
            ),
        ],
    };
    match super::metrics::render(&scrape, &live.latency) {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => {
            tracing::error!("/metrics: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": e.to_string()})),
            )
                .into_response()
        }
    }
}

/// The live page, its script and its style, embedded in the binary (the
/// page loads nothing from elsewhere).
const PAGE: &str = include_str!("http/assets/live.html");
const PAGE_JS: &str = include_str!("http/assets/live.js");
const PAGE_CSS: &str = include_str!("http/assets/live.css");

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn page_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        PAGE_JS,
    )
        .into_response()
}

async fn page_css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        PAGE_CSS,
    )
        .into_response()
}
