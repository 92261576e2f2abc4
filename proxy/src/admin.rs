//! The admin API on its own listener (loopback by default): health, readiness, metrics, room
//! status and live overrides. A bearer token, when configured, is compared in constant time.
//!
//! - `GET /healthz`, `GET /readyz`, `GET /metrics`
//! - `GET /api/rooms`, `GET /api/rooms/{id}` (with this node's feedback pulse)
//! - `PATCH /api/rooms/{id}` with a JSON object of any of `new_users_per_minute`,
//!   `total_active_users`, `paused`, `queue_all`, `drain`, `sold_out`, `message` (null clears a
//!   number or the message).
//! - `GET /api/cache` (entries, bytes) and `POST /api/cache/purge` with `{"url": ..}`,
//!   `{"prefix": ..}` or `{"all": true}` (origin shield; see `docs/origin-shield.md`).

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::Serialize;
use serde_json::Value;
use waitroom::Overrides;

use crate::clock;
use crate::events::Actor;
use crate::node::Node;
use crate::rooms::RoomRuntime;

/// Largest PATCH body accepted.
const MAX_BODY: usize = 16 * 1024;

/// The admin service. Its bearer token is the config's in force (`admin_token_env` or
/// `admin_token_file`), so a reload rotates it.
#[derive(Debug)]
pub struct Admin {
    pub node: Arc<Node>,
}

#[derive(Debug, Serialize)]
pub struct RoomReport {
    pub id: String,
    pub state: &'static str,
    pub method: &'static str,
    pub tickets_issued: u64,
    pub serving: u64,
    pub waiting: u64,
    pub active: u64,
    pub entered_total: u64,
    pub admitted_total: u64,
    /// The rate in force: the configured (or overridden) rate × `origin_factor`.
    pub new_users_per_minute: u32,
    /// Origin-aware admission: the share of the configured rate the origin's health allows
    /// now (1 without `[rooms.origin_aware]`).
    pub origin_factor: f64,
    pub total_active_users: u32,
    pub noshow_ratio: f64,
    pub eta_back_of_line_seconds: Option<u64>,
    pub paused: bool,
    pub queue_all: bool,
    pub drain: bool,
    pub sold_out: bool,
    pub message: Option<String>,
    pub store_ok: bool,
    /// The feedback pulse as this node counted it (see [`FeedbackReport`]).
    pub feedback: FeedbackReport,
}

/// Wait ratings this node accepted since it started, for one room. Node-local: each node counts
/// the ratings posted to it (a shopper rates once per node); the fleet's total is the sum over
/// nodes, e.g. `sum by (rating) (flashgate_feedback_total{room="drop"})` in Prometheus.
#[derive(Debug, Serialize)]
pub struct FeedbackReport {
    pub count: u64,
    /// Mean rating, 1 to 5, rounded to two decimals; `null` before the first rating.
    pub average: Option<f64>,
    /// Ratings of 1, 2, 3, 4 and 5, in that order.
    pub by_rating: [u64; 5],
}

/// The operator's view of one room.
pub fn report(r: &RoomRuntime) -> RoomReport {
    let v = r.view();
    let snap = &v.snapshot;
    let now = clock::now();
    let waiting = snap.waiting();
    RoomReport {
        id: r.id().to_owned(),
        state: v.state.as_str(),
        method: v.method.as_str(),
        tickets_issued: snap.issued,
        serving: snap.ctl.serving,
        waiting,
        active: snap.active_total(now.minute(), v.session_minutes),
        entered_total: snap.claimed_total,
        admitted_total: snap.ctl.admitted_total,
        new_users_per_minute: v.new_users_per_minute,
        origin_factor: r.origin_factor(),
        total_active_users: v.total_active_users,
        noshow_ratio: f64::from(snap.ctl.noshow_milli) / 1000.0,
        eta_back_of_line_seconds: v.eta_for(waiting).map(|b| b.mid.as_secs()),
        paused: snap.overrides.paused,
        queue_all: snap.overrides.queue_all,
        drain: snap.overrides.drain,
        sold_out: snap.overrides.sold_out,
        message: v.message.clone(),
        store_ok: r.store_ok(),
        feedback: {
            let f = r.feedback();
            FeedbackReport {
                count: f.count(),
                average: f.average().map(|a| (a * 100.0).round() / 100.0),
                by_rating: f.by_rating,
            }
        },
    }
}

fn json(status: u16, body: String) -> Response<Vec<u8>> {
    let body = body.into_bytes();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(body)
        .unwrap_or_default()
}

fn text(status: u16, body: &str) -> Response<Vec<u8>> {
    let body = body.as_bytes().to_vec();
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; version=0.0.4")
        .header("content-length", body.len())
        .body(body)
        .unwrap_or_default()
}

fn error(status: u16, msg: &str) -> Response<Vec<u8>> {
    json(status, serde_json::json!({ "error": msg }).to_string())
}

/// Why a room PATCH was refused (answered 422 with this text): the key at fault, if any.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("body must be a JSON object")]
    NotAnObject,
    #[error("{key}: {why}")]
    Field { key: String, why: String },
}

fn field(key: &str, why: impl Into<String>) -> PatchError {
    PatchError::Field {
        key: key.to_owned(),
        why: why.into(),
    }
}

/// Applies a PATCH object to overrides; returns the key at fault on a bad value.
pub fn apply_patch(o: &mut Overrides, patch: &Value) -> Result<(), PatchError> {
    let obj = patch.as_object().ok_or(PatchError::NotAnObject)?;
    for (k, v) in obj {
        let bad = || field(k, format!("invalid value {v}"));
        match k.as_str() {
            "new_users_per_minute" | "total_active_users" => {
                let n = match v {
                    Value::Null => None,
                    v => Some(
                        v.as_u64()
                            .filter(|n| *n > 0 && *n <= u64::from(u32::MAX))
                            .ok_or_else(|| field(k, "must be a positive integer or null"))?
                            as u32,
                    ),
                };
                if k == "new_users_per_minute" {
                    o.new_users_per_minute = n;
                } else {
                    o.total_active_users = n;
                }
            }
            "paused" => o.paused = v.as_bool().ok_or_else(bad)?,
            "queue_all" => o.queue_all = v.as_bool().ok_or_else(bad)?,
            "drain" => o.drain = v.as_bool().ok_or_else(bad)?,
            "sold_out" => o.sold_out = v.as_bool().ok_or_else(bad)?,
            "message" => {
                o.message = match v {
                    Value::Null => None,
                    Value::String(s) if s.len() <= 1024 => Some(s.clone()),
                    _ => return Err(field(k, "must be a string of at most 1024 bytes, or null")),
                }
            }
            _ => return Err(field(k, "unknown field")),
        }
    }
    Ok(())
}

impl Admin {
    fn authorized(&self, s: &ServerSession) -> bool {
        let live = self.node.live();
        let Some(token) = &live.config.server.admin_token else {
            return true;
        };
        let given = s
            .req_header()
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Constant-time comparison of equal-length digests.
        let a = ring::digest::digest(&ring::digest::SHA256, given.as_bytes());
        let b = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        a.as_ref()
            .iter()
            .zip(b.as_ref())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }

    async fn body(s: &mut ServerSession) -> Result<Vec<u8>, &'static str> {
        let mut out = Vec::new();
        while let Some(chunk) = s
            .read_request_body()
            .await
            .map_err(|_| "could not read body")?
        {
            out.extend_from_slice(&chunk);
            if out.len() > MAX_BODY {
                return Err("body too large");
            }
        }
        Ok(out)
    }

    async fn patch(&self, s: &mut ServerSession, room: &Arc<RoomRuntime>) -> Response<Vec<u8>> {
        let body = match Self::body(s).await {
            Ok(b) => b,
            Err(e) => return error(400, e),
        };
        let patch: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return error(400, &format!("invalid JSON: {e}")),
        };
        let before = room.view().snapshot.overrides.clone();
        let mut after = before.clone();
        if let Err(e) = apply_patch(&mut after, &patch) {
            return error(422, &e.to_string());
        }
        if let Err(e) = self.node.store.set_overrides(room.id(), &after).await {
            return error(503, &format!("store unavailable: {e}"));
        }
        // Who: the token's fingerprint (never the token).
        let actor = Actor::admin(self.node.live().config.server.admin_token.as_deref());
        tracing::info!(target: "flashgate::audit", room = room.id(), %actor, ?before, ?after, "room overrides changed");
        self.node
            .events
            .emit_room_changes(room.id(), &before, &after, &actor);
        // Show the change at once rather than at the next refresh.
        self.node.live().rooms.refresh().await;
        json(
            200,
            serde_json::to_string(&report(room)).unwrap_or_default(),
        )
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        let path = s.req_header().uri.path().to_owned();
        let method = s.req_header().method.clone();
        match (method.as_str(), path.as_str()) {
            ("GET", "/healthz") => return text(200, "ok\n"),
            ("GET", "/readyz") => {
                let ready = self.node.live().rooms.all().iter().all(|r| r.store_ok());
                return if ready {
                    text(200, "ready\n")
                } else {
                    text(503, "store unavailable\n")
                };
            }
            _ => {}
        }
        if !self.authorized(s) {
            return error(401, "missing or wrong bearer token");
        }
        if method == http::Method::GET && path.starts_with("/api/") {
            // Operators see the store's numbers, not this node's view of a few ms ago.
            self.node.live().rooms.refresh().await;
        }
        let live = self.node.live();
        match (method.as_str(), path.as_str()) {
            ("GET", "/metrics") => text(200, &self.node.metrics.render()),
            ("POST", "/api/cache/purge") => {
                let body = match Self::body(s).await {
                    Ok(b) => b,
                    Err(e) => return error(400, e),
                };
                let v: Value = match serde_json::from_slice(&body) {
                    Ok(v) => v,
                    Err(e) => return error(400, &format!("invalid JSON: {e}")),
                };
                match crate::shield::Purge::from_json(&v) {
                    Ok(p) => {
                        let n = self.node.shield.purge(&p);
                        tracing::info!(target: "flashgate::audit", purge = %v, purged = n, "cache purged");
                        json(200, serde_json::json!({ "purged": n }).to_string())
                    }
                    Err(e) => error(400, &e.to_string()),
                }
            }
            ("GET", "/api/cache") => json(
                200,
                serde_json::json!({
                    "entries": self.node.shield.cache_entries(),
                    "bytes": self.node.shield.cache_bytes(),
                })
                .to_string(),
            ),
            ("POST", "/api/reload") => match self.node.reload("admin API").await {
                Ok(summary) => json(
                    200,
                    serde_json::json!({ "reloaded": true, "summary": summary }).to_string(),
                ),
                Err(e) => error(422, &e.to_string()),
            },
            ("GET", "/api/rooms") => {
                let all: Vec<RoomReport> = live.rooms.all().iter().map(|r| report(r)).collect();
                json(200, serde_json::to_string(&all).unwrap_or_default())
            }
            (m, p) if p.starts_with("/api/rooms/") => {
                let id = &p["/api/rooms/".len()..];
                let Some(room) = live.rooms.by_id(id).cloned() else {
                    return error(404, "unknown room");
                };
                match m {
                    "GET" => json(
                        200,
                        serde_json::to_string(&report(&room)).unwrap_or_default(),
                    ),
                    "PATCH" => self.patch(s, &room).await,
                    _ => error(405, "use GET or PATCH"),
                }
            }
            _ => error(404, "not found"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_rules() {
        let mut o = Overrides::default();
        apply_patch(
            &mut o,
            &serde_json::json!({"new_users_per_minute": 120, "paused": true, "message": "hi"}),
        )
        .expect("valid patch");
        assert_eq!(o.new_users_per_minute, Some(120));
        assert!(o.paused);
        assert_eq!(o.message.as_deref(), Some("hi"));
        apply_patch(&mut o, &serde_json::json!({"new_users_per_minute": null})).expect("clear");
        assert_eq!(o.new_users_per_minute, None);
        let err = |p| apply_patch(&mut Overrides::default(), &p).map_err(|e| e.to_string());
        assert_eq!(
            err(serde_json::json!({"new_users_per_minute": 0})),
            Err("new_users_per_minute: must be a positive integer or null".into())
        );
        assert_eq!(
            err(serde_json::json!({"pause": true})),
            Err("pause: unknown field".into())
        );
        assert!(apply_patch(&mut o, &serde_json::json!([1])).is_err());
    }
}
