//! Redis store: every limiter replica shares the windows, so a limit holds across all of them.
//!
//! One call is one `EVALSHA` of `check.lua` (the `redis` crate loads the script again when
//! Redis answers `NOSCRIPT`, e.g. after a restart or `SCRIPT FLUSH`). Single node through a
//! multiplexed `ConnectionManager` (reconnects by itself after Redis comes back), Redis Cluster
//! through the crate's async cluster client.

use std::time::Duration;

use apiguard::limiter_api::{hash_tag, Algorithm, Check, CheckResult};
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use tokio::sync::OnceCell;

use super::{Decision, Store, StoreError};

/// See the contract at the top of the script.
const CHECK_LUA: &str = include_str!("check.lua");

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

pub struct RedisStore {
    target: RedisTarget,
    /// Connected lazily, so the service starts (and says it is not ready) while Redis is down.
    conn: OnceCell<Conn>,
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

    async fn conn(&self) -> Result<Conn, StoreError> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                match &self.target {
                    RedisTarget::Single(url) => {
                        let client = redis::Client::open(url.as_str())?;
                        let config = redis::aio::ConnectionManagerConfig::new()
                            .set_connection_timeout(Some(self.timeout))
                            .set_response_timeout(Some(self.timeout))
                            .set_number_of_retries(1);
                        let cm = ConnectionManager::new_with_config(client, config).await?;
                        Ok::<_, StoreError>(Conn::Single(cm))
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
            })
            .await?;
        Ok(conn.clone())
    }
}

/// The Redis key of one check. The call's common hash tag goes first, so Redis Cluster puts
/// every key of the call in one slot (the script touches them all atomically).
fn redis_key(c: &Check) -> String {
    let algo = match c.algorithm {
        Algorithm::Log => "log",
        Algorithm::Counter => "counter",
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
        let mut inv = self.script.prepare_invoke();
        inv.arg(uuid::Uuid::new_v4().simple().to_string());
        for c in checks {
            let algo = match c.algorithm {
                Algorithm::Log => "log",
                Algorithm::Counter => "counter",
            };
            inv.key(redis_key(c))
                .arg(algo)
                .arg(c.limit)
                .arg(c.window_ms)
                .arg(c.cost);
        }
        let reply: Vec<i64> = match self.conn().await? {
            Conn::Single(mut cm) => inv.invoke_async(&mut cm).await?,
            Conn::Cluster(mut cc) => inv.invoke_async(&mut cc).await?,
        };
        parse_reply(checks, &reply)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let pong: String = match self.conn().await? {
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
            algorithm: Algorithm::Counter,
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
