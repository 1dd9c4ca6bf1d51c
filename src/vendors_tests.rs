use super::*;

#[test]
fn every_profile_loads_and_validates() {
    assert_eq!(all().len(), FILES.len());
    for (file_name, _) in FILES {
        let p = find(file_name).unwrap_or_else(|| panic!("{file_name}: name mismatch"));
        assert_eq!(p.validate(), Vec::<String>::new(), "{file_name}");
        // Every entry, agents note and left-out item cites a vendor document by title and URL.
        let sources = p
            .entries
            .iter()
            .map(|e| &e.source)
            .chain(p.agents.iter().map(|a| &a.source))
            .chain(p.left_out.iter().map(|l| &l.source));
        for src in sources {
            assert_eq!(bad_source(src), None, "{}", p.name);
        }
    }
    assert_eq!(
        names(),
        [
            "castai-us",
            "castai-eu",
            "cloudcasa",
            "cloudcasa-ui",
            "cloudcasa-self-hosted"
        ]
    );
}

#[test]
fn validation_catches_broken_profiles() {
    let p = parse(
        "name: x\ntitle: t\nparams:\n  - {name: l, list: true, description: d}\nentries:\n  - {name: a, hosts: [\"{nope}\"], purpose: p, source: s}\n  - {name: a, hosts: [\"x.{l}\"], paths: [\"rel\"], purpose: p, source: s}\n",
    )
    .unwrap();
    let errs = p.validate().join("\n");
    for want in [
        "{nope} is not a declared parameter",
        "duplicate entry name",
        "list parameter {l} must be a whole hosts item",
        "must start with /",
    ] {
        assert!(errs.contains(want), "{want} missing from {errs}");
    }
    assert!(parse("name: x\ntitle: t\nentries: []\nextra: 1\n").is_err());
}

fn expand(name: &str, params: &[(&str, ParamValue)]) -> Result<Vec<Endpoint>, Vec<ParamError>> {
    let map = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    find(name).unwrap().expand(&map)
}

#[test]
fn castai_us_endpoints() {
    let eps = expand("castai-us", &[]).unwrap();
    let rules: Vec<&str> = eps.iter().map(|e| e.rule.as_str()).collect();
    assert_eq!(
        rules,
        [
            "castai-us/api",
            "castai-us/grpc",
            "castai-us/kvisor",
            "castai-us/registry",
            "castai-us/helm",
            "castai-us/node-components",
            "castai-us/node-logs",
            "castai-us/fallback-ips"
        ]
    );
    assert!(eps.iter().all(|e| e.ports == [443]));
    let grpc = &eps[1];
    assert_eq!(grpc.idle_timeout.as_deref(), Some("none"));
    assert_eq!(eps[5].paths, ["/castai-node-components/"]);
}

#[test]
fn required_parameters_are_named_when_missing() {
    let errs = expand("cloudcasa", &[]).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].0.contains("cloudcasa"), "{}", errs[0]);
    assert!(errs[0].0.contains("\"storage\""), "{}", errs[0]);

    let errs = expand("cloudcasa-self-hosted", &[]).unwrap_err();
    let text: Vec<String> = errs.iter().map(|e| e.0.clone()).collect();
    assert_eq!(text.len(), 2, "{text:?}");
    assert!(text[0].contains("cloudcasa-self-hosted") && text[0].contains("\"server\""));
    assert!(text[1].contains("\"storage\""));

    let errs = expand(
        "cloudcasa-self-hosted",
        &[
            ("server", ParamValue::Many(vec!["a".into()])),
            ("storage", ParamValue::Many(vec![" ".into()])),
            ("bucket", ParamValue::One("x".into())),
        ],
    )
    .unwrap_err();
    let text = errs
        .iter()
        .map(|e| e.0.clone())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains("no parameter \"bucket\""), "{text}");
    assert!(text.contains("takes one value, not a list"), "{text}");
    assert!(text.contains("empty value"), "{text}");
}

#[test]
fn parameters_substitute() {
    let eps = expand(
        "cloudcasa",
        &[(
            "storage",
            ParamValue::Many(vec![
                "s3.us-east-1.amazonaws.com".into(),
                "acct.blob.core.windows.net".into(),
            ]),
        )],
    )
    .unwrap();
    let storage = eps.iter().find(|e| e.rule == "cloudcasa/storage").unwrap();
    assert_eq!(
        storage.hosts,
        ["s3.us-east-1.amazonaws.com", "acct.blob.core.windows.net"]
    );
    // The optional registry parameter is unset: no registry rule.
    assert!(eps.iter().all(|e| e.rule != "cloudcasa/registry"));

    // An empty storage list is an explicit "none": the storage rule disappears.
    let eps = expand("cloudcasa", &[("storage", ParamValue::Many(vec![]))]).unwrap();
    let rules: Vec<&str> = eps.iter().map(|e| e.rule.as_str()).collect();
    assert_eq!(rules, ["cloudcasa/agent", "cloudcasa/api"]);

    let eps = expand(
        "cloudcasa-self-hosted",
        &[
            ("server", ParamValue::One("cc.example.internal".into())),
            (
                "storage",
                ParamValue::Many(vec!["minio.example.internal".into()]),
            ),
        ],
    )
    .unwrap();
    assert_eq!(eps[0].rule, "cloudcasa-self-hosted/server");
    assert_eq!(eps[0].hosts, ["cc.example.internal"]);
    assert_eq!(eps[0].idle_timeout.as_deref(), Some("none"));
    assert!(eps
        .iter()
        .all(|e| e.hosts.iter().all(|h| !h.contains("cloudcasa.io"))));
}

#[test]
fn show_fills_placeholders_and_substitutes_params() {
    let out = show("cloudcasa-self-hosted", &[]).unwrap();
    assert!(out.contains("  <server>:443\n"), "{out}");
    assert!(out.contains("placeholders"), "{out}");
    let out = show(
        "cloudcasa-self-hosted",
        &[
            "server=cc.example.internal".into(),
            "storage=a.example,b.example".into(),
        ],
    )
    .unwrap();
    assert!(out.contains("  cc.example.internal:443\n"), "{out}");
    assert!(out.contains("  b.example:443\n"), "{out}");
    assert!(!out.contains("placeholders"), "{out}");
    assert!(show("nosuch", &[]).unwrap_err().contains("castai-us"));
    // Optional parameters left out drop their entries instead of showing placeholders.
    let out = show("cloudcasa", &["storage=s3.example".into()]).unwrap();
    assert!(
        !out.contains("<registry>") && !out.contains("cloudcasa/registry"),
        "{out}"
    );
    assert!(show("castai-us", &["x=1".into()])
        .unwrap_err()
        .contains("no parameter"));
}

#[test]
fn cli_params_split_lists() {
    let p = find("cloudcasa-self-hosted").unwrap();
    let m = p
        .cli_params(&[
            "server=cc.local".into(),
            "storage=a.example, b.example".into(),
        ])
        .unwrap();
    assert_eq!(m["server"], ParamValue::One("cc.local".into()));
    assert_eq!(
        m["storage"],
        ParamValue::Many(vec!["a.example".into(), "b.example".into()])
    );
    assert!(p.cli_params(&["server".into()]).is_err());
}

#[test]
fn sources_must_cite_title_and_url() {
    assert_eq!(
        bad_source(
            "Cast AI, \"Communication requirements\", https://docs.cast.ai/docs/x: Core services"
        ),
        None
    );
    for bad in [
        "004_fd5360d1679fc21e.txt: Core services",
        "https://docs.cast.ai/docs/x: Core services",
        "Cast AI, \"Communication requirements\", https://docs.cast.ai/docs/x",
        "Cast AI, \"T\", https://a.example/x: S; 002_f5e976fdf10fdcd7.txt: S",
    ] {
        assert!(bad_source(bad).is_some(), "{bad:?} accepted");
    }
}

#[test]
fn show_lists_every_endpoint_with_port_and_purpose() {
    let p = find("castai-us").unwrap();
    let text = render_show(p, &p.expand(&BTreeMap::new()).unwrap());
    for want in [
        "api.cast.ai:443",
        "grpc.cast.ai:443",
        "api-grpc.cast.ai:443",
        "kvisor.prod-master.cast.ai:443",
        "us-docker.pkg.dev:443",
        "castai.github.io:443",
        "objects.githubusercontent.com:443",
        "storage.googleapis.com:443/castai-node-components/",
        "storage.googleapis.com:443/castai-node-logs-sender/",
        "104.16.81.56:443",
        "104.16.82.56:443",
        "purpose: pod pinner",
        "source: Cast AI, \"Communication requirements\", https://docs.cast.ai/docs/communication-requirements",
        "left out (documented, but not an allow rule here)",
        "inbound: the Kubernetes API server reaching the Cast AI admission webhooks",
        "enforced for plain-HTTP requests only",
    ] {
        assert!(text.contains(want), "{want} missing from\n{text}");
    }
    let list = render_list();
    assert!(list.contains("cloudcasa-self-hosted"), "{list}");
    assert!(list.contains("server (required)"), "{list}");
}
