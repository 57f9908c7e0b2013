{{/* Chart name. */}}
{{- define "ig-airflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: release-chart, 63 characters at most. */}}
{{- define "ig-airflow.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Common labels. */}}
{{- define "ig-airflow.labels" -}}
app.kubernetes.io/name: {{ include "ig-airflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Service account name. */}}
{{- define "ig-airflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ig-airflow.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Image reference. */}}
{{- define "ig-airflow.image" -}}
{{- printf "%s:%s" (required "image.repository is required" .Values.image.repository) (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The address Airflow workers give ray.init (Ray client through the head service). */}}
{{- define "ig-airflow.rayAddress" -}}
{{- printf "ray://%s-head-svc.%s.svc.cluster.local:%d" (include "ig-airflow.fullname" .) .Release.Namespace (int .Values.ray.clientPort) -}}
{{- end -}}

{{/* Environment shared by Ray containers. */}}
{{- define "ig-airflow.rayEnv" -}}
- name: RAY_USAGE_STATS_ENABLED
  value: "0"
{{- if .Values.ray.authTokenSecret }}
- name: RAY_AUTH_MODE
  value: token
- name: RAY_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.ray.authTokenSecret }}
      key: auth_token
{{- end }}
{{- end -}}
