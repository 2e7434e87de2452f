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
