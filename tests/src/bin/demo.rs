//! `just demo`: Envoy with apiguard (`envoy/demo.yaml`) in front of an echo upstream, on
//! localhost, until Ctrl-C.

use std::process::ExitCode;

use apiguard_e2e::{repo_root, Echo, Envoy};

/// The upstream port `envoy/demo.yaml` routes to.
const UPSTREAM: &str = "127.0.0.1:18080";

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let echo = Echo::start_on(UPSTREAM)
        .await
        .map_err(|e| format!("{e} (is another demo running?)"))?;
    let config = repo_root().join("envoy/demo.yaml");
    let envoy = Envoy::start_file(&config, 1).await?;
    let url = envoy.url("/api/v1/hello?name=apiguard");

    // One request through the filter, so the demo proves itself before it waits.
    let res = apiguard_e2e::client()
        .get(&url)
        .header("x-demo", "1")
        .send()
        .await?;
    let status = res.status();
    let body = res.text().await?;
    println!(
        "apiguard demo: Envoy {} with apiguard.wasm in front of an echo upstream on {UPSTREAM}",
        envoy.addr
    );
    println!("  Envoy admin:    http://{}/", envoy.admin);
    println!("  Envoy log:      {}", envoy.proc.log_path().display());
    println!();
    println!("$ curl -s -H 'x-demo: 1' '{url}'");
    println!("{status}\n{body}");
    println!();
    println!(
        "The filter runs in pass-through mode here (configuration `{{}}`); try your own requests:"
    );
    println!("  curl -i {}", envoy.url("/anything"));
    println!("  curl -s http://{}/stats | grep wasm", envoy.admin);
    println!();
    println!("Serving until Ctrl-C.");
    tokio::signal::ctrl_c().await?;
    println!("\nStopping Envoy and the upstream.");
    drop(envoy);
    drop(echo);
    Ok(())
}
