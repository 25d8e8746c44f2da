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
//! The root context makes the calls: Envoy cancels a context's calls when the context goes, and
//! a batch must not die with the request that happened to start it.
//!
//! This is state only (no host calls), so it is tested natively; `lib.rs` and `dispatch.rs`
//! make the calls and deliver the answers.

use apiguard_limiter_api::batch::{join, MAX_BATCH};

/// A request waiting for its checks' answer; `T`: what the core resumes it with (the core's
/// `Pending`).
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
    /// The batch in flight: its call token and its requests, in item order.
    in_flight: Option<(u32, Vec<Waiter<T>>)>,
}

impl<T> Default for Batcher<T> {
    fn default() -> Self {
        Batcher {
            queue: Vec::new(),
            in_flight: None,
        }
    }
}

impl<T> Batcher<T> {
    pub fn enqueue(&mut self, waiter: Waiter<T>, body: Vec<u8>, cluster: &str, timeout_ms: u64) {
        self.queue
            .push((waiter, body, cluster.to_owned(), timeout_ms));
    }

    /// The next batch, when none is in flight and requests wait: the oldest up to
    /// [`MAX_BATCH`], all for the same cluster (one configuration has one).
    pub fn next(&mut self) -> Option<Outgoing<T>> {
        if self.in_flight.is_some() || self.queue.is_empty() {
            return None;
        }
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

    /// The host took the batch's call as `token`.
    pub fn sent(&mut self, token: u32, waiters: Vec<Waiter<T>>) {
        self.in_flight = Some((token, waiters));
    }

    /// The requests the answer to call `token` is for; `None` when it is not this batcher's.
    pub fn answered(&mut self, token: u32) -> Option<Vec<Waiter<T>>> {
        match &self.in_flight {
            Some((t, _)) if *t == token => self.in_flight.take().map(|(_, w)| w),
            _ => None,
        }
    }

    /// Drops a request that went away while queued (one in flight is skipped on delivery).
    pub fn forget(&mut self, context: u32) {
        self.queue.retain(|(w, _, _, _)| w.context != context);
    }

    #[cfg(test)]
    fn queued(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apiguard_limiter_api::batch::BatchRequest;

    fn waiter(context: u32) -> Waiter<()> {
        Waiter {
            context,
            resume: (),
            queued_ms: 0,
        }
    }

    fn body(context: u32) -> Vec<u8> {
        format!(r#"{{"checks":[{{"key":"k{context}","limit":1,"window_ms":1000}}]}}"#).into_bytes()
    }

    #[test]
    fn one_batch_at_a_time_the_rest_wait_in_order() {
        let mut b = Batcher::<()>::default();
        b.enqueue(waiter(2), body(2), "limiter", 50);
        let first = b.next().unwrap();
        assert_eq!(
            first.waiters.iter().map(|w| w.context).collect::<Vec<_>>(),
            [2]
        );
        b.sent(8, first.waiters);
        // While it is in flight, the others queue.
        for c in 3..6 {
            b.enqueue(waiter(c), body(c), "limiter", 50);
        }
        assert!(b.next().is_none());
        // Not its answer: nothing moves.
        assert!(b.answered(12).is_none());
        assert_eq!(b.answered(8).unwrap().len(), 1);
        let second = b.next().unwrap();
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
            b.enqueue(waiter(c), body(c), "limiter", 50);
        }
        b.forget(1);
        let first = b.next().unwrap();
        assert_eq!(first.waiters.len(), MAX_BATCH);
        assert!(first.waiters.iter().all(|w| w.context != 1));
        b.sent(4, first.waiters);
        assert_eq!(b.queued(), 2);
        b.answered(4);
        assert_eq!(b.next().unwrap().waiters.len(), 2);
    }
}
