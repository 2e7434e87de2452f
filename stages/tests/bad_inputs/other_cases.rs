//! Corpus cases about the folder (names, links, file types, strictness, --quiet/--json), the command
//! line (--glob, inspect, simulate), output locations, `tlr watch` values and configuration files.
//!
//! What it does not: run anything; each case only builds its input and says what to expect.

use super::*;

/// File names and file types of the folder.
pub(crate) fn folder_cases() -> Vec<(&'static str, Build)> {
    let strict = |name: &'static str, make: fn(&Path), says: &'static str| {
        [
            case(name, move |dir| {
                let frames = copy_good(dir, FRAMES);
                make(&frames);
                Plan::run(dir, &frames, &[]).says(says)
            }),
            case(
                Box::leak(format!("{name}_strict").into_boxed_str()),
                move |dir| {
                    let frames = copy_good(dir, FRAMES);
                    make(&frames);
                    Plan::run(dir, &frames, &["--strict"]).code(1).says(says)
                },
            ),
        ]
    };
    let mut cases = vec![
        case("empty_folder", |dir| {
            let frames = dir.join("frames");
            fs::create_dir_all(&frames).unwrap();
            Plan::run(dir, &frames, &[])
                .code(1)
                .says("frames")
                .says("no file matches")
        }),
        case("missing_folder", |dir| {
            Plan::run(dir, &dir.join("nowhere"), &[])
                .code(1)
                .says("nowhere")
        }),
        case("input_is_a_file", |dir| {
            let frames = copy_good(dir, FRAMES);
            let file = good_frames(&frames)[0].clone();
            Plan::run(dir, &file, &[]).code(1).says("frame_0000.fits")
        }),
        case("only_bad_files", |dir| {
            let frames = dir.join("frames");
            fs::create_dir_all(&frames).unwrap();
            fs::write(frames.join("a.fits"), b"hello").unwrap();
            Plan::run(dir, &frames, &[]).code(1).says("a.fits")
        }),
        case("odd_names", |dir| {
            let frames = copy_good(dir, FRAMES);
            let names = [
                "with space.fits",
                "ünïcødé ☄.FITS",
                "-dash.fit",
                "quote'\"`$(x).fts",
                &format!("{}.fits", "l".repeat(240)),
            ];
            for (p, name) in good_frames(&frames).iter().zip(names) {
                fs::rename(p, frames.join(name)).unwrap();
            }
            Plan::run(dir, &frames, &["--strict"])
        }),
        case("non_utf8_name", |dir| {
            let frames = copy_good(dir, FRAMES);
            let p = good_frames(&frames)[0].clone();
            fs::rename(&p, frames.join(OsStr::from_bytes(b"bad\xff.fits"))).unwrap();
            // The diagnostics' JSON panics on the non-UTF-8 path (stages/src/output.rs).
            Plan::run(dir, &frames, &["--strict"])
        }),
        case("non_utf8_bad_file", |dir| {
            let frames = copy_good(dir, FRAMES);
            fs::write(frames.join(OsStr::from_bytes(b"junk\xfe.fits")), b"junk").unwrap();
            Plan::run(dir, &frames, &[]).says("junk")
        }),
        case("unreadable_file", |dir| {
            let frames = with_file(dir, "locked.fits", &good_bytes());
            set_mode(&frames.join("locked.fits"), 0o000);
            let mut plan = Plan::run(dir, &frames, &[]).says("locked.fits");
            plan.not_applicable =
                is_root().then_some("running as root: permission bits do not apply");
            plan
        }),
        case("unreadable_folder", |dir| {
            let frames = copy_good(dir, FRAMES);
            set_mode(&frames, 0o000);
            let mut plan = Plan::run(dir, &frames, &[]).code(1).says("frames");
            plan.not_applicable =
                is_root().then_some("running as root: permission bits do not apply");
            plan
        }),
        case("strict_with_text_file", |dir| {
            Plan::run(dir, &with_file(dir, "notes.fits", b"notes"), &["--strict"])
                .code(1)
                .says("notes.fits")
        }),
        case("quiet_still_reports_skips", |dir| {
            Plan::run(dir, &with_file(dir, "notes.fits", b"notes"), &["--quiet"]).says("notes.fits")
        }),
        case("json_reports_skips_as_events", |dir| {
            let mut plan = Plan::run(dir, &with_file(dir, "notes.fits", b"notes"), &["--json"])
                .says("\"event\":\"frame_skipped\"")
                .says("notes.fits");
            plan.in_stdout = true;
            plan
        }),
    ];
    cases.extend(strict(
        "symlink_loop",
        |f| {
            std::os::unix::fs::symlink("loop2.fits", f.join("loop1.fits")).unwrap();
            std::os::unix::fs::symlink("loop1.fits", f.join("loop2.fits")).unwrap();
        },
        "loop1.fits",
    ));
    cases.extend(strict(
        "dangling_link",
        |f| {
            std::os::unix::fs::symlink("gone.fits", f.join("dangling.fits")).unwrap();
        },
        "dangling.fits",
    ));
    cases.extend(strict(
        "folder_named_fits",
        |f| fs::create_dir(f.join("sub.fits")).unwrap(),
        "sub.fits",
    ));
    cases.extend(strict(
        "fifo_named_fits",
        |f| mkfifo(&f.join("pipe.fits")),
        "pipe.fits",
    ));
    cases.extend(strict(
        "link_to_device",
        |f| {
            std::os::unix::fs::symlink("/dev/zero", f.join("zero.fits")).unwrap();
        },
        "zero.fits",
    ));
    cases
}

pub(crate) fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Command-line mistakes, `tlr inspect` and `tlr simulate` on bad input.
pub(crate) fn cli_cases() -> Vec<(&'static str, Build)> {
    let inspect = |name: &'static str, make: fn(&Path) -> PathBuf, says: &'static str| {
        case(name, move |dir| {
            let path = make(dir);
            let mut plan = Plan::tlr(&[&"inspect", &path]).code(1).says(says);
            plan.timeout = Duration::from_secs(10);
            plan
        })
    };
    let sim = |name: &'static str, args: &'static [&'static str], says: &'static str| {
        case(name, move |dir| {
            let mut plan = Plan::tlr(&[&"simulate", &dir.join("sim")])
                .code(2)
                .says(says);
            plan.args.extend(args.iter().map(OsString::from));
            plan
        })
    };
    vec![
        case("bad_glob", |dir| {
            Plan::run(dir, &copy_good(dir, FRAMES), &["--glob", "*.fits [x"])
                .code(2)
                .says("[x")
        }),
        case("empty_glob", |dir| {
            Plan::run(dir, &copy_good(dir, FRAMES), &["--glob", " "])
                .code(2)
                .says("--glob")
        }),
        case("glob_matches_nothing", |dir| {
            Plan::run(dir, &copy_good(dir, FRAMES), &["--glob", "*.xyz"])
                .code(1)
                .says("*.xyz")
        }),
        case("parallel_tiles_zero", |dir| {
            let frames = copy_good(dir, FRAMES);
            let mut plan = Plan::run(dir, &frames, &[]).code(2).says("parallel_tiles");
            let n = plan.args.len();
            plan.args[n - 1] = "0".into();
            plan
        }),
        case("parallel_tiles_huge", |dir| {
            let frames = copy_good(dir, FRAMES);
            let mut plan = Plan::run(dir, &frames, &[]).code(2).says("parallel_tiles");
            let n = plan.args.len();
            plan.args[n - 1] = "100000".into();
            plan
        }),
        inspect(
            "inspect_fifo",
            |d| {
                mkfifo(&d.join("pipe.fits"));
                d.join("pipe.fits")
            },
            "pipe.fits",
        ),
        inspect(
            "inspect_folder",
            |d| {
                fs::create_dir(d.join("dir.fits")).unwrap();
                d.join("dir.fits")
            },
            "dir.fits",
        ),
        inspect("inspect_missing", |d| d.join("absent.fits"), "absent.fits"),
        inspect(
            "inspect_text",
            |d| {
                fs::write(d.join("t.fits"), "text").unwrap();
                d.join("t.fits")
            },
            "t.fits",
        ),
        inspect(
            "inspect_all_nan",
            |d| {
                write_pixels(&d.join("nan.fits"), 0, -32, &[], |a| a.fill(f32::NAN));
                d.join("nan.fits")
            },
            "nan.fits",
        ),
        inspect(
            "inspect_device",
            |_| PathBuf::from("/dev/zero"),
            "/dev/zero",
        ),
        sim(
            "simulate_zero_width",
            &["--width", "0", "--frames", "2"],
            "width",
        ),
        sim(
            "simulate_zero_frames",
            &["--frames", "0", "--width", "64", "--height", "64"],
            "frames",
        ),
        sim(
            "simulate_huge_height",
            &["--height", "99999999", "--frames", "1"],
            "height",
        ),
        case("simulate_into_a_file", |dir| {
            let file = dir.join("occupied");
            fs::write(&file, "x").unwrap();
            Plan::tlr(&[
                &"simulate",
                &file,
                &"--frames",
                &"2",
                &"--width",
                &"64",
                &"--height",
                &"64",
            ])
            .code(1)
            .says("occupied")
        }),
    ]
}

/// Output locations (h/output) and `tlr watch` values (h/watch).
pub(crate) fn output_cases() -> Vec<(&'static str, Build)> {
    let watch = |name: &'static str, flag: &'static str, value: &'static str| {
        case(name, move |dir| {
            let frames = copy_good(dir, FRAMES);
            let out = dir.join("live.fits");
            let mut plan = Plan::tlr(&[
                &"watch",
                &frames,
                &"-o",
                &out,
                &flag,
                &value,
                &"--parallel-tiles",
                &"1",
            ])
            .code(2)
            .says(flag);
            if flag != "--until-idle" {
                plan.args.extend(["--until-idle", "1"].map(OsString::from));
            }
            plan.timeout = Duration::from_secs(6);
            plan
        })
    };
    vec![
        case("output_is_an_input_frame", |dir| {
            let frames = copy_good(dir, FRAMES);
            let target = good_frames(&frames)[0].clone();
            let mut plan = Plan::run(dir, &frames, &[]).code(2).says("frame_0000.fits");
            plan.args[3] = target.clone().into();
            plan.output = None;
            plan.unchanged = Some((target.clone(), fs::read(&target).unwrap()));
            plan
        }),
        case("output_is_a_folder", |dir| {
            let frames = copy_good(dir, FRAMES);
            fs::create_dir(dir.join("taken.fits")).unwrap();
            let mut plan = Plan::run(dir, &frames, &[]).code(2).says("taken.fits");
            plan.args[3] = dir.join("taken.fits").into();
            plan.output = None;
            plan
        }),
        case("output_is_a_device", |dir| {
            // A link to the device, never the device itself: were the check ever to fail, the
            // rename would replace the link, not the machine's /dev/null.
            let link = dir.join("null.fits");
            std::os::unix::fs::symlink("/dev/null", &link).unwrap();
            let mut plan = Plan::run(dir, &copy_good(dir, FRAMES), &[])
                .code(2)
                .says("null.fits");
            plan.args[3] = link.into();
            plan.output = None;
            plan
        }),
        case("output_folder_missing", |dir| {
            let mut plan = Plan::run(dir, &copy_good(dir, FRAMES), &[]);
            let out = dir.join("new/deeper/out.fits");
            plan.args[3] = out.clone().into();
            plan.output = Some(out);
            plan
        }),
        case("frame_deleted_mid_run", |dir| {
            // A frame disappears once the global pass is done: the run may use it (already read)
            // or fail naming it, but NCOMBINE must say how many frames went into the result.
            let frames = copy_good(dir, FRAMES);
            let victim = good_frames(&frames)[6].clone();
            let stdout = dir.join("stdout.txt");
            std::thread::spawn(move || {
                let started = Instant::now();
                while started.elapsed() < TIMEOUT {
                    let text = fs::read_to_string(&stdout).unwrap_or_default();
                    if text.contains("\"global_done\"") {
                        let _ = fs::remove_file(&victim);
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            });
            let mut plan = Plan::run(dir, &frames, &["--json"]);
            plan.ncombine_truthful = true;
            // The reader leaves the frame out of this and all later tiles; NCOMBINE and
            // frames_used must not count it.
            plan
        }),
        case("watch_checkpoint_of_another_folder", |dir| {
            // live.fits.checkpoint/ belongs to the frames of `first`; watching `frames` with the same
            // output must not mix the two sequences: refused, naming the checkpoint (--fresh to start over).
            let frames = copy_good(dir, FRAMES);
            let first = dir.join("first");
            fs::rename(copy_good(&dir.join("a"), FRAMES), &first).unwrap();
            let out = dir.join("live.fits");
            let status = Command::new(env!("CARGO_BIN_EXE_tlr"))
                .arg("watch")
                .arg(&first)
                .arg("-o")
                .arg(&out)
                .args([
                    "--until-idle",
                    "1",
                    "--poll",
                    "--stable-ms",
                    "50",
                    "--parallel-tiles",
                    "1",
                    "-q",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "the first watch fails");
            let mut plan = Plan::tlr(&[
                &"watch",
                &frames,
                &"-o",
                &out,
                &"--until-idle",
                &"1",
                &"--poll",
            ])
            .code(2)
            .says("checkpoint");
            plan.args
                .extend(["--stable-ms", "50", "--parallel-tiles", "1"].map(OsString::from));
            plan.unchanged = Some((out.clone(), fs::read(&out).unwrap()));
            plan.timeout = Duration::from_secs(15);
            plan
        }),
        case("output_read_only_location", |dir| {
            // /proc is a file system where nobody, root included, can create files.
            let mut plan = Plan::run(dir, &copy_good(dir, FRAMES), &[])
                .code(1)
                .says("/proc/tlr-out");
            plan.args[3] = "/proc/tlr-out.fits".into();
            plan.output = Some(PathBuf::from("/proc/tlr-out.fits"));
            plan
        }),
        case("output_location_full", |dir| {
            // A file size limit (with SIGXFSZ ignored) makes writes fail like a full disk.
            let mut plan = Plan::run(dir, &copy_good(dir, FRAMES), &[])
                .code(1)
                .says("out.fits");
            plan.shell = Some("trap '' XFSZ; ulimit -f 40");
            // Nothing may stay behind: no preview or diagnostics without the FITS.
            plan
        }),
        watch("watch_until_idle_huge", "--until-idle", "1e300"),
        watch("watch_every_secs_huge", "--every-secs", "1e300"),
        watch(
            "watch_stable_ms_huge",
            "--stable-ms",
            "18446744073709551615",
        ),
    ]
}

/// Configuration files: through `tlr config`, and one through `tlr run -c`.
pub(crate) fn yaml_cases() -> Vec<(&'static str, Build)> {
    vec![
        case("yaml_syntax_error", |d| {
            config_check(d, b"v4:\n  iterations: [1, 2\n  foo: : bar\n")
        }),
        case("yaml_unknown_key_hint", |d| {
            config_check(d, b"v4:\n  iteratons: 3\n").says("did you mean `v4.iterations`")
        }),
        case("yaml_wrong_type", |d| {
            config_check(d, b"v4:\n  iterations: many\n").says("iterations")
        }),
        case("yaml_out_of_range", |d| {
            config_check(d, b"v4:\n  iterations: -5\n").says("iterations")
        }),
        case("yaml_empty_file", |d| {
            let path = yaml(d, b"");
            Plan::tlr(&[&"config", &path])
        }),
        case("yaml_binary_garbage", |d| {
            config_check(d, &[0u8, 159, 146, 150, 255, 0, 1, 2, 0xfe, b'\n', 0x80])
        }),
        case("yaml_deep_nesting", |d| {
            let text = format!("v4: {}1{}\n", "[".repeat(100_000), "]".repeat(100_000));
            let mut plan = config_check(d, text.as_bytes());
            plan.timeout = Duration::from_secs(5);
            plan
        }),
        case("yaml_huge_file", |d| {
            // 20 MB: refused from its length (configurations are a few KB), naming the file.
            let mut text = b"# padding\n".repeat(2_000_000);
            text.extend_from_slice(b"v4:\n  iteratons: 3\n");
            config_check(d, &text).says("bytes is more than")
        }),
        case("yaml_missing_file", |d| {
            Plan::tlr(&[&"config", &d.join("absent.yaml")])
                .code(2)
                .says("absent.yaml")
        }),
        case("yaml_is_a_folder", |d| {
            Plan::tlr(&[&"config", &d])
                .code(2)
                .says(d.display().to_string())
        }),
        case("yaml_bad_key_in_run", |dir| {
            let config = yaml(
                dir,
                b"registration:\n  local_tiles:\n    min_valid_frames: -1\n",
            );
            Plan::run(
                dir,
                &copy_good(dir, FRAMES),
                &["-c", config.to_str().unwrap()],
            )
            .code(2)
            .says("min_valid_frames")
        }),
    ]
}
