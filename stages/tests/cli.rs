//! Tests that run the `tlr` binary the way a user does: simulate, run (with JSON progress and
//! diagnostics), inspect, and the error paths with their exit codes.

mod common;

use common::{simulate, text, tlr};

#[test]
fn run_writes_image_preview_and_diagnostics_with_json_progress() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    simulate(&frames, 14, 256);
    let result = dir.path().join("result.fits");
    let diagnostics = dir.path().join("diag");
    let out = tlr(&[
        "run",
        frames.to_str().unwrap(),
        "-o",
        result.to_str().unwrap(),
        "--diagnostics",
        diagnostics.to_str().unwrap(),
        "--json",
        "--parallel-tiles",
        "1",
    ]);
    assert!(out.status.success(), "run failed: {}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let kinds: Vec<&str> = lines.iter().filter_map(|v| v["event"].as_str()).collect();
    assert!(
        lines.iter().all(|v| v["schema"] == 1),
        "every JSON line carries the schema version"
    );
    for expected in [
        "scanned",
        "global_frame",
        "global_done",
        "tile_done",
        "finished",
        "written",
    ] {
        assert!(
            kinds.contains(&expected),
            "no `{expected}` event in {kinds:?}"
        );
    }
    let finished = lines.iter().find(|v| v["event"] == "finished").unwrap();
    assert_eq!(finished["summary"]["frames_used"], 14);
    assert!(result.exists() && result.with_extension("png").exists());
    for name in [
        "tile_report.json",
        "warp_dx.fits",
        "warp_dy.fits",
        "invalid_tile_map.fits",
        "warp_field.png",
        "invalid_tile_map.png",
        "frame_quality.png",
        "warp_variance_hist.png",
    ] {
        assert!(diagnostics.join(name).exists(), "missing {name}");
    }
    // The result is itself a readable FITS image with provenance.
    let (header, image) = tlr_core::fits::read_image(&result).unwrap();
    assert_eq!((header.rows, header.cols), (256, 256));
    assert!(image.iter().all(|v| v.is_finite()));
    assert!(header.creator.unwrap_or_default().starts_with("tlr"));

    // Another worker count gives the same file, byte for byte (header included). (A one-core
    // machine refuses two workers.)
    let two = dir.path().join("two.fits");
    let workers = tlr_core::config::physical_cores().min(2).to_string();
    let out = tlr(&[
        "run",
        frames.to_str().unwrap(),
        "-o",
        two.to_str().unwrap(),
        "--quiet",
        "--parallel-tiles",
        &workers,
    ]);
    assert!(out.status.success(), "run failed: {}", text(&out.stderr));
    assert!(
        std::fs::read(&two).unwrap() == std::fs::read(&result).unwrap(),
        "1 and 2 workers wrote different files"
    );

    // A result written inside the frames folder is one of tlr's own outputs: later scans skip it.
    let inside = frames.join("stack.fits");
    let again = tlr(&[
        "run",
        frames.to_str().unwrap(),
        "-o",
        inside.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    let third = tlr(&[
        "run",
        frames.to_str().unwrap(),
        "-o",
        result.to_str().unwrap(),
        "--json",
    ]);
    assert!(third.status.success(), "{}", text(&third.stderr));
    let finished: serde_json::Value = text(&third.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "finished")
        .unwrap();
    assert_eq!(
        finished["summary"]["frames_total"], 14,
        "own outputs must not count as frames"
    );
}

#[test]
fn inspect_reports_stars() {
    let dir = tempfile::tempdir().unwrap();
    simulate(dir.path(), 1, 256);
    let frame = dir.path().join("frame_0000.fits");
    let out = tlr(&["inspect", "--json", frame.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert!(v["stars"].as_u64().unwrap() > 10, "{v}");
    assert!(v["median_fwhm_px"].as_f64().unwrap() > 1.5, "{v}");
}

#[test]
fn errors_name_the_problem_and_use_documented_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    // A missing input folder: the run fails (1) and names the folder.
    let missing = dir.path().join("nope");
    let out = tlr(&["run", missing.to_str().unwrap(), "-o", "x.fits", "--quiet"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));

    // A misspelt configuration key: usage error (2) with a suggestion.
    let cfg = dir.path().join("bad.yaml");
    std::fs::write(&cfg, "v4:\n  iteratons: 3\n").unwrap();
    let out = tlr(&[
        "run",
        dir.path().to_str().unwrap(),
        "-o",
        "x.fits",
        "-c",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("v4.iterations"),
        "{}",
        text(&out.stderr)
    );

    // More workers than physical cores: rejected, naming both numbers.
    let cores = tlr_core::config::physical_cores();
    let too_many = (cores + 1).to_string();
    let out = tlr(&[
        "run",
        dir.path().to_str().unwrap(),
        "-o",
        "x.fits",
        "--parallel-tiles",
        &too_many,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&too_many) && stderr.contains(&cores.to_string()),
        "{stderr}"
    );

    // Above 16: rejected outright.
    let out = tlr(&[
        "run",
        dir.path().to_str().unwrap(),
        "-o",
        "x.fits",
        "--parallel-tiles",
        "17",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    // Inspect on a non-FITS file: exit 1, the file named.
    let junk = dir.path().join("junk.fits");
    std::fs::write(&junk, b"not a fits file at all").unwrap();
    let out = tlr(&["inspect", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("junk.fits"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn colour_run_of_a_short_session_runs_with_all_frames_then_inspect_measures_the_rgb_cube() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    let out = tlr(&[
        "simulate",
        frames.to_str().unwrap(),
        "--frames",
        "6",
        "--width",
        "192",
        "--height",
        "192",
        "--seed",
        "4",
        "--color",
        "RGGB",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let result = dir.path().join("rgb.fits");

    // 6 frames < the default registration.local_tiles.min_valid_frames (10), and the simulation's
    // cloudy frame is rejected by the global pass: the run uses the other 5, with one warning.
    let out = tlr(&[
        "run",
        frames.to_str().unwrap(),
        "-o",
        result.to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.matches("warning:").count(), 1, "{stderr}");
    assert!(
        stderr.contains("only 5 usable frames") && stderr.contains("outlier rejection"),
        "{stderr}"
    );

    // The result is an RGB cube; the frame reader refuses it as a frame, inspect measures it.
    let err = tlr_core::fits::read_image(&result).unwrap_err();
    assert!(
        matches!(err, tlr_core::fits::FitsError::Cube { planes: 3, .. }),
        "{err}"
    );
    let out = tlr(&["inspect", "--json", result.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(v["planes"], 3, "{v}");
    assert!(v["stars"].as_u64().unwrap() > 10, "{v}");
    let fwhm = v["median_fwhm_px"].as_f64().unwrap();
    assert!(fwhm > 1.5 && fwhm < 8.0, "{v}");
    let planes = v["per_plane"].as_array().unwrap();
    let names: Vec<&str> = planes.iter().filter_map(|p| p["plane"].as_str()).collect();
    assert_eq!(names, ["R", "G", "B"]);
    for p in planes {
        assert!(p["stars"].as_u64().unwrap() > 5, "{p}");
        assert!(p["background"].as_f64().unwrap() > 0.0, "{p}");
    }
    // The table: the luminance line, then one line per plane.
    let out = tlr(&["inspect", result.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.contains("luminance") && table.contains("[B]"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 5, "{table}");
}

#[test]
fn colour_demo_compares_tile_local_and_global_and_writes_rgb_results() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("demo");
    let out = tlr(&[
        "demo",
        "--color",
        "--frames",
        "16",
        "--size",
        "256",
        "--out",
        out_dir.to_str().unwrap(),
        "--quiet",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", text(&out.stderr));
    for name in ["tile-local", "global"] {
        let fits = out_dir.join(format!("{name}.fits"));
        assert!(
            fits.exists() && fits.with_extension("png").exists(),
            "{name}"
        );
        let (_, rgb) = tlr_core::fits::read_cube(&fits).unwrap();
        assert_eq!(rgb.dim(), (3, 256, 256));
        // The line of this stack: stars, FWHM, time and a colour error in percent.
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} stack")))
            .unwrap_or_else(|| panic!("no `{name} stack` line in\n{stdout}"));
        let fields: Vec<&str> = line.split_whitespace().collect();
        let fwhm: f64 = fields[3].parse().unwrap();
        assert!(fwhm > 1.0 && fwhm < 8.0, "{line}");
        let colour: f64 = fields[5].parse().unwrap();
        assert!(colour < 15.0, "star colour error {colour} % in {line}");
    }
    assert!(stdout.contains("luminance") && stdout.contains("tile-local FWHM is"));
    // An unknown pattern is a usage error.
    let out = tlr(&[
        "demo",
        "--color",
        "RGBG",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn with_json_a_failure_is_also_a_json_event_with_its_causes_and_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).unwrap();
    std::fs::write(frames.join("broken.fits"), b"not a FITS file at all").unwrap();
    let result = dir.path().join("result.fits");
    let out = tlr(&[
        "run",
        frames.to_str().unwrap(),
        "-o",
        result.to_str().unwrap(),
        "--json",
    ]);
    assert!(!out.status.success());
    let code = out.status.code().unwrap();
    let last: serde_json::Value = text(&out.stdout)
        .lines()
        .last()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .expect("a JSON line");
    assert_eq!(last["event"], "failed", "{last}");
    assert_eq!(last["schema"], 1);
    assert_eq!(last["exit_code"], code);
    let message = last["message"].as_str().unwrap();
    let causes: Vec<&str> = last["causes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    // The human message on stderr is the same chain, each part once.
    let stderr = text(&out.stderr);
    let chain = std::iter::once(message)
        .chain(causes.iter().copied())
        .collect::<Vec<_>>()
        .join(": ");
    assert!(stderr.contains(&chain), "{stderr}\n{chain}");
    for part in std::iter::once(message).chain(causes.iter().copied()) {
        assert_eq!(stderr.matches(part).count(), 1, "`{part}` once in {stderr}");
    }
}
