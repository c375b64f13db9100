#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/) with libFuzzer and coverage instrumentation on the stable
# toolchain (the flags cargo-fuzz passes, minus the sanitizer, which needs nightly: the code
# under test is safe Rust, where a panic or overflow is the bug), replays the regression
# inputs, then fuzzes each target for SECONDS (default 20) from its checked-in corpus.
# A crash leaves its input in target/fuzz/artifacts/<target>/ and fails the script; copy it to
# fuzz/regressions/<target>/ with the fix.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# shellcheck source=lib/timing.sh
. scripts/lib/timing.sh
seconds="${1:-20}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(virtio_fs virtio_block virtio_net vsock_packet vsock_queue mmio_transport vsock_host_line
        agent_api oci_config snapshot_state mountinfo)
fi
host="$(rustc -vV | sed -n 's/^host: //p')"
work_dir="$repo/target/fuzz"
# The instrumented build is cached outside the repo (like the guest kernel), keyed by the
# toolchain and the fuzz lock file: a warm run rebuilds only Hako's own crates. Older keys go.
cache_root="${HAKO_CACHE_DIR:-/var/cache/hako}/fuzz-target"
key="$( (rustc -vV; cat fuzz/Cargo.lock) | sha256sum | cut -c1-16)"
export CARGO_TARGET_DIR="$cache_root/$key"
mkdir -p "$cache_root"
find "$cache_root" -mindepth 1 -maxdepth 1 ! -name "$key" -exec rm -rf {} +
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
echo "== fuzz: building ${#targets[@]} targets"
# --target keeps the instrumentation off build scripts and proc macros.
timed "  fuzz: build" cargo build --quiet --manifest-path fuzz/Cargo.toml --release --target "$host" \
    $(printf -- '--bin %s ' "${targets[@]}")
bin="$CARGO_TARGET_DIR/$host/release"
# The targets' scratch shares and disks live here, removed at the end.
export TMPDIR="$work_dir/tmp"
rm -rf "$TMPDIR"; mkdir -p "$TMPDIR"
trap 'rm -rf "$TMPDIR"' EXIT
runs_start=$EPOCHREALTIME
for t in "${targets[@]}"; do
    work="$work_dir/corpus/$t"
    artifacts="$work_dir/artifacts/$t/"
    mkdir -p "$work" "$artifacts" "fuzz/corpus/$t"
    if compgen -G "fuzz/regressions/$t/*" >/dev/null; then
        echo "== fuzz $t: regressions"
        "$bin/$t" -runs=1 fuzz/regressions/"$t"/* 2>&1 | tail -2
    fi
    echo "== fuzz $t: ${seconds}s"
    "$bin/$t" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$artifacts" "$work" "fuzz/corpus/$t" 2>&1 \
        | grep -E '^(stat::number_of_executed_units|stat::new_units_added|#[0-9]+ *DONE)|ERROR|panicked|SUMMARY' || true
    if compgen -G "$artifacts*" >/dev/null; then
        echo "fuzz $t: crash inputs in $artifacts" >&2
        exit 1
    fi
done
timing_record "  fuzz: ${#targets[@]} targets x ${seconds} s (with regressions)" "$(elapsed_since "$runs_start")" 0
