#!/usr/bin/env bash
# Builds pi.wasm from pi.c: clang's wasm32-wasi target (WASI preview 1, the ABI the agent runs)
# with Debian's wasi-libc (apt-get install clang lld wasi-libc; clang 14.0.6 made the committed
# pi.wasm). Writes OUT, by default pi.wasm beside this script.
#
#   templates/pi/build.sh [OUT.wasm]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(realpath -m "${1:-$here/pi.wasm}")
cd "$here"
clang --target=wasm32-wasi -O2 -Wall -Wextra -Werror -Wl,--strip-all -o "$out" pi.c
