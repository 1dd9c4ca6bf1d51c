//! `egressd audit`: summarize denied and would_deny decisions from decision logs, suggest allow rules (or the
//! vendor profiles that list the refused hosts), report how much each rule of a configuration is used, and
//! where a candidate policy (`shadow:`) disagreed with the live one.
//!
//! Streaming and bounded: lines are read one at a time (at most [`input::MAX_LINE_BYTES`] each), and only
//! aggregates are kept, one per (destination, client, reason) group, at most `max_groups` of them. Decisions
//! for further groups are counted and reported as not shown, so memory depends on the group limit, never on
//! the size of the log. The usage report keeps one aggregate per rule of the configuration; the shadow report
//! one per group of disagreements, at most `max_groups` of them too.

pub mod envelope;
pub mod event;
pub mod input;
pub mod render;
pub mod seen;
pub mod shadow;
pub mod shadow_render;
pub mod suggest;
pub mod suggest_vendors;
pub mod summary;
pub mod usage;
pub mod usage_render;
pub mod window;

pub use render::Format;

use std::path::{Path, PathBuf};
pub use summary::View;
use summary::{Summary, Tally};
use window::Window;

/// Default for `--max-groups`: about 30 MB of aggregates at most (some 300 bytes per group).
pub const DEFAULT_MAX_GROUPS: usize = 100_000;

#[derive(Debug, Clone)]
pub struct Options {
    /// `None` or `-`: stdin.
    pub file: Option<PathBuf>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub format: Format,
    pub suggest: bool,
    pub group_wildcards: bool,
    /// Groups shown; 0 shows all.
    pub top: usize,
    pub max_groups: usize,
    pub view: View,
    /// Report every rule of this configuration's use instead of the refusals.
    pub usage: bool,
    /// The configuration: the rules `usage` reports on, the vendor profiles `suggest` leaves out.
    pub config: Option<PathBuf>,
    /// Report where the candidate policy (`shadow:`) disagreed with the live one instead of the refusals.
    pub shadow: bool,
}

/// Read the log and render the summary (or, with `suggest`, the YAML snippet; with `usage`, the rules' use; with
/// `shadow`, the candidate policy's disagreements).
/// Errors name the file or option and what went wrong.
pub fn run(opts: &Options, now: time::OffsetDateTime) -> Result<String, String> {
    let window = Window::parse(opts.since.as_deref(), opts.until.as_deref(), now)?;
    if opts.config.is_some() && !(opts.usage || opts.suggest) {
        return Err("--config is read by --usage and --suggest only".to_string());
    }
    let settings = opts.config.as_deref().map(load_config).transpose()?;
    if opts.usage {
        let (Some(settings), Some(path)) = (&settings, &opts.config) else {
            return Err(
                "--usage needs --config FILE: the rules it reports on are the configuration's"
                    .into(),
            );
        };
        let mut usage = usage::Usage::new(window, &settings.runtime.policy);
        let source = read(opts.file.as_deref(), &mut usage)?;
        return Ok(usage_render::render(
            &usage,
            &source,
            &path.display().to_string(),
            opts.format,
        ));
    }
    if opts.max_groups == 0 {
        return Err("--max-groups must be at least 1".to_string());
    }
    if opts.shadow {
        let mut tally = shadow::Disagreements::new(window, opts.max_groups);
        let source = read(opts.file.as_deref(), &mut tally)?;
        let groups = tally.groups();
        let report = shadow_render::ShadowReport {
            source: &source,
            tally: &tally,
            groups: &groups,
            top: opts.top,
        };
        return Ok(shadow_render::render(&report, opts.format));
    }
    let mut summary = Summary::new(window, opts.max_groups, opts.view);
    let source = read(opts.file.as_deref(), &mut summary)?;
    let groups = summary.groups();
    let report = render::Report {
        source: &source,
        window: summary.window(),
        counts: summary.counts,
        max_groups: summary.max_groups(),
        groups: &groups,
        top: opts.top,
        view: opts.view,
    };
    if opts.suggest {
        let in_use = settings
            .as_ref()
            .map_or(&[][..], |s| s.runtime.policy.vendors());
        return Ok(suggest::suggest(&report, opts.group_wildcards, in_use));
    }
    Ok(render::render(&report, opts.format))
}

/// `--config`: the configuration as `egressd check` reads it (environment overrides included).
fn load_config(path: &Path) -> Result<crate::config::Settings, String> {
    crate::config::load(Some(path))
        .map_err(|e| format!("--config {}: configuration error:\n{e}", path.display()))
}

/// Read every line of the log (a file, or stdin for `None` and `-`) into `tally`, and return the log's name.
/// A log in which no line is a decision is an error, not an empty report.
fn read(file: Option<&Path>, tally: &mut dyn Tally) -> Result<String, String> {
    let mut input = input::Input::open(file)?;
    let mut buf = Vec::with_capacity(4096);
    let mut unwrapper = envelope::Unwrapper::new();
    // The first line that was not a decision, for the message when none was.
    let mut sample: Option<String> = None;
    loop {
        match input::next_line(&mut *input.reader, &mut buf, input::MAX_LINE_BYTES) {
            Ok(None) => break,
            Ok(Some(true)) => {
                // egressd's own lines are decisions as they stand: only other lines are looked into for a
                // wrapper, so a plain log is parsed once per line.
                let direct = event::classify(&buf);
                let unwrapped;
                let line = if matches!(direct, event::Line::Decision(_)) {
                    direct
                } else {
                    unwrapped = unwrapper.unwrap(&buf);
                    match &unwrapped {
                        envelope::Unwrapped::Pending => continue,
                        envelope::Unwrapped::Same(_) => direct,
                        envelope::Unwrapped::Inner(inner, _) => event::classify(inner),
                    }
                };
                if sample.is_none() && !matches!(line, event::Line::Decision(_)) {
                    sample = Some(printable_sample(&buf));
                }
                tally.add(line)
            }
            Ok(Some(false)) => tally.add_overlong(),
            Err(e) => {
                input.finish();
                return Err(format!(
                    "cannot read {} after {} lines: {e}",
                    input.name,
                    tally.counts().lines
                ));
            }
        }
    }
    input.finish();
    let c = tally.counts();
    if c.decisions + c.outside_window + c.invalid == 0 {
        return Err(no_decisions(&input.name, c, sample.as_deref()));
    }
    Ok(input.name)
}

/// The first 120 characters of a line, with control characters (ANSI escapes, newlines) escaped.
fn printable_sample(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let cut: String = text.chars().take(120).collect();
    let more = if text.chars().count() > 120 {
        "..."
    } else {
        ""
    };
    format!("{}{more}", cut.escape_debug())
}

/// Why a log with no decision line is an error, not an empty report: "nothing was refused" must not be read
/// into a log the audit could not read.
fn no_decisions(name: &str, c: &summary::Counts, sample: Option<&str>) -> String {
    let mut msg = format!(
        "no decision lines in {name}: {} lines read, {} not JSON, {} other events",
        c.lines,
        c.not_json,
        c.skipped - c.not_json
    );
    if let Some(s) = sample {
        msg.push_str(&format!("; the first looked like: {s}"));
    }
    msg.push_str(
        "\negressd audit reads egressd's JSON lines as written, or wrapped by `kubectl logs --prefix`, kubelet \
         CRI log files, Docker/Fluent Bit/CloudWatch `log` fields, Loki (`logcli query`, any output) and \
         Cloud Logging exports (`jsonPayload`); text-format logs cannot be audited",
    );
    msg
}
