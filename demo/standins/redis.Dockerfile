# Stand-in for `redis:7-bookworm` (demo/standins/README.md): Redis 7 from Debian's packages,
# started like the official image (all interfaces, no protected mode, data in /data).
FROM debian:bookworm-slim
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir /data && chown redis:redis /data
LABEL org.apiguard.standin="redis:7-bookworm"
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--dir", "/data"]
