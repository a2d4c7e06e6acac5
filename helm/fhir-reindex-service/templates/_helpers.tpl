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

{{/*
Refuse to render a release whose pods could not verify a single token: the service would exit at
start in every pod, and a rollout with maxUnavailable 0 would hang instead of failing here, at
install time, with the name of the missing value. Renders nothing.
*/}}
{{- define "fhir-reindex-service.checkAuth" -}}
{{- $auth := .Values.auth -}}
{{- if eq $auth.mode "jwks" -}}
{{- $_ := required "auth.jwksUrls is required when auth.mode is jwks: the JWKS URL(s) of the Keycloak realm(s), comma-separated (or choose auth.mode=hs256)" $auth.jwksUrls -}}
{{- $_ := required "auth.jwtIssuers is required when auth.mode is jwks: the accepted token issuer(s), comma-separated, e.g. https://idp.example.org/realms/ehealth" $auth.jwtIssuers -}}
{{- else if eq $auth.mode "hs256" -}}
{{- $_ := required "auth.hs256.existingSecret is required when auth.mode is hs256: the Secret holding the shared secret (32 characters at least)" $auth.hs256.existingSecret -}}
{{- $_ := required "auth.hs256.key is required when auth.mode is hs256: the key of auth.hs256.existingSecret that holds the shared secret" $auth.hs256.key -}}
{{- else if eq $auth.mode "unsigned" -}}
{{- if not $auth.allowUnsigned -}}
{{- fail "auth.mode unsigned accepts any token without checking its signature: set auth.allowUnsigned=true to confirm (test clusters only)" -}}
{{- end -}}
{{- else -}}
{{- fail (printf "auth.mode must be jwks, hs256 or unsigned, not %q" $auth.mode) -}}
{{- end -}}
{{- end -}}
