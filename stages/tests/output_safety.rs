//! Tests of what `tlr run` may write and when, run through the binary: outputs that would replace an
//! input frame, a folder or a special file are refused (exit 2); missing output folders are created
//! before any writer starts; a non-UTF-8 frame name neither panics nor loses JSON events; SIGTERM and
//! SIGHUP cancel like Ctrl-C (exit 143 / 129, nothing published, no temporary files); stale temporary files of
//! dead runs are removed; every error cause is printed exactly once.
//!
//! What it does not: test the numerics (see `cli.rs`, `pipeline.rs`).

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;

use common::{simulate, text, tlr};

fn tlr_str(args: &[&str]) -> Output {
    tlr(args)
}

/// Runs `tlr run frames -o output EXTRA…` and returns the output.
fn run(frames: &Path, output: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "run".as_ref(),
        frames.as_os_str(),
        "-o".as_ref(),
        output.as_os_str(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    tlr(&args)
}

/// Hidden temporary files (`.NAME.tmp-…`) in `dir`.
fn temporaries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().as_bytes();
            name.starts_with(b".") && name.windows(5).any(|w| w == b".tmp-")
        })
        .collect()
}

fn refused(out: &Output, what: &str) {
    assert_eq!(out.status.code(), Some(2), "{what}: {}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("error:"), "{what}: {stderr}");
}

#[test]
fn outputs_that_would_replace_an_input_a_folder_or_a_special_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("g");
    simulate(&frames, 12, 128);
    let frame = frames.join("frame_0000.fits");
    let before = std::fs::read(&frame).unwrap();

    // The output is an input frame, directly or through a symlinked folder.
    let out = run(&frames, &frame, &["--quiet"]);
    refused(&out, "-o frame");
    assert!(
        text(&out.stderr).contains("frame_0000.fits") && text(&out.stderr).contains("input frame"),
        "{}",
        text(&out.stderr)
    );
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&frames, &link).unwrap();
    refused(
        &run(&frames, &link.join("frame_0001.fits"), &["--quiet"]),
        "-o link/frame",
    );
    // Through a folder that does not exist yet (created for the outputs, then removed again).
    let through = frames.join("new").join("..").join("frame_0000.fits");
    refused(&run(&frames, &through, &["--quiet"]), "-o new/../frame");
    assert!(!frames.join("new").exists(), "the created folder stays");
    // A file the scan matches even though it is not a usable frame (it is skipped).
    let broken = frames.join("broken.fits");
    std::fs::write(&broken, b"not a FITS file").unwrap();
    refused(&run(&frames, &broken, &["--quiet"]), "-o skipped file");
    assert_eq!(std::fs::read(&broken).unwrap(), b"not a FITS file");
    std::fs::remove_file(&broken).unwrap();
    // The preview (`<stem>.png`) or the kept mosaic (`<stem>.cfa.fits`) would replace a matched file.
    let glob = ["--quiet", "--glob", "*.fits *.png"];
    std::fs::copy(&frame, frames.join("frame_0002.png")).unwrap();
    refused(
        &run(&frames, &frames.join("frame_0002.out"), &glob),
        "preview",
    );
    std::fs::remove_file(frames.join("frame_0002.png")).unwrap();
    std::fs::copy(&frame, frames.join("frame_0004.cfa.fits")).unwrap();
    refused(
        &run(
            &frames,
            &frames.join("frame_0004.out"),
            &["--quiet", "--keep-cfa"],
        ),
        "cfa",
    );
    std::fs::remove_file(frames.join("frame_0004.cfa.fits")).unwrap();
    // Two outputs on one file: the image would be one of the diagnostics pictures. (A PNG image is
    // not its own preview: that is `r.preview.png`.)
    let diag = dir.path().join("d");
    let out = run(
        &frames,
        &diag.join("warp_field.png"),
        &["--quiet", "--diagnostics", diag.to_str().unwrap()],
    );
    refused(&out, "image = diagnostics picture");
    assert!(
        text(&out.stderr).contains("one file cannot be two outputs"),
        "{}",
        text(&out.stderr)
    );
    // The diagnostics folder is the frames folder and would replace a frame named like a diagnostic.
    std::fs::copy(frames.join("frame_0003.fits"), frames.join("warp_dx.fits")).unwrap();
    refused(
        &run(
            &frames,
            &dir.path().join("r.fits"),
            &["--quiet", "--diagnostics", frames.to_str().unwrap()],
        ),
        "diagnostics",
    );
    std::fs::remove_file(frames.join("warp_dx.fits")).unwrap();
    // A folder, a FIFO.
    let folder = dir.path().join("folder.fits");
    std::fs::create_dir(&folder).unwrap();
    refused(&run(&frames, &folder, &["--quiet"]), "directory");
    let fifo = dir.path().join("fifo.fits");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let out = run(&frames, &fifo, &["--quiet"]);
    refused(&out, "fifo");
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo(),
        "the FIFO must stay"
    );
    // `tlr watch` makes the same check.
    let out = tlr(&[
        "watch".as_ref(),
        frames.as_os_str(),
        "-o".as_ref(),
        frame.as_os_str(),
        "--until-idle".as_ref(),
        "0".as_ref(),
        "--quiet".as_ref(),
    ]);
    refused(&out, "watch -o frame");
    assert_eq!(std::fs::read(&frame).unwrap(), before, "the frame changed");
    assert!(!dir.path().join("r.fits").exists());
    assert!(!frames.join("frame_0000.png").exists());
}

use std::os::unix::fs::FileTypeExt;

#[test]
fn missing_output_folders_are_created_before_the_writers_start() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("g");
    simulate(&frames, 14, 256);
    let no_diagnostics = dir.path().join("nodiag.yaml");
    std::fs::write(&no_diagnostics, "v4:\n  diagnostics:\n    enabled: false\n").unwrap();
    for round in 0..3 {
        let folder = dir.path().join("o").join("n");
        let _ = std::fs::remove_dir_all(dir.path().join("o"));
        let result = folder.join("r.fits");
        let out = run(
            &frames,
            &result,
            &["--quiet", "-c", no_diagnostics.to_str().unwrap()],
        );
        assert!(out.status.success(), "round {round}: {}", text(&out.stderr));
        assert!(result.exists() && folder.join("r.png").exists());
        let _ = std::fs::remove_dir_all(dir.path().join("o"));
        let out = run(&frames, &result, &["--quiet"]);
        assert!(out.status.success(), "round {round}: {}", text(&out.stderr));
        assert!(result.exists() && folder.join("r.diagnostics/tile_report.json").exists());
    }
}

#[test]
fn a_non_utf8_frame_name_neither_panics_nor_loses_json_events() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("g");
    simulate(&frames, 14, 256);
    let bad = frames.join(std::ffi::OsStr::from_bytes(b"bad\xff.fits"));
    std::fs::rename(frames.join("frame_0003.fits"), &bad).unwrap();
    // An unreadable file with a non-UTF-8 name: its skip event must reach the JSON output too.
    std::fs::write(
        frames.join(std::ffi::OsStr::from_bytes(b"worse\xfe.fits")),
        b"junk",
    )
    .unwrap();
    let result = dir.path().join("r.fits");
    let out = run(&frames, &result, &["--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let skipped: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|v| v["event"] == "frame_skipped")
        .collect();
    assert_eq!(skipped.len(), 1, "{lines:?}");
    assert!(skipped[0]["path"].as_str().unwrap().contains("worse"));
    let finished = lines.iter().find(|v| v["event"] == "finished").unwrap();
    assert_eq!(finished["summary"]["frames_used"], 14);
    assert!(lines.iter().any(|v| v["event"] == "written"));
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("r.diagnostics/tile_report.json")).unwrap(),
    )
    .unwrap();
    let labels: Vec<&str> = report["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["label"].as_str().unwrap())
        .collect();
    assert!(labels.iter().any(|l| l.contains("bad")), "{labels:?}");
}

#[test]
fn sigterm_and_sighup_cancel_like_ctrl_c_and_stale_temporaries_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("g");
    simulate(&frames, 24, 384);
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let result = out_dir.join("r.fits");
    // Left behind by a run killed with SIGKILL (a pid above the kernel's maximum is never alive).
    let stale = [
        out_dir.join(".r.fits.tmp-99999999-0"),
        out_dir.join(".r.png.tmp-99999999-1"),
    ];
    for s in &stale {
        std::fs::write(s, b"half").unwrap();
    }
    let other = out_dir.join(".unrelated.fits.tmp-99999999-0");
    std::fs::write(&other, b"not ours").unwrap();

    let (code, stderr, rest) = interrupt(&frames, &result, libc::SIGTERM);
    assert_eq!(code, Some(143), "{stderr}");
    assert!(!rest.iter().any(|l| l.contains("\"written\"")), "{rest:?}");
    assert!(!result.exists() && !out_dir.join("r.png").exists());
    assert!(!out_dir.join("r.diagnostics").exists());
    // The stale temporaries of this run's outputs are gone; a temporary of another file stays.
    let left = temporaries(&out_dir);
    assert_eq!(left, vec![other.clone()], "{left:?}");

    // A complete run afterwards also removes stale temporaries of its outputs.
    for s in &stale {
        std::fs::write(s, b"half").unwrap();
    }
    let out = run(&frames, &result, &["--quiet"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(temporaries(&out_dir), vec![other]);
    assert!(result.exists());

    // SIGHUP likewise (exit 129); output folders the run created are gone again.
    let nested = dir.path().join("new").join("sub").join("r.fits");
    let (code, stderr, _) = interrupt(&frames, &nested, libc::SIGHUP);
    assert_eq!(code, Some(129), "{stderr}");
    assert!(
        !dir.path().join("new").exists(),
        "empty output folders stay"
    );
}

/// Starts `tlr run frames -o result --json`, sends `signal` once the global pass is under way, and
/// returns the exit code, stderr and the JSON lines printed after the signal.
fn interrupt(frames: &Path, result: &Path, signal: i32) -> (Option<i32>, String, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tlr"))
        .args(["run", frames.to_str().unwrap(), "-o"])
        .arg(result)
        .args(["--json", "--parallel-tiles", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    // Wait until the run is under way (the global pass has measured a frame).
    let started = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("\"global_frame\""));
    assert!(started, "the run never started");
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on the child we spawned.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr, rest)
}

#[test]
fn each_error_cause_is_printed_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let result = dir.path().join("r.fits");
    let cause = "No such file or directory";
    // ScanError inside StageError.
    let out = run(&missing, &result, &["--quiet"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.matches(cause).count(), 1, "{stderr}");
    assert_eq!(stderr.matches("cannot list it").count(), 1, "{stderr}");
    // ConfigError.
    let out = run(
        dir.path(),
        &result,
        &["--quiet", "-c", missing.join("c.yaml").to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.matches(cause).count(), 1, "{stderr}");
    assert!(stderr.contains("c.yaml"), "{stderr}");
    // FitsError, printed per file by `tlr inspect`: the cause must not get lost either.
    let frame = missing.join("f.fits");
    let out = tlr_str(&["inspect", frame.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.matches(cause).count(), 1, "{stderr}");
    assert!(stderr.contains("f.fits"), "{stderr}");
}
