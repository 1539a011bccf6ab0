#!/usr/bin/env bash
# Benchmark package import: `treeline pkg import` (verify + unpack into the store, one
# commit per package) against extracting the same files with the reference tools
# (`tar -xzf` for .apk, `dpkg-deb -x` for .deb), sequentially and on all cores.
# Then, if bench/pkg-resolve.sh exists, the resolver benchmark (treeline vs apk and apt).
#
# Inputs:  the 100 signed Alpine 3.19 ISO packages from $TREELINE_TEST_DATA, and a few
#          hundred Debian packages: every package installed on this host, fetched with
#          `apt-get download` (the host's configured mirror) into the work dir, or the
#          .debs of DEBS_DIR if given.
# Output:  per input set: packages, MB, wall time, peak RSS, packages/s, MB/s, and the
#          ratio treeline/reference (below 1 = treeline faster).
#
# Usage:   bench/pkg.sh [--workdir DIR]
# Env:     TREELINE_BIN (use this binary instead of building), TREELINE_TEST_DATA,
#          BENCH_WORKDIR (kept between runs: downloads are cached there), DEBS_DIR,
#          MAX_DEBS (300).
#
# Not a test: CI does not run it. Numbers are noisy on a shared machine.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA=${TREELINE_TEST_DATA:-$REPO_ROOT/../shared/data}
WORK=${BENCH_WORKDIR:-}
MAX_DEBS=${MAX_DEBS:-300}
die() { echo "pkg.sh: error: $*" >&2; exit 1; }
note() { echo "pkg.sh: $*" >&2; }

while [ $# -gt 0 ]; do
    case $1 in
        --workdir) WORK=${2:?--workdir needs a directory}; shift 2 ;;
        --workdir=*) WORK=${1#*=}; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

APKS=$DATA/alpine/v3.19-standard-iso-apks/x86_64
[ -d "$APKS" ] || die "test data missing: $APKS (set TREELINE_TEST_DATA)"
command -v /usr/bin/time >/dev/null || die "/usr/bin/time is needed (apt-get install time)"

if [ -z "${TREELINE_BIN:-}" ]; then
    (cd "$REPO_ROOT" && cargo build --release --locked -q) || die "build failed"
    TREELINE_BIN=$REPO_ROOT/target/release/treeline
fi
if [ -z "$WORK" ]; then
    WORK=$(mktemp -d /var/tmp/treeline-bench-pkg.XXXXXX)
fi
mkdir -p "$WORK"

if [ -z "${DEBS_DIR:-}" ]; then
    DEBS_DIR=$WORK/debs
    mkdir -p "$DEBS_DIR"
    if [ -z "$(ls "$DEBS_DIR"/*.deb 2>/dev/null | head -1)" ]; then
        note "downloading up to $MAX_DEBS Debian packages (the host's installed set) into $DEBS_DIR"
        dpkg-query -W -f '${Package}\n' | sort -u | head -n "$MAX_DEBS" >"$WORK/deb-names"
        # One name at a time: a package no longer in the archive must not stop the rest.
        (cd "$DEBS_DIR" && xargs -a "$WORK/deb-names" -n 20 apt-get download -q >/dev/null 2>&1 || true)
    fi
fi
DEBS=$(ls "$DEBS_DIR"/*.deb 2>/dev/null | head -n "$MAX_DEBS")
[ -n "$DEBS" ] || die "no .deb files in $DEBS_DIR"

# run LABEL CMD...: runs once in a fresh state, prints "wall_s rss_kb".
measure() {
    local out=$WORK/time.$$
    sync
    /usr/bin/time -f '%e %M' -o "$out" "$@" >/dev/null 2>"$WORK/stderr.$$" || {
        head -c 2000 "$WORK/stderr.$$" >&2; die "failed: ${*:1:3} ..."; }
    cat "$out"
}

row() { # set tool wall rss_kb pkgs mb reference_wall (0: none)
    awk -v set="$1" -v tool="$2" -v w="$3" -v rss="$4" -v n="$5" -v mb="$6" -v ref="$7" 'BEGIN {
        ratio = (ref > 0 ? sprintf("%.2fx", w / ref) : "")
        printf "%-8s %-30s %8.2f %9.1f %9.1f %9.1f %s\n", set, tool, w, rss / 1024, n / w, mb / w, ratio
    }'
}

# Each package goes to its own directory, so parallel extractions never race on a path.
extract_one() { # dest file
    local to=$1/$(basename "$2")
    mkdir -p "$to"
    case $2 in
        *.apk) tar -xzf "$2" -C "$to" --warning=no-unknown-keyword ;;
        *.deb) dpkg-deb -x "$2" "$to" ;;
    esac
}
export -f extract_one

printf '%-8s %-30s %8s %9s %9s %9s %s\n' set tool wall_s rss_MiB pkgs/s MB/s vs_sequential
for set in alpine debian; do
    if [ $set = alpine ]; then files=$(ls "$APKS"/*.apk); else files=$DEBS; fi
    n=$(echo "$files" | wc -l)
    mb=$(du -cm $files | tail -1 | cut -f1)
    i=$RANDOM
    repo=$WORK/repo-$set-$i
    "$TREELINE_BIN" --repo "$repo" init --mode bare-user
    read -r tw trss < <(measure "$TREELINE_BIN" --repo "$repo" pkg import $files)
    mkdir -p "$WORK/x-$set-$i" "$WORK/p-$set-$i"
    read -r rw rrss < <(measure bash -c 'd=$1; shift; for f; do extract_one "$d" "$f"; done' _ "$WORK/x-$set-$i" $files)
    read -r pw prss < <(measure bash -c 'd=$1; shift; printf "%s\n" "$@" | xargs -P"$(nproc)" -I{} bash -c "extract_one $d {}"' _ "$WORK/p-$set-$i" $files)
    if [ $set = alpine ]; then ref="tar -xzf"; else ref="dpkg-deb -x"; fi
    echo "# $set: $n packages, $mb MB"
    row $set "treeline pkg import" "$tw" "$trss" "$n" "$mb" "$rw"
    row $set "$ref (sequential)" "$rw" "$rrss" "$n" "$mb" 0
    row $set "$ref (xargs -P$(nproc))" "$pw" "$prss" "$n" "$mb" 0
done

if [ -x "$REPO_ROOT/bench/pkg-resolve.sh" ]; then
    TREELINE_BIN=$TREELINE_BIN "$REPO_ROOT/bench/pkg-resolve.sh"
fi
