//! `toil-agent`: the agent binary. `toil-agent run` is what the leader
//! starts in each pod or local slot; `stage` and `pull-image` drive the node
//! cache and image locks by hand (tests, benchmarks, debugging on a node).

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
    /// Take jobs from the leader and run them (configured by TOIL_* variables).
    Run(Box<toil_agent::config::RunArgs>),
    /// Stage inputs through the node cache and print a JSON summary.
    Stage(StageArgs),
    /// Pull a container image through the node's image locks.
    PullImage(PullImageArgs),
}

// One thread is plenty for one job's plumbing, and starts faster.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = std::env::var("TOIL_AGENT_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .init();
    let r = match cli.command {
        // Boxed: the whole agent as one future nests too deep for the
        // compiler to lay it out inline in main.
        Command::Run(args) => return ExitCode::from(Box::pin(toil_agent::run::main(*args)).await),
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
