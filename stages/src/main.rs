//! The `tlr` command line: parses arguments, loads the configuration, hooks Ctrl-C to the cancellation
//! token, runs the library and turns events into progress bars or JSON lines.
//!
//! Exit codes: 0 success; 1 the run failed (bad input, too few valid tiles, an output could not be
//! written); 2 invalid command line or configuration; 130 interrupted (Ctrl-C), nothing published.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
