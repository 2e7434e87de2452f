//! The `tlr` command line: parses arguments, loads the configuration, hooks Ctrl-C to the cancellation
//! token, runs the library and turns events into progress bars or JSON lines.
//!
//! Exit codes: 0 success; 1 the run failed (bad input, too few valid tiles, an output could not be
//! written); 2 invalid command line or configuration; 130 interrupted (Ctrl-C), nothing published.

mod cli;

fn main() -> std::process::ExitCode {
    limit_heap_retention();
    cli::main()
}

/// Makes glibc serve large allocations (tile stacks, row windows: megabytes each) with `mmap`, so freed
/// stacks go back to the system at once. Without it, glibc's adaptive threshold moves them onto per-thread
/// arenas that keep freed memory: measured peak RSS 286-304 MiB instead of 185 MiB on 100 frames of
/// 1024x1024 (benches/pipeline.rs). Applications embedding the library choose their own allocator.
fn limit_heap_retention() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes an allocator tuning parameter; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
