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
{{- range $key := list "parents" "via" "parents_bypass" -}}
{{- if hasKey ($c.extra | default dict) $key -}}
{{- fail (printf "config.extra.%s: set config.parents, config.via and config.parentsBypass instead (the chart mounts the parents' credentials and opens the NetworkPolicy for them)" $key) -}}
{{- end -}}
{{- end -}}
{{- if hasKey ($c.extra | default dict) "clients" -}}
{{- fail "config.extra.clients: set config.clients instead (the chart checks its groups against workloadIdentity)" -}}
{{- end -}}
{{- if (($c.extra | default dict).kubernetes | default dict).kubeconfig -}}
{{- fail "config.extra.kubernetes.kubeconfig: in the chart egressd reaches the API server as its pod's service account (workloadIdentity.enabled), with no kubeconfig" -}}
{{- end -}}
{{- include "egressd.workloadIdentityCheck" . -}}
{{- with $c.clients -}}
{{- $_ := set $cfg "clients" . -}}
{{- end -}}
{{- with (include "egressd.parents" . | fromYamlArray) -}}
{{- $_ := set $cfg "parents" . -}}
{{- end -}}
{{- with $c.via -}}
{{- $_ := set $cfg "via" . -}}
{{- end -}}
{{- with $c.parentsBypass -}}
{{- $_ := set $cfg "parents_bypass" . -}}
{{- end -}}
{{- $cfg = merge (deepCopy ($c.extra | default dict)) $cfg -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* The names of the config.clients groups that use workload identity (namespaces, service_accounts or
pod_labels), as a YAML list. */}}
{{- define "egressd.workloadGroups" -}}
{{- $out := list -}}
{{- range .Values.config.clients -}}
{{- if or .namespaces .service_accounts .pod_labels -}}
{{- $out = append $out .name -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* Workload identity is on exactly when a group needs it: a group naming namespaces, service accounts or pod
labels without it would never match (egressd could not list pods: no token, no RBAC), and the RBAC and token
without such a group would be granted for nothing. With the egress NetworkPolicy, the API server's address is
required. */}}
{{- define "egressd.workloadIdentityCheck" -}}
{{- $groups := include "egressd.workloadGroups" . | fromYamlArray -}}
{{- if and $groups (not .Values.workloadIdentity.enabled) -}}
{{- fail (printf "config.clients %s: namespaces, service_accounts and pod_labels need workloadIdentity.enabled=true (RBAC to watch pods, the service account token and the NetworkPolicy rule to the API server)" (join ", " $groups)) -}}
{{- end -}}
{{- if and .Values.workloadIdentity.enabled (not $groups) -}}
{{- fail "workloadIdentity.enabled: no config.clients group uses namespaces, service_accounts or pod_labels, so egressd would not watch pods; leave it off rather than grant the ClusterRole and token for nothing" -}}
{{- end -}}
{{- if and .Values.workloadIdentity.enabled .Values.networkPolicy.enabled (not .Values.apiServer.cidrs) -}}
{{- fail "apiServer.cidrs is required with workloadIdentity.enabled: egressd's egress NetworkPolicy must let it reach the API server's endpoint addresses (kubectl get endpoints kubernetes -n default), or set networkPolicy.enabled=false" -}}
{{- end -}}
{{- end -}}

{{/* The ClusterRole and ClusterRoleBinding of workload identity: cluster-scoped, so named after the release's
namespace too. */}}
{{- define "egressd.workloadIdentityName" -}}
{{- printf "%s-%s-workload-identity" (include "egressd.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/* Where the parents' credentials and CA bundles are mounted (the volume "parents" of the Deployment). */}}
{{- define "egressd.parentsDir" -}}
/etc/egressd-parents
{{- end -}}

{{/* config.parents as egressd's `parents:` (YAML list): credentials_file and ca name the files of the parents
volume, never the credentials themselves. */}}
{{- define "egressd.parents" -}}
{{- $dir := include "egressd.parentsDir" . -}}
{{- $out := list -}}
{{- range $i, $p := .Values.config.parents -}}
{{- $q := dict "name" $p.name "url" $p.url -}}
{{- with $p.connectTimeout -}}
{{- $_ := set $q "connect_timeout" . -}}
{{- end -}}
{{- with $p.resolve -}}
{{- $_ := set $q "resolve" . -}}
{{- end -}}
{{- if $p.credentials -}}
{{- $_ := set $q "credentials_file" (printf "%s/%s" $dir $p.name) -}}
{{- end -}}
{{- if $p.ca -}}
{{- if not (hasPrefix "https://" (lower $p.url)) -}}
{{- fail (printf "config.parents[%d].ca: a CA bundle verifies an https:// parent, and %s is not one" $i $p.url) -}}
{{- end -}}
{{- $_ := set $q "ca" (printf "%s/%s-ca.pem" $dir $p.name) -}}
{{- end -}}
{{- $out = append $out $q -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* The sources of the projected volume "parents": per parent, its credentials Secret key as the file NAME and
its CA bundle as NAME-ca.pem. Empty when no parent has either. */}}
{{- define "egressd.parentSources" -}}
{{- $sources := list -}}
{{- range $p := .Values.config.parents -}}
{{- with $p.credentials -}}
{{- $sources = append $sources (dict "secret" (dict "name" .secretName "items" (list (dict "key" .key "path" $p.name)))) -}}
{{- end -}}
{{- with $p.ca -}}
{{- $items := list (dict "key" .key "path" (printf "%s-ca.pem" $p.name)) -}}
{{- if .configMapName -}}
{{- $sources = append $sources (dict "configMap" (dict "name" .configMapName "items" $items)) -}}
{{- else -}}
{{- $sources = append $sources (dict "secret" (dict "name" .secretName "items" $items)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if $sources -}}
{{- toYaml $sources -}}
{{- end -}}
{{- end -}}

{{/* Where egressd's egress NetworkPolicy lets it reach each parent: YAML list of {name, cidrs, port}. The port is
url's; the CIDRs are the parent's `cidrs` plus url's host when it is an IP address (a NetworkPolicy cannot
follow a name, so a host name needs `cidrs`). */}}
{{- define "egressd.parentPeers" -}}
{{- $out := list -}}
{{- range $i, $p := .Values.config.parents -}}
{{- $hostPort := regexReplaceAll "^[A-Za-z]+://" $p.url "" | trimSuffix "/" -}}
{{- $port := regexFind "[0-9]+$" $hostPort | int -}}
{{- $host := regexReplaceAll ":[0-9]+$" $hostPort "" -}}
{{- $cidrs := list -}}
{{- if regexMatch "^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+$" $host -}}
{{- $cidrs = append $cidrs (printf "%s/32" $host) -}}
{{- else if hasPrefix "[" $host -}}
{{- $cidrs = append $cidrs (printf "%s/128" (trimAll "[]" $host)) -}}
{{- end -}}
{{- $cidrs = concat $cidrs ($p.cidrs | default list) | uniq -}}
{{- if not $cidrs -}}
{{- fail (printf "config.parents[%d].cidrs is required: %s names a host, and egressd's egress NetworkPolicy can only open addresses (give the CIDRs it resolves to, or set networkPolicy.enabled=false)" $i $p.url) -}}
{{- end -}}
{{- $out = append $out (dict "name" $p.name "cidrs" $cidrs "port" $port) -}}
{{- end -}}
{{- toYaml $out -}}
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

{{/* The agents' network, one source for their NO_PROXY and their NetworkPolicy: agentNetwork's CIDRs, or those
of agentNetwork.preset where they are empty. Returns YAML: {pods, services, kubernetesIP, domain, metadata}. */}}
{{- define "egressd.agentNetwork" -}}
{{- $n := .Values.agentNetwork -}}
{{- $presets := dict
  "gke" (dict "pods" (list "10.0.0.0/8") "services" (list "34.118.224.0/20") "kubernetesIP" "34.118.224.1")
  "eks" (dict "pods" (list "192.168.0.0/16") "services" (list "10.100.0.0/16") "kubernetesIP" "10.100.0.1")
  "aks" (dict "pods" (list "10.244.0.0/16") "services" (list "10.0.0.0/16") "kubernetesIP" "10.0.0.1")
  "custom" (dict "pods" (list) "services" (list) "kubernetesIP" "")
-}}
{{- if not (hasKey $presets ($n.preset | default "")) -}}
{{- fail "agentNetwork.preset is required for agents: gke, eks (eksctl defaults), aks or custom (then agentNetwork.podCIDRs, serviceCIDRs and kubernetesServiceIP)" -}}
{{- end -}}
{{- $p := get $presets $n.preset -}}
{{- $pods := $n.podCIDRs | default $p.pods -}}
{{- $services := $n.serviceCIDRs | default $p.services -}}
{{- $ip := $n.kubernetesServiceIP | default $p.kubernetesIP -}}
{{- if or (not $pods) (not $services) (not $ip) -}}
{{- fail "agentNetwork.podCIDRs, serviceCIDRs and kubernetesServiceIP are required with preset custom" -}}
{{- end -}}
{{- toYaml (dict "pods" $pods "services" $services "kubernetesIP" $ip "domain" (trimAll "." $n.clusterDomain) "metadata" $n.metadata) -}}
{{- end -}}

{{/* The cloud metadata endpoints agents reach directly with agentNetwork.metadata direct (the list of
`egressd noproxy suggest`), and their NetworkPolicy peers (HTTP, port 80). */}}
{{- define "egressd.metadataNoProxy" -}}
169.254.169.254,169.254.170.23,metadata.google.internal,fd00:ec2::254,[fd00:ec2::254]
{{- end -}}
{{- define "egressd.metadataCIDRs" -}}
{{- toYaml (list "169.254.169.254/32" "169.254.170.23/32" "fd00:ec2::254/128") -}}
{{- end -}}

{{/* The agents' NO_PROXY, as `egressd agent-env --pod-cidr P --service-cidr S` prints it (metadata left out when
agentNetwork.metadata is blocked). */}}
{{- define "egressd.agentNoProxy" -}}
{{- $n := include "egressd.agentNetwork" . | fromYaml -}}
{{- $v := list "localhost" "127.0.0.1" "::1" "[::1]" -}}
{{- $v = concat $v $n.pods $n.services (list $n.kubernetesIP) -}}
{{- if contains ":" $n.kubernetesIP -}}
{{- $v = append $v (printf "[%s]" $n.kubernetesIP) -}}
{{- end -}}
{{- $v = concat $v (list "kubernetes" "kubernetes.default" ".svc" (printf ".%s" $n.domain)) -}}
{{- if eq $n.metadata "direct" -}}
{{- $v = append $v (include "egressd.metadataNoProxy" .) -}}
{{- end -}}
{{- join "," $v -}}
{{- end -}}
