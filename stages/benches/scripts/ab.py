# Alternating before/after comparison of two tlr binaries on one folder of frames: whole-process wall
# time, in-pipeline time (elapsed_s of the summary), and two serial phases (global_done -> first
# tile_done; finished -> exit), per worker count, with the 1 -> 2 worker speed-ups of each binary.
# Usage: python3 ab.py FRAMES_DIR ROUNDS BASE_BIN NEW_BIN   (outputs go to a temporary folder)
import subprocess, sys, time, json, os, statistics as st, tempfile
data, rounds = sys.argv[1], int(sys.argv[2])
bins = {'base': sys.argv[3], 'new': sys.argv[4]}
out_dir = tempfile.mkdtemp(prefix='tlr-ab-')
res = {}
def one(b, w):
    t0 = time.monotonic(); marks = {}
    p = subprocess.Popen([bins[b], 'run', data, '-o', os.path.join(out_dir, f'ab-{b}.fits'), '--json', '--parallel-tiles', str(w)], stdout=subprocess.PIPE, text=True)
    for line in p.stdout:
        j = json.loads(line); ev = j['event']; t = time.monotonic() - t0
        if ev == 'tile_done':
            if j['done'] == 1: marks['first_tile'] = t
        elif ev == 'finished': marks['finished'] = t; marks['elapsed'] = j['summary']['elapsed_s']
        else: marks[ev] = t
    p.wait(); T = time.monotonic() - t0
    return dict(wall=T, pipe=marks['elapsed'], fill=marks['first_tile'] - marks['global_done'], tail=T - marks['finished'])
for r in range(rounds):
    for w in ([1, 2] if r % 2 == 0 else [2, 1]):
        for b in (['base', 'new'] if r % 2 == 0 else ['new', 'base']):
            f = one(b, w); res.setdefault((b, w), []).append(f)
            print(f'round {r} {b:4} w{w}: ' + ' '.join(f'{k} {v:.2f}' for k, v in f.items()), flush=True)
for w in (1, 2):
    for b in ('base', 'new'):
        L = res[(b, w)]
        print(f'median {b:4} w{w}: ' + ' '.join(f'{k} {st.median(x[k] for x in L):.2f}' for k in L[0]))
for b in ('base', 'new'):
    s = [a['wall'] / c['wall'] for a, c in zip(res[(b, 1)], res[(b, 2)])]
    p = [a['pipe'] / c['pipe'] for a, c in zip(res[(b, 1)], res[(b, 2)])]
    print(f'{b}: speed-up whole {st.median(s):.2f}x ({min(s):.2f}-{max(s):.2f}), in-pipeline {st.median(p):.2f}x ({min(p):.2f}-{max(p):.2f})')
for w in (1, 2):
    r = [n['pipe'] / o['pipe'] for o, n in zip(res[('base', w)], res[('new', w)])]
    print(f'w{w}: in-pipeline time new/base {st.median(r):.3f} ({min(r):.3f}-{max(r):.3f})')
