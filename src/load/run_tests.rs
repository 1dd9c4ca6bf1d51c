use super::*;

#[test]
fn target_specs() {
    assert_eq!("direct".parse(), Ok(TargetSpec::Direct));
    assert_eq!(" squid".parse(), Ok(TargetSpec::Squid));
    assert_eq!(
        "127.0.0.1:3128".parse(),
        Ok(TargetSpec::Addr("127.0.0.1:3128".parse().unwrap()))
    );
    assert_eq!("smokescreen".parse(), Ok(TargetSpec::Smokescreen));
    assert_eq!("g3proxy ".parse(), Ok(TargetSpec::G3proxy));
    assert_eq!("egressd-via-squid".parse(), Ok(TargetSpec::EgressdViaSquid));
    let err = "squidd".parse::<TargetSpec>().unwrap_err();
    assert!(
        err.contains("smokescreen, g3proxy or ip:port"),
        "the message names every target: {err}"
    );
}

#[test]
fn target_names_parse_back() {
    for name in [
        "direct",
        "egressd",
        "squid",
        "egressd-via-squid",
        "smokescreen",
        "g3proxy",
        "127.0.0.1:3128",
    ] {
        let spec: TargetSpec = name.parse().unwrap();
        assert_eq!(spec.name(), name);
    }
}

#[test]
fn pids_go_to_the_running_proxies_in_order() {
    let targets: Vec<TargetSpec> = ["direct", "127.0.0.1:3128", "egressd", "127.0.0.1:3129"]
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(
        addr_pids(&targets, &[7, 9]),
        Ok(vec![None, Some(7), None, Some(9)])
    );
    assert_eq!(addr_pids(&targets, &[]), Ok(vec![None; 4]));
    let err = addr_pids(&targets, &[7]).unwrap_err();
    assert!(err.contains("1 processes for 2 ip:port targets"), "{err}");
}
