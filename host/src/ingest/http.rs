//! The host's HTTP API, Prometheus metrics and live page.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | live page: devices, frame rates, latest top label, few-shot label and anomaly score (refreshes itself) |
//! | `GET /api/devices` | every device: identity, counters, fps, last heartbeat, latest result |
//! | `GET /api/devices/{id}/latest` | a device's latest result line |
//! | `GET /api/search?device=D&seq=N&k=K` | frames like a stored one (needs `serve --index`) |
//! | `POST /api/search` `{"latent": [...], "k": K}` | frames like a given latent |
//! | `POST /api/search/image?k=K` (body: a JPEG or PNG) | frames like a photo (encoded here) |
//! | `POST /api/enroll?label=L` (body: a JPEG or PNG) | one more example for the few-shot head (needs `serve --fewshot`); saved, then used for the next latent |
//! | `GET /metrics` | Prometheus text: frames in, gaps, duplicates, drops, per-head latency, queue depth |

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::DefaultBodyLimit;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::live::HeadTiming;
use super::{Context, Job};

/// Largest photo accepted by `/api/enroll` and `/api/search/image`.
pub const MAX_IMAGE_BYTES: usize = 16 << 20;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// Registry, live results, limits.
    pub context: Arc<Context>,
    /// The job queue, for its depth (weak: the API must not keep it open).
    pub jobs: mpsc::WeakSender<Job>,
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/devices", get(devices))
        .route("/api/devices/{id}/latest", get(latest))
        .route("/api/search", get(search_stored).post(search_latent))
        .route(
            "/api/search/image",
            post(search_image).layer(DefaultBodyLimit::max(MAX_IMAGE_BYTES)),
        )
        .route(
            "/api/enroll",
            post(enroll).layer(DefaultBodyLimit::max(MAX_IMAGE_BYTES)),
        )
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves the API until `shutdown` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    mut shutdown: watch::Receiver<bool>,
) {
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!("HTTP API stopped: {e}");
    }
}

fn queue_depth(jobs: &mpsc::WeakSender<Job>) -> usize {
    jobs.upgrade()
        .map(|s| s.max_capacity() - s.capacity())
        .unwrap_or(0)
}

async fn devices(State(state): State<ApiState>) -> Json<Value> {
    let now = Instant::now();
    let live = &state.context.live;
    let list: Vec<Value> = state
        .context
        .registry
        .snapshot()
        .into_iter()
        .map(|(id, record)| {
            json!({
                "id": id,
                "fps": live.fps(&id, now),
                "record": record,
                "latest": live.latest(&id),
            })
        })
        .collect();
    Json(json!({ "devices": list, "processed": live.processed() }))
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
async fn encode_upload(state: &ApiState, body: axum::body::Bytes) -> Result<Vec<f32>, Response> {
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
        Ok(Err(e)) => Err(error(StatusCode::BAD_REQUEST, e.to_string())),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

async fn search_image(
    State(state): State<ApiState>,
    axum::extract::Query(q): axum::extract::Query<ImageQuery>,
    body: axum::body::Bytes,
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
    body: axum::body::Bytes,
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

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A per-device counter family: name, help, and how to read it.
type Family = (&'static str, &'static str, fn(&super::DeviceRecord) -> u64);

/// A per-head family: name, help, type, and how to read it.
type HeadFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&HeadTiming) -> f64,
);

async fn metrics(State(state): State<ApiState>) -> Response {
    let mut out = String::new();
    let devices = state.context.registry.snapshot();
    let families: [Family; 6] = [
        ("latentcam_latents_total", "Latents admitted.", |r| {
            r.latents
        }),
        (
            "latentcam_duplicates_total",
            "Re-sent latents already held.",
            |r| r.duplicates,
        ),
        (
            "latentcam_missing_total",
            "Sequence numbers never received.",
            |r| r.missing,
        ),
        (
            "latentcam_rate_limited_total",
            "Latents dropped by the rate limit.",
            |r| r.rate_limited,
        ),
        (
            "latentcam_frame_errors_total",
            "Corrupt frames after Hello.",
            |r| r.frame_errors,
        ),
        (
            "latentcam_device_dropped_total",
            "Frames the device dropped (its heartbeat).",
            |r| r.heartbeat.map_or(0, |h| h.frames_dropped),
        ),
    ];
    for (name, help, get) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (id, record) in &devices {
            let _ = writeln!(out, "{name}{{device=\"{}\"}} {}", label(id), get(record));
        }
    }
    let heads = state.context.live.heads();
    let head_families: [HeadFamily; 2] = [
        (
            "latentcam_head_seconds_total",
            "Time spent in each head.",
            "counter",
            |t| t.seconds,
        ),
        (
            "latentcam_head_runs_total",
            "Latents each head ran on.",
            "counter",
            |t| t.count as f64,
        ),
    ];
    for (name, help, kind, get) in head_families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (head, t) in &heads {
            let _ = writeln!(out, "{name}{{head=\"{}\"}} {}", label(head), get(t));
        }
    }
    let _ = writeln!(
        out,
        "# HELP latentcam_processed_total Latents the heads ran on.\n# TYPE latentcam_processed_total counter\nlatentcam_processed_total {}\n# HELP latentcam_head_batches_total Batches the head worker ran (processed / batches is the mean batch size).\n# TYPE latentcam_head_batches_total counter\nlatentcam_head_batches_total {}",
        state.context.live.processed(),
        state.context.live.batches()
    );
    let _ = writeln!(
        out,
        "# HELP latentcam_queue_depth Latents waiting for the heads.\n# TYPE latentcam_queue_depth gauge\nlatentcam_queue_depth {}",
        queue_depth(&state.jobs)
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>latentcam host</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse}td,th{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left}
.num{text-align:right;font-variant-numeric:tabular-nums}
</style></head><body>
<h1>latentcam host</h1>
<p id="summary">loading…</p>
<table><thead><tr><th>device</th><th>model</th><th class="num">fps</th><th class="num">latents</th><th class="num">missing</th><th>latest</th><th>few-shot</th><th>anomaly</th></tr></thead>
<tbody id="devices"></tbody></table>
<script>
function cell(text, cls){const td=document.createElement('td');td.textContent=text;if(cls)td.className=cls;return td}
async function refresh(){
  try{
    const r=await fetch('/api/devices');const data=await r.json();
    const body=document.getElementById('devices');body.replaceChildren();
    for(const d of data.devices){
      const tr=document.createElement('tr');tr.dataset.device=d.id;
      const heads=(d.latest&&d.latest.heads)||{};
      const top=heads.imagenet&&heads.imagenet[0];
      const few=heads.fewshot&&heads.fewshot.label?heads.fewshot.label:'—';
      const a=heads.anomaly;
      const anomaly=!a||a.error?'—':!a.warm?'warming up':`${a.score.toFixed(3)}${a.alarm?' ALARM':''}`;
      tr.append(cell(d.id),cell(d.record.model),cell(d.fps.toFixed(1),'num'),cell(d.record.latents,'num'),
        cell(d.record.missing,'num'),cell(top?`${top.label} ${(top.p*100).toFixed(0)}%`:'—'),cell(few),
        cell(anomaly,'num'));
      body.append(tr);
    }
    document.getElementById('summary').textContent=`${data.devices.length} device(s), ${data.processed} latents processed`;
  }catch(e){document.getElementById('summary').textContent='host unreachable: '+e}
}
refresh();setInterval(refresh,1000);
</script></body></html>
"#;
