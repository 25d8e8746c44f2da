#!/usr/bin/env bash
# `just demo-compose-check`: the docker-compose demo for real. Builds its images (stand-ins for
# the public ones first, where the engine has none: demo/standins/), starts it under a project
# name of its own on free loopback ports, runs the walkthrough `just demo-check` runs against
# the containers, checks Envoy's log, how the containers are published and run, and that they
# stop on SIGTERM; then removes the project's containers, networks and volumes, also on failure
# (with every service's log printed). Images stay, as the build cache.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "demo-compose-check: $*" >&2; }
if docker compose version >/dev/null 2>&1; then
    compose_cmd=(docker compose)
elif command -v docker-compose >/dev/null; then
    compose_cmd=(docker-compose)
else
    say "neither 'docker compose' nor 'docker-compose' is installed"
    exit 1
fi
docker info >/dev/null 2>&1 || { say "the Docker engine does not answer ('docker info')"; exit 1; }

project="apiguard-check-$$"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export APIGUARD_DEMO_PORT APIGUARD_DEMO_ADMIN_PORT
APIGUARD_DEMO_PORT=$(free_port)
APIGUARD_DEMO_ADMIN_PORT=$(free_port)
compose() { "${compose_cmd[@]}" -p "$project" -f demo/docker-compose.yaml "$@"; }
work=$(mktemp -d)

cleanup() {
    local rc=$?
    if [ "$rc" -ne 0 ]; then
        say "FAILED; every service's log follows"
        compose logs --no-color >&2 || true
    fi
    compose down --volumes --remove-orphans --timeout 10 >/dev/null 2>&1 || true
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT

say "images: stand-ins for the public ones where missing (demo/standins/README.md)"
demo/standins/build.sh
say "building apiguard's images from Dockerfile (from scratch: about ten minutes on two cores)"
# The revision the binaries report (`--version`, the limiter's build_info metric).
APIGUARD_GIT_REVISION="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
export APIGUARD_GIT_REVISION
compose build 2>&1 | grep -v -e '^DEPRECATED' -e 'buildx' -e '^ *https://docs.docker.com/go/buildx' || true
# `compose build` prints through a pipe that hides its status: ask for the images themselves.
for image in apiguard-limiter:latest apiguard-demo-tools:latest apiguard-demo-envoy:latest; do
    docker image inspect "$image" >/dev/null || { say "$image was not built"; exit 1; }
done
built="$(docker run --rm --entrypoint apiguard-limiter apiguard-limiter:latest --version)"
[ "$built" = "apiguard-limiter $(cargo pkgid -p apiguard-limiter | sed 's/.*[#@]//') (revision $APIGUARD_GIT_REVISION)" ] \
    || { say "the limiter image reports '$built', not revision $APIGUARD_GIT_REVISION"; exit 1; }
say "the limiter image is $built"
say "starting project $project: Envoy on 127.0.0.1:$APIGUARD_DEMO_PORT, admin on 127.0.0.1:$APIGUARD_DEMO_ADMIN_PORT"
compose up -d

# Each service's container, asked once (docker-compose is slow to start).
declare -A ids
for svc in $(compose config --services); do
    ids[$svc]=$(compose ps -q "$svc")
done
id() { echo "${ids[$1]}"; }
health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$(id "$1")"; }
# Envoy compiles the module when it starts: a minute at most on two busy cores.
for _ in $(seq 1 180); do
    [ "$(health envoy)" = healthy ] && break
    sleep 1
done
for svc in redis limiter envoy; do
    [ "$(health "$svc")" = healthy ] || { say "$svc is $(health "$svc"), not healthy"; exit 1; }
done

# Published on loopback only.
for port in 10000 9901; do
    bound=$(docker port "$(id envoy)" "$port/tcp")
    case "$bound" in
        127.0.0.1:*) ;;
        *) say "envoy's port $port is published on '$bound', not 127.0.0.1 only"; exit 1 ;;
    esac
done
# The production limiter image runs unprivileged.
user=$(docker inspect -f '{{.Config.User}}' "$(id limiter)")
[ "$user" = "65532:65532" ] || { say "the limiter runs as '$user'"; exit 1; }

# The first JWKS fetch (on the filter's first tick) must be done: until then tokens are refused
# (docs/jwt.md, "Keys"), as an operator's readiness gate would wait for.
fetched=0
for _ in $(seq 1 30); do
    fetched=$(python3 -c 'import sys, urllib.request
stats = urllib.request.urlopen(sys.argv[1], timeout=2).read().decode()
print(sum(int(l.split(":")[1]) for l in stats.splitlines() if l.startswith("wasmcustom.apiguard.jwks.fetch_success:")))' \
        "http://127.0.0.1:$APIGUARD_DEMO_ADMIN_PORT/stats?filter=jwks.fetch_success" 2>/dev/null || echo 0)
    [ "${fetched:-0}" -ge 1 ] && break
    sleep 1
done
[ "${fetched:-0}" -ge 1 ] || { say "Envoy never fetched the issuer's JWKS"; exit 1; }
demo_bin=target/debug/apiguard-demo
"$demo_bin" walk --envoy "127.0.0.1:$APIGUARD_DEMO_PORT" --key tests/fixtures/keys/es256.json
# Envoy flushes its access log every second (the compose file says so); a slow machine gets
# a little more.
for _ in $(seq 1 10); do
    sleep 1
    compose logs --no-color envoy >"$work/envoy.log"
    "$demo_bin" check-log "$work/envoy.log" >/dev/null 2>&1 && break
done
"$demo_bin" check-log "$work/envoy.log"

# `docker compose down` stops each container with SIGTERM; one that ignored it would be killed
# after the timeout (exit status 137, SIGKILL).
compose stop --timeout 10 >/dev/null 2>&1
for svc in "${!ids[@]}"; do
    code=$(docker inspect -f '{{.State.ExitCode}}' "$(id "$svc")")
    [ "$code" != 137 ] || { say "$svc ignored SIGTERM and was killed"; exit 1; }
done
say "ok: the compose demo answered the walkthrough, published on 127.0.0.1 only, stopped on SIGTERM"
