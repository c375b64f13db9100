#!/usr/bin/env bash
# The main job: set up and build everything, tell whether this host can run Hako sandboxes
# (`hako check`), then run a busybox container inside a Hako sandbox (its own KVM guest with
# the agent as PID 1) through containerd and Hako's shim (`ctr run --runtime
# io.containerd.hako.v2`), and show its output. containerd here is a private instance (its own
# root, state and socket under a temporary directory), so the host's containerd, if any, is
# left alone.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
scripts/setup.sh
# shellcheck disable=SC1091
. target/hako-env

echo "== hako check"
target/release/hako check || { echo "this host cannot run Hako sandboxes (see above)"; exit 1; }

work="$(mktemp -d /tmp/hako-main.XXXXXX)"
containerd_pid=""
cleanup() {
    if [ -n "$containerd_pid" ]; then
        kill "$containerd_pid" 2>/dev/null || true
        wait "$containerd_pid" 2>/dev/null || true
    fi
    grep -o " $work[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/hako.toml" <<EOF
[runtime]
root = "$work/hako"
[vm]
kernel = "$HAKO_KERNEL"
image = "$HAKO_AGENT_IMAGE"
EOF
cat > "$work/containerd.toml" <<EOF
version = 2
root = "$work/root"
state = "$work/state"
[grpc]
  address = "$work/containerd.sock"
[ttrpc]
  address = "$work/containerd.sock.ttrpc"
EOF

echo "== a private containerd with Hako's shim on its PATH"
PATH="$repo/target/release:$PATH" HAKO_CONFIG="$work/hako.toml" \
    containerd --config "$work/containerd.toml" >"$work/containerd.log" 2>&1 &
containerd_pid=$!
ctr() { command ctr --address "$work/containerd.sock" "$@"; }
for _ in $(seq 100); do ctr version >/dev/null 2>&1 && break; sleep 0.2; done
target/release/hako-rootfs-builder busybox-image --out "$work/busybox.tar" \
    --name docker.io/library/busybox:hako
ctr image import "$work/busybox.tar" >/dev/null

echo "== ctr run --runtime io.containerd.hako.v2: a container in a Hako sandbox (the VM boots in about a minute where guest kernel mode is emulated, milliseconds on real KVM)"
start=$SECONDS
status=0
ctr run --rm --runtime io.containerd.hako.v2 docker.io/library/busybox:hako hako-demo \
  sh -c 'echo "Hello from a container in a Hako sandbox"; echo "guest kernel: $(cat /proc/sys/kernel/osrelease)"; echo "cgroup: $(cat /proc/self/cgroup)"; exit 0' \
  || status=$?
echo "== the container exited with status $status after $((SECONDS - start)) s; its sandbox VM is gone"
exit "$status"
