# apiguard's images, one multi-stage file, build context the repository root. Targets:
#   limiter    apiguard-limiter for production: the binary alone, non-root, with a HEALTHCHECK
#   wasm       the filter module as an OCI image for Istio's WasmPlugin (FROM scratch, plugin.wasm)
#   envoy      the demo's Envoy: the official image with the module at /etc/envoy/apiguard.wasm
#   tools      the demo's tools: apiguard-demo (sample API, issuer) and the apiguard CLI
# e.g. `docker build --target limiter -t apiguard-limiter .` (docs/operations.md). The classic
# builder is enough (no BuildKit-only syntax), so the engine's own builder builds it too.

FROM rust:1-bookworm AS build
RUN rustup target add wasm32-wasip1
WORKDIR /src
# Layer order for the cache: the manifests and the lock file, then every dependency built
# against placeholder sources, then the real sources. An edit to apiguard's code starts at the
# last step; a change to Cargo.lock or a manifest rebuilds the dependencies.
COPY Cargo.toml Cargo.lock ./
COPY buildinfo/Cargo.toml buildinfo/
COPY cli/Cargo.toml cli/
COPY filters/apiguard-wasm/Cargo.toml filters/apiguard-wasm/
COPY filters/proxy-abi/Cargo.toml filters/proxy-abi/
COPY limiter/Cargo.toml limiter/
COPY limiter-api/Cargo.toml limiter-api/
COPY testkit/Cargo.toml testkit/
COPY tests/Cargo.toml tests/
COPY tests/probe/Cargo.toml tests/probe/
# Every target the manifests name, as an empty file, and build scripts as `fn main() {}` (a new
# workspace member or target must be added here; the build fails on it otherwise).
RUN for f in src/lib.rs buildinfo/build.rs buildinfo/src/lib.rs cli/src/main.rs filters/apiguard-wasm/src/lib.rs \
        filters/proxy-abi/src/lib.rs limiter/src/lib.rs limiter/src/main.rs limiter-api/src/lib.rs \
        testkit/src/lib.rs tests/src/lib.rs tests/src/bin/demo.rs tests/src/bin/bench/main.rs \
        tests/e2e/main.rs tests/probe/src/lib.rs; do \
        mkdir -p "$(dirname "$f")"; \
        case "$f" in *main.rs|*/bin/*|*build.rs) echo 'fn main() {}' >"$f" ;; *) : >"$f" ;; esac; \
    done
# Three builds, each with what it is for:
# - the limiter, the one native production binary: release, with thin LTO and 16 codegen units
#   instead of the release profile's fat LTO in one unit (which is there for the module's size),
#   minutes less on a 2-core builder for a few per cent of limiter CPU;
# - the demo tools (sample API, issuer, CLI): the dev profile without debug info, whose crypto
#   crates are optimised anyway (Cargo.toml); their speed does not matter, their build time does;
# - the module: the release profile, as shipped.
ENV CARGO_TERM_PROGRESS_WHEN=never
ENV LIMITER_BUILD="cargo build --release --locked -p apiguard-limiter" \
    TOOLS_BUILD="cargo build --locked -p apiguard-cli -p apiguard-e2e --bin apiguard --bin apiguard-demo" \
    MODULE_BUILD="cargo build --release --locked --target wasm32-wasip1 -p apiguard-wasm"
RUN CARGO_PROFILE_RELEASE_LTO=thin CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 $LIMITER_BUILD \
    && CARGO_PROFILE_DEV_DEBUG=0 $TOOLS_BUILD \
    && $MODULE_BUILD
# The sources only (not the docs, not the compose files), so editing those rebuilds nothing.
COPY src src
COPY policies policies
COPY buildinfo buildinfo
COPY cli cli
COPY filters filters
COPY limiter limiter
COPY limiter-api limiter-api
COPY testkit testkit
COPY tests tests
# The git revision `--version` and the limiter's build_info report (there is no .git in the
# build context): `--build-arg APIGUARD_GIT_REVISION=$(git rev-parse --short=12 HEAD)`.
ARG APIGUARD_GIT_REVISION=unknown
# The sources are older than the placeholders' build: touch them so cargo rebuilds apiguard's
# own crates (and only those).
RUN find . -path ./target -prune -o -name '*.rs' -exec touch {} + \
    && CARGO_PROFILE_RELEASE_LTO=thin CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 $LIMITER_BUILD \
    && CARGO_PROFILE_DEV_DEBUG=0 $TOOLS_BUILD \
    && $MODULE_BUILD \
    && mkdir /out \
    && cp target/release/apiguard-limiter target/debug/apiguard target/debug/apiguard-demo \
          target/wasm32-wasip1/release/apiguard.wasm /out/

# The filter module as an OCI image, per Istio's Wasm image specification (the "compat"
# variant: one layer holding plugin.wasm). `just wasm-image` builds it from the host's build.
FROM scratch AS wasm
LABEL org.opencontainers.image.title="apiguard" \
      org.opencontainers.image.description="apiguard Proxy-Wasm filter module"
COPY --from=build /out/apiguard.wasm ./plugin.wasm

# apiguard-limiter for production: only the binary, as an unprivileged user. It refuses plain
# HTTP off loopback unless told (--allow-plaintext) and serves mutual TLS with --tls-* (see
# docs/operations.md); /readyz answers once Redis does.
FROM debian:bookworm-slim AS limiter
COPY --from=build /out/apiguard-limiter /usr/local/bin/apiguard-limiter
USER 65532:65532
ENV APIGUARD_LIMITER_LISTEN=0.0.0.0:8081
EXPOSE 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["apiguard-limiter", "--ready-check"]
ENTRYPOINT ["apiguard-limiter"]

# The demo's Envoy: the official image with the module built above.
FROM envoyproxy/envoy:v1.40.0 AS envoy
COPY --from=build /out/apiguard.wasm /etc/envoy/apiguard.wasm

# The demo's tools: the sample API and issuer, and the CLI; the test-only keys
# (tests/fixtures/keys/README.md): the issuer publishes es256.json's public half.
FROM debian:bookworm-slim AS tools
COPY --from=build /out/apiguard /out/apiguard-demo /usr/local/bin/
COPY tests/fixtures/keys /keys
USER 65532:65532
EXPOSE 8080 8081
