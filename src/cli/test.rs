//! `egressd test`: run policy cases files; exit 0 when every case holds, 1 when any does not, 2 when a file or
//! configuration cannot be read.

use egressd::policy_cases;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The configuration the cases are about (default: each file's own `config:`, else the embedded one).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Cases files (YAML: `cases: [{target, expect, reason?, rule?, client? | from?, resolve?}]`).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

pub fn run(args: Args, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let mut failed = false;
    for path in &args.files {
        let (file, own_config) = match policy_cases::read(path) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        let config = args.config.clone().or(own_config);
        let settings = match super::load(config.as_deref()) {
            Ok(s) => s,
            Err(code) => return code,
        };
        let outcomes = runtime.block_on(policy_cases::run(&settings, &file.cases));
        print!(
            "{}",
            policy_cases::report(&path.display().to_string(), &outcomes)
        );
        failed |= outcomes.iter().any(|o| !o.passed());
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
