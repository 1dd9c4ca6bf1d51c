//! `egressd vendors`: the embedded vendor profiles.

use super::print_or_fail;
use clap::Subcommand;
use egressd::vendors;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Each endpoint of a profile with its port, purpose and source document.
    Show {
        name: String,
        /// Profile parameter NAME=VALUE (lists comma-separated); repeatable.
        #[arg(long = "param")]
        params: Vec<String>,
    },
}

pub fn run(args: Args) -> ExitCode {
    match args.command {
        None => print_or_fail(Ok(vendors::render_list())),
        Some(Command::Show { name, params }) => print_or_fail(vendors::show(&name, &params)),
    }
}
