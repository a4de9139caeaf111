//! `toil-agent`: the agent binary. For now only the cache and image
//! subcommands (the agent's main loop is wired in separately).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use toil_agent::stage_cmd::{self, PullImageArgs, StageArgs};

#[derive(Parser)]
#[command(name = "toil-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Stage inputs through the node cache and print a JSON summary.
    Stage(StageArgs),
    /// Pull a container image through the node's image locks.
    PullImage(PullImageArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let r = match cli.command {
        Command::Stage(args) => stage_cmd::run(args).await,
        Command::PullImage(args) => stage_cmd::run_pull(args).await,
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("toil-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
