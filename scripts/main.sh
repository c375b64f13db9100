#!/usr/bin/env bash
# The main job: set up and build everything, tell whether this host can run Hako sandboxes
# (`hako check`), then boot Hako's guest kernel with the probe image and show its console.
# (Until the runtime lands, the guest is booted by QEMU's microvm; afterwards this runs a
# container in a Hako sandbox.)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
scripts/setup.sh
# shellcheck disable=SC1091
. target/hako-env

echo "== hako check"
target/release/hako check || { echo "this host cannot run Hako sandboxes (see above)"; exit 1; }

echo "== booting the guest kernel with the probe image (about a minute where kernel mode is emulated)"
target/release/hako-qemu-boot "$HAKO_KERNEL" "$HAKO_PROBE_IMAGE"
