//! Vendor profiles: named sets of allow rules for a vendor's agents, embedded in the binary from
//! `config/vendors/*.yaml`. Each entry carries its purpose and the vendor document it comes from. Profiles take
//! parameters where the vendor leaves a blank (storage endpoints, a self-hosted server name); expanding a profile
//! with its parameters gives [`Endpoint`]s, which the config compiler turns into ordinary allow rules named
//! `<profile>/<entry>`. Pure: no I/O.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

/// The embedded profile files, in the order `egressd vendors` lists them.
const FILES: &[(&str, &str)] = &[
    (
        "castai-us",
        include_str!("../config/vendors/castai-us.yaml"),
    ),
    (
        "castai-eu",
        include_str!("../config/vendors/castai-eu.yaml"),
    ),
    (
        "cloudcasa",
        include_str!("../config/vendors/cloudcasa.yaml"),
    ),
    (
        "cloudcasa-ui",
        include_str!("../config/vendors/cloudcasa-ui.yaml"),
    ),
    (
        "cloudcasa-self-hosted",
        include_str!("../config/vendors/cloudcasa-self-hosted.yaml"),
    ),
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    pub title: String,
    #[serde(default)]
    pub params: Vec<ParamSpec>,
    pub entries: Vec<EntrySpec>,
    pub agents: Option<Agents>,
    /// What the vendor documents ask for that is not an allow rule here, and why.
    #[serde(default)]
    pub left_out: Vec<LeftOut>,
}

/// A documented requirement the profile does not turn into a rule (inbound traffic, an unnamed host, traffic
/// that does not read the agents' proxy variables).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeftOut {
    pub what: String,
    pub why: String,
    pub source: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    pub name: String,
    /// A list of host names (used as a whole `hosts` item) rather than one value.
    #[serde(default)]
    pub list: bool,
    #[serde(default)]
    pub required: bool,
    pub description: String,
    pub example: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntrySpec {
    pub name: String,
    /// Host patterns; `{param}` is replaced by the parameter's value(s).
    pub hosts: Vec<String>,
    /// Default `[443]`.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Path prefixes, enforced for plain-HTTP requests only.
    #[serde(default)]
    pub paths: Vec<String>,
    /// `"none"` or a duration; replaces `timeouts.idle` for tunnels this entry allows.
    pub idle_timeout: Option<String>,
    pub purpose: String,
    /// The vendor document's title and URL, and the section: `Vendor, "Title", https://...: Section`.
    pub source: String,
}

/// Where the vendor's agents run, as far as the vendor documents say.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agents {
    pub namespace: Option<String>,
    /// `kubectl set env` resource arguments, e.g. `deployment/castai-agent` or `deployment --all`.
    pub workloads: Vec<String>,
    /// What the documents do and do not name.
    pub note: String,
    pub source: String,
}

/// A parameter value given in the config or on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamValue {
    One(String),
    Many(Vec<String>),
}

/// One expanded profile entry: an allow rule to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `<profile>/<entry>`, the rule name in decisions.
    pub rule: String,
    pub hosts: Vec<String>,
    pub ports: Vec<u16>,
    pub paths: Vec<String>,
    pub idle_timeout: Option<String>,
    pub purpose: String,
    pub source: String,
}

/// A problem with the parameters given to a profile; the message names the profile and the parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError(pub String);

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Every embedded profile, parsed once. The files are part of the binary and covered by tests, so a parse
/// failure here is a build defect.
pub fn all() -> &'static [Profile] {
    static PROFILES: OnceLock<Vec<Profile>> = OnceLock::new();
    PROFILES.get_or_init(|| {
        FILES
            .iter()
            .map(|(name, text)| {
                parse(text).unwrap_or_else(|e| panic!("embedded vendor profile {name}: {e}"))
            })
            .collect()
    })
}

pub fn find(name: &str) -> Option<&'static Profile> {
    all().iter().find(|p| p.name == name)
}

pub fn names() -> Vec<&'static str> {
    all().iter().map(|p| p.name.as_str()).collect()
}

/// Parse one profile document.
pub fn parse(yaml: &str) -> Result<Profile, String> {
    config::Config::builder()
        .add_source(config::File::from_str(yaml, config::FileFormat::Yaml))
        .build()
        .and_then(|c| c.try_deserialize::<Profile>())
        .map_err(|e| e.to_string())
}

/// Placeholders `{name}` in a host string.
fn placeholders(host: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = host;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        out.push(&rest[start + 1..start + len]);
        rest = &rest[start + len + 1..];
    }
    out
}

impl Profile {
    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }

    /// The parameters a `vendors:` item must give.
    pub fn required_params(&self) -> impl Iterator<Item = &ParamSpec> {
        self.params.iter().filter(|p| p.required)
    }

    /// Structural checks of a profile document (run by the tests on every embedded profile).
    pub fn validate(&self) -> Vec<String> {
        let mut errs = Vec::new();
        let mut seen = std::collections::HashSet::new();
        if self.entries.is_empty() {
            errs.push(format!("{}: no entries", self.name));
        }
        for e in &self.entries {
            let at = format!("{}/{}", self.name, e.name);
            if !seen.insert(e.name.as_str()) {
                errs.push(format!("{at}: duplicate entry name"));
            }
            if e.hosts.is_empty() {
                errs.push(format!("{at}: no hosts"));
            }
            if e.purpose.trim().is_empty() || e.source.trim().is_empty() {
                errs.push(format!("{at}: purpose and source are required"));
            }
            if let Some(bad) = bad_source(&e.source) {
                errs.push(format!("{at}: source {bad}"));
            }
            for h in &e.hosts {
                for ph in placeholders(h) {
                    match self.param(ph) {
                        None => errs.push(format!("{at}: {{{ph}}} is not a declared parameter")),
                        Some(p) if p.list && h != &format!("{{{ph}}}") => errs.push(format!(
                            "{at}: list parameter {{{ph}}} must be a whole hosts item"
                        )),
                        Some(_) => {}
                    }
                }
            }
            for p in &e.paths {
                if !p.starts_with('/') {
                    errs.push(format!("{at}: path {p:?} must start with /"));
                }
            }
        }
        errs
    }

    /// Expand the entries with `params`. Every problem is returned, each naming the profile and parameter.
    pub fn expand(
        &self,
        params: &BTreeMap<String, ParamValue>,
    ) -> Result<Vec<Endpoint>, Vec<ParamError>> {
        let mut errs = Vec::new();
        for name in params.keys() {
            if self.param(name).is_none() {
                let known: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
                errs.push(ParamError(format!(
                    "vendor profile {} has no parameter {name:?} (it takes: {})",
                    self.name,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
        }
        for spec in &self.params {
            match params.get(&spec.name) {
                None if spec.required => errs.push(ParamError(format!(
                    "vendor profile {} needs parameter {:?}: {}{}",
                    self.name,
                    spec.name,
                    spec.description,
                    spec.example
                        .as_ref()
                        .map(|x| {
                            if spec.list {
                                format!(" (e.g. params: {{{}: [{x}]}})", spec.name)
                            } else {
                                format!(" (e.g. params: {{{}: {x}}})", spec.name)
                            }
                        })
                        .unwrap_or_default()
                ))),
                Some(ParamValue::Many(_)) if !spec.list => errs.push(ParamError(format!(
                    "vendor profile {} parameter {:?} takes one value, not a list",
                    self.name, spec.name
                ))),
                Some(v) => {
                    let values = match v {
                        ParamValue::One(s) => std::slice::from_ref(s),
                        ParamValue::Many(l) => l.as_slice(),
                    };
                    if values.iter().any(|s| s.trim().is_empty()) {
                        errs.push(ParamError(format!(
                            "vendor profile {} parameter {:?} has an empty value",
                            self.name, spec.name
                        )));
                    }
                }
                None => {}
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }

        let values = |name: &str| -> Vec<String> {
            match params.get(name) {
                Some(ParamValue::One(s)) => vec![s.trim().to_string()],
                Some(ParamValue::Many(l)) => l.iter().map(|s| s.trim().to_string()).collect(),
                None => Vec::new(),
            }
        };
        let mut out = Vec::new();
        for e in &self.entries {
            let mut hosts = Vec::new();
            for h in &e.hosts {
                let phs = placeholders(h);
                if phs.is_empty() {
                    hosts.push(h.clone());
                } else if phs.len() == 1 && *h == format!("{{{}}}", phs[0]) {
                    hosts.extend(values(phs[0]));
                } else {
                    // Single-valued parameters inside a larger string; an unset optional one drops the host.
                    let mut s = h.clone();
                    let mut complete = true;
                    for ph in phs {
                        match values(ph).first() {
                            Some(v) => s = s.replace(&format!("{{{ph}}}"), v),
                            None => complete = false,
                        }
                    }
                    if complete {
                        hosts.push(s);
                    }
                }
            }
            if hosts.is_empty() {
                continue;
            }
            out.push(Endpoint {
                rule: format!("{}/{}", self.name, e.name),
                hosts,
                ports: if e.ports.is_empty() {
                    vec![443]
                } else {
                    e.ports.clone()
                },
                paths: e.paths.clone(),
                idle_timeout: e.idle_timeout.clone(),
                purpose: e.purpose.clone(),
                source: e.source.clone(),
            });
        }
        Ok(out)
    }

    /// Parameters from the command line: `name=value`, list values separated by commas.
    pub fn cli_params(&self, args: &[String]) -> Result<BTreeMap<String, ParamValue>, ParamError> {
        let mut out = BTreeMap::new();
        for a in args {
            let Some((k, v)) = a.split_once('=') else {
                return Err(ParamError(format!(
                    "--param {a:?}: write name=value (lists as name=a,b)"
                )));
            };
            let value = match self.param(k) {
                Some(spec) if spec.list => ParamValue::Many(
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect(),
                ),
                _ => ParamValue::One(v.to_string()),
            };
            out.insert(k.to_string(), value);
        }
        Ok(out)
    }
}

/// Why a `source` does not cite the vendor's documents (each `;`-separated part: a title, an https:// URL,
/// then `: section`), if it does not.
fn bad_source(source: &str) -> Option<String> {
    for part in source.split("; ") {
        let Some(at) = part.find("https://") else {
            return Some(format!(
                "{part:?} names no https:// URL of the vendor document"
            ));
        };
        if at == 0 || !part[at..].contains(": ") {
            return Some(format!(
                "{part:?}: write it as Vendor, \"Title\", https://...: Section"
            ));
        }
        if part.contains(".txt") {
            return Some(format!("{part:?} names a file, not the vendor document"));
        }
    }
    None
}

/// `egressd vendors`: one line per profile.
pub fn render_list() -> String {
    let mut out = String::new();
    for p in all() {
        let params: Vec<String> = p
            .params
            .iter()
            .map(|s| format!("{}{}", s.name, if s.required { " (required)" } else { "" }))
            .collect();
        out.push_str(&format!("{}\t{}", p.name, p.title));
        if !params.is_empty() {
            out.push_str(&format!("\tparams: {}", params.join(", ")));
        }
        out.push('\n');
    }
    out
}

/// `egressd vendors show NAME [--param k=v]...`: parameters not given are shown as `<name>` placeholders.
pub fn show(name: &str, args: &[String]) -> Result<String, String> {
    let p = find(name).ok_or_else(|| {
        format!(
            "{name:?} is not a vendor profile; available: {}",
            names().join(", ")
        )
    })?;
    let mut params = p.cli_params(args).map_err(|e| e.0)?;
    let mut placeholders = Vec::new();
    for spec in p.params.iter().filter(|s| s.required) {
        if !params.contains_key(&spec.name) {
            let ph = format!("<{}>", spec.name);
            placeholders.push(spec.name.clone());
            params.insert(
                spec.name.clone(),
                if spec.list {
                    ParamValue::Many(vec![ph])
                } else {
                    ParamValue::One(ph)
                },
            );
        }
    }
    let endpoints = p.expand(&params).map_err(|errs| {
        errs.iter()
            .map(|e| e.0.clone())
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let mut out = render_show(p, &endpoints);
    if !placeholders.is_empty() {
        out.push_str(&format!(
            "\n(<{}> shown as placeholders; give --param NAME=VALUE, lists comma-separated)\n",
            placeholders.join(">, <")
        ));
    }
    Ok(out)
}

/// `egressd vendors show NAME`: each endpoint with its port, path, idle timeout, purpose and source.
pub fn render_show(p: &Profile, endpoints: &[Endpoint]) -> String {
    let mut out = format!("{} — {}\n", p.name, p.title);
    for s in &p.params {
        out.push_str(&format!(
            "param {}{}{}: {}\n",
            s.name,
            if s.list { " (list)" } else { "" },
            if s.required { " (required)" } else { "" },
            s.description
        ));
    }
    for e in endpoints {
        let ports: Vec<String> = e.ports.iter().map(|p| p.to_string()).collect();
        out.push_str(&format!("\n{}\n", e.rule));
        for h in &e.hosts {
            if e.paths.is_empty() {
                out.push_str(&format!("  {h}:{}\n", ports.join(",")));
            } else {
                for path in &e.paths {
                    out.push_str(&format!("  {h}:{}{path}\n", ports.join(",")));
                }
            }
        }
        out.push_str(&format!("  purpose: {}\n", e.purpose));
        if !e.paths.is_empty() {
            out.push_str(
                "  path: enforced for plain-HTTP requests only; a CONNECT tunnel reaches the whole host\n",
            );
        }
        if let Some(i) = &e.idle_timeout {
            out.push_str(&format!("  idle_timeout: {i}\n"));
        }
        out.push_str(&format!("  source: {}\n", e.source));
    }
    if !p.left_out.is_empty() {
        out.push_str("\nleft out (documented, but not an allow rule here)\n");
        for l in &p.left_out {
            out.push_str(&format!(
                "  {}\n    why: {}\n    source: {}\n",
                l.what, l.why, l.source
            ));
        }
    }
    out
}

#[cfg(test)]
#[path = "vendors_tests.rs"]
mod tests;
