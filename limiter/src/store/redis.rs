//! Redis store: every limiter replica shares the windows, so a limit holds across all of them.
//!
//! One call is one `EVALSHA` of `check.lua` (the `redis` crate loads the script again when
//! Redis answers `NOSCRIPT`, e.g. after a restart or `SCRIPT FLUSH`). Single node through a
//! multiplexed `ConnectionManager` (reconnects by itself after Redis comes back), Redis Cluster
//! through the crate's async cluster client. `rediss://` URLs connect over TLS (rustls), with
//! the CA, client certificate and server name of [`RedisTls`].

use std::time::Duration;

use apiguard_limiter_api::{hash_tag, Check, CheckResult};
use std::sync::Arc;

use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use tokio::sync::OnceCell;

use super::common::{unix_ms, Decision, Store, StoreError};

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

/// TLS to Redis, for `rediss://` URLs (docs/limiter.md, "Redis over TLS"). Without a CA the
/// system's roots are trusted; the server's certificate must always name the host (or
/// `server_name`): hostname checks cannot be turned off.
#[derive(Clone, Default)]
pub struct RedisTls {
    /// PEM certificates of the CA(s) that sign Redis's certificate.
    pub ca_pem: Option<Vec<u8>>,
    /// A client certificate chain and its key (PEM), for Redis's `tls-auth-clients`.
    pub client_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// The name Redis's certificate must carry, when it is not the URL's host (say an IP
    /// address in the URL, a DNS name in the certificate). Single node only.
    pub server_name: Option<String>,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.client_pem.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl RedisTls {
    fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self
                .client_pem
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca_pem.clone(),
        }
    }
}

/// Why a Redis target was refused at start.
#[derive(Debug, thiserror::Error)]
pub enum RedisConfigError {
    #[error("{url}: {error}")]
    Url {
        url: String,
        error: ::redis::RedisError,
    },
    #[error("{0}: TLS options are set but the URL is not rediss://")]
    NotTls(String),
    #[error("{0}: `#insecure` turns off the check of Redis's certificate name; name the certificate's host with --redis-tls-server-name instead")]
    Insecure(String),
    #[error("--redis-tls-server-name applies to a single node; Cluster nodes are reached at the addresses they announce, which their certificates must carry")]
    ServerNameWithCluster,
    #[error("the Cluster's seed nodes mix redis:// and rediss://")]
    MixedSchemes,
}

/// Resolves the certificate's name to the URL's real host, so rustls checks the name while
/// the connection goes where the URL says.
struct Renamed {
    name: String,
    real: String,
}

impl redis::io::AsyncDNSResolver for Renamed {
    fn resolve<'a, 'b: 'a>(
        &'a self,
        host: &'b str,
        port: u16,
    ) -> redis::RedisFuture<'a, Box<dyn Iterator<Item = std::net::SocketAddr> + Send + 'a>> {
        let target = if host == self.name {
            self.real.clone()
        } else {
            host.to_owned()
        };
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((target.as_str(), port))
                .await?
                .collect();
            Ok(Box::new(addrs.into_iter())
                as Box<dyn Iterator<Item = std::net::SocketAddr> + Send>)
        })
    }
}

fn is_tls(info: &redis::ConnectionInfo) -> bool {
    matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. })
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    /// A single node whose certificate names another host than the URL's: the connection
    /// manager has no resolver hook, so a multiplexed connection is opened through [`Renamed`]
    /// and opened again once it breaks.
    Renamed(Arc<RenamedConn>),
    Cluster(ClusterConnection),
}

struct RenamedConn {
    client: redis::Client,
    config: redis::AsyncConnectionConfig,
    /// The open connection and its generation, so a failure on an older one does not close a
    /// connection opened since.
    current: tokio::sync::Mutex<(u64, Option<MultiplexedConnection>)>,
}

impl RenamedConn {
    /// The open connection and its generation, or a new one (one connection attempt at a
    /// time).
    async fn get(&self) -> redis::RedisResult<(u64, MultiplexedConnection)> {
        let mut current = self.current.lock().await;
        if let (generation, Some(c)) = &*current {
            return Ok((*generation, c.clone()));
        }
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        current.0 += 1;
        current.1 = Some(c.clone());
        Ok((current.0, c))
    }

    /// Forgets connection `generation` when it broke (not on a slow reply: a response timeout
    /// leaves a multiplexed connection usable), so the next call opens another.
    async fn failed<T>(&self, generation: u64, r: redis::RedisResult<T>) -> redis::RedisResult<T> {
        if let Err(e) = &r {
            if e.is_connection_dropped() || e.is_unrecoverable_error() {
                let mut current = self.current.lock().await;
                if current.0 == generation {
                    current.1 = None;
                }
            }
        }
        r
    }
}

impl Conn {
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match self.clone() {
            Conn::Single(mut cm) => cmd.query_async(&mut cm).await,
            Conn::Renamed(r) => {
                let (generation, mut c) = r.get().await?;
                r.failed(generation, cmd.query_async(&mut c).await).await
            }
            Conn::Cluster(mut cc) => cmd.query_async(&mut cc).await,
        }
    }

    async fn invoke(&self, inv: &redis::ScriptInvocation<'_>) -> redis::RedisResult<Vec<i64>> {
        match self.clone() {
            Conn::Single(mut cm) => inv.invoke_async(&mut cm).await,
            Conn::Renamed(r) => {
                let (generation, mut c) = r.get().await?;
                r.failed(generation, inv.invoke_async(&mut c).await).await
            }
            Conn::Cluster(mut cc) => inv.invoke_async(&mut cc).await,
        }
    }
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

pub struct RedisStore {
    target: RedisTarget,
    tls: RedisTls,
    /// Connected lazily, so the service starts (and says it is not ready) while Redis is down.
    conn: OnceCell<Connected>,
    script: redis::Script,
    timeout: Duration,
}

impl RedisStore {
    /// A single node through the connection manager, which reconnects by itself.
    async fn managed(&self, client: redis::Client) -> Result<Conn, StoreError> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let cm = ConnectionManager::new_with_config(client, config).await?;
        Ok(Conn::Single(cm))
    }

    /// `timeout` bounds connecting and each reply; the service adds its own overall deadline.
    pub fn new(target: RedisTarget, timeout: Duration) -> Self {
        RedisStore {
            target,
            tls: RedisTls::default(),
            conn: OnceCell::new(),
            script: redis::Script::new(CHECK_LUA),
            timeout,
        }
    }

    /// Like [`RedisStore::new`], with TLS options for `rediss://`; checks the URLs now, so a
    /// mistake stops the start instead of failing every check.
    pub fn with_tls(
        target: RedisTarget,
        timeout: Duration,
        tls: Option<RedisTls>,
    ) -> Result<Self, RedisConfigError> {
        let urls = match &target {
            RedisTarget::Single(u) => std::slice::from_ref(u),
            RedisTarget::Cluster(nodes) => nodes.as_slice(),
        };
        let mut schemes = Vec::new();
        for url in urls {
            let info =
                redis::IntoConnectionInfo::into_connection_info(url.as_str()).map_err(|error| {
                    RedisConfigError::Url {
                        url: redact(url),
                        error,
                    }
                })?;
            if matches!(
                info.addr(),
                redis::ConnectionAddr::TcpTls { insecure: true, .. }
            ) {
                return Err(RedisConfigError::Insecure(redact(url)));
            }
            if tls.is_some() && !is_tls(&info) {
                return Err(RedisConfigError::NotTls(redact(url)));
            }
            schemes.push(is_tls(&info));
        }
        if schemes.windows(2).any(|w| w[0] != w[1]) {
            return Err(RedisConfigError::MixedSchemes);
        }
        let tls = tls.unwrap_or_default();
        if tls.server_name.is_some() && matches!(target, RedisTarget::Cluster(_)) {
            return Err(RedisConfigError::ServerNameWithCluster);
        }
        let mut store = RedisStore::new(target, timeout);
        store.tls = tls;
        Ok(store)
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
                let info = info.set_tcp_settings(tcp);
                if !is_tls(&info) {
                    return self.managed(redis::Client::open(info)?).await;
                }
                let certs = self.tls.certificates();
                let Some(name) = &self.tls.server_name else {
                    return self
                        .managed(redis::Client::build_with_tls(info, certs)?)
                        .await;
                };
                // The certificate is checked for `server_name`; the connection still goes to
                // the URL's host.
                let mut addr = info.addr().clone();
                let mut real = String::new();
                if let redis::ConnectionAddr::TcpTls { host, .. } = &mut addr {
                    real = std::mem::replace(host, name.clone());
                }
                let client = redis::Client::build_with_tls(info.set_addr(addr), certs)?;
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_dns_resolver(Renamed {
                        name: name.clone(),
                        real,
                    });
                let renamed = Arc::new(RenamedConn {
                    client,
                    config,
                    current: tokio::sync::Mutex::new((0, None)),
                });
                renamed.get().await?;
                Ok(Conn::Renamed(renamed))
            }
            RedisTarget::Cluster(nodes) => {
                let mut builder = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(self.timeout)
                    .response_timeout(self.timeout)
                    .retries(1);
                let tls = nodes.first().is_some_and(|n| {
                    redis::IntoConnectionInfo::into_connection_info(n.as_str())
                        .is_ok_and(|info| is_tls(&info))
                });
                if tls {
                    builder = builder.certs(self.tls.certificates());
                }
                let client = builder.build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }
}

/// How far Redis's clock (`TIME`) is ahead of this host's, in ms, taking the reply as read at
/// the midpoint of the round trip.
async fn clock_offset(conn: &Conn) -> Result<i64, StoreError> {
    let before = unix_ms();
    let (secs, micros): (i64, i64) = conn.query(&redis::cmd("TIME")).await?;
    let midpoint = before + (unix_ms() - before) / 2;
    Ok(secs * 1000 + micros / 1000 - midpoint)
}

/// The Redis key of one check. The call's common hash tag goes first, so Redis Cluster puts
/// every key of the call in one slot (the script touches them all atomically).
fn redis_key(c: &Check) -> String {
    format!(
        "apiguard:{{{}}}:{}:{}:{}",
        hash_tag(&c.key),
        c.algorithm.as_str(),
        c.window_ms,
        c.key
    )
}

impl Store for RedisStore {
    async fn check(&self, checks: &[Check]) -> Result<Decision, StoreError> {
        let connected = self.conn().await?;
        let timeout_ms = i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX);
        let deadline = unix_ms()
            .saturating_add(connected.offset_ms)
            .saturating_add(timeout_ms)
            .saturating_add(LATE_SLACK_MS);
        let mut inv = self.script.prepare_invoke();
        inv.arg(uuid::Uuid::new_v4().simple().to_string());
        inv.arg(deadline);
        for c in checks {
            inv.key(redis_key(c))
                .arg(c.algorithm.as_str())
                .arg(c.limit)
                .arg(c.window_ms)
                .arg(c.cost);
        }
        let reply = match connected.conn.invoke(&inv).await {
            // A connection dropped while idle (a NAT or load-balancer timeout, Redis's own
            // `timeout`) fails the first command written to it, which Redis never received:
            // the script did not run, so one retry on the connection the manager opens anew
            // costs no quota twice. (Were the drop to fall between the script and its reply,
            // the retry would count the call twice: a refusal too many, never one too few.)
            Err(e) if e.is_connection_dropped() && !e.is_timeout() => {
                self.conn().await?.conn.invoke(&inv).await?
            }
            other => other?,
        };
        parse_reply(checks, &reply)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let pong: String = self.conn().await?.conn.query(&redis::cmd("PING")).await?;
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

/// A Redis URL as logs may show it: no user information (`redis://user:secret@host`, or
/// `user:secret@host` without a scheme → `host`) and no `pass` in the query (unix sockets:
/// `redis+unix:///s?pass=secret` → `pass=<redacted>`). Everything up to the last `@` goes,
/// since a password may itself hold `@`, `/`, `?` or `://`; a query's password first, since it
/// may hold `@`. What is left is a place, never a secret, even for a URL Redis would refuse.
fn redact(url: &str) -> String {
    let url = redact_query(url);
    // A scheme is letters, digits, `+`, `-` and `.` (RFC 3986); anything else before `://` is
    // part of the credentials.
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r))
            if !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            (Some(s), r)
        }
        _ => (None, url.as_str()),
    };
    let place = rest.rfind('@').map_or(rest, |at| &rest[at + 1..]);
    match scheme {
        Some(s) => format!("{s}://{place}"),
        None => place.to_owned(),
    }
}

/// The values of `pass` and `password` in a URL's query replaced by `<redacted>`.
fn redact_query(url: &str) -> String {
    let Some((before, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _))
                if k.eq_ignore_ascii_case("pass") || k.eq_ignore_ascii_case("password") =>
            {
                format!("{k}=<redacted>")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{before}?{}", pairs.join("&"))
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
    use apiguard_limiter_api::LimitAlgorithm;

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
        assert_eq!(redact("rediss://:p@h:1"), "rediss://h:1");
        assert_eq!(redact("h:1"), "h:1");
    }

    /// Issue 27, low 8: a URL without `://` was logged whole, password included.
    #[test]
    fn credentials_are_redacted_whatever_the_urls_shape() {
        for (url, shown) in [
            ("user:s3cret@h:6379", "h:6379"),
            (":s3cret@h:6379/0", "h:6379/0"),
            ("redis://u:s3c@ret@h:1", "redis://h:1"),
            ("redis://u:s3c/r?et@h:1", "redis://h:1"),
            ("u:s3cret://x@h:1", "h:1"),
            (
                "redis+unix:///run/r.sock?db=1&pass=s3c@ret",
                "redis+unix:///run/r.sock?db=1&pass=<redacted>",
            ),
            (
                "unix:///run/r.sock?PASSWORD=s3cret&user=u",
                "unix:///run/r.sock?PASSWORD=<redacted>&user=u",
            ),
        ] {
            let r = redact(url);
            assert_eq!(r, shown, "{url}");
            assert!(!r.contains("s3c") && !r.contains("ret"), "{url} → {r}");
        }
    }
}
