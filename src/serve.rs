//! `treeline serve`: an HTTP server for a repository.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Result, bail};
use clap::Args;

/// `serve` flags.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// Port to listen on (0 picks a free one and prints it).
    #[arg(long, short, default_value_t = 8080)]
    pub port: u16,
}

/// Serve the repository at `repo` until interrupted.
pub fn run(repo: &Path, args: &ServeArgs) -> Result<()> {
    let addr = SocketAddr::new(args.bind, args.port);
    bail!("serving {} on {addr} is not implemented yet", repo.display())
}
