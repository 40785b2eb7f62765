//! Webhooks from deployment tooling: `/hooks/github` ([`github`]) and `/hooks/cdevents`
//! ([`cdevents`]). Each verifies its sender (GitHub's HMAC signature; a bearer token of a
//! principal with the deployer role for CDEvents), bounds the body, limits deliveries per
//! source, translates the payload into the application layer's [`ToolReport`] or incident and
//! answers what became of it. Bad input (a forged or missing signature, a truncated or
//! non-JSON body, a wrong content type, a field out of shape) gets a 4xx naming the problem
//! and records nothing; a replayed delivery answers 200 `duplicate` and records nothing.

pub mod cdevents;
pub mod github;
pub mod protection;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::Json;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::errors::ApiError;
use crate::app::tooling::Observation;

/// Most sources whose rates are tracked at once; past it the oldest buckets are dropped.
pub const MAX_TRACKED_SOURCES: usize = 10_000;

/// Deliveries per second per source, as token buckets holding twice a second's worth.
pub struct SourceLimiter {
    per_second: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl SourceLimiter {
    /// A limiter admitting `per_second` deliveries per source (burst: twice as many).
    pub fn new(per_second: u32) -> SourceLimiter {
        SourceLimiter { per_second: f64::from(per_second.max(1)), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one delivery from `source`'s bucket, or says how many seconds until one is back.
    pub fn admit(&self, source: &str) -> Result<(), ApiError> {
        let now = Instant::now();
        let burst = self.per_second * 2.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_TRACKED_SOURCES && !buckets.contains_key(source) {
            // Buckets full and idle ones are as good as full: drop those refilled by now.
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * self.per_second < burst);
            if buckets.len() >= MAX_TRACKED_SOURCES {
                buckets.clear();
            }
        }
        let (tokens, at) = buckets.entry(source.to_owned()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - *tokens) / self.per_second).ceil().max(1.0);
            Err(ApiError::RateLimitedSource { source_name: source.to_owned(), retry_after_seconds: wait as u64 })
        }
    }
}

/// Refuses a body whose content type is not JSON (`expected` names what is accepted).
pub fn require_content_type(headers: &HeaderMap, accepted: &[&str], expected: &str) -> Result<String, ApiError> {
    let value = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if accepted.contains(&essence.as_str()) {
        Ok(essence)
    } else {
        Err(ApiError::UnsupportedMediaType(format!("Content-Type {value:?} is not accepted here; send {expected}")))
    }
}

/// Reads a body of at most `bound` bytes.
pub async fn read_body(body: axum::body::Body, bound: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, bound).await.map_err(|_| ApiError::PayloadTooLarge { bound })
}

/// What became of a delivery, as JSON (202 when something was recorded, 200 for a duplicate).
pub fn observation_response(delivery: &str, observation: &Observation) -> Response {
    match observation {
        Observation::Duplicate => {
            Json(json!({"delivery": delivery, "outcome": "duplicate", "recorded": false})).into_response()
        }
        Observation::Kept(_) => {
            (axum::http::StatusCode::ACCEPTED, Json(json!({"delivery": delivery, "outcome": "kept", "recorded": true})))
                .into_response()
        }
        Observation::Unmapped(reason) => (
            axum::http::StatusCode::ACCEPTED,
            Json(json!({"delivery": delivery, "outcome": "unmapped", "recorded": true, "reason": reason})),
        )
            .into_response(),
        Observation::Recorded(deployment) => (
            axum::http::StatusCode::ACCEPTED,
            Json(json!({
                "delivery": delivery,
                "outcome": "recorded",
                "recorded": true,
                "deployment": deployment.request.deployment_id.to_string(),
                "state": deployment.state.as_str(),
                "environment": deployment.request.environment.as_str(),
                "ci": deployment.request.targets.first().map(|t| t.ci.to_string()),
                "change": deployment.request.change_id.map(|c| c.to_string()),
                "unauthorised": deployment.request.unauthorised,
            })),
        )
            .into_response(),
        Observation::Incident { id, priority, cis } => (
            axum::http::StatusCode::ACCEPTED,
            Json(json!({
                "delivery": delivery,
                "outcome": "incident",
                "recorded": true,
                "incident": id,
                "priority": priority,
                "cis": cis.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })),
        )
            .into_response(),
    }
}

/// An RFC 3339 time as a timestamp, naming the field when it is not one.
pub fn parse_time(field: &str, text: &str) -> Result<cmdb_core::time::Timestamp, ApiError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| cmdb_core::time::Timestamp::from_micros(t.timestamp_micros()))
        .map_err(|e| ApiError::BadRequest(format!("{field}: {text:?} is not an RFC 3339 time ({e})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_a_burst_of_twice_its_rate_then_waits() {
        let limiter = SourceLimiter::new(5);
        for _ in 0..10 {
            assert!(limiter.admit("octo/app").is_ok());
        }
        let refused = limiter.admit("octo/app");
        assert!(matches!(refused, Err(ApiError::RateLimitedSource { retry_after_seconds: 1, .. })), "{refused:?}");
        assert!(limiter.admit("octo/other").is_ok(), "per source");
    }

    #[test]
    fn tracked_sources_are_bounded() {
        let limiter = SourceLimiter::new(1);
        for n in 0..(MAX_TRACKED_SOURCES + 5) {
            assert!(limiter.admit(&format!("source-{n}")).is_ok());
        }
        let tracked = limiter.buckets.lock().map(|b| b.len()).unwrap_or_default();
        assert!(tracked <= MAX_TRACKED_SOURCES, "{tracked}");
    }
}
