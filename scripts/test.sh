#!/usr/bin/env bash
# The test command: set up and build everything, check formatting and lints, run every test
# tier this host supports (tests that cannot run say why and count as ignored), then fuzz.
# Tests build in the release profile, so they share every compiled dependency with the
# release binaries that setup builds and that the suites run. Prints a timing table at the
# end (also when a step fails).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# shellcheck source=lib/timing.sh
. scripts/lib/timing.sh
HAKO_TIMINGS="$(mktemp)"
export HAKO_TIMINGS
trap 'timing_table; rm -f "$HAKO_TIMINGS"' EXIT

timed "setup (all of the above)" scripts/setup.sh
# shellcheck disable=SC1091
set -a; . target/hako-env; set +a

echo "== cargo fmt --check"
timed "cargo fmt --check" cargo fmt --all -- --check
echo "== cargo clippy"
timed "cargo clippy" cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
timed "  cargo test: build" cargo test --release --workspace --no-run --quiet
run_tests() {
    cargo test --release --workspace --no-fail-fast -- --test-threads=1 2>&1 | timed_sections "  test"
}
timed "cargo test --release (all of the above)" run_tests
echo "== fuzzing (${HAKO_FUZZ_SECONDS:-20} s per target)"
timed "cargo fmt --check (fuzz)" cargo fmt --manifest-path fuzz/Cargo.toml -- --check
timed "fuzzing (all of the above)" scripts/fuzz.sh "${HAKO_FUZZ_SECONDS:-20}"
