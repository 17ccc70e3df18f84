{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "recsys-triton.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name. */}}
{{- define "recsys-triton.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "recsys-triton.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "recsys-triton.selectorLabels" -}}
app.kubernetes.io/name: {{ include "recsys-triton.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "recsys-triton.labels" -}}
helm.sh/chart: {{ include "recsys-triton.chart" . }}
{{ include "recsys-triton.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: recsys
{{- end }}

{{/* Labels of the server pods (selector labels plus the component). */}}
{{- define "recsys-triton.serverSelectorLabels" -}}
{{ include "recsys-triton.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{/* Labels of the `helm test` pod; the NetworkPolicy always admits it. */}}
{{- define "recsys-triton.testSelectorLabels" -}}
{{ include "recsys-triton.selectorLabels" . }}
app.kubernetes.io/component: test
{{- end }}

{{- define "recsys-triton.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "recsys-triton.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "recsys-triton.adminSecretName" -}}
{{- default (printf "%s-admin" (include "recsys-triton.fullname" .)) .Values.adminKey.existingSecret }}
{{- end }}

{{/* The serving image reference: by digest when one is given. */}}
{{- define "recsys-triton.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* What --model-repository points at: a cloud URI, or the path of the mounted volume. */}}
{{- define "recsys-triton.modelRepository" -}}
{{- $repo := .Values.modelRepository }}
{{- if eq $repo.source "uri" }}
{{- required "modelRepository.uri.location is required when modelRepository.source=uri" $repo.uri.location }}
{{- else }}
{{- $repo.mountPath }}
{{- end }}
{{- end }}

{{/* URL of the versioned archive (archive source). */}}
{{- define "recsys-triton.archiveUrl" -}}
{{- $archive := .Values.modelRepository.archive }}
{{- $version := required "modelRepository.archive.version is required when modelRepository.source=archive" $archive.version }}
{{- $template := required "modelRepository.archive.urlTemplate is required when modelRepository.source=archive" $archive.urlTemplate }}
{{- replace "{version}" $version $template }}
{{- end }}

{{/*
The tritonserver arguments. They must equal serving.server_args.build_server_args(
settings.server, <model repository>, admin_key="$(TRITON_ADMIN_KEY)", bind_address=...)
for the same settings: tests/test_helm.py renders the chart and compares the two.
*/}}
{{- define "recsys-triton.serverArgs" -}}
{{- $s := .Values.server }}
{{- $restricted := printf "model-repository:%s=$(TRITON_ADMIN_KEY)" $s.restrictedApiHeader }}
- {{ printf "--model-repository=%s" (include "recsys-triton.modelRepository" .) | quote }}
- {{ printf "--model-control-mode=%s" $s.modelControlMode | quote }}
{{- if eq $s.modelControlMode "explicit" }}
{{- if not $s.models }}
{{- fail "server.models must list the models to load when server.modelControlMode=explicit" }}
{{- end }}
{{- range $s.models }}
- {{ printf "--load-model=%s" . | quote }}
{{- end }}
{{- end }}
- {{ printf "--http-address=%s" $s.bindAddress | quote }}
- {{ printf "--http-port=%d" (int $s.httpPort) | quote }}
- {{ printf "--grpc-address=%s" $s.bindAddress | quote }}
- {{ printf "--grpc-port=%d" (int $s.grpcPort) | quote }}
- {{ printf "--metrics-address=%s" $s.bindAddress | quote }}
- {{ printf "--metrics-port=%d" (int $s.metricsPort) | quote }}
- "--metrics-config=summary_latencies=true"
- {{ printf "--strict-readiness=%t" $s.strictReadiness | quote }}
- {{ printf "--exit-on-error=%t" $s.exitOnError | quote }}
- {{ printf "--log-verbose=%d" (int $s.logVerbose) | quote }}
- {{ printf "--backend-config=python,shm-default-byte-size=%d" (int64 $s.pythonShmDefaultByteSize) | quote }}
- {{ printf "--http-restricted-api=%s" $restricted | quote }}
- {{ printf "--grpc-restricted-protocol=%s" $restricted | quote }}
{{- end }}

{{/* Container securityContext shared by every container of the chart. */}}
{{- define "recsys-triton.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ .Values.podSecurityContext.runAsUser }}
runAsGroup: {{ .Values.podSecurityContext.runAsGroup }}
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Pod securityContext shared by the server and the test pod. */}}
{{- define "recsys-triton.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurityContext.runAsUser }}
runAsGroup: {{ .Values.podSecurityContext.runAsGroup }}
fsGroup: {{ .Values.podSecurityContext.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* checkov skip annotations shared by workloads; each reason is part of the chart. */}}
{{- define "recsys-triton.imageDigestSkip" -}}
{{- if not .Values.image.digest }}
checkov.io/skip1: >-
  CKV_K8S_43=the image is pinned by tag by default; set image.digest to pull by digest
  (the chart cannot know the digest of an image built later)
{{- end }}
{{- end }}
