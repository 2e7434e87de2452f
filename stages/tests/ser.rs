//! SER video input from the command line: `tlr run capture.ser` reconstructs like the same frames in
//! a folder, Bayer SER files give a colour result, truncated files use their complete frames and say
//! so, broken headers fail with the file named, and `tlr inspect capture.ser` reports every frame.

mod common;

use common::{run_ok, simulate_with, text, tlr};
use std::path::{Path, PathBuf};
use tlr_core::ser::{write_ser, SerColor, SerFrameFormat};

/// The FITS frames of a simulated folder, in name order, written as one 16-bit SER file.
fn folder_to_ser(dir: &Path, ser: &Path, color: SerColor) -> usize {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("frame_"))
        })
        .collect();
    files.sort();
    let frames = files.iter().map(|f| {
        let (_, cube) = tlr_core::fits::read_cube(f).unwrap();
        cube.index_axis(ndarray::Axis(0), 0).to_owned()
    });
    let times: Vec<f64> = (0..files.len()).map(|i| 1.8e9 + 2.0 * i as f64).collect();
    write_ser(
        ser,
        SerFrameFormat { color, bits: 16 },
        frames,
        Some(&times),
    )
    .unwrap()
}

fn pixels(path: &Path) -> ndarray::Array3<f32> {
    tlr_core::fits::read_cube(path).unwrap().1
}

#[test]
fn a_ser_file_runs_like_the_folder_of_its_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let frames = tmp.path().join("frames");
    simulate_with(&frames, 12, 192, 4, &["--scenario", "seeing"]);
    let ser = tmp.path().join("capture.ser");
    assert_eq!(folder_to_ser(&frames, &ser, SerColor::Mono), 12);
    let (from_folder, from_ser) = (tmp.path().join("folder.fits"), tmp.path().join("ser.fits"));
    run_ok(&frames, &from_folder, &[]);
    run_ok(&ser, &from_ser, &[]);
    assert_eq!(pixels(&from_folder), pixels(&from_ser));
    // The SER file is an input: writing over it is refused.
    let out = tlr(&["run", ser.to_str().unwrap(), "-o", ser.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn bayer_ser_gives_colour_and_truncation_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let frames = tmp.path().join("frames");
    simulate_with(
        &frames,
        12,
        192,
        5,
        &["--scenario", "seeing", "--color", "RGGB"],
    );
    let ser = tmp.path().join("colour.ser");
    folder_to_ser(
        &frames,
        &ser,
        SerColor::Bayer(tlr_core::bayer::CfaPattern::Rggb),
    );
    // Cut the file in the middle of its last frame: 11 complete frames remain.
    let bytes = std::fs::read(&ser).unwrap();
    std::fs::write(&ser, &bytes[..bytes.len() - 12 * 8 - 1000]).unwrap();
    let out_path = tmp.path().join("colour.fits");
    let out = tlr(&[
        "run",
        ser.to_str().unwrap(),
        "-o",
        out_path.to_str().unwrap(),
        "--json",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("truncated") && stdout.contains("holds 11 complete"),
        "{stdout}"
    );
    assert_eq!(pixels(&out_path).dim(), (3, 192, 192));
}

#[test]
fn broken_ser_files_fail_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let ser = tmp.path().join("broken.ser");
    let mut header = vec![0u8; 178];
    header[..14].copy_from_slice(b"LUCAM-RECORDER");
    header[26..30].copy_from_slice(&640i32.to_le_bytes());
    header[30..34].copy_from_slice(&480i32.to_le_bytes());
    header[34..38].copy_from_slice(&8i32.to_le_bytes());
    header[38..42].copy_from_slice(&1000i32.to_le_bytes());
    std::fs::write(&ser, &header).unwrap();
    let out_path = tmp.path().join("out.fits");
    let out = tlr(&[
        "run",
        ser.to_str().unwrap(),
        "-o",
        out_path.to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("broken.ser") && stderr.contains("no complete frame"),
        "{stderr}"
    );
    header[26..30].copy_from_slice(&(-3i32).to_le_bytes());
    std::fs::write(&ser, &header).unwrap();
    let out = tlr(&["inspect", ser.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("broken.ser") && stderr.contains("ImageWidth"),
        "{stderr}"
    );
}

#[test]
fn inspect_reports_every_frame_of_a_ser_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lunar");
    let out = tlr(&[
        "simulate",
        dir.to_str().unwrap(),
        "--scene",
        "lunar",
        "--ser",
        "--bits",
        "8",
        "--frames",
        "5",
        "--width",
        "128",
        "--height",
        "96",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ser = dir.join("capture.ser");
    let out = tlr(&["inspect", ser.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["frame"], i);
        assert!(line["sharpness"].as_f64().unwrap() > 0.0, "{line}");
        assert!(line["date_obs"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-27T12:00:00"));
    }
}
