#!/usr/bin/env bash
# Install what `images/build.sh --offline` and the `images` test tier need, when missing:
# Debian's docker.io (dockerd and a docker CLI with BuildKit, /usr/bin/docker) and mmdebstrap.
# Needs root and apt (Debian/Ubuntu); a no-op where both are installed.
set -euo pipefail

missing=()
[[ -x /usr/sbin/dockerd && -x /usr/bin/docker ]] || missing+=(docker.io)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
    echo "error: ${missing[*]} missing; install them as root: apt-get install -y ${missing[*]}" >&2
    exit 1
fi
echo ">> apt-get install -y ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
