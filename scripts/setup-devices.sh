#!/usr/bin/env bash
# The devices CI always has: Debian packages for the emulated ARM64 device, the loopback ssh board and the report's
# headless-browser test (qemu-user-static, openssh-server/-client, chromium, adb), then the arm64-emu prefix itself
# (~300 MB unpacked, cached in ~/.cache/edgepack/devices/arm64-emu; rebuilt only when its recipe changes).
# Usage: scripts/setup-devices.sh BIN   (BIN = the venv's bin folder, as printed by setup-env.sh)
set -euo pipefail
bin="$1"
need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v chromium >/dev/null || need+=(chromium)
command -v adb >/dev/null || need+=(adb)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing ${need[*]} (apt)" >&2
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >&2
  else
    echo "warning: missing ${need[*]} and not root: those device tests will be skipped" >&2
  fi
fi
t0=$(date +%s)
"$bin/edgepack" device setup arm64-emu >&2
echo "arm64-emu ready ($(( $(date +%s) - t0 )) s)" >&2
