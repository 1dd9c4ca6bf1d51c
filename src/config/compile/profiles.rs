//! Vendor profiles: `vendors:` items, their parameters, `vendors_disable`.

use super::*;

/// The names of the vendor profiles `vendors:` selects, in config order (items that are not a known profile
/// are left out: [`vendor_rules`] reports them).
pub(super) fn selected_profiles(raw: &RawConfig) -> Vec<Arc<str>> {
    let mut out: Vec<Arc<str>> = Vec::new();
    for item in &raw.vendors {
        if let Ok((name, ..)) = vendor_item(item) {
            if vendors::find(&name).is_some() && !out.iter().any(|n| **n == *name) {
                out.push(name.into());
            }
        }
    }
    out
}

/// Expand the selected vendor profiles into allow rules (`<profile>/<entry>`), minus `vendors_disable`. Each
/// comes with the key path its errors are reported at.
pub(super) fn vendor_rules(raw: &RawConfig, errs: &mut Errors) -> Vec<(String, RawRule)> {
    let mut out = Vec::new();
    let mut selected = HashSet::new();
    for (i, item) in raw.vendors.iter().enumerate() {
        let at = format!("vendors[{i}]");
        let (name, params, mode, clients, private_cidrs) = match vendor_item(item) {
            Ok(v) => v,
            Err(m) => {
                errs.push(at, m);
                continue;
            }
        };
        let Some(profile) = vendors::find(&name) else {
            errs.push(
                at,
                format!(
                    "{name:?} is not a vendor profile; available: {} (see `egressd vendors`)",
                    vendors::names().join(", ")
                ),
            );
            continue;
        };
        if !selected.insert(name.clone()) {
            errs.push(at, format!("{name:?} is listed twice"));
            continue;
        }
        match profile.expand(&params) {
            Ok(endpoints) => {
                for e in endpoints {
                    let path = format!("{at}({})", e.rule);
                    // The vendor's own endpoints are the entries made from parameters.
                    let own = own_addresses::is_param_entry(profile, &e.rule);
                    out.push((
                        path,
                        RawRule {
                            name: e.rule,
                            hosts: e.hosts,
                            no_proxy: None,
                            ports: e
                                .ports
                                .into_iter()
                                .map(|p| RawPort::Number(p.into()))
                                .collect(),
                            paths: e.paths,
                            idle_timeout: e.idle_timeout,
                            tls: None,
                            mode: mode.clone(),
                            clients: clients.clone(),
                            broad_hosts: None,
                            via: None,
                            private_cidrs: if own {
                                private_cidrs.clone()
                            } else {
                                Vec::new()
                            },
                        },
                    ));
                }
            }
            Err(list) => {
                for e in list {
                    errs.push(format!("{at}.params"), e.0);
                }
            }
        }
    }
    for (i, name) in raw.vendors_disable.iter().enumerate() {
        let before = out.len();
        out.retain(|(_, r)| &r.name != name);
        if out.len() == before {
            errs.push(
                format!("vendors_disable[{i}]"),
                format!(
                    "{name:?} is not a rule of the selected vendor profiles (names look like castai-us/helm; \
                     `egressd vendors show NAME` lists them)"
                ),
            );
        }
    }
    out
}

/// A profile's name, parameters, `mode`, `clients` (for its rules) and `private_cidrs` (for the rules of its
/// parameter entries), from one `vendors:` item.
pub(super) type VendorItem = (
    String,
    BTreeMap<String, ParamValue>,
    Option<String>,
    Vec<String>,
    Vec<String>,
);

/// One `vendors:` item: a profile name, or
/// `{name: ..., mode: report, clients: [group], params: {key: value or [values]}}`.
pub(super) fn vendor_item(item: &serde_json::Value) -> Result<VendorItem, String> {
    use serde_json::Value;
    match item {
        Value::String(name) => Ok((name.clone(), BTreeMap::new(), None, Vec::new(), Vec::new())),
        Value::Object(map) => {
            if let Some(k) = map.keys().find(|k| {
                !matches!(
                    k.as_str(),
                    "name" | "params" | "mode" | "clients" | "private_cidrs"
                )
            }) {
                return Err(format!(
                    "unknown key {k:?}; an item has `name`, `params`, `mode`, `clients` and `private_cidrs`"
                ));
            }
            let strings = |key: &str, what: &str| -> Result<Vec<String>, String> {
                match map.get(key) {
                    None | Some(Value::Null) => Ok(Vec::new()),
                    Some(Value::Array(items)) => items
                        .iter()
                        .map(|x| match x {
                            Value::String(s) => Ok(s.clone()),
                            other => Err(format!("{key}: {other} is not a {what}")),
                        })
                        .collect(),
                    Some(other) => Err(format!("{key}: {other} is not a list of {what}s")),
                }
            };
            let clients = strings("clients", "client group name")?;
            let private_cidrs = strings("private_cidrs", "CIDR")?;
            let mode = match map.get("mode") {
                None | Some(Value::Null) => None,
                Some(Value::String(m)) if m == "enforce" || m == "report" => Some(m.clone()),
                Some(other) => return Err(format!("mode: {other} is not one of: enforce, report")),
            };
            let name = match map.get("name") {
                Some(Value::String(n)) => n.clone(),
                _ => {
                    return Err(
                        "give the profile `name`, e.g. {name: cloudcasa, params: {...}}".into(),
                    )
                }
            };
            let mut params = BTreeMap::new();
            match map.get("params") {
                None | Some(Value::Null) => {}
                Some(Value::Object(ps)) => {
                    for (k, v) in ps {
                        let value = match v {
                            Value::String(s) => ParamValue::One(s.clone()),
                            Value::Array(items) => ParamValue::Many(
                                items
                                    .iter()
                                    .map(|x| match x {
                                        Value::String(s) => Ok(s.clone()),
                                        other => {
                                            Err(format!("params.{k}: {other} is not a string"))
                                        }
                                    })
                                    .collect::<Result<_, _>>()?,
                            ),
                            other => {
                                return Err(format!(
                                    "params.{k}: {other} is neither a string nor a list of strings"
                                ))
                            }
                        };
                        params.insert(k.clone(), value);
                    }
                }
                Some(other) => return Err(format!("params: {other} is not a map")),
            }
            Ok((name, params, mode, clients, private_cidrs))
        }
        other => Err(format!(
            "{other} is neither a profile name nor {{name: ..., params: {{...}}}}"
        )),
    }
}
