{{/* The name part: the chart's name, or nameOverride. */}}
{{- define "goim-rs-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Namespaced objects' name: "<release>-goim-rs-operator", or the release name alone when it already
holds the chart's name. 63 characters at most (a label value).
*/}}
{{- define "goim-rs-operator.fullname" -}}
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

{{/*
Cluster-scoped objects' name (ClusterRole, ClusterRoleBinding): the namespace and the full name,
so two releases, even of one name in two namespaces, never share one.
*/}}
{{- define "goim-rs-operator.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "goim-rs-operator.fullname" .) }}
{{- end }}

{{- define "goim-rs-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "goim-rs-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "goim-rs-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "goim-rs-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: goim-rs
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "goim-rs-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "goim-rs-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "goim-rs-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* A PushCluster's labels: whose release it is, not the operator's name or component. */}}
{{- define "goim-rs-operator.releaseLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
