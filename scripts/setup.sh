#!/usr/bin/env bash
# Installs what Hako needs on Debian 12 and builds everything: the workspace (release), the
# static guest binaries, the guest kernel (cached under /var/cache/hako) and the guest images
# (target/hako-images). Idempotent; a warm run takes seconds.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

log() { echo "setup: $*" >&2; }
# shellcheck source=lib/timing.sh
. scripts/lib/timing.sh

packages=(
    build-essential flex bison bc libelf-dev libssl-dev cpio xz-utils patch  # guest kernel build
    linux-source-6.1                                                          # guest kernel source
    busybox-static                                                            # probe image
    qemu-system-x86                                                           # reference VMM in tests and benchmarks
    binutils pkg-config libseccomp-dev                                        # readelf; libcontainer's libseccomp (static)
    runc                                                                      # the agent benchmark's reference
    containerd                                                                # the shim's host (main job, end-to-end tests)
    podman conmon                                                             # the OCI CLI's end-to-end tests
    protobuf-compiler                                                         # protoc for the tests' CRI client (k8s-cri)
    iproute2 util-linux                                                       # ip/tc/nsenter for the network tests (netns, tap, veth)
    containernetworking-plugins                                               # CNI bridge + host-local for the pod network tests
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { echo "setup: missing packages ${missing[*]}; run as root or install them" >&2; exit 1; }
    log "installing ${missing[*]}"
    timed "  setup: apt-get update" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timed "  setup: apt-get install (${#missing[@]} packages)" \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: cargo is missing: install Rust (rustup) first" >&2; exit 1; }

# A clone without a target directory of its own (CI's fresh clone) gets one in the cache,
# keyed by the toolchain and Cargo.lock: every compiled dependency is reused and only Hako's
# own crates build; a new lock or toolchain starts a new one (the older ones go). Templates
# and fixtures kept there are keyed by what they are made of; a day-old template goes. A
# developer's own target/ directory is left as it is.
cache_root="${HAKO_CACHE_DIR:-/var/cache/hako}/cargo-target"
if [ ! -e target ] || [ -L target ]; then
    key="$( (rustc -vV; cat Cargo.lock) | sha256sum | cut -c1-16)"
    mkdir -p "$cache_root/$key"
    ln -sfn "$cache_root/$key" target
    find "$cache_root" -mindepth 1 -maxdepth 1 ! -name "$key" -exec rm -rf {} +
    log "cargo target: $cache_root/$key"
    if [ -d target/hako-templates ]; then
        find target/hako-templates -mindepth 1 -maxdepth 1 -mtime +0 -exec rm -rf {} +
    fi
fi

log "building the workspace (release)"
timed "  setup: cargo build --release --workspace" cargo build --release --workspace --quiet

log "building static guest binaries"
RUSTFLAGS="-C target-feature=+crt-static" timed "  setup: static guest binaries" \
    cargo build --quiet --profile guest \
    --target x86_64-unknown-linux-gnu --target-dir target/guest -p hako-agent -p hako-guest-probe
guest_bin="target/guest/x86_64-unknown-linux-gnu/guest"

log "building the guest kernel (cached)"
kernel_start=$EPOCHREALTIME
kernel="$(guest-kernel-config/build.sh | tail -n1)"
timing_record "  setup: guest kernel" "$(elapsed_since "$kernel_start")" 0

log "building guest images"
mkdir -p target/hako-images
target/release/hako-rootfs-builder agent --agent "$guest_bin/hako-agent" --out target/hako-images/agent.cpio
target/release/hako-rootfs-builder probe --program "$guest_bin/hako-guest-probe" --out target/hako-images/probe.cpio

# Newer and other callers for the tests, fetched (not installed) and cached: containerd 2.x
# and Docker 28 from sid, Docker 20.10 (Debian 12's docker.io). A fetch that fails (no network) leaves
# the variable empty and those tests skip, saying why.
fetch() {
    local dir
    if dir="$(timed "  setup: $2 ($1)" scripts/lib/fetch-deb.sh "$@")"; then
        echo "$dir"
    else
        log "$2 from $1 could not be fetched: its tests will be skipped"
    fi
}
log "fetching the callers tested beside Debian 12's (cached)"
containerd2="$(fetch sid containerd 2.1.9+ds1-5)"
docker20="$(fetch bookworm docker.io 20.10.24+dfsg1-1+deb12u1+b6)"
docker28="$(fetch sid docker.io 28.5.2+dfsg4-5)"
docker28_cli="$(fetch sid docker-cli 28.5.2+dfsg4-5)"

cat > target/hako-env <<ENV
HAKO_KERNEL=$kernel
HAKO_AGENT_IMAGE=$repo/target/hako-images/agent.cpio
HAKO_PROBE_IMAGE=$repo/target/hako-images/probe.cpio
HAKO_CONTAINERD2_BIN=${containerd2:+$containerd2/usr/bin}
HAKO_DOCKER_ROOT=$docker20
HAKO_DOCKER28_ROOT=$docker28
HAKO_DOCKER28_CLI=$docker28_cli
ENV
log "done:"
sed 's/^/  /' target/hako-env >&2
