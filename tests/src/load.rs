//! A closed-loop HTTP load generator for benchmarks: `concurrency` workers, each sending its
//! share of `total` requests back to back over a kept-alive connection.

use std::time::{Duration, Instant};

/// What one load run saw.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub ok: u64,
    /// The answers that were not 2xx, by status.
    pub statuses: std::collections::BTreeMap<u16, u64>,
    pub errors: u64,
    pub elapsed: Duration,
    /// Per-request latencies, sorted.
    pub latencies: Vec<Duration>,
}

impl LoadReport {
    /// How many answers were not 2xx.
    pub fn other_status(&self) -> u64 {
        self.statuses.values().sum()
    }

    /// The latency at quantile `q` (0.0–1.0).
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let idx = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[idx.min(self.latencies.len() - 1)]
    }
}

/// One request of a mixed workload.
#[derive(Debug, Clone)]
pub struct MixRequest {
    pub method: reqwest::Method,
    pub path: String,
    /// The `Authorization` header value.
    pub auth: Option<String>,
}

/// Sends `total` requests to `base` (scheme and authority), going round `mix` in order.
pub async fn drive_mix(
    base: &str,
    mix: std::sync::Arc<Vec<MixRequest>>,
    total: u64,
    concurrency: u64,
) -> LoadReport {
    let base = base.trim_end_matches('/').to_owned();
    let next = std::sync::atomic::AtomicUsize::new(0);
    drive_with(total, concurrency, move |client| {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let r = &mix[i % mix.len().max(1)];
        let mut req = client.request(r.method.clone(), format!("{base}{}", r.path));
        if let Some(a) = &r.auth {
            req = req.header("authorization", a);
        }
        req
    })
    .await
}

/// Sends `total` requests made by `make` with `concurrency` workers, each over its own
/// kept-alive connection.
pub async fn drive_with<F>(total: u64, concurrency: u64, make: F) -> LoadReport
where
    F: Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency as usize)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new());
    let make = std::sync::Arc::new(make);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let share = total / concurrency + u64::from(w < total % concurrency);
        let client = client.clone();
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = LoadReport::default();
            for _ in 0..share {
                let req = make(&client);
                let t = Instant::now();
                match req.send().await {
                    Ok(res) => {
                        let status = res.status();
                        let _ = res.bytes().await;
                        if status.is_success() {
                            r.ok += 1;
                        } else {
                            *r.statuses.entry(status.as_u16()).or_default() += 1;
                        }
                    }
                    Err(_) => r.errors += 1,
                }
                r.latencies.push(t.elapsed());
            }
            r
        }));
    }
    let mut all = LoadReport::default();
    for t in tasks {
        if let Ok(r) = t.await {
            all.ok += r.ok;
            for (s, n) in r.statuses {
                *all.statuses.entry(s).or_default() += n;
            }
            all.errors += r.errors;
            all.latencies.extend(r.latencies);
        }
    }
    all.elapsed = start.elapsed();
    all.latencies.sort_unstable();
    all
}

/// Median, minimum and maximum of a sample (NaN-free input assumed).
pub fn summary(values: &[f64]) -> (f64, f64, f64) {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => (f64::NAN, f64::NAN, f64::NAN),
        n => {
            let median = if n % 2 == 1 {
                v[n / 2]
            } else {
                (v[n / 2 - 1] + v[n / 2]) / 2.0
            };
            (median, v[0], v[n - 1])
        }
    }
}

/// Process CPU time (user + system) so far, from `/proc/<pid>/stat`.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = procfs::process::Process::new(i32::try_from(pid).ok()?)
        .ok()?
        .stat()
        .ok()?;
    let ticks = stat.utime + stat.stime;
    let per_s = procfs::ticks_per_second();
    Some(Duration::from_secs_f64(ticks as f64 / per_s as f64))
}
