//! The deployment files agree with egressd and with each other: ports, probe paths and the config path in the
//! Kubernetes manifests, the Helm chart's values and the Dockerfile match the configs they ship, every shipped
//! config compiles, the agents' proxy environment is what `egressd agent-env` prints, the alert rules are the
//! same in every copy, and the dashboard and rules use only egressd's metric names.
//! (Rendering, schema validation and checkov run in deploy/check.sh.)

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

const BIN: &str = env!("CARGO_BIN_EXE_egressd");
const CONFIG_PATH: &str = "/etc/egressd/egressd.yaml";

// --- loading ---

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// Every document of a YAML file, as JSON values (so `pointer` can walk them).
fn yaml_docs(rel: &str) -> Vec<Value> {
    let docs = YamlLoader::load_from_str(&read(rel)).unwrap_or_else(|e| panic!("parse {rel}: {e}"));
    docs.iter().map(to_json).collect()
}

fn yaml_doc(rel: &str) -> Value {
    let mut docs = yaml_docs(rel);
    assert_eq!(docs.len(), 1, "{rel}: expected one YAML document");
    docs.remove(0)
}

fn to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Real(s) => s
            .parse::<f64>()
            .map(Value::from)
            .unwrap_or(Value::String(s.clone())),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        other => panic!("unsupported YAML key {other:?}"),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Yaml::Null => Value::Null,
        other => panic!("unsupported YAML value {other:?}"),
    }
}

fn at<'a>(v: &'a Value, pointer: &str) -> &'a Value {
    v.pointer(pointer)
        .unwrap_or_else(|| panic!("missing {pointer} in {v}"))
}

fn u64_at(v: &Value, pointer: &str) -> u64 {
    at(v, pointer)
        .as_u64()
        .unwrap_or_else(|| panic!("{pointer} is not a number"))
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    at(v, pointer)
        .as_str()
        .unwrap_or_else(|| panic!("{pointer} is not a string"))
}

/// The item of a list (ports, volumes, env, generators ...) whose `name` is `name`.
fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .find(|item| item["name"] == name)
        .unwrap_or_else(|| panic!("no item named {name} in {list}"))
}

/// The named port of a container or Service port list.
fn port_named(ports: &Value, name: &str, field: &str) -> u64 {
    named(ports, name)[field]
        .as_u64()
        .unwrap_or_else(|| panic!("port {name} has no {field}"))
}

/// Compile a shipped config with egressd's own loader; a broken config fails here.
fn compile(rel: &str, text: &str) -> egressd::Settings {
    egressd::config::from_yaml_str(text).unwrap_or_else(|e| panic!("{rel} does not compile:\n{e}"))
}

/// Pods on IPv6-only and dual-stack clusters are probed and reached on their IPv6 address: every listener binds
/// [::], which takes IPv4 too (egressd turns IPV6_V6ONLY off there).
fn assert_dual_stack(listen: SocketAddr, what: &str) {
    assert_eq!(
        listen.ip(),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        "{what}: {listen} is not reachable over IPv6; listen on [::]:{}",
        listen.port()
    );
}

fn admin_port(settings: &egressd::Settings, rel: &str) -> u16 {
    settings
        .listeners
        .admin
        .unwrap_or_else(|| panic!("{rel}: admin.listen is off, but probes and metrics need it"))
        .port()
}

fn kube_configs() -> Vec<&'static str> {
    vec![
        "deploy/kubernetes/base/egressd.yaml",
        "deploy/kubernetes/overlays/castai/egressd.yaml",
        "deploy/kubernetes/overlays/cloudcasa/egressd.yaml",
    ]
}

/// The base Deployment, its pod spec and its egressd container.
struct Base {
    deployment: Value,
    pod: Value,
    container: Value,
}

fn base() -> Base {
    let deployment = yaml_doc("deploy/kubernetes/base/deployment.yaml");
    let pod = at(&deployment, "/spec/template/spec").clone();
    let container = at(&pod, "/containers/0").clone();
    Base {
        deployment,
        pod,
        container,
    }
}

fn base_container() -> Value {
    base().container
}

// --- Kubernetes base and overlays ---

#[test]
fn every_kubernetes_config_compiles_and_listens_where_the_manifests_point() {
    let container = base_container();
    let proxy_port = port_named(&container["ports"], "proxy", "containerPort");
    let admin = port_named(&container["ports"], "admin", "containerPort");
    let service = yaml_doc("deploy/kubernetes/base/service.yaml");
    assert_eq!(str_at(&service, "/spec/type"), "ClusterIP");
    assert_eq!(
        str_at(&service, "/spec/ipFamilyPolicy"),
        "PreferDualStack",
        "an IPv6 ClusterIP on dual-stack clusters (and still valid on single-stack ones)"
    );
    assert_eq!(
        port_named(&service["spec"]["ports"], "proxy", "port"),
        proxy_port
    );
    assert_eq!(str_at(&service, "/spec/ports/0/targetPort"), "proxy");

    for rel in kube_configs() {
        let settings = compile(rel, &read(rel));
        assert_dual_stack(settings.listeners.listen, &format!("{rel}: listen"));
        assert_eq!(
            u64::from(settings.listeners.listen.port()),
            proxy_port,
            "{rel}: listen port vs containerPort proxy"
        );
        let admin_listen = settings.listeners.admin.expect("admin on");
        assert_dual_stack(
            admin_listen,
            &format!("{rel}: admin.listen (the kubelet probes the pod IP)"),
        );
        assert_eq!(
            u64::from(admin_port(&settings, rel)),
            admin,
            "{rel}: admin port vs containerPort admin"
        );
    }
}

#[test]
fn probes_config_path_and_drain_period_match_egressd() {
    let Base { pod, container, .. } = base();
    let pod = &pod;

    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ] {
        assert_eq!(
            str_at(&container, &format!("/{probe}/httpGet/path")),
            path,
            "{probe}"
        );
        assert_eq!(
            str_at(&container, &format!("/{probe}/httpGet/port")),
            "admin",
            "{probe}"
        );
    }

    // args: run --config /etc/egressd/egressd.yaml, the file the ConfigMap mounts.
    let args: Vec<&str> = at(&container, "/args")
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args, ["run", "--config", CONFIG_PATH]);
    let mount = named(at(&container, "/volumeMounts"), "config");
    let (dir, file) = CONFIG_PATH.rsplit_once('/').unwrap();
    assert_eq!(mount["mountPath"], dir);
    assert!(
        mount.get("subPath").is_none(),
        "a subPath mount never sees ConfigMap updates, so reloads would not happen"
    );
    let volume = named(&pod["volumes"], "config");
    assert_eq!(volume["configMap"]["name"], "egressd");
    let kustomization = yaml_doc("deploy/kubernetes/base/kustomization.yaml");
    let generator = &kustomization["configMapGenerator"][0];
    assert_eq!(generator["name"], "egressd");
    assert_eq!(
        generator["files"][0], file,
        "the ConfigMap key is the config file name"
    );
    assert_eq!(
        generator["options"]["disableNameSuffixHash"], true,
        "a hashed name would restart pods on every change"
    );

    // terminationGracePeriodSeconds covers preStop sleep + shutdown.grace + a margin, in every config.
    let term = u64_at(pod, "/terminationGracePeriodSeconds");
    let pre_stop = u64_at(&container, "/lifecycle/preStop/sleep/seconds");
    for rel in kube_configs() {
        let grace = compile(rel, &read(rel)).runtime.shutdown_grace.as_secs();
        assert_eq!(
            term,
            pre_stop + grace + 10,
            "{rel}: terminationGracePeriodSeconds vs preStop {pre_stop}s + grace {grace}s + 10s"
        );
    }
}

#[test]
fn pod_security_replicas_and_disruption_budget() {
    let Base {
        deployment,
        pod,
        container,
    } = base();
    let pod = &pod;
    assert!(
        deployment["spec"].get("replicas").is_none(),
        "the HPA owns the replica count; a fixed one is re-applied by every kubectl apply"
    );
    assert_eq!(at(pod, "/securityContext/runAsNonRoot"), true);
    assert_eq!(
        at(pod, "/enableServiceLinks"),
        false,
        "Service links inject EGRESSD_SERVICE_HOST, EGRESSD_PORT_3128_TCP_ADDR ..., read as config overrides"
    );
    assert_eq!(
        str_at(pod, "/securityContext/seccompProfile/type"),
        "RuntimeDefault"
    );
    let sc = at(&container, "/securityContext");
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    for kind in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            assert!(
                container["resources"][kind][res].is_string(),
                "resources.{kind}.{res}"
            );
        }
    }
    assert!(!pod["topologySpreadConstraints"]
        .as_array()
        .unwrap()
        .is_empty());

    let hpa = yaml_doc("deploy/kubernetes/base/horizontalpodautoscaler.yaml");
    assert!(u64_at(&hpa, "/spec/minReplicas") >= 2);
    assert_eq!(str_at(&hpa, "/spec/scaleTargetRef/kind"), "Deployment");
    assert_eq!(
        at(&hpa, "/spec/scaleTargetRef/name"),
        at(&deployment, "/metadata/name")
    );
    let pdb = yaml_doc("deploy/kubernetes/base/poddisruptionbudget.yaml");
    assert_eq!(
        at(&pdb, "/spec/selector"),
        at(&deployment, "/spec/selector")
    );
}

#[test]
fn network_policies_allow_the_proxy_ports_and_the_rule_ports() {
    let container = base_container();
    let proxy_port = port_named(&container["ports"], "proxy", "containerPort");
    let own = yaml_doc("deploy/kubernetes/base/networkpolicy.yaml");
    assert_eq!(
        at(&own, "/spec/policyTypes"),
        &serde_json::json!(["Egress"])
    );
    let tcp_ports: Vec<u64> = at(&own, "/spec/egress")
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["ports"].as_array().unwrap().iter())
        .filter(|p| p["protocol"] == "TCP")
        .filter_map(|p| p["port"].as_u64())
        .collect();
    assert!(tcp_ports.contains(&53), "DNS over TCP");
    // Every port a shipped allow rule names (443 when none) must be open for egressd's own egress.
    for rel in kube_configs() {
        let raw = yaml_doc(rel);
        let mut ports = vec![443];
        for rule in raw["allow"].as_array().unwrap() {
            ports.extend(
                rule["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_u64),
            );
        }
        for p in ports {
            assert!(
                tcp_ports.contains(&p),
                "{rel}: allow rules use port {p}, which networkpolicy.yaml blocks"
            );
        }
    }

    for (overlay, ns) in [("castai", "castai-agent"), ("cloudcasa", "cloudcasa-io")] {
        let rel = format!("deploy/kubernetes/overlays/{overlay}/agent-networkpolicy.yaml");
        let policy = yaml_doc(&rel);
        assert_eq!(str_at(&policy, "/metadata/namespace"), ns, "{rel}");
        assert_eq!(
            at(&policy, "/spec/podSelector"),
            &serde_json::json!({}),
            "{rel}: every agent pod"
        );
        let to_egressd = &at(&policy, "/spec/egress")[0];
        assert_eq!(
            to_egressd["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "egressd"
        );
        assert_eq!(
            to_egressd["to"][0]["podSelector"]["matchLabels"],
            container_labels()
        );
        let ports: Vec<u64> = to_egressd["ports"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["port"].as_u64())
            .collect();
        assert!(
            ports.contains(&proxy_port),
            "{rel}: agents must reach the proxy port"
        );
        let kustomization = yaml_doc(&format!(
            "deploy/kubernetes/overlays/{overlay}/kustomization.yaml"
        ));
        let resources = kustomization["resources"].as_array().unwrap();
        assert!(
            resources.iter().any(|r| r == "agent-networkpolicy.yaml"),
            "{overlay} includes its agent policy"
        );
    }
}

/// The JSON-patch operations of the patches (kustomization or component) that target `kind`/`name`.
fn patch_ops(kustomization: &Value, kind: &str, name: &str) -> Vec<Value> {
    kustomization["patches"]
        .as_array()
        .unwrap_or_else(|| panic!("no patches in {kustomization}"))
        .iter()
        .filter(|p| p["target"]["kind"] == kind && p["target"]["name"] == name)
        .flat_map(|p| {
            let docs = YamlLoader::load_from_str(p["patch"].as_str().unwrap()).unwrap();
            to_json(&docs[0]).as_array().unwrap().clone()
        })
        .collect()
}

fn tcp_ports(rule: &Value) -> Vec<u64> {
    rule["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["protocol"] == "TCP")
        .filter_map(|p| p["port"].as_u64())
        .collect()
}

#[test]
fn ingress_policy_admits_only_the_agents_and_prometheus() {
    let container = base_container();
    let proxy_port = port_named(&container["ports"], "proxy", "containerPort");
    let admin = port_named(&container["ports"], "admin", "containerPort");
    let tls_port = u64_at(&yaml_doc("deploy/helm/egressd/values.yaml"), "/ports/tls");
    let kustomization = yaml_doc("deploy/kubernetes/base/kustomization.yaml");
    assert!(
        kustomization["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "networkpolicy-ingress.yaml"),
        "the base ships the ingress policy"
    );
    let policy = yaml_doc("deploy/kubernetes/base/networkpolicy-ingress.yaml");
    assert_eq!(
        at(&policy, "/spec/policyTypes"),
        &serde_json::json!(["Ingress"])
    );
    assert_eq!(
        at(&policy, "/spec/podSelector/matchLabels"),
        &container_labels()
    );
    // The base admits Prometheus on the admin port, and nobody on the proxy ports.
    let rules = at(&policy, "/spec/ingress").as_array().unwrap();
    assert_eq!(
        rules.len(),
        1,
        "the base's only ingress rule is Prometheus'"
    );
    assert_eq!(tcp_ports(&rules[0]), [admin]);
    let from = &rules[0]["from"][0];
    assert!(
        from["namespaceSelector"].is_object() && from["podSelector"].is_object(),
        "{from}"
    );

    for (overlay, ns) in [("castai", "castai-agent"), ("cloudcasa", "cloudcasa-io")] {
        let k = yaml_doc(&format!(
            "deploy/kubernetes/overlays/{overlay}/kustomization.yaml"
        ));
        let ops = patch_ops(&k, "NetworkPolicy", "egressd-ingress");
        assert_eq!(ops.len(), 1, "{overlay}: one rule for its agents");
        assert_eq!(ops[0]["op"], "add");
        assert_eq!(ops[0]["path"], "/spec/ingress/-");
        let rule = &ops[0]["value"];
        assert_eq!(
            rule["from"],
            serde_json::json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}]),
            "{overlay}: its agent namespace, and only that"
        );
        assert_eq!(
            tcp_ports(rule),
            [proxy_port, tls_port],
            "{overlay}: the proxy ports"
        );
    }
}

#[test]
fn dns_components_patch_the_dns_rule_of_both_policies() {
    // The rule each component patches, by index, is the DNS rule (UDP and TCP 53) in the base and overlay files.
    let own = yaml_doc("deploy/kubernetes/base/networkpolicy.yaml");
    let agents = yaml_doc("deploy/kubernetes/overlays/castai/agent-networkpolicy.yaml");
    let cloudcasa = yaml_doc("deploy/kubernetes/overlays/cloudcasa/agent-networkpolicy.yaml");
    let kube_dns = serde_json::json!([{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }]);
    let dns_ports =
        serde_json::json!([{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]);
    for (policy, name, index) in [
        (&own, "egressd-egress", 0),
        (&agents, "egress-through-egressd", 1),
        (&cloudcasa, "egress-through-egressd", 1),
    ] {
        assert_eq!(str_at(policy, "/metadata/name"), name);
        let rule = &at(policy, "/spec/egress")[index];
        assert_eq!(rule["ports"], dns_ports, "{name}: rule {index} is DNS");
        assert_eq!(
            rule["to"], kube_dns,
            "{name}: the default is the kube-dns pods"
        );
    }
    for (component, op, address) in [
        ("dns-gke-cloud-dns", "replace", "169.254.169.254/32"),
        ("dns-node-local", "add", "169.254.20.10/32"),
    ] {
        let k = yaml_doc(&format!(
            "deploy/kubernetes/components/{component}/kustomization.yaml"
        ));
        for (name, index) in [("egressd-egress", 0), ("egress-through-egressd", 1)] {
            let ops = patch_ops(&k, "NetworkPolicy", name);
            assert_eq!(
                ops.len(),
                2,
                "{component} {name}: a test op, then the change"
            );
            assert_eq!(
                ops[0]["op"], "test",
                "{component} {name}: the index is checked first"
            );
            assert_eq!(ops[0]["path"], format!("/spec/egress/{index}/ports/0/port"));
            assert_eq!(ops[0]["value"], 53);
            assert_eq!(ops[1]["op"], op, "{component} {name}");
            let peer = serde_json::json!({"ipBlock": {"cidr": address}});
            match op {
                "replace" => {
                    assert_eq!(ops[1]["path"], format!("/spec/egress/{index}/to"));
                    assert_eq!(ops[1]["value"], serde_json::json!([peer]));
                }
                _ => {
                    assert_eq!(ops[1]["path"], format!("/spec/egress/{index}/to/-"));
                    assert_eq!(ops[1]["value"], peer);
                }
            }
        }
    }
    // The chart's presets name the same addresses.
    let helpers = read("deploy/helm/egressd/templates/_helpers.tpl");
    for (preset, address) in [
        ("gke-cloud-dns", "169.254.169.254/32"),
        ("node-local-dns", "169.254.20.10/32"),
    ] {
        assert!(
            helpers.contains(&format!("\"{preset}\"")),
            "preset {preset}"
        );
        assert!(
            helpers.contains(&format!("\"cidr\" \"{address}\"")),
            "preset {preset}: {address}"
        );
    }
    let schema: Value =
        serde_json::from_str(&read("deploy/helm/egressd/values.schema.json")).unwrap();
    assert_eq!(
        at(
            &schema,
            "/properties/networkPolicy/properties/dns/properties/preset/enum"
        ),
        &serde_json::json!(["kube-dns", "gke-cloud-dns", "node-local-dns", "custom"])
    );
}

/// Every key of a values tree, as a path ("networkPolicy.dns.preset"), stopping at free-form maps.
fn check_in_schema(values: &Value, schema: &Value, path: &str, missing: &mut Vec<String>) {
    let Some(map) = values.as_object() else {
        return;
    };
    let Some(props) = schema["properties"].as_object() else {
        return; // a free-form object (resources, config.extra, labels ...)
    };
    for (k, v) in map {
        let key = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        match props.get(k) {
            Some(s) => check_in_schema(v, s, &key, missing),
            None => missing.push(key),
        }
    }
}

#[test]
fn every_chart_value_is_in_the_schema() {
    let schema: Value =
        serde_json::from_str(&read("deploy/helm/egressd/values.schema.json")).unwrap();
    let mut files = vec!["deploy/helm/egressd/values.yaml".to_string()];
    files.extend(ci_values_files());
    for rel in files {
        let mut missing = Vec::new();
        check_in_schema(&yaml_doc(&rel), &schema, "", &mut missing);
        assert!(
            missing.is_empty(),
            "{rel}: values not in values.schema.json: {missing:?}"
        );
    }
}

fn ci_values_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(repo("deploy/helm/egressd/ci"))
        .unwrap()
        .map(|e| {
            format!(
                "deploy/helm/egressd/ci/{}",
                e.unwrap().file_name().to_string_lossy()
            )
        })
        .filter(|f| f.ends_with(".yaml"))
        .collect();
    files.sort();
    files
}

/// The comma-separated names a values.yaml comment line lists after `marker`, up to `end`.
fn listed_after(text: &str, marker: &str, end: char) -> Vec<String> {
    let start = text
        .find(marker)
        .unwrap_or_else(|| panic!("values.yaml: no comment {marker:?}"))
        + marker.len();
    let rest = &text[start..];
    let list = &rest[..rest.find(end).unwrap()];
    list.split([',', '|'])
        .map(|s| {
            s.trim_matches(|c: char| c.is_whitespace() || c == '#')
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

#[test]
fn ci_values_exercise_every_key_the_values_comments_suggest() {
    // check.sh renders every ci/*.yaml and runs `egressd validate` on its config: a key the comments
    // suggest but egressd rejects then fails there.
    let text = read("deploy/helm/egressd/values.yaml");
    let ci: Vec<Value> = ci_values_files().iter().map(|f| yaml_doc(f)).collect();
    let extra_keys = listed_after(&text, "Any other top-level keys, written as given:", '.');
    assert!(extra_keys.len() >= 8, "{extra_keys:?}");
    for key in &extra_keys {
        assert!(
            ci.iter()
                .any(|v| v["config"]["extra"].get(key.as_str()).is_some()),
            "config.extra.{key} is suggested in values.yaml but set in no ci/*.yaml"
        );
    }
    let rule_keys = listed_after(&text, "Extra allow rules: [{", '}');
    for key in &rule_keys {
        assert!(
            ci.iter().any(|v| v["config"]["allow"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r.get(key.as_str()).is_some())),
            "config.allow[].{key} is suggested in values.yaml but set in no ci/*.yaml"
        );
    }
    // Every key of a parent the comments describe is in the schema and set in a ci/*.yaml, but `ca` (an https://
    // parent's CA bundle), which check.sh renders on its own since the binary under test may not take it yet.
    let schema: Value =
        serde_json::from_str(&read("deploy/helm/egressd/values.schema.json")).unwrap();
    let parent_schema = at(
        &schema,
        "/properties/config/properties/parents/items/properties",
    )
    .as_object()
    .unwrap();
    let block = &text[text
        .find("as `parents:`. Each item:")
        .expect("parents comment")..];
    let block = &block[..block.find("  parents: []").unwrap()];
    let described: Vec<&str> = block
        .lines()
        .skip(1)
        .filter_map(|l| l.strip_prefix("  #   "))
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut in_schema: Vec<&str> = parent_schema.keys().map(String::as_str).collect();
    in_schema.sort();
    let mut sorted = described.clone();
    sorted.sort();
    assert_eq!(sorted, in_schema, "values.yaml describes these parent keys");
    for key in described {
        if key == "ca" {
            assert!(
                read("deploy/check.sh").contains("ca: {configMapName:"),
                "check.sh renders a parent's ca"
            );
            continue;
        }
        assert!(
            ci.iter().any(|v| v["config"]["parents"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p.get(key).is_some())),
            "config.parents[].{key} is described in values.yaml but set in no ci/*.yaml"
        );
    }
    for key in ["via", "parentsBypass"] {
        assert!(
            ci.iter().any(|v| v["config"].get(key).is_some()),
            "config.{key} set in no ci/*.yaml"
        );
    }
    // The destinations.allow_cidrs and rule ports the chart opens in egressd's egress policy are exercised.
    assert!(ci.iter().any(|v| v
        .pointer("/config/extra/destinations/allow_cidrs")
        .is_some()));
    assert!(
        ci.iter().any(|v| v["config"]["allow"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| {
                r["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(Value::is_string)
            })),
        "a port range"
    );
    for preset in ["gke-cloud-dns", "node-local-dns"] {
        assert!(
            ci.iter()
                .any(|v| v.pointer("/networkPolicy/dns/preset") == Some(&Value::from(preset))),
            "DNS preset {preset} in no ci/*.yaml"
        );
    }
    for pointer in [
        "/metrics/serviceMonitor/labels",
        "/alerts/prometheusRule/labels",
    ] {
        assert!(
            ci.iter().any(|v| v
                .pointer(pointer)
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty())),
            "{pointer} set in no ci/*.yaml"
        );
    }
}

#[test]
fn monitoring_example_labels_the_servicemonitor_and_rules_for_prometheus() {
    let k = yaml_doc("deploy/kubernetes/examples/castai-monitoring-tls/kustomization.yaml");
    let patch = &k["patches"][0];
    let kinds: Vec<&str> = str_at(patch, "/target/kind").split('|').collect();
    assert_eq!(kinds, ["ServiceMonitor", "PrometheusRule"]);
    let docs = YamlLoader::load_from_str(str_at(patch, "/patch")).unwrap();
    let ops = to_json(&docs[0]);
    assert_eq!(ops[0]["path"], "/metadata/labels/release");
    for rel in [
        "deploy/kubernetes/components/monitoring/servicemonitor.yaml",
        "deploy/kubernetes/components/monitoring/prometheusrule.yaml",
    ] {
        assert!(
            at(&yaml_doc(rel), "/metadata/labels").is_object(),
            "{rel}: the patch adds to its labels"
        );
    }
    for template in ["servicemonitor.yaml", "prometheusrule.yaml"] {
        let text = read(&format!("deploy/helm/egressd/templates/{template}"));
        assert!(
            text.contains(".labels }}"),
            "{template} takes its labels from the values"
        );
    }
}

fn container_labels() -> Value {
    let deployment = yaml_doc("deploy/kubernetes/base/deployment.yaml");
    at(&deployment, "/spec/template/metadata/labels").clone()
}

#[test]
fn tls_component_listens_where_its_ports_point() {
    let k = yaml_doc("deploy/kubernetes/components/tls-listener/kustomization.yaml");
    let patches = k["patches"].as_array().unwrap();
    let ops = |kind: &str| -> Vec<Value> {
        let p = patches
            .iter()
            .find(|p| p["target"]["kind"] == kind)
            .unwrap();
        let docs = YamlLoader::load_from_str(p["patch"].as_str().unwrap()).unwrap();
        to_json(&docs[0]).as_array().unwrap().clone()
    };
    let deployment_ops = ops("Deployment");
    let value_at = |path: &str| -> &Value {
        &deployment_ops
            .iter()
            .find(|o| o["path"] == path)
            .unwrap_or_else(|| panic!("no op for {path}"))["value"]
    };
    let env = value_at("/spec/template/spec/containers/0/env");
    let env_var = |name: &str| -> &str { named(env, name)["value"].as_str().unwrap() };
    let listen: SocketAddr = env_var("EGRESSD_LISTEN_TLS").parse().unwrap();
    assert_dual_stack(listen, "tls-listener EGRESSD_LISTEN_TLS");
    let port = value_at("/spec/template/spec/containers/0/ports/-");
    assert_eq!(port["name"], "proxy-tls");
    assert_eq!(
        port["containerPort"].as_u64(),
        Some(u64::from(listen.port()))
    );
    let mount_dir = value_at("/spec/template/spec/containers/0/volumeMounts/-")["mountPath"]
        .as_str()
        .unwrap();
    assert_eq!(env_var("EGRESSD_TLS__CERT"), format!("{mount_dir}/tls.crt"));
    assert_eq!(env_var("EGRESSD_TLS__KEY"), format!("{mount_dir}/tls.key"));
    assert!(
        !mount_dir.starts_with("/etc/egressd/"),
        "a mount inside the read-only ConfigMap volume cannot be created"
    );
    let service_ops = ops("Service");
    assert_eq!(
        service_ops[0]["value"]["port"].as_u64(),
        Some(u64::from(listen.port()))
    );
    assert_eq!(service_ops[0]["value"]["targetPort"], "proxy-tls");
}

/// The data of a Secret of deploy/install-secrets.yaml (the Secrets the user creates at install, which the
/// checks and the pod emulation stand in for).
fn install_secret(namespace: &str, name: &str) -> serde_json::Map<String, Value> {
    yaml_docs("deploy/install-secrets.yaml")
        .into_iter()
        .find(|s| s["metadata"]["namespace"] == namespace && s["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("deploy/install-secrets.yaml has no Secret {namespace}/{name}"))
        ["stringData"]
        .as_object()
        .unwrap()
        .clone()
}

/// A config whose files under `mount` (a Secret mount in the pod) are read from `secret` instead, compiled.
fn compile_with_secret(
    rel: &str,
    text: &str,
    mount: &str,
    secret: &serde_json::Map<String, Value>,
) -> egressd::Settings {
    let dir = tempfile::tempdir().unwrap();
    for (key, value) in secret {
        std::fs::write(dir.path().join(key), value.as_str().unwrap()).unwrap();
    }
    let text = text.replace(
        &format!("{mount}/"),
        &format!("{}/", dir.path().to_str().unwrap()),
    );
    compile(rel, &text)
}

/// `http://host:port` → (host, port).
fn parent_host_port(url: &str) -> (String, u64) {
    let rest = url
        .split_once("://")
        .expect("scheme://")
        .1
        .trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':').expect("host:port");
    (
        host.trim_matches(|c| c == '[' || c == ']').to_string(),
        port.parse().expect("port"),
    )
}

#[test]
fn parent_proxy_component_mounts_the_credentials_the_example_config_names() {
    let k = yaml_doc("deploy/kubernetes/components/parent-proxy/kustomization.yaml");
    assert_eq!(str_at(&k, "/kind"), "Component");
    let ops = patch_ops(&k, "Deployment", "egressd");
    let value_at = |path: &str| -> &Value {
        &ops.iter()
            .find(|o| o["op"] == "add" && o["path"] == path)
            .unwrap_or_else(|| panic!("no add op for {path}"))["value"]
    };
    let mount = value_at("/spec/template/spec/containers/0/volumeMounts/-");
    let volume = value_at("/spec/template/spec/volumes/-");
    assert_eq!(mount["name"], volume["name"]);
    assert_eq!(
        mount["readOnly"], true,
        "the credentials are mounted read-only"
    );
    assert!(
        mount.get("subPath").is_none(),
        "a subPath mount never sees the Secret's updates"
    );
    let dir = str_at(mount, "/mountPath");
    assert!(
        !dir.starts_with("/etc/egressd/"),
        "a mount inside the read-only ConfigMap volume cannot be created"
    );
    let secret_name = str_at(volume, "/secret/secretName");
    assert_eq!(
        u64_at(volume, "/secret/defaultMode"),
        0o440,
        "owner and group (fsGroup) read"
    );
    // The chart mounts its parents' files at the same place.
    let helpers = read("deploy/helm/egressd/templates/_helpers.tpl");
    assert!(
        helpers.contains(&format!("define \"egressd.parentsDir\" -}}}}\n{dir}\n")),
        "the chart's egressd.parentsDir is {dir} too"
    );

    // The example: the castai overlay's config plus the parents, whose credentials file is a key of that
    // Secret at that mount; with the Secret's content (install-secrets.yaml) it compiles and egressd sends it.
    let ex = "deploy/kubernetes/examples/castai-parent-proxy";
    let kustomization = yaml_doc(&format!("{ex}/kustomization.yaml"));
    assert_eq!(
        kustomization["components"],
        serde_json::json!(["../../components/parent-proxy"])
    );
    assert_eq!(
        kustomization["resources"],
        serde_json::json!(["../../overlays/castai"])
    );
    let generator = named(&kustomization["configMapGenerator"], "egressd");
    assert_eq!(generator["behavior"], "replace");
    assert_eq!(generator["files"], serde_json::json!(["egressd.yaml"]));
    let rel = format!("{ex}/egressd.yaml");
    let text = read(&rel);
    let mut config = yaml_doc(&rel);
    let parents = config["parents"].as_array().expect("parents").clone();
    assert!(!parents.is_empty());
    let secret = install_secret("egressd", secret_name);
    for p in &parents {
        let file = str_at(p, "/credentials_file");
        let key = file
            .strip_prefix(&format!("{dir}/"))
            .unwrap_or_else(|| panic!("{rel}: {file} is not in the mount {dir}"));
        assert!(
            secret.contains_key(key),
            "{rel}: {file} is key {key} of Secret {secret_name}, which install-secrets.yaml lacks"
        );
    }
    let settings = compile_with_secret(&rel, &text, dir, &secret);
    let compiled = &settings.runtime.routes.parents;
    assert_eq!(compiled.len(), parents.len());
    for (p, c) in parents.iter().zip(compiled) {
        let key = str_at(p, "/credentials_file").rsplit('/').next().unwrap();
        let expected = format!(
            "Basic {}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                secret[key].as_str().unwrap().trim_end()
            )
        );
        assert_eq!(
            c.authorization.as_deref(),
            Some(expected.as_str()),
            "{rel}: parent {} sends the Secret's user:password",
            c.name
        );
    }
    let overlay = yaml_doc("deploy/kubernetes/overlays/castai/egressd.yaml");
    for key in ["parents", "via", "parents_bypass"] {
        config.as_object_mut().unwrap().remove(key);
    }
    assert_eq!(
        config, overlay,
        "{rel} is the castai overlay's config plus parents, via and parents_bypass"
    );

    // Its NetworkPolicy opens the parent's addresses, on the port of its url, and names them per parent.
    let policy = yaml_doc("deploy/kubernetes/components/parent-proxy/networkpolicy.yaml");
    assert_eq!(
        at(&policy, "/spec/podSelector/matchLabels"),
        &container_labels()
    );
    assert_eq!(
        at(&policy, "/spec/policyTypes"),
        &serde_json::json!(["Egress"])
    );
    let ex_ops = patch_ops(&kustomization, "NetworkPolicy", "egressd-egress-parents");
    let replaced = |path: &str| -> &Value {
        &ex_ops
            .iter()
            .find(|o| o["op"] == "replace" && o["path"] == path)
            .unwrap_or_else(|| panic!("{ex}: no replace op for {path}"))["value"]
    };
    let annotation: Value = serde_json::from_str(
        replaced("/metadata/annotations/egressd.io~1parent-cidrs")
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let to: Vec<&str> = replaced("/spec/egress/0/to")
        .as_array()
        .unwrap()
        .iter()
        .map(|peer| str_at(peer, "/ipBlock/cidr"))
        .collect();
    assert!(
        at(&policy, "/metadata/annotations/egressd.io~1parent-cidrs").is_string(),
        "the component's policy names its parents' CIDRs"
    );
    for p in &parents {
        let name = str_at(p, "/name");
        let cidrs: Vec<&str> = annotation[name]
            .as_array()
            .unwrap_or_else(|| panic!("{ex}: the annotation names no CIDR for parent {name}"))
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(
            cidrs, to,
            "{ex}: the annotation and the ipBlocks of parent {name}"
        );
        let (_, port) = parent_host_port(str_at(p, "/url"));
        assert_eq!(
            tcp_ports(&at(&policy, "/spec/egress")[0]),
            [port],
            "{ex}: parent {name}'s port"
        );
    }
}

#[test]
fn chart_mounts_each_parents_credentials_where_its_config_points() {
    // check.sh renders ci/parents-values.yaml and checks the render (deploy/check_rendered.py); here the
    // templates' shared pieces: one directory for the parents' files, each credentials file named after its
    // parent in both the config and the projected volume, the mount read-only and never subPath.
    let helpers = read("deploy/helm/egressd/templates/_helpers.tpl");
    for piece in [
        r#"set $q "credentials_file" (printf "%s/%s" $dir $p.name)"#,
        r#"(dict "key" .key "path" $p.name)"#,
        r#"set $q "ca" (printf "%s/%s-ca.pem" $dir $p.name)"#,
        r#""path" (printf "%s-ca.pem" $p.name)"#,
    ] {
        assert!(helpers.contains(piece), "_helpers.tpl lacks {piece}");
    }
    let deployment = read("deploy/helm/egressd/templates/deployment.yaml");
    let mount = deployment
        .find("- name: parents\n              mountPath: {{ include \"egressd.parentsDir\" . }}\n              readOnly: true")
        .expect("the parents volume is mounted read-only at egressd.parentsDir");
    let block = &deployment[mount..];
    assert!(
        !block[..block.find("{{- end }}").unwrap()].contains("subPath"),
        "the parents volume is mounted as a directory: a subPath mount never sees the Secrets' updates"
    );
    assert!(deployment.contains("- name: parents\n          projected:"));
    // The parents' CIDRs and ports reach egressd's egress NetworkPolicy.
    let policy = read("deploy/helm/egressd/templates/networkpolicy.yaml");
    assert!(policy.contains(r#"include "egressd.parentPeers" ."#));
    assert!(policy.contains("egressd.io/parent-cidrs"));

    // The ci values: a parent by name with its CIDRs and credentials, one by IP address, a route and bypass
    // entries; their config, as the chart writes it, compiles with the Secret of install-secrets.yaml.
    let values = yaml_doc("deploy/helm/egressd/ci/parents-values.yaml");
    let parents = at(&values, "/config/parents").as_array().unwrap();
    let by_name = parents
        .iter()
        .find(|p| p.get("cidrs").is_some() && p.get("credentials").is_some())
        .expect("a parent by name, with cidrs and credentials");
    assert!(parent_host_port(str_at(by_name, "/url"))
        .0
        .parse::<IpAddr>()
        .is_err());
    assert!(
        parents.iter().any(|p| parent_host_port(str_at(p, "/url"))
            .0
            .parse::<IpAddr>()
            .is_ok()
            && p.get("cidrs").is_none()),
        "a parent by IP address, opened without cidrs"
    );
    let dir = "/etc/egressd-parents";
    let mut config = format!(
        "listen: \"[::]:3128\"\nvendors: {}\nallow: {}\nvia: {}\nparents_bypass: {}\nparents:\n",
        at(&values, "/config/vendors"),
        at(&values, "/config/allow"),
        at(&values, "/config/via"),
        at(&values, "/config/parentsBypass"),
    );
    let mut secrets = serde_json::Map::new();
    for p in parents {
        let name = str_at(p, "/name");
        config.push_str(&format!(
            "  - name: {name}\n    url: {}\n",
            str_at(p, "/url")
        ));
        for (value, key) in [
            ("connectTimeout", "connect_timeout"),
            ("resolve", "resolve"),
        ] {
            if let Some(v) = p.get(value) {
                config.push_str(&format!("    {key}: {}\n", v.as_str().unwrap()));
            }
        }
        if let Some(c) = p.get("credentials") {
            let secret = install_secret("egressd", str_at(c, "/secretName"));
            let content = secret
                .get(str_at(c, "/key"))
                .expect("the Secret's key in install-secrets.yaml");
            secrets.insert(name.to_string(), content.clone());
            config.push_str(&format!("    credentials_file: {dir}/{name}\n"));
        }
    }
    let settings = compile_with_secret(
        "deploy/helm/egressd/ci/parents-values.yaml",
        &config,
        dir,
        &secrets,
    );
    assert_eq!(settings.runtime.routes.parents.len(), parents.len());
}

#[test]
fn agent_proxy_env_is_what_egressd_agent_env_prints() {
    let service = yaml_doc("deploy/kubernetes/base/service.yaml");
    let port = port_named(&service["spec"]["ports"], "proxy", "port");
    let url = format!("http://egressd.egressd.svc:{port}");
    let agent_env = |vendor: &str, ns: &str, pods: &str, services: &str| -> Vec<String> {
        let out = Command::new(BIN)
            .args([
                "agent-env",
                "--proxy-url",
                &url,
                "--vendor",
                vendor,
                "--namespace",
                ns,
            ])
            .args(["--pod-cidr", pods, "--service-cidr", services])
            .output()
            .expect("run egressd agent-env");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        env_lines(&String::from_utf8(out.stdout).unwrap())
    };
    // The chart generates the overlays' files from their agent-network.yaml (deploy/agent_network.py, checked
    // by deploy/check.sh); the NO_PROXY is the one agent-env prints for the preset's default ranges.
    let helpers = read("deploy/helm/egressd/templates/_helpers.tpl");
    for (overlay, vendor, ns, preset, pods, services) in [
        (
            "castai",
            "castai-us",
            "castai-agent",
            "gke",
            "10.0.0.0/8",
            "34.118.224.0/20",
        ),
        (
            "cloudcasa",
            "cloudcasa",
            "cloudcasa-io",
            "eks",
            "192.168.0.0/16",
            "10.100.0.0/16",
        ),
    ] {
        let network = yaml_doc(&format!(
            "deploy/kubernetes/overlays/{overlay}/agent-network.yaml"
        ));
        assert_eq!(
            str_at(&network, "/agentNetwork/preset"),
            preset,
            "{overlay}"
        );
        assert!(
            helpers.contains(&format!(
                "\"{preset}\" (dict \"pods\" (list \"{pods}\") \"services\" (list \"{services}\")"
            )),
            "the chart's {preset} preset"
        );
        let rel = format!("deploy/kubernetes/overlays/{overlay}/agent-proxy.env");
        let shipped = env_lines(&read(&rel));
        assert_eq!(
            shipped,
            agent_env(vendor, ns, pods, services),
            "{rel}: regenerate it with the command in its header"
        );
        assert!(shipped.contains(&format!("HTTPS_PROXY={url}")));
        let kustomization = yaml_doc(&format!(
            "deploy/kubernetes/overlays/{overlay}/kustomization.yaml"
        ));
        let generator = named(&kustomization["configMapGenerator"], "egressd-proxy-env");
        assert_eq!(generator["namespace"], ns);
        assert_eq!(generator["envs"][0], "agent-proxy.env");
    }
}

fn env_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| {
            l.split_once('=').is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_alphabetic() || c == '_')
            })
        })
        .map(str::to_string)
        .collect()
}

// --- container image ---

#[test]
fn dockerfile_matches_ci_and_the_manifests() {
    let dockerfile = read("Dockerfile");
    let lines: Vec<&str> = dockerfile.lines().map(str::trim).collect();
    // The same build command as CI.
    let ci = read(".ci/run");
    let build = lines
        .iter()
        .find(|l| l.starts_with("RUN cargo build"))
        .expect("RUN cargo build");
    let command = build.trim_start_matches("RUN ");
    assert!(
        ci.lines().any(|l| l.trim() == command),
        "Dockerfile builds with `{command}`, which .ci/run does not run"
    );

    let cmd = lines.iter().find(|l| l.starts_with("CMD ")).expect("CMD");
    let cmd: Vec<String> =
        serde_json::from_str(cmd.trim_start_matches("CMD ")).expect("CMD in exec form");
    assert_eq!(cmd, ["run", "--config", CONFIG_PATH]);

    // The config baked into the image is the one CMD names, compiles, and listens on the exposed ports.
    let copy = lines
        .iter()
        .find(|l| l.starts_with("COPY ") && l.ends_with(CONFIG_PATH))
        .expect("COPY of the config");
    let src = copy.split_whitespace().nth(1).unwrap();
    let settings = compile(src, &read(src));
    let exposed: Vec<u16> = lines
        .iter()
        .filter(|l| l.starts_with("EXPOSE "))
        .flat_map(|l| l.split_whitespace().skip(1))
        .map(|p| p.parse().expect("EXPOSE port"))
        .collect();
    assert_dual_stack(settings.listeners.listen, &format!("{src}: listen"));
    assert_dual_stack(
        settings.listeners.admin.expect("admin on"),
        &format!("{src}: admin.listen"),
    );
    assert!(exposed.contains(&settings.listeners.listen.port()));
    assert!(exposed.contains(&admin_port(&settings, src)));
    let container = base_container();
    for name in ["proxy", "admin"] {
        let port = port_named(&container["ports"], name, "containerPort");
        assert!(
            exposed.contains(&(port as u16)),
            "containerPort {name} {port} is not EXPOSEd"
        );
    }
    let tls = yaml_doc("deploy/helm/egressd/values.yaml");
    assert!(
        exposed.contains(&(u64_at(&tls, "/ports/tls") as u16)),
        "the TLS port is not EXPOSEd"
    );

    // A numeric non-root user, the one the pod security context names.
    let user = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("USER "))
        .expect("USER");
    let uid: u64 = user[5..]
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("numeric UID");
    assert_ne!(uid, 0);
    assert_eq!(u64_at(&container, "/securityContext/runAsUser"), uid);
    for label in ["title", "description", "licenses", "version"] {
        assert!(
            dockerfile.contains(&format!("org.opencontainers.image.{label}=")),
            "OCI label {label}"
        );
    }
    // The build context keeps target/ out but the image's config in.
    let ignore = read(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target/"));
    assert!(!ignore
        .lines()
        .any(|l| src.starts_with(l.trim().trim_end_matches('/')) && !l.trim().is_empty()));
}

// --- Helm chart ---

#[test]
fn helm_values_match_the_base() {
    let values = yaml_doc("deploy/helm/egressd/values.yaml");
    let container = base_container();
    assert_eq!(
        u64_at(&values, "/ports/proxy"),
        port_named(&container["ports"], "proxy", "containerPort")
    );
    assert_eq!(
        u64_at(&values, "/ports/admin"),
        port_named(&container["ports"], "admin", "containerPort")
    );
    let tls = yaml_doc("deploy/kubernetes/components/tls-listener/kustomization.yaml");
    assert!(tls["patches"][0]["patch"]
        .as_str()
        .unwrap()
        .contains(&format!("containerPort: {}", u64_at(&values, "/ports/tls"))));
    let base_config = compile("base", &read("deploy/kubernetes/base/egressd.yaml"));
    assert_eq!(
        u64_at(&values, "/shutdown/graceSeconds"),
        base_config.runtime.shutdown_grace.as_secs()
    );
    assert!(u64_at(&values, "/replicas") >= 2);
    assert!(u64_at(&values, "/autoscaling/minReplicas") >= 2);

    // The chart's config from its default values compiles (the template writes these keys; check.sh renders
    // it with Helm and runs `egressd validate`).
    let config = format!(
        "listen: \"[::]:{}\"\nmode: {}\nvendors: {}\nvendors_disable: []\nallow: []\ndeny: []\nadmin: {{listen: \"[::]:{}\"}}\nshutdown: {{grace: {}s}}\n",
        u64_at(&values, "/ports/proxy"),
        str_at(&values, "/config/mode"),
        at(&values, "/config/vendors"),
        u64_at(&values, "/ports/admin"),
        u64_at(&values, "/shutdown/graceSeconds"),
    );
    compile("deploy/helm/egressd/values.yaml", &config);
    let chart = yaml_doc("deploy/helm/egressd/Chart.yaml");
    assert_eq!(
        str_at(&chart, "/appVersion"),
        env!("CARGO_PKG_VERSION"),
        "chart appVersion vs Cargo.toml version"
    );
}

// --- alerts and dashboard ---

/// The metric families egressd exports (tests/metrics.rs checks this list against a live /metrics), and
/// the histograms among them, whose series add _bucket/_sum/_count.
use egressd::telemetry::metrics::{self as exported, METRIC_NAMES as METRICS};
const HISTOGRAMS: &[&str] = &[
    exported::TUNNEL_DURATION,
    exported::DNS_LOOKUP,
    exported::UPSTREAM_CONNECT,
];

/// Every `egressd_...` identifier in a text.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("egressd_") {
        let before = rest[..i].chars().next_back();
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.push(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

fn known_metric(name: &str) -> bool {
    METRICS.contains(&name)
        // Exported once a parent proxy was asked (METRIC_NAMES lists the families every /metrics shows; the pod
        // emulation of deploy/check.sh reads this one after requests through a parent).
        || name == exported::PARENT_ATTEMPTS
        // Shown once the configuration has a long-lived rule, and with workload identity configured.
        || name == exported::CONTROL_CONNECTIONS
        || name == exported::SHADOW_DISAGREEMENTS
        || name == exported::FRAGMENTS
        || name.starts_with("egressd_workload_")
        // One series per allow rule: absent from a configuration without any (tests/metrics.rs reads it).
        || name == exported::RULE_LAST_MATCH
        || HISTOGRAMS.iter().any(|h| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| name == format!("{h}{s}"))
        })
}

#[test]
fn alert_rules_are_the_same_everywhere_and_cover_the_failure_modes() {
    let rules = yaml_doc("deploy/prometheus/egressd-rules.yaml");
    let component = yaml_doc("deploy/kubernetes/components/monitoring/prometheusrule.yaml");
    let chart_copy = yaml_doc("deploy/helm/egressd/files/egressd-rules.yaml");
    assert_eq!(
        at(&component, "/spec/groups"),
        at(&rules, "/groups"),
        "components/monitoring/prometheusrule.yaml"
    );
    assert_eq!(
        at(&chart_copy, "/groups"),
        at(&rules, "/groups"),
        "helm files/egressd-rules.yaml"
    );

    let all: Vec<&Value> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    let expr_of = |alert: &str| -> String {
        let rule = all
            .iter()
            .find(|r| r["alert"] == alert)
            .unwrap_or_else(|| panic!("no alert {alert}"));
        assert!(rule["labels"]["severity"].is_string(), "{alert}: severity");
        assert!(
            rule["annotations"]["summary"].is_string(),
            "{alert}: summary"
        );
        rule["expr"].as_str().unwrap().to_string()
    };
    assert!(expr_of("EgressdDown").contains("up{job=\"egressd\"}"));
    assert!(expr_of("EgressdDenySpike").contains("egressd_decisions_total{decision=\"deny\"}"));
    assert!(expr_of("EgressdConfigReloadFailed")
        .contains("egressd_config_reloads_total{result=\"error\"}"));
    assert!(expr_of("EgressdConnectionLimit")
        .contains("egressd_connections_rejected_total{reason=\"connection_limit\"}"));
    for rule in &all {
        for name in metric_names(rule["expr"].as_str().unwrap()) {
            assert!(
                known_metric(&name),
                "alert {}: unknown metric {name}",
                rule["alert"]
            );
        }
    }
    // The ServiceMonitor scrapes the admin port's /metrics.
    let sm = yaml_doc("deploy/kubernetes/components/monitoring/servicemonitor.yaml");
    assert_eq!(str_at(&sm, "/spec/endpoints/0/port"), "admin");
    assert_eq!(str_at(&sm, "/spec/endpoints/0/path"), "/metrics");
}

#[test]
fn dashboard_uses_only_egressd_metrics_and_shows_the_essentials() {
    let text = read("deploy/grafana/egressd.json");
    let dashboard: Value = serde_json::from_str(&text).expect("dashboard JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| t["expr"].as_str().expect("expr").to_string())
        .collect();
    assert!(!exprs.is_empty());
    for expr in &exprs {
        for name in metric_names(expr) {
            assert!(
                known_metric(&name),
                "dashboard: unknown metric {name} in {expr}"
            );
        }
    }
    let joined = exprs.join("\n");
    for needed in [
        "sum by (reason) (rate(egressd_decisions_total",
        "egressd_tunnels_active",
        "egressd_bytes_total",
        "egressd_config_reloads_total",
        "sum by (client_group, decision) (rate(egressd_decisions_total",
        "sum by (parent, result) (rate(egressd_parent_attempts_total",
    ] {
        assert!(joined.contains(needed), "dashboard lacks {needed}");
    }
    // The parents' failures: every result but a 2xx, per parent and result.
    let errors = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == "Parent proxy errors")
        .expect("a panel \"Parent proxy errors\"");
    let expr = str_at(errors, "/targets/0/expr");
    assert!(
        expr.starts_with("sum by (parent, result) (rate(egressd_parent_attempts_total{")
            && expr.contains(r#"result!~"2..""#),
        "Parent proxy errors: per parent and result, the non-2xx attempts: {expr}"
    );
    // Stale rules: every allow rule in force by time since its last match over the range, across restarts
    // (max_over_time) and replicas (max by rule), without the rules a reload removed (and on the series now).
    let stale = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == "Allow rules by time since last match")
        .expect("a panel \"Allow rules by time since last match\"");
    assert_eq!(stale["type"], "table");
    let expr = str_at(stale, "/targets/0/expr");
    assert!(
        expr.contains("max by (rule) (max_over_time(egressd_rule_last_match_timestamp_seconds{")
            && expr
                .contains("[$__range])) and on (rule) egressd_rule_last_match_timestamp_seconds{")
            && expr.starts_with("sort_desc(time() - "),
        "stale rules panel: {expr}"
    );
    assert_eq!(str_at(stale, "/fieldConfig/defaults/unit"), "s");
    for h in HISTOGRAMS {
        for q in ["0.5", "0.99"] {
            assert!(
                joined.contains(&format!(
                    "histogram_quantile({q}, sum by (le) (rate({h}_bucket"
                )),
                "dashboard lacks p{q} of {h}"
            );
        }
    }
    assert!(
        metric_names("x{egressd_a} myegressd_b egressd_c_total").len() == 2,
        "extractor sanity"
    );
}
