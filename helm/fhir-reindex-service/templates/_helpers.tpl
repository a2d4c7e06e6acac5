{{/*
Chart name, overridable with nameOverride. Kubernetes names are at most 63 characters.
*/}}
{{- define "fhir-reindex-service.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Name of the release's objects: fullnameOverride, else the release name when it already is the
chart name, else "<release>-<chart>".
*/}}
{{- define "fhir-reindex-service.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if eq .Release.Name (include "fhir-reindex-service.name" .) -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "fhir-reindex-service.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
Chart label value: "<name>-<version>", with "+" (not allowed in label values) made "_".
*/}}
{{- define "fhir-reindex-service.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels that select the pods: stable for the life of a release (a Deployment's selector is immutable).
*/}}
{{- define "fhir-reindex-service.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fhir-reindex-service.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
Labels of every object of the release.
*/}}
{{- define "fhir-reindex-service.labels" -}}
helm.sh/chart: {{ include "fhir-reindex-service.chart" . }}
{{ include "fhir-reindex-service.selectorLabels" . }}
app.kubernetes.io/version: {{ default .Chart.AppVersion .Values.image.tag | quote }}
app.kubernetes.io/component: server
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/*
The image reference; the tag defaults to the chart's appVersion.
*/}}
{{- define "fhir-reindex-service.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
The ConfigMap's data. The Deployment hashes it into a pod annotation, so a configuration change
rolls the pods (environment variables are read once, at start).
*/}}
{{- define "fhir-reindex-service.configData" -}}
FHIR_PORT: {{ .Values.containerPort | int | quote }}
FHIR_HOST: "0.0.0.0"
FHIR_BASE_PATH: {{ .Values.config.basePath | quote }}
{{- with .Values.config.publicBaseUrl }}
FHIR_PUBLIC_BASE_URL: {{ . | quote }}
{{- end }}
FHIR_AUTH_MODE: {{ .Values.auth.mode | quote }}
{{- with .Values.auth.jwksUrls }}
FHIR_JWKS_URLS: {{ . | quote }}
{{- end }}
{{- with .Values.auth.jwtIssuers }}
FHIR_JWT_ISSUERS: {{ . | quote }}
{{- end }}
{{- with .Values.auth.jwtAudience }}
FHIR_JWT_AUDIENCE: {{ . | quote }}
{{- end }}
FHIR_REINDEX_WORKERS: {{ .Values.config.reindexWorkers | int | quote }}
FHIR_MAX_BODY_BYTES: {{ .Values.config.maxBodyBytes | int | quote }}
FHIR_LOG_LEVEL: {{ .Values.config.logLevel | quote }}
FHIR_LOG_FORMAT: {{ .Values.config.logFormat | quote }}
FHIR_SHUTDOWN_DRAIN_SECONDS: {{ .Values.config.shutdownDrainSeconds | quote }}
FHIR_SHUTDOWN_TIMEOUT_SECONDS: {{ .Values.config.shutdownTimeoutSeconds | quote }}
{{- range $name, $value := .Values.extraConfig }}
{{ $name }}: {{ $value | quote }}
{{- end }}
{{- end -}}
