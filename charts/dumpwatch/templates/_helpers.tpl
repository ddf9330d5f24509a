{{/* Chart name, possibly overridden. */}}
{{- define "dumpwatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the release name when it already says "dumpwatch". */}}
{{- define "dumpwatch.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "dumpwatch.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The operator's objects: Deployment, Service, ServiceAccount, webhook configuration. */}}
{{- define "dumpwatch.operator" -}}
{{- printf "%s-operator" (include "dumpwatch.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dumpwatch.serviceAccount" -}}
{{- default (include "dumpwatch.operator" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "dumpwatch.tlsSecret" -}}
{{- default (printf "%s-tls" (include "dumpwatch.operator" .)) .Values.certificates.secretName -}}
{{- end -}}

{{/* The webhook configuration is cluster-scoped: its name carries the namespace. */}}
{{- define "dumpwatch.webhookConfiguration" -}}
{{- printf "%s-%s" (include "dumpwatch.operator" .) .Release.Namespace | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dumpwatch.clusterRole" -}}
{{- printf "%s-%s" (include "dumpwatch.operator" .) .Release.Namespace | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dumpwatch.image" -}}
{{- printf "%s:%s" .image.repository (default .appVersion .image.tag) -}}
{{- end -}}

{{/* Labels of every object but the selector ones (pod templates add the operator selector). */}}
{{- define "dumpwatch.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dumpwatch
{{- end -}}

{{- define "dumpwatch.labels" -}}
{{ include "dumpwatch.commonLabels" . }}
app.kubernetes.io/name: {{ include "dumpwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Selects the operator's pods; dumpwatch.dev/component=operator also keeps them away from the webhook. */}}
{{- define "dumpwatch.operatorSelector" -}}
app.kubernetes.io/name: {{ include "dumpwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
dumpwatch.dev/component: operator
{{- end -}}

{{- define "dumpwatch.operatorUrl" -}}
{{- if .Values.operator.url -}}
{{- .Values.operator.url -}}
{{- else -}}
{{- printf "https://%s.%s.svc:%v" (include "dumpwatch.operator" .) .Release.Namespace .Values.service.port -}}
{{- end -}}
{{- end -}}

{{- define "dumpwatch.checkValues" -}}
{{- if not (has .Values.certificates.mode (list "self" "cert-manager")) -}}
{{- fail (printf "certificates.mode must be \"self\" or \"cert-manager\", not %q" .Values.certificates.mode) -}}
{{- end -}}
{{- if not (has .Values.webhook.failurePolicy (list "Ignore" "Fail")) -}}
{{- fail "webhook.failurePolicy must be Ignore or Fail" -}}
{{- end -}}
{{- if and (gt (int .Values.operator.replicas) 1) (not .Values.operator.leaderElection.enabled) -}}
{{- fail "operator.replicas > 1 needs operator.leaderElection.enabled (two leaders would both run the controllers)" -}}
{{- end -}}
{{- if gt (len .Values.sidecar.metricsPortName) 15 -}}
{{- fail "sidecar.metricsPortName must be at most 15 characters (a Kubernetes port name)" -}}
{{- end -}}
{{- if and .Values.storage.s3.createSecret (or (not .Values.storage.s3.accessKeyId) (not .Values.storage.s3.secretAccessKey)) -}}
{{- fail "storage.s3.createSecret needs storage.s3.accessKeyId and storage.s3.secretAccessKey" -}}
{{- end -}}
{{- end -}}
