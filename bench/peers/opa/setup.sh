#!/usr/bin/env bash
# Makes the Python environment of OPA's engine for `just bench peers` and prints its python.
#
# The engine is OPA's Go `rego` package built as a shared library, from the PyPI wheel
# `opa-golib-python-bindings` (a stdlib-only ctypes wrapper). The wheel says Python >= 3.14,
# but its wrapper needs nothing newer than 3.10, so it is installed with
# --ignore-requires-python; the hash pins the exact wheel.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
venv="$root/target/peers/opa-venv"
# One setup at a time: the Rego-version tests call this from two test threads at once, and a
# second setup removing the venv the first is making breaks both (ensurepip fails).
mkdir -p "$root/target/peers"
exec 9>"$root/target/peers/opa-venv.lock"
flock 9
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import opa_bindings' 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --ignore-requires-python \
        --only-binary=:all: --require-hashes -r "$here/requirements.txt" >&2
fi
echo "$venv/bin/python"
