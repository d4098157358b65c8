#!/usr/bin/env bash
# Install the Debian 12 packages rivet needs to build, run and test. Idempotent; needs root
# (or sudo). Set RIVET_SKIP_APT=1 to skip when the packages are known to be present.
set -euo pipefail
[ "${RIVET_SKIP_APT:-0}" = 1 ] && exit 0
PKGS=(build-essential pkg-config libfyaml-dev libpcre2-dev libssl-dev libcurl4-openssl-dev libjansson-dev openssl
      curl python3 python3-pytest nginx-light wrk procps iproute2)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# policy-rc.d keeps the nginx package from starting the system service
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
