//! Envoy's rate-limit service protocol (gRPC `ShouldRateLimit`), spoken to the limiter's own
//! server over a loopback socket by a tonic client built from Envoy's published protos. One test
//! body per behaviour, run against every store (`matrix`: in-memory, Redis, Redis over TLS).

// Test code: helpers outside `#[test]` functions may panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use apiguard_e2e::Redis;
use apiguard_limiter::rls::Descriptors;
use apiguard_limiter::serve::{serve, Limits};
use apiguard_limiter::{app, AppState, Metrics, RedisStore, RedisTarget, Store};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use tonic::transport::Channel;

#[macro_use]
mod matrix;

const DESCRIPTORS: &str = r#"
domain: edge
descriptors:
  - key: generic_key
    value: tight
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: generic_key
    value: roomy
    rate_limit: {unit: minute, requests_per_unit: 10}
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 20}
"#;

/// The limiter's router served by its own server on a free loopback port.
struct Running {
    client: RateLimitServiceClient<Channel>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn start<S: Store>(store: S) -> Running {
    let state = Arc::new(AppState {
        store,
        metrics: Metrics::new(),
        store_timeout: Duration::from_millis(500),
        descriptors: Descriptors::parse(DESCRIPTORS).unwrap(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(
        listener,
        app(state),
        None,
        Limits::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let client = RateLimitServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    Running {
        client,
        stop: Some(stop),
    }
}

fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
        ..RateLimitDescriptor::default()
    }
}

fn request(domain: &str, descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.into(),
        descriptors,
        hits_addend: 0,
    }
}

async fn ask(
    client: &mut RateLimitServiceClient<Channel>,
    req: RateLimitRequest,
) -> Result<RateLimitResponse, tonic::Status> {
    client.should_rate_limit(req).await.map(|r| r.into_inner())
}

/// One descriptor in domain `edge`, answered (not an error).
async fn ask_one(
    client: &mut RateLimitServiceClient<Channel>,
    entries: &[(&str, &str)],
) -> RateLimitResponse {
    ask(client, request("edge", vec![descriptor(entries)]))
        .await
        .unwrap()
}

for_each_store!(start =>
    admission_is_exact_under_concurrency,
    a_call_is_all_or_nothing,
    calls_the_limiter_cannot_count_are_errors,
    more_limited_descriptors_than_one_call_checks_are_over_the_limit,
);

/// 60 concurrent calls for one user limited to 20 a minute: exactly 20 are OK.
async fn admission_is_exact_under_concurrency(r: Running) {
    let mut tasks = Vec::new();
    for _ in 0..60 {
        let mut client = r.client.clone();
        tasks.push(tokio::spawn(async move {
            ask(
                &mut client,
                request("edge", vec![descriptor(&[("user", "u1")])]),
            )
            .await
            .unwrap()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let res = t.await.unwrap();
        if res.overall_code == Code::Ok as i32 {
            ok += 1;
        } else {
            assert_eq!(res.overall_code, Code::OverLimit as i32);
            let retry = res
                .response_headers_to_add
                .iter()
                .find(|h| h.key == "retry-after");
            assert!(
                retry.is_some_and(|h| h.value.parse::<u64>().unwrap() >= 1),
                "{res:?}"
            );
        }
    }
    assert_eq!(ok, 20);
    // Another user has a window of their own.
    let res = ask_one(&mut r.client.clone(), &[("user", "u2")]).await;
    assert_eq!(res.overall_code, Code::Ok as i32);
    assert_eq!(res.statuses[0].limit_remaining, 19);
}

/// A call over one descriptor's limit consumes none of its other descriptors; statuses come in
/// request order, with the limit, what remains and when the window is whole again.
async fn a_call_is_all_or_nothing(r: Running) {
    let mut c = r.client.clone();
    let both = || {
        request(
            "edge",
            vec![
                descriptor(&[("generic_key", "tight")]),
                descriptor(&[("generic_key", "unlisted")]),
                descriptor(&[("generic_key", "roomy")]),
            ],
        )
    };
    let first = ask(&mut c, both()).await.unwrap();
    assert_eq!(first.overall_code, Code::Ok as i32);
    let codes =
        |res: &RateLimitResponse| -> Vec<i32> { res.statuses.iter().map(|s| s.code).collect() };
    assert_eq!(codes(&first), [Code::Ok as i32; 3]);
    let roomy = &first.statuses[2];
    assert_eq!(roomy.limit_remaining, 9);
    let limit = roomy.current_limit.as_ref().unwrap();
    assert_eq!((limit.requests_per_unit, limit.unit), (10, 2));
    let reset = roomy.duration_until_reset.unwrap();
    assert!((1..=120).contains(&reset.seconds), "{reset:?}");
    assert!(first.statuses[1].current_limit.is_none());

    let second = ask(&mut c, both()).await.unwrap();
    assert_eq!(second.overall_code, Code::OverLimit as i32);
    assert_eq!(
        codes(&second),
        [Code::OverLimit as i32, Code::Ok as i32, Code::Ok as i32]
    );
    // The refused call took nothing from the roomy window.
    let alone = ask_one(&mut c, &[("generic_key", "roomy")]).await;
    assert_eq!(alone.overall_code, Code::Ok as i32);
    assert_eq!(alone.statuses[0].limit_remaining, 8);
}

/// Never OK when the limiter cannot decide: an unknown domain or negative hits are errors, too
/// many hits over the limit.
async fn calls_the_limiter_cannot_count_are_errors(r: Running) {
    let mut c = r.client.clone();
    let e = ask(&mut c, request("nope", vec![descriptor(&[("user", "u")])]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("domain `nope`"), "{e:?}");
    let mut negative = descriptor(&[("user", "u")]);
    negative.is_negative_hits = true;
    let e = ask(&mut c, request("edge", vec![negative]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    // More hits than the limiter counts in one call (the hits can come from the request):
    // over the limit, never an error that Envoy's default would let through.
    let mut heavy = request("edge", vec![descriptor(&[("user", "heavy")])]);
    heavy.hits_addend = 1_000_000;
    let res = ask(&mut c, heavy).await.unwrap();
    assert_eq!(res.overall_code, Code::OverLimit as i32);
    assert_eq!(res.statuses[0].code, Code::OverLimit as i32);
    let alone = ask_one(&mut c, &[("user", "heavy")]).await;
    assert_eq!(alone.statuses[0].limit_remaining, 19, "nothing was charged");
    // Descriptors without a limit are answered without a store call.
    let res = ask_one(&mut c, &[("other", "x")]).await;
    assert_eq!(res.overall_code, Code::Ok as i32);
}

/// Issue 27, low 6: a call whose descriptors reach more limited nodes than one store call
/// checks (16) was INVALID_ARGUMENT, which Envoy's ratelimit filter lets through by default, so a
/// client adding descriptors (a header each) escaped every limit. It is OVER_LIMIT, charging
/// nothing, with the 17th limited descriptor over its limit.
async fn more_limited_descriptors_than_one_call_checks_are_over_the_limit(r: Running) {
    let mut c = r.client.clone();
    let users: Vec<String> = (0..17).map(|i| format!("many-{i}")).collect();
    let mut descriptors: Vec<RateLimitDescriptor> = users
        .iter()
        .map(|u| descriptor(&[("user", u.as_str())]))
        .collect();
    // Descriptors without a limit do not count towards the 16.
    descriptors.insert(3, descriptor(&[("generic_key", "unlisted")]));
    let res = ask(&mut c, request("edge", descriptors)).await.unwrap();
    assert_eq!(res.overall_code, Code::OverLimit as i32, "{res:?}");
    let over: Vec<usize> = (0..res.statuses.len())
        .filter(|&i| res.statuses[i].code == Code::OverLimit as i32)
        .collect();
    assert_eq!(over, [17], "{res:?}");
    assert_eq!(res.statuses.len(), 18);
    assert!(
        res.response_headers_to_add
            .iter()
            .any(|h| h.key == "retry-after" && h.value == "60"),
        "{res:?}"
    );
    // Nothing was charged; 16 limited descriptors are one call, decided as usual.
    let alone = ask_one(&mut c, &[("user", "many-0")]).await;
    assert_eq!(alone.statuses[0].limit_remaining, 19, "{alone:?}");
    let sixteen = users[..16]
        .iter()
        .map(|u| descriptor(&[("user", u.as_str())]))
        .collect();
    let res = ask(&mut c, request("edge", sixteen)).await.unwrap();
    assert_eq!(res.overall_code, Code::Ok as i32, "{res:?}");
}

/// Redis down: UNAVAILABLE, never OK; back up: served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_down_is_unavailable_never_ok() {
    let redis = Redis::start().unwrap();
    let store = RedisStore::new(RedisTarget::Single(redis.url()), Duration::from_millis(200));
    let r = start(store).await;
    let mut c = r.client.clone();
    let one = || request("edge", vec![descriptor(&[("user", "u")])]);
    assert_eq!(
        ask(&mut c, one()).await.unwrap().overall_code,
        Code::Ok as i32
    );
    let port = redis.port();
    drop(redis);
    let e = ask(&mut c, one()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    let _again = Redis::start_on(port, &[]).unwrap();
    let mut ok = false;
    for _ in 0..50 {
        if ask(&mut c, one())
            .await
            .is_ok_and(|r| r.overall_code == Code::Ok as i32)
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the limiter did not recover after Redis came back");
}
