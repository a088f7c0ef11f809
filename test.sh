#!/usr/bin/env bash
# Runs every test: unit, integration (real binaries against kube-sim, real kubectl 1.27 and
# 1.33, a real Prometheus, Python's kubernetes and prometheus_client), and the benches in
# test mode. Installs the peers first if any is missing. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
for tool in prometheus promtool protoc; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
python3 - <<'PY' 2>/dev/null || missing+=("python modules")
import kubernetes, prometheus_client, kubernetes_validate
PY
if [ ${#missing[@]} -gt 0 ]; then
    echo "test.sh: installing test peers (missing: ${missing[*]})" >&2
    scripts/install-test-deps.sh
fi

# kubectl is not installed from a package: the tests use the image's 1.27 and 1.33 builds.
for k in /usr/lib/google-cloud-sdk/bin/kubectl.1.27 /usr/lib/google-cloud-sdk/bin/kubectl.1.33; do
    [ -x "$k" ] || echo "test.sh: warning: $k is missing; the kubectl tests will fail" >&2
done

exec cargo test --all-targets "$@"
