use clap::{Parser, Subcommand, ValueEnum};
use egressd::check::check;
use egressd::config;
use egressd::proxy::dial::Dialer;
use egressd::{CancellationToken, EventLog, LogFormat};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "egressd", version, about = "Egress allowlisting forward proxy")]
struct Cli {
    /// Log format: json (one JSON object per line) or text.
    #[arg(long, global = true, value_enum, default_value = "json")]
    log_format: Format,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Text,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default when no subcommand is given).
    Run {
        /// Configuration file; without it the embedded default is used.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check a configuration: exit 0 if valid, 2 with every error listed if not.
    Validate {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Show the decision for targets (host:port or URL): exit 0 if all allowed, 1 if any denied.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also resolve names and apply the destination address checks.
        #[arg(long)]
        resolve: bool,
        #[arg(required = true)]
        targets: Vec<String>,
    },
}

fn init_tracing(format: Format) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EGRESSD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match format {
        Format::Json => builder.json().flatten_event(true).init(),
        Format::Text => builder.init(),
    }
}

fn load(path: Option<&std::path::Path>) -> Result<config::Settings, ExitCode> {
    config::load(path).map_err(|e| {
        eprintln!("configuration error:\n{e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command.unwrap_or(Command::Run { config: None }) {
        Command::Run { config } => {
            init_tracing(cli.log_format);
            let settings = match load(config.as_deref()) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let format = match cli.log_format {
                Format::Json => LogFormat::Json,
                Format::Text => LogFormat::Text,
            };
            runtime.block_on(async {
                let shutdown = CancellationToken::new();
                let on_signal = shutdown.clone();
                tokio::spawn(async move {
                    wait_for_signal().await;
                    tracing::info!("shutting down");
                    on_signal.cancel();
                });
                match egressd::run(settings, EventLog::stdout(format), shutdown).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the proxy listener");
                        ExitCode::from(1)
                    }
                }
            })
        }
        Command::Validate { config } => match load(config.as_deref()) {
            Ok(s) => {
                println!("configuration is valid: {} rules", s.policy.rule_count());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Check {
            config,
            resolve,
            targets,
        } => {
            let settings = match load(config.as_deref()) {
                Ok(s) => s,
                Err(code) => return code,
            };
            runtime.block_on(async {
                let dialer = resolve.then(|| Dialer::new(&settings));
                let mut all_allowed = true;
                for t in &targets {
                    let r = check(&settings, dialer.as_ref(), t).await;
                    all_allowed &= r.allowed();
                    let mut line = format!(
                        "{}\t{}\trule={}\treason={}",
                        r.input,
                        r.decision,
                        r.rule.as_deref().unwrap_or("-"),
                        r.reason
                    );
                    if !r.resolved.is_empty() {
                        let addrs: Vec<String> = r.resolved.iter().map(|a| a.to_string()).collect();
                        line.push_str(&format!("\tresolved={}", addrs.join(",")));
                    }
                    if let Some(d) = &r.detail {
                        line.push_str(&format!("\t{d}"));
                    }
                    println!("{line}");
                }
                if all_allowed {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            })
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
