//! `toil-leader`: parse the command line, start logging, hand over to the
//! library. Exit codes: 0 success, 1 a job failed, 2 bad workflow or
//! options, 3 job store in use (or this leader was fenced), 130 interrupted.

use std::process::ExitCode;

use clap::Parser;
use toil_leader::cli::{Cli, Command};
use toil_leader::run::Failure;
use toil_leader::{say, terminal};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Agent(a) = cli.command {
        return run_agent(a);
    }
    let filter = match &cli.command {
        Command::Run(args) => args.log_filter(),
        _ => "warn",
    };
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| filter.to_string());
    // Messages for the user are always shown, whatever the log level.
    let filter = format!("{filter},{}=info", terminal::USER);
    tracing_subscriber::fmt()
        .event_format(terminal::UserFormat::new())
        .with_writer(terminal::TerminalWriter(terminal::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            say!("toil-leader: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Commands that print for a reader: when the reader goes away (`| head`),
    // stop quietly, as `cat` does.
    let prints = !matches!(cli.command, Command::Run(_));
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => {
                let cfg = args.into_config()?;
                toil_leader::run::run(cfg).await
            }
            Command::Status(a) => toil_leader::commands::status(a).await,
            Command::Logs(a) => toil_leader::commands::logs(a).await,
            Command::Clean(a) => toil_leader::commands::clean(a).await,
            Command::Report(a) => toil_leader::report::command(a).await,
            Command::CleanupJobs(a) => a.run().await,
            Command::Agent(_) => Ok(0),
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) if prints && broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<Failure>() {
            Some(f) => {
                say!("toil-leader: {}", f.message);
                ExitCode::from(f.code)
            }
            None => {
                say!("toil-leader: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Whether `e` comes from writing to a pipe whose reader has gone.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The embedded agent (see `toil_leader::cli::run_agent`).
fn run_agent(a: toil_leader::cli::AgentArgs) -> ExitCode {
    toil_leader::cli::run_agent(a)
}
