//! `egressd audit`: summarize a decision log, suggest rules, or report each rule's use.

use clap::ValueEnum;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Decision log file, plain or gzip; `-` or nothing reads stdin.
    pub file: Option<PathBuf>,
    /// Only decisions at or after this time: RFC 3339 (2026-11-29T09:00:00Z) or a duration before now (1h).
    #[arg(long)]
    pub since: Option<String>,
    /// Only decisions at or before this time: RFC 3339 or a duration before now (30m).
    #[arg(long)]
    pub until: Option<String>,
    /// table for people, json for scripts, markdown for tickets.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Print a YAML allow-rule snippet for the refused destinations instead of the summary.
    #[arg(long)]
    pub suggest: bool,
    /// With --suggest: one `*.parent` rule for two or more sibling names under the same parent domain.
    #[arg(long, requires = "suggest")]
    pub group_wildcards: bool,
    /// Groups shown, most decisions first (with --shadow: of each direction); 0 shows all.
    #[arg(long, default_value_t = 50)]
    pub top: usize,
    /// Distinct (destination, client, reason) groups kept (with --shadow: groups of disagreements); decisions
    /// for more are counted, not shown.
    #[arg(long, default_value_t = egressd::audit::DEFAULT_MAX_GROUPS)]
    pub max_groups: usize,
    /// `client`: one row per client address (and its client group); `group`: one row per client group,
    /// whatever the address (which vendor's agents are refused).
    #[arg(long, value_enum, default_value = "client")]
    pub by: By,
    /// Summarize allowed decisions by the rule that allowed them (what each vendor reached) instead of
    /// the refusals.
    #[arg(long, conflicts_with = "suggest")]
    pub allowed: bool,
    /// List every rule of the --config configuration (profile rules as `<profile>/<entry>`) with its use in
    /// the log, and the rules that matched nothing: candidates to remove.
    #[arg(
        long,
        requires = "config",
        conflicts_with_all = ["suggest", "allowed", "by", "top", "max_groups"]
    )]
    pub usage: bool,
    /// Summarize the decisions on which the candidate policy (`shadow:`) disagreed with the live one: what it
    /// would newly refuse and newly allow, by destination and deciding rule or reason.
    #[arg(long, conflicts_with_all = ["suggest", "usage", "allowed", "by"])]
    pub shadow: bool,
    /// The configuration: the rules --usage reports on; with --suggest, its vendor profiles are not proposed
    /// again.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Markdown,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum By {
    Client,
    Group,
}

pub fn run(args: Args) -> ExitCode {
    let opts = egressd::audit::Options {
        file: args.file,
        since: args.since,
        until: args.until,
        format: match args.format {
            Format::Table => egressd::audit::Format::Table,
            Format::Json => egressd::audit::Format::Json,
            Format::Markdown => egressd::audit::Format::Markdown,
        },
        suggest: args.suggest,
        group_wildcards: args.group_wildcards,
        top: args.top,
        max_groups: args.max_groups,
        view: egressd::audit::View {
            by_group: args.by == By::Group,
            allowed: args.allowed,
        },
        usage: args.usage,
        config: args.config,
        shadow: args.shadow,
    };
    super::print_or_fail(egressd::audit::run(&opts, time::OffsetDateTime::now_utc()))
}
