//! Coalescing of identical upstream requests (SPEC §6 `coalesce`): the key that says two
//! requests are the same, and the book of one worker's shared requests in flight.
//!
//! Identical requests of different aggregations on one worker share one upstream request: the
//! first is sent, the others *join* it, and its answer is handed to every aggregation still
//! waiting. Each waits at most its own attempt's timeout (the call's `timeout_ms` cut to its
//! route deadline); one that gives up leaves, and the request goes on for the others.
//!
//! The book is sans-IO: the host (`host/coalesce.rs`) keeps one per worker VM, sends the
//! requests and delivers the answers; this file decides who waits for what, and what happens
//! when the aggregation a request was sent from goes away. A proxy-wasm call is answered to
//! the context that was active when it was sent (the SDK drops the answer when that stream has
//! ended), so a request sent from a stream that ends while others still wait is *handed over*:
//! sent again, from the root context's timer, on behalf of the first of them.

use super::push_key_part;
use crate::time::Instant;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

/// The key of one upstream request: cluster, method, `:authority`, rendered path, the call's
/// own headers as rendered (name and value, in order) and the `vary` headers (name and the
/// client's value, `None` when the client sent none). Every part is length-prefixed, so no two
/// different requests share a key. Forwarded headers that are not in `vary` (request ids,
/// trace context) are not part of it: like the cache, coalescing assumes they do not change
/// the answer.
pub fn request_key(
    cluster: &str,
    method: &str,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
    vary: &[(&str, Option<&str>)],
) -> String {
    let mut key = String::with_capacity(cluster.len() + authority.len() + path.len() + 32);
    for text in [cluster, method, authority, path, "h"] {
        push_key_part(&mut key, Some(text));
    }
    for (name, value) in headers {
        push_key_part(&mut key, Some(name));
        push_key_part(&mut key, Some(value));
    }
    push_key_part(&mut key, Some("v"));
    for (name, value) in vary {
        push_key_part(&mut key, Some(name));
        push_key_part(&mut key, *value);
    }
    key
}

/// One aggregation's attempt waiting for a shared request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiter {
    /// The context of the client request (the host's id of its stream).
    pub context: u32,
    /// The attempt, as its aggregation numbers them.
    pub attempt: usize,
    /// When it stops waiting (its attempt's timeout), by the host's clock.
    pub until: Instant,
    /// It joined a request already in flight; `false` for the one the request was sent for.
    pub joined: bool,
    /// The largest answer body it accepts, in bytes (`max_body_bytes`).
    pub body_limit: u64,
    /// The response headers it copies (`headers_from`), lowercase.
    pub headers: Vec<String>,
}

/// Where the answer of a shared request will arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To this stream context: it was active when the request was sent.
    Stream(u32),
    /// To the root context (sent from the timer), which never goes away.
    Root,
}

/// How a request was handed to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sending {
    /// The host's token, which names the answer.
    pub token: u32,
    /// Where the answer arrives.
    pub route: Route,
    /// When it was sent.
    pub at: Instant,
    /// The timeout Envoy was given for it.
    pub timeout: Duration,
}

/// One shared request in flight: what was sent, where its answer arrives, who waits for it.
#[derive(Debug)]
pub struct Shared<R> {
    /// The request, to send it again on a handover.
    pub request: R,
    /// The host's token and where the answer arrives; `None` while a handover is due.
    pub sent_as: Option<(u32, Route)>,
    /// When it was (last) sent.
    pub sent: Instant,
    /// The timeout it was (last) sent with.
    pub timeout: Duration,
    /// Oldest first.
    pub waiters: Vec<Waiter>,
}

/// A shared request whose sender went away: to be sent again for `waiter` (the first still
/// waiting), with `timeout`: until the last waiter stops waiting (at least 1 ms).
#[derive(Debug)]
pub struct Handover<R> {
    /// The key of the identical requests (see [`request_key`]).
    pub key: Rc<str>,
    /// The request to send again.
    pub request: R,
    /// Whom it is sent for: its answer arrives to this waiter's stream or the root.
    pub waiter: Waiter,
    /// The timeout to send it with.
    pub timeout: Duration,
}

/// The shared requests in flight on one worker, by key and by the host's token.
#[derive(Debug)]
pub struct InFlight<R> {
    by_key: HashMap<Rc<str>, Shared<R>>,
    by_token: HashMap<u32, Rc<str>>,
}

impl<R> Default for InFlight<R> {
    fn default() -> Self {
        InFlight {
            by_key: HashMap::new(),
            by_token: HashMap::new(),
        }
    }
}

/// The shortest timeout a request is sent with.
const MIN_TIMEOUT: Duration = Duration::from_millis(1);

impl<R: Clone> InFlight<R> {
    /// Adds `waiter` to the request in flight under `key`, if there is one (its `joined` is
    /// set); otherwise gives it back: the caller sends the request and calls [`InFlight::sent`].
    pub fn join(&mut self, key: &str, mut waiter: Waiter) -> Result<(), Waiter> {
        match self.by_key.get_mut(key) {
            Some(shared) => {
                waiter.joined = true;
                shared.waiters.push(waiter);
                Ok(())
            }
            None => Err(waiter),
        }
    }

    /// A request was sent for `waiter` (which becomes its first waiter, not joined), as
    /// `sending` says.
    pub fn sent(&mut self, key: Rc<str>, sending: Sending, request: R, mut waiter: Waiter) {
        waiter.joined = false;
        self.by_token.insert(sending.token, Rc::clone(&key));
        self.by_key.insert(
            key,
            Shared {
                request,
                sent_as: Some((sending.token, sending.route)),
                sent: sending.at,
                timeout: sending.timeout,
                waiters: vec![waiter],
            },
        );
    }

    /// Whether `token` is a shared request's.
    pub fn is_shared(&self, token: u32) -> bool {
        self.by_token.contains_key(&token)
    }

    /// The answer to `token` arrived: the request leaves the book, with its waiters. Requests
    /// sent later for the same key are new ones.
    pub fn answered(&mut self, token: u32) -> Option<Shared<R>> {
        let key = self.by_token.remove(&token)?;
        self.by_key.remove(&key)
    }

    /// The waits of `context` whose time is up by `now`, taken out of the book.
    pub fn expired(&mut self, context: u32, now: Instant) -> Vec<Waiter> {
        self.take_waiters(|w| w.context == context && w.until <= now)
    }

    /// The aggregation of `context` was answered: it waits for nothing more. Its requests still
    /// arrive to its stream until the stream ends, so they stay in the book for the others.
    pub fn leave(&mut self, context: u32) {
        self.take_waiters(|w| w.context == context);
    }

    /// The stream of `context` ended: besides its own waits, the answers of the requests sent
    /// from it will never arrive (the SDK drops them). Those with waiters left are due for a
    /// handover ([`InFlight::handovers`]); the others leave the book.
    pub fn gone(&mut self, context: u32) {
        self.leave(context);
        let route = Route::Stream(context);
        let lost: Vec<Rc<str>> = self
            .by_key
            .iter()
            .filter(|(_, s)| s.sent_as.is_some_and(|(_, r)| r == route))
            .map(|(key, _)| Rc::clone(key))
            .collect();
        for key in lost {
            let Some(shared) = self.by_key.get_mut(&key) else {
                continue;
            };
            if let Some((token, _)) = shared.sent_as.take() {
                self.by_token.remove(&token);
            }
            if shared.waiters.is_empty() {
                self.by_key.remove(&key);
            }
        }
    }

    /// The requests due for a handover at `now`, each for its first waiter (who then waits as
    /// the one it was sent for), to be sent with a timeout that lets every waiter wait its own. The caller sends each and calls [`InFlight::resent`], or
    /// [`InFlight::abandon`] when the host refuses.
    pub fn handovers(&mut self, now: Instant) -> Vec<Handover<R>> {
        let mut due = Vec::new();
        for (key, shared) in &mut self.by_key {
            if shared.sent_as.is_some() {
                continue;
            }
            let Some(first) = shared.waiters.first_mut() else {
                continue;
            };
            first.joined = false;
            let waiter = first.clone();
            let last = shared.waiters.iter().map(|w| w.until).max().unwrap_or(now);
            due.push(Handover {
                key: Rc::clone(key),
                request: shared.request.clone(),
                waiter,
                timeout: last.saturating_duration_since(now).max(MIN_TIMEOUT),
            });
        }
        due
    }

    /// A handed-over request was sent again: its answer arrives with `token` to the root.
    pub fn resent(&mut self, key: &Rc<str>, token: u32, now: Instant, timeout: Duration) {
        if let Some(shared) = self.by_key.get_mut(key) {
            shared.sent_as = Some((token, Route::Root));
            shared.sent = now;
            shared.timeout = timeout;
            self.by_token.insert(token, Rc::clone(key));
        }
    }

    /// A handover the host refused: the request leaves the book, with its waiters.
    pub fn abandon(&mut self, key: &str) -> Option<Shared<R>> {
        let shared = self.by_key.remove(key)?;
        if let Some((token, _)) = shared.sent_as {
            self.by_token.remove(&token);
        }
        Some(shared)
    }

    /// Requests in flight (or due for a handover), for tests and logs.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Takes out the waiters `which` selects; a request due for a handover that has no waiter
    /// left leaves the book (nobody would read its answer).
    fn take_waiters(&mut self, which: impl Fn(&Waiter) -> bool) -> Vec<Waiter> {
        let mut taken = Vec::new();
        self.by_key.retain(|_, shared| {
            let (out, stay): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut shared.waiters)
                .into_iter()
                .partition(&which);
            shared.waiters = stay;
            taken.extend(out);
            shared.sent_as.is_some() || !shared.waiters.is_empty()
        });
        taken
    }
}

impl<R> Shared<R> {
    /// Whether a reset of this request at `now` is its timeout firing (Envoy resets a call
    /// whose timeout fires after the answer's headers arrived): reported as `timeout` to
    /// aggregations that joined it, whose own attempts started later.
    pub fn reset_is_timeout(&self, now: Instant) -> bool {
        crate::outcome::reset_is_timeout(now.saturating_duration_since(self.sent), self.timeout)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_micros(ms * 1000)
    }

    /// The contexts waiting for `token`'s answer, taken from the book as its answer arrives.
    fn still_waiting(book: &mut InFlight<&str>, token: u32) -> Vec<u32> {
        let shared = book.answered(token).unwrap();
        shared.waiters.iter().map(|w| w.context).collect()
    }

    fn waiter(context: u32, attempt: usize, until_ms: u64) -> Waiter {
        Waiter {
            context,
            attempt,
            until: at(until_ms),
            joined: false,
            body_limit: 1024,
            headers: Vec::new(),
        }
    }

    fn sending(token: u32, route: Route, at: Instant, timeout: Duration) -> Sending {
        Sending {
            token,
            route,
            at,
            timeout,
        }
    }

    fn key(path: &str, vary: &[(&str, Option<&str>)]) -> String {
        request_key("catalog", "GET", "catalog", path, &[], vary)
    }

    #[test]
    fn every_part_of_a_request_separates_keys() {
        let base = request_key("c", "GET", "c", "/p/1", &[("accept", "v2")], &[]);
        let variants = [
            request_key("d", "GET", "c", "/p/1", &[("accept", "v2")], &[]),
            request_key("c", "HEAD", "c", "/p/1", &[("accept", "v2")], &[]),
            request_key("c", "GET", "other", "/p/1", &[("accept", "v2")], &[]),
            request_key("c", "GET", "c", "/p/2", &[("accept", "v2")], &[]),
            request_key("c", "GET", "c", "/p/1", &[("accept", "v1")], &[]),
            request_key("c", "GET", "c", "/p/1", &[], &[]),
            request_key(
                "c",
                "GET",
                "c",
                "/p/1",
                &[("accept", "v2")],
                &[("authorization", None)],
            ),
        ];
        for other in &variants {
            assert_ne!(&base, other);
        }
        assert_eq!(
            base,
            request_key("c", "GET", "c", "/p/1", &[("accept", "v2")], &[]),
            "the same request, the same key"
        );
    }

    #[test]
    fn vary_names_and_values_separate_keys_and_no_part_can_pose_as_another() {
        let alice = key("/me", &[("authorization", Some("Bearer alice"))]);
        let bob = key("/me", &[("authorization", Some("Bearer bob"))]);
        let none = key("/me", &[("authorization", None)]);
        let empty = key("/me", &[("authorization", Some(""))]);
        let cookie = key("/me", &[("cookie", Some("Bearer alice"))]);
        let all = [&alice, &bob, &none, &empty, &cookie];
        for (i, a) in all.iter().enumerate() {
            for b in all.iter().skip(i + 1) {
                assert_ne!(a, b);
            }
        }
        // A path holding what a header part would look like stays a path.
        assert_ne!(
            request_key("c", "GET", "c", "/p|1:h|", &[], &[]),
            request_key("c", "GET", "c", "/p", &[("h", "")], &[])
        );
    }

    #[test]
    fn the_first_request_is_sent_and_identical_ones_join_it() {
        let mut book: InFlight<&str> = InFlight::default();
        let k: Rc<str> = key("/p/1", &[]).into();
        let first = book.join(&k, waiter(1, 0, 100)).unwrap_err();
        book.sent(
            Rc::clone(&k),
            sending(7, Route::Stream(1), at(0), Duration::from_millis(100)),
            "req",
            first,
        );
        book.join(&k, waiter(2, 0, 110)).unwrap();
        book.join(&k, waiter(3, 4, 120)).unwrap();
        assert!(book.is_shared(7) && !book.is_shared(8));
        let shared = book.answered(7).unwrap();
        let who: Vec<(u32, bool)> = shared
            .waiters
            .iter()
            .map(|w| (w.context, w.joined))
            .collect();
        assert_eq!(who, [(1, false), (2, true), (3, true)]);
        assert!(book.is_empty(), "an answered request leaves the book");
        assert!(
            book.join(&k, waiter(4, 0, 200)).is_err(),
            "the next one is sent anew"
        );
    }

    #[test]
    fn a_waiter_whose_time_is_up_leaves_and_the_request_goes_on() {
        let mut book: InFlight<&str> = InFlight::default();
        let k: Rc<str> = key("/slow", &[]).into();
        book.sent(
            Rc::clone(&k),
            sending(1, Route::Stream(1), at(0), Duration::from_millis(1000)),
            "req",
            waiter(1, 0, 1000),
        );
        book.join(&k, waiter(2, 0, 100)).unwrap();
        book.join(&k, waiter(3, 0, 900)).unwrap();
        assert!(book.expired(2, at(99)).is_empty(), "not yet");
        assert!(book.expired(3, at(100)).is_empty(), "only its own waits");
        let gone = book.expired(2, at(100));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].context, 2);
        let left = still_waiting(&mut book, 1);
        assert_eq!(left, [1, 3]);
    }

    #[test]
    fn an_answered_aggregation_stops_waiting_but_its_request_stays_for_the_others() {
        let mut book: InFlight<&str> = InFlight::default();
        let k: Rc<str> = key("/p", &[]).into();
        book.sent(
            Rc::clone(&k),
            sending(1, Route::Stream(1), at(0), Duration::from_millis(100)),
            "req",
            waiter(1, 0, 100),
        );
        book.join(&k, waiter(2, 0, 100)).unwrap();
        book.leave(1);
        assert!(
            book.handovers(at(5)).is_empty(),
            "its stream still gets the answer"
        );
        book.join(&k, waiter(3, 0, 100)).unwrap();
        let left = still_waiting(&mut book, 1);
        assert_eq!(left, [2, 3]);
    }

    #[test]
    fn a_request_whose_stream_ended_is_handed_over_to_the_first_waiter_left() {
        let mut book: InFlight<&str> = InFlight::default();
        let k: Rc<str> = key("/p", &[]).into();
        book.sent(
            Rc::clone(&k),
            sending(1, Route::Stream(1), at(0), Duration::from_millis(100)),
            "req",
            waiter(1, 0, 100),
        );
        book.join(&k, waiter(2, 3, 130)).unwrap();
        book.join(&k, waiter(3, 0, 150)).unwrap();
        book.gone(1);
        assert!(!book.is_shared(1), "its answer will never arrive");
        book.join(&k, waiter(4, 0, 160)).unwrap();
        let due = book.handovers(at(30));
        assert_eq!(due.len(), 1);
        let handover = &due[0];
        assert_eq!((handover.waiter.context, handover.waiter.attempt), (2, 3));
        assert_eq!(
            handover.timeout,
            Duration::from_millis(130),
            "until the last waiter stops waiting"
        );
        assert_eq!(handover.request, "req");
        book.resent(&handover.key, 9, at(30), handover.timeout);
        assert!(book.handovers(at(31)).is_empty(), "sent once");
        let shared = book.answered(9).unwrap();
        let who: Vec<(u32, bool)> = shared
            .waiters
            .iter()
            .map(|w| (w.context, w.joined))
            .collect();
        assert_eq!(who, [(2, false), (3, true), (4, true)], "sent for 2 now");
        assert_eq!(shared.sent_as, Some((9, Route::Root)));
    }

    #[test]
    fn a_request_nobody_waits_for_leaves_the_book_when_its_stream_ends() {
        let mut book: InFlight<&str> = InFlight::default();
        let k: Rc<str> = key("/p", &[]).into();
        book.sent(
            Rc::clone(&k),
            sending(1, Route::Stream(1), at(0), Duration::from_millis(100)),
            "req",
            waiter(1, 0, 100),
        );
        book.join(&k, waiter(2, 0, 100)).unwrap();
        book.gone(1);
        book.gone(2);
        assert!(book.is_empty());
        // A handover due whose last waiter times out is dropped too.
        book.sent(
            Rc::clone(&k),
            sending(2, Route::Stream(1), at(0), Duration::from_millis(100)),
            "req",
            waiter(1, 0, 100),
        );
        book.join(&k, waiter(2, 0, 50)).unwrap();
        book.gone(1);
        assert_eq!(book.expired(2, at(50)).len(), 1);
        assert!(book.is_empty() && book.handovers(at(50)).is_empty());
    }

    #[test]
    fn a_refused_handover_gives_its_waiters_back() {
        let mut book: InFlight<&str> = InFlight::default();
        let k: Rc<str> = key("/p", &[]).into();
        book.sent(
            Rc::clone(&k),
            sending(1, Route::Stream(1), at(0), Duration::from_millis(100)),
            "req",
            waiter(1, 0, 100),
        );
        book.join(&k, waiter(2, 0, 100)).unwrap();
        book.join(&k, waiter(3, 0, 100)).unwrap();
        book.gone(1);
        let due = book.handovers(at(10));
        let shared = book.abandon(&due[0].key).unwrap();
        assert_eq!(shared.waiters.len(), 2);
        assert!(book.is_empty());
    }

    #[test]
    fn a_root_sent_request_survives_any_stream() {
        let mut book: InFlight<&str> = InFlight::default();
        let k: Rc<str> = key("/p", &[]).into();
        book.sent(
            Rc::clone(&k),
            sending(1, Route::Root, at(0), Duration::from_millis(100)),
            "req",
            waiter(1, 0, 100),
        );
        book.join(&k, waiter(2, 0, 100)).unwrap();
        book.gone(1);
        assert!(book.handovers(at(1)).is_empty());
        assert!(book.is_shared(1));
    }

    #[test]
    fn a_reset_at_the_timeout_of_the_shared_request_is_its_timeout() {
        let shared = Shared {
            request: (),
            sent_as: None,
            sent: at(100),
            timeout: Duration::from_millis(200),
            waiters: Vec::new(),
        };
        assert!(!shared.reset_is_timeout(at(150)));
        assert!(
            shared.reset_is_timeout(at(295)),
            "Envoy's timers fire a little early"
        );
        assert!(shared.reset_is_timeout(at(300)));
    }
}
