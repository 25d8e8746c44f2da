//! The filter's limiter calls over a kept-alive connection through a TCP proxy (issue 35): a
//! call that comes just as long after the previous one as the limiter's header timeout must
//! not find a connection the limiter is closing.

use std::time::Duration;

use apiguard_e2e::idle_proxy::{Behaviour, IdleProxy};
use apiguard_e2e::keys::{self, claims, token};
use apiguard_e2e::{Echo, Envoy, EnvoySpec, Limiter, Redis};
use serde_json::json;

/// The limiter's header timeout in this test: short, so that the sweep is quick.
const HEADER_TIMEOUT_MS: u64 = 300;

/// One sweep of the gap between two limiter calls around the header timeout, through Envoy
/// and a proxy that learns of a server's close 40 ms late ([`late_close`]; a request sent into
/// a connection the limiter has closed is lost, as it is through a load balancer). Returns
/// each gap with the status its request got.
async fn sweep(envoy: &Envoy, auth: &str, gaps_ms: impl Iterator<Item = u64>) -> Vec<(u64, u16)> {
    let http = apiguard_e2e::client();
    let mut seen = Vec::new();
    for gap in gaps_ms {
        tokio::time::sleep(Duration::from_millis(gap)).await;
        let res = http
            .get(envoy.url("/api/x"))
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
        seen.push((gap, res.status().as_u16()));
    }
    seen
}

/// Redis, the limiter with `args`, a proxy to it that learns of its closes 40 ms late, and
/// Envoy calling the limiter through the proxy, failing closed (a lost call is a 503).
struct Setup {
    _redis: Redis,
    limiter: Limiter,
    _proxy: IdleProxy,
    _echo: Echo,
    envoy: Envoy,
    auth: String,
}

async fn setup(limiter_args: &[&str], envoy_idle: Duration) -> Setup {
    let redis = Redis::start().unwrap();
    let mut args = vec![
        "--redis".to_owned(),
        redis.url(),
        "--redis-timeout-ms".into(),
        "2000".into(),
    ];
    args.extend(limiter_args.iter().map(|a| (*a).to_owned()));
    let limiter = Limiter::start(&args).await.unwrap();
    let proxy = IdleProxy::start_with(
        limiter.addr,
        Behaviour {
            idle: None,
            late_close: late_close(),
        },
    )
    .await
    .unwrap();
    let echo = Echo::start().await.unwrap();
    let config = json!({
        "jwt": {"providers": {"p": {"issuer": "https://idp.test/", "audiences": ["api"],
                                   "jwks": {"inline": keys::jwks(&keys::all())}}}},
        "rate_limit": {"identity": ["claim:sub"], "cluster": "limiter", "timeout_ms": 1000,
                       "failure_mode": "deny",
                       "tiers": {"standard": [{"requests": 1000, "window_s": 60}]}}
    });
    let spec = EnvoySpec::new(echo.addr)
        .with_cluster("limiter", proxy.addr)
        .with_cluster_idle_timeout(envoy_idle)
        .with_filter(config.to_string());
    let envoy = Envoy::start(&spec).await.unwrap();
    let all = keys::all();
    let (alg, kid, key) = &all[1];
    let auth = format!(
        "Bearer {}",
        // Valid for a day: a sweep run by hand takes longer than the default ten minutes.
        token(
            *alg,
            kid,
            key,
            &claims(json!({"sub": "quiet", "exp": day_from_now()}))
        )
    );
    Setup {
        _redis: redis,
        limiter,
        _proxy: proxy,
        _echo: echo,
        envoy,
        auth,
    }
}

impl Setup {
    /// Calls after each gap (the first call opens the pooled connection, later ones reuse it),
    /// `sweeps` times over; fails the test with the gap and status of every call that was not
    /// admitted.
    async fn sweep_admits_all(&self, gaps_ms: &[u64], sweeps: usize) {
        let mut failed = Vec::new();
        let mut calls = 0;
        for _ in 0..sweeps {
            let seen = sweep(
                &self.envoy,
                &self.auth,
                std::iter::once(0).chain(gaps_ms.iter().copied()),
            )
            .await;
            calls += seen.len();
            failed.extend(seen.into_iter().filter(|(_, s)| *s != 200));
        }
        assert!(
            failed.is_empty(),
            "{} of {calls} calls in {sweeps} sweeps failed, gap (ms) and status: {failed:?}\n\
             limiter log:\n{}",
            failed.len(),
            self.limiter.proc.log()
        );
    }
}

fn day_from_now() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.as_secs() + 86_400
}

/// How late the proxy passes a close on: 40 ms, or `APIGUARD_KEEPALIVE_LATE_CLOSE_MS` (at most
/// 1000; 0 is a proxy that passes it on at once) for a run by hand.
fn late_close() -> Duration {
    let ms = std::env::var("APIGUARD_KEEPALIVE_LATE_CLOSE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40u64)
        .min(1000);
    Duration::from_millis(ms)
}

/// How many times to sweep: 1, or `APIGUARD_KEEPALIVE_SWEEPS` (at most 1000) for a longer
/// run by hand.
fn sweeps() -> usize {
    std::env::var("APIGUARD_KEEPALIVE_SWEEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .clamp(1, 1000)
}

/// Issue 35: the limiter closed a kept-alive connection once it had been idle for its header
/// timeout, and a call sent on it then was lost. The header timeout now runs from a request's
/// first byte; an idle connection stays open for the (much longer) idle timeout.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_as_late_as_the_header_timeout_finds_a_live_connection() {
    let s = setup(
        &["--header-timeout-ms", &HEADER_TIMEOUT_MS.to_string()],
        Duration::from_secs(30),
    )
    .await;
    let gaps: Vec<u64> = (240..=400).step_by(10).collect();
    s.sweep_admits_all(&gaps, sweeps()).await;
}

/// When the limiter does close idle connections (its idle timeout), Envoy has closed them
/// first (the cluster's `idle_timeout`, shorter, as the shipped configurations set it): calls
/// around the limiter's idle timeout open a new connection instead of finding a dying one.
#[tokio::test(flavor = "multi_thread")]
async fn envoy_closes_idle_limiter_connections_before_the_limiter_does() {
    let s = setup(
        &[
            "--header-timeout-ms",
            &HEADER_TIMEOUT_MS.to_string(),
            "--idle-timeout-ms",
            "1000",
        ],
        Duration::from_millis(500),
    )
    .await;
    let gaps: Vec<u64> = (940..=1060).step_by(20).collect();
    s.sweep_admits_all(&gaps, sweeps()).await;
}
