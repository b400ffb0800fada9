//! Waiting for the client's body (SPEC §3.4): the route deadline, counted from the request
//! headers, bounds the wait too. When it passes first, nothing that needs the body is sent, and
//! what went wrong decides the answer: a client that has not sent its body (408), or an Envoy
//! that holds the body back from the filter because `allow_on_headers_stop_iteration` is off
//! (500). Pure: the host reads Envoy's numbers, this module decides.

use crate::render::{self, Response};
use crate::time::Instant;
use std::time::Duration;

/// Why a request that needs the client's body is still without it at the route deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyStall {
    /// The client has not sent its whole body in time: **408** `request_body_timeout`.
    Timeout,
    /// Envoy received body bytes but never handed any to the filter. It does that when the
    /// filter pauses the headers without `allow_on_headers_stop_iteration: true` (Envoy turns
    /// the pause into `StopAllIterationAndWatermark` and buffers the body itself): **500**
    /// `request_body_unavailable`, a gateway misconfiguration, not the client's fault.
    Unavailable,
}

impl BodyStall {
    /// Decides at the deadline. `delivered` is the number of body bytes Envoy handed the
    /// filter; `received` gives the body bytes Envoy itself received for the request (see
    /// [`received_body_bytes`]), or `None` when Envoy cannot tell. It is asked only when no
    /// byte was delivered, since reading it costs the host hostcalls.
    ///
    /// Bytes delivered while the headers are held prove the setting is on, so the client is
    /// slow. None delivered: Envoy holding bytes means it withholds them; holding none means
    /// the client has sent nothing. An Envoy that cannot tell gets the client's answer (408),
    /// which bounds the wait either way.
    pub fn at_deadline(delivered: u64, received: impl FnOnce() -> Option<u64>) -> BodyStall {
        if delivered > 0 {
            return BodyStall::Timeout;
        }
        match received() {
            Some(bytes) if bytes > 0 => BodyStall::Unavailable,
            _ => BodyStall::Timeout,
        }
    }

    /// The answer to the client: 408 with the route's `deadline_ms`, or 500.
    pub fn response(self, deadline_ms: u64) -> Response {
        match self {
            BodyStall::Timeout => render::request_body_timeout(deadline_ms),
            BodyStall::Unavailable => render::request_body_unavailable(),
        }
    }
}

/// When the wait for the body ends: the request headers' arrival plus the route's
/// `deadline_ms`, the same deadline the calls get.
pub fn deadline(received: Instant, deadline_ms: u64) -> Instant {
    received + Duration::from_millis(deadline_ms)
}

/// Body bytes Envoy has received for a request, in bytes. Envoy's `request.total_size`
/// attribute is the body bytes its connection manager received (counted before any filter
/// runs, so also bytes it buffers without handing them to the filter) plus the request header
/// map's size (`header_bytes`, see [`header_map_bytes`]), both as they are at the moment of
/// asking. Saturates at 0.
pub fn received_body_bytes(total_size: u64, header_bytes: u64) -> u64 {
    total_size.saturating_sub(header_bytes)
}

/// The size of a header map as Envoy counts it (`HeaderMap::byteSize`): the sum of the name
/// and value lengths, in bytes, of every header, pseudo-headers included; `headers` gives
/// those lengths pair by pair.
pub fn header_map_bytes(headers: impl IntoIterator<Item = (usize, usize)>) -> u64 {
    headers
        .into_iter()
        .map(|(name, value)| u64::try_from(name.saturating_add(value)).unwrap_or(u64::MAX))
        .fold(0, u64::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn bytes_handed_to_the_filter_mean_a_slow_client_without_asking_envoy() {
        let stall = BodyStall::at_deadline(1, || panic!("no hostcalls needed"));
        assert_eq!(stall, BodyStall::Timeout);
    }

    #[test]
    fn bytes_envoy_holds_back_mean_the_setting_is_missing() {
        assert_eq!(
            BodyStall::at_deadline(0, || Some(7)),
            BodyStall::Unavailable
        );
    }

    #[test]
    fn no_body_bytes_anywhere_mean_the_client_has_not_sent_them() {
        assert_eq!(BodyStall::at_deadline(0, || Some(0)), BodyStall::Timeout);
        assert_eq!(
            BodyStall::at_deadline(0, || None),
            BodyStall::Timeout,
            "an Envoy that cannot tell gets the bounded client answer"
        );
    }

    #[test]
    fn received_body_bytes_are_total_size_minus_the_header_map() {
        // Measured in Envoy 1.40 (HTTP/1.1, content-length 7): the header map (8 headers)
        // counts 161 bytes; request.total_size was 161 with no body byte received, 162 after
        // one, 168 after all seven.
        let map = [
            (":authority", "x"),
            (":path", "/checkout/1"),
            (":method", "POST"),
            (":scheme", "http"),
            ("content-type", "application/json"),
            ("content-length", "7"),
            ("x-forwarded-proto", "http"),
            ("x-request-id", "0f4c7c5e-0b2a-4c1e-9a53-3d1c2b7e8f90"),
        ];
        let header_bytes = header_map_bytes(map.iter().map(|(n, v)| (n.len(), v.len())));
        assert_eq!(header_bytes, 161);
        assert_eq!(received_body_bytes(161, header_bytes), 0);
        assert_eq!(received_body_bytes(162, header_bytes), 1);
        assert_eq!(received_body_bytes(168, header_bytes), 7);
        assert_eq!(received_body_bytes(100, header_bytes), 0, "saturates");
        assert_eq!(header_map_bytes([]), 0);
    }

    #[test]
    fn the_deadline_counts_from_the_headers() {
        assert_eq!(
            deadline(Instant::from_micros(1_000_000), 500),
            Instant::from_micros(1_500_000)
        );
        assert_eq!(
            deadline(Instant::from_micros(u64::MAX), 500),
            Instant::from_micros(u64::MAX)
        );
    }

    #[test]
    fn answers_are_408_and_500_with_their_codes() {
        let timeout = BodyStall::Timeout.response(500);
        assert_eq!(timeout.status, 408);
        let body: Value = serde_json::from_slice(&timeout.body).unwrap();
        assert_eq!(
            body,
            json!({"error": {"code": "request_body_timeout", "deadline_ms": 500}})
        );
        let unavailable = BodyStall::Unavailable.response(500);
        assert_eq!(unavailable.status, 500);
        let body: Value = serde_json::from_slice(&unavailable.body).unwrap();
        assert_eq!(body, json!({"error": {"code": "request_body_unavailable"}}));
    }
}
