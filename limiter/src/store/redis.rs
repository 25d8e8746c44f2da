//! Redis store: every limiter replica shares the windows, so a limit holds across all of them.
//!
//! One call is one `EVALSHA` of `check.lua` (the `redis` crate loads the script again when
//! Redis answers `NOSCRIPT`, e.g. after a restart or `SCRIPT FLUSH`). Single node through a
//! multiplexed `ConnectionManager` (reconnects by itself after Redis comes back), Redis Cluster
//! through the crate's async cluster client.

use std::time::Duration;

use apiguard_limiter_api::{hash_tag, Check, CheckResult, LimitAlgorithm};
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use tokio::sync::OnceCell;

use super::{Decision, Store, StoreError};

/// See the contract at the top of the script.
const CHECK_LUA: &str = include_str!("check.lua");

/// Idle time before TCP keepalive probes, and between them.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// Where Redis is.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    Single(String),
    Cluster(Vec<String>),
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// A connection and how far Redis's clock is ahead of this host's (ms), measured with `TIME`
/// when it was opened: the script's deadline is written in Redis's clock.
#[derive(Clone)]
struct Connected {
    conn: Conn,
    offset_ms: i64,
}

/// How long after its own deadline a call may still count in Redis: room for the two clocks
/// drifting apart after the offset was measured.
const LATE_SLACK_MS: i64 = 1_000;

fn local_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub struct RedisStore {
    target: RedisTarget,
    /// Connected lazily, so the service starts (and says it is not ready) while Redis is down.
    conn: OnceCell<Connected>,
    script: redis::Script,
    timeout: Duration,
}

impl RedisStore {
    /// `timeout` bounds connecting and each reply; the service adds its own overall deadline.
    pub fn new(target: RedisTarget, timeout: Duration) -> Self {
        RedisStore {
            target,
            conn: OnceCell::new(),
            script: redis::Script::new(CHECK_LUA),
            timeout,
        }
    }

    async fn conn(&self) -> Result<Connected, StoreError> {
        let connected = self
            .conn
            .get_or_try_init(|| async {
                let conn = self.open().await?;
                let offset_ms = clock_offset(&conn).await?;
                Ok::<_, StoreError>(Connected { conn, offset_ms })
            })
            .await?;
        Ok(connected.clone())
    }

    async fn open(&self) -> Result<Conn, StoreError> {
        match &self.target {
            RedisTarget::Single(url) => {
                // TCP keepalive notices a connection that a NAT, a load balancer or Redis's
                // `timeout` dropped while idle, instead of the next check.
                let keepalive = redis::io::tcp::socket2::TcpKeepalive::new()
                    .with_time(KEEPALIVE)
                    .with_interval(KEEPALIVE);
                let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())?;
                let tcp = info.tcp_settings().clone().set_keepalive(keepalive);
                let client = redis::Client::open(info.set_tcp_settings(tcp))?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1);
                let cm = ConnectionManager::new_with_config(client, config).await?;
                Ok(Conn::Single(cm))
            }
            RedisTarget::Cluster(nodes) => {
                let client = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(self.timeout)
                    .response_timeout(self.timeout)
                    .retries(1)
                    .build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }
}

/// How far Redis's clock (`TIME`) is ahead of this host's, in ms, taking the reply as read at
/// the midpoint of the round trip.
async fn clock_offset(conn: &Conn) -> Result<i64, StoreError> {
    let before = local_ms();
    let (secs, micros): (i64, i64) = match conn.clone() {
        Conn::Single(mut cm) => redis::cmd("TIME").query_async(&mut cm).await?,
        Conn::Cluster(mut cc) => redis::cmd("TIME").query_async(&mut cc).await?,
    };
    let midpoint = before + (local_ms() - before) / 2;
    Ok(secs * 1000 + micros / 1000 - midpoint)
}

/// The Redis key of one check. The call's common hash tag goes first, so Redis Cluster puts
/// every key of the call in one slot (the script touches them all atomically).
fn redis_key(c: &Check) -> String {
    let algo = match c.algorithm {
        LimitAlgorithm::Log => "log",
        LimitAlgorithm::Counter => "counter",
    };
    format!(
        "apiguard:{{{}}}:{algo}:{}:{}",
        hash_tag(&c.key),
        c.window_ms,
        c.key
    )
}

impl Store for RedisStore {
    async fn check(&self, checks: &[Check]) -> Result<Decision, StoreError> {
        let connected = self.conn().await?;
        let timeout_ms = i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX);
        let deadline = local_ms()
            .saturating_add(connected.offset_ms)
            .saturating_add(timeout_ms)
            .saturating_add(LATE_SLACK_MS);
        let mut inv = self.script.prepare_invoke();
        inv.arg(uuid::Uuid::new_v4().simple().to_string());
        inv.arg(deadline);
        for c in checks {
            let algo = match c.algorithm {
                LimitAlgorithm::Log => "log",
                LimitAlgorithm::Counter => "counter",
            };
            inv.key(redis_key(c))
                .arg(algo)
                .arg(c.limit)
                .arg(c.window_ms)
                .arg(c.cost);
        }
        let invoke = |conn: Conn| {
            let inv = &inv;
            async move {
                match conn {
                    Conn::Single(mut cm) => inv.invoke_async::<Vec<i64>>(&mut cm).await,
                    Conn::Cluster(mut cc) => inv.invoke_async::<Vec<i64>>(&mut cc).await,
                }
            }
        };
        let reply = match invoke(connected.conn).await {
            // A connection dropped while idle (a NAT or load-balancer timeout, Redis's own
            // `timeout`) fails the first command written to it, which Redis never received:
            // the script did not run, so one retry on the connection the manager opens anew
            // costs no quota twice. (Were the drop to fall between the script and its reply,
            // the retry would count the call twice: a refusal too many, never one too few.)
            Err(e) if e.is_connection_dropped() && !e.is_timeout() => {
                invoke(self.conn().await?.conn).await?
            }
            other => other?,
        };
        parse_reply(checks, &reply)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let pong: String = match self.conn().await?.conn {
            Conn::Single(mut cm) => redis::cmd("PING").query_async(&mut cm).await?,
            Conn::Cluster(mut cc) => redis::cmd("PING").query_async(&mut cc).await?,
        };
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError::BadReply(format!("PING answered {pong:?}")))
        }
    }

    fn describe(&self) -> String {
        match &self.target {
            RedisTarget::Single(url) => format!("redis {}", redact(url)),
            RedisTarget::Cluster(nodes) => format!(
                "redis cluster {}",
                nodes
                    .iter()
                    .map(|n| redact(n))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }
}

/// `redis://user:secret@host` → `redis://host`: URLs go into logs.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://{}", &url[at + 1..]),
        _ => url.to_owned(),
    }
}

fn parse_reply(checks: &[Check], reply: &[i64]) -> Result<Decision, StoreError> {
    if reply == [2] {
        return Err(StoreError::TooLate);
    }
    if reply.len() != 1 + 3 * checks.len() {
        return Err(StoreError::BadReply(format!(
            "{} values for {} checks",
            reply.len(),
            checks.len()
        )));
    }
    let nonneg = |v: i64| u64::try_from(v).unwrap_or(0);
    let results = checks
        .iter()
        .zip(reply[1..].chunks_exact(3))
        .map(|(c, r)| CheckResult {
            key: c.key.clone(),
            limit: c.limit,
            remaining: nonneg(r[0]),
            reset_ms: nonneg(r[1]),
            retry_after_ms: nonneg(r[2]),
        })
        .collect();
    Ok(Decision {
        allowed: reply[0] == 1,
        results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_lead_with_the_calls_hash_tag() {
        let c = Check {
            key: "{sub:u1}:route:auth".into(),
            limit: 1,
            window_ms: 1000,
            cost: 1,
            algorithm: LimitAlgorithm::Counter,
        };
        assert_eq!(
            redis_key(&c),
            "apiguard:{sub:u1}:counter:1000:{sub:u1}:route:auth"
        );
    }

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(redact("redis://u:p@h:1/0"), "redis://h:1/0");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }
}
