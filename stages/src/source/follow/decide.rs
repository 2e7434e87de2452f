//! The completion policy of the follower: per file, the state it is in (pending, queued, used, skipped,
//! ignored), when it is examined next, and when it is handed out, retried or reported as skipped (the
//! rules are listed in the [module docs](super)).
//! What it does not: watch the folder (the follower's watcher does) or read pixels beyond the checks
//! of [`super::examine`].

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use tlr_core::fits::FrameHeader;
use tlr_core::scan;

/// Extra age an mtime must have before a file counts as quiet without waiting (FAT stores times
/// in 2 s steps).
const MTIME_GRANULARITY: Duration = Duration::from_secs(2);
/// Shortest interval between two examinations of one file.
const MIN_RECHECK: Duration = Duration::from_millis(20);

/// What identifies one version of a file's content, cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sig {
    len: u64,
    mtime: Option<SystemTime>,
    inode: u64,
}

impl Sig {
    pub(super) fn of(meta: &fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Self {
            len: meta.len(),
            mtime: meta.modified().ok(),
            inode,
        }
    }
}

/// A file seen but not decided yet.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    /// Last observed signature (`None` before the first successful `stat`).
    pub(super) sig: Option<Sig>,
    /// When the file was last seen changing (latest event or observed change).
    pub(super) since: Instant,
    /// When to examine it next.
    pub(super) due: Instant,
    /// Broken verdicts in a row while quiet.
    pub(super) broken: u32,
    /// Present when the follower started and not yet decided: part of the first batch.
    pub(super) initial: bool,
}

#[derive(Debug, Clone)]
pub(super) enum State {
    /// Seen, not decided.
    Pending(Pending),
    /// Complete; its header waits in the output queue.
    Queued { sig: Sig },
    /// Handed out or marked seen: never handed out again.
    Used {
        sig: Option<Sig>,
        change_reported: bool,
    },
    /// Reported as skipped; looked at again only if it changes.
    Skipped { sig: Option<Sig> },
    /// Ignored silently (own output, sub-folder); looked at again only if it changes.
    Ignored { sig: Option<Sig> },
}

/// The options [`Follower::check`] needs, copied out so the entry can stay borrowed.
#[derive(Clone, Copy)]
pub(super) struct Limits {
    stable_for: Duration,
    give_up_after: Duration,
    retries: u32,
    poll: bool,
    check_pixels: bool,
}

impl Limits {
    pub(super) fn of(o: &FollowOptions) -> Self {
        Self {
            stable_for: o.stable_for,
            give_up_after: o.give_up_after,
            retries: o.retries,
            poll: o.poll,
            check_pixels: o.check_pixels,
        }
    }
}

use super::examine::{classify, examine, peek, Examined, Trouble};
use super::{FollowEvent, FollowOptions, Follower};

impl Follower {
    /// Records that `name` may have changed: `at` is the time of a change event (`None` when the
    /// file was only listed).
    pub(super) fn touch(&mut self, name: OsString, at: Option<Instant>, now: Instant) {
        if !self.wanted(&name) {
            return;
        }
        let meta = fs::metadata(self.dir.join(&name));
        let stable_for = self.options.stable_for;
        match self.entries.get_mut(&name) {
            None => {
                let Ok(meta) = meta else { return };
                let state = if meta.is_file() {
                    let sig = Sig::of(&meta);
                    State::Pending(Pending {
                        sig: Some(sig),
                        since: at.unwrap_or(now),
                        due: now,
                        broken: 0,
                        initial: false,
                    })
                } else {
                    State::Ignored { sig: None }
                };
                self.entries.insert(name, state);
            }
            Some(State::Pending(p)) => match meta {
                Ok(meta) => {
                    let sig = Sig::of(&meta);
                    let changed = p.sig != Some(sig);
                    if changed {
                        p.sig = Some(sig);
                        p.since = at.unwrap_or(now);
                        p.broken = 0;
                    }
                    if let Some(at) = at {
                        // A change event: the file changed at (or just before) `at`.
                        p.since = p.since.max(at);
                    }
                    if changed || at.is_some() {
                        // Debounce: examine it only once it has been quiet for `stable_for`.
                        p.due = p.since + stable_for;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let initial = p.initial;
                    self.entries.remove(&name);
                    if initial {
                        self.close_initial_if_done();
                    }
                }
                Err(_) => p.due = p.due.min(now),
            },
            Some(State::Queued { .. }) => {} // verified when handed out
            Some(State::Used {
                sig,
                change_reported,
            }) => {
                if let Ok(meta) = meta {
                    let new = Sig::of(&meta);
                    match sig {
                        None => *sig = Some(new),
                        Some(old) if *old != new && !*change_reported => {
                            *change_reported = true;
                            let path = self.dir.join(&name);
                            self.out.push_back(FollowEvent::Skipped {
                                reason: format!(
                                    "frame `{}`: changed on disk after it was used; the new content is not used (every file is used once)",
                                    path.display()
                                ),
                                path,
                            });
                        }
                        Some(_) => {}
                    }
                }
            }
            Some(State::Skipped { sig } | State::Ignored { sig }) => match meta {
                Ok(meta) => {
                    let new = Sig::of(&meta);
                    if sig.is_some_and(|old| old != new) && meta.is_file() {
                        // Changed since it was set aside: a new file under an old name.
                        self.entries.insert(
                            name,
                            State::Pending(Pending {
                                sig: Some(new),
                                since: at.unwrap_or(now),
                                due: now,
                                broken: 0,
                                initial: false,
                            }),
                        );
                    } else if sig.is_none() {
                        *sig = Some(new);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.entries.remove(&name);
                }
                Err(_) => {}
            },
        }
    }

    // ---------------------------------------------------------------------------------------
    // Examination
    // ---------------------------------------------------------------------------------------

    /// Whether a pending entry may be examined now (during the first batch, only its files).
    fn eligible(&self, p: &Pending) -> bool {
        !self.initial_open || p.initial
    }

    pub(super) fn earliest_due(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|s| match s {
                State::Pending(p) if self.eligible(p) => Some(p.due),
                _ => None,
            })
            .min()
    }

    /// Examines every due file (at least one, then until `deadline`); frames found complete in
    /// this round are queued in scan order.
    pub(super) fn run_due(&mut self, deadline: Instant) {
        let now = Instant::now();
        let mut due: Vec<(Instant, OsString)> = self
            .entries
            .iter()
            .filter_map(|(name, s)| match s {
                State::Pending(p) if self.eligible(p) && p.due <= now => {
                    Some((p.due, name.clone()))
                }
                _ => None,
            })
            .collect();
        due.sort();
        let mut round = Vec::new();
        for (i, (_, name)) in due.into_iter().enumerate() {
            if i > 0 && Instant::now() >= deadline {
                break;
            }
            if let Some(header) = self.check(&name) {
                round.push(header);
            }
        }
        if self.initial_open {
            self.initial_batch.append(&mut round);
            self.close_initial_if_done();
        } else {
            scan::sort_frames(&mut round);
            self.out.extend(round.into_iter().map(FollowEvent::Ready));
        }
    }

    /// Ends the first batch once none of its files is undecided: releases it in scan order.
    fn close_initial_if_done(&mut self) {
        if !self.initial_open {
            return;
        }
        let open = self
            .entries
            .values()
            .any(|s| matches!(s, State::Pending(p) if p.initial));
        if open {
            return;
        }
        self.initial_open = false;
        let mut batch = std::mem::take(&mut self.initial_batch);
        scan::sort_frames(&mut batch);
        self.out.extend(batch.into_iter().map(FollowEvent::Ready));
    }

    /// Examines one pending file; returns its header when it is complete.
    fn check(&mut self, name: &OsStr) -> Option<FrameHeader> {
        let path = self.dir.join(name);
        let now = Instant::now();
        let opts = Limits::of(&self.options);
        let recheck = opts.stable_for.max(MIN_RECHECK);
        let started = self.started;
        let Some(State::Pending(p)) = self.entries.get_mut(name) else {
            return None;
        };

        let meta = match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => meta,
            Ok(meta) => {
                let sig = Some(Sig::of(&meta));
                self.entries
                    .insert(name.to_os_string(), State::Ignored { sig });
                return None;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.entries.remove(name);
                return None;
            }
            Err(e) => {
                // Cannot even stat it (permissions, network share): like an incomplete file.
                p.initial = false;
                if now.duration_since(p.since) >= opts.give_up_after {
                    let reason = format!(
                        "frame `{}`: cannot read it: {e}; gave up after {:.1} s",
                        path.display(),
                        opts.give_up_after.as_secs_f64()
                    );
                    self.skip(name, path, None, reason);
                } else {
                    p.due = now + recheck;
                }
                return None;
            }
        };
        let sig = Sig::of(&meta);
        if p.sig != Some(sig) {
            p.sig = Some(sig);
            p.since = now;
            p.broken = 0;
        }
        // How long it has been unchanged: by our own observation, or (without `poll`) by its
        // time stamp, so a stale file found at start need not be watched for the full time.
        let mtime_age = match (opts.poll, sig.mtime) {
            (false, Some(m)) => SystemTime::now()
                .duration_since(m)
                .map_or(Duration::ZERO, |age| age.saturating_sub(MTIME_GRANULARITY)),
            _ => Duration::ZERO,
        };
        let unchanged_for = now.duration_since(p.since).max(mtime_age);
        let quiet = unchanged_for >= opts.stable_for;
        if !quiet {
            if p.initial && (p.since > started || matches!(peek(&path), Some(Trouble::Incomplete)))
            {
                // Changed since the start, or still being written: it joins the later frames
                // instead of holding the first batch.
                p.initial = false;
            }
            p.due = p.since + opts.stable_for;
            return None;
        }

        match examine(&path, opts.check_pixels) {
            Ok(Examined::Frame(header)) => {
                // Unchanged while it was read? Otherwise wait again.
                match fs::metadata(&path) {
                    Ok(m) if Sig::of(&m) == sig => {
                        self.entries
                            .insert(name.to_os_string(), State::Queued { sig });
                        Some(*header)
                    }
                    _ => {
                        p.since = now;
                        p.due = now + recheck;
                        None
                    }
                }
            }
            Ok(Examined::OwnOutput) => {
                self.entries
                    .insert(name.to_os_string(), State::Ignored { sig: Some(sig) });
                None
            }
            Err(e) => {
                p.initial = false;
                match classify(&e, &path) {
                    Trouble::Incomplete => {
                        if unchanged_for >= opts.give_up_after {
                            let reason = format!(
                                "{}; unchanged for {:.1} s, so it is skipped (looked at again if it changes)",
                                tlr_core::report(&e),
                                unchanged_for.as_secs_f64()
                            );
                            self.skip(name, path, Some(sig), reason);
                        } else {
                            p.due = now + recheck;
                        }
                    }
                    Trouble::Broken => {
                        p.broken += 1;
                        if p.broken > opts.retries {
                            self.skip(name, path, Some(sig), tlr_core::report(&e));
                        } else {
                            p.due = now + recheck;
                        }
                    }
                }
                None
            }
        }
    }

    fn skip(&mut self, name: &OsStr, path: PathBuf, sig: Option<Sig>, reason: String) {
        self.entries
            .insert(name.to_os_string(), State::Skipped { sig });
        self.out.push_back(FollowEvent::Skipped { path, reason });
    }

    /// Pops the next event; a queued frame is verified unchanged first.
    pub(super) fn pop_event(&mut self) -> Option<FollowEvent> {
        while let Some(event) = self.out.pop_front() {
            let header = match event {
                FollowEvent::Ready(header) => header,
                other => return Some(other),
            };
            let Some(name) = header.path.file_name().map(OsStr::to_os_string) else {
                continue;
            };
            let Some(State::Queued { sig }) = self.entries.get(&name) else {
                continue; // marked seen meanwhile
            };
            let sig = *sig;
            let now = Instant::now();
            match fs::metadata(&header.path) {
                Ok(meta) if Sig::of(&meta) == sig => {
                    self.entries.insert(
                        name,
                        State::Used {
                            sig: Some(sig),
                            change_reported: false,
                        },
                    );
                    return Some(FollowEvent::Ready(header));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.entries.remove(&name);
                    return Some(FollowEvent::Skipped {
                        reason: format!(
                            "frame `{}`: removed before it was used",
                            header.path.display()
                        ),
                        path: header.path,
                    });
                }
                other => {
                    // Changed (or unreadable) since it was examined: examine it again later.
                    let sig = other.ok().map(|m| Sig::of(&m));
                    let pending = Pending {
                        sig,
                        since: now,
                        due: now + self.options.stable_for,
                        broken: 0,
                        initial: false,
                    };
                    self.entries.insert(name, State::Pending(pending));
                }
            }
        }
        None
    }
}
