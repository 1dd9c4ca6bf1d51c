//! `egressd run` (and no subcommand): serve until SIGTERM or SIGINT.

use super::Format;
use egressd::{CancellationToken, EventLog, LogFormat};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Default)]
pub struct Args {
    /// Configuration file; without it the embedded default is used.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn run(args: Args, log_format: Format, runtime: &tokio::runtime::Runtime) -> ExitCode {
    init_tracing(log_format);
    let nofile = egressd::fd_limit::raise();
    let settings = match super::load(args.config.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if let Some(w) = egressd::fd_limit::shortfall(nofile, settings.runtime.limits.max_connections) {
        tracing::warn!("{w}");
    }
    let format = match log_format {
        Format::Json => LogFormat::Json,
        Format::Text => LogFormat::Text,
    };
    runtime.block_on(serve(settings, args.config, format))
}

async fn serve(
    settings: egressd::Settings,
    config_path: Option<PathBuf>,
    format: LogFormat,
) -> ExitCode {
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("SIGTERM/SIGINT: shutting down");
        on_signal.cancel();
    });
    let log = EventLog::stdout(format);
    let served = egressd::run(settings, config_path, log.clone(), shutdown).await;
    // The last lines of a batch are still queued.
    log.flush();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a listener");
            ExitCode::from(1)
        }
    }
}

fn init_tracing(format: Format) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EGRESSD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal, never into a file or a log collector.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_target(false);
    match format {
        Format::Json => builder.json().flatten_event(true).init(),
        Format::Text => builder.init(),
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
