//! The `tlr` command line: parses arguments, loads the configuration, hooks Ctrl-C to the cancellation
//! token, runs the library and turns events into progress bars or JSON lines.
//!
//! Exit codes: 0 success; 1 the run failed (bad input, too few valid tiles, an output could not be
//! written); 2 invalid command line or configuration, or an output path that would replace an input
//! frame, a folder or a special file; interrupted, nothing published: 130 Ctrl-C (SIGINT), 143 SIGTERM,
//! 129 SIGHUP (128 + the signal's number, what a shell reports for a process the signal killed, so a
//! supervisor can tell a service stop from a closed terminal).

mod cli;

fn main() -> std::process::ExitCode {
    tune_allocator();
    cli::main()
}

/// Tunes glibc's allocator for a program that allocates and frees buffers of megabytes all the time
/// (frames, tile stacks, row windows), from several threads:
/// - one arena (`M_ARENA_MAX`): per-thread arenas each kept their own freed memory (peak RSS 286-304 MiB
///   instead of about 140 MiB on 100 frames of 1024x1024, benches/pipeline.rs);
/// - freed memory stays in that arena for reuse (`M_MMAP_THRESHOLD` 32 MiB, `M_TRIM_THRESHOLD`
///   256 MiB) instead of going back to the system and being faulted in, zeroed, again on the next frame:
///   that cost 460 000-530 000 page faults and 1.2-1.7 s of system time per run of the same benchmark;
///   now about 34 000 and 0.3 s, at the same peak RSS (measured with `/usr/bin/time`).
///
/// Applications embedding the library choose their own allocator.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}
