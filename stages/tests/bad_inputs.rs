//! The bad-input corpus: one table of damaged folders, frames, file types, command lines and
//! configuration files, each run through the `tlr` binary the way a user would.
//!
//! Every case starts from a small folder of good frames (12 simulated 128x128 frames, made once per
//! test binary and copied), damages a copy or builds its own input, runs `tlr` with a timeout, and
//! checks: the exit code; that the message (stderr, or stdout where the case says so) contains the
//! file name or configuration key; that nothing panicked (exit 101 or "panicked" is always a
//! failure) or hung; and that the output is absent after a failure, or a valid FITS image with
//! finite pixels only (no NaN) that `tlr inspect` reads after a success. All failing cases are listed at once.
//!
//! What it does not: check pixel values (the other tests do), or cover `tlr demo`.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ndarray::Array2;
use tlr_core::simulate::{self, Scenario, SimConfig};

const FRAMES: usize = 12;
const SIZE: usize = 128;
const TIMEOUT: Duration = Duration::from_secs(30);

#[path = "bad_inputs/fixture.rs"]
mod fixture;
#[path = "bad_inputs/frame_cases.rs"]
mod frame_cases;
#[path = "bad_inputs/other_cases.rs"]
mod other_cases;

use fixture::*;
use frame_cases::*;
use other_cases::*;

// ---------------------------------------------------------------------------------------------
// Cases.

/// What to run and what to expect.
pub(crate) struct Plan {
    args: Vec<OsString>,
    /// A shell prefix (e.g. `ulimit -f 20`) run before `exec tlr ARGS`.
    shell: Option<&'static str>,
    code: i32,
    /// Substrings the message must contain (stderr, or stdout for `in_stdout`).
    says: Vec<String>,
    in_stdout: bool,
    /// The output file: after exit 0 a valid image, else absent.
    output: Option<PathBuf>,
    /// A file that must be unchanged afterwards (an input that was given as the output).
    unchanged: Option<(PathBuf, Vec<u8>)>,
    /// With `--json`: the result's NCOMBINE must equal the `finished` summary's `frames_used`.
    ncombine_truthful: bool,
    timeout: Duration,
    /// Why the case cannot run here (e.g. permission bits as root); reported, not failed.
    not_applicable: Option<&'static str>,
}

impl Plan {
    fn tlr(args: &[&dyn AsRef<OsStr>]) -> Self {
        Plan {
            args: args.iter().map(|a| a.as_ref().to_os_string()).collect(),
            shell: None,
            code: 0,
            says: Vec::new(),
            in_stdout: false,
            output: None,
            unchanged: None,
            ncombine_truthful: false,
            timeout: TIMEOUT,
            not_applicable: None,
        }
    }

    /// `tlr run FRAMES -o dir/out.fits --parallel-tiles 1 EXTRA...`, output checked.
    fn run(dir: &Path, frames: &Path, extra: &[&str]) -> Self {
        let out = dir.join("out.fits");
        let mut plan = Plan::tlr(&[&"run", &frames, &"-o", &out, &"--parallel-tiles", &"1"]);
        plan.args.extend(extra.iter().map(OsString::from));
        plan.output = Some(out);
        plan
    }

    fn code(mut self, code: i32) -> Self {
        self.code = code;
        self
    }

    fn says(mut self, text: impl Into<String>) -> Self {
        self.says.push(text.into());
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Running and judging.

pub(crate) struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    hung: bool,
}

pub(crate) fn execute(plan: &Plan, dir: &Path) -> Ran {
    let tlr = env!("CARGO_BIN_EXE_tlr");
    let mut command = match plan.shell {
        Some(prefix) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("{prefix}; exec \"$0\" \"$@\""))
                .arg(tlr);
            c
        }
        None => Command::new(tlr),
    };
    let (out, err) = (dir.join("stdout.txt"), dir.join("stderr.txt"));
    let mut child = command
        .args(&plan.args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .expect("tlr starts");
    let started = Instant::now();
    let (code, hung) = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break (status.code(), false);
        }
        if started.elapsed() > plan.timeout {
            let _ = child.kill();
            let _ = child.wait();
            break (None, true);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &Path| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned();
    Ran {
        code,
        stdout: read(&out),
        stderr: read(&err),
        hung,
    }
}

/// Problems of one case's run (empty = passed).
pub(crate) fn judge(plan: &Plan, ran: &Ran) -> Vec<String> {
    let mut problems = Vec::new();
    if ran.hung {
        problems.push(format!("hung (killed after {:?})", plan.timeout));
    }
    if ran.code == Some(101) || ran.stderr.contains("panicked") {
        problems.push("PANIC".to_string());
    }
    if !ran.hung && ran.code != Some(plan.code) {
        problems.push(format!("exit {:?}, expected {}", ran.code, plan.code));
    }
    let message = if plan.in_stdout {
        &ran.stdout
    } else {
        &ran.stderr
    };
    for text in &plan.says {
        if !message.contains(text.as_str()) {
            problems.push(format!("message lacks `{text}`"));
        }
    }
    if let Some(out) = &plan.output {
        if ran.code == Some(0) {
            if let Err(why) = valid_output(out) {
                problems.push(format!("output `{}` not valid: {why}", out.display()));
            }
        } else {
            for left in [out.to_path_buf(), out.with_extension("png")] {
                if left.exists() {
                    problems.push(format!("failed, yet `{}` exists", left.display()));
                }
            }
        }
        if let Some(parent) = out.parent().filter(|p| p.is_dir()) {
            let temps: Vec<String> = fs::read_dir(parent)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            let left: Vec<&String> = temps
                .iter()
                .filter(|n| n.starts_with('.') && n.contains("tmp"))
                .collect();
            if !left.is_empty() {
                problems.push(format!("temporary files left: {left:?}"));
            }
        }
    }
    if plan.ncombine_truthful && ran.code == Some(0) {
        if let Some(problem) = plan
            .output
            .as_deref()
            .and_then(|out| ncombine_problem(out, &ran.stdout))
        {
            problems.push(problem);
        }
    }
    if let Some((path, bytes)) = &plan.unchanged {
        if fs::read(path).ok().as_ref() != Some(bytes) {
            problems.push(format!("input `{}` was changed", path.display()));
        }
    }
    problems
}

/// NCOMBINE of `out` against the run's own account in `stdout`: it equals `frames_used` of the
/// `finished` event, and a frame a warning says was left out of the tiles after the global pass is not
/// among them (`frames_used + left out <= frames_total`).
pub(crate) fn ncombine_problem(out: &Path, stdout: &str) -> Option<String> {
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let used = events
        .iter()
        .find(|v| v["event"] == "finished")
        .and_then(|v| v["summary"]["frames_used"].as_u64());
    let left_out = events
        .iter()
        .filter(|v| v["event"] == "warning")
        .filter(|v| {
            v["message"]
                .as_str()
                .unwrap_or_default()
                .contains("left out")
        })
        .count() as u64;
    let total = events
        .iter()
        .find(|v| v["event"] == "finished")
        .and_then(|v| v["summary"]["frames_total"].as_u64());
    let combined = used.filter(|&u| total.is_some_and(|t| u + left_out <= t));
    let ncombine = tlr_core::fits::read_header_cards(out)
        .ok()?
        .into_iter()
        .find(|c| c.key == "NCOMBINE")
        .and_then(|c| c.value)
        .and_then(|v| v.trim().parse::<u64>().ok());
    (combined.is_none() || combined != ncombine).then(|| {
        format!("NCOMBINE {ncombine:?}, but {used:?} frames used and {left_out} left out later")
    })
}

/// A valid result: a FITS image with finite pixels only that `tlr inspect` reads.
pub(crate) fn valid_output(path: &Path) -> Result<(), String> {
    let (_, cube) = tlr_core::fits::read_cube(path).map_err(|e| e.to_string())?;
    // A pixel without data is 0 and counted in the COVERAGE extension: any NaN or infinity is a defect.
    let nan = cube.iter().filter(|v| v.is_nan()).count();
    let inf = cube.iter().filter(|v| v.is_infinite()).count();
    if cube.is_empty() || inf > 0 || nan > 0 {
        return Err(format!(
            "{nan} NaN and {inf} infinite of {} pixels",
            cube.len()
        ));
    }
    let inspect = Command::new(env!("CARGO_BIN_EXE_tlr"))
        .arg("inspect")
        .arg(path)
        .output()
        .map_err(|e| e.to_string())?;
    if !inspect.status.success() {
        return Err(format!(
            "tlr inspect: {}",
            String::from_utf8_lossy(&inspect.stderr)
        ));
    }
    Ok(())
}

pub(crate) fn all_cases() -> Vec<(&'static str, Build)> {
    let mut cases = frame_cases();
    cases.extend(folder_cases());
    cases.extend(cli_cases());
    cases.extend(output_cases());
    cases.extend(yaml_cases());
    cases
}

#[test]
pub(crate) fn bad_input_corpus() {
    let started = Instant::now();
    let _ = fixture();
    let cases = all_cases();
    let mut names: Vec<&str> = cases.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names must be unique");
    assert!(cases.len() >= 50, "only {} cases", cases.len());

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    if std::env::var_os("TLR_CORPUS_KEEP").is_some() {
        println!("keeping the case folders in {}", root.display());
        std::mem::forget(tmp); // not dropped: the folders stay for a look
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((name, build)) = cases.get(i) else {
                    break;
                };
                let dir = root.join(name);
                fs::create_dir_all(&dir).unwrap();
                let t = Instant::now();
                let plan = build(&dir);
                let line = if let Some(why) = plan.not_applicable {
                    format!("n/a      {name}: {why}")
                } else {
                    let ran = execute(&plan, &dir);
                    let problems = judge(&plan, &ran);
                    let verdict = if problems.is_empty() {
                        format!("ok       {name}")
                    } else {
                        format!(
                            "FAILED   {name}: {}\n           args {:?}\n           stderr: {}",
                            problems.join("; "),
                            plan.args,
                            ran.stderr.trim().replace('\n', "\n                   ")
                        )
                    };
                    format!("{verdict} [{:.1} s]", t.elapsed().as_secs_f64())
                };
                results.lock().unwrap().push((i, line));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort();
    let report: Vec<String> = results.into_iter().map(|(_, l)| l).collect();
    let failed = report.iter().filter(|l| l.starts_with("FAILED")).count();
    let summary = format!(
        "{} cases, {failed} failed, {} not applicable here, {:.1} s\n{}",
        report.len(),
        report.iter().filter(|l| l.starts_with("n/a")).count(),
        started.elapsed().as_secs_f64(),
        report.join("\n")
    );
    println!("{summary}");
    assert!(failed == 0, "bad-input corpus:\n{summary}");
}
