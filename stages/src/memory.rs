//! The memory guard of `v4.memory_limits`: reads the process's resident set size and warns once above
//! `rss_warn_mb`, stops the run above `rss_abort_mb`.
//!
//! What it does not: limit allocations itself. Memory is bounded by design (block budget, channel
//! capacities); this guard is the safety net the methodology asks for. On systems without
//! `/proc/self/statm` it measures nothing and never fires.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::StageError;
use crate::events::{Event, EventSink};

/// Resident set size of this process in bytes, when the platform tells it.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(resident_pages * u64::try_from(page).ok()?)
}

/// Peak resident set size (VmHWM) of this process in bytes, when the platform tells it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Checks the RSS against the configured limits. Cheap to clone; warns at most once per run.
#[derive(Clone)]
pub struct MemoryGuard {
    warn_mb: u64,
    abort_mb: u64,
    warned: Arc<AtomicBool>,
    events: EventSink,
}

impl MemoryGuard {
    /// A guard with limits in MB (1 MB = 2^20 bytes).
    pub fn new(warn_mb: u64, abort_mb: u64, events: EventSink) -> Self {
        Self {
            warn_mb,
            abort_mb,
            warned: Arc::new(AtomicBool::new(false)),
            events,
        }
    }

    /// Measures now.
    ///
    /// # Errors
    /// [`StageError::Memory`] when the RSS exceeds the abort limit.
    pub fn check(&self) -> Result<(), StageError> {
        let Some(rss) = rss_bytes() else {
            return Ok(());
        };
        let rss_mb = rss >> 20;
        if rss_mb > self.abort_mb {
            return Err(StageError::Memory {
                rss_mb,
                limit_mb: self.abort_mb,
            });
        }
        if rss_mb > self.warn_mb && !self.warned.swap(true, Ordering::Relaxed) {
            (self.events)(&Event::Warning {
                message: format!(
                    "memory use {rss_mb} MB exceeds v4.memory_limits.rss_warn_mb = {} MB",
                    self.warn_mb
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn rss_is_measured_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(rss_bytes().unwrap() > 0);
            assert!(peak_rss_bytes().unwrap() >= rss_bytes().unwrap() / 2);
        }
    }

    #[test]
    fn abort_and_warn_limits() {
        if rss_bytes().is_none() {
            return;
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink_seen = Arc::clone(&seen);
        let sink: EventSink = Arc::new(move |e| sink_seen.lock().unwrap().push(format!("{e:?}")));
        let guard = MemoryGuard::new(0, u64::MAX, sink);
        guard.check().unwrap();
        guard.check().unwrap();
        assert_eq!(seen.lock().unwrap().len(), 1, "warns exactly once");
        let strict = MemoryGuard::new(0, 0, Arc::new(|_| {}));
        assert!(matches!(strict.check(), Err(StageError::Memory { .. })));
    }
}
