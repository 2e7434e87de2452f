//! Tests that run the `tlr` binary on the first things a new user meets (issue 15 §6, §8, §10):
//! a short session without a configuration file, one-off settings with `--set`, sequences whose
//! frames disagree on their colour mode, and the terminal summary of a run.

mod common;

use std::path::{Path, PathBuf};

use common::{simulate, text, tlr};

/// Writes the card `KEY = value` (value as FITS writes it, e.g. `'RGGB'`) into the primary header of
/// `path`, in place of its END card (the simulated frames have room for it in their header block).
fn add_card(path: &Path, key: &str, value: &str) {
    let mut bytes = std::fs::read(path).unwrap();
    let end = (0..2880 / 80)
        .map(|i| i * 80)
        .find(|&at| bytes[at..at + 80].starts_with(b"END     "))
        .expect("END in the first header block");
    assert!(end + 160 <= 2880, "no room for one more card");
    let card = format!("{key:<8}= {value:>20}");
    let card = format!("{card:<80}");
    bytes[end..end + 80].copy_from_slice(card.as_bytes());
    bytes[end + 80..end + 160].copy_from_slice(format!("{:<80}", "END").as_bytes());
    std::fs::write(path, bytes).unwrap();
}

/// Blanks the card `KEY` of the primary header of `path` (a blank card is a comment).
fn remove_card(path: &Path, key: &str) {
    let mut bytes = std::fs::read(path).unwrap();
    let name = format!("{key:<8}");
    let at = (0..2880 / 80)
        .map(|i| i * 80)
        .find(|&at| bytes[at..at + 8] == *name.as_bytes())
        .unwrap_or_else(|| panic!("no {key} in {path:?}"));
    bytes[at..at + 80].copy_from_slice(&[b' '; 80]);
    std::fs::write(path, bytes).unwrap();
}

/// `tlr simulate DIR --color RGGB` with `frames` frames of `size`².
fn simulate_colour(dir: &Path, frames: usize, size: usize) {
    let (frames, size) = (frames.to_string(), size.to_string());
    let out = tlr(&[
        "simulate",
        dir.to_str().unwrap(),
        "--frames",
        &frames,
        "--width",
        &size,
        "--height",
        &size,
        "--seed",
        "4",
        "--color",
        "RGGB",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// The frames of a folder, sorted.
fn frames_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "fits"))
        .collect();
    files.sort();
    files
}

/// The JSON lines of a `--json` run.
fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    text(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

fn run_args<'a>(frames: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        frames.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--parallel-tiles",
        "1",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn six_frames_run_without_a_configuration_with_one_warning() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    simulate(&frames, 6, 160);
    let out_path = dir.path().join("six.fits");
    let out = tlr(&run_args(&frames, &out_path, &["--json"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = json_lines(&out.stdout);
    let warnings: Vec<&serde_json::Value> =
        lines.iter().filter(|v| v["event"] == "warning").collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let message = warnings[0]["message"].as_str().unwrap();
    assert!(
        message.contains("fewer than registration.local_tiles.min_valid_frames (10)")
            && message.contains("outlier rejection"),
        "{message}"
    );
    let finished = lines.iter().find(|v| v["event"] == "finished").unwrap();
    let used = finished["summary"]["frames_used"].as_u64().unwrap();
    assert!(used >= 5, "{finished}");
    assert!(
        message.contains(&format!("only {used} usable frames")),
        "{message}"
    );
    assert!(out_path.exists());
}

#[test]
fn set_changes_one_key_after_the_file_with_the_files_checks() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("my.yaml");
    std::fs::write(&file, "v4:\n  iterations: 4\n").unwrap();
    let config = |extra: &[&str]| {
        let mut args = vec!["config", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        tlr(&args)
    };
    // A good key: applied after the file; a tile_compile key: accepted with its warning.
    let out = config(&[
        "--set",
        "v4.iterations=2",
        "--set",
        "registration.local_tiles.min_valid_frames=6",
        "--set",
        "stacking.method=rej",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("iterations: 2"), "{stdout}");
    assert!(stdout.contains("min_valid_frames: 6"), "{stdout}");
    assert!(text(&out.stderr).contains("`stacking.method` is not used by tlr"));
    // The digest is the one a file with the same settings gives.
    let same = dir.path().join("same.yaml");
    std::fs::write(
        &same,
        "v4: {iterations: 2}\nregistration: {local_tiles: {min_valid_frames: 6}}\n",
    )
    .unwrap();
    let digest = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("# sha256"))
            .map(String::from)
    };
    let from_file = tlr(&["config", same.to_str().unwrap()]);
    assert_eq!(digest(&stdout), digest(&text(&from_file.stdout)));

    // A typo: exit 2 with the suggestion; a bad value: exit 2 naming the key; not KEY=VALUE: exit 2.
    let out = config(&["--set", "v4.iteratons=2"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("did you mean `v4.iterations`?") && stderr.contains("--set v4.iteratons=2"),
        "{stderr}"
    );
    let out = config(&["--set", "registration.local_tiles.min_valid_frames=many"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`registration.local_tiles.min_valid_frames` must be a whole number"),
        "{stderr}"
    );
    let out = config(&["--set", "v4.iterations=50"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("`v4.iterations` must be between 1 and 10, got 50"));
    let out = config(&["--set", "v4.iterations"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("KEY=VALUE"));

    // `tlr run` and `tlr watch` take it too: a typo stops them before anything is read.
    let out_path = dir.path().join("r.fits");
    for sub in ["run", "watch"] {
        let out = tlr(&[
            sub,
            dir.path().to_str().unwrap(),
            "-o",
            out_path.to_str().unwrap(),
            "--set",
            "tile.overlap_fractio=0.2",
        ]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{sub}: {stderr}");
        assert!(
            stderr.contains("did you mean `tile.overlap_fraction`?"),
            "{sub}: {stderr}"
        );
    }
}

#[test]
fn a_bayer_frame_among_mono_frames_is_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    simulate(&frames, 12, 160);
    let odd = frames_in(&frames)[4].clone();
    add_card(&odd, "BAYERPAT", "'RGGB'");
    let out_path = dir.path().join("mono.fits");
    let out = tlr(&run_args(&frames, &out_path, &["--json"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = json_lines(&out.stdout);
    let skipped: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|v| v["event"] == "frame_skipped")
        .collect();
    let ours = skipped
        .iter()
        .find(|v| v["path"].as_str() == odd.to_str())
        .unwrap_or_else(|| panic!("{odd:?} not reported in {skipped:?}"));
    let reason = ours["reason"].as_str().unwrap();
    assert!(
        reason.contains("Bayer RGGB frame in a mono sequence") && reason.contains("11 of 12"),
        "{reason}"
    );
    // The result is a mono image, not an RGB cube.
    let (header, _) = tlr_core::fits::read_image(&out_path).expect("a 2-D image");
    assert_eq!((header.rows, header.cols), (160, 160));

    // --strict: the disagreeing frame is an error, nothing is written.
    let strict = dir.path().join("strict.fits");
    let out = tlr(&run_args(&frames, &strict, &["--strict", "--quiet"]));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--strict") && stderr.contains("Bayer RGGB"),
        "{stderr}"
    );
    assert!(!strict.exists());
}

#[test]
fn a_mono_frame_among_bayer_frames_is_skipped_and_a_tie_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    simulate_colour(&frames, 12, 192);
    let files = frames_in(&frames);
    remove_card(&files[3], "BAYERPAT");
    let out_path = dir.path().join("rgb.fits");
    let out = tlr(&run_args(&frames, &out_path, &["--quiet"]));
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("skipped `{}`", files[3].display()))
            && stderr.contains("mono frame in a Bayer RGGB sequence"),
        "{stderr}"
    );
    let (_, rgb) = tlr_core::fits::read_cube(&out_path).unwrap();
    assert_eq!(rgb.dim().0, 3);

    // Half and half: no majority, an error that says what to set.
    let half = dir.path().join("half");
    simulate(&half, 4, 96);
    for f in &frames_in(&half)[..2] {
        add_card(f, "BAYERPAT", "'RGGB'");
    }
    let out = tlr(&run_args(&half, &out_path, &["--quiet"]));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no mode has a majority (2 mono, 2 Bayer RGGB)")
            && stderr.contains("data.color_mode"),
        "{stderr}"
    );
}

#[test]
fn an_unknown_bayer_pattern_in_mid_sequence_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    simulate(&frames, 12, 128);
    let odd = frames_in(&frames)[7].clone();
    add_card(&odd, "BAYERPAT", "'XXXX'");
    let out_path = dir.path().join("r.fits");
    let out = tlr(&run_args(&frames, &out_path, &["--quiet"]));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&odd.display().to_string())
            && stderr.contains("unknown Bayer pattern `XXXX`"),
        "{stderr}"
    );
    assert!(!out_path.exists());
}

#[test]
fn watch_keeps_the_first_frames_colour_mode_and_rejects_a_frame_of_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    simulate(&frames, 7, 160);
    let files = frames_in(&frames);
    add_card(&files[5], "BAYERPAT", "'RGGB'");
    let out_path = dir.path().join("live.fits");
    let out = tlr(&[
        "watch",
        frames.to_str().unwrap(),
        "-o",
        out_path.to_str().unwrap(),
        "--until-idle",
        "1",
        "--stable-ms",
        "100",
        "--bootstrap",
        "3",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines = json_lines(&out.stdout);
    let rejected: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|v| v["event"] == "frame_rejected")
        .collect();
    let ours = rejected
        .iter()
        .find(|v| {
            v["reason"]
                .as_str()
                .is_some_and(|r| r.contains("frame_0005"))
        })
        .unwrap_or_else(|| panic!("frame_0005 not rejected: {rejected:?}"));
    let reason = ours["reason"].as_str().unwrap();
    assert!(
        reason.contains("is a Bayer RGGB frame, but the session is mono")
            && reason.contains("frame_0000"),
        "{reason}"
    );
    // A mono session gets no colour warning.
    assert!(
        !lines.iter().any(|v| v["message"]
            .as_str()
            .is_some_and(|m| m.contains("no colour planes"))),
        "{lines:?}"
    );
}

#[test]
fn a_run_on_a_terminal_ends_with_a_short_summary_within_80_columns() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    simulate(&frames, 12, 160);
    let out_path = dir.path().join("out").join("r.fits");
    let diagnostics = dir.path().join("out").join("diag");
    let out = tlr(&run_args(
        &frames,
        &out_path,
        &["--diagnostics", diagnostics.to_str().unwrap()],
    ));
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let starts = |label: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no `{label}` line in\n{stderr}"))
            .to_string()
    };
    assert!(
        starts("frames       ").contains(" of 12 used, "),
        "{stderr}"
    );
    assert!(starts("tiles        ").contains(" valid, "), "{stderr}");
    let fwhm = starts("star FWHM    ");
    assert!(
        fwhm.contains(" px result (") && fwhm.contains("px frames' median"),
        "{fwhm}"
    );
    assert!(starts("time         ").contains(" in all ("), "{stderr}");
    let result = starts("result       ");
    assert!(
        result.contains("r.fits") && result.contains("r.png"),
        "{result}"
    );
    // One line for the diagnostics folder, not one per file.
    assert!(
        starts("diagnostics  ").contains(&format!("{}/ (8 files)", diagnostics.display())),
        "{stderr}"
    );
    assert!(!stderr.contains("wrote "), "{stderr}");
    assert!(!stderr.contains("tile_report.json"), "{stderr}");
    let dir_len = dir.path().display().to_string().len();
    for line in &lines {
        // Paths are the test's temporary folder (longer than a user's relative paths).
        assert!(line.chars().count() <= 80 + 2 * dir_len, "{line}");
    }
    assert!(fwhm.chars().count() <= 80, "{fwhm}");
}
