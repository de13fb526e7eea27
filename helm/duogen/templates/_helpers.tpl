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
{{- if eq .Values.s3.provider "minio" }}
{{- printf "http://%s.%s.svc.cluster.local:9000" (include "duogen.minioService" .) .Release.Namespace }}
{{- else }}
{{- required "s3.endpoint is required when s3.provider is external" .Values.s3.endpoint }}
{{- end }}
{{- end }}

{{/* The namespace KFP runs the pipeline's pods in (standalone KFP: `kubeflow`; multi-user: the profile
     namespace, which must be the release's). */}}
{{- define "duogen.runnerNamespace" -}}
{{- $ns := .Values.pipeline.runner.namespace | default .Release.Namespace }}
{{- if and .Values.pipeline.multiUser (ne $ns .Release.Namespace) }}
{{- fail (printf "pipeline.multiUser: multi-user Kubeflow runs pipeline pods in the profile namespace as default-editor; install the release in that namespace and set pipeline.runner.namespace=%s (it is %q)" .Release.Namespace $ns) }}
{{- end }}
{{- $ns }}
{{- end }}

{{/* Fails unless the chart may generate a credential: (dict "ctx" $ "value" "s3.existingSecret" "holds" "...") */}}
{{- define "duogen.mayGenerate" -}}
{{- if not .ctx.Values.secrets.generate }}
{{- fail (printf "secrets.generate is false (GitOps: no credential is generated): set %s to an existing Secret with %s" .value .holds) }}
{{- end }}
{{- end }}

{{- define "duogen.mlflowService" -}}
{{- printf "%s-mlflow" (include "duogen.fullname" .) }}
{{- end }}

{{- define "duogen.mlflowUri" -}}
{{- printf "http://%s.%s.svc.cluster.local:5000" (include "duogen.mlflowService" .) .Release.Namespace }}
{{- end }}

{{/* A generated credential kept across upgrades: the live Secret's value when it exists, else a new one.
     (dict "ctx" $ "secret" NAME "key" KEY "length" N). `lookup` answers nothing under `helm template` or
     Argo CD, so there every render draws anew: those set secrets.generate=false and bring Secrets. */}}
{{- define "duogen.keptRandom" -}}
{{- $live := lookup "v1" "Secret" .ctx.Release.Namespace .secret }}
{{- if and $live $live.data (hasKey $live.data .key) }}
{{- index $live.data .key | b64dec }}
{{- else }}
{{- randAlphaNum (int .length) }}
{{- end }}
{{- end }}

{{/* Pod-level security: non-root, seccomp RuntimeDefault. Argument: the UID. (Knative, i.e. KServe's
     Serverless mode, rejects a pod securityContext by default: see serving.yaml.) */}}
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

{{/* Container-level security with the UID: what Knative's default feature flags allow in place of a pod
     securityContext (knative/serving v1.15.2 pkg/apis/serving/fieldmask.go SecurityContextMask). */}}
{{- define "duogen.containerSecurityContextWithUser" -}}
{{ include "duogen.containerSecurityContext" .ctx }}
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
{{- end }}

{{/* Who may reach MLflow and MinIO: this namespace's pods (training, predictor, storage initializer, the
     pipeline's pods under multi-user KFP) and, when KFP runs the pipeline's pods elsewhere (standalone KFP:
     `kubeflow`), that namespace's pods. */}}
{{- define "duogen.clientPeers" -}}
- podSelector: {}
{{- $runnerNs := include "duogen.runnerNamespace" . }}
{{- if ne $runnerNs .Release.Namespace }}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ $runnerNs }}
{{- end }}
{{- end }}

{{/* MLflow's backend store URI (and the password it expands), for the server and its db-upgrade step. */}}
{{- define "duogen.mlflowBackendEnv" -}}
{{- if eq .Values.mlflow.backend "sqlite" }}
- name: MLFLOW_BACKEND_STORE_URI
  value: sqlite:////var/lib/mlflow/mlflow.db
{{- else if .Values.mlflow.postgres.bundled }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "duogen.postgresSecret" . }}, key: password}
- name: MLFLOW_BACKEND_STORE_URI
  value: postgresql://mlflow:$(PGPASSWORD)@{{ include "duogen.mlflowService" . }}-postgres:5432/mlflow
{{- else }}
- name: MLFLOW_BACKEND_STORE_URI
  valueFrom:
    secretKeyRef: {name: {{ required "mlflow.postgres.existingSecret (key uri) is required for an external Postgres" .Values.mlflow.postgres.existingSecret }}, key: uri}
{{- end }}
{{- end }}
