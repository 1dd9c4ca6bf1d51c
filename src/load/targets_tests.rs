use super::*;
use crate::load::origin::{self, ORIGIN_NAME};
use yaml_rust2::{Yaml, YamlLoader};

async fn test_origin() -> Origin {
    origin::start(ORIGIN_NAME, None).await.unwrap()
}

fn yaml(text: &str) -> Yaml {
    let mut docs = YamlLoader::load_from_str(text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
    assert_eq!(docs.len(), 1, "{text}");
    docs.remove(0)
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .unwrap_or_else(|| panic!("not a list: {y:?}"))
        .iter()
        .map(|v| match v {
            Yaml::String(s) => s.clone(),
            Yaml::Integer(i) => i.to_string(),
            other => panic!("not a scalar: {other:?}"),
        })
        .collect()
}

const DNS: &str = "127.0.0.1:5353";

#[tokio::test]
async fn smokescreen_allows_the_origin_name_on_loopback_and_its_two_ports() {
    let o = test_origin().await;
    let (echo, bulk) = (o.echo.port(), o.bulk.port());
    let acl_path = Path::new("/tmp/run/smokescreen/acl.yaml");
    let c = yaml(&smokescreen_config(
        3129,
        &o,
        DNS.parse().unwrap(),
        acl_path,
    ));
    assert_eq!(c["ip"].as_str(), Some("127.0.0.1"));
    assert_eq!(c["port"].as_i64(), Some(3129));
    assert_eq!(
        c["acl_file"].as_str(),
        Some("/tmp/run/smokescreen/acl.yaml")
    );
    // Plain clients have no role: the ACL's default rule applies to them.
    assert_eq!(c["allow_missing_role"].as_bool(), Some(true));
    assert_eq!(
        strings(&c["allow_addresses"]),
        [format!("127.0.0.1:{echo}"), format!("127.0.0.1:{bulk}")],
        "loopback only on the origin's ports"
    );
    assert!(c["allow_ranges"].is_badvalue(), "no wider loopback range");
    assert!(c["unsafe_allow_private_ranges"].is_badvalue());
    assert_eq!(strings(&c["resolver_addresses"]), [DNS]);

    let acl = yaml(&smokescreen_acl(&o));
    assert_eq!(acl["version"].as_str(), Some("v1"));
    assert_eq!(acl["services"].as_vec().map(Vec::len), Some(0));
    let rule = &acl["default"];
    assert_eq!(rule["action"].as_str(), Some("enforce"));
    assert_eq!(strings(&rule["allowed_domains"]), [ORIGIN_NAME]);
}

#[tokio::test]
async fn g3proxy_allows_the_origin_name_on_its_two_ports_and_maps_it_to_loopback() {
    let o = test_origin().await;
    let (echo, bulk) = (o.echo.port(), o.bulk.port());
    let c = yaml(&g3proxy_config(3130, &o, DNS.parse().unwrap()));
    let servers = c["server"].as_vec().unwrap();
    assert_eq!(servers.len(), 1);
    let s = &servers[0];
    assert_eq!(s["type"].as_str(), Some("http_proxy"));
    assert_eq!(s["listen"]["address"].as_str(), Some("127.0.0.1:3130"));
    assert_eq!(
        strings(&s["dst_host_filter_set"]["exact_match"]),
        [ORIGIN_NAME]
    );
    assert_eq!(
        strings(&s["dst_port_filter"]),
        [echo.to_string(), bulk.to_string()]
    );
    let escaper_name = s["escaper"].as_str().unwrap();

    let escapers = c["escaper"].as_vec().unwrap();
    assert_eq!(escapers.len(), 1);
    let e = &escapers[0];
    assert_eq!(e["name"].as_str(), Some(escaper_name));
    assert_eq!(e["type"].as_str(), Some("direct_fixed"));
    let redirect = e["resolve_redirection"].as_vec().unwrap();
    assert_eq!(redirect.len(), 1);
    assert_eq!(redirect[0]["exact"].as_str(), Some(ORIGIN_NAME));
    assert_eq!(strings(&redirect[0]["to"]), ["127.0.0.1"]);
    assert_eq!(
        strings(&e["egress_network_filter"]["allow"]),
        ["127.0.0.1/32"],
        "loopback only for the origin's address"
    );

    let resolvers = c["resolver"].as_vec().unwrap();
    let r = &resolvers[0];
    assert_eq!(r["name"].as_str(), e["resolver"].as_str());
    assert_eq!(r["server"].as_str(), Some("127.0.0.1"));
    assert_eq!(r["server_port"].as_i64(), Some(5353));
    // Task logs go to the launcher's log file, not nowhere.
    assert_eq!(c["log"].as_str(), Some("stdout"));
}

#[test]
fn smokescreen_version_is_the_built_commit() {
    assert_eq!(
        smokescreen_version("a3294a6cc4e4e33cd086ec0d5bca9f22db097023\n").as_deref(),
        Some("a3294a6")
    );
    assert_eq!(smokescreen_version(""), None);
    assert_eq!(smokescreen_version("not a commit"), None);
}

#[test]
fn peer_binary_from_the_flag_then_the_environment() {
    let p = Peer::Smokescreen;
    assert_eq!(
        p.bin(Some("/a/flag".into()), Some("/b/env".into())),
        Some(PathBuf::from("/a/flag"))
    );
    assert_eq!(p.bin(None, Some("/b/env".into())), Some("/b/env".into()));
    assert_eq!(p.bin(None, Some("".into())), None);
    assert_eq!(p.bin(None, None), None);
}

#[test]
fn a_missing_peer_binary_says_how_to_get_it() {
    for (p, flag, env) in [
        (
            Peer::Smokescreen,
            "--smokescreen-bin",
            "EGRESSD_LOAD_SMOKESCREEN",
        ),
        (Peer::G3proxy, "--g3proxy-bin", "EGRESSD_LOAD_G3PROXY"),
    ] {
        for bin in [None, Some(Path::new("/nonexistent/peer-binary"))] {
            let err = p.check_bin(bin).unwrap_err();
            for part in ["peers.sh", flag, env] {
                assert!(err.contains(part), "{err}");
            }
        }
    }
    let here = std::env::current_exe().unwrap();
    assert_eq!(Peer::G3proxy.check_bin(Some(&here)), Ok(here.clone()));
}
