{{- define "egressd.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "egressd.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "egressd.labels" -}}
{{ include "egressd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: egressd
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "egressd.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}:{{ $tag }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end -}}

{{/* The URL agents use: the Service's cluster DNS name and the proxy port. */}}
{{- define "egressd.proxyURL" -}}
http://{{ include "egressd.fullname" . }}.{{ .Release.Namespace }}.svc:{{ .Values.ports.proxy }}
{{- end -}}

{{/* egressd's config file. */}}
{{- define "egressd.config" -}}
{{- $c := .Values.config -}}
{{- $cfg := dict
  "listen" (printf "0.0.0.0:%d" (int .Values.ports.proxy))
  "mode" $c.mode
  "vendors" $c.vendors
  "vendors_disable" $c.vendorsDisable
  "allow" $c.allow
  "deny" $c.deny
  "admin" (dict "listen" (printf "0.0.0.0:%d" (int .Values.ports.admin)))
  "shutdown" (dict "grace" (printf "%ds" (int .Values.shutdown.graceSeconds)))
-}}
{{- $cfg = merge (deepCopy ($c.extra | default dict)) $cfg -}}
{{- toYaml $cfg -}}
{{- end -}}
