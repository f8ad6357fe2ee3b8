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
        /// Where recordings are written.
        #[arg(long, env = "SCREENPOP_RECORDINGS", default_value = "recordings")]
        recordings: PathBuf,
        /// SIP profile name (sip-profiles/NAME.toml) or path.
        #[arg(long, env = "SCREENPOP_PROFILE", default_value = "default")]
        profile: String,
        /// RTP port range LOW-HIGH (overrides the profile).
        #[arg(long, env = "SCREENPOP_RTP_PORTS")]
        rtp_ports: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.cmd {
        Cmd::Serve {
            sip,
            recordings,
            profile,
            rtp_ports,
        } => {
            let profile = Profile::load(&profile)?;
            let range = rtp_ports
                .as_deref()
                .unwrap_or(&profile.rtp_ports)
                .to_string();
            let rtp_ports = parse_port_range(&range)?;
            rt.block_on(serve(ServeConfig {
                sip,
                recordings,
                profile,
                rtp_ports,
            }))
        }
    }
}
