#!/usr/bin/env bash
# The test command: set up and build everything, check formatting and lints, run every test
# tier this host supports (tests that cannot run say why and count as ignored) and fuzz
# beside them.
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
started=$EPOCHREALTIME
trap 'timing_record "total (wall clock)" "$(elapsed_since "$started")" -; timing_table; rm -f "$HAKO_TIMINGS"' EXIT

timed "setup (all of the above)" scripts/setup.sh
# shellcheck disable=SC1091
set -a; . target/hako-env; set +a

echo "== cargo fmt --check"
timed "cargo fmt --check" cargo fmt --all -- --check
echo "== cargo clippy"
timed "cargo clippy" cargo clippy --workspace --all-targets --quiet -- -D warnings
timed "cargo fmt --check (fuzz)" cargo fmt --manifest-path fuzz/Cargo.toml -- --check
echo "== cargo test"
timed "cargo test --release --no-run (the test binaries' build)" \
    cargo test --release --workspace --no-run --quiet
# Fuzzing runs side by side with the test binaries (one core each: the suites mostly wait on
# a guest's single vCPU); its output follows theirs.
fuzz_log="$(mktemp)"
echo "== fuzzing (${HAKO_FUZZ_SECONDS:-20} s per target), side by side with the tests: its output follows them"
( timed "fuzzing, beside the tests (all of the above)" scripts/fuzz.sh "${HAKO_FUZZ_SECONDS:-20}" \
    >"$fuzz_log" 2>&1 ) &
fuzz_pid=$!
run_tests() {
    cargo test --release --workspace --no-fail-fast -- --test-threads=1 2>&1 | timed_sections "  test"
}
tests_status=0
timed "cargo test --release (the test binaries above)" run_tests || tests_status=$?
fuzz_status=0
wait "$fuzz_pid" || fuzz_status=$?
echo "== fuzzing output"
cat "$fuzz_log"
rm -f "$fuzz_log"
[ "$tests_status" = 0 ] || { echo "cargo test failed (exit $tests_status)" >&2; exit "$tests_status"; }
[ "$fuzz_status" = 0 ] || { echo "fuzzing failed (exit $fuzz_status)" >&2; exit "$fuzz_status"; }
