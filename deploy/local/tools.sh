#!/usr/bin/env bash
# Tools the ops tests run beside Kafka and Redis: Prometheus (`prometheus`,
# `promtool`), headless Chromium and kcat (the recording tests replay its JSON
# dumps), from Debian's packages. Idempotent: when all four are on PATH it only
# checks (a few ms) and installs nothing.
#
#   bash deploy/local/tools.sh          # install what is missing
#
# The packages are installed with their services left stopped: the tests start
# their own Prometheus on a free port.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
LOG_DIR=${PRESALE_VAR_DIR:-$REPO/var}/log
LOG=$LOG_DIR/tools.log

say() { printf 'tools: %s\n' "$*"; }
die() { printf 'tools: ERROR: %s\n' "$*" >&2; exit 1; }

missing=()
command -v prometheus >/dev/null && command -v promtool >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium fonts-dejavu-core)
command -v kcat >/dev/null || missing+=(kcat)
[[ ${#missing[@]} -eq 0 ]] && exit 0

sudo=
if [[ $(id -u) != 0 ]]; then
  command -v sudo >/dev/null || die "need root (or sudo) to apt-get install ${missing[*]}"
  sudo=sudo
fi
mkdir -p "$LOG_DIR"
say "installing ${missing[*]} with apt-get (log: ${LOG#"$REPO"/})"

# Keep the package's own daemon (prometheus on :9090) from starting.
policy=/usr/sbin/policy-rc.d
made_policy=
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod +x "$policy"
  made_policy=1
fi
cleanup() { [[ -z $made_policy ]] || $sudo rm -f "$policy"; }
trap cleanup EXIT

apt_install() {
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends \
    "${missing[@]}" >>"$LOG" 2>&1
}
# Refresh the package lists only when the packages are unknown or the install fails.
if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
  $sudo apt-get update >>"$LOG" 2>&1
fi
if ! apt_install; then
  $sudo apt-get update >>"$LOG" 2>&1
  apt_install || { tail -n 15 "$LOG" >&2; die "apt-get install ${missing[*]} failed"; }
fi
command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v chromium >/dev/null \
  && command -v kcat >/dev/null \
  || die "prometheus, promtool, chromium or kcat still missing after apt-get install"
say "installed ${missing[*]}"
