#!/usr/bin/env bash
# Benchmark `treeline admin deploy` against `ostree admin deploy` (2022.7).
#
# Input:   a Debian bookworm minbase tree made with debootstrap (default:
#          /var/tmp/treeline-bench-work/inputs/debian, or --tree DIR), prepared as ostree
#          wants it: /etc moved to /usr/etc, and a kernel (8 MiB) and initramfs (32 MiB) of
#          random bytes under usr/lib/modules/6.1.0-bench/ (a debootstrap tree has none).
#          It is committed once with ostree into a bare source repo.
# Op:      for each run, a fresh sysroot (`ostree admin init-fs`, `os-init debian`, the
#          commit copied in with `ostree pull-local`, all untimed), then the timed
#          `admin deploy --os=debian bench/debian --karg=root=LABEL=root` of that commit:
#          hardlink checkout, /etc copy, kernel and initramfs into /boot, BLS entries, the
#          /boot/loader swap. Both tools do the same work on equivalent sysroots.
# Method:  one warm-up of each, then RUNS alternating runs (treeline, ostree, ...), `sync`
#          (untimed) before each; wall time and peak RSS from /usr/bin/time -v; medians.
#
# Usage:   bench/deploy.sh [--tree DIR] [--runs N] [--workdir DIR] [--keep]
# Env:     RUNS (3), TREELINE_BIN (skip the build and use this binary), BENCH_WORKDIR,
#          KEEP=1 (keep the work dir).
#
# Not a test: CI does not run it. Numbers are noisy on a shared machine.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${RUNS:-3}
WORK=${BENCH_WORKDIR:-}
KEEP=${KEEP:-0}
TREE=/var/tmp/treeline-bench-work/inputs/debian
KVER=6.1.0-bench

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "deploy.sh: error: $*" >&2; exit 1; }
note() { echo "deploy.sh: $*" >&2; }

while [ $# -gt 0 ]; do
    case $1 in
        --tree) TREE=${2:?--tree needs a directory}; shift 2 ;;
        --tree=*) TREE=${1#*=}; shift ;;
        --workdir) WORK=${2:?--workdir needs a directory}; shift 2 ;;
        --workdir=*) WORK=${1#*=}; shift ;;
        --keep) KEEP=1; shift ;;
        --runs) RUNS=${2:?--runs needs a number}; shift 2 ;;
        --runs=*) RUNS=${1#*=}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer, got '$RUNS'"
[ -d "$TREE/usr" ] || die "no Debian tree at $TREE (debootstrap --variant=minbase bookworm DIR MIRROR, then --tree DIR)"
[ "$(id -u)" = 0 ] || die "needs root (deployments are owned by root and made immutable)"
[ -x /usr/bin/time ] || die "/usr/bin/time is missing (apt-get install time)"
command -v ostree >/dev/null || die "ostree is not installed (apt-get install ostree)"

if [ -n "${TREELINE_BIN:-}" ]; then
    TL=$TREELINE_BIN
else
    note "building treeline (cargo build --release -q)"
    (cd "$REPO_ROOT" && cargo build --release -q)
    TL=$REPO_ROOT/target/release/treeline
fi
[ -x "$TL" ] || die "treeline binary not found at $TL"

if [ -n "$WORK" ]; then
    mkdir -p "$WORK"
    WORK=$(cd "$WORK" && pwd)
    KEEP=1
else
    WORK=$(mktemp -d /var/tmp/treeline-bench-deploy.XXXXXX)
fi
cleanup() {
    # Deployments are immutable (chattr +i) and must lose the bit before removal.
    find "$WORK" -maxdepth 6 -path '*/ostree/deploy/*/deploy/*' -type d -prune \
        -exec chattr -i {} + 2>/dev/null || true
    if [ "$KEEP" = 1 ]; then note "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- input
note "preparing the tree (hardlinked copy of $TREE, /etc -> /usr/etc, a kernel)"
SRC=$WORK/tree
rm -rf "$SRC"
cp -al "$TREE" "$SRC" 2>/dev/null || cp -a "$TREE" "$SRC"
if [ -d "$SRC/etc" ] && [ ! -d "$SRC/usr/etc" ]; then mv "$SRC/etc" "$SRC/usr/etc"; fi
mkdir -p "$SRC/usr/lib/modules/$KVER"
head -c $((8 << 20)) /dev/urandom >"$SRC/usr/lib/modules/$KVER/vmlinuz"
head -c $((32 << 20)) /dev/urandom >"$SRC/usr/lib/modules/$KVER/initramfs.img"
SRCREPO=$WORK/src-repo
ostree --repo="$SRCREPO" init --mode=bare
ostree --repo="$SRCREPO" commit -q -b bench/debian --timestamp=1700000000 \
    --add-metadata-string=version=1 "$SRC" >/dev/null
FILES=$(find "$SRC" | wc -l)
SIZE=$(du -sh --apparent-size "$SRC" | cut -f1)
note "committed $FILES paths ($SIZE)"

# ---------------------------------------------------------------- runs
fresh_sysroot() { # -> path
    local s
    s=$(mktemp -d "$WORK/sysroot.XXXXXX")
    ostree admin init-fs --sysroot="$s" "$s" >/dev/null 2>&1
    ostree admin os-init --sysroot="$s" debian >/dev/null
    ostree --repo="$s/ostree/repo" pull-local "$SRCREPO" bench/debian >/dev/null
    echo "$s"
}

# run TOOL -> "seconds rss_kib"
run() {
    local tool=$1 s out
    s=$(fresh_sysroot)
    out=$s.time
    sync
    case $tool in
        treeline) /usr/bin/time -v -o "$out" "$TL" admin --sysroot="$s" deploy --os=debian \
            bench/debian --karg=root=LABEL=root >/dev/null ;;
        ostree) /usr/bin/time -v -o "$out" ostree admin deploy --sysroot="$s" --os=debian \
            bench/debian --karg=root=LABEL=root >/dev/null ;;
    esac
    # A deploy that did not make a default deployment does not count.
    [ -n "$(ls "$s/boot/loader/entries/" 2>/dev/null)" ] || die "$tool made no boot entry in $s"
    awk -F': ' '
        /Elapsed \(wall clock\)/ { n = split($2, p, ":"); t = 0; for (i = 1; i <= n; i++) t = t * 60 + p[i] }
        /Maximum resident set size/ { r = $2 }
        END { printf "%.3f %d\n", t, r }' "$out"
    find "$s/ostree/deploy" -mindepth 3 -maxdepth 3 -type d -exec chattr -i {} +
    rm -rf "$s"
}

median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

note "warm-up"
run treeline >/dev/null
run ostree >/dev/null
TL_T=() TL_R=() OS_T=() OS_R=()
for i in $(seq "$RUNS"); do
    read -r t r < <(run treeline); [ -n "${t:-}" ] || die "treeline run failed"
    TL_T+=("$t"); TL_R+=("$r"); t=
    read -r t r < <(run ostree); [ -n "${t:-}" ] || die "ostree run failed"
    OS_T+=("$t"); OS_R+=("$r"); t=
    note "run $i: treeline ${TL_T[-1]}s, ostree ${OS_T[-1]}s"
done
tt=$(printf '%s\n' "${TL_T[@]}" | median)
ot=$(printf '%s\n' "${OS_T[@]}" | median)
tr=$(printf '%s\n' "${TL_R[@]}" | median)
or=$(printf '%s\n' "${OS_R[@]}" | median)

echo
echo "deploy of a Debian bookworm minbase commit ($FILES paths, $SIZE, 40 MiB kernel+initramfs)"
echo "method: fresh sysroot per run, 1 warm-up each, $RUNS alternating runs, medians; $(nproc) CPUs"
printf '%-10s %12s %12s %8s %14s %14s\n' operation ostree_s treeline_s ratio ostree_rss_MiB treeline_rss_MiB
printf '%-10s %12s %12s %8s %14s %14s\n' deploy "$ot" "$tt" \
    "$(awk -v a="$tt" -v b="$ot" 'BEGIN { printf "%.2f", a / b }')" \
    "$(awk -v r="$or" 'BEGIN { printf "%.1f", r / 1024 }')" \
    "$(awk -v r="$tr" 'BEGIN { printf "%.1f", r / 1024 }')"
