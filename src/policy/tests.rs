use super::*;
use crate::target::parse_authority;

/// (rule name, kind, ports, patterns)
type RuleSpec<'a> = (&'a str, RuleKind, &'a [RangeInclusive<u16>], &'a [&'a str]);

fn policy(rules: &[RuleSpec]) -> Policy {
    let mut b = PolicyBuilder::default();
    for (name, kind, ports, patterns) in rules {
        let id = b.rule(name, *kind, PortSet::from_ranges(ports.to_vec()));
        for p in *patterns {
            b.pattern(id, &parse_pattern(p).unwrap()).unwrap();
        }
    }
    b.build().unwrap()
}

fn decide(p: &Policy, authority: &str) -> (bool, Option<String>, Reason) {
    let t = parse_authority(authority, None).unwrap();
    let d = p.decide(&t);
    (d.allowed, d.rule.map(|r| r.to_string()), d.reason)
}

const P443: &[RangeInclusive<u16>] = &[443..=443];
const ANY: &[RangeInclusive<u16>] = &[];

#[test]
fn host_pattern_forms() {
    let p = policy(&[
        ("exact", RuleKind::Allow, P443, &["api.cast.ai"]),
        ("sub", RuleKind::Allow, P443, &["*.sub.example"]),
        ("apex", RuleKind::Allow, P443, &[".apex.example"]),
        ("glob", RuleKind::Allow, P443, &["api-*.glob.example"]),
        (
            "ip",
            RuleKind::Allow,
            P443,
            &["104.16.81.56", "2001:db8::7"],
        ),
        (
            "cidr",
            RuleKind::Allow,
            P443,
            &["203.0.113.0/24", "2001:db8:1::/48"],
        ),
    ]);
    let cases: &[(&str, bool, Option<&str>, Reason)] = &[
        ("api.cast.ai:443", true, Some("exact"), Reason::Allowed),
        ("API.CAST.AI.:443", true, Some("exact"), Reason::Allowed),
        ("x.api.cast.ai:443", false, None, Reason::DeniedNoRule),
        ("cast.ai:443", false, None, Reason::DeniedNoRule),
        ("a.sub.example:443", true, Some("sub"), Reason::Allowed),
        ("a.b.sub.example:443", true, Some("sub"), Reason::Allowed),
        ("sub.example:443", false, None, Reason::DeniedNoRule),
        ("xsub.example:443", false, None, Reason::DeniedNoRule),
        ("apex.example:443", true, Some("apex"), Reason::Allowed),
        ("w.apex.example:443", true, Some("apex"), Reason::Allowed),
        ("notapex.example:443", false, None, Reason::DeniedNoRule),
        (
            "api-eu.glob.example:443",
            true,
            Some("glob"),
            Reason::Allowed,
        ),
        ("api.glob.example:443", false, None, Reason::DeniedNoRule),
        ("104.16.81.56:443", true, Some("ip"), Reason::Allowed),
        ("104.16.81.57:443", false, None, Reason::DeniedNoRule),
        ("[2001:db8::7]:443", true, Some("ip"), Reason::Allowed),
        (
            "[::ffff:104.16.81.56]:443",
            true,
            Some("ip"),
            Reason::Allowed,
        ),
        ("203.0.113.200:443", true, Some("cidr"), Reason::Allowed),
        ("203.0.114.1:443", false, None, Reason::DeniedNoRule),
        (
            "[2001:db8:1:ffff::1]:443",
            true,
            Some("cidr"),
            Reason::Allowed,
        ),
        // Outside every rule, and in a special-purpose range (documentation).
        (
            "[2001:db8:2::1]:443",
            false,
            None,
            Reason::DeniedPrivateAddress,
        ),
        ("api.cast.ai:80", false, Some("exact"), Reason::DeniedPort),
    ];
    for (target, allowed, rule, reason) in cases {
        let got = decide(&p, target);
        assert_eq!(
            got,
            (*allowed, rule.map(String::from), *reason),
            "target {target}"
        );
    }
}

#[test]
fn ip_literal_never_matches_name_rules() {
    // A name pattern that looks like the start of an address must not allow an IP target.
    let p = policy(&[("names", RuleKind::Allow, ANY, &[".example", "*"])]);
    assert_eq!(decide(&p, "104.16.81.56:443").2, Reason::DeniedNoRule);
    assert_eq!(decide(&p, "[2606:4700::1]:443").2, Reason::DeniedNoRule);
    assert_eq!(decide(&p, "10.0.0.1:443").2, Reason::DeniedPrivateAddress);
    assert!(decide(&p, "anything.example:443").0);
}

#[test]
fn deny_beats_allow_regardless_of_order() {
    let p = policy(&[
        ("all-cast", RuleKind::Allow, P443, &[".cast.ai"]),
        ("no-legacy", RuleKind::Deny, ANY, &["legacy.cast.ai"]),
    ]);
    assert_eq!(
        decide(&p, "legacy.cast.ai:443"),
        (false, Some("no-legacy".into()), Reason::DeniedByRule)
    );
    assert!(decide(&p, "api.cast.ai:443").0);
}

#[test]
fn deny_rule_limited_to_its_ports() {
    let p = policy(&[
        (
            "allow",
            RuleKind::Allow,
            &[80..=80, 443..=443],
            &["a.example"],
        ),
        ("deny-http", RuleKind::Deny, &[80..=80], &["a.example"]),
    ]);
    assert_eq!(decide(&p, "a.example:80").2, Reason::DeniedByRule);
    assert!(decide(&p, "a.example:443").0);
}

#[test]
fn first_allow_rule_in_order_names_the_decision() {
    let p = policy(&[
        ("first", RuleKind::Allow, P443, &[".cast.ai"]),
        ("second", RuleKind::Allow, P443, &["api.cast.ai"]),
    ]);
    assert_eq!(decide(&p, "api.cast.ai:443").1.as_deref(), Some("first"));
}

#[test]
fn port_ranges() {
    let p = policy(&[(
        "r",
        RuleKind::Allow,
        &[8000..=8100, 443..=443],
        &["a.example"],
    )]);
    for (port, ok) in [
        (443, true),
        (8000, true),
        (8050, true),
        (8100, true),
        (8101, false),
        (7999, false),
    ] {
        assert_eq!(
            decide(&p, &format!("a.example:{port}")).0,
            ok,
            "port {port}"
        );
    }
}

#[test]
fn no_proxy_entries() {
    let mut b = PolicyBuilder::default();
    let id = b.rule("np", RuleKind::Allow, PortSet::any());
    let list = noproxy::parse("localhost,.cluster.local,10.0.0.0/8,api.example:8443,*.svc");
    assert!(list.ignored.is_empty());
    for e in &list.entries {
        b.no_proxy_entry(id, e);
    }
    let p = b.build().unwrap();
    let cases = [
        ("localhost:80", true),
        ("x.cluster.local:443", true),
        ("cluster.local:443", false),
        ("10.1.2.3:6443", true),
        ("11.0.0.1:443", false),
        ("api.example:8443", true),
        ("api.example:443", false),
        ("a.svc:443", true),
        ("svc:443", false),
    ];
    for (t, ok) in cases {
        assert_eq!(decide(&p, t).0, ok, "{t}");
    }
}

#[test]
fn default_deny_when_empty() {
    let p = policy(&[]);
    assert_eq!(
        decide(&p, "api.cast.ai:443"),
        (false, None, Reason::DeniedNoRule)
    );
}

#[test]
fn many_rules_still_match_exactly() {
    let names: Vec<String> = (0..10_000).map(|i| format!("host{i}.example")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let p = policy(&[("bulk", RuleKind::Allow, P443, &refs)]);
    assert!(decide(&p, "host9999.example:443").0);
    assert!(!decide(&p, "host10000.example:443").0);
}

#[test]
fn path_prefixes_apply_to_plain_http_only() {
    let mut b = PolicyBuilder::default();
    let comp = b.rule(
        "components",
        RuleKind::Allow,
        PortSet::from_ranges(vec![80..=80, 443..=443]),
    );
    b.pattern(comp, &parse_pattern("storage.googleapis.com").unwrap())
        .unwrap();
    b.rule_paths(comp, &["/castai-node-components/".to_string()]);
    let logs = b.rule(
        "logs",
        RuleKind::Allow,
        PortSet::from_ranges(vec![80..=80, 443..=443]),
    );
    b.pattern(logs, &parse_pattern("storage.googleapis.com").unwrap())
        .unwrap();
    b.rule_paths(logs, &["/castai-node-logs-sender/".to_string()]);
    let p = b.build().unwrap();
    let t = parse_authority("storage.googleapis.com:80", None).unwrap();
    let cases: &[(Option<&str>, bool, Option<&str>, Reason)] = &[
        (None, true, Some("components"), Reason::Allowed),
        (
            Some("/castai-node-components/bin/x.tar.gz"),
            true,
            Some("components"),
            Reason::Allowed,
        ),
        (
            Some("/castai-node-logs-sender/n1?upload=1"),
            true,
            Some("logs"),
            Reason::Allowed,
        ),
        (
            Some("/castai-node-components"),
            false,
            Some("components"),
            Reason::DeniedPath,
        ),
        (
            Some("/other-bucket/x"),
            false,
            Some("components"),
            Reason::DeniedPath,
        ),
        (Some("/"), false, Some("components"), Reason::DeniedPath),
        (
            Some("/castai-node-components/../other/x"),
            false,
            Some("components"),
            Reason::DeniedPath,
        ),
        (
            Some("/castai-node-components/%2e%2e/other"),
            false,
            Some("components"),
            Reason::DeniedPath,
        ),
        (
            Some("/castai-node-components/..%2Fother"),
            false,
            Some("components"),
            Reason::DeniedPath,
        ),
        (
            Some("/castai-node-components/./x"),
            false,
            Some("components"),
            Reason::DeniedPath,
        ),
        (
            Some("/castai-node-components/a\\..\\b"),
            false,
            Some("components"),
            Reason::DeniedPath,
        ),
    ];
    for (path, allowed, rule, reason) in cases {
        let d = p.decide_request(&t, *path, &Identity::default());
        assert_eq!(
            (d.allowed, d.rule.as_deref(), d.reason),
            (*allowed, *rule, *reason),
            "path {path:?}"
        );
    }
    // Same as decide_request(.., None).
    assert!(p.decide(&t).allowed);
    let names: Vec<&str> = p.path_rules().map(|(n, _)| n).collect();
    assert_eq!(names, ["components", "logs"]);
}

#[test]
fn path_rule_does_not_hide_a_pathless_rule_or_a_deny() {
    let mut b = PolicyBuilder::default();
    let narrow = b.rule(
        "narrow",
        RuleKind::Allow,
        PortSet::from_ranges(vec![80..=80]),
    );
    b.pattern(narrow, &parse_pattern("h.example").unwrap())
        .unwrap();
    b.rule_paths(narrow, &["/a/".to_string()]);
    let wide = b.rule("wide", RuleKind::Allow, PortSet::from_ranges(vec![80..=80]));
    b.pattern(wide, &parse_pattern("h.example").unwrap())
        .unwrap();
    let deny = b.rule("no-d", RuleKind::Deny, PortSet::any());
    b.pattern(deny, &parse_pattern("d.h.example").unwrap())
        .unwrap();
    let p = b.build().unwrap();
    let t = parse_authority("h.example:80", None).unwrap();
    assert_eq!(
        p.decide_request(&t, Some("/b/"), &Identity::default())
            .rule
            .as_deref(),
        Some("wide")
    );
    assert_eq!(
        p.decide_request(&t, Some("/a/x"), &Identity::default())
            .rule
            .as_deref(),
        Some("narrow")
    );
    let t = parse_authority("d.h.example:80", None).unwrap();
    assert_eq!(
        p.decide_request(&t, Some("/a/"), &Identity::default())
            .reason,
        Reason::DeniedByRule
    );
}

#[test]
fn idle_override_comes_from_the_allowing_rule() {
    use std::time::Duration;
    let mut b = PolicyBuilder::default();
    let ctl = b.rule(
        "control",
        RuleKind::Allow,
        PortSet::from_ranges(vec![443..=443]),
    );
    b.pattern(ctl, &parse_pattern("agent.cloudcasa.io").unwrap())
        .unwrap();
    b.rule_idle(ctl, IdleOverride::Never);
    let slow = b.rule(
        "slow",
        RuleKind::Allow,
        PortSet::from_ranges(vec![443..=443]),
    );
    b.pattern(slow, &parse_pattern("api.cloudcasa.io").unwrap())
        .unwrap();
    b.rule_idle(slow, IdleOverride::After(Duration::from_secs(3600)));
    let plain = b.rule(
        "plain",
        RuleKind::Allow,
        PortSet::from_ranges(vec![443..=443]),
    );
    b.pattern(plain, &parse_pattern("home.cloudcasa.io").unwrap())
        .unwrap();
    let p = b.build().unwrap();
    let idle = |a: &str| p.decide(&parse_authority(a, None).unwrap()).idle;
    assert_eq!(idle("agent.cloudcasa.io:443"), Some(IdleOverride::Never));
    assert_eq!(
        idle("api.cloudcasa.io:443"),
        Some(IdleOverride::After(Duration::from_secs(3600)))
    );
    assert_eq!(idle("home.cloudcasa.io:443"), None);
    assert_eq!(
        idle("agent.cloudcasa.io:80"),
        None,
        "denials carry no override"
    );
    let global = Duration::from_secs(900);
    assert_eq!(IdleOverride::resolve(None, global), global);
    assert_eq!(
        IdleOverride::resolve(Some(IdleOverride::Never), global),
        Duration::MAX
    );
}

/// (allowed, report, rule, reason) for a target and optional path.
fn decide_full(
    p: &Policy,
    authority: &str,
    path: Option<&str>,
) -> (bool, bool, Option<String>, Reason) {
    let t = parse_authority(authority, None).unwrap();
    let d = p.decide_request(&t, path, &Identity::default());
    (d.allowed, d.report, d.rule.map(|r| r.to_string()), d.reason)
}

#[test]
fn report_mode_deny_rule_is_passed_over_and_reported() {
    let mut b = PolicyBuilder::default();
    let trial = b.rule("trial-deny", RuleKind::Deny, PortSet::any());
    b.pattern(trial, &parse_pattern(".example").unwrap())
        .unwrap();
    b.rule_report(trial);
    let hard = b.rule("hard-deny", RuleKind::Deny, PortSet::any());
    b.pattern(hard, &parse_pattern("bad.example").unwrap())
        .unwrap();
    let allow = b.rule(
        "allow",
        RuleKind::Allow,
        PortSet::from_ranges(vec![443..=443]),
    );
    b.pattern(allow, &parse_pattern(".example").unwrap())
        .unwrap();
    b.set_tls(allow, false);
    let p = b.build().unwrap();
    let r = |s: &str| Some(s.to_string());
    // Allowed by the rest of the policy: a would-be denial by the report rule, with the allow rule's settings.
    assert_eq!(
        decide_full(&p, "a.example:443", None),
        (false, true, r("trial-deny"), Reason::DeniedByRule)
    );
    let t = parse_authority("a.example:443", None).unwrap();
    assert_eq!(p.decide(&t).tls, Some(false));
    // The allow rule it proceeds on is enforcing: its SNI checks stay enforced.
    assert!(!p.decide(&t).lenient);
    // An enforcing deny rule still wins.
    assert_eq!(
        decide_full(&p, "bad.example:443", None),
        (false, false, r("hard-deny"), Reason::DeniedByRule)
    );
    // Refused by the rest of the policy anyway: that refusal stands.
    assert_eq!(
        decide_full(&p, "a.example:80", None),
        (false, false, r("allow"), Reason::DeniedPort)
    );
    // Not matched by the report rule: unaffected.
    assert_eq!(
        decide_full(&p, "other.test:443", None),
        (false, false, None, Reason::DeniedNoRule)
    );
}

#[test]
fn report_mode_allow_rule_lets_its_near_misses_through() {
    let mut b = PolicyBuilder::default();
    let trial = b.rule(
        "vendor/api",
        RuleKind::Allow,
        PortSet::from_ranges(vec![443..=443]),
    );
    b.pattern(trial, &parse_pattern("api.vendor.test").unwrap())
        .unwrap();
    b.rule_paths(trial, &["/v1/".to_string()]);
    b.rule_report(trial);
    let enforced = b.rule(
        "strict",
        RuleKind::Allow,
        PortSet::from_ranges(vec![443..=443]),
    );
    b.pattern(enforced, &parse_pattern("strict.test").unwrap())
        .unwrap();
    let p = b.build().unwrap();
    let r = |s: &str| Some(s.to_string());
    assert_eq!(
        decide_full(&p, "api.vendor.test:443", Some("/v1/x")),
        (true, false, r("vendor/api"), Reason::Allowed)
    );
    assert_eq!(
        decide_full(&p, "api.vendor.test:443", Some("/admin")),
        (false, true, r("vendor/api"), Reason::DeniedPath)
    );
    assert_eq!(
        decide_full(&p, "api.vendor.test:8443", None),
        (false, true, r("vendor/api"), Reason::DeniedPort)
    );
    // SNI checks of tunnels it lets through are reported, not enforced.
    let t = parse_authority("api.vendor.test:443", None).unwrap();
    assert!(p.decide(&t).lenient);
    let t = parse_authority("api.vendor.test:8443", None).unwrap();
    assert!(p.decide(&t).lenient);
    // Enforcing rules and unmatched hosts are not affected.
    assert_eq!(
        decide_full(&p, "strict.test:8443", None),
        (false, false, r("strict"), Reason::DeniedPort)
    );
    assert_eq!(
        decide_full(&p, "x.vendor.test:443", None),
        (false, false, None, Reason::DeniedNoRule)
    );
}

#[test]
fn unnamed_special_ip_literals_are_private_address_denials() {
    let p = policy(&[("web", RuleKind::Allow, P443, &["api.example"])]);
    assert_eq!(
        decide(&p, "169.254.169.254:80"),
        (false, None, Reason::DeniedPrivateAddress)
    );
    assert_eq!(
        decide(&p, "[::ffff:10.0.0.1]:22"),
        (false, None, Reason::DeniedPrivateAddress)
    );
    assert_eq!(
        decide(&p, "8.8.8.8:443"),
        (false, None, Reason::DeniedNoRule)
    );
    assert_eq!(
        decide(&p, "unknown.example:443"),
        (false, None, Reason::DeniedNoRule)
    );
    // An address in destinations.allow_cidrs may be dialled; without a rule it is an ordinary denial.
    let mut b = PolicyBuilder::default();
    b.destinations(crate::policy::destination::Destinations::new(
        vec!["10.0.0.0/8".parse().unwrap()],
        Vec::new(),
    ));
    let p = b.build().unwrap();
    assert_eq!(
        decide(&p, "10.0.0.1:22"),
        (false, None, Reason::DeniedNoRule)
    );
    assert_eq!(
        decide(&p, "169.254.169.254:80"),
        (false, None, Reason::DeniedPrivateAddress)
    );
}

#[test]
fn a_trial_rule_is_lenient_only_where_no_enforcing_rule_matches() {
    let mut b = PolicyBuilder::default();
    let trial = b.rule(
        "trial",
        RuleKind::Allow,
        PortSet::from_ranges(vec![443..=443]),
    );
    b.pattern(trial, &parse_pattern(".trial.test").unwrap())
        .unwrap();
    b.rule_report(trial);
    b.set_tls(trial, false);
    let enforced = b.rule(
        "api",
        RuleKind::Allow,
        PortSet::from_ranges(vec![443..=443]),
    );
    b.pattern(enforced, &parse_pattern("api.trial.test").unwrap())
        .unwrap();
    let p = b.build().unwrap();
    // Listed first, the trial rule still does not decide what the enforcing rule allows.
    let t = parse_authority("api.trial.test:443", None).unwrap();
    let d = p.decide(&t);
    assert!(d.allowed);
    assert_eq!(d.rule.as_deref(), Some("api"));
    assert!(!d.lenient, "the enforcing rule's SNI checks must hold");
    assert_eq!(d.tls, None, "the enforcing rule's settings apply");
    // Elsewhere the trial rule is lenient as before.
    let t = parse_authority("other.trial.test:443", None).unwrap();
    let d = p.decide(&t);
    assert_eq!(d.rule.as_deref(), Some("trial"));
    assert!(d.lenient);
    // Near misses on the enforcing rule's host: an enforcing match on host and port keeps checks enforced.
    let t = parse_authority("api.trial.test:8443", None).unwrap();
    assert!(!p.decide(&t).allowed);
}
