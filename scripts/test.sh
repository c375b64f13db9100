#!/usr/bin/env bash
# The test command: set up and build everything, check formatting and lints, run every test
# tier this host supports (tests that cannot run say why and count as ignored).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
scripts/setup.sh
# shellcheck disable=SC1091
set -a; . target/hako-env; set +a

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --workspace --no-fail-fast -- --test-threads=1
echo "== fuzzing (${HAKO_FUZZ_SECONDS:-20} s per target)"
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
scripts/fuzz.sh "${HAKO_FUZZ_SECONDS:-20}"
