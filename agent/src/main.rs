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
    /// Carry agents' TLS connections to a leader the pods cannot reach,
    /// over tunnels the leader opens through the API server (the relay pod).
    Relay(toil_agent::relay::RelayArgs),
}

fn main() -> ExitCode {
    // Before anything else: a job runs as this process's user and could
    // otherwise read the token from /proc/PID/environ.
    let undumpable = toil_agent::harden::make_undumpable();
    let cli = Cli::parse();
    let filter = std::env::var("TOIL_AGENT_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .init();
    if let Command::Run(_) = &cli.command {
        if let Err(e) = undumpable {
            eprintln!("toil-agent: {e}");
            return ExitCode::from(70);
        }
        // SAFETY: no runtime yet, so this is the only thread.
        unsafe { toil_agent::harden::forget_token() };
    }
    // One thread is plenty for one job's plumbing, and starts faster.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("toil-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = match cli.command {
        // Boxed: the whole agent as one future nests too deep for the
        // compiler to lay it out inline in main.
        Command::Run(args) => {
            return ExitCode::from(rt.block_on(Box::pin(toil_agent::run::main(*args))));
        }
        Command::Stage(args) => rt.block_on(stage_cmd::run(args)),
        Command::PullImage(args) => rt.block_on(stage_cmd::run_pull(args)),
        Command::Relay(args) => rt.block_on(toil_agent::relay::run(args)),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("toil-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
