#!/usr/bin/env bash
# Debian packages that imgbatch's install and benchmark use, installed when missing.
#   gcc, libjpeg62-turbo-dev: build the optional C accelerator imgbatch.imaging._jpegdct
#     (DCT-domain JPEG requantization) during `pip install`; without them the install still
#     succeeds and imgbatch re-encodes JPEGs by its pixel route.
#   nginx-light (--bench): the image host of bench/throughput.py (started there on a
#     loopback port with a config of its own, never as the system service).
# In CI (CI=true) a package that cannot be installed is an error; elsewhere a warning.
set -euo pipefail

packages=(gcc libjpeg62-turbo-dev)
if [[ "${1:-}" == "--bench" ]]; then packages+=(nginx-light); fi

missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if [[ ${#missing[@]} -eq 0 ]]; then exit 0; fi

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "system-packages: missing ${missing[*]} (apt-get install ${missing[*]});" \
        "imgbatch works without them, JPEGs take the slower route" >&2
    if [[ "${CI:-}" == "true" ]]; then exit 1; fi
    exit 0
fi
echo "system-packages: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
