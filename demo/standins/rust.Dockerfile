# Stand-in for `rust:1-bookworm` (demo/standins/README.md): Debian with a C toolchain and this
# machine's Rust toolchain (rustup, cargo, rustc, the wasm32-wasip1 target), laid out as in the
# official image, and this machine's CA bundle so cargo reaches crates.io the way the host does.
FROM debian:bookworm-slim
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        ca-certificates gcc libc6-dev make pkg-config git \
    && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY rustup /usr/local/rustup
COPY cargo /usr/local/cargo
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
LABEL org.apiguard.standin="rust:1-bookworm"
RUN rustc --version && cargo --version && rustup target list --installed
