//! The bad-input corpus: one table of damaged folders, frames, file types, command lines and
//! configuration files, each run through the `tlr` binary the way a user would.
//!
//! Every case starts from a small folder of good frames (12 simulated 128x128 frames, made once per
//! test binary and copied), damages a copy or builds its own input, runs `tlr` with a timeout, and
//! checks: the exit code; that the message (stderr, or stdout where the case says so) contains the
//! file name or configuration key; that nothing panicked (exit 101 or "panicked" is always a
//! failure) or hung; and that the output is absent after a failure, or a valid FITS image with
//! finite pixels that `tlr inspect` reads after a success. All failing cases are listed at once.
//!
//! A case marked `pending` waits for another helper's fix: its result is reported, not failed.
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

// ---------------------------------------------------------------------------------------------
// The good frames, and a raw FITS writer to damage them with.

/// The good frames: their pixels and DATE-OBS, and a folder holding them as simulated.
struct Fixture {
    _root: tempfile::TempDir,
    good: PathBuf,
    frames: Vec<(String, Array2<f32>)>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = tempfile::tempdir().unwrap();
        let good = root.path().join("good");
        let mut cfg = SimConfig::new(Scenario::Seeing, FRAMES, SIZE, SIZE, 3);
        cfg.star_density_per_mpx = 12_000.0;
        cfg.bad_frames = false;
        simulate::write_sequence(&cfg, &good).expect("the simulator writes the good frames");
        for extra in [
            simulate::TRUTH_FILE,
            simulate::TRUTH_DISPLACEMENT_FILE,
            simulate::CONFIG_FILE,
        ] {
            let _ = fs::remove_file(good.join(extra));
        }
        let frames = good_frames(&good)
            .iter()
            .map(|p| {
                let (h, image) = tlr_core::fits::read_image(p).unwrap();
                (h.date_obs.unwrap_or_default(), image)
            })
            .collect();
        Fixture {
            _root: root,
            good,
            frames,
        }
    })
}

fn good_frames(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension() == Some(OsStr::new("fits")))
        .collect();
    paths.sort();
    paths
}

/// Copies the first `n` good frames into `dir/frames`.
fn copy_good(dir: &Path, n: usize) -> PathBuf {
    let frames = dir.join("frames");
    fs::create_dir_all(&frames).unwrap();
    for p in good_frames(&fixture().good).iter().take(n) {
        fs::copy(p, frames.join(p.file_name().unwrap())).unwrap();
    }
    frames
}

/// One 80-character header card.
fn card(key: &str, value: &str) -> String {
    let text = if value.is_empty() {
        key.to_string()
    } else {
        format!("{key:<8}= {value:>20}")
    };
    format!("{text:<80}")
}

/// Cards and data bytes as a FITS HDU: header padded with blanks, data with zeros, to 2880 bytes.
fn hdu(cards: &[String], end: bool, data: &[u8]) -> Vec<u8> {
    let mut bytes: Vec<u8> = cards.concat().into_bytes();
    if end {
        bytes.extend(format!("{:<80}", "END").bytes());
    }
    bytes.resize(bytes.len().div_ceil(2880) * 2880, b' ');
    let start = bytes.len();
    bytes.extend_from_slice(data);
    bytes.resize(start + data.len().div_ceil(2880) * 2880, 0);
    bytes
}

/// The header cards of an image: SIMPLE, BITPIX, NAXISn, then `extra` (key, raw value).
fn image_cards(bitpix: i32, axes: &[usize], extra: &[(&str, String)]) -> Vec<String> {
    let mut cards = vec![card("SIMPLE", "T"), card("BITPIX", &bitpix.to_string())];
    cards.push(card("NAXIS", &axes.len().to_string()));
    for (i, n) in axes.iter().enumerate() {
        cards.push(card(&format!("NAXIS{}", i + 1), &n.to_string()));
    }
    cards.extend(extra.iter().map(|(k, v)| card(k, v)));
    cards
}

/// Pixels stored as `bitpix` (big-endian), physical value = BZERO + BSCALE * stored.
fn encode(pixels: &[f32], bitpix: i32, bzero: f64, bscale: f64) -> Vec<u8> {
    let stored = pixels.iter().map(|&v| (f64::from(v) - bzero) / bscale);
    match bitpix {
        8 => stored.map(|s| s.round().clamp(0.0, 255.0) as u8).collect(),
        16 => stored
            .flat_map(|s| (s.round().clamp(-32768.0, 32767.0) as i16).to_be_bytes())
            .collect(),
        32 => stored
            .flat_map(|s| (s.round() as i32).to_be_bytes())
            .collect(),
        64 => stored
            .flat_map(|s| (s.round() as i64).to_be_bytes())
            .collect(),
        -32 => stored.flat_map(|s| (s as f32).to_be_bytes()).collect(),
        -64 => stored.flat_map(|s| s.to_be_bytes()).collect(),
        other => panic!("no encoding for BITPIX {other}"),
    }
}

/// A quoted FITS string value.
fn quoted(s: &str) -> String {
    format!("'{s:<8}'")
}

/// Writes frame `i` of the fixture with `bitpix` (BZERO/BSCALE chosen to hold the values) and
/// `extra` cards; `edit` may change the pixels first.
fn write_frame(path: &Path, i: usize, bitpix: i32, extra: &[(&str, String)]) {
    write_pixels(path, i, bitpix, extra, |_| {});
}

fn write_pixels(
    path: &Path,
    i: usize,
    bitpix: i32,
    extra: &[(&str, String)],
    edit: impl FnOnce(&mut Array2<f32>),
) {
    let (date, image) = &fixture().frames[i];
    let mut image = image.clone();
    edit(&mut image);
    let pixels: Vec<f32> = image.iter().copied().collect();
    let (bzero, bscale) = match bitpix {
        8 => {
            // An 8-bit camera: the sky and faint stars resolved, bright stars saturate at 255.
            let mut sorted: Vec<f32> = pixels.iter().copied().filter(|v| v.is_finite()).collect();
            sorted.sort_by(f32::total_cmp);
            let (lo, hi) = (
                sorted[sorted.len() / 100],
                sorted[sorted.len() * 998 / 1000],
            );
            (f64::from(lo), f64::from((hi - lo).max(1.0)) / 255.0)
        }
        16 => (32768.0, 1.0),
        _ => (0.0, 1.0),
    };
    let mut cards = vec![("DATE-OBS", quoted(date)), ("EXPTIME", "10.0".into())];
    if bitpix > 0 {
        cards.push(("BZERO", format!("{bzero:.10E}")));
        cards.push(("BSCALE", format!("{bscale:.10E}")));
    }
    // Later cards of `extra` override: cfitsio and the native reader take the first, so drop ours.
    cards.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    cards.extend(extra.iter().cloned());
    let (rows, cols) = image.dim();
    let data = encode(&pixels, bitpix, bzero, bscale);
    fs::write(
        path,
        hdu(&image_cards(bitpix, &[cols, rows], &cards), true, &data),
    )
    .unwrap();
}

/// Writes all good frames into `dir/frames` as `bitpix`.
fn frames_as(dir: &Path, bitpix: i32) -> PathBuf {
    let frames = dir.join("frames");
    fs::create_dir_all(&frames).unwrap();
    for i in 0..FRAMES {
        write_frame(&frames.join(format!("f{i:02}.fits")), i, bitpix, &[]);
    }
    frames
}

// ---------------------------------------------------------------------------------------------
// Cases.

/// What to run and what to expect.
struct Plan {
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
    pending: Option<&'static str>,
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
            pending: None,
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

    fn pending(mut self, helper: &'static str) -> Self {
        self.pending = Some(helper);
        self
    }
}

type Build = Box<dyn Fn(&Path) -> Plan + Send + Sync>;

fn case(
    name: &'static str,
    build: impl Fn(&Path) -> Plan + Send + Sync + 'static,
) -> (&'static str, Build) {
    (name, Box::new(build))
}

/// A good folder plus one damaged file called `name` with these bytes.
fn with_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let frames = copy_good(dir, FRAMES);
    fs::write(frames.join(name), bytes).unwrap();
    frames
}

/// A good folder plus one frame called `name` written by `write_pixels`.
fn with_frame(
    dir: &Path,
    name: &str,
    bitpix: i32,
    extra: &[(&str, String)],
    edit: impl FnOnce(&mut Array2<f32>),
) -> PathBuf {
    let frames = copy_good(dir, FRAMES);
    write_pixels(&frames.join(name), 0, bitpix, extra, edit);
    frames
}

fn good_bytes() -> Vec<u8> {
    fs::read(&good_frames(&fixture().good)[0]).unwrap()
}

fn gzip_of(bytes: &[u8], dir: &Path) -> Vec<u8> {
    let raw = dir.join("raw.fits");
    fs::write(&raw, bytes).unwrap();
    let out = Command::new("gzip").arg("-c").arg(&raw).output();
    fs::remove_file(&raw).unwrap();
    match out {
        Ok(o) if o.status.success() => o.stdout,
        // No gzip here: a hand-made gzip header with garbage deflate data is still "gzip renamed".
        _ => [&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3][..], &bytes[..4000]].concat(),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

fn yaml(dir: &Path, text: &[u8]) -> PathBuf {
    let path = dir.join("bad.yaml");
    fs::write(&path, text).unwrap();
    path
}

fn config_check(dir: &Path, text: &[u8]) -> Plan {
    let path = yaml(dir, text);
    Plan::tlr(&[&"config", &path]).code(2).says("bad.yaml")
}

fn frame_cases() -> Vec<(&'static str, Build)> {
    let skipped = |name: &'static str, bytes: fn(&Path) -> Vec<u8>| {
        case(name, move |dir| {
            let file = format!("{name}.fits");
            Plan::run(dir, &with_file(dir, &file, &bytes(dir)), &[]).says(file)
        })
    };
    let bad_frame = |name: &'static str,
                     bitpix: i32,
                     extra: fn() -> Vec<(&'static str, String)>,
                     edit: fn(&mut Array2<f32>)| {
        case(name, move |dir| {
            let file = format!("{name}.fits");
            Plan::run(dir, &with_frame(dir, &file, bitpix, &extra(), edit), &[]).says(file)
        })
    };
    let whole = |name: &'static str, bitpix: i32| {
        case(name, move |dir| {
            Plan::run(dir, &frames_as(dir, bitpix), &[])
        })
    };
    let none = || Vec::new();
    vec![
        case("baseline_good_frames", |dir| {
            Plan::run(dir, &copy_good(dir, FRAMES), &[])
        }),
        skipped("empty_file", |_| Vec::new()),
        skipped("text_file", |_| {
            b"SIMPLE is not what this is: just some notes\n".repeat(40)
        }),
        skipped("random_bytes", |_| {
            let mut x = 0x2545_f491_4f6c_dd1du64;
            (0..9000)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        }),
        case("gzip_renamed", |dir| {
            // cfitsio could read a gzipped file; tlr reads natively, so it is skipped by name.
            let bytes = gzip_of(&good_bytes(), dir);
            Plan::run(dir, &with_file(dir, "gz.fits", &bytes), &[]).says("gz.fits")
        }),
        skipped("truncated_header", |_| good_bytes()[..1000].to_vec()),
        skipped("no_end_card", |_| {
            let cards = image_cards(-32, &[SIZE, SIZE], &[]);
            hdu(&cards, false, &vec![0u8; SIZE * SIZE * 4])
        }),
        skipped("truncated_data", |_| {
            let b = good_bytes();
            b[..b.len() - 5000].to_vec()
        }),
        skipped("cube", |_| {
            let cards = image_cards(-32, &[SIZE, SIZE, 2], &[]);
            hdu(
                &cards,
                true,
                &encode(&vec![100.0; SIZE * SIZE * 2], -32, 0.0, 1.0),
            )
        }),
        bad_frame("other_size", -32, none, |a| {
            *a = a.slice(ndarray::s![..64, ..96]).to_owned();
        }),
        case("naxis0_plus_extension", |dir| {
            // A primary HDU without data and the image in an IMAGE extension: a valid frame.
            let frames = dir.join("frames");
            fs::create_dir_all(&frames).unwrap();
            for i in 0..FRAMES {
                let (date, image) = &fixture().frames[i];
                let pixels: Vec<f32> = image.iter().copied().collect();
                let mut bytes = hdu(&image_cards(8, &[], &[("EXTEND", "T".into())]), true, &[]);
                let mut cards = vec![card("XTENSION", &quoted("IMAGE")), card("BITPIX", "-32")];
                cards.push(card("NAXIS", "2"));
                cards.push(card("NAXIS1", &SIZE.to_string()));
                cards.push(card("NAXIS2", &SIZE.to_string()));
                cards.push(card("PCOUNT", "0"));
                cards.push(card("GCOUNT", "1"));
                cards.push(card("DATE-OBS", &quoted(date)));
                bytes.extend(hdu(&cards, true, &encode(&pixels, -32, 0.0, 1.0)));
                fs::write(frames.join(format!("x{i:02}.fits")), bytes).unwrap();
            }
            Plan::run(dir, &frames, &[])
        }),
        whole("bitpix_8", 8),
        whole("bitpix_16", 16),
        whole("bitpix_32", 32),
        whole("bitpix_64", 64),
        whole("bitpix_minus32", -32),
        whole("bitpix_minus64", -64),
        skipped("bitpix_invalid", |_| {
            hdu(
                &image_cards(24, &[SIZE, SIZE], &[]),
                true,
                &vec![0u8; SIZE * SIZE * 3],
            )
        }),
        bad_frame("bscale_zero", 16, || vec![("BSCALE", "0.0".into())], |_| {}),
        case("bscale_negative", |dir| {
            // BSCALE = -1 with negated stored values: physically the good frame, so it is used.
            let frames = copy_good(dir, FRAMES);
            fs::remove_file(good_frames(&frames)[0].clone()).unwrap();
            let (date, image) = &fixture().frames[0];
            let pixels: Vec<f32> = image.iter().copied().collect();
            let cards = image_cards(
                32,
                &[SIZE, SIZE],
                &[("DATE-OBS", quoted(date)), ("BSCALE", "-1.0".into())],
            );
            fs::write(
                frames.join("neg.fits"),
                hdu(&cards, true, &encode(&pixels, 32, 0.0, -1.0)),
            )
            .unwrap();
            Plan::run(dir, &frames, &["--strict"])
        }),
        // Read as BSCALE 1 (cfitsio's rule, which the native reader replicates on purpose, see
        // tests/it/fits_native.rs): used silently today. Rejecting it is the lead's call.
        case("bscale_text", |dir| {
            let frames = with_frame(
                dir,
                "bscale_text.fits",
                16,
                &[("BSCALE", quoted("abc"))],
                |_| {},
            );
            Plan::run(dir, &frames, &[]).says("BSCALE").pending("lead")
        }),
        case("blank_pixels", |dir| {
            // Integer frames with BLANK: those pixels are undefined, the rest is used.
            let frames = dir.join("frames");
            fs::create_dir_all(&frames).unwrap();
            for i in 0..FRAMES {
                write_pixels(
                    &frames.join(format!("b{i:02}.fits")),
                    i,
                    32,
                    &[("BLANK", "-999999".into())],
                    |a| {
                        a.row_mut(i + 3).fill(-999_999.0);
                    },
                );
            }
            Plan::run(dir, &frames, &["--strict"])
        }),
        bad_frame("all_nan", -32, none, |a| a.fill(f32::NAN)),
        bad_frame("all_zero", -32, none, |a| a.fill(0.0)),
        bad_frame("constant", -32, none, |a| a.fill(1234.0)),
        bad_frame("saturated", 16, none, |a| a.fill(65535.0)),
        case("inf_and_nan_pixels", |dir| {
            let frames = copy_good(dir, FRAMES);
            let first = good_frames(&frames)[0].clone();
            write_pixels(&first, 0, -32, &[], |a| {
                a.row_mut(5).fill(f32::INFINITY);
                a.column_mut(9).fill(f32::NEG_INFINITY);
                a.row_mut(40).fill(f32::NAN);
            });
            Plan::run(dir, &frames, &[])
        }),
    ]
    .into_iter()
    .chain(shape_cases())
    .collect()
}

/// Frames of a shape the reconstruction cannot use, and too few frames.
fn shape_cases() -> Vec<(&'static str, Build)> {
    let tiny = |name: &'static str, rows: usize, cols: usize| {
        case(name, move |dir| {
            let frames = dir.join("frames");
            fs::create_dir_all(&frames).unwrap();
            for i in 0..FRAMES {
                let pixels: Vec<f32> = fixture().frames[i]
                    .1
                    .iter()
                    .take(rows * cols)
                    .copied()
                    .collect();
                let cards = image_cards(
                    -32,
                    &[cols, rows],
                    &[("DATE-OBS", quoted(&fixture().frames[i].0))],
                );
                fs::write(
                    frames.join(format!("t{i:02}.fits")),
                    hdu(&cards, true, &encode(&pixels, -32, 0.0, 1.0)),
                )
                .unwrap();
            }
            Plan::run(dir, &frames, &[]).code(1).says("frame")
        })
    };
    vec![
        tiny("frames_1xN", 1, SIZE),
        tiny("frames_10x10", 10, 10),
        case("one_frame", |dir| {
            Plan::run(dir, &copy_good(dir, 1), &[])
                .code(2)
                .says("min_valid_frames")
        }),
        case("two_frames", |dir| {
            Plan::run(dir, &copy_good(dir, 2), &[])
                .code(2)
                .says("min_valid_frames")
        }),
        case("date_obs_malformed", |dir| {
            let frames = copy_good(dir, FRAMES);
            write_frame(
                &good_frames(&frames)[3],
                3,
                -32,
                &[("DATE-OBS", quoted("yesterday"))],
            );
            Plan::run(dir, &frames, &["--strict"])
        }),
        case("date_obs_reversed", |dir| {
            let frames = dir.join("frames");
            fs::create_dir_all(&frames).unwrap();
            for i in 0..FRAMES {
                let date = quoted(&fixture().frames[FRAMES - 1 - i].0);
                write_frame(
                    &frames.join(format!("r{i:02}.fits")),
                    i,
                    -32,
                    &[("DATE-OBS", date)],
                );
            }
            Plan::run(dir, &frames, &["--strict"])
        }),
        case("date_obs_missing", |dir| {
            let frames = dir.join("frames");
            fs::create_dir_all(&frames).unwrap();
            for i in 0..FRAMES {
                write_frame(
                    &frames.join(format!("m{i:02}.fits")),
                    i,
                    -32,
                    &[("DATE-OBS", quoted(""))],
                );
            }
            Plan::run(dir, &frames, &["--strict"])
        }),
    ]
}

/// File names and file types of the folder.
fn folder_cases() -> Vec<(&'static str, Build)> {
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
            Plan::run(dir, &frames, &["--strict"]).pending("h/output")
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

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Command-line mistakes, `tlr inspect` and `tlr simulate` on bad input.
fn cli_cases() -> Vec<(&'static str, Build)> {
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
fn output_cases() -> Vec<(&'static str, Build)> {
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
            .says(flag)
            .pending("h/watch");
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
            let mut plan = Plan::run(dir, &frames, &[])
                .code(2)
                .says("frame_0000.fits")
                .pending("h/output");
            plan.args[3] = target.clone().into();
            plan.output = None;
            plan.unchanged = Some((target.clone(), fs::read(&target).unwrap()));
            plan
        }),
        case("output_is_a_folder", |dir| {
            let frames = copy_good(dir, FRAMES);
            fs::create_dir(dir.join("taken.fits")).unwrap();
            let mut plan = Plan::run(dir, &frames, &[])
                .code(2)
                .says("taken.fits")
                .pending("h/output");
            plan.args[3] = dir.join("taken.fits").into();
            plan.output = None;
            plan
        }),
        case("output_is_a_device", |dir| {
            let mut plan = Plan::run(dir, &copy_good(dir, FRAMES), &[])
                .code(2)
                .says("/dev/null")
                .pending("h/output");
            plan.args[3] = "/dev/null".into();
            plan.output = None;
            plan
        }),
        case("output_folder_missing", |dir| {
            let mut plan = Plan::run(dir, &copy_good(dir, FRAMES), &[]);
            let out = dir.join("new/deeper/out.fits");
            plan.args[3] = out.clone().into();
            plan.output = Some(out);
            plan.pending("h/output")
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
            .says("checkpoint")
            .pending("h/watch");
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
                .says("/proc/tlr-out.fits");
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
            // The preview (and diagnostics) written before the FITS failed stay behind.
            plan.pending("h/output")
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
fn yaml_cases() -> Vec<(&'static str, Build)> {
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
            let mut plan = config_check(d, text.as_bytes()).pending("h/fuzz");
            plan.timeout = Duration::from_secs(5);
            plan
        }),
        case("yaml_huge_file", |d| {
            let mut text = b"# padding\n".repeat(2_000_000);
            text.extend_from_slice(b"v4:\n  iteratons: 3\n");
            config_check(d, &text).says("iteratons")
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

// ---------------------------------------------------------------------------------------------
// Running and judging.

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    hung: bool,
}

fn execute(plan: &Plan, dir: &Path) -> Ran {
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
fn judge(plan: &Plan, ran: &Ran) -> Vec<String> {
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
        } else if out.exists() || out.with_extension("png").exists() {
            problems.push(format!("failed, yet output `{}` exists", out.display()));
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

/// NCOMBINE of `out` against `frames_used` of the `finished` JSON event in `stdout`.
fn ncombine_problem(out: &Path, stdout: &str) -> Option<String> {
    let used = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "finished")
        .and_then(|v| v["summary"]["frames_used"].as_u64());
    let ncombine = tlr_core::fits::read_header_cards(out)
        .ok()?
        .into_iter()
        .find(|c| c.key == "NCOMBINE")
        .and_then(|c| c.value)
        .and_then(|v| v.trim().parse::<u64>().ok());
    (used.is_none() || used != ncombine)
        .then(|| format!("NCOMBINE {ncombine:?} but frames_used {used:?}"))
}

/// A valid result: a FITS image with finite pixels that `tlr inspect` reads.
fn valid_output(path: &Path) -> Result<(), String> {
    let (_, cube) = tlr_core::fits::read_cube(path).map_err(|e| e.to_string())?;
    // NaN is the crate's "no data" marker: a pixel that no frame covers after the shifts (e.g. a
    // corner) is NaN by design. Anything more than a sliver of those, or an infinity, is a defect.
    let nan = cube.iter().filter(|v| v.is_nan()).count();
    let inf = cube.iter().filter(|v| v.is_infinite()).count();
    if cube.is_empty() || inf > 0 || nan * 100 > cube.len() {
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

fn all_cases() -> Vec<(&'static str, Build)> {
    let mut cases = frame_cases();
    cases.extend(folder_cases());
    cases.extend(cli_cases());
    cases.extend(output_cases());
    cases.extend(yaml_cases());
    cases
}

#[test]
fn bad_input_corpus() {
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
                    let verdict = match (problems.is_empty(), plan.pending) {
                        (true, Some(h)) => format!("ok*      {name} (pending {h}, already passes)"),
                        (true, None) => format!("ok       {name}"),
                        (false, Some(h)) => {
                            format!("pending  {name} ({h}): {}", problems.join("; "))
                        }
                        (false, None) => format!(
                            "FAILED   {name}: {}\n           args {:?}\n           stderr: {}",
                            problems.join("; "),
                            plan.args,
                            ran.stderr.trim().replace('\n', "\n                   ")
                        ),
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
        "{} cases, {failed} failed, {} pending, {:.1} s\n{}",
        report.len(),
        report.iter().filter(|l| l.starts_with("pending")).count(),
        started.elapsed().as_secs_f64(),
        report.join("\n")
    );
    println!("{summary}");
    assert!(failed == 0, "bad-input corpus:\n{summary}");
}
