//! The `egressd` binary: parse the command line and hand it to the subcommand's handler in `cli/`.

mod cli;

use cli::Command;
use std::process::ExitCode;

/// mimalloc: less time in malloc/free per connection than glibc's allocator, and less memory per idle tunnel
/// (README "Performance").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match cli::parse() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match cli::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    match cli.command.unwrap_or_default() {
        Command::Run(args) => cli::run::run(args, cli.log_format, &runtime),
        Command::Validate(args) => cli::validate::run(args),
        Command::Check(args) => cli::check::run(args, &runtime),
        Command::Test(args) => cli::test::run(args, &runtime),
        Command::Audit(args) => cli::audit::run(args),
        Command::Noproxy(args) => cli::noproxy::run(args),
        Command::Vendors(args) => cli::vendors::run(args),
        Command::HashPassword => cli::hash_password::run(),
        Command::AgentEnv(args) => cli::agent_env::run(args),
        Command::Probe(args) => cli::probe::run(args, &runtime),
    }
}
