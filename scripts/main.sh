#!/usr/bin/env bash
# The main job: set up and build everything, tell whether this host can run Hako sandboxes
# (`hako check`), then run a busybox container inside a Hako sandbox (its own KVM guest with
# the agent as PID 1) and show its output.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
scripts/setup.sh
# shellcheck disable=SC1091
. target/hako-env

echo "== hako check"
target/release/hako check || { echo "this host cannot run Hako sandboxes (see above)"; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
target/release/hako-rootfs-builder busybox-bundle --out "$work/bundle" -- \
  sh -c 'echo "Hello from a container in a Hako sandbox"; echo "guest kernel: $(cat /proc/sys/kernel/osrelease)"; echo "cgroup: $(cat /proc/self/cgroup)"; exit 0'

echo "== hako run: a container in a Hako sandbox (the VM boots in about a minute where guest kernel mode is emulated, milliseconds on real KVM)"
start=$SECONDS
status=0
target/release/hako run --root "$work/run" --bundle "$work/bundle" \
  --kernel "$HAKO_KERNEL" --image "$HAKO_AGENT_IMAGE" hako-demo || status=$?
echo "== the container exited with status $status after $((SECONDS - start)) s; its sandbox VM is gone"
exit "$status"
