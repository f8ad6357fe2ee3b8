//! The `screenpop` command: `serve` runs the service, `dial` places a test call.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use screenpop::config::{parse_port_range, Profile};
use screenpop::server::{serve, ServeConfig};

#[derive(Parser)]
#[command(
    name = "screenpop",
    version,
    about = "Call-center CTI: SIP B2BUA, recording, screen-pop"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the service.
    Serve {
        /// SIP address (UDP and TCP).
        #[arg(long, env = "SCREENPOP_SIP", default_value = "0.0.0.0:5060")]
        sip: SocketAddr,
        /// HTTP API, WebSocket and pages; `off` disables them.
        #[arg(long, env = "SCREENPOP_HTTP", default_value = "127.0.0.1:8080")]
        http: String,
        /// Database: sqlite://FILE (created when missing) or postgres://…
        #[arg(
            long,
            env = "SCREENPOP_DATABASE",
            default_value = "sqlite://screenpop.db"
        )]
        database: String,
        /// Where recordings are written.
        #[arg(long, env = "SCREENPOP_RECORDINGS", default_value = "recordings")]
        recordings: PathBuf,
        /// SIP profile name (sip-profiles/NAME.toml) or path.
        #[arg(long, env = "SCREENPOP_PROFILE", default_value = "default")]
        profile: String,
        /// RTP port range LOW-HIGH (overrides the profile).
        #[arg(long, env = "SCREENPOP_RTP_PORTS")]
        rtp_ports: Option<String>,
        /// Media engine threads; default half the cores (one on a 2-core machine), which
        /// measured cheaper per call than one per core while one thread keeps up.
        #[arg(long, env = "SCREENPOP_MEDIA_THREADS")]
        media_threads: Option<usize>,
    },
    /// Accounts: `admin create --username U --password-stdin`.
    Admin {
        #[command(subcommand)]
        cmd: AdminCmd,
    },
    /// Customers as CSV: `customers import FILE.csv`, `customers export [--output FILE]`.
    Customers {
        #[command(subcommand)]
        cmd: CustomersCmd,
    },
    /// Apply the database migrations and exit (serve also applies them at start-up).
    Migrate {
        #[arg(
            long,
            env = "SCREENPOP_DATABASE",
            default_value = "sqlite://screenpop.db"
        )]
        database: String,
    },
    /// Place one call (a real UAC on the same stack), for demos and tests.
    Dial {
        /// Target URI, e.g. sip:100@127.0.0.1:5060 (an IP address; add ;transport=tcp for TCP).
        #[arg(long)]
        to: String,
        /// Caller number presented in From.
        #[arg(long, default_value = "anonymous")]
        from: String,
        /// WAV to play: PCM at any rate (resampled to 8 kHz), mono or stereo (mixed), or G.711.
        #[arg(long)]
        play: Option<PathBuf>,
        /// Hang up after this long (10s, 500ms, 2m).
        #[arg(long, default_value = "10s", value_parser = screenpop::calls::dial::parse_duration)]
        hangup_after: std::time::Duration,
        /// Digits to send as RFC 4733 events one second after answer.
        #[arg(long, default_value = "")]
        dtmf: String,
        /// Local SIP address to send from.
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: SocketAddr,
        /// Credentials for 401/407 challenges.
        #[arg(long)]
        username: Option<String>,
        #[arg(long, env = "SCREENPOP_DIAL_PASSWORD")]
        password: Option<String>,
    },
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Create an admin account (the password is read from standard input).
    Create {
        #[arg(long)]
        username: String,
        #[arg(long)]
        password_stdin: bool,
        #[arg(long, default_value = "Administrator")]
        display_name: String,
        #[arg(
            long,
            env = "SCREENPOP_DATABASE",
            default_value = "sqlite://screenpop.db"
        )]
        database: String,
    },
}

#[derive(Subcommand)]
enum CustomersCmd {
    /// Import customers; nothing is written unless every row is good.
    Import {
        file: PathBuf,
        #[arg(
            long,
            env = "SCREENPOP_DATABASE",
            default_value = "sqlite://screenpop.db"
        )]
        database: String,
        /// Profile whose `default_region` and `area_code` read national and local numbers.
        #[arg(long, env = "SCREENPOP_PROFILE", default_value = "default")]
        profile: String,
    },
    /// Export every customer (to standard output unless --output).
    Export {
        #[arg(long)]
        output: Option<PathBuf>,
        #[arg(
            long,
            env = "SCREENPOP_DATABASE",
            default_value = "sqlite://screenpop.db"
        )]
        database: String,
    },
}

async fn open_store(database: &str) -> anyhow::Result<screenpop::store::Store> {
    let store = screenpop::store::Store::connect(database).await?;
    store.migrate().await?;
    Ok(store)
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.cmd {
        Cmd::Migrate { database } => rt.block_on(async {
            let store = screenpop::store::Store::connect(&database).await?;
            store.migrate().await?;
            eprintln!("migrations applied to {database}");
            Ok(())
        }),
        Cmd::Admin {
            cmd:
                AdminCmd::Create {
                    username,
                    password_stdin,
                    display_name,
                    database,
                },
        } => {
            if !password_stdin {
                anyhow::bail!("give --password-stdin and the password on standard input");
            }
            let mut password = String::new();
            std::io::stdin().read_line(&mut password)?;
            let password = password.trim_end_matches(['\r', '\n']).to_string();
            rt.block_on(async {
                let store = open_store(&database).await?;
                let a =
                    screenpop::server::create_admin(&store, &username, &display_name, &password)
                        .await?;
                eprintln!("admin {} created (id {})", a.username, a.id);
                Ok(())
            })
        }
        Cmd::Customers {
            cmd:
                CustomersCmd::Import {
                    file,
                    database,
                    profile,
                },
        } => {
            let profile = Profile::load(&profile)?;
            let plan = profile.number_plan()?;
            let data =
                std::fs::read(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            rt.block_on(async {
                let store = open_store(&database).await?;
                let report = screenpop::crm::csv::import(&store, &data, plan).await?;
                for r in &report.rejected {
                    eprintln!(
                        "line {}: {}{}",
                        r.line,
                        r.field
                            .as_deref()
                            .map(|f| format!("{f}: "))
                            .unwrap_or_default(),
                        r.reason
                    );
                }
                if report.rejected.is_empty() {
                    eprintln!("{} customers imported", report.imported);
                    Ok(())
                } else {
                    anyhow::bail!("{} rows rejected; nothing imported", report.rejected.len())
                }
            })
        }
        Cmd::Customers {
            cmd: CustomersCmd::Export { output, database },
        } => rt.block_on(async {
            let store = open_store(&database).await?;
            let mut out = Vec::new();
            screenpop::crm::csv::export(&store, &mut out).await?;
            match output {
                Some(p) => std::fs::write(&p, out)?,
                None => std::io::Write::write_all(&mut std::io::stdout(), &out)?,
            }
            Ok(())
        }),
        Cmd::Serve {
            sip,
            http,
            database,
            recordings,
            profile,
            rtp_ports,
            media_threads,
        } => {
            let profile = Profile::load(&profile)?;
            let range = rtp_ports
                .as_deref()
                .unwrap_or(&profile.rtp_ports)
                .to_string();
            let rtp_ports = parse_port_range(&range)?;
            let http = match http.as_str() {
                "off" | "none" | "" => None,
                a => Some(
                    a.parse::<SocketAddr>()
                        .map_err(|e| anyhow::anyhow!("--http {a:?}: {e}"))?,
                ),
            };
            rt.block_on(serve(ServeConfig {
                sip,
                http,
                database,
                recordings,
                profile,
                rtp_ports,
                media_threads: media_threads.unwrap_or_else(|| {
                    std::thread::available_parallelism()
                        .map(|n| (n.get() / 2).max(1))
                        .unwrap_or(1)
                }),
            }))
        }
        Cmd::Dial {
            to,
            from,
            play,
            hangup_after,
            dtmf,
            bind,
            username,
            password,
        } => {
            let to =
                screenpop::sip::Uri::parse(&to).map_err(|e| anyhow::anyhow!("--to {to:?}: {e}"))?;
            use screenpop::transport::Transport;
            let transport = Transport::of_uri(&to).unwrap_or(Transport::Udp);
            anyhow::ensure!(
                transport != Transport::Tls,
                "--to {to}: `screenpop dial` calls over UDP or TCP only"
            );
            let summary = rt.block_on(screenpop::calls::dial::dial(
                screenpop::calls::dial::DialOptions {
                    to,
                    from,
                    play,
                    hangup_after,
                    dtmf,
                    bind,
                    transport,
                    username,
                    password,
                },
            ))?;
            println!("{}", serde_json::to_string(&summary)?);
            if !summary.answered {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
