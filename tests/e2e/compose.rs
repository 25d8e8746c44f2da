//! The docker-compose demo, what can be checked without a Docker engine: the compose files
//! against the Compose Specification's JSON schema, every file they reference, the Dockerfile
//! stages they name, and the Envoy YAML they mount (`envoy --mode validate`, and the same
//! apiguard configuration as `envoy/demo.yaml`). `just demo-compose-check` runs the demo in
//! containers.

use apiguard_e2e::{envoy, repo_root, wasm_path};
use serde_json::Value;

fn yaml(path: &str) -> Value {
    let p = repo_root().join(path);
    serde_yaml_ng::from_str(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap()
}

#[test]
fn compose_file_follows_the_compose_specification() {
    // The Compose Specification's schema, kept in the repository (origin and licence in the
    // README beside it).
    let schema_path = repo_root().join("tests/fixtures/compose-spec/compose-spec.json");
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(&schema_path)
            .unwrap_or_else(|e| panic!("{}: {e}", schema_path.display())),
    )
    .unwrap();
    // The schema names its draft as `http://…/draft/2019-09/schema#`, a spelling the validator
    // does not recognise; the draft is given explicitly instead.
    let mut schema = schema;
    if let Some(o) = schema.as_object_mut() {
        o.remove("$schema");
    }
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft201909)
        .build(&schema)
        .unwrap();
    for file in ["demo/docker-compose.yaml", "demo/docker-compose.dev.yaml"] {
        let errors: Vec<String> = validator
            .iter_errors(&yaml(file))
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        assert!(errors.is_empty(), "{file}: {}", errors.join("\n"));
    }
    let compose = yaml("demo/docker-compose.yaml");
    // And it describes the demo: the five services.
    let services: Vec<&String> = compose["services"].as_object().unwrap().keys().collect();
    assert_eq!(
        services,
        ["envoy", "issuer", "limiter", "redis", "upstream"]
    );
}

#[test]
fn every_file_the_compose_files_reference_exists() {
    let demo = repo_root().join("demo");
    for file in ["demo/docker-compose.yaml", "demo/docker-compose.dev.yaml"] {
        for (name, svc) in yaml(file)["services"].as_object().unwrap() {
            references_exist(&demo, name, svc);
        }
    }
    // The image's COPY sources.
    assert!(repo_root().join("tests/fixtures/keys/es256.json").is_file());
}

/// A service's build context, Dockerfile, target stage and volume sources exist.
fn references_exist(demo: &std::path::Path, name: &str, svc: &Value) {
    {
        if let Some(build) = svc.get("build") {
            let context = demo.join(build["context"].as_str().unwrap());
            assert!(
                context.is_dir(),
                "{name}: build context {}",
                context.display()
            );
            let dockerfile = context.join(build["dockerfile"].as_str().unwrap());
            assert!(dockerfile.is_file(), "{name}: {}", dockerfile.display());
            let stages = std::fs::read_to_string(&dockerfile).unwrap();
            let target = build["target"].as_str().unwrap();
            assert!(
                stages
                    .lines()
                    .any(|l| l.starts_with("FROM ") && l.ends_with(&format!(" AS {target}"))),
                "{name}: no stage {target} in {}",
                dockerfile.display()
            );
        }
        for v in svc["volumes"].as_array().into_iter().flatten() {
            let host = v.as_str().unwrap().split(':').next().unwrap();
            let p = demo.join(host);
            assert!(
                p.exists(),
                "{name}: volume source {} (build the module first: `just build`)",
                p.display()
            );
        }
    }
}

/// The Dockerfile builds the dependencies from the manifests alone, with placeholder sources:
/// every workspace member's manifest must be copied in for that step, or the image build fails.
#[test]
fn the_dockerfile_copies_every_workspace_manifest() {
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    // `members = [".", "filters/apiguard-wasm", …]`, on one line in the workspace manifest.
    let manifest = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    let line = manifest
        .lines()
        .find(|l| l.starts_with("members = ["))
        .unwrap();
    let list = line.trim_start_matches("members = [").trim_end_matches(']');
    let members: Vec<&str> = list
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .collect();
    assert!(members.len() > 5, "{members:?}");
    for member in members {
        let copy = if member == "." {
            "COPY Cargo.toml Cargo.lock ./".to_owned()
        } else {
            format!("COPY {member}/Cargo.toml {member}/")
        };
        assert!(dockerfile.contains(&copy), "the Dockerfile lacks `{copy}`");
    }
}

#[test]
fn the_mounted_envoy_yaml_validates_and_matches_the_demo() {
    let text = std::fs::read_to_string(repo_root().join("demo/envoy.yaml")).unwrap();
    // Inside the container the module is at /etc/envoy/apiguard.wasm; here, the local build.
    let local = text.replace(
        "/etc/envoy/apiguard.wasm",
        &wasm_path().unwrap().display().to_string(),
    );
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("envoy.yaml");
    std::fs::write(&copy, local).unwrap();
    let (ok, out) = envoy::validate(&copy).unwrap();
    assert!(ok, "envoy --mode validate demo/envoy.yaml:\n{out}");
    let plugin = |v: &Value| -> Value {
        let value = v["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"]["http_filters"][0]["typed_config"]["config"]["configuration"]["value"]
            .as_str()
            .unwrap()
            .to_owned();
        serde_json::from_str(&value).unwrap()
    };
    assert_eq!(
        plugin(&yaml("demo/envoy.yaml")),
        plugin(&yaml("envoy/demo.yaml")),
        "demo/envoy.yaml drifted from envoy/demo.yaml"
    );
}

/// The Istio `WasmPlugin` example in docs/operations.md carries the demo's configuration (with
/// Istio cluster names) and compiles.
#[test]
fn the_istio_example_is_the_demo_configuration() {
    let doc = std::fs::read_to_string(repo_root().join("docs/operations.md")).unwrap();
    let section = &doc[doc.find("## Istio").unwrap()..];
    let start = section.find("```yaml\n").unwrap() + "```yaml\n".len();
    let end = start + section[start..].find("```").unwrap();
    let plugin: Value = serde_yaml_ng::from_str(&section[start..end]).unwrap();
    assert_eq!(plugin["kind"], "WasmPlugin");
    let mut istio = plugin["spec"]["pluginConfig"].clone();
    apiguard_core::Pipeline::from_json(istio.to_string().as_bytes()).unwrap();
    // Same as envoy/demo.yaml once the cluster names are put back.
    istio["jwt"]["providers"]["demo"]["jwks"]["remote"]["cluster"] = "issuer".into();
    istio["rate_limit"]["cluster"] = "limiter".into();
    let demo = yaml("envoy/demo.yaml");
    let value = demo["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"][0]["typed_config"]["config"]["configuration"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let demo_cfg: Value = serde_json::from_str(&value).unwrap();
    assert_eq!(istio, demo_cfg);
}
