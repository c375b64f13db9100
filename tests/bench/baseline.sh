#!/usr/bin/env bash
# Builds an earlier revision's guest agent image, and with --whole its hako-vmm and guest kernel,
# for hako-bench-guest-create's side-by-side run; prints `image=PATH` (and `vmm=PATH`,
# `kernel=PATH`). Default revision: e28d7ae, before issue 20's work.
#
#   baseline.sh [--whole] [REV]
#
# How: `git archive REV` of this repository is unpacked into the cache; its hako-agent is built
# the way that revision's scripts/setup.sh built it (the `guest` profile, a static glibc binary:
# -C target-feature=+crt-static, target x86_64-unknown-linux-gnu, its own Cargo.lock with
# --locked) by today's toolchain, and today's hako-rootfs-builder writes the image (its agent
# image format has not changed since e28d7ae). --whole: its hako-vmm (release, --locked) and its
# guest kernel, by its own guest-kernel-config/build.sh (cached like today's, by its inputs).
# Cached under ${HAKO_CACHE_DIR:-/var/cache/hako}/bench-baseline/<commit>-<toolchain hash>/.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
whole=0
[ "${1:-}" = "--whole" ] && { whole=1; shift; }
rev="${1:-e28d7ae}"
log() { echo "baseline: $*" >&2; }

commit="$(git -C "$repo" rev-parse --verify "$rev^{commit}")"
toolchain="$(rustc -vV | sha256sum | cut -c1-12)"
cache="${HAKO_CACHE_DIR:-/var/cache/hako}/bench-baseline"
out="$cache/$commit-$toolchain"
if [ ! -f "$out/src/Cargo.lock" ]; then
    rm -rf "$out/src"
    mkdir -p "$out/src"
    git -C "$repo" archive "$commit" | tar -x -C "$out/src"
fi
if [ ! -f "$out/agent.cpio" ]; then
    builder="$repo/target/release/hako-rootfs-builder"
    [ -x "$builder" ] || { log "$builder is missing: run scripts/setup.sh first"; exit 1; }
    log "building the hako-agent of $commit (a few minutes from cold)"
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --locked --quiet \
        --manifest-path "$out/src/Cargo.toml" --profile guest \
        --target x86_64-unknown-linux-gnu --target-dir "$cache/target" -p hako-agent >&2
    "$builder" agent --agent "$cache/target/x86_64-unknown-linux-gnu/guest/hako-agent" \
        --out "$out/agent.cpio.tmp" >&2
    mv "$out/agent.cpio.tmp" "$out/agent.cpio"
fi
echo "image=$out/agent.cpio"
[ "$whole" = 1 ] || exit 0
if [ ! -x "$out/hako-vmm" ]; then
    log "building the hako-vmm of $commit"
    cargo build --locked --quiet --release --manifest-path "$out/src/Cargo.toml" \
        --target-dir "$cache/target" -p hako-vmm >&2
    cp "$cache/target/release/hako-vmm" "$out/hako-vmm.tmp"
    mv "$out/hako-vmm.tmp" "$out/hako-vmm"
fi
echo "vmm=$out/hako-vmm"
kernel="$("$out/src/guest-kernel-config/build.sh" | tail -n 1)"
echo "kernel=$kernel"
