#!/usr/bin/env bash
# The main job: set up and build everything, tell whether this host can run Hako sandboxes
# (`hako check`), then boot Hako's guest kernel with the probe image in hako-vmm and show its
# console. (Once the agent and runtime land, this runs a container in a Hako sandbox.)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
scripts/setup.sh
# shellcheck disable=SC1091
. target/hako-env

echo "== hako check"
target/release/hako check || { echo "this host cannot run Hako sandboxes (see above)"; exit 1; }

echo "== booting the guest kernel with the probe image in hako-vmm (about a minute where guest kernel mode is emulated)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat > "$work/vm.json" <<JSON
{
  "machine": {"vcpus": 1, "memory_mib": 256, "cpu_profile": "conservative"},
  "kernel": {"path": "$HAKO_KERNEL", "initrd": "$HAKO_PROBE_IMAGE",
             "cmdline": "loglevel=6 hako.end=poweroff"},
  "console": {"output": "stdout"},
  "control_socket": "$work/control.sock"
}
JSON
start=$SECONDS
target/release/hako-vmm --config "$work/vm.json"
echo "== the guest powered off; hako-vmm exited 0 after $((SECONDS - start)) s"
