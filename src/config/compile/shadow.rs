//! `shadow: FILE`: a candidate configuration compiled next to the live one. Only its policy is kept (rules,
//! profiles, client groups): every request is decided by it too, and only the live policy's verdict is applied.

use super::*;

/// The candidate's policy, or `None` without `shadow:`. A candidate that cannot be read or compiled does not
/// stop the live configuration: it is left out with a warning that says why (run `egressd validate --config
/// FILE` on it for every error).
pub(super) fn compile_shadow(
    raw: &RawConfig,
    warnings: &mut Vec<String>,
    files: &mut Vec<std::path::PathBuf>,
) -> Option<Arc<Policy>> {
    let path = raw.shadow.as_deref()?;
    files.push(path.into());
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            warnings.push(format!("shadow: cannot read {path}: {e}; no shadow policy"));
            return None;
        }
    };
    let candidate = ::config::Config::builder()
        .add_source(::config::File::from_str(&text, ::config::FileFormat::Yaml))
        .build()
        .and_then(|c| c.try_deserialize::<RawConfig>());
    let candidate = match candidate {
        Ok(c) if c.shadow.is_some() => {
            warnings.push(format!(
                "shadow: {path} has a shadow of its own; a candidate is compared with the live \
                 configuration only; no shadow policy"
            ));
            return None;
        }
        Ok(c) => c,
        Err(e) => {
            warnings.push(format!("shadow: {path}: {e}; no shadow policy"));
            return None;
        }
    };
    match compile(&candidate) {
        Ok(s) => {
            files.extend(s.runtime.files.iter().cloned());
            Some(s.runtime.policy)
        }
        Err(e) => {
            let first = (e.0.first())
                .map(|e| format!("{}: {}", e.path, e.message))
                .unwrap_or_default();
            warnings.push(format!(
                "shadow: {path} is not a valid configuration ({} error(s), the first: {first}); no shadow \
                 policy",
                e.0.len()
            ));
            None
        }
    }
}
