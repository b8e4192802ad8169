//! What reached the backend, exactly: a request counter, the last requests and raw POST bodies.
//!
//! Tests read these through `/_debug/*` to prove that the gateway forwards bodies byte for
//! byte, and that a refused request never reached the backend at all.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use base64::{engine::general_purpose::STANDARD, Engine};
use serde_json::{json, Value};

/// How many requests, and separately POST bodies, are kept.
const KEEP: usize = 64;
/// Larger than anything the gateway forwards (its default `max_body_bytes` is 1 MiB) and than
/// rmcp's own 4 MiB limit, so this layer never decides what is too large.
const MAX_RECORDED_BODY: usize = 16 * 1024 * 1024;

/// One request as the backend received it.
struct Recorded {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

/// Shared by the recording layer and the debug routes.
#[derive(Default)]
pub(super) struct Recorder {
    count: AtomicU64,
    /// Every method, so tests also see the legacy GET stream and DELETE.
    requests: Mutex<VecDeque<Recorded>>,
    post_bodies: Mutex<VecDeque<Bytes>>,
}

fn push_bounded<T>(ring: &Mutex<VecDeque<T>>, item: T) {
    let mut ring = ring.lock().expect("recorder lock");
    if ring.len() == KEEP {
        ring.pop_front();
    }
    ring.push_back(item);
}

/// Middleware on the MCP routes, before auth: counts and keeps every request as received.
pub(super) async fn record(
    State(recorder): State<Arc<Recorder>>,
    request: Request,
    next: Next,
) -> Response {
    recorder.count.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_RECORDED_BODY).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    if parts.method == axum::http::Method::POST {
        push_bounded(&recorder.post_bodies, body.clone());
    }
    let headers = parts.headers.iter();
    push_bounded(
        &recorder.requests,
        Recorded {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            headers: headers
                .map(|(n, v)| {
                    (
                        n.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: body.clone(),
        },
    );
    next.run(Request::from_parts(parts, Body::from(body))).await
}

/// `GET /_debug/count`, `/_debug/last_bodies` and `/_debug/last_requests` (oldest first).
pub(super) fn routes(recorder: Arc<Recorder>) -> Router {
    Router::new()
        .route("/_debug/count", get(count))
        .route("/_debug/last_bodies", get(last_bodies))
        .route("/_debug/last_requests", get(last_requests))
        .with_state(recorder)
}

async fn count(State(recorder): State<Arc<Recorder>>) -> Json<Value> {
    Json(json!({"count": recorder.count.load(Ordering::SeqCst)}))
}

async fn last_bodies(State(recorder): State<Arc<Recorder>>) -> Json<Vec<String>> {
    let bodies = recorder.post_bodies.lock().expect("recorder lock");
    Json(bodies.iter().map(|body| STANDARD.encode(body)).collect())
}

async fn last_requests(State(recorder): State<Arc<Recorder>>) -> Json<Vec<Value>> {
    let requests = recorder.requests.lock().expect("recorder lock");
    let describe = |r: &Recorded| json!({"method": r.method, "path": r.path, "headers": r.headers, "body": STANDARD.encode(&r.body)});
    Json(requests.iter().map(describe).collect())
}
