//! The filter's limiter calls in batches (`rate_limit.batch`, docs/ratelimit.md).
//!
//! Contract: at most one batch is in flight per worker. A request whose checks must be asked
//! queues them; when no batch is in flight they go at once (alone, as without batching), else
//! they wait for the batch in flight to be answered, and then go with every request that queued
//! meanwhile, up to [`MAX_BATCH`] per call (`POST /v1/check/batch`). Each request is decided
//! alone by the limiter and resumed with its own answer, through the core's usual
//! `on_limiter_answer`, so the failure modes, shadow, headers and counters are the same as for
//! a call of its own. A failed batch fails each of its requests the same way.
//!
//! Bounded waits: a request waits for the call in flight (at most its `timeout_ms`, which Envoy
//! enforces), then for its own call (the same), so at most twice `timeout_ms` before it is
//! answered or its failure mode applies. When a batch is about to go, every queued request that
//! has already waited longer than `timeout_ms` fails instead ([`Batcher::expire`]): under a
//! backlog (more than [`MAX_BATCH`] waiting on a slow or hung limiter) it would otherwise wait
//! round after round. And at most [`MAX_QUEUED`] wait at once: a request that finds the queue
//! full fails at once.
//!
//! The filter's root context makes the calls: Envoy cancels a context's calls when the context goes, and
//! a batch must not die with the request that happened to start it.
//!
//! This is state only (no host calls), kept by the core's driver (`crate::driver`), which asks
//! for the calls and resumes each request with its answer; it is tested natively.

use apiguard_limiter_api::batch::{join, split, MAX_BATCH};

use super::{LimiterFailure, MAX_ANSWER_BYTES};

/// The most bytes an answer to a batch may have: [`MAX_BATCH`] answers of at most
/// [`MAX_ANSWER_BYTES`] each, and the array around them.
pub const MAX_BATCH_ANSWER_BYTES: usize = MAX_BATCH * (MAX_ANSWER_BYTES + 32) + 64;

/// One request's answer from a batch: the status and body `POST /v1/check` would have given,
/// or the failure its own call would have had.
pub type Answer = Result<(u16, Vec<u8>), LimiterFailure>;

/// An [`Answer`] as the core reads a call's (`Pipeline::on_limiter_answer`): status and body
/// borrowed.
pub fn as_call_answer(answer: &Answer) -> Result<(u16, &[u8]), LimiterFailure> {
    answer
        .as_ref()
        .map(|(s, b)| (*s, b.as_slice()))
        .map_err(|f| *f)
}

/// Answers for requests of a batch, each to be delivered in its own context, in item order.
#[derive(Debug)]
pub struct Delivery<T> {
    pub waiters: Vec<Waiter<T>>,
    pub answers: Vec<Answer>,
}

impl<T> Default for Delivery<T> {
    fn default() -> Self {
        Delivery {
            waiters: Vec::new(),
            answers: Vec::new(),
        }
    }
}

impl<T> Delivery<T> {
    /// Every request of `waiters` fails the same way.
    pub fn failed(waiters: Vec<Waiter<T>>, why: LimiterFailure) -> Delivery<T> {
        let answers = waiters.iter().map(|_| Err(why)).collect();
        Delivery { waiters, answers }
    }

    pub fn push(&mut self, waiter: Waiter<T>, answer: Answer) {
        self.waiters.push(waiter);
        self.answers.push(answer);
    }

    pub fn extend(&mut self, other: Delivery<T>) {
        self.waiters.extend(other.waiters);
        self.answers.extend(other.answers);
    }

    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// Each request with its answer.
    pub fn into_pairs(self) -> impl Iterator<Item = (Waiter<T>, Answer)> {
        self.waiters.into_iter().zip(self.answers)
    }
}

/// Reads the answer to a batch (`status`: `None` when none came; `body` read only when
/// `body_size` is at most [`MAX_BATCH_ANSWER_BYTES`]), split for its requests in order. A batch
/// that got no answer, a status other than 200, an oversized answer or one that is not one item
/// per request fails each request as a call of its own would (the core applies its failure
/// mode). The second value says what was wrong with an unusable answer, for the log.
pub fn read_answer<T>(
    waiters: Vec<Waiter<T>>,
    status: Option<u16>,
    body_size: usize,
    body: &[u8],
) -> (Delivery<T>, Option<String>) {
    let why = match status {
        None => LimiterFailure::NoResponse,
        Some(_) if body_size > MAX_BATCH_ANSWER_BYTES => LimiterFailure::TooLarge,
        Some(200) => match split(body, waiters.len()) {
            Ok(items) => {
                let answers = items
                    .into_iter()
                    .map(|(s, b)| Ok((s, b.to_vec())))
                    .collect();
                return (Delivery { waiters, answers }, None);
            }
            Err(e) => {
                let problem = format!("the limiter's batch answer is unusable: {e}");
                return (
                    Delivery::failed(waiters, LimiterFailure::Malformed),
                    Some(problem),
                );
            }
        },
        Some(_) => LimiterFailure::Status,
    };
    (Delivery::failed(waiters, why), None)
}

/// How many requests may wait for a batch at once, per worker: eight full batches. Past that a
/// request fails at once by its failure mode (the limiter is far behind, and waiting longer
/// would only break the bound on the wait).
pub const MAX_QUEUED: usize = 8 * MAX_BATCH;

/// A request waiting for its checks' answer; `T`: what the core resumes it with (the core's
/// `Pending`).
#[derive(Debug)]
pub struct Waiter<T> {
    /// Its context id.
    pub context: u32,
    pub resume: T,
    /// When it queued (ms): the latency it records.
    pub queued_ms: i64,
}

/// One batch to send: the call's target, body and the requests it answers, in item order.
pub struct Outgoing<T> {
    pub cluster: String,
    pub timeout_ms: u64,
    pub body: Vec<u8>,
    pub waiters: Vec<Waiter<T>>,
}

pub struct Batcher<T> {
    /// Waiting for the next batch, oldest first: each with its `POST /v1/check` body, cluster
    /// and timeout.
    queue: Vec<(Waiter<T>, Vec<u8>, String, u64)>,
    /// The batch in flight.
    in_flight: Flight<T>,
}

/// Where the batch call is.
enum Flight<T> {
    /// None: the next batch may go.
    Idle,
    /// Asked for ([`Batcher::next_batch`]); the host has not given it a token yet.
    Starting,
    /// In flight as this call token, for these requests in item order.
    Sent(u32, Vec<Waiter<T>>),
}

impl<T> Default for Batcher<T> {
    fn default() -> Self {
        Batcher {
            queue: Vec::new(),
            in_flight: Flight::Idle,
        }
    }
}

impl<T> Batcher<T> {
    /// Queues a request's checks; `Err` gives it back when [`MAX_QUEUED`] already wait.
    pub fn enqueue(
        &mut self,
        waiter: Waiter<T>,
        body: Vec<u8>,
        cluster: &str,
        timeout_ms: u64,
    ) -> Result<(), Waiter<T>> {
        if self.queue.len() >= MAX_QUEUED {
            return Err(waiter);
        }
        self.queue
            .push((waiter, body, cluster.to_owned(), timeout_ms));
        Ok(())
    }

    /// Takes out every queued request that has waited longer than its `timeout_ms` by
    /// `now_ms`: they fail now rather than wait for another call. Called before each batch
    /// goes, so a request sent has waited at most `timeout_ms`, and its call adds at most as
    /// much.
    pub fn expire(&mut self, now_ms: i64) -> Vec<Waiter<T>> {
        let over = |(w, _, _, t): &(Waiter<T>, Vec<u8>, String, u64)| {
            now_ms.saturating_sub(w.queued_ms) > i64::try_from(*t).unwrap_or(i64::MAX)
        };
        if !self.queue.iter().any(over) {
            return Vec::new();
        }
        let (gone, kept): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.queue).into_iter().partition(over);
        self.queue = kept;
        gone.into_iter().map(|(w, _, _, _)| w).collect()
    }

    /// The next batch, when none is in flight and requests wait: the oldest up to
    /// [`MAX_BATCH`], all for the same cluster (one configuration has one). It is in flight from
    /// now: [`Batcher::sent`] gives its token, [`Batcher::refused`] ends it.
    pub fn next_batch(&mut self) -> Option<Outgoing<T>> {
        if !matches!(self.in_flight, Flight::Idle) || self.queue.is_empty() {
            return None;
        }
        self.in_flight = Flight::Starting;
        let n = self.queue.len().min(MAX_BATCH);
        let taken: Vec<_> = self.queue.drain(..n).collect();
        let (cluster, timeout_ms) = taken
            .first()
            .map(|(_, _, c, t)| (c.clone(), *t))
            .unwrap_or_default();
        let body = join(taken.iter().map(|(_, b, _, _)| b.as_slice()));
        Some(Outgoing {
            cluster,
            timeout_ms,
            body,
            waiters: taken.into_iter().map(|(w, _, _, _)| w).collect(),
        })
    }

    /// The host took the batch's call as `token`; `waiters`: its requests, as
    /// [`Batcher::next_batch`] gave them.
    pub fn sent(&mut self, token: u32, waiters: Vec<Waiter<T>>) {
        self.in_flight = Flight::Sent(token, waiters);
    }

    /// The host refused the batch's call (its requests fail): the next batch may go.
    pub fn refused(&mut self) {
        if matches!(self.in_flight, Flight::Starting) {
            self.in_flight = Flight::Idle;
        }
    }

    /// The requests the answer to call `token` is for; `None` when it is not this batcher's.
    pub fn answered(&mut self, token: u32) -> Option<Vec<Waiter<T>>> {
        match std::mem::replace(&mut self.in_flight, Flight::Idle) {
            Flight::Sent(t, waiters) if t == token => Some(waiters),
            other => {
                self.in_flight = other;
                None
            }
        }
    }

    /// Drops a request that went away while queued (one in flight is skipped on delivery).
    pub fn forget(&mut self, context: u32) {
        self.queue.retain(|(w, _, _, _)| w.context != context);
    }

    /// Whether a batch is in flight.
    #[cfg(test)]
    fn busy(&self) -> bool {
        !matches!(self.in_flight, Flight::Idle)
    }

    #[cfg(test)]
    fn queued(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use apiguard_limiter_api::batch::BatchRequest;

    fn waiter(context: u32) -> Waiter<()> {
        waiter_at(context, 0)
    }

    fn waiter_at(context: u32, queued_ms: i64) -> Waiter<()> {
        Waiter {
            context,
            resume: (),
            queued_ms,
        }
    }

    fn body(context: u32) -> Vec<u8> {
        format!(r#"{{"checks":[{{"key":"k{context}","limit":1,"window_ms":1000}}]}}"#).into_bytes()
    }

    #[test]
    fn one_batch_at_a_time_the_rest_wait_in_order() {
        let mut b = Batcher::<()>::default();
        b.enqueue(waiter(2), body(2), "limiter", 50).unwrap();
        let first = b.next_batch().unwrap();
        assert_eq!(
            first.waiters.iter().map(|w| w.context).collect::<Vec<_>>(),
            [2]
        );
        b.sent(8, first.waiters);
        // While it is in flight, the others queue.
        for c in 3..6 {
            b.enqueue(waiter(c), body(c), "limiter", 50).unwrap();
        }
        assert!(b.next_batch().is_none());
        // Not its answer: nothing moves.
        assert!(b.answered(12).is_none());
        assert_eq!(b.answered(8).unwrap().len(), 1);
        let second = b.next_batch().unwrap();
        assert_eq!(second.cluster, "limiter");
        assert_eq!(second.timeout_ms, 50);
        assert_eq!(
            second.waiters.iter().map(|w| w.context).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        let parsed = BatchRequest::from_json(&second.body).unwrap();
        assert_eq!(parsed.requests.len(), 3);
        assert!(parsed.requests[1].get().contains("k4"));
    }

    #[test]
    fn a_batch_holds_at_most_max_batch_and_gone_requests_leave_the_queue() {
        let mut b = Batcher::<()>::default();
        for c in 0..(MAX_BATCH as u32 + 3) {
            b.enqueue(waiter(c), body(c), "limiter", 50).unwrap();
        }
        b.forget(1);
        let first = b.next_batch().unwrap();
        assert_eq!(first.waiters.len(), MAX_BATCH);
        assert!(first.waiters.iter().all(|w| w.context != 1));
        b.sent(4, first.waiters);
        assert_eq!(b.queued(), 2);
        b.answered(4);
        assert_eq!(b.next_batch().unwrap().waiters.len(), 2);
    }

    #[test]
    fn the_queue_is_bounded_and_old_waiters_expire() {
        let mut b = Batcher::<()>::default();
        for c in 0..MAX_QUEUED as u32 {
            b.enqueue(waiter_at(c, i64::from(c)), body(c), "limiter", 50)
                .unwrap();
        }
        let refused = b.enqueue(waiter(9999), body(9999), "limiter", 50);
        assert_eq!(refused.err().map(|w| w.context), Some(9999));
        // At 60 ms, those queued at 0..=9 have waited over 50 ms.
        let gone = b.expire(60);
        assert_eq!(
            gone.iter().map(|w| w.context).collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
        assert_eq!(b.queued(), MAX_QUEUED - 10);
        assert!(b.expire(60).is_empty());
        assert!(b.enqueue(waiter(9999), body(9999), "limiter", 50).is_ok());
    }

    /// Issue 27, finding 4: the documented bound, on a hung limiter (every call ends at its
    /// timeout, unanswered) and a closed loop of clients far more than a batch can hold: every
    /// request is answered or failed within twice `timeout_ms` of when it queued. Before
    /// [`Batcher::expire`], a request waited one round per [`MAX_BATCH`] ahead of it.
    #[test]
    fn on_a_hung_limiter_no_request_waits_past_twice_the_timeout() {
        const TIMEOUT: i64 = 50;
        const CLIENTS: u32 = 10 * MAX_BATCH as u32;
        let mut b = Batcher::<()>::default();
        // Each client sends again 1 ms after its previous request ended (how a closed-loop
        // load generator behaves), arriving one per 0.1 ms at first.
        let mut next_send: Vec<(i64, u32)> = (0..CLIENTS).map(|c| (i64::from(c) / 10, c)).collect();
        let mut call_ends: Option<i64> = None;
        let (mut worst, mut done, mut expired) = (0i64, 0u32, 0u32);
        let mut finish = |w: Waiter<()>, now: i64, next_send: &mut Vec<(i64, u32)>| {
            worst = worst.max(now - w.queued_ms);
            done += 1;
            next_send.push((now + 1, w.context));
        };
        for now in 0..5_000i64 {
            if call_ends == Some(now) {
                for w in b.answered(now as u32).unwrap_or_default() {
                    finish(w, now, &mut next_send);
                }
                call_ends = None;
            }
            let (due, later): (Vec<_>, Vec<_>) = next_send.drain(..).partition(|(t, _)| *t <= now);
            next_send = later;
            for (_, c) in due {
                if let Err(w) = b.enqueue(waiter_at(c, now), body(c), "limiter", TIMEOUT as u64) {
                    finish(w, now, &mut next_send);
                }
            }
            if !b.busy() {
                for w in b.expire(now) {
                    expired += 1;
                    finish(w, now, &mut next_send);
                }
                if let Some(out) = b.next_batch() {
                    assert!(out.waiters.iter().all(|w| now - w.queued_ms <= TIMEOUT));
                    b.sent((now + TIMEOUT) as u32, out.waiters);
                    call_ends = Some(now + TIMEOUT);
                }
            }
        }
        assert!(done > 1000, "{done}");
        assert!(expired > 0, "the backlog never built up");
        assert!(worst <= 2 * TIMEOUT, "a request waited {worst} ms");
    }

    #[test]
    fn a_batch_answer_is_split_in_order_or_fails_every_request_alike() {
        let three = || (0..3).map(waiter).collect::<Vec<_>>();
        let item = |allowed: bool| {
            format!(r#"{{"status":200,"body":{{"allowed":{allowed},"results":[]}}}}"#)
        };
        let body = format!(
            r#"{{"answers":[{},{},{}]}}"#,
            item(true),
            item(false),
            item(true)
        );
        let (d, problem) = read_answer(three(), Some(200), body.len(), body.as_bytes());
        assert!(problem.is_none());
        let got: Vec<_> = d
            .into_pairs()
            .map(|(w, a)| {
                (
                    w.context,
                    a.map(|(s, b)| (s, String::from_utf8(b).unwrap())),
                )
            })
            .collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].0, 1);
        assert!(got[1].1.as_ref().unwrap().1.contains("false"), "{got:?}");
        let fails = |status, size: usize, body: &str| {
            let (d, _) = read_answer(three(), status, size, body.as_bytes());
            assert_eq!(d.waiters.len(), 3);
            let mut errs = d.answers.into_iter().map(|a| a.err());
            let first = errs.next().flatten();
            assert!(errs.all(|e| e == first));
            first
        };
        assert_eq!(fails(None, 0, ""), Some(LimiterFailure::NoResponse));
        assert_eq!(fails(Some(503), 2, "{}"), Some(LimiterFailure::Status));
        assert_eq!(
            fails(Some(200), MAX_BATCH_ANSWER_BYTES + 1, ""),
            Some(LimiterFailure::TooLarge)
        );
        let two = format!(r#"{{"answers":[{},{}]}}"#, item(true), item(true));
        assert_eq!(
            fails(Some(200), two.len(), &two),
            Some(LimiterFailure::Malformed)
        );
        assert_eq!(
            fails(Some(200), 7, "garbage"),
            Some(LimiterFailure::Malformed)
        );
    }
}
