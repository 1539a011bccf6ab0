//! treeline: image-based Linux systems with atomic updates, on an OSTree-compatible store.

mod admin_cmds;
mod compose_cmds;
mod db_cmds;
mod delta_cmds;
mod image_cmds;
mod pkg_cmds;
mod progress;
mod remote_cmds;
mod repo_cmds;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

/// treeline: build, ship and deploy OS trees in an OSTree-compatible repository.
#[derive(Parser, Debug)]
#[command(name = "treeline", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Path to the repository (as ostree's --repo; also $OSTREE_REPO).
    #[arg(long, global = true, env = "OSTREE_REPO", value_name = "PATH")]
    repo: Option<PathBuf>,

    /// Log more (repeat for more detail); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// List the fault-injection step names (for tests) and exit.
    #[arg(long, hide = true)]
    list_fault_steps: bool,

    #[command(subcommand)]
    command: Option<repo_cmds::Command>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    if cli.list_fault_steps {
        for s in treeline_store::fault::STEPS {
            println!("{s}");
        }
        return ExitCode::SUCCESS;
    }
    let Some(command) = cli.command else {
        eprintln!("treeline: no command given; see `treeline --help`");
        return ExitCode::from(2);
    };
    match run(cli.repo, command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(repo: Option<PathBuf>, command: repo_cmds::Command) -> Result<ExitCode> {
    repo_cmds::run(repo, command)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
