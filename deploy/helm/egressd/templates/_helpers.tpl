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
  "listen" (printf "[::]:%d" (int .Values.ports.proxy))
  "mode" $c.mode
  "vendors" $c.vendors
  "vendors_disable" $c.vendorsDisable
  "allow" $c.allow
  "deny" $c.deny
  "admin" (dict "listen" (printf "[::]:%d" (int .Values.ports.admin)))
  "shutdown" (dict "grace" (printf "%ds" (int .Values.shutdown.graceSeconds)))
-}}
{{- $cfg = merge (deepCopy ($c.extra | default dict)) $cfg -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* The DNS servers' NetworkPolicy peers (port 53) of egressd's and the agents' egress policies: the peers of
networkPolicy.dns.preset, then networkPolicy.dns.extra. */}}
{{- define "egressd.dnsPeers" -}}
{{- $dns := .Values.networkPolicy.dns -}}
{{- $peers := list -}}
{{- if has $dns.preset (list "kube-dns" "node-local-dns") -}}
{{- $peers = append $peers (dict "namespaceSelector" (dict "matchLabels" (dict "kubernetes.io/metadata.name" $dns.namespace)) "podSelector" (dict "matchLabels" $dns.podLabels)) -}}
{{- end -}}
{{- if eq $dns.preset "gke-cloud-dns" -}}
{{- $peers = append $peers (dict "ipBlock" (dict "cidr" "169.254.169.254/32")) -}}
{{- end -}}
{{- if eq $dns.preset "node-local-dns" -}}
{{- $peers = append $peers (dict "ipBlock" (dict "cidr" "169.254.20.10/32")) -}}
{{- end -}}
{{- $peers = concat $peers ($dns.extra | default list) -}}
{{- if not $peers -}}
{{- fail "networkPolicy.dns.preset custom needs networkPolicy.dns.extra: the NetworkPolicy peers of your DNS servers" -}}
{{- end -}}
{{- toYaml $peers -}}
{{- end -}}

{{/* egressd's egress ports (TCP): networkPolicy.egressPorts (443, every vendor profile's port) and the ports of
the config.allow rules (443 when a rule names none), "first-last" ranges as endPort. */}}
{{- define "egressd.egressPorts" -}}
{{- $ports := dict -}}
{{- range .Values.networkPolicy.egressPorts -}}
{{- $_ := set $ports (toString .) true -}}
{{- end -}}
{{- range .Values.config.allow -}}
{{- range (.ports | default (list 443)) -}}
{{- $_ := set $ports (toString .) true -}}
{{- end -}}
{{- end -}}
{{- range $p, $_ := $ports }}
- protocol: TCP
{{- if contains "-" $p }}
{{- $r := splitList "-" $p }}
  port: {{ index $r 0 | int }}
  endPort: {{ index $r 1 | int }}
{{- else }}
  port: {{ $p | int }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The agent namespaces and networkPolicy.ingress.clientNamespaces: who may use the proxy ports. */}}
{{- define "egressd.clientNamespaces" -}}
{{- $namespaces := list -}}
{{- range .Values.agents -}}
{{- $namespaces = append $namespaces .namespace -}}
{{- end -}}
{{- toYaml (concat $namespaces .Values.networkPolicy.ingress.clientNamespaces | uniq) -}}
{{- end -}}
