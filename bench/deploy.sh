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
#          /boot/loader swap. Both tools do the same work on equivalent sysroots, except
#          that treeline also seeds the new stateroot's /var from the commit's /var (85 MB
#          for this tree; ostree 2022.7 leaves it empty).
#          `deploy-empty-var`: the same, of a commit of the same tree with /var emptied,
#          as OSTree-style composes ship it (treeline compose describes /var in
#          tmpfiles.d): here both tools do exactly the same work.
#          `upgrade`: the sysroot is deployed at v1 from a remote `origin` (a file:// archive
#          repo holding v1 and v2 of the tree, v2 from --tree2, default
#          /var/tmp/treeline-bench-work/inputs/debian-pull-v2, a second debootstrap with
#          --include=less,curl,ca-certificates; same kernel), then the timed `admin upgrade --os=debian`: pull of the v1->v2 objects and the deploy, i.e.
#          the time from upgrade start to a new default deployment.
# Method:  one warm-up of each, then RUNS alternating runs (treeline, ostree, ...), each
#          in a fresh sysroot kept until the end, `sync` (untimed) before each; wall time
#          and peak RSS from /usr/bin/time -v; medians.
#
# Usage:   bench/deploy.sh [--tree DIR] [--tree2 DIR] [--ops "deploy deploy-empty-var upgrade"] [--runs N]
#          [--workdir DIR] [--keep]
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
TREE2=/var/tmp/treeline-bench-work/inputs/debian-pull-v2
OPS="deploy deploy-empty-var upgrade"
KVER=6.1.0-bench

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "deploy.sh: error: $*" >&2; exit 1; }
note() { echo "deploy.sh: $*" >&2; }

while [ $# -gt 0 ]; do
    case $1 in
        --tree) TREE=${2:?--tree needs a directory}; shift 2 ;;
        --tree=*) TREE=${1#*=}; shift ;;
        --tree2) TREE2=${2:?--tree2 needs a directory}; shift 2 ;;
        --tree2=*) TREE2=${1#*=}; shift ;;
        --ops) OPS=${2:?--ops needs a list}; shift 2 ;;
        --ops=*) OPS=${1#*=}; shift ;;
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
prepare() { # SRC_TREE DEST
    note "preparing $2 (hardlinked copy of $1, /etc -> /usr/etc, the kernel)"
    rm -rf "$2"
    cp -al "$1" "$2" 2>/dev/null || cp -a "$1" "$2"
    if [ -d "$2/etc" ] && [ ! -d "$2/usr/etc" ]; then mv "$2/etc" "$2/usr/etc"; fi
    mkdir -p "$2/usr/lib/modules/$KVER"
    cp "$WORK/vmlinuz" "$WORK/initramfs.img" "$2/usr/lib/modules/$KVER/"
}
head -c $((8 << 20)) /dev/urandom >"$WORK/vmlinuz"
head -c $((32 << 20)) /dev/urandom >"$WORK/initramfs.img"
SRC=$WORK/tree
prepare "$TREE" "$SRC"
SRCREPO=$WORK/src-repo
ostree --repo="$SRCREPO" init --mode=bare
ostree --repo="$SRCREPO" commit -b bench/debian \
    --add-metadata-string=version=1 "$SRC" >/dev/null
case " $OPS " in
    *" deploy-empty-var "*)
        cp -al "$SRC" "$WORK/tree-empty-var"
        find "$WORK/tree-empty-var/var" -mindepth 1 -delete
        ostree --repo="$SRCREPO" commit -b bench/debian-empty-var \
            --add-metadata-string=version=1 "$WORK/tree-empty-var" >/dev/null
        ;;
esac
FILES=$(find "$SRC" | wc -l)
SIZE=$(du -sh --apparent-size "$SRC" | cut -f1)
note "committed $FILES paths ($SIZE)"
SERVER=$WORK/server
case " $OPS " in
    *" upgrade "*)
        [ -d "$TREE2/usr" ] || die "no v2 tree at $TREE2 (--tree2 DIR)"
        prepare "$TREE2" "$WORK/tree2"
        note "committing v1 and v2 into an archive repo (the remote)"
        ostree --repo="$SERVER" init --mode=archive
        ostree --repo="$SERVER" pull-local "$SRCREPO" bench/debian >/dev/null
        ostree --repo="$SERVER" commit -b bench/debian \
            --add-metadata-string=version=2 "$WORK/tree2" >/dev/null
        ostree --repo="$SERVER" summary -u
        CHANGED=$(ostree --repo="$SERVER" diff bench/debian^ bench/debian | wc -l)
        note "v1 -> v2 changes $CHANGED paths"
        ;;
esac

# ---------------------------------------------------------------- runs
ref_of() { # OP -> the ref it deploys
    case $1 in
        deploy-empty-var) echo bench/debian-empty-var ;;
        upgrade) echo origin:bench/debian ;;
        *) echo bench/debian ;;
    esac
}

fresh_sysroot() { # OP -> path
    local s
    s=$(mktemp -d "$WORK/sysroot.XXXXXX")
    ostree admin init-fs --sysroot="$s" "$s" >/dev/null 2>&1
    ostree admin os-init --sysroot="$s" debian >/dev/null
    if [ "$1" = upgrade ]; then
        ostree --repo="$s/ostree/repo" remote add --no-gpg-verify origin "file://$SERVER"
        ostree --repo="$s/ostree/repo" pull-local --remote=origin "$SRCREPO" bench/debian >/dev/null
        ostree admin deploy --sysroot="$s" --os=debian origin:bench/debian \
            --karg=root=LABEL=root >/dev/null
    else
        ostree --repo="$s/ostree/repo" pull-local "$SRCREPO" "$(ref_of "$1")" >/dev/null
    fi
    echo "$s"
}

# run OP TOOL -> "seconds rss_kib"
run() {
    local op=$1 tool=$2 s out
    s=$(fresh_sysroot "$op")
    out=$s.time
    sync
    local want
    want=$(ref_of "$op")
    case $op/$tool in
        deploy*/treeline) /usr/bin/time -v -o "$out" "$TL" admin --sysroot="$s" deploy \
            --os=debian "$want" --karg=root=LABEL=root >/dev/null ;;
        deploy*/ostree) /usr/bin/time -v -o "$out" ostree admin deploy --sysroot="$s" \
            --os=debian "$want" --karg=root=LABEL=root >/dev/null 2>&1 ;;
        upgrade/treeline) /usr/bin/time -v -o "$out" "$TL" admin --sysroot="$s" upgrade \
            --os=debian >/dev/null ;;
        upgrade/ostree) /usr/bin/time -v -o "$out" ostree admin upgrade --sysroot="$s" \
            --os=debian >/dev/null 2>&1 ;;
    esac
    # A run that did not make the expected default deployment does not count.
    local head
    head=$(ostree --repo="$s/ostree/repo" rev-parse "$want")
    [ -d "$s/ostree/deploy/debian/deploy/$head.0" ] || die "$op/$tool: no deployment of $head in $s"
    ostree admin status --sysroot="$s" | sed -n 1p | grep -q "$head" \
        || die "$op/$tool: $head is not the default in $s"
    awk -F': ' '
        /Elapsed \(wall clock\)/ { n = split($2, p, ":"); t = 0; for (i = 1; i <= n; i++) t = t * 60 + p[i] }
        /Maximum resident set size/ { r = $2 }
        END { printf "%.3f %d\n", t, r }' "$out"
    # Sysroots stay until the end: this disk writes slowly right after a large delete,
    # which would slow the next run (the cleanup at exit removes them).
    rm -f "$out"
}

median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

ROWS=()
for op in $OPS; do
    note "$op: warm-up"
    run "$op" treeline >/dev/null
    run "$op" ostree >/dev/null
    TL_T=() TL_R=() OS_T=() OS_R=()
    for i in $(seq "$RUNS"); do
        t=
        read -r t r < <(run "$op" treeline); [ -n "$t" ] || die "$op: treeline run failed"
        TL_T+=("$t"); TL_R+=("$r"); t=
        read -r t r < <(run "$op" ostree); [ -n "$t" ] || die "$op: ostree run failed"
        OS_T+=("$t"); OS_R+=("$r")
        note "$op run $i: treeline ${TL_T[-1]}s, ostree ${OS_T[-1]}s"
    done
    tt=$(printf '%s\n' "${TL_T[@]}" | median)
    ot=$(printf '%s\n' "${OS_T[@]}" | median)
    tr=$(printf '%s\n' "${TL_R[@]}" | median)
    or=$(printf '%s\n' "${OS_R[@]}" | median)
    ROWS+=("$(printf '%-17s %12s %12s %8s %14s %16s' "$op" "$ot" "$tt" \
        "$(awk -v a="$tt" -v b="$ot" 'BEGIN { printf "%.2f", a / b }')" \
        "$(awk -v r="$or" 'BEGIN { printf "%.1f", r / 1024 }')" \
        "$(awk -v r="$tr" 'BEGIN { printf "%.1f", r / 1024 }')")")
done

echo
echo "Debian bookworm minbase commit ($FILES paths, $SIZE incl. 40 MiB kernel+initramfs)"
echo "method: fresh sysroot per run, 1 warm-up each, $RUNS alternating runs, medians; $(nproc) CPUs"
printf '%-17s %12s %12s %8s %14s %16s\n' operation ostree_s treeline_s ratio ostree_rss_MiB treeline_rss_MiB
printf '%s\n' "${ROWS[@]}"
