#!/usr/bin/env bash
# Builds the guest agent image of an earlier revision, for hako-bench-guest-create's side-by-side
# run, and prints its path. Default revision: e28d7ae, the agent before issue 20's work.
#
# How: `git archive REV` of this repository is unpacked into the cache, its hako-agent is built
# the way that revision's scripts/setup.sh built it (the `guest` profile, a static glibc binary:
# -C target-feature=+crt-static, target x86_64-unknown-linux-gnu, its own Cargo.lock with
# --locked) by today's toolchain, and today's hako-rootfs-builder writes the image (its agent
# image format has not changed since e28d7ae). Cached under
# ${HAKO_CACHE_DIR:-/var/cache/hako}/bench-baseline/<commit>-<toolchain hash>/agent.cpio.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
rev="${1:-e28d7ae}"
log() { echo "baseline-agent: $*" >&2; }

commit="$(git -C "$repo" rev-parse --verify "$rev^{commit}")"
toolchain="$(rustc -vV | sha256sum | cut -c1-12)"
cache="${HAKO_CACHE_DIR:-/var/cache/hako}/bench-baseline"
out="$cache/$commit-$toolchain"
if [ -f "$out/agent.cpio" ]; then
    echo "$out/agent.cpio"
    exit 0
fi
builder="$repo/target/release/hako-rootfs-builder"
[ -x "$builder" ] || { log "$builder is missing: run scripts/setup.sh first"; exit 1; }
log "building the hako-agent of $commit (a few minutes from cold)"
rm -rf "$out"
mkdir -p "$out/src"
git -C "$repo" archive "$commit" | tar -x -C "$out/src"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --locked --quiet \
    --manifest-path "$out/src/Cargo.toml" --profile guest \
    --target x86_64-unknown-linux-gnu --target-dir "$cache/target" -p hako-agent >&2
"$builder" agent --agent "$cache/target/x86_64-unknown-linux-gnu/guest/hako-agent" \
    --out "$out/agent.cpio.tmp" >&2
mv "$out/agent.cpio.tmp" "$out/agent.cpio"
rm -rf "$out/src"
echo "$out/agent.cpio"
