#!/usr/bin/env bash
# Verify an exported Groth16 proof with snarkjs, independently of ambient-zk.
#
#   scripts/snarkjs-verify.sh vk.json public.json proof.json
#
# Installs snarkjs 0.7 into zk/node_modules on first use (no global install, no package.json
# change). Exit status 0 means snarkjs printed OK; anything else means it rejected the proof.
set -euo pipefail

if [ "$#" -ne 3 ]; then
    echo "usage: $0 VK_JSON PUBLIC_JSON PROOF_JSON" >&2
    exit 2
fi

zk_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
snarkjs="$zk_dir/node_modules/.bin/snarkjs"

if [ ! -x "$snarkjs" ]; then
    command -v npm >/dev/null || { echo "npm is not on PATH" >&2; exit 2; }
    (cd "$zk_dir" && npm install --no-save --no-audit --no-fund snarkjs@0.7 >&2)
fi

exec "$snarkjs" groth16 verify "$1" "$2" "$3"
