#!/usr/bin/env python3
"""Serial work of one `tlr run` from CPU samples, not from wall time (so it does not depend on the
machine's load): which threads spend how many CPU-seconds before the global pass's first star
detection (scan and the first frame's read, while the workers have nothing to do) and after the last
tile's numerics (writing, previews, the result's FWHM), and what they run there.

Record and analyse (any binary with symbols, e.g. target/release/tlr):

    perf record -F 997 -e cpu-clock -o run.perf tlr run FRAMES -o out.fits --parallel-tiles 2
    perf script -i run.perf -F tid,time,ip,sym > run.script
    python3 stages/benches/scripts/serial_perf.py run.script 997

Each sample is 1/F CPU-seconds of one thread. Phase edges are symbols: the first sample in
`tlr_core::stars::` opens the global pass; the last sample in `tlr_core::{register,resample,operator}::`
closes the tile phase. What it does not: tell how long a phase took on the wall clock, or split the
global pass and the tile phase themselves (the pipeline bench's per-phase report does that).
"""

import collections
import re
import sys

TILE = re.compile(r"tlr_core::(register|resample|operator)::")
STARS = "tlr_core::stars::"


def kind(symbol):
    for name, key in (
        ("stars", STARS),
        ("png", "png::"),
        ("deflate", "deflate"),
        ("preview", "preview"),
        ("fits", "fits"),
    ):
        if key in symbol:
            return name
    return "other"


def report(title, rows, rate):
    threads = collections.defaultdict(collections.Counter)
    for tid, _, symbol in rows:
        threads[tid][kind(symbol)] += 1
    print(f"{title}: {len(rows) / rate:.3f} CPU-s on {len(threads)} threads")
    for tid, counts in sorted(threads.items(), key=lambda kv: -sum(kv[1].values())):
        parts = ", ".join(f"{k} {v / rate:.3f}" for k, v in counts.most_common())
        print(f"  thread {tid}: {sum(counts.values()) / rate:.3f} CPU-s ({parts})")


def main():
    path, rate = sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 997.0
    rows = []
    for line in open(path):
        parts = line.split(None, 3)
        if len(parts) < 2:
            continue
        symbol = re.sub(r"::h[0-9a-f]{16}", "", parts[3].strip()) if len(parts) > 3 else ""
        rows.append((int(parts[0]), float(parts[1].rstrip(":")), symbol))
    rows.sort(key=lambda r: r[1])
    first_detection = min(t for _, t, s in rows if STARS in s)
    last_tile = max(t for _, t, s in rows if TILE.search(s))
    print(f"whole run: {len(rows) / rate:.3f} CPU-s")
    report("before the first star detection", [r for r in rows if r[1] < first_detection], rate)
    report("after the last tile numerics", [r for r in rows if r[1] > last_tile], rate)


if __name__ == "__main__":
    main()
