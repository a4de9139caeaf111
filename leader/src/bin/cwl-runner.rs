//! `cwl-runner`: the generic name CWL tooling looks for; the same program
//! as `toil-cwl-runner`.

fn main() -> std::process::ExitCode {
    toil_leader::cwl::cli::main_with(std::env::args().collect())
}
