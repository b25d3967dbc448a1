#!/usr/bin/env bash
# Lints both charts with the helm of .tools/bin (make tools-k8s builds it) and renders every variant
# of their values, so a template that only breaks with a toggle set is caught too.
# Usage: charts/lint.sh   (from anywhere; exits non-zero on the first problem)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
helm="${HELM:-$here/../.tools/bin/helm}"
[[ -x "$helm" ]] || helm="$(command -v helm)" || { echo "helm not found: run make tools-k8s" >&2; exit 1; }
kube=(--kube-version 1.33.0)

hub=(--set memberApiServer=https://hub.example.com:6443)
member=(--set cluster=alpha --set hub.kubeconfigSecret=gpufed-hub-kubeconfig)

"$helm" lint --strict "$here/gpufed-hub" "${hub[@]}"
"$helm" lint --strict "$here/gpufed-member" "${member[@]}"

render() { "$helm" template lint "$@" "${kube[@]}" >/dev/null; }
render "$here/gpufed-hub" "${hub[@]}"
render "$here/gpufed-hub" "${hub[@]}" --set serviceMonitor.enabled=true --set memberApiCa=PEM
render "$here/gpufed-hub" "${hub[@]}" --set apiPriority.enabled=false
render "$here/gpufed-hub" "${hub[@]}" --set registration.enabled=true --set registration.tlsSecret=reg-tls --set memberApiCa=PEM
render "$here/gpufed-member" "${member[@]}"
render "$here/gpufed-member" "${member[@]}" --set probe.backend=sim
render "$here/gpufed-member" "${member[@]}" --set probe.enabled=false --set jobs.networkPolicy=false
render "$here/gpufed-member" "${member[@]}" --set probe.runtimeClassName=nvidia --set agent.fenceTimeout=20s
render "$here/gpufed-member" "${member[@]}" --set hub.renewUrl=https://hub.example.com:8443 --set hub.renewCaKey=renew-ca.crt
echo "charts: lint clean, every variant renders"
