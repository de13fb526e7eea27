{{- define "duogen.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* `<release>` when it already names the chart, else `<release>-<chart>`. */}}
{{- define "duogen.fullname" -}}
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

{{- define "duogen.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "duogen.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: duogen
{{- end }}

{{/* Selector labels of one component: (dict "ctx" $ "component" "mlflow") */}}
{{- define "duogen.selectorLabels" -}}
app.kubernetes.io/name: {{ include "duogen.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "duogen.s3Secret" -}}
{{- .Values.s3.existingSecret | default (printf "%s-s3" (include "duogen.fullname" .)) }}
{{- end }}

{{- define "duogen.minioService" -}}
{{- printf "%s-minio" (include "duogen.fullname" .) }}
{{- end }}

{{/* The S3 endpoint every client uses: the bundled MinIO's Service, or the external one. */}}
{{- define "duogen.s3Endpoint" -}}
{{- if .Values.minio.enabled }}
{{- printf "http://%s.%s.svc.cluster.local:9000" (include "duogen.minioService" .) .Release.Namespace }}
{{- else }}
{{- required "s3.endpoint is required when minio.enabled is false" .Values.s3.endpoint }}
{{- end }}
{{- end }}

{{- define "duogen.mlflowService" -}}
{{- printf "%s-mlflow" (include "duogen.fullname" .) }}
{{- end }}

{{- define "duogen.mlflowUri" -}}
{{- printf "http://%s.%s.svc.cluster.local:5000" (include "duogen.mlflowService" .) .Release.Namespace }}
{{- end }}

{{/* A generated credential kept across upgrades: the live Secret's value when it exists, else a new one.
     (dict "ctx" $ "secret" NAME "key" KEY "length" N) */}}
{{- define "duogen.keptRandom" -}}
{{- $live := lookup "v1" "Secret" .ctx.Release.Namespace .secret }}
{{- if and $live $live.data (hasKey $live.data .key) }}
{{- index $live.data .key | b64dec }}
{{- else }}
{{- randAlphaNum (int .length) }}
{{- end }}
{{- end }}

{{/* Pod-level security: non-root, seccomp RuntimeDefault. Argument: the UID. */}}
{{- define "duogen.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
fsGroup: {{ . }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container-level security: no escalation, no capabilities, read-only root (writable paths are volumes). */}}
{{- define "duogen.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "duogen.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{- define "duogen.postgresSecret" -}}
{{- .Values.mlflow.postgres.existingSecret | default (printf "%s-postgres" (include "duogen.mlflowService" .)) }}
{{- end }}
