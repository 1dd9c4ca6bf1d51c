//! Tests of the metrics: exact series after known outcomes, bounded labels, series that follow the configuration.

use super::*;
use crate::outcome::CloseReason;

/// The value of one series in an exposition, by its exact `name{labels}` text.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn decisions_are_counted_with_bounded_labels() {
    let m = Metrics::new();
    let mut o = Outcome::new(1, 1, "127.0.0.1:1".parse().unwrap(), Kind::Connect);
    o.host = Some("secret-host.example".into());
    o.decision = Verdict::Allow;
    o.reason = Reason::Allowed;
    o.rule = Some("castai-us/api".into());
    o.connect_ms = Some(3.0);
    m.decision(&o);
    m.decision(&o);
    let text = m.render();
    assert_eq!(
        value(
            &text,
            r#"egressd_decisions_total{decision="allow",reason="allowed",rule="castai-us/api",vendor="castai-us",client_group=""}"#
        ),
        Some(2.0),
        "{text}"
    );
    assert!(!text.contains("secret-host"), "{text}");
    assert!(!text.contains("127.0.0.1"), "{text}");
    assert_eq!(
        value(&text, "egressd_upstream_connect_seconds_count"),
        Some(2.0),
        "{text}"
    );
}

#[test]
fn the_route_is_a_label_once_one_was_taken() {
    let m = Metrics::new();
    let mut o = Outcome::new(1, 1, "127.0.0.1:1".parse().unwrap(), Kind::Connect);
    o.decision = Verdict::Allow;
    o.reason = Reason::Allowed;
    o.rule = Some("x".into());
    m.decision(&o);
    o.via = Some("corp".into());
    m.decision(&o);
    let text = m.render();
    let series = r#"egressd_decisions_total{decision="allow",reason="allowed",rule="x",vendor="",client_group="""#;
    assert_eq!(value(&text, &format!("{series}}}")), Some(1.0), "{text}");
    assert_eq!(
        value(&text, &format!(r#"{series},via="corp"}}"#)),
        Some(1.0),
        "{text}"
    );
}

#[test]
fn parent_attempts_are_counted_by_parent_and_result() {
    let m = Metrics::new();
    let mut o = Outcome::new(1, 1, "127.0.0.1:1".parse().unwrap(), Kind::Connect);
    o.parent_status = vec!["dead=refused".into(), "corp=200".into()];
    m.decision(&o);
    let text = m.render();
    assert_eq!(
        value(
            &text,
            r#"egressd_parent_attempts_total{parent="dead",result="refused"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"egressd_parent_attempts_total{parent="corp",result="200"}"#
        ),
        Some(1.0),
        "{text}"
    );
}

#[test]
fn rejections_and_bytes() {
    let m = Metrics::new();
    let mut o = Outcome::new(1, 1, "127.0.0.1:1".parse().unwrap(), Kind::Connect);
    o.refuse(crate::reason::Refusal::new(Reason::ConnectionLimit, "full"));
    m.decision(&o);
    let mut c = Close::ended(&o, CloseReason::Eof);
    c.bytes_up = 10;
    c.bytes_down = 32;
    m.close(&c);
    let text = m.render();
    for (series, v) in [
        (
            r#"egressd_connections_rejected_total{reason="connection_limit"}"#,
            1.0,
        ),
        (
            r#"egressd_connections_rejected_total{reason="client_tls_failed"}"#,
            0.0,
        ),
        (r#"egressd_bytes_total{direction="upstream"}"#, 10.0),
        (r#"egressd_bytes_total{direction="downstream"}"#, 32.0),
        ("egressd_tunnel_duration_seconds_count", 1.0),
        (r#"egressd_config_reloads_total{result="error"}"#, 0.0),
    ] {
        assert_eq!(value(&text, series), Some(v), "{series} in {text}");
    }
}

#[test]
fn active_gauges_follow_guards() {
    let m = Metrics::new();
    let a = m.connection_opened("plain");
    let t = m.tunnel_opened();
    let text = m.render();
    assert_eq!(
        value(&text, r#"egressd_connections_active{listener="plain"}"#),
        Some(1.0)
    );
    assert_eq!(value(&text, "egressd_tunnels_active"), Some(1.0));
    assert_eq!(m.tunnels_open(), 1);
    drop((a, t));
    let text = m.render();
    assert_eq!(
        value(&text, r#"egressd_connections_active{listener="plain"}"#),
        Some(0.0)
    );
    assert_eq!(value(&text, "egressd_tunnels_active"), Some(0.0));
    assert_eq!(m.tunnels_open(), 0);
}

#[test]
fn instances_are_independent() {
    let (a, b) = (Metrics::new(), Metrics::new());
    a.config_loaded(true);
    assert_eq!(
        value(
            &a.render(),
            r#"egressd_config_reloads_total{result="success"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &b.render(),
            r#"egressd_config_reloads_total{result="success"}"#
        ),
        Some(0.0)
    );
}

#[test]
fn rules_that_let_requests_through_get_their_time_and_removed_rules_go() {
    let m = Metrics::new();
    let policy = |yaml: &str| crate::config::from_yaml_str(yaml).unwrap().runtime.policy;
    m.rules_in_force(&policy(
        "allow:\n  - {name: used, hosts: [a.test]}\n  - {name: idle, hosts: [b.test]}\n\
         deny:\n  - {name: guard, hosts: [c.test]}\n",
    ));
    let mut o = Outcome::new(1, 1, "127.0.0.1:1".parse().unwrap(), Kind::Connect);
    o.rule = Some("idle".into());
    o.refuse(crate::reason::Refusal::new(Reason::DeniedPort, "port"));
    m.decision(&o);
    o.decision = Verdict::Allow;
    o.reason = Reason::Allowed;
    o.rule = Some("used".into());
    let before = unix_now().as_secs() as f64;
    m.decision(&o);
    let text = m.render();
    let at = value(
        &text,
        r#"egressd_rule_last_match_timestamp_seconds{rule="used"}"#,
    )
    .expect("set");
    assert!(at >= before && at <= unix_now().as_secs() as f64, "{text}");
    // A refusal naming a rule does not count; deny rules are not series.
    assert_eq!(
        value(
            &text,
            r#"egressd_rule_last_match_timestamp_seconds{rule="idle"}"#
        ),
        Some(0.0),
        "{text}"
    );
    assert!(!text.contains(r#"rule="guard"}"#), "{text}");
    assert_eq!(text.matches("# TYPE egressd_rule_last_match").count(), 1);
    // A reload that removes `idle` removes its series; `used` keeps its time.
    m.rules_in_force(&policy("allow:\n  - {name: used, hosts: [a.test]}\n"));
    let text = m.render();
    assert!(
        !text.contains(r#"egressd_rule_last_match_timestamp_seconds{rule="idle"}"#),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"egressd_rule_last_match_timestamp_seconds{rule="used"}"#
        ),
        Some(at)
    );
}

#[test]
fn vendor_is_a_known_profile_or_empty() {
    assert_eq!(vendor_of("castai-us/api"), "castai-us");
    assert_eq!(vendor_of("my/rule"), "");
    assert_eq!(vendor_of("origin"), "");
}

#[test]
fn fragment_counts_appear_with_include_and_fall_to_zero_when_it_goes() {
    let m = Metrics::new();
    m.fragments(0, 0);
    assert!(
        !m.render().contains(FRAGMENTS),
        "no fragments series for a configuration without include:"
    );
    m.fragments(2, 1);
    let text = m.render();
    assert_eq!(
        value(&text, "egressd_fragments{state=\"loaded\"}"),
        Some(2.0)
    );
    assert_eq!(
        value(&text, "egressd_fragments{state=\"skipped\"}"),
        Some(1.0)
    );
    // A reload that drops include: must clear the skipped count, or the alert on it would never resolve.
    m.fragments(0, 0);
    let text = m.render();
    assert_eq!(
        value(&text, "egressd_fragments{state=\"loaded\"}"),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "egressd_fragments{state=\"skipped\"}"),
        Some(0.0)
    );
}
