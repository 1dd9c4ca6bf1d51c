//! `egressd audit`: summarize denied and would_deny decisions from decision logs, and suggest allow rules.
//!
//! Streaming and bounded: lines are read one at a time (at most [`input::MAX_LINE_BYTES`] each), and only
//! aggregates are kept, one per (destination, client, reason) group, at most `max_groups` of them. Decisions
//! for further groups are counted and reported as not shown, so memory depends on the group limit, never on
//! the size of the log.

pub mod event;
pub mod input;
pub mod render;
pub mod suggest;
pub mod summary;
pub mod window;

pub use render::Format;

use std::path::PathBuf;
use summary::Summary;
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
}

/// Read the log and render the summary (or, with `suggest`, the YAML snippet). Errors name the file and
/// what went wrong.
pub fn run(opts: &Options, now: time::OffsetDateTime) -> Result<String, String> {
    let window = Window::parse(opts.since.as_deref(), opts.until.as_deref(), now)?;
    if opts.max_groups == 0 {
        return Err("--max-groups must be at least 1".to_string());
    }
    let mut input = input::Input::open(opts.file.as_deref())?;
    let mut summary = Summary::new(window, opts.max_groups);
    let mut buf = Vec::with_capacity(4096);
    loop {
        match input::next_line(&mut *input.reader, &mut buf, input::MAX_LINE_BYTES) {
            Ok(None) => break,
            Ok(Some(true)) => summary.add(event::classify(&buf)),
            Ok(Some(false)) => summary.add_overlong(),
            Err(e) => {
                input.finish();
                return Err(format!(
                    "cannot read {} after {} lines: {e}",
                    input.name, summary.counts.lines
                ));
            }
        }
    }
    input.finish();
    let groups = summary.groups();
    let report = render::Report {
        source: &input.name,
        window: summary.window(),
        counts: summary.counts,
        max_groups: summary.max_groups(),
        groups: &groups,
        top: opts.top,
    };
    if opts.suggest {
        return Ok(suggest::suggest(&report, opts.group_wildcards));
    }
    Ok(render::render(&report, opts.format))
}
