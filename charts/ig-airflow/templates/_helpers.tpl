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

{{/* Selector labels: this chart in this release. */}}
{{- define "ig-airflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ig-airflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Common labels. */}}
{{- define "ig-airflow.labels" -}}
{{ include "ig-airflow.selectorLabels" . }}
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

{{/* Ray token authentication is required: fail unless a token Secret is named or it is waived. */}}
{{- define "ig-airflow.requireRayAuth" -}}
{{- if and (not .Values.ray.authTokenSecret) (not .Values.ray.allowInsecureNoAuth) -}}
{{- fail "ray.authTokenSecret is required: name a Secret holding the Ray token under key auth_token (kubectl create secret generic ray-token --from-literal=auth_token=\"$(openssl rand -hex 32)\"; --set ray.authTokenSecret=ray-token), or set ray.allowInsecureNoAuth=true to run Ray without token authentication (anyone who reaches the Ray ports can then run code)" -}}
{{- end -}}
{{- end -}}

{{/* Environment shared by Ray containers (ray-head, ray-worker, the autoscaler sidecar). */}}
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
{{- else }}
{{- /* only with ray.allowInsecureNoAuth (ig-airflow.requireRayAuth): say so explicitly */}}
- name: RAY_AUTH_MODE
  value: disabled
{{- end }}
{{- end -}}

{{/* Labels of the Ray pods (head and every worker group) for the NetworkPolicy. */}}
{{- define "ig-airflow.rayPodSelector" -}}
matchLabels:
  {{- include "ig-airflow.selectorLabels" . | nindent 2 }}
matchExpressions:
  - key: app.kubernetes.io/component
    operator: In
    values:
      - ray-head
      {{- range $name, $group := .Values.ray.workers }}
      - ray-worker-{{ $name }}
      {{- end }}
{{- end -}}

{{/* Writable volumes of a Ray pod (the root filesystem is read-only); dict: root, resources. */}}
{{- define "ig-airflow.rayVolumes" -}}
{{- $values := .root.Values.ray -}}
{{- $shmLimit := $values.shmVolume.sizeLimit | default (dig "limits" "memory" "" (.resources | default dict)) -}}
- name: ray-tmp
  {{- with $values.tmpVolume.sizeLimit }}
  emptyDir:
    sizeLimit: {{ . | quote }}
  {{- else }}
  emptyDir: {}
  {{- end }}
- name: ray-shm
  emptyDir:
    medium: Memory
    {{- with $shmLimit }}
    sizeLimit: {{ . | quote }}
    {{- end }}
{{- end -}}

{{/* Mounts of those volumes. */}}
{{- define "ig-airflow.rayVolumeMounts" -}}
- name: ray-tmp
  mountPath: /tmp
- name: ray-shm
  mountPath: /dev/shm
{{- end -}}

{{/* The autoscaler sidecar's service-account token: the same files automountServiceAccountToken
would mount, in a volume only that sidecar mounts (at the standard path the Ray autoscaler reads). */}}
{{- define "ig-airflow.autoscalerApiVolume" -}}
- name: autoscaler-kube-api-access
  projected:
    defaultMode: 420
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: 3607
      - configMap:
          name: kube-root-ca.crt
          items:
            - key: ca.crt
              path: ca.crt
      - downwardAPI:
          items:
            - path: namespace
              fieldRef:
                apiVersion: v1
                fieldPath: metadata.namespace
{{- end -}}
