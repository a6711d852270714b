#!/usr/bin/env bash
# Render the plain manifests in deploy/ from the chart (kubectl apply -f). With --check, compare instead of writing.
# They name Secrets you create first (see deploy/README.md), so that rendering is deterministic.
set -euo pipefail
cd "$(dirname "$0")/.."
HELM=${HELM:-$(command -v helm || echo .tools/helm)}
common=(--namespace scitt-oci --set watch.webhookSecret.existingSecret=scitt-oci-webhook)
render() {
  local out=$1; shift
  "$HELM" template scitt-oci charts/scitt-oci "${common[@]}" "$@" | sed '/^# Source: /d'
}
status=0
for name in standalone sidecar admission; do
  case $name in
    standalone) args=() ;;
    sidecar) args=(--set mode=sidecar) ;;
    # No trust policy: the service trusts its own records (admission.trust_self), so it starts as shipped.
    admission) args=(--set admission.enabled=true --set admission.tls.certManager.enabled=true
                     --set admission.tls.certManager.issuerRef.name=scitt-oci-ca) ;;
  esac
  text=$(render "$name" "${args[@]}")
  file=deploy/scitt-oci-$name.yaml
  if [ "${1:-}" = "--check" ]; then
    if ! diff -q <(printf '%s\n' "$text") "$file" >/dev/null 2>&1; then
      echo "$file is out of date: run deploy/render.sh"; status=1
    fi
  else
    printf '%s\n' "$text" > "$file"
  fi
done
exit $status
