#!/usr/bin/env bash
# Installs the real peers the tests talk to. Used by ./test.sh (when something is missing)
# and by .ci/run (always), so both install the same things the same way.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

# Prometheus and promtool (a real scraper and rule tester), protoc (an independent protobuf
# decoder), wrk (load for the scale harness).
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends prometheus protobuf-compiler wrk >/dev/null

# The Debian package starts a Prometheus on :9090; the tests start their own on free ports.
$SUDO systemctl stop prometheus >/dev/null 2>&1 || $SUDO service prometheus stop >/dev/null 2>&1 || true

# Independent parsers and schemas: the Kubernetes Python client, prometheus_client's text and
# OpenMetrics parsers, kubernetes-validate's offline manifest schemas.
python3 -m pip install -q --disable-pip-version-check -r tests/requirements.txt
