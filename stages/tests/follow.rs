//! Folder follower tests: a simulated capture program writes frames slowly, in chunks, directly
//! under their final names, next to stray files, while a `Follower` hands them out.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ndarray::Array2;
use tlr::source::follow::{FollowError, FollowEvent, FollowOptions, Follower};
use tlr_core::fits::{self, CardValue, OutputMeta, SampleFormat};

const STABLE: Duration = Duration::from_millis(150);

fn options() -> FollowOptions {
    FollowOptions {
        stable_for: STABLE,
        give_up_after: Duration::from_millis(1200),
        retries: 1,
        rescan_interval: Duration::from_millis(700),
        poll_interval: Duration::from_millis(100),
        ..FollowOptions::default()
    }
}

/// The bytes of a camera-like u16 frame (`rows` x `cols`) with a DATE-OBS, made by the crate's
/// own writer in `scratch`.
fn frame_bytes(scratch: &Path, seed: u32, date_obs: &str, rows: usize, cols: usize) -> Vec<u8> {
    let image = Array2::from_shape_fn((rows, cols), |(y, x)| {
        (1000 + (y * 7 + x * 13 + seed as usize * 31) % 3000) as f32
    });
    let meta = OutputMeta::default()
        .with_card(
            "DATE-OBS",
            CardValue::Str(date_obs.to_string()),
            "start of exposure",
        )
        .with_card(
            "CREATOR",
            CardValue::Str("tlr-simulate test".to_string()),
            "simulated capture",
        );
    let path = scratch.join(format!("scratch_{seed}.fits"));
    fits::write_image_atomic(&path, image.view(), SampleFormat::U16, &meta)
        .expect("writing a scratch frame");
    fs::read(&path).expect("reading a scratch frame back")
}

fn date(second: u32) -> String {
    format!("2026-11-27T21:{:02}:{:02}.000", second / 60, second % 60)
}

/// Writes `bytes` to `path` like a capture program without temp files: under the final name, in
/// chunks with pauses (the first chunk cuts the header in the middle). Returns when the last byte
/// is written.
fn write_slowly(path: &Path, bytes: &[u8], chunk: usize, pause: Duration) -> Instant {
    let mut file = fs::File::create(path).expect("creating a frame");
    let mut rest = bytes;
    let first = rest.len().min(1000);
    file.write_all(&rest[..first]).unwrap();
    file.flush().unwrap();
    rest = &rest[first..];
    while !rest.is_empty() {
        thread::sleep(pause);
        let n = rest.len().min(chunk);
        file.write_all(&rest[..n]).unwrap();
        file.flush().unwrap();
        rest = &rest[n..];
    }
    Instant::now()
}

/// One event as the consumer saw it.
#[derive(Debug)]
struct Seen {
    event: FollowEvent,
    at: Instant,
    /// File size when the event was returned (for `Ready`).
    size: Option<u64>,
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// Pulls events until `done` says so or `limit` passes; checks every `Ready` on the spot.
fn pull(
    follower: &mut Follower,
    limit: Duration,
    mut done: impl FnMut(&[Seen]) -> bool,
) -> Vec<Seen> {
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < limit && !done(&seen) {
        if let Some(event) = follower.next(Duration::from_millis(50)).expect("following") {
            let size = match &event {
                FollowEvent::Ready(h) => {
                    Some(fs::metadata(&h.path).expect("a ready frame exists").len())
                }
                FollowEvent::Skipped { .. } => None,
            };
            seen.push(Seen {
                event,
                at: Instant::now(),
                size,
            });
        }
    }
    seen
}

fn ready_names(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .filter_map(|s| match &s.event {
            FollowEvent::Ready(h) => Some(name(&h.path)),
            _ => None,
        })
        .collect()
}

fn skipped(seen: &[Seen]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for s in seen {
        if let FollowEvent::Skipped { path, reason } = &s.event {
            assert!(
                out.insert(name(path), reason.clone()).is_none(),
                "{} reported twice",
                path.display()
            );
        }
    }
    out
}

fn scratch_dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let watched = root.path().join("watched");
    let scratch = root.path().join("scratch");
    fs::create_dir(&watched).unwrap();
    fs::create_dir(&scratch).unwrap();
    (root, watched, scratch)
}

/// The capture simulation shared by the notify and the poll test. Returns the consumer's view,
/// the final sizes and completion times of the complete frames, and when the truncated frame
/// stopped growing.
struct Capture {
    seen: Vec<Seen>,
    sizes: BTreeMap<String, u64>,
    completed: BTreeMap<String, Instant>,
    truncated_at: Instant,
    started: Instant,
    /// Keeps the folders alive for the checks.
    _root: tempfile::TempDir,
}

fn run_capture(poll: bool, live_frames: u32) -> Capture {
    let (root, watched, scratch) = scratch_dirs();
    let mut sizes = BTreeMap::new();

    // Already in the folder at start: three frames whose names disagree with their time order,
    // plus strays of every kind.
    for (file, second) in [("m_c.fits", 1), ("m_a.fits", 3), ("m_b.fits", 2)] {
        let bytes = frame_bytes(&scratch, second, &date(second), 96, 128);
        fs::write(watched.join(file), &bytes).unwrap();
        sizes.insert(file.to_string(), bytes.len() as u64);
    }
    fs::write(watched.join("notes.txt"), "focus at 1234\n").unwrap();
    fs::write(
        watched.join("broken.fits"),
        "not a frame at all, but named like one\n",
    )
    .unwrap();
    fs::write(
        watched.join(".hidden.fits"),
        frame_bytes(&scratch, 90, &date(0), 96, 128),
    )
    .unwrap();
    let own = Array2::<f32>::from_elem((16, 16), 5.0);
    fits::write_image_atomic(
        &watched.join("mosaic.fits"),
        own.view(),
        SampleFormat::F32,
        &OutputMeta::tlr_output("mosaic"),
    )
    .unwrap();

    let mut opts = options();
    opts.poll = poll;
    let mut follower = Follower::new(&watched, opts).expect("following the folder");

    // The capture program: one frame every ~250 ms, each written in chunks over ~150 ms.
    let live: Vec<(String, Vec<u8>)> = (0..live_frames)
        .map(|i| {
            (
                format!("live_{i:03}.fits"),
                frame_bytes(&scratch, 10 + i, &date(10 + i), 160, 200),
            )
        })
        .collect();
    for (file, bytes) in &live {
        sizes.insert(file.clone(), bytes.len() as u64);
    }
    let truncated = frame_bytes(&scratch, 99, &date(99), 160, 200);
    let (done_tx, done_rx) = mpsc::channel::<(String, Instant)>();
    let dir = watched.clone();
    let capture = thread::spawn(move || {
        for (i, (file, bytes)) in live.iter().enumerate() {
            let finished = write_slowly(&dir.join(file), bytes, 8192, Duration::from_millis(20));
            done_tx.send((file.clone(), finished)).unwrap();
            match i {
                0 => fs::write(dir.join("capture.log"), "frame 0 saved\n").unwrap(),
                1 => {
                    write_slowly(
                        &dir.join(".live_002.fits.tmp"),
                        bytes,
                        8192,
                        Duration::from_millis(5),
                    );
                }
                2 => {
                    let at = write_slowly(
                        &dir.join("trunc.fits"),
                        &truncated[..truncated.len() * 3 / 5],
                        8192,
                        Duration::from_millis(20),
                    );
                    done_tx.send(("trunc.fits".to_string(), at)).unwrap();
                }
                3 => {
                    write_slowly(
                        &dir.join("live_x.fits.part"),
                        bytes,
                        8192,
                        Duration::from_millis(5),
                    );
                }
                _ => {}
            }
            thread::sleep(Duration::from_millis(100));
        }
    });

    let started = Instant::now();
    let expected_ready = 3 + live_frames as usize;
    let seen = pull(&mut follower, Duration::from_secs(12), |seen| {
        ready_names(seen).len() >= expected_ready
            && skipped(seen).contains_key("trunc.fits")
            && skipped(seen).contains_key("broken.fits")
    });
    capture.join().unwrap();
    // Nothing more may come: no second hand-out, no report about the strays.
    let late = pull(&mut follower, Duration::from_millis(500), |_| false);
    assert!(late.is_empty(), "unexpected late events: {late:?}");

    let mut completed = BTreeMap::new();
    let mut truncated_at = started;
    for (file, at) in done_rx.try_iter() {
        if file == "trunc.fits" {
            truncated_at = at;
        } else {
            completed.insert(file, at);
        }
    }
    Capture {
        seen,
        sizes,
        completed,
        truncated_at,
        started,
        _root: root,
    }
}

fn check_capture(c: &Capture, label: &str) {
    let names = ready_names(&c.seen);
    // The frames present at start come first, in DATE-OBS order (not name order).
    assert_eq!(
        names[..3],
        ["m_c.fits", "m_b.fits", "m_a.fits"],
        "{label}: first batch {names:?}"
    );
    // Every complete frame exactly once.
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(
        unique.len(),
        names.len(),
        "{label}: a frame was handed out twice: {names:?}"
    );
    let expected: BTreeSet<&String> = c.sizes.keys().collect();
    assert_eq!(unique, expected, "{label}: frames handed out");
    // Never before it was complete: the size when handed out is the final size, and the header
    // and pixels read fine at that moment.
    for s in &c.seen {
        if let FollowEvent::Ready(h) = &s.event {
            let file = name(&h.path);
            assert_eq!(
                s.size,
                Some(c.sizes[&file]),
                "{label}: {file} handed out at size {:?}",
                s.size
            );
            if let Some(done) = c.completed.get(&file) {
                assert!(
                    s.at >= *done,
                    "{label}: {file} handed out before its last byte was written"
                );
            }
            assert!(
                fits::read_image(&h.path).is_ok(),
                "{label}: {file} does not read"
            );
            assert_eq!(h.rows, if file.starts_with("live") { 160 } else { 96 });
        }
    }
    // Strays: the broken one and the truncated one are reported (once, checked by `skipped`);
    // text, hidden, temporary and own files are not.
    let skipped = skipped(&c.seen);
    assert_eq!(
        skipped.keys().collect::<Vec<_>>(),
        ["broken.fits", "trunc.fits"],
        "{label}: {skipped:?}"
    );
    assert!(
        skipped["broken.fits"].contains("not a FITS file"),
        "{label}: {}",
        skipped["broken.fits"]
    );
    assert!(
        skipped["trunc.fits"].contains("data ends after"),
        "{label}: {}",
        skipped["trunc.fits"]
    );
    // The truncated frame is given up only after `give_up_after` without change.
    let trunc_event = c
        .seen
        .iter()
        .find(
            |s| matches!(&s.event, FollowEvent::Skipped { path, .. } if name(path) == "trunc.fits"),
        )
        .unwrap();
    let waited = trunc_event.at.duration_since(c.truncated_at);
    assert!(
        waited >= options().give_up_after,
        "{label}: truncated frame given up after {waited:?}"
    );

    // Latency from the last written byte to Ready.
    let mut latencies: Vec<Duration> = c
        .seen
        .iter()
        .filter_map(|s| match &s.event {
            FollowEvent::Ready(h) => c
                .completed
                .get(&name(&h.path))
                .map(|done| s.at.duration_since(*done)),
            _ => None,
        })
        .collect();
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let max = *latencies.last().unwrap();
    eprintln!(
        "follow {label}: {} frames, completion -> Ready latency median {:.0} ms, max {:.0} ms (stable_for {} ms); truncated frame given up after {:.0} ms; run {:.1} s",
        latencies.len(),
        median.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        STABLE.as_millis(),
        waited.as_secs_f64() * 1e3,
        c.started.elapsed().as_secs_f64()
    );
    assert!(
        median >= STABLE * 9 / 10,
        "{label}: median latency {median:?} below stable_for"
    );
    assert!(max < Duration::from_secs(3), "{label}: latency {max:?}");
}

#[test]
fn follows_a_capture_with_file_events() {
    let c = run_capture(false, 8);
    check_capture(&c, "notify");
}

#[test]
fn follows_a_capture_with_the_poll_watcher() {
    let c = run_capture(true, 4);
    check_capture(&c, "poll");
}

/// Copies a frame into place at once (as a fast or atomic writer would).
fn put(dir: &Path, scratch: &Path, file: &str, seed: u32, second: u32) {
    fs::write(
        dir.join(file),
        frame_bytes(scratch, seed, &date(second), 32, 48),
    )
    .unwrap();
}

#[test]
fn mark_seen_slow_consumer_and_restart() {
    let (_root, watched, scratch) = scratch_dirs();
    for i in 0..4 {
        put(&watched, &scratch, &format!("f{i}.fits"), i, i);
    }
    let mut follower = Follower::new(&watched, options()).unwrap();
    // Checkpoint of an earlier session: f0 and f2 were used (any spelling of the folder).
    follower.mark_seen([watched.join("f0.fits"), watched.join("./f2.fits")]);
    let seen = pull(&mut follower, Duration::from_secs(3), |s| s.len() >= 2);
    assert_eq!(ready_names(&seen), ["f1.fits", "f3.fits"]);
    assert_eq!(follower.backlog(), 0);

    // A slow consumer: five frames arrive while nobody asks; names against time order.
    for i in 0..5u32 {
        put(
            &watched,
            &scratch,
            &format!("g{}.fits", 4 - i),
            10 + i,
            20 + i,
        );
    }
    thread::sleep(STABLE * 3);
    assert_eq!(
        follower.backlog(),
        0,
        "nothing is examined before `next` is called"
    );
    let first = follower.next(Duration::from_secs(2)).unwrap();
    assert!(matches!(first, Some(FollowEvent::Ready(_))), "{first:?}");
    assert!(
        follower.backlog() >= 4,
        "the other arrivals wait: backlog {}",
        follower.backlog()
    );
    let mut seen = vec![Seen {
        event: first.unwrap(),
        at: Instant::now(),
        size: None,
    }];
    seen.extend(pull(&mut follower, Duration::from_secs(3), |s| {
        s.len() >= 4
    }));
    // Completed together, so handed out in DATE-OBS order: g4 (20 s) ... g0 (24 s).
    assert_eq!(
        ready_names(&seen),
        ["g4.fits", "g3.fits", "g2.fits", "g1.fits", "g0.fits"]
    );
    drop(follower);

    // Restart with the checkpoint: nothing old again, only the new frame.
    put(&watched, &scratch, "h0.fits", 30, 30);
    let mut restarted = Follower::new(&watched, options()).unwrap();
    let used: Vec<PathBuf> = ["f0", "f1", "f2", "f3", "g0", "g1", "g2", "g3", "g4"]
        .iter()
        .map(|n| watched.join(format!("{n}.fits")))
        .collect();
    restarted.mark_seen(&used);
    let seen = pull(&mut restarted, Duration::from_secs(2), |_| false);
    assert_eq!(ready_names(&seen), ["h0.fits"], "{seen:?}");
}

#[test]
fn file_being_written_at_start_does_not_hold_the_first_batch() {
    let (_root, watched, scratch) = scratch_dirs();
    put(&watched, &scratch, "a.fits", 1, 1);
    let slow = frame_bytes(&scratch, 2, &date(0), 160, 200);
    let partial = &slow[..slow.len() / 2];
    fs::write(watched.join("b.fits"), partial).unwrap();
    let mut follower = Follower::new(&watched, options()).unwrap();
    let t0 = Instant::now();
    let first = follower.next(Duration::from_secs(2)).unwrap();
    match first {
        Some(FollowEvent::Ready(h)) => assert_eq!(name(&h.path), "a.fits"),
        other => panic!("expected a.fits first, got {other:?}"),
    }
    assert!(
        t0.elapsed() < Duration::from_millis(800),
        "first batch held for {:?}",
        t0.elapsed()
    );
    // The writer finishes b.fits (DATE-OBS earlier than a.fits, but it was not complete at start).
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(watched.join("b.fits"))
        .unwrap();
    file.write_all(&slow[slow.len() / 2..]).unwrap();
    drop(file);
    let seen = pull(&mut follower, Duration::from_secs(3), |s| !s.is_empty());
    assert_eq!(ready_names(&seen), ["b.fits"]);
    assert_eq!(seen[0].size, Some(slow.len() as u64));
}

#[test]
fn broken_rewritten_excluded_and_own_files() {
    let (_root, watched, scratch) = scratch_dirs();
    // The session's output, named in `exclude` before it exists (relative to the folder's parent).
    let opts = FollowOptions {
        exclude: vec![watched.join("..").join("watched").join("out.fits")],
        ..options()
    };
    let mut follower = Follower::new(&watched, opts).unwrap();
    put(&watched, &scratch, "out.fits", 9, 9);

    // All-NaN frame: reported once.
    let nan = Array2::<f32>::from_elem((20, 30), f32::NAN);
    fits::write_image_atomic(
        &watched.join("nan.fits"),
        nan.view(),
        SampleFormat::F32,
        &OutputMeta::default(),
    )
    .unwrap();
    // A frame, used, then rewritten: reported once as changed, never handed out again.
    put(&watched, &scratch, "used.fits", 1, 1);
    // A file named like a frame that is not one, later replaced by a real frame.
    fs::write(watched.join("late.fits"), vec![b'x'; 4000]).unwrap();
    let seen = pull(&mut follower, Duration::from_secs(3), |s| s.len() >= 3);
    assert_eq!(ready_names(&seen), ["used.fits"]);
    let skips = skipped(&seen);
    assert!(
        skips["nan.fits"].contains("every pixel is NaN"),
        "{skips:?}"
    );
    assert!(skips["late.fits"].contains("not a FITS file"), "{skips:?}");

    put(&watched, &scratch, "used.fits", 2, 2);
    put(&watched, &scratch, "late.fits", 3, 3);
    // tlr's own output, written repeatedly into the folder: never reported.
    for k in 0..3 {
        let own = Array2::<f32>::from_elem((16, 16), k as f32);
        fits::write_image_atomic(
            &watched.join("snapshot.fits"),
            own.view(),
            SampleFormat::F32,
            &OutputMeta::tlr_output("snapshot"),
        )
        .unwrap();
    }
    let seen = pull(&mut follower, Duration::from_secs(2), |_| false);
    assert_eq!(ready_names(&seen), ["late.fits"], "{seen:?}");
    let skips = skipped(&seen);
    assert_eq!(skips.keys().collect::<Vec<_>>(), ["used.fits"], "{skips:?}");
    assert!(
        skips["used.fits"].contains("changed on disk after it was used"),
        "{skips:?}"
    );
}

#[test]
fn errors_name_the_folder() {
    let (_root, watched, _scratch) = scratch_dirs();
    let missing = watched.join("no such folder");
    let err = Follower::new(&missing, options()).unwrap_err();
    assert!(matches!(err, FollowError::Folder { .. }), "{err:?}");
    assert!(err.to_string().contains("no such folder"), "{err}");

    let file = watched.join("a.fits");
    fs::write(&file, "x").unwrap();
    let err = Follower::new(&file, options()).unwrap_err();
    // The reason is the error's source (it is not repeated in its message).
    assert!(tlr_core::report(&err).contains("not a folder"), "{err}");

    let bad = FollowOptions {
        patterns: vec!["*.{fits".to_string()],
        ..options()
    };
    let err = Follower::new(&watched, bad).unwrap_err();
    assert!(matches!(err, FollowError::Pattern(_)), "{err:?}");

    let zero = FollowOptions {
        rescan_interval: Duration::ZERO,
        ..options()
    };
    assert!(matches!(
        Follower::new(&watched, zero),
        Err(FollowError::Options { .. })
    ));

    // The folder disappears while followed: an error naming it, not a panic; it recovers.
    let gone = watched.join("sub");
    fs::create_dir(&gone).unwrap();
    let mut follower = Follower::new(&gone, options()).unwrap();
    assert!(follower.next(Duration::from_millis(50)).unwrap().is_none());
    fs::remove_dir(&gone).unwrap();
    let start = Instant::now();
    let err = loop {
        match follower.next(Duration::from_millis(100)) {
            Err(e) => break e,
            Ok(_) if start.elapsed() < Duration::from_secs(3) => continue,
            Ok(other) => panic!("no error after the folder was removed: {other:?}"),
        }
    };
    assert!(err.to_string().contains("sub"), "{err}");
}

#[test]
fn relative_folder_path_is_followed_by_events() {
    let (_root, watched, scratch) = scratch_dirs();
    // The same folder spelled relative to the working directory (inotify reports absolute paths).
    let cwd = std::env::current_dir().unwrap();
    let mut relative = PathBuf::new();
    for _ in cwd.components().skip(1) {
        relative.push("..");
    }
    relative.push(watched.strip_prefix("/").unwrap());
    assert!(
        relative.is_relative() && relative.is_dir(),
        "{}",
        relative.display()
    );
    // No safety-net rescan during the test: the frame is found through file events.
    let opts = FollowOptions {
        rescan_interval: Duration::from_secs(60),
        ..options()
    };
    let mut follower = Follower::new(&relative, opts).unwrap();
    assert!(follower.next(Duration::from_millis(100)).unwrap().is_none());
    let bytes = frame_bytes(&scratch, 1, &date(1), 64, 64);
    let done = write_slowly(
        &watched.join("r.fits"),
        &bytes,
        4096,
        Duration::from_millis(10),
    );
    let seen = pull(&mut follower, Duration::from_secs(3), |s| !s.is_empty());
    assert_eq!(ready_names(&seen), ["r.fits"]);
    match &seen[0].event {
        FollowEvent::Ready(h) => assert_eq!(h.path, relative.join("r.fits")),
        other => panic!("{other:?}"),
    }
    assert!(
        seen[0].at.duration_since(done) < Duration::from_secs(2),
        "latency {:?}",
        seen[0].at.duration_since(done)
    );
}

#[test]
fn stale_files_at_start_are_decided_by_their_time_stamp() {
    let (_root, watched, scratch) = scratch_dirs();
    let frame = frame_bytes(&scratch, 1, &date(1), 64, 64);
    fs::write(watched.join("old.fits"), &frame).unwrap();
    fs::write(watched.join("dead.fits"), &frame[..frame.len() - 3000]).unwrap();
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for file in ["old.fits", "dead.fits"] {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(watched.join(file))
            .unwrap();
        f.set_modified(an_hour_ago).unwrap();
    }
    // Long waits: only the time stamps can make these decisions quick.
    let opts = FollowOptions {
        stable_for: Duration::from_secs(5),
        give_up_after: Duration::from_secs(60),
        ..options()
    };
    let mut follower = Follower::new(&watched, opts.clone()).unwrap();
    let t0 = Instant::now();
    let seen = pull(&mut follower, Duration::from_secs(3), |s| s.len() >= 2);
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        t0.elapsed()
    );
    assert_eq!(ready_names(&seen), ["old.fits"]);
    let skips = skipped(&seen);
    assert!(skips["dead.fits"].contains("data ends after"), "{skips:?}");

    // With the polling watcher (network shares, foreign clocks) time stamps are not trusted.
    let opts = FollowOptions {
        stable_for: Duration::from_millis(600),
        poll: true,
        ..opts
    };
    let mut follower = Follower::new(&watched, opts).unwrap();
    let t0 = Instant::now();
    let seen = pull(&mut follower, Duration::from_secs(3), |s| !s.is_empty());
    assert_eq!(ready_names(&seen), ["old.fits"]);
    assert!(
        t0.elapsed() >= Duration::from_millis(600),
        "took {:?}",
        t0.elapsed()
    );
}

/// Costs for the report (run with `cargo test -p tlr-core --test it measure_follow_costs -- --ignored --nocapture`):
/// examining one 2048x2048 frame, starting on a folder of frames, and the periodic rescan.
#[test]
#[ignore = "measurement, prints timings"]
fn measure_follow_costs() {
    let (_root, watched, scratch) = scratch_dirs();
    let big = frame_bytes(&scratch, 1, &date(1), 2048, 2048);
    let small = frame_bytes(&scratch, 2, &date(2), 256, 256);
    let frames = 20;
    for i in 0..frames {
        fs::write(watched.join(format!("big_{i:03}.fits")), &big).unwrap();
    }
    for i in 0..1000 {
        fs::write(watched.join(format!("small_{i:04}.fits")), &small).unwrap();
    }
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    for entry in fs::read_dir(&watched).unwrap() {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(entry.unwrap().path())
            .unwrap();
        f.set_modified(old).unwrap();
    }
    for check_pixels in [false, true] {
        let opts = FollowOptions {
            check_pixels,
            ..options()
        };
        let t0 = Instant::now();
        let mut follower = Follower::new(&watched, opts).unwrap();
        let t_new = t0.elapsed();
        let mut first = None;
        let mut n = 0;
        while n < frames + 1000 && t0.elapsed() < Duration::from_secs(20) {
            if let Some(event) = follower.next(Duration::from_millis(200)).unwrap() {
                assert!(matches!(event, FollowEvent::Ready(_)));
                first.get_or_insert_with(|| t0.elapsed());
                n += 1;
            }
        }
        let total = t0.elapsed();
        eprintln!(
            "follow costs (check_pixels {check_pixels}): new() on {} files {:.1} ms; first batch of {n} frames ({frames} of 2048x2048, 1000 of 256x256): first event after {:.0} ms, all after {:.0} ms ({:.2} ms per frame)",
            frames + 1000,
            t_new.as_secs_f64() * 1e3,
            first.unwrap().as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3 / n as f64
        );
        assert_eq!(n, frames + 1000);
    }
    // The rescan alone: a follower with a short rescan interval, idle on the folder of used files.
    let opts = FollowOptions {
        rescan_interval: Duration::from_millis(10),
        ..options()
    };
    let mut follower = Follower::new(&watched, opts).unwrap();
    follower.mark_seen(fs::read_dir(&watched).unwrap().map(|e| e.unwrap().path()));
    let t0 = Instant::now();
    let mut calls = 0;
    while t0.elapsed() < Duration::from_secs(1) {
        assert!(follower.next(Duration::from_millis(10)).unwrap().is_none());
        calls += 1;
    }
    eprintln!(
        "follow costs: {calls} idle next(10 ms) calls with a 10 ms rescan of 1020 files in 1 s"
    );
    // Examining one big frame directly.
    let path = watched.join("big_000.fits");
    let t0 = Instant::now();
    for _ in 0..20 {
        fits::read_header(&path).unwrap();
    }
    let header = t0.elapsed() / 20;
    let t0 = Instant::now();
    for _ in 0..5 {
        fits::read_image(&path).unwrap();
    }
    let full = t0.elapsed() / 5;
    eprintln!(
        "follow costs: 2048x2048 u16 frame: read_header {:.2} ms, full read {:.1} ms",
        header.as_secs_f64() * 1e3,
        full.as_secs_f64() * 1e3
    );
}

#[test]
fn header_rewritten_in_place_is_read_after_the_rewrite() {
    // Some writers complete the data, then update header keywords in place (cfitsio does at
    // close). The file is complete by length all along; only the quiet period finds the final header.
    let (_root, watched, scratch) = scratch_dirs();
    let image = Array2::from_shape_fn((64, 64), |(y, x)| (100 + y + x) as f32);
    let version = |object: &str, file: &str| {
        let meta = OutputMeta::default()
            .with_card("OBJECT", CardValue::Str(object.to_string()), "target")
            .with_card("DATE-OBS", CardValue::Str(date(5)), "start");
        let path = scratch.join(file);
        fits::write_image_atomic(&path, image.view(), SampleFormat::U16, &meta).unwrap();
        fs::read(&path).unwrap()
    };
    let draft = version("draft", "d.fits");
    let fin = version("final", "f.fits");
    assert_eq!(draft.len(), fin.len());
    assert_eq!(draft[2880..], fin[2880..]);

    // A quiet period far longer than the writer's pause: a loaded machine (CI shares two cores with
    // builds) may stall this thread for hundreds of milliseconds between the write and the rewrite.
    let mut follower = Follower::new(
        &watched,
        FollowOptions {
            stable_for: Duration::from_secs(3),
            give_up_after: Duration::from_secs(10),
            ..options()
        },
    )
    .unwrap();
    let path = watched.join("rewritten.fits");
    fs::write(&path, &draft).unwrap();
    for _ in 0..3 {
        // Keep the follower busy while the writer pauses (shorter than stable_for).
        assert!(follower.next(Duration::from_millis(30)).unwrap().is_none());
    }
    let mut file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all(&fin[..2880]).unwrap();
    drop(file);
    let seen = pull(&mut follower, Duration::from_secs(8), |s| !s.is_empty());
    match &seen[..] {
        [Seen {
            event: FollowEvent::Ready(h),
            ..
        }] => assert_eq!(h.object.as_deref(), Some("final")),
        other => panic!("{other:?}"),
    }
}
