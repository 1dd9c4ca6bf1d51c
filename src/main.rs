use clap::{Parser, Subcommand, ValueEnum};

/// mimalloc: less time in malloc/free per connection than glibc's allocator, and less memory per idle tunnel
/// (README "Performance").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use egressd::check::check;
use egressd::config;
use egressd::proxy::dial::Dialer;
use egressd::{agent_env, noproxy, vendors};
use egressd::{CancellationToken, EventLog, LogFormat};
use ipnet::IpNet;
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
        /// Evaluate as a member of this client group (from `clients:`); without it, as an unidentified client.
        #[arg(long, value_name = "NAME")]
        client: Option<String>,
        #[arg(required = true)]
        targets: Vec<String>,
    },
    /// Summarize denied and would_deny decisions in a decision log (JSON lines, plain or gzip).
    Audit {
        /// Decision log file, plain or gzip; `-` or nothing reads stdin.
        file: Option<PathBuf>,
        /// Only decisions at or after this time: RFC 3339 (2026-11-29T09:00:00Z) or a duration before now (1h).
        #[arg(long)]
        since: Option<String>,
        /// Only decisions at or before this time: RFC 3339 or a duration before now (30m).
        #[arg(long)]
        until: Option<String>,
        /// table for people, json for scripts, markdown for tickets.
        #[arg(long, value_enum, default_value = "table")]
        format: AuditFormat,
        /// Print a YAML allow-rule snippet for the refused destinations instead of the summary.
        #[arg(long)]
        suggest: bool,
        /// With --suggest: one `*.parent` rule for two or more sibling names under the same parent domain.
        #[arg(long, requires = "suggest")]
        group_wildcards: bool,
        /// Groups shown, most decisions first; 0 shows all.
        #[arg(long, default_value_t = 50)]
        top: usize,
        /// Distinct (destination, client, reason) groups kept; decisions for more are counted, not shown.
        #[arg(long, default_value_t = egressd::audit::DEFAULT_MAX_GROUPS)]
        max_groups: usize,
        /// `client`: one row per client address (and its client group); `group`: one row per client group,
        /// whatever the address (which vendor's agents are refused).
        #[arg(long, value_enum, default_value = "client")]
        by: AuditBy,
        /// Summarize allowed decisions by the rule that allowed them (what each vendor reached) instead of
        /// the refusals.
        #[arg(long, conflicts_with = "suggest")]
        allowed: bool,
    },
    /// NO_PROXY tools: how Go, curl and Python clients read a NO_PROXY value.
    Noproxy {
        #[command(subcommand)]
        command: NoproxyCommand,
    },
    /// List the embedded vendor profiles, or show one profile's endpoints.
    Vendors {
        #[command(subcommand)]
        command: Option<VendorsCommand>,
    },
    /// Hash a password for `clients[].users` (argon2id): reads it from stdin (one trailing newline is dropped)
    /// and prints the PHC string.
    HashPassword,
    /// Print the proxy environment and kubectl commands for a vendor's agents.
    AgentEnv {
        /// egressd's address as the agents reach it, e.g. http://egressd.egressd.svc:3128.
        #[arg(long)]
        proxy_url: String,
        /// Vendor profile (see `egressd vendors`).
        #[arg(long)]
        vendor: String,
        #[arg(long, value_parser = parse_cidr)]
        pod_cidr: Option<IpNet>,
        #[arg(long, value_parser = parse_cidr)]
        service_cidr: Option<IpNet>,
        #[arg(long, default_value = "cluster.local", value_parser = parse_cluster_domain)]
        cluster_domain: String,
        /// Namespace of the agent workloads, where the vendor documents do not name it.
        #[arg(long, value_parser = parse_namespace)]
        namespace: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum AuditFormat {
    Table,
    Json,
    Markdown,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AuditBy {
    Client,
    Group,
}

#[derive(Subcommand)]
enum NoproxyCommand {
    /// For each URL and client: direct or through the proxy, and the entry that decided it.
    Explain {
        #[arg(long, allow_hyphen_values = true)]
        no_proxy: String,
        /// go, curl, python (urllib and requests), urllib, requests or all.
        #[arg(long, default_value = "all")]
        client: String,
        #[arg(required = true)]
        urls: Vec<String>,
    },
    /// Warnings, each with its fix, for known NO_PROXY pitfalls: exit 0 if none, 1 if any.
    Lint {
        #[arg(long, allow_hyphen_values = true)]
        no_proxy: String,
        #[arg(long, value_parser = parse_cidr)]
        pod_cidr: Option<IpNet>,
        #[arg(long, value_parser = parse_cidr)]
        service_cidr: Option<IpNet>,
    },
    /// A NO_PROXY value that works the same for Go, curl and Python clients.
    Suggest {
        #[arg(long, value_parser = parse_cidr)]
        pod_cidr: IpNet,
        #[arg(long, value_parser = parse_cidr)]
        service_cidr: IpNet,
        #[arg(long, default_value = "cluster.local", value_parser = parse_cluster_domain)]
        cluster_domain: String,
    },
    /// Read the proxy variables (both cases) from the environment and explain what each client does.
    FromEnv {
        /// URLs to route with each client's own variables.
        urls: Vec<String>,
    },
}

#[derive(Subcommand)]
enum VendorsCommand {
    /// Each endpoint of a profile with its port, purpose and source document.
    Show {
        name: String,
        /// Profile parameter NAME=VALUE (lists comma-separated); repeatable.
        #[arg(long = "param")]
        params: Vec<String>,
    },
}

fn parse_cidr(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .map(|n| n.trunc())
        .map_err(|_| format!("{s:?} is not a CIDR such as 10.96.0.0/12"))
}

/// `--cluster-domain`: a DNS name (it becomes NO_PROXY entries), without its trailing dot.
fn parse_cluster_domain(s: &str) -> Result<String, String> {
    agent_env::check_cluster_domain(s).map(|()| s.trim_end_matches('.').to_string())
}

/// `--namespace`: a Kubernetes namespace name (it is printed into kubectl commands).
fn parse_namespace(s: &str) -> Result<String, String> {
    agent_env::check_namespace(s).map(|()| s.to_string())
}

/// `egressd hash-password`: the password from stdin, a salt from the system's random generator.
fn hash_password_from_stdin() -> Result<String, String> {
    use std::io::Read;
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .map_err(|e| format!("reading the password from stdin: {e}"))?;
    let password = password
        .strip_suffix('\n')
        .map(|p| p.strip_suffix('\r').unwrap_or(p))
        .unwrap_or(&password);
    let mut salt = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut salt))
        .map_err(|e| format!("reading a random salt from /dev/urandom: {e}"))?;
    egressd::policy::credentials::hash_password(password, &salt).map(|phc| format!("{phc}\n"))
}

/// Print a command's output, or its error on stderr with exit code 2.
fn print_or_fail(r: Result<String, String>) -> ExitCode {
    match r {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
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
            let nofile = egressd::fd_limit::raise();
            let settings = match load(config.as_deref()) {
                Ok(s) => s,
                Err(code) => return code,
            };
            if let Some(w) = egressd::fd_limit::shortfall(nofile, settings.limits.max_connections) {
                tracing::warn!("{w}");
            }
            let config_path = config.clone();
            let format = match cli.log_format {
                Format::Json => LogFormat::Json,
                Format::Text => LogFormat::Text,
            };
            runtime.block_on(async {
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
            })
        }
        Command::Validate { config } => match load(config.as_deref()) {
            Ok(s) => {
                for w in &s.warnings {
                    eprintln!("warning: {w}");
                }
                println!("configuration is valid: {} rules", s.policy.rule_count());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Check {
            config,
            resolve,
            client,
            targets,
        } => {
            let settings = match load(config.as_deref()) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let clients = &settings.policy.clients;
            let identity =
                match client.as_deref().map(|n| (n, clients.member_of(n))) {
                    None => Default::default(),
                    Some((_, Some(id))) => id,
                    Some((name, None)) => {
                        let known: Vec<&str> = clients.names().collect();
                        eprintln!(
                        "--client {name:?} is not a client group; the configuration defines: {}",
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    );
                        return ExitCode::from(2);
                    }
                };
            runtime.block_on(async {
                let dialer = resolve.then(|| Dialer::new(&settings));
                let mut all_allowed = true;
                for t in &targets {
                    let r = check(&settings, dialer.as_ref(), &identity, t).await;
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
        Command::Audit {
            file,
            since,
            until,
            format,
            suggest,
            group_wildcards,
            top,
            max_groups,
            by,
            allowed,
        } => {
            let opts = egressd::audit::Options {
                file,
                since,
                until,
                format: match format {
                    AuditFormat::Table => egressd::audit::Format::Table,
                    AuditFormat::Json => egressd::audit::Format::Json,
                    AuditFormat::Markdown => egressd::audit::Format::Markdown,
                },
                suggest,
                group_wildcards,
                top,
                max_groups,
                view: egressd::audit::View {
                    by_group: by == AuditBy::Group,
                    allowed,
                },
            };
            print_or_fail(egressd::audit::run(&opts, time::OffsetDateTime::now_utc()))
        }
        Command::Noproxy { command } => run_noproxy(command),
        Command::HashPassword => print_or_fail(hash_password_from_stdin()),
        Command::Vendors { command } => match command {
            None => print_or_fail(Ok(vendors::render_list())),
            Some(VendorsCommand::Show { name, params }) => {
                print_or_fail(vendors::show(&name, &params))
            }
        },
        Command::AgentEnv {
            proxy_url,
            vendor,
            pod_cidr,
            service_cidr,
            cluster_domain,
            namespace,
        } => {
            let Some(profile) = vendors::find(&vendor) else {
                return print_or_fail(Err(format!(
                    "{vendor:?} is not a vendor profile; available: {}",
                    vendors::names().join(", ")
                )));
            };
            print_or_fail(agent_env::render(&agent_env::Request {
                proxy_url: &proxy_url,
                profile,
                pod_cidr,
                service_cidr,
                cluster_domain: &cluster_domain,
                namespace: namespace.as_deref(),
            }))
        }
    }
}

fn run_noproxy(command: NoproxyCommand) -> ExitCode {
    match command {
        NoproxyCommand::Explain {
            no_proxy,
            client,
            urls,
        } => print_or_fail(
            noproxy::Client::parse_set(&client)
                .and_then(|clients| noproxy::explain(&no_proxy, &clients, &urls)),
        ),
        NoproxyCommand::Lint {
            no_proxy,
            pod_cidr,
            service_cidr,
        } => {
            let warnings = noproxy::lint(&no_proxy, pod_cidr, service_cidr);
            print!("{}", noproxy::render_warnings(&warnings));
            if warnings.is_empty() {
                println!("no warnings");
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        NoproxyCommand::Suggest {
            pod_cidr,
            service_cidr,
            cluster_domain,
        } => print_or_fail(Ok(format!(
            "{}\n",
            noproxy::suggest(Some(pod_cidr), Some(service_cidr), &cluster_domain)
        ))),
        NoproxyCommand::FromEnv { urls } => {
            let vars = std::env::vars()
                .filter(|(k, _)| noproxy::env::VARIABLES.contains(&k.as_str()))
                .collect();
            print_or_fail(noproxy::from_env(&vars, &urls))
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
