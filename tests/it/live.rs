//! Runs the live-session example (frames pushed from memory) as a test.

#[path = "../../examples/live_session.rs"]
mod live_session;

#[test]
fn live_session_example_uses_every_frame_and_is_sharp() {
    let (used, fwhm) = live_session::run(16).expect("example runs");
    // 6 bootstrap frames + 10 pushed later: each used once (FrameUsed events).
    assert_eq!(used, 16);
    assert!(fwhm.is_finite() && fwhm < 4.5, "FWHM {fwhm}");
}

mod checkpoint {
    use tlr_core::global::GlobalPass;
    use tlr_core::live::{BootstrapFrame, CompactImage, LiveOptions, LiveState, CHECKPOINT_JSON};
    use tlr_core::operator::OperatorParams;
    use tlr_core::simulate::{Scenario, SimConfig, Simulation};

    fn started() -> (Simulation, GlobalPass, LiveState) {
        let sim = Simulation::new(SimConfig {
            frames: 8,
            width: 192,
            height: 192,
            seed: 7,
            scenario: Scenario::Seeing,
            ..SimConfig::default()
        });
        let mut pass = GlobalPass::new();
        let frames: Vec<BootstrapFrame> = (0..5)
            .map(|i| {
                let image = sim.frame(i);
                let measured = pass.add_frame_detailed(image.view());
                BootstrapFrame {
                    name: format!("f{i:03}.fits"),
                    image: CompactImage::new(image),
                    quality: measured.quality,
                    transform: measured.transform,
                }
            })
            .collect();
        let mut options = LiveOptions::new(OperatorParams {
            min_valid_frames: 5,
            ..OperatorParams::default()
        });
        options.bootstrap_frames = 5;
        let (state, _) = LiveState::bootstrap(&frames, options).expect("bootstrap");
        (sim, pass, state)
    }

    /// Item 12: a frame's reason is the full text (numbers included), never cut with "…".
    #[test]
    fn frame_reasons_are_never_cut() {
        let (sim, mut pass, mut state) = started();
        // Good global qualities with frames that tiles reject: a flat frame (nothing to register)
        // and a frame whose right half moved by 9 px (local shifts far from the recent ones).
        let quality = pass.add_frame_detailed(sim.frame(5).view());
        let flat = sim.frame(5).mapv(|_| 1000.0);
        let mut torn = sim.frame(6);
        let (rows, cols) = torn.dim();
        let source = torn.clone();
        for r in 0..rows {
            for c in cols / 2..cols {
                torn[[r, c]] = source[[(r + 9) % rows, c]];
            }
        }
        let mut reasons = Vec::new();
        for (name, image) in [("flat.fits", flat), ("torn.fits", torn)] {
            match state.add_frame(name, image.view(), &quality) {
                Ok(report) => reasons.extend(report.reason),
                Err(reason) => panic!("{name} planned: {reason}"),
            }
        }
        assert!(!reasons.is_empty(), "some tile rejected a frame");
        for reason in &reasons {
            assert!(!reason.contains('…'), "{reason}");
        }
    }

    /// An old-format checkpoint is refused with a message pointing to `--fresh`; any file content is
    /// an error, never a panic.
    #[test]
    fn old_or_damaged_checkpoints_are_errors() {
        let dir = tempfile::tempdir().expect("tmp");
        let (_, _, mut state) = started();
        state.save(dir.path(), None).expect("save");
        let json = dir.path().join(CHECKPOINT_JSON);
        let text = std::fs::read_to_string(&json).expect("json");
        let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
        // A frame name reaching outside the folder (a crafted file) is refused.
        let mut crafted = v.clone();
        crafted["source"]["frames"] = serde_json::json!([{
            "name": "../../etc/passwd", "size": 1, "mtime_ns": 0, "header_sha256": ""
        }]);
        std::fs::write(&json, crafted.to_string()).expect("write");
        let err = LiveState::load(dir.path()).expect_err("crafted name");
        assert!(err.to_string().contains("plain"), "{err}");
        // Tile bounds that overflow (`y0 + h` past usize::MAX) are an error, not a panic or a wrap.
        let mut crafted = v.clone();
        crafted["tiles"][0]["tile"]["y0"] = serde_json::json!(u64::MAX);
        std::fs::write(&json, crafted.to_string()).expect("write");
        let err = LiveState::load(dir.path()).expect_err("overflowing tile");
        assert!(err.to_string().contains("does not fit"), "{err}");
        v["version"] = serde_json::json!(2);
        std::fs::write(&json, v.to_string()).expect("write");
        let err = LiveState::load(dir.path()).expect_err("old version");
        assert!(err.to_string().contains("--fresh"), "{err}");
        for bad in [
            "",
            "[]",
            "{\"version\":3}",
            "{\"version\":3,\"rows\":-1}",
            "null",
            "\u{0}",
        ] {
            std::fs::write(&json, bad).expect("write");
            assert!(LiveState::load(dir.path()).is_err(), "{bad:?}");
        }
    }
}
