#!/usr/bin/env bash
# Installs the C libraries WeightMark links against (Debian/Ubuntu), and strace (the key-permission test traces
# keygen) and openssl (the timestamp tests run a throw-away RFC 3161 authority with `openssl ts`), only if something
# is missing.
set -euo pipefail
need=()
for p in libblas-dev liblapack-dev liblapacke-dev libopenblas-dev zlib1g-dev strace openssl; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing ${need[*]} (apt)" >&2
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
