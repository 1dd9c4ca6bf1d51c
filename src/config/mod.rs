//! Configuration: load YAML (file or the embedded default) plus `EGRESSD_` environment overrides, then
//! compile it once into [`Settings`]: the [`Listeners`] bound at start and the [`Runtime`] a reload replaces,
//! with a ready [`Policy`](crate::policy::Policy).

mod compile;
mod env;
mod hosts_file;
mod own_addresses;
mod raw;
mod transparent;

pub use compile::{
    compile, Dns, FragmentStatus, Kubernetes, Limits, Listeners, Mode, ProxyProtocol, Runtime,
    Settings, Timeouts,
};
pub use raw::{RawConfig, TOP_LEVEL_KEYS};
pub use transparent::Transparent;

use std::fmt;
use std::path::Path;

/// The default configuration, compiled into the binary: used when no `--config` is given.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/egressd.yaml");

/// One problem in a configuration, with the key path it was found at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

/// Every problem found in a configuration; `validate` prints them all at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if e.path.is_empty() {
                write!(f, "{}", e.message)?;
            } else {
                write!(f, "{}: {}", e.path, e.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    fn single(path: &str, message: impl Into<String>) -> Self {
        ConfigErrors(vec![ConfigError {
            path: path.into(),
            message: message.into(),
        }])
    }
}

/// Load `path` (or the embedded default when `None`), apply `EGRESSD_*` environment overrides
/// (`EGRESSD_LISTEN`, `EGRESSD_TIMEOUTS__CONNECT`, `EGRESSD_VENDORS=castai-eu,cloudcasa-ui`, ...: `__` separates
/// nested keys), and compile.
pub fn load(path: Option<&Path>) -> Result<Settings, ConfigErrors> {
    let text = match path {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| ConfigErrors::single("", format!("cannot read {}: {e}", p.display())))?,
        None => DEFAULT_CONFIG.to_string(),
    };
    let source = config::File::from_str(&text, config::FileFormat::Yaml);
    let mut origin = path.map_or("embedded default".to_string(), |p| p.display().to_string());
    // Which EGRESSD_* variables are overrides (service-link variables and EGRESSD_LOG are not): env.rs.
    let selected = env::select(std::env::vars()).map_err(|e| {
        ConfigErrors(
            e.0.into_iter()
                .map(|mut err| {
                    err.message = format!("{origin}: {}", err.message);
                    err
                })
                .collect(),
        )
    })?;
    if !selected.read.is_empty() {
        let names: Vec<&str> = selected.read.iter().map(|(n, _)| n.as_str()).collect();
        origin = format!("{origin} with {}", names.join(", "));
    }
    // Lists can be given comma-separated: EGRESSD_VENDORS=castai-eu,cloudcasa-ui,
    // EGRESSD_DESTINATIONS__ALLOW_CIDRS=10.20.0.0/16,fd00:20::/64.
    let vars: config::Map<String, String> = selected.read.into_iter().collect();
    let env = config::Environment::with_prefix("EGRESSD")
        .source(Some(vars))
        .prefix_separator("_")
        .separator("__")
        .try_parsing(true)
        .list_separator(",")
        .with_list_parse_key("vendors")
        .with_list_parse_key("vendors_disable")
        .with_list_parse_key("destinations.allow_cidrs")
        .with_list_parse_key("via")
        .with_list_parse_key("parents_bypass");
    let raw = config::Config::builder()
        .add_source(source)
        .add_source(env)
        .build()
        .and_then(|c| c.try_deserialize::<RawConfig>())
        .map_err(|e| ConfigErrors::single("", format!("{origin}: {e}")))?;
    compile(&raw)
}

/// Parse and compile a YAML document, without environment overrides (used by tests and `check`).
pub fn from_yaml_str(yaml: &str) -> Result<Settings, ConfigErrors> {
    let raw = config::Config::builder()
        .add_source(config::File::from_str(yaml, config::FileFormat::Yaml))
        .build()
        .and_then(|c| c.try_deserialize::<RawConfig>())
        .map_err(|e| ConfigErrors::single("", e.to_string()))?;
    compile(&raw)
}
