{{- define "scitt-oci.name" -}}{{ .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}

{{- define "scitt-oci.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "scitt-oci.labels" -}}
app.kubernetes.io/name: {{ include "scitt-oci.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "scitt-oci.selector" -}}
app.kubernetes.io/name: {{ include "scitt-oci.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "scitt-oci.image" -}}
{{- if .Values.image.digest -}}{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}{{- end -}}
{{- end -}}

{{- define "scitt-oci.host" -}}{{ include "scitt-oci.fullname" . }}.{{ .Release.Namespace }}.svc{{- end -}}

{{- define "scitt-oci.webhookSecretName" -}}
{{- .Values.watch.webhookSecret.existingSecret | default (printf "%s-webhook" (include "scitt-oci.fullname" .)) -}}
{{- end -}}

{{- define "scitt-oci.tlsSecretName" -}}{{ include "scitt-oci.fullname" . }}-tls{{- end -}}

{{- /* The shared webhook secret: generated once and kept across upgrades (lookup). */ -}}
{{- define "scitt-oci.webhookSecretValue" -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "scitt-oci.webhookSecretName" .) -}}
{{- if and $existing $existing.data -}}{{ index $existing.data .Values.watch.webhookSecret.key | b64dec }}
{{- else -}}{{ randAlphaNum 40 }}{{- end -}}
{{- end -}}

{{- /* Where a signature trust file ({configMap: NAME, key: KEY} or {secret: NAME, key: KEY}) is mounted. */ -}}
{{- define "scitt-oci.signatureFile" -}}
{{- if .configMap -}}/etc/scitt-oci/signatures/configmap/{{ .configMap }}/{{ .key }}
{{- else -}}/etc/scitt-oci/signatures/secret/{{ .secret }}/{{ .key }}{{- end -}}
{{- end -}}

{{- /* Every ConfigMap and Secret that signature trust reads, once each, as JSON:
       {"configmap/NAME": {"configMap": NAME}, "secret/NAME": {"secret": NAME}}; the key is the mount's folder. */ -}}
{{- define "scitt-oci.signatureSources" -}}
{{- $s := .Values.signatures -}}
{{- $refs := list -}}
{{- range $s.notation -}}{{- $refs = concat $refs (.ca | default list) (.signingAuthority | default list) (.tsa | default list) -}}{{- end -}}
{{- range $s.cosignKeys -}}{{- $refs = append $refs .key -}}{{- end -}}
{{- range $s.sigstore -}}{{- if kindIs "map" .trustedRoot -}}{{- $refs = append $refs .trustedRoot -}}{{- end -}}{{- end -}}
{{- $sources := dict -}}
{{- range $refs -}}
{{- if .configMap -}}{{- $_ := set $sources (printf "configmap/%s" .configMap) (dict "configMap" .configMap) -}}
{{- else -}}{{- $_ := set $sources (printf "secret/%s" .secret) (dict "secret" .secret) -}}{{- end -}}
{{- end -}}
{{- $sources | toJson -}}
{{- end -}}
