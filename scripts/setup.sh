#!/usr/bin/env bash
# Installs what Hako needs on Debian 12 and builds everything: the workspace (release), the
# static guest binaries, the guest kernel (cached under /var/cache/hako) and the guest images
# (target/hako-images). Idempotent; a warm run takes seconds.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

log() { echo "setup: $*" >&2; }

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
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: cargo is missing: install Rust (rustup) first" >&2; exit 1; }

log "building the workspace (release)"
cargo build --release --workspace --quiet

log "building static guest binaries"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --profile guest \
    --target x86_64-unknown-linux-gnu --target-dir target/guest -p hako-agent -p hako-guest-probe
guest_bin="target/guest/x86_64-unknown-linux-gnu/guest"

log "building the guest kernel (cached)"
kernel="$(guest-kernel-config/build.sh | tail -n1)"

log "building guest images"
mkdir -p target/hako-images
target/release/hako-rootfs-builder agent --agent "$guest_bin/hako-agent" --out target/hako-images/agent.cpio
target/release/hako-rootfs-builder probe --program "$guest_bin/hako-guest-probe" --out target/hako-images/probe.cpio

cat > target/hako-env <<ENV
HAKO_KERNEL=$kernel
HAKO_AGENT_IMAGE=$repo/target/hako-images/agent.cpio
HAKO_PROBE_IMAGE=$repo/target/hako-images/probe.cpio
ENV
log "done:"
sed 's/^/  /' target/hako-env >&2
