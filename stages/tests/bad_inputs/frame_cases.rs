//! Corpus cases about frame files: damaged, truncated, not FITS, every BITPIX and scaling, odd
//! pixels, impossible shapes, too few frames, DATE-OBS problems.
//!
//! What it does not: run anything; each case only builds its folder and says what to expect.

use super::*;

pub(crate) type Build = Box<dyn Fn(&Path) -> Plan + Send + Sync>;

pub(crate) fn case(
    name: &'static str,
    build: impl Fn(&Path) -> Plan + Send + Sync + 'static,
) -> (&'static str, Build) {
    (name, Box::new(build))
}

/// A good folder plus one damaged file called `name` with these bytes.
pub(crate) fn with_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let frames = copy_good(dir, FRAMES);
    fs::write(frames.join(name), bytes).unwrap();
    frames
}

/// A good folder plus one frame called `name` written by `write_pixels`.
pub(crate) fn with_frame(
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

pub(crate) fn good_bytes() -> Vec<u8> {
    fs::read(&good_frames(&fixture().good)[0]).unwrap()
}

pub(crate) fn gzip_of(bytes: &[u8], dir: &Path) -> Vec<u8> {
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

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub(crate) fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

pub(crate) fn yaml(dir: &Path, text: &[u8]) -> PathBuf {
    let path = dir.join("bad.yaml");
    fs::write(&path, text).unwrap();
    path
}

pub(crate) fn config_check(dir: &Path, text: &[u8]) -> Plan {
    let path = yaml(dir, text);
    Plan::tlr(&[&"config", &path]).code(2).says("bad.yaml")
}

pub(crate) fn frame_cases() -> Vec<(&'static str, Build)> {
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
            Plan::run(dir, &frames, &[]).says("BSCALE")
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
pub(crate) fn shape_cases() -> Vec<(&'static str, Build)> {
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
        // A short session runs with all its frames and says so once; one frame passes through.
        case("one_frame", |dir| {
            Plan::run(dir, &copy_good(dir, 1), &[]).says("the single frame passes through")
        }),
        case("two_frames", |dir| {
            Plan::run(dir, &copy_good(dir, 2), &[])
                .says("only 2 usable frames")
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
