//! The `flashgate` command. Everything it does lives in the library; this file parses
//! arguments and reports errors.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flashgate::config::Config;
use flashgate::demo::DemoPorts;

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
    /// Validate config files; exits 0 when all are valid, 2 otherwise.
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Print a new random signing secret (for `secret_env` / `secret_file`).
    Keygen,
    /// Work with tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
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
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
            for f in &files {
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
            match flashgate::server::build(&cfg, upgrade) {
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
