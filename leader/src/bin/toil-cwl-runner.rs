//! `toil-cwl-runner`: runs a CWL document with toil-rs (see
//! `toil_leader::cwl::cli` for the command line and exit codes).

fn main() -> std::process::ExitCode {
    toil_leader::cwl::cli::main_with(std::env::args().collect())
}
