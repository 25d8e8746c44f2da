#!/usr/bin/env bash
# Builds the Limitador harness for `just bench peers` and prints the binary's path.
#
# Limitador 0.14.0 comes from crates.io's download host, checked against the checksum the
# crates.io index gives for it, unpacked under target/peers/ and patched with
# limitador-0.14.0.patch: the crate does not compile with its Redis storage alone, because
# `storage/keys.rs` calls a module it gates on `disk_storage` (which builds RocksDB). The patch
# only removes that gate. Nothing of Limitador is kept in the repository.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
version=0.14.0
sha256=77e33de992fdc347850a81f1ed242cc702900a9651a2b5d044d153a2db5e2d1a
src="$root/target/peers/limitador-$version"
# The marker holds the patch's hash: a changed patch unpacks and patches afresh.
patched=$(sha256sum "$here/limitador-$version.patch" | cut -d' ' -f1)

if [ "$(cat "$src/.apiguard-patched" 2>/dev/null)" != "$patched" ]; then
    command -v patch >/dev/null || { echo "build.sh: patch not found (apt-get install patch)" >&2; exit 1; }
    mkdir -p "$root/target/peers"
    rm -rf "$src"
    python3 - "$root/target/peers" "$version" "$sha256" <<'PY'
import hashlib, io, sys, tarfile, urllib.request
dest, version, expected = sys.argv[1:]
url = f"https://static.crates.io/crates/limitador/limitador-{version}.crate"
data = urllib.request.urlopen(url, timeout=60).read()
got = hashlib.sha256(data).hexdigest()
if got != expected:
    sys.exit(f"{url}: sha256 {got}, expected {expected}")
with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as t:
    # The archive's checksum is verified above; the "data" filter also refuses links and
    # absolute paths where this Python has it.
    if hasattr(tarfile, "data_filter"):
        t.extractall(dest, filter="data")
    else:
        t.extractall(dest)
PY
    patch --batch --forward -p1 -d "$src" < "$here/limitador-$version.patch" >&2
    echo "$patched" > "$src/.apiguard-patched"
fi
# Limitador's own warnings (dead code the patch leaves reachable) are not ours to fix.
RUSTFLAGS="${RUSTFLAGS:-} --cap-lints=allow" cargo build --quiet --locked --release --manifest-path "$here/Cargo.toml" --target-dir "$root/target/peers/build" >&2
echo "$root/target/peers/build/release/apiguard-bench-limitador"
