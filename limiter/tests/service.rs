//! The limiter binary as operators run it: real processes on loopback, a real Redis (single
//! node and a three-master Cluster), faults injected into Redis.

// Test code: helpers outside `#[test]` functions may panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use apiguard_e2e::certs::Pki;
use apiguard_e2e::{Limiter, Redis, RedisCluster};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_apiguard-limiter");

/// Starts this build's limiter, or the binary `APIGUARD_LIMITER_BIN` names (to run a test
/// against an older build, e.g. to see a regression test fail).
async fn limiter(args: &[&str]) -> Limiter {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let bin = std::env::var_os("APIGUARD_LIMITER_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(BIN).to_path_buf());
    Limiter::start_bin(&bin, &args).await.unwrap()
}

/// `GET /readyz`'s status.
async fn ready(l: &Limiter) -> u16 {
    reqwest::get(format!("http://{}/readyz", l.addr))
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// `GET /metrics`'s text.
async fn metrics_text(l: &Limiter) -> String {
    reqwest::get(format!("http://{}/metrics", l.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn body(key: &str, limit: u64) -> Value {
    json!({"checks": [{"key": key, "limit": limit, "window_ms": 60_000}]})
}

/// Posts `calls` checks at once, spread over `limiters`; returns (allowed, limited, other).
async fn storm(
    limiters: &[&Limiter],
    key: &str,
    limit: u64,
    calls: usize,
) -> (usize, usize, Vec<u16>) {
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..calls {
        let url = format!("http://{}/v1/check", limiters[i % limiters.len()].addr);
        let http = http.clone();
        let b = body(key, limit);
        tasks.push(tokio::spawn(async move {
            let res = http.post(url).json(&b).send().await.unwrap();
            let status = res.status().as_u16();
            let v: Value = res.json().await.unwrap_or(Value::Null);
            (status, v["allowed"].as_bool())
        }));
    }
    let (mut allowed, mut limited, mut other) = (0, 0, Vec::new());
    for t in tasks {
        match t.await.unwrap() {
            (200, Some(true)) => allowed += 1,
            (200, Some(false)) => limited += 1,
            (s, _) => other.push(s),
        }
    }
    (allowed, limited, other)
}

async fn post(l: &Limiter, b: &Value) -> (u16, Value, Duration) {
    let t = Instant::now();
    let res = reqwest::Client::new()
        .post(format!("http://{}/v1/check", l.addr))
        .json(b)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null), t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_memory_process_is_exact_and_says_so() {
    let l = limiter(&[]).await;
    assert_eq!(storm(&[&l], "{mem}", 100, 500).await, (100, 400, vec![]));
    assert!(
        l.proc.log().contains("NO REDIS CONFIGURED"),
        "{}",
        l.proc.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_limiters_sharing_redis_admit_exactly_the_limit() {
    let redis = Redis::start().unwrap();
    let url = redis.url();
    let a = limiter(&["--redis", &url, "--redis-timeout-ms", "5000"]).await;
    let b = limiter(&["--redis", &url, "--redis-timeout-ms", "5000"]).await;
    assert_eq!(
        storm(&[&a, &b], "{shared}", 100, 500).await,
        (100, 400, vec![])
    );
    // The script survives Redis forgetting it (restart, failover, SCRIPT FLUSH).
    assert!(redis.cli(&["script", "flush"]).unwrap().contains("OK"));
    let (status, v, _) = post(&a, &body("{after-flush}", 1)).await;
    assert_eq!((status, v["allowed"].clone()), (200, json!(true)));
    // Keys carry the hash tag and expire.
    let keys = redis.cli(&["--scan", "--pattern", "apiguard:*"]).unwrap();
    assert!(
        keys.contains("apiguard:{shared}:log:60000:{shared}"),
        "{keys}"
    );
    let ttl: i64 = redis
        .cli(&["pttl", "apiguard:{shared}:log:60000:{shared}"])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((1..=60_000).contains(&ttl), "pttl {ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_is_503_then_recovers_without_restart() {
    let mut redis = Redis::start().unwrap();
    let port = redis.port();
    let l = limiter(&["--redis", &redis.url(), "--redis-timeout-ms", "200"]).await;
    let (status, _, _) = post(&l, &body("{k}", 1000)).await;
    assert_eq!(status, 200);

    redis.proc.kill();
    for _ in 0..5 {
        let (status, v, took) = post(&l, &body("{k}", 1000)).await;
        assert_eq!(status, 503, "{v}");
        assert_eq!(v["status"], 503);
        assert!(v.get("allowed").is_none());
        // Within the 200 ms store deadline, plus HTTP overhead on a busy test machine.
        assert!(took < Duration::from_millis(400), "took {took:?}");
    }
    assert_eq!(ready(&l).await, 503);

    drop(redis);
    let _redis = Redis::start_on(port, &[]).unwrap();
    let start = Instant::now();
    loop {
        let (status, _, _) = post(&l, &body("{k}", 1000)).await;
        if status == 200 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no recovery: {}",
            l.proc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready(&l).await, 200);
    let metrics = metrics_text(&l).await;
    assert!(
        metrics.contains("apiguard_limiter_store_errors_total{kind="),
        "{metrics}"
    );
}

fn connected_clients(redis: &Redis) -> u64 {
    let info = redis.cli(&["info", "clients"]).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paused_redis_gives_bounded_503s_without_piling_up_connections() {
    let redis = Redis::start().unwrap();
    let l = limiter(&["--redis", &redis.url(), "--redis-timeout-ms", "100"]).await;
    assert_eq!(post(&l, &body("{p}", 1000)).await.0, 200);
    let before = connected_clients(&redis);

    assert!(redis
        .cli(&["client", "pause", "3000", "ALL"])
        .unwrap()
        .contains("OK"));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let addr = l.addr;
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let res = reqwest::Client::new()
                .post(format!("http://{addr}/v1/check"))
                .json(&body("{p}", 1000))
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), t.elapsed())
        }));
    }
    for t in tasks {
        let (status, took) = t.await.unwrap();
        assert_eq!(status, 503);
        // The 100 ms store deadline, plus 50 concurrent requests' HTTP overhead.
        assert!(took < Duration::from_millis(500), "took {took:?}");
    }
    // Let the pause end, then the same multiplexed connection serves again.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let start = Instant::now();
    let recovered = loop {
        let (status, v, _) = post(&l, &body("{p}", 1000)).await;
        if status == 200 {
            break v;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no recovery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The 50 checks that waited out the pause reached Redis long past their deadline and were
    // not counted: only the first check and this one were.
    assert_eq!(recovered["results"][0]["remaining"], 998, "{recovered}");
    let after = connected_clients(&redis);
    assert!(
        after <= before + 2,
        "connections grew from {before} to {after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_cluster_through_two_limiters_is_exact() {
    let cluster = RedisCluster::start(3).unwrap();
    let seeds = cluster.urls().join(",");
    let args = [
        "--redis-cluster",
        seeds.as_str(),
        "--redis-timeout-ms",
        "5000",
    ];
    let a = limiter(&args).await;
    let b = limiter(&args).await;
    // Keys whose tags hash to different slots, so more than one master is exercised.
    for key in ["{alpha}", "{bravo}", "{charlie}"] {
        assert_eq!(
            storm(&[&a, &b], key, 50, 200).await,
            (50, 150, vec![]),
            "{key}"
        );
    }
    // A burst and a sustained window of one user, atomic within one slot.
    let both = json!({"checks": [
        {"key": "{u9}:burst", "limit": 2, "window_ms": 60_000},
        {"key": "{u9}:sustained", "limit": 5, "window_ms": 60_000, "algorithm": "counter"}
    ]});
    assert_eq!(post(&a, &both).await.1["allowed"], true);
    assert_eq!(post(&b, &both).await.1["allowed"], true);
    let (_, v, _) = post(&a, &both).await;
    assert_eq!(v["allowed"], false);
    assert_eq!(v["results"][1]["remaining"], 3, "{v}");
    assert_eq!(ready(&a).await, 200);
}

/// Opens `n` connections that send half a request header and then nothing.
async fn half_headers(addr: std::net::SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut socks = Vec::new();
    for _ in 0..n {
        if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
            let _ = s.write_all(b"POST /v1/check HTTP/1.1\r\nhost: x\r\n").await;
            socks.push(s);
        }
    }
    socks
}

/// Whether the server closed the connection within `wait`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(s: &mut S, wait: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// Clients that never finish their headers are cut off, the connection cap holds, and the
/// service keeps answering the clients that behave.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_are_cut_off_and_connections_are_capped() {
    let l = limiter(&[
        "--header-timeout-ms",
        "500",
        "--max-connections",
        "100",
        "--max-pending-connections",
        "50",
        "--max-pending-per-peer",
        "50",
    ])
    .await;
    let mut slow = half_headers(l.addr, 200).await;
    assert!(slow.len() >= 150, "only {} connections opened", slow.len());
    // Past the caps (50 being read, 50 waiting to be), connections are closed as soon as they
    // are accepted.
    let mut refused = 0;
    for s in slow.iter_mut().skip(100) {
        if closed_within(s, Duration::from_millis(300)).await {
            refused += 1;
        }
    }
    assert!(
        refused >= 50,
        "only {refused} connections past the cap were closed"
    );
    // The first hundred are cut off by the header timeout, freeing their slots.
    for s in slow.iter_mut().take(100) {
        assert!(
            closed_within(s, Duration::from_secs(3)).await,
            "a slow client stayed open"
        );
    }
    let (status, v, _) = post(&l, &body("{after-slow}", 5)).await;
    assert_eq!((status, v["allowed"].as_bool()), (200, Some(true)));
}

/// Sends one complete check on `s` and reads its whole answer (the connection stays open).
async fn one_check(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = body("{keepalive}", 1000).to_string();
    let req = format!(
        "POST /v1/check HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{b}",
        b.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    // The answer is small and ends with its JSON body.
    while !out.ends_with(b"}") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("no answer")
            .unwrap();
        assert!(
            n > 0,
            "closed before the answer: {}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A kept-alive connection waits for its next request for the idle timeout, not the header
/// timeout (issue 35); once a later request starts, its header must be complete within the
/// header timeout from its first byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_connections_last_the_idle_timeout_and_later_headers_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    let l = limiter(&["--header-timeout-ms", "300", "--idle-timeout-ms", "1500"]).await;
    // Idle after an answer: open past several header timeouts, served again, closed once idle
    // for the idle timeout.
    let mut idle = tokio::net::TcpStream::connect(l.addr).await.unwrap();
    assert!(one_check(&mut idle).await.starts_with("HTTP/1.1 200"));
    assert!(!closed_within(&mut idle, Duration::from_millis(900)).await);
    assert!(one_check(&mut idle).await.starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    assert!(closed_within(&mut idle, Duration::from_secs(5)).await);
    assert!(
        started.elapsed() >= Duration::from_millis(1200),
        "closed after {:?}, before the idle timeout",
        started.elapsed()
    );
    // A later request that starts and stalls: cut off by the header timeout.
    let mut slow = tokio::net::TcpStream::connect(l.addr).await.unwrap();
    assert!(one_check(&mut slow).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    slow.write_all(b"POST /v1/check HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut slow, Duration::from_secs(5)).await);
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "a stalled header held the connection for {:?}",
        started.elapsed()
    );
}

/// A TCP connection to `addr` from the loopback address `from` (127.0.0.2 and so on stand
/// for other peers).
async fn connect_from(
    from: [u8; 4],
    addr: std::net::SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::from((from, 0)))?;
    socket.connect(addr).await
}

/// An HTTP/2 prior-knowledge client's preface, empty SETTINGS, and `GET /healthz` on stream 1
/// (HPACK: `:method GET`, `:scheme http`, `:path` literal, `:authority` literal).
const H2C_GET_HEALTHZ: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\
    \x00\x00\x00\x04\x00\x00\x00\x00\x00\
    \x00\x00\x0f\x01\x05\x00\x00\x00\x01\
    \x82\x86\x04\x08/healthz\x01\x01x";

/// Issue 27, medium 3: one deadline covers the TLS handshake, protocol sniffing and the first
/// request header. Peers that connect and send nothing, or only the HTTP/2 preface, or finish
/// the TLS handshake and then send nothing, are closed once it passes (before, all but the
/// first stayed open for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_peers_are_closed_within_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    const WAIT: Duration = Duration::from_secs(3);
    let plain = limiter(&["--header-timeout-ms", "300"]).await;
    let mut silent = tokio::net::TcpStream::connect(plain.addr).await.unwrap();
    let mut h2c = tokio::net::TcpStream::connect(plain.addr).await.unwrap();
    // The HTTP/2 preface and an empty SETTINGS frame: a client that then never asks anything.
    h2c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    assert!(
        closed_within(&mut silent, WAIT).await,
        "a silent TCP peer stayed open"
    );
    assert!(
        closed_within(&mut h2c, WAIT).await,
        "an idle h2c connection stayed open"
    );
    // An h2c connection idle after one request: closed by the idle timeout (or the unanswered
    // keep-alive ping), not held for good.
    let idle = limiter(&["--header-timeout-ms", "300", "--idle-timeout-ms", "1000"]).await;
    let mut h2c = tokio::net::TcpStream::connect(idle.addr).await.unwrap();
    h2c.write_all(H2C_GET_HEALTHZ).await.unwrap();
    // Everything the server sends until it closes: it must close, and have answered.
    let mut out = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(&mut h2c, &mut out);
    assert!(
        tokio::time::timeout(WAIT, read).await.is_ok(),
        "an h2c connection idle after a request stayed open"
    );
    let mut frames = out.as_slice();
    let mut answered = false;
    while frames.len() >= 9 {
        let len =
            usize::from(frames[0]) << 16 | usize::from(frames[1]) << 8 | usize::from(frames[2]);
        let stream = u32::from_be_bytes([frames[5], frames[6], frames[7], frames[8]]) & 0x7fff_ffff;
        answered |= frames[3] == 0x01 && stream == 1;
        frames = &frames[(9 + len).min(frames.len())..];
    }
    assert!(answered, "no HEADERS answer on stream 1: {out:?}");

    let pki = Pki::new().unwrap();
    let mut args = pki.limiter_args();
    args.extend(["--header-timeout-ms".to_owned(), "300".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let tls = limiter(&args).await;
    let mut no_hello = tokio::net::TcpStream::connect(tls.addr).await.unwrap();
    let mut handshaken = tls_connect(tls.addr, &pki, Some(("client.pem", "client.key")))
        .await
        .unwrap();
    assert!(
        closed_within(&mut no_hello, WAIT).await,
        "a silent TLS peer stayed open"
    );
    assert!(
        closed_within(&mut handshaken, WAIT).await,
        "a TLS peer that asked nothing after the handshake stayed open"
    );
    // The callers that do ask are served as before.
    let ok = tls_check(tls.addr, &pki, Some(("client.pem", "client.key")))
        .await
        .unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

/// Issue 27, medium 3: connections that are not authenticated hold no served slot. Before,
/// any 4 connections that sent nothing took all of `--max-connections 4` and a caller with
/// the right certificate was closed on accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unauthenticated_connections_cannot_take_the_served_slots() {
    let pki = Pki::new().unwrap();
    let mut args = pki.limiter_args();
    args.extend(["--max-connections", "4", "--header-timeout-ms", "10000"].map(str::to_owned));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let l = limiter(&args).await;
    let mut silent = Vec::new();
    for _ in 0..40 {
        if let Ok(s) = connect_from([127, 0, 0, 2], l.addr).await {
            silent.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for round in 0..3 {
        let ok = tls_check(l.addr, &pki, Some(("client.pem", "client.key"))).await;
        assert!(
            ok.as_ref().is_ok_and(|a| a.starts_with("HTTP/1.1 200")),
            "round {round}: a caller with the right certificate was not served: {ok:?}"
        );
    }
    drop(silent);
}

/// One peer may have only its share of the unauthenticated slots (`--max-pending-per-peer`)
/// read at once: more of its connections wait unread for a slot (as many as there are pending
/// slots), the rest are closed on accept, and other peers still get theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_peer_holds_at_most_its_share_of_unauthenticated_slots() {
    use tokio::io::AsyncWriteExt;
    let l = limiter(&[
        "--max-pending-connections",
        "8",
        "--max-pending-per-peer",
        "3",
        "--header-timeout-ms",
        "10000",
    ])
    .await;
    let mut greedy = Vec::new();
    for _ in 0..20 {
        greedy.push(connect_from([127, 0, 0, 2], l.addr).await.unwrap());
    }
    let mut other = Vec::new();
    for _ in 0..3 {
        other.push(connect_from([127, 0, 0, 3], l.addr).await.unwrap());
    }
    // 3 read, 8 waiting; the other 9 closed at once.
    let mut open = Vec::new();
    for mut s in greedy {
        if !closed_within(&mut s, Duration::from_millis(200)).await {
            open.push(s);
        }
    }
    assert_eq!(
        open.len(),
        11,
        "the greedy peer holds {} connections",
        open.len()
    );
    for s in other.iter_mut() {
        assert!(
            !closed_within(s, Duration::from_millis(200)).await,
            "another peer's connection was refused"
        );
    }
    let (status, v, _) = post(&l, &body("{share}", 5)).await;
    assert_eq!((status, v["allowed"].as_bool()), (200, Some(true)));
    // A waiting connection is not read: its request is answered only once the peer's other
    // connections are gone and it gets a slot.
    let mut waiting = open.pop().unwrap();
    let b = body("{waited}", 5).to_string();
    let req = format!(
        "POST /v1/check HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{b}",
        b.len()
    );
    waiting.write_all(req.as_bytes()).await.unwrap();
    let mut buf = [0u8; 512];
    let early = tokio::time::timeout(
        Duration::from_millis(300),
        tokio::io::AsyncReadExt::read(&mut waiting, &mut buf),
    )
    .await;
    assert!(
        early.is_err(),
        "a connection over its peer's share was read: {early:?}"
    );
    drop(open);
    let n = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::io::AsyncReadExt::read(&mut waiting, &mut buf),
    )
    .await
    .expect("the waiting connection was never served")
    .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// In plain HTTP a connection takes a served slot with its first request header; with none
/// free that request is answered 503 (never counted) and the connection closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn past_the_served_slots_a_plain_request_gets_503() {
    let l = limiter(&["--max-connections", "1"]).await;
    // The harness's readiness probe held the slot a moment ago: wait until it is back.
    let mut first = None;
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(l.addr).await.unwrap();
        if one_check(&mut s).await.starts_with("HTTP/1.1 200") {
            first = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut first = first.expect("the only slot never came free");
    let mut second = tokio::net::TcpStream::connect(l.addr).await.unwrap();
    let refused = one_check(&mut second).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused.to_ascii_lowercase().contains("retry-after: 1"),
        "{refused}"
    );
    assert!(closed_within(&mut second, Duration::from_secs(3)).await);
    // The slot is the first connection's until it closes.
    assert!(one_check(&mut first).await.starts_with("HTTP/1.1 200"));
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = tokio::net::TcpStream::connect(l.addr).await.unwrap();
    assert!(one_check(&mut third).await.starts_with("HTTP/1.1 200"));
}

/// SIGTERM stops the service within its shutdown deadline even with clients that never finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_has_a_deadline() {
    let mut l = limiter(&[
        "--header-timeout-ms",
        "60000",
        "--shutdown-timeout-ms",
        "500",
    ])
    .await;
    let _slow = half_headers(l.addr, 20).await;
    let started = Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &l.proc.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let (status, log) = l.proc.wait_exit(Duration::from_secs(5)).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?} to stop ({status}):\n{log}",
        started.elapsed()
    );
    assert!(log.contains("draining connections"), "{log}");
}

/// `--log-format json` writes one JSON object a line; text logs carry no colour codes when
/// they do not go to a terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logs_are_json_lines_or_plain_text() {
    let json_limiter = limiter(&["--log-format", "json"]).await;
    let _ = post(&json_limiter, &body("{log}", 5)).await;
    let log = json_limiter.proc.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    let text = limiter(&[]).await;
    let log = text.proc.log();
    assert!(log.contains("apiguard-limiter serving"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );
}

/// A TLS connection to the limiter, presenting `client` (certificate and key file names of the
/// PKI) or no certificate, once the handshake is done.
async fn tls_connect(
    addr: std::net::SocketAddr,
    pki: &apiguard_e2e::certs::Pki,
    client: Option<(&str, &str)>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pki.path(cert))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = PrivateKeyDer::from_pem_file(pki.path(key)).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(apiguard_e2e::certs::LIMITER_NAME).unwrap();
    connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())
}

/// Sends one check over TLS, presenting `client` (certificate and key file names of the PKI)
/// or no certificate; the raw HTTP answer, or why the exchange failed.
async fn tls_check(
    addr: std::net::SocketAddr,
    pki: &apiguard_e2e::certs::Pki,
    client: Option<(&str, &str)>,
) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = tls_connect(addr, pki, client).await?;
    let body = body("{tls}", 5).to_string();
    let req = format!(
        "POST /v1/check HTTP/1.1\r\nhost: limiter.test\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// With mutual TLS only a caller presenting a certificate from the client CA is served: no
/// certificate, a stranger's certificate and plain HTTP are all refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_callers_with_a_client_certificate_are_served() {
    let pki = apiguard_e2e::certs::Pki::new().unwrap();
    let args = pki.limiter_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let l = limiter(&args).await;
    let ok = tls_check(l.addr, &pki, Some(("client.pem", "client.key")))
        .await
        .unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.contains(r#""allowed":true"#), "{ok}");
    for client in [None, Some(("stranger.pem", "stranger.key"))] {
        let refused = tls_check(l.addr, &pki, client).await;
        assert!(
            refused
                .as_ref()
                .map_or(true, |r| !r.contains("HTTP/1.1 200")),
            "{client:?} was served: {refused:?}"
        );
    }
    let plain = reqwest::Client::new()
        .post(format!("http://{}/v1/check", l.addr))
        .json(&body("{plain}", 5))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was served: {plain:?}");
    assert!(
        l.proc.log().contains("transport=\"mutual TLS\""),
        "{}",
        l.proc.log()
    );
}

/// Plain HTTP is refused on an address other machines can reach, unless asked for.
#[test]
fn plain_http_off_loopback_is_refused() {
    let out = std::process::Command::new(BIN)
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("refusing plain HTTP on 0.0.0.0:0"), "{text}");
    let half = std::process::Command::new(BIN)
        .args(["--tls-cert", "/nonexistent.pem"])
        .output()
        .unwrap();
    assert!(!half.status.success());
}

/// A client that sends its header but trickles (here: never sends) the body it announced gets
/// 408 once the request timeout passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_body_gets_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = limiter(&["--request-timeout-ms", "300"]).await;
    let mut s = tokio::net::TcpStream::connect(l.addr).await.unwrap();
    s.write_all(b"POST /v1/check HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{")
        .await
        .unwrap();
    let started = Instant::now();
    let mut out = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut out))
        .await
        .expect("no answer to a stalled body")
        .unwrap();
    let answer = String::from_utf8_lossy(&out[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// `apiguard-limiter --ready-check --listen <addr>` (the production image's HEALTHCHECK):
/// its exit status and what it printed.
fn ready_check(listen: &str) -> (bool, String) {
    let out = std::process::Command::new(BIN)
        .args(["--ready-check", "--listen", listen])
        .env_remove("APIGUARD_LIMITER_LISTEN")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ready_check_follows_readyz() {
    let mut redis = Redis::start().unwrap();
    let l = limiter(&["--redis", &redis.url(), "--redis-timeout-ms", "200"]).await;
    let listen = l.addr.to_string();
    let (ok, err) = ready_check(&listen);
    assert!(ok, "{err}");
    // The unspecified address is asked through loopback.
    let (ok, err) = ready_check(&format!("0.0.0.0:{}", l.addr.port()));
    assert!(ok, "{err}");

    // Redis gone: /readyz is 503, and so the check fails and says what it got.
    redis.proc.kill();
    let (ok, err) = ready_check(&listen);
    assert!(!ok);
    assert!(err.contains("503"), "{err}");

    // Nothing listening: the check fails and names the address.
    drop(l);
    let port = apiguard_e2e::free_port().unwrap();
    let (ok, err) = ready_check(&format!("127.0.0.1:{port}"));
    assert!(!ok);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}

/// The `--redis-tls-*` flags for `pki`: its CA, its client certificate, and a server name.
fn redis_tls_args(pki: &Pki, server_name: Option<&str>) -> Vec<String> {
    let p = |n: &str| pki.path(n).display().to_string();
    let mut args = vec![
        "--redis-tls-ca".to_owned(),
        p("ca.pem"),
        "--redis-tls-cert".into(),
        p("client.pem"),
        "--redis-tls-key".into(),
        p("client.key"),
    ];
    if let Some(name) = server_name {
        args.extend(["--redis-tls-server-name".into(), name.to_owned()]);
    }
    args
}

/// `rediss://` to a real `redis-server` serving TLS only and asking for client certificates:
/// served with the CA, the client certificate and (for an IP in the URL) either the IP or the
/// certificate's DNS name; refused (503, never "allowed") with a wrong name, the system's roots,
/// no client certificate, or one from another CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rediss_checks_the_server_and_presents_a_client_certificate() {
    let pki = Pki::new().unwrap();
    let redis = Redis::start_tls(&pki, &["--tls-auth-clients", "yes"]).unwrap();
    let url = redis.url();
    assert!(url.starts_with("rediss://127.0.0.1:"), "{url}");
    let start = |extra: Vec<String>| {
        let mut args = vec![
            "--redis".to_owned(),
            url.clone(),
            "--redis-timeout-ms".into(),
            "2000".into(),
        ];
        args.extend(extra);
        async move { Limiter::start_bin(Path::new(BIN), &args).await.unwrap() }
    };
    for name in [None, Some(apiguard_e2e::certs::LIMITER_NAME)] {
        let l = start(redis_tls_args(&pki, name)).await;
        assert_eq!(ready(&l).await, 200, "{name:?}: {}", l.proc.log());
        assert_eq!(
            storm(&[&l], &format!("{{tls-{name:?}}}"), 5, 12).await,
            (5, 7, vec![])
        );
    }
    let p = |n: &str| pki.path(n).display().to_string();
    let refused: Vec<(&str, Vec<String>)> = vec![
        (
            "a name the certificate does not carry",
            redis_tls_args(&pki, Some("redis.other.test")),
        ),
        (
            "the system's roots",
            vec![
                "--redis-tls-cert".into(),
                p("client.pem"),
                "--redis-tls-key".into(),
                p("client.key"),
            ],
        ),
        (
            "no client certificate",
            vec!["--redis-tls-ca".into(), p("ca.pem")],
        ),
        (
            "a client certificate from another CA",
            vec![
                "--redis-tls-ca".into(),
                p("ca.pem"),
                "--redis-tls-cert".into(),
                p("stranger.pem"),
                "--redis-tls-key".into(),
                p("stranger.key"),
            ],
        ),
    ];
    for (what, args) in refused {
        let l = start(args).await;
        assert_eq!(ready(&l).await, 503, "{what}: {}", l.proc.log());
        let (status, _, _) = post(&l, &body("{tls-refused}", 5)).await;
        assert_eq!(status, 503, "{what}");
    }
    // Through the certificate's name, the connection is opened again after Redis restarts.
    let l = start(redis_tls_args(
        &pki,
        Some(apiguard_e2e::certs::LIMITER_NAME),
    ))
    .await;
    assert_eq!(ready(&l).await, 200);
    let port = redis.port();
    drop(redis);
    assert_eq!(post(&l, &body("{tls-restart}", 5)).await.0, 503);
    let _redis = Redis::start_tls_on(port, &pki, &["--tls-auth-clients", "yes"]).unwrap();
    let started = Instant::now();
    while post(&l, &body("{tls-restart}", 5)).await.0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            l.proc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// TLS options that cannot work stop the start, naming the problem.
#[test]
fn tls_options_that_cannot_work_stop_the_start() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(BIN).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let refusals: [(&[&str], &str); 4] = [
        (
            &[
                "--redis",
                "redis://127.0.0.1:1",
                "--redis-tls-ca",
                "/etc/hostname",
            ],
            "the URL is not rediss://",
        ),
        (
            &["--redis", "rediss://127.0.0.1:1/#insecure"],
            "`#insecure`",
        ),
        (
            &[
                "--redis-cluster",
                "rediss://127.0.0.1:1",
                "--redis-tls-server-name",
                "x",
            ],
            "single node",
        ),
        (
            &[
                "--redis",
                "rediss://127.0.0.1:1",
                "--redis-tls-ca",
                "/nonexistent.pem",
            ],
            "--redis-tls-ca /nonexistent.pem",
        ),
    ];
    for (args, want) in refusals {
        let text = run(args);
        assert!(text.contains(want), "{args:?}: {text}");
    }
}

/// A Redis Cluster whose nodes serve TLS only: two limiters over `rediss://` seeds stay exact
/// across slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_cluster_over_tls_is_exact() {
    let pki = Pki::new().unwrap();
    let cluster = RedisCluster::start_tls(3, &pki).unwrap();
    let seeds = cluster.urls().join(",");
    assert!(seeds.starts_with("rediss://"), "{seeds}");
    let mut args: Vec<String> = vec![
        "--redis-cluster".into(),
        seeds,
        "--redis-timeout-ms".into(),
        "5000".into(),
    ];
    args.extend(redis_tls_args(&pki, None));
    let a = Limiter::start_bin(Path::new(BIN), &args).await.unwrap();
    let b = Limiter::start_bin(Path::new(BIN), &args).await.unwrap();
    for key in ["{alpha}", "{bravo}", "{charlie}"] {
        assert_eq!(
            storm(&[&a, &b], key, 20, 60).await,
            (20, 40, vec![]),
            "{key}"
        );
    }
    assert_eq!(ready(&a).await, 200);
}

/// `apiguard-limiter --version` and its `build_info` metric name the version and git revision
/// it was built from, as `apiguard --version` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_version_and_revision_are_the_clis() {
    let out = std::process::Command::new(BIN)
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("apiguard-limiter {}\n", apiguard_buildinfo::LONG_VERSION)
    );
    assert_ne!(apiguard_buildinfo::REVISION, "");
    let l = limiter(&[]).await;
    let metrics = metrics_text(&l).await;
    let line = format!(
        "apiguard_limiter_build_info{{version=\"{}\",revision=\"{}\"}} 1",
        apiguard_buildinfo::VERSION,
        apiguard_buildinfo::REVISION
    );
    assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    assert!(
        l.proc
            .log()
            .contains(&format!("revision=\"{}\"", apiguard_buildinfo::REVISION))
            || l.proc
                .log()
                .contains(&format!("revision={}", apiguard_buildinfo::REVISION)),
        "{}",
        l.proc.log()
    );
}

/// `GET /healthz` on HTTP/2 stream `id`, HPACK without the dynamic table (so any number may
/// be sent on one connection): `:method GET`, `:scheme http`, `:path` and `:authority`
/// literals.
fn h2_get_healthz(id: u32) -> Vec<u8> {
    let mut frame = b"\x00\x00\x0f\x01\x05".to_vec();
    frame.extend_from_slice(&id.to_be_bytes());
    frame.extend_from_slice(b"\x82\x86\x04\x08/healthz\x01\x01x");
    frame
}

/// A review of the slot fix: a peer that never takes its answer (here an HTTP/2 stream window
/// of zero, so not one byte of the body can be sent) held its connection, and so its served
/// slot, for good: a request in flight had no deadline. It is closed within the request
/// timeout plus the header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_that_never_takes_its_answer_is_closed() {
    use tokio::io::AsyncWriteExt;
    let l = limiter(&["--header-timeout-ms", "300", "--request-timeout-ms", "300"]).await;
    let mut h2c = tokio::net::TcpStream::connect(l.addr).await.unwrap();
    // The preface, SETTINGS with INITIAL_WINDOW_SIZE (0x4) = 0, and one request.
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x04\x00\x00\x00\x00".to_vec();
    hello.extend(h2_get_healthz(1));
    h2c.write_all(&hello).await.unwrap();
    assert!(
        closed_within(&mut h2c, Duration::from_secs(3)).await,
        "a peer that never took its answer kept its connection"
    );
}

/// A plain-HTTP/2 connection refused at the cap (503) keeps its pending slot no longer than
/// the header timeout from its first refusal, however often it asks again (each request and
/// answer leaves that deadline where it is).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_refused_at_the_cap_cannot_keep_its_pending_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = limiter(&["--header-timeout-ms", "500", "--max-connections", "1"]).await;
    // The one served slot, held by an idle connection after its request.
    let mut holder = tokio::net::TcpStream::connect(l.addr).await.unwrap();
    holder.write_all(H2C_GET_HEALTHZ).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut refused = tokio::net::TcpStream::connect(l.addr).await.unwrap();
    refused.write_all(H2C_GET_HEALTHZ).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let mut id = 3;
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a connection refused at the cap kept its slot by asking again"
        );
        // A request every 200 ms, under the 500 ms deadline that each answer used to re-arm.
        let _ = refused.write_all(&h2_get_healthz(id)).await;
        id += 2;
        match tokio::time::timeout(Duration::from_millis(200), refused.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            _ => {}
        }
    }
    drop(holder);
}
