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
    /// Campaigns: `campaign create FILE.json`, `campaign list`, `campaign preview NAME`,
    /// `campaign run NAME [--wait]`.
    Campaign {
        #[command(subcommand)]
        cmd: CampaignCmd,
        #[arg(
            long,
            global = true,
            env = "SCREENPOP_DATABASE",
            default_value = "sqlite://screenpop.db"
        )]
        database: String,
    },
    /// Recordings: `recordings expire [--dry-run] [--as-of DATE]` runs the retention sweep
    /// the server runs every `[retention] check_every_secs`.
    Recordings {
        #[command(subcommand)]
        cmd: RecordingsCmd,
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
enum RecordingsCmd {
    /// Delete (or archive, per the profile's `[retention] action`) the recordings past their
    /// queue's retention, auditing each; prints what was removed as JSON.
    Expire {
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Judge ages as of this moment (2027-01-31 or 2027-01-31T09:00:00Z) instead of now:
        /// with --dry-run, what a sweep on that day will remove; a past moment removes less.
        #[arg(long)]
        as_of: Option<String>,
        #[arg(
            long,
            env = "SCREENPOP_DATABASE",
            default_value = "sqlite://screenpop.db"
        )]
        database: String,
        #[arg(long, env = "SCREENPOP_RECORDINGS", default_value = "recordings")]
        recordings: PathBuf,
        #[arg(long, env = "SCREENPOP_PROFILE", default_value = "default")]
        profile: String,
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

#[derive(Subcommand)]
enum CampaignCmd {
    /// Save a campaign from its JSON (the body `POST /api/campaigns` takes), as a draft.
    Create { file: PathBuf },
    /// Every campaign with its state and progress.
    List,
    /// Who a run would contact and what each would get; nothing is sent or recorded.
    Preview {
        name: String,
        /// The local day to plan (YYYY-MM-DD); default today in the campaign's zone.
        #[arg(long)]
        day: Option<String>,
        /// Customers listed (the totals count all of them).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print the preview as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run now: today's occasions are planned at once and a running `screenpop serve` sends
    /// them (then the schedule goes on); each customer is contacted once per occasion however
    /// often this runs.
    Run {
        name: String,
        /// Follow the progress until nothing is left to send.
        #[arg(long)]
        wait: bool,
    },
}

/// `2027-01-31` (midnight UTC) or an RFC 3339 moment, as epoch milliseconds.
fn parse_moment(s: &str) -> anyhow::Result<i64> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    // A date alone: its midnight in UTC.
    format!("{s}T00:00:00Z")
        .parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|_| anyhow::anyhow!("--as-of {s:?}: give 2027-01-31 or 2027-01-31T09:00:00Z"))
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
        Cmd::Recordings {
            cmd:
                RecordingsCmd::Expire {
                    dry_run,
                    as_of,
                    database,
                    recordings,
                    profile,
                },
        } => {
            let profile = Profile::load(&profile)?;
            let now = screenpop::time::now_ms();
            let as_of = match as_of.as_deref() {
                None => now,
                Some(s) => parse_moment(s)?,
            };
            // Removing what is still within its retention is never what anyone means.
            if as_of > now && !dry_run {
                anyhow::bail!("--as-of in the future only with --dry-run (to see what will go)");
            }
            rt.block_on(async {
                let store = open_store(&database).await?;
                let report = screenpop::retention::sweep::sweep(
                    &store,
                    &recordings,
                    &profile.retention,
                    as_of,
                    dry_run,
                )
                .await?;
                eprintln!(
                    "{} {} recording(s){}",
                    if dry_run { "would remove" } else { "removed" },
                    report.removed.len(),
                    if report.failed.is_empty() {
                        String::new()
                    } else {
                        format!("; {} could not be removed", report.failed.len())
                    }
                );
                println!("{}", serde_json::to_string(&report)?);
                if report.failed.is_empty() {
                    Ok(())
                } else {
                    anyhow::bail!("some recordings could not be removed")
                }
            })
        }
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
        Cmd::Campaign { cmd, database } => rt.block_on(async {
            let store = open_store(&database).await?;
            campaign_cmd(&store, cmd).await
        }),
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
            let served = rt.block_on(serve(ServeConfig {
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
            }));
            // Every call is written by now: what is still running (idle connections, a
            // webhook in flight) must not hold the exit up.
            rt.shutdown_timeout(std::time::Duration::from_secs(2));
            served
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

async fn campaign_cmd(store: &screenpop::store::Store, cmd: CampaignCmd) -> anyhow::Result<()> {
    use screenpop::campaigns::spec::{CampaignSpec, Checked};
    let base = std::env::current_dir()?;
    let find = |name: String| async move {
        store
            .campaign_by_name(&name)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no campaign named {name:?}"))
    };
    match cmd {
        CampaignCmd::Create { file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let spec: CampaignSpec = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let row = screenpop::campaigns::run::save(store, spec, &base, "cli")
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            eprintln!("campaign {:?} saved as a draft (id {})", row.name, row.id);
        }
        CampaignCmd::List => {
            for row in store.campaigns().await? {
                let p = store.campaign_progress(row.id).await?;
                println!(
                    "{}\t{}\t{}\t{}\t{} attempts: {} sent, {} delivered, {} failed, {} pending",
                    row.id,
                    row.name,
                    row.kind,
                    row.state.as_str(),
                    p.total,
                    p.sent,
                    p.delivered,
                    p.failed + p.busy + p.no_answer,
                    p.pending + p.sending
                );
            }
        }
        CampaignCmd::Preview {
            name,
            day,
            limit,
            json,
        } => {
            let row = find(name).await?;
            let c = Checked::load(&row.spec, &base)?;
            let day = match day {
                Some(d) => d
                    .parse::<jiff::civil::Date>()
                    .map_err(|_| anyhow::anyhow!("--day {d:?}: not a YYYY-MM-DD date"))?,
                None => c.schedule.local_date(jiff::Timestamp::now()),
            };
            let p = screenpop::campaigns::run::preview(store, &c, row.id, day, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&p)?);
                return Ok(());
            }
            for i in &p.items {
                match (&i.skipped, i.channel) {
                    (Some(why), _) => println!("{}\t{}\tskipped: {why}", i.customer_id, i.name),
                    (None, Some(via)) => println!(
                        "{}\t{}\t{}\t{}\t{}",
                        i.customer_id,
                        i.name,
                        i.number.as_deref().unwrap_or(""),
                        via.as_str(),
                        i.text.as_deref().unwrap_or("(the recording)")
                    ),
                    (None, None) => {}
                }
            }
            println!(
                "{} ({}): {} by SMS in {} parts, {} by voice, {} skipped{}",
                p.day,
                p.occasion,
                p.sms,
                p.sms_parts,
                p.voice,
                p.skipped,
                if p.truncated {
                    " (list cut at --limit)"
                } else {
                    ""
                }
            );
        }
        CampaignCmd::Run { name, wait } => {
            let row = find(name).await?;
            Checked::load(&row.spec, &base)?;
            let asked = screenpop::time::now_ms();
            if !store.run_campaign_now(row.id, asked).await? {
                anyhow::bail!(
                    "campaign {:?} is {}: resume it first",
                    row.name,
                    row.state.as_str()
                );
            }
            eprintln!(
                "campaign {:?} runs now: a running `screenpop serve` on this database sends it",
                row.name
            );
            if wait {
                let mut last = None;
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    let cur = store.campaign(row.id).await?;
                    let p = store.campaign_progress(row.id).await?;
                    // The runner notes when it planned the run: from then on the attempts
                    // are all there.
                    let planned = cur
                        .as_ref()
                        .is_some_and(|c| c.last_run_at.is_some_and(|l| l >= asked));
                    let line = format!(
                        "{} attempts: {} sent, {} delivered, {} failed, {} skipped, {} pending",
                        p.total,
                        p.sent,
                        p.delivered,
                        p.failed + p.busy + p.no_answer,
                        p.skipped,
                        p.pending + p.sending
                    );
                    if last.as_ref() != Some(&line) {
                        eprintln!("{line}");
                        last = Some(line);
                    }
                    if planned && p.finished() {
                        break;
                    }
                }
            }
        }
    }
    Ok(())
}
