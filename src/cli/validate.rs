//! `egressd validate`: load the configuration, print its warnings and rule count.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn run(args: Args) -> ExitCode {
    match super::load(args.config.as_deref()) {
        Ok(s) => {
            for w in &s.runtime.warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "configuration is valid: {} rules",
                s.runtime.policy.rule_count()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
