//! The `flashgate` command. Everything it does lives in the library; this file parses
//! arguments and reports errors.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flashgate::config::Config;
use flashgate::demo::DemoPorts;

/// jemalloc, purging in the background: a burst of connections (a sale's start, a reconnect
/// wave of event streams) leaves glibc's heap holding what they freed. Measured with 9,000
/// event streams opened at once (`loadtests/sse-bench.sh 9000 60`): glibc kept the node at 149
/// MB, of which `malloc_trim` gave back 117 MB (the streams themselves need ~0.3 KiB each).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug)]
#[command(
    name = "flashgate",
    version,
    about = "Flash-sale admission and virtual waiting-room proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the proxy with a config file.
    Run {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Take the listening sockets over from a running instance (zero-downtime upgrade).
        #[arg(long)]
        upgrade: bool,
    },
    /// Run the demo: shop, proxy, admin API and a launch one minute away.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: std::net::SocketAddr,
        #[arg(long, default_value = "127.0.0.1:3000")]
        shop: std::net::SocketAddr,
    },
    /// Run only the demo shop (an origin for trying configs and for benchmarks).
    Shop {
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: std::net::SocketAddr,
        /// Delay every response by this many milliseconds (a slow origin, for benchmarks).
        #[arg(long, default_value_t = 0, value_name = "MS")]
        latency_ms: u64,
    },
    /// Validate config files (`.toml`) and monitoring files (a Grafana dashboard `.json`,
    /// Prometheus rules `.yml`: every flashgate_* metric they use must exist); exits 0 when
    /// all are valid, 2 otherwise.
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Print a new random signing secret (for `secret_env` / `secret_file`).
    Keygen,
    /// Talk to a running node's admin API.
    Admin {
        /// The admin listener.
        #[arg(long, default_value = "127.0.0.1:9901", env = "FLASHGATE_ADMIN")]
        url: String,
        /// Environment variable holding the bearer token (if the API needs one).
        #[arg(long, default_value = "FLASHGATE_ADMIN_TOKEN")]
        token_env: String,
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Work with tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Every room with its numbers.
    Rooms,
    /// One room: tickets issued, serving, waiting, active, ETA at the back, state, rate.
    Room { id: String },
    /// Live changes: `set drop new_users_per_minute=120 message="Back soon"` (null clears).
    Set {
        id: String,
        #[arg(required = true, value_name = "KEY=VALUE")]
        changes: Vec<String>,
    },
    /// Stop admitting (arrivals still get their place).
    Pause { id: String },
    /// Admit again after a pause.
    Resume { id: String },
    /// Close the line to newcomers; those waiting are still admitted.
    Drain { id: String },
    /// Declare the sale sold out.
    SoldOut { id: String },
    /// Reload the config file on the node (same as SIGHUP).
    Reload,
    /// Liveness and readiness.
    Health,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Decode a ticket or pass, verify it against the config's keys and print its fields.
    Inspect {
        token: String,
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: log files and journald get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let now = flashgate::clock::now();
    match cli.command {
        Command::Check { files } => {
            let mut ok = true;
            let metrics = flashgate::metrics::Metrics::new();
            for f in &files {
                if flashgate::monitoring::is_monitoring_file(f) {
                    match flashgate::monitoring::check_file(f, &metrics.names) {
                        Ok(c) => println!(
                            "{}: ok ({} {}, {} metrics)",
                            f.display(),
                            c.items,
                            c.what,
                            c.metrics
                        ),
                        Err(e) => {
                            eprintln!("{e}");
                            ok = false;
                        }
                    }
                    continue;
                }
                match Config::load(f, now) {
                    Ok(c) => println!(
                        "{}: ok ({} rooms, {} upstreams)",
                        f.display(),
                        c.rooms.len(),
                        c.upstreams.len()
                    ),
                    Err(e) => {
                        eprintln!("{e}");
                        ok = false;
                    }
                }
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Command::Admin {
            url,
            token_env,
            command,
        } => {
            use flashgate::admin_client::{patch_body, AdminTarget};
            let target = AdminTarget {
                addr: url,
                token: std::env::var(&token_env).ok(),
            };
            let patch = |id: &str, body: String| {
                target.request("PATCH", &format!("/api/rooms/{id}"), Some(&body))
            };
            let result = match command {
                AdminCommand::Rooms => target.request("GET", "/api/rooms", None),
                AdminCommand::Room { id } => {
                    target.request("GET", &format!("/api/rooms/{id}"), None)
                }
                AdminCommand::Set { id, changes } => match patch_body(&changes) {
                    Ok(body) => patch(&id, body),
                    Err(e) => Err(e),
                },
                AdminCommand::Pause { id } => patch(&id, r#"{"paused":true}"#.into()),
                AdminCommand::Resume { id } => {
                    patch(&id, r#"{"paused":false,"queue_all":false}"#.into())
                }
                AdminCommand::Drain { id } => patch(&id, r#"{"drain":true}"#.into()),
                AdminCommand::SoldOut { id } => patch(&id, r#"{"sold_out":true}"#.into()),
                AdminCommand::Reload => target.request("POST", "/api/reload", None),
                AdminCommand::Health => target.request("GET", "/readyz", None),
            };
            match result {
                Ok(r) => {
                    let pretty = serde_json::from_str::<serde_json::Value>(&r.body)
                        .ok()
                        .and_then(|v| serde_json::to_string_pretty(&v).ok())
                        .unwrap_or(r.body);
                    if (200..300).contains(&r.status) {
                        println!("{}", pretty.trim_end());
                        ExitCode::SUCCESS
                    } else {
                        eprintln!("admin API answered {}: {}", r.status, pretty.trim_end());
                        ExitCode::from(2)
                    }
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Keygen => {
            let mut b = [0u8; 32];
            if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
                eprintln!("keygen: the system random generator failed");
                return ExitCode::FAILURE;
            }
            println!("{}", waitroom::shuffle::hex(&b));
            ExitCode::SUCCESS
        }
        Command::Token {
            command: TokenCommand::Inspect { token, config },
        } => {
            let cfg = match Config::load(&config, now) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            match cfg.keys.inspect(token.trim()) {
                Ok(t) => {
                    println!("{t:#?}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("token does not verify: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Run { config, upgrade } => {
            let cfg = match Config::load(&config, now) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            init_logs(cfg.server.log_json);
            if flashgate::clock::skew_ms() != 0 {
                tracing::warn!(
                    skew_ms = flashgate::clock::skew_ms(),
                    "{} is set: this node's clock is offset (for tests only)",
                    flashgate::clock::SKEW_ENV
                );
            }
            match flashgate::server::build(&cfg, Some(config.clone()), upgrade) {
                Ok((server, _)) => {
                    tracing::info!(listen = ?cfg.server.listen, admin = %cfg.server.admin_listen, "flashgate starting");
                    server.run_forever()
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Shop { listen, latency_ms } => {
            init_logs(false);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("shop: cannot start a runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let served = rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(listen).await?;
                let shop = flashgate::shop::Shop::new(flashgate::shop::ShopConfig {
                    latency: std::time::Duration::from_millis(latency_ms),
                    ..flashgate::shop::ShopConfig::demo()
                });
                shop.serve(listener, async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await
            });
            match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("shop: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo {
            listen,
            admin,
            shop,
        } => {
            init_logs(false);
            match flashgate::demo::run(DemoPorts {
                proxy: listen,
                admin,
                shop,
            }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
