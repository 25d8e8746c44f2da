//! The demo stack (`just demo`, `just demo-check`): Redis (when installed), apiguard-limiter, the
//! sample API ([`crate::sample_api`]), a demo issuer serving a JWKS, and Envoy with
//! `envoy/demo.yaml` — all three apiguard stages on. Then a walkthrough of the scenarios a new
//! user wants to see, each checked against the answer it must get.

use std::net::SocketAddr;
use std::path::Path;

use apiguard_core::jose::Algorithm;
use apiguard_testkit::mint::{mint, SigningKey};
use serde_json::{json, Value};

use crate::keys::{now, signing_key};
use crate::serve::Server;
use crate::{repo_root, Envoy, HarnessError, JwksServer, Limiter, Redis, Result};

pub const ISSUER: &str = "https://issuer.demo.local/";
pub const AUDIENCE: &str = "apiguard-demo";
const KID: &str = "demo-es256";

/// Where things listen: fixed ports for the interactive demo (so the printed `curl` commands
/// work), port 0 for the checked run.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub envoy: u16,
    pub upstream: u16,
    pub issuer: u16,
    pub limiter: u16,
}

impl Ports {
    pub const FIXED: Ports = Ports {
        envoy: 10000,
        upstream: 18080,
        issuer: 18081,
        limiter: 18082,
    };
    pub const FREE: Ports = Ports {
        envoy: 0,
        upstream: 0,
        issuer: 0,
        limiter: 0,
    };
}

/// What the walkthrough needs of a running demo, wherever it runs (this process's [`Stack`], or
/// the docker-compose demo): the address of Envoy's listener and the issuer's signing key.
pub struct Front {
    pub addr: SocketAddr,
    key: SigningKey,
}

impl Front {
    /// The demo reached at `addr`, its issuer publishing `key`'s public half.
    pub fn new(addr: SocketAddr, key: SigningKey) -> Front {
        Front { addr, key }
    }

    /// A token from the demo issuer.
    pub fn token(&self, sub: &str, tenant: &str, roles: &[&str], expires_in: i64) -> String {
        let n = now();
        let claims = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "tenant_id": tenant, "roles": roles,
                            "iat": n.min(n + expires_in - 60), "exp": n + expires_in});
        self.token_with(&claims)
    }

    /// A token with exactly these claims, signed by the demo issuer's key.
    pub fn token_with(&self, claims: &Value) -> String {
        mint(Algorithm::ES256, &self.key, Some(KID), claims).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

pub struct Stack {
    pub envoy: Envoy,
    pub upstream: Server,
    pub issuer: JwksServer,
    pub limiter: Limiter,
    /// `None` when `redis-server` is not installed: the limiter then keeps windows in memory.
    pub redis: Option<Redis>,
    pub front: Front,
    _dir: tempfile::TempDir,
}

fn at(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

impl Stack {
    /// The demo: `envoy/demo.yaml`.
    pub async fn start(ports: Ports) -> Result<Stack> {
        Self::start_with("envoy/demo.yaml", ports).await
    }

    /// The same stack behind another Envoy file of the repository (`envoy/hardened.yaml`) that
    /// names the same clusters (`upstream`, `issuer`, `limiter`).
    pub async fn start_with(file: &str, ports: Ports) -> Result<Stack> {
        let key = signing_key("es256.json");
        let jwks = json!({"keys": [key.public_jwk(Some(KID))]}).to_string();
        let issuer = JwksServer::start_on(&at(ports.issuer), &jwks).await?;
        let upstream = crate::sample_api::start(&at(ports.upstream)).await?;
        let redis = crate::redis::redis_server_bin()
            .ok()
            .and_then(|_| Redis::start().ok());
        let mut args: Vec<String> = Vec::new();
        if let Some(r) = &redis {
            args.extend(["--redis".into(), r.url()]);
        }
        let limiter_addr: SocketAddr = at(ports.limiter).parse().map_err(|_| {
            HarnessError::Io(
                "limiter address".into(),
                std::io::ErrorKind::InvalidInput.into(),
            )
        })?;
        let limiter = if ports.limiter == 0 {
            Limiter::start(&args).await?
        } else {
            Limiter::start_on(limiter_addr, &args).await?
        };
        let dir = tempfile::Builder::new()
            .prefix("apiguard-demo-")
            .tempdir()
            .map_err(|e| HarnessError::Io("tempdir".into(), e))?;
        let config = stack_config(file, ports.envoy, upstream.addr, issuer.addr, limiter.addr)?;
        let path = dir.path().join("demo.json");
        std::fs::write(&path, config.to_string())
            .map_err(|e| HarnessError::Io(path.display().to_string(), e))?;
        let envoy = Envoy::start_file(&path, 1).await?;
        let front = Front::new(envoy.addr, key);
        Ok(Stack {
            envoy,
            upstream,
            issuer,
            limiter,
            redis,
            front,
            _dir: dir,
        })
    }
}

/// An Envoy file of the repository with the ports of this run: the listener on `envoy_port`,
/// the admin interface on a free port, the three clusters at the addresses given (plain HTTP:
/// a cluster's TLS settings are dropped, since the stand-ins serve none).
fn stack_config(
    file: &str,
    envoy_port: u16,
    upstream: SocketAddr,
    issuer: SocketAddr,
    limiter: SocketAddr,
) -> Result<Value> {
    let file = repo_root().join(file);
    let text = std::fs::read_to_string(&file)
        .map_err(|e| HarnessError::Io(file.display().to_string(), e))?;
    let mut v: Value = serde_yaml_ng::from_str(&text).map_err(|e| {
        HarnessError::Io(
            format!("{}: {e}", file.display()),
            std::io::ErrorKind::InvalidData.into(),
        )
    })?;
    v["admin"]["address"]["socket_address"]["port_value"] = json!(0);
    v["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] =
        json!(envoy_port);
    if let Some(clusters) = v["static_resources"]["clusters"].as_array_mut() {
        for c in clusters {
            let addr = match c["name"].as_str() {
                Some("upstream") => upstream,
                Some("issuer") => issuer,
                Some("limiter") => limiter,
                _ => continue,
            };
            c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["socket_address"] =
                json!({"address": addr.ip().to_string(), "port_value": addr.port()});
            if let Some(c) = c.as_object_mut() {
                c.remove("transport_socket");
            }
        }
    }
    Ok(v)
}

/// One scenario of the walkthrough.
struct Scenario {
    title: &'static str,
    method: &'static str,
    path: &'static str,
    token: Option<String>,
    /// How many times to send it (the burst); the last answer is the one checked and shown.
    times: usize,
    expect: u16,
    show: &'static [&'static str],
    /// The user the API must see as the caller (on a 200).
    caller: Option<&'static str>,
}

/// Runs the walkthrough, printing each `curl`, status and telling headers. Returns the
/// scenarios whose answer was not the expected one.
pub async fn walkthrough(front: &Front) -> Vec<String> {
    let editor = front.token("alice", "acme", &["editor"], 3600);
    let scenarios = [
        Scenario {
            title: "A valid editor token reads a document of its own tenant; the upstream gets the verified identity",
            method: "GET",
            path: "/api/v1/tenants/acme/documents/7",
            token: Some(editor.clone()),
            times: 1,
            expect: 200,
            show: &["x-ratelimit-limit", "x-ratelimit-remaining", "ratelimit"],
            caller: Some("alice"),
        },
        Scenario {
            title: "No token",
            method: "GET",
            path: "/api/v1/tenants/acme/documents/7",
            token: None,
            times: 1,
            expect: 401,
            show: &["www-authenticate"],
            caller: None,
        },
        Scenario {
            title: "An expired token",
            method: "GET",
            path: "/api/v1/tenants/acme/documents/7",
            token: Some(front.token("alice", "acme", &["editor"], -120)),
            times: 1,
            expect: 401,
            show: &["www-authenticate"],
            caller: None,
        },
        Scenario {
            title: "Tenant acme's token on tenant globex's document (BOLA), even through a path trick",
            method: "GET",
            path: "/api/v1/tenants/acme/%2e%2e/globex/documents/7",
            token: Some(editor.clone()),
            times: 1,
            expect: 403,
            show: &[],
            caller: None,
        },
        Scenario {
            title: "A viewer may not DELETE",
            method: "DELETE",
            path: "/api/v1/tenants/acme/documents/7",
            token: Some(front.token("victor", "acme", &["viewer"], 3600)),
            times: 1,
            expect: 403,
            show: &[],
            caller: None,
        },
        Scenario {
            title: "A burst on the auth route (3 per minute): the 4th call is refused",
            method: "POST",
            path: "/api/v1/auth/token",
            token: Some(front.token("bob", "acme", &["editor"], 3600)),
            times: 4,
            expect: 429,
            show: &["retry-after", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "ratelimit-policy", "ratelimit"],
            caller: None,
        },
        Scenario {
            title: "An admin call",
            method: "GET",
            path: "/api/v1/admin/settings",
            token: Some(front.token("ada", "acme", &["admin"], 3600)),
            times: 1,
            expect: 200,
            show: &["x-ratelimit-limit"],
            caller: Some("ada"),
        },
    ];
    let mut wrong = Vec::new();
    for (i, s) in scenarios.iter().enumerate() {
        println!("\n{}. {}", i + 1, s.title);
        let auth = s
            .token
            .as_ref()
            .map(|t| format!(" -H 'authorization: Bearer {}…'", &t[..t.len().min(24)]))
            .unwrap_or_default();
        let repeat = if s.times > 1 {
            format!("   # {} times", s.times)
        } else {
            String::new()
        };
        println!(
            "$ curl -i -X {}{auth} '{}'{repeat}",
            s.method,
            front.url(s.path)
        );
        // The raw client keeps the path exactly as written (no dot-segment folding).
        let mut last = None;
        for _ in 0..s.times {
            let mut headers: Vec<(&str, &[u8])> = Vec::new();
            let bearer = s.token.as_ref().map(|t| format!("Bearer {t}"));
            if let Some(b) = &bearer {
                headers.push(("authorization", b.as_bytes()));
            }
            last = crate::raw::request(front.addr, s.method, s.path.as_bytes(), &headers)
                .await
                .ok();
        }
        let Some(r) = last else {
            wrong.push(format!("{}: no answer", s.title));
            continue;
        };
        println!("HTTP {}", r.status);
        for line in r.head.lines().skip(1) {
            let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
            if s.show.contains(&name.as_str()) {
                println!("{line}");
            }
        }
        if r.status == 200 {
            // The sample API shows the identity apiguard forwarded as `caller`.
            let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
            println!("{}", r.body.trim());
            if let Some(user) = s.caller {
                if body["caller"]["user"] != user {
                    wrong.push(format!(
                        "{}: the API saw caller {}, expected {user}",
                        s.title, body["caller"]
                    ));
                }
            }
        } else if !r.body.is_empty() {
            println!("{}", r.body.trim());
        }
        if r.status != s.expect {
            println!("!! expected {}", s.expect);
            wrong.push(format!(
                "{}: got {}, expected {}",
                s.title, r.status, s.expect
            ));
        }
    }
    wrong
}

/// What the README promises to find in Envoy's log after the walkthrough, as a list of what is
/// missing. Lines may carry a prefix (docker-compose's `envoy_1  | `).
pub fn log_problems(log: &str) -> Vec<String> {
    let mut missing = Vec::new();
    if !log.contains("apiguard: configuration loaded (jwt: on, policy: on, rate_limit: on)") {
        missing.push("Envoy's log lacks the configuration-loaded line".to_owned());
    }
    let denied = log.lines().any(|l| {
        l.contains("[access] GET /api/v1/tenants/acme/%2e%2e/globex/documents/7 403")
            && l.contains(r#"decision={"decision":"deny""#)
            && l.contains(r#""reasons":["tenant_mismatch"]"#)
    });
    if !denied {
        missing.push("Envoy's access log lacks the tenant_mismatch decision".to_owned());
    }
    missing
}

/// Ready-to-paste commands with fresh tokens, for the interactive demo.
pub fn cheat_sheet(stack: &Stack) -> String {
    let editor = stack.front.token("alice", "acme", &["editor"], 3600);
    let viewer = stack.front.token("victor", "acme", &["viewer"], 3600);
    let admin = stack.front.token("ada", "acme", &["admin"], 3600);
    let u = |p: &str| stack.front.url(p);
    format!(
        "Tokens (valid for an hour), to paste into a shell:\n  export TOKEN_EDITOR={editor}\n  export TOKEN_VIEWER={viewer}\n  export TOKEN_ADMIN={admin}\n\n\
         Try:\n  curl -i -H \"authorization: Bearer $TOKEN_EDITOR\" '{}'\n  curl -i -H \"authorization: Bearer $TOKEN_EDITOR\" '{}'\n  \
         curl -i -X DELETE -H \"authorization: Bearer $TOKEN_VIEWER\" '{}'\n  curl -i -H \"authorization: Bearer $TOKEN_ADMIN\" '{}'\n  \
         for i in 1 2 3 4; do curl -s -o /dev/null -w '%{{http_code}}\\n' -X POST -H \"authorization: Bearer $TOKEN_EDITOR\" '{}'; done\n  \
         curl -s http://{}/stats | grep apiguard\n",
        u("/api/v1/tenants/acme/documents/7"),
        u("/api/v1/tenants/globex/documents/7"),
        u("/api/v1/tenants/acme/documents/7"),
        u("/api/v1/admin/settings"),
        u("/api/v1/auth/token"),
        stack.envoy.admin,
    )
}

/// The demo's Envoy log file, for the user to follow.
pub fn log_path(stack: &Stack) -> &Path {
    stack.envoy.proc.log_path()
}
