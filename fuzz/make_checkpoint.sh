#!/bin/sh
# Writes a real live checkpoint for the `checkpoint` fuzz target: simulates 12 frames of 128x128 px,
# follows them with `tlr watch` until idle, and copies the checkpoint folder's files to
# fuzz/checkpoint_files/ (state and reference files, read by the target) and its checkpoint.json to
# fuzz/seeds/checkpoint/ (the seed). Usage: fuzz/make_checkpoint.sh [path/to/tlr]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tlr=${1:-"$here/../target/release/tlr"}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$tlr" simulate --frames 12 --width 128 --height 128 "$work/frames" >/dev/null
"$tlr" watch -q --until-idle 3 --stable-ms 100 -o "$work/out/result.fits" "$work/frames"
rm -rf "$here/checkpoint_files"
mkdir -p "$here/checkpoint_files" "$here/seeds/checkpoint"
cp "$work/out/result.fits.checkpoint/"* "$here/checkpoint_files/"
cp "$here/checkpoint_files/checkpoint.json" "$here/seeds/checkpoint/checkpoint.json"
ls -l "$here/checkpoint_files"
