{{/* Release-scoped name prefix, at most 63 characters (the DNS label limit). */}}
{{- define "hashtag2action.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object; call with (dict "root" $ "component" NAME). */}}
{{- define "hashtag2action.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: hashtag2action
{{ include "hashtag2action.selectorLabels" . }}
{{- end -}}

{{/* The immutable subset used in selectors; call with (dict "root" $ "component" NAME). */}}
{{- define "hashtag2action.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Image reference: a service's own repository/tag, else the chart-wide one; call with
(dict "root" $ "image" SERVICE_IMAGE_BLOCK). */}}
{{- define "hashtag2action.image" -}}
{{- $repository := .image.repository | default .root.Values.image.repository -}}
{{- $tag := .image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}

{{/* The secret holding the store credentials (keys accesskey/secretkey). */}}
{{- define "hashtag2action.storeSecret" -}}
{{- if .Values.minio.enabled -}}
{{- printf "%s-store" (include "hashtag2action.fullname" .) -}}
{{- else -}}
{{- .Values.store.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* host:port of the S3 endpoint. */}}
{{- define "hashtag2action.storeEndpoint" -}}
{{- if .Values.minio.enabled -}}
{{- printf "%s-minio:9000" (include "hashtag2action.fullname" .) -}}
{{- else -}}
{{- .Values.store.endpoint -}}
{{- end -}}
{{- end -}}

{{/* Pod and container security contexts every pod of the chart runs with: non-root 1000:1000,
read-only root filesystem (each pod mounts an emptyDir at /tmp), no capabilities. */}}
{{- define "hashtag2action.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
fsGroup: 1000
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "hashtag2action.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}
