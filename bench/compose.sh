#!/usr/bin/env bash
# Benchmark Debian compose: `treeline compose tree` of a minimal bookworm (minbase +
# systemd + openssh-server, no recommends) with a warm package cache, against
# `mmdebstrap --variant=minbase` of the same package set followed by `ostree commit` of
# its tree; then the recompose after adding one package (`less`) to the treefile.
#
# Method: the mirror is the host's apt configuration's for bookworm (never built in).
#         One warm-up compose fills treeline's caches: the downloads, the store, which
#         is treeline's package cache (each .deb imported once), and the kept solution
#         (so the timed runs read no Packages index; the Release file is still fetched
#         and verified each time; the recompose's package set is new, so it solves once,
#         which its peak RSS shows). mmdebstrap downloads through apt as it always
#         does (it keeps no cache between runs, so its time varies with the network,
#         and includes the downloads). Then RUNS
#         (default 3) alternating timed runs of each: treeline composes from scratch
#         (`--fresh`: every package unpacked and configured, no kept configured root) on
#         the warm store after its ref is deleted, so each run writes a commit;
#         mmdebstrap writes a fresh directory, its /dev nodes are removed (ostree cannot
#         commit them), then `ostree commit` commits it to a fresh bare repository.
#         The recompose adds one package (`less`) to the treefile and composes again
#         (default mode: from the configured root the last compose kept). Medians; peak
#         RSS from /usr/bin/time -v.
#
# Usage:   bench/compose.sh [--workdir DIR] [--runs N]
# Env:     TREELINE_BIN (default: build the release binary), BENCH_WORKDIR, RUNS.
#
# Not a test: CI does not run it. Numbers are noisy on a shared machine.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${BENCH_WORKDIR:-}
RUNS=${RUNS:-3}
die() { echo "compose.sh: error: $*" >&2; exit 1; }
note() { echo "compose.sh: $*" >&2; }

while [ $# -gt 0 ]; do
    case $1 in
        --workdir) WORK=${2:?--workdir needs a directory}; shift 2 ;;
        --runs) RUNS=${2:?--runs needs a number}; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

for t in mmdebstrap ostree /usr/bin/time; do
    command -v "$t" >/dev/null || die "$t is needed (.ci/run installs it)"
done
MIRROR=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' | awk '$2 == "bookworm" { print $1; exit }')
[ -n "$MIRROR" ] || die "the host's apt configuration has no bookworm source to take the mirror from"

if [ -z "${TREELINE_BIN:-}" ]; then
    (cd "$REPO_ROOT" && cargo build --release --locked -q) || die "build failed"
    TREELINE_BIN=$REPO_ROOT/target/release/treeline
fi
if [ -z "$WORK" ]; then
    WORK=$(mktemp -d /var/tmp/treeline-bench-compose.XXXXXX)
fi
mkdir -p "$WORK"
CACHE=$WORK/cache
export SOURCE_DATE_EPOCH=1700000000

treefile() { # $1 = path, rest = extra packages
    local path=$1; shift
    local pkgs='"systemd", "openssh-server"'
    for p in "$@"; do pkgs="$pkgs, \"$p\""; done
    cat >"$path" <<EOF
ref = "debian/bookworm/amd64/bench"
distribution = "debian"
packages = [$pkgs]
[debian]
suite = "bookworm"
mirror = "$MIRROR"
EOF
}
treefile "$WORK/tree.toml"
treefile "$WORK/tree-plus.toml" less

# `timed NAME CMD...`: runs CMD under /usr/bin/time -v; appends "NAME SECONDS RSS_KB".
timed() {
    local name=$1; shift
    local log=$WORK/time.log
    /usr/bin/time -v "$@" >"$WORK/$name.out" 2>"$log" || { cat "$log" >&2; die "$name failed"; }
    local wall rss
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, a, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + a[i]; print s }' "$log")
    rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$log")
    echo "$name $wall $rss" >>"$WORK/results"
    note "$name: ${wall}s, peak RSS ${rss} kB"
}

mm_commit() { # $1 = run number
    local dir=$WORK/mm-$1 repo=$WORK/mm-repo-$1
    rm -rf "$dir" "$repo"
    mmdebstrap --quiet --variant=minbase --include=systemd,openssh-server bookworm "$dir" "deb $MIRROR bookworm main"
    # Device nodes cannot be committed (a booted system has a devtmpfs there).
    find "$dir/dev" -mindepth 1 -delete
    ostree --repo="$repo" init --mode=bare
    ostree --repo="$repo" commit --branch=debian/bookworm/amd64/bench --tree=dir="$dir" >/dev/null
}
export -f mm_commit
export WORK MIRROR

: >"$WORK/results"
note "warm-up: treeline compose (fills the package cache)"
rm -rf "$WORK/tl-warm"
ostree --repo="$WORK/tl-warm" init --mode=bare
"$TREELINE_BIN" --repo="$WORK/tl-warm" compose tree --cache-dir "$CACHE" "$WORK/tree.toml" >/dev/null

for i in $(seq 1 "$RUNS"); do
    ostree --repo="$WORK/tl-warm" refs --delete debian/bookworm/amd64/bench
    timed treeline "$TREELINE_BIN" --repo="$WORK/tl-warm" compose tree --fresh --cache-dir "$CACHE" "$WORK/tree.toml"
    timed mmdebstrap+ostree bash -c "mm_commit $i"
    rm -rf "$WORK/mm-$i" "$WORK/mm-repo-$i"
done
timed recompose "$TREELINE_BIN" --repo="$WORK/tl-warm" compose tree --cache-dir "$CACHE" "$WORK/tree-plus.toml"
grep -q '^+ less ' "$WORK/recompose.out" || die "the recompose did not add less: $(cat "$WORK/recompose.out")"

median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
col() { awk -v n="$1" -v c="$2" '$1 == n { print $c }' "$WORK/results" | median; }
tl=$(col treeline 2); tl_rss=$(col treeline 3)
mm=$(col mmdebstrap+ostree 2); mm_rss=$(col mmdebstrap+ostree 3)
re=$(col recompose 2); re_rss=$(col recompose 3)
echo
echo "Debian bookworm minbase + systemd + openssh-server, mirror $MIRROR, $RUNS runs (median)"
printf '%-34s %12s %12s %8s %14s %14s\n' operation reference treeline ratio ref-RSS-kB treeline-RSS-kB
printf '%-34s %11ss %11ss %8.2f %14s %14s\n' "compose (warm cache) vs mmdebstrap+ostree commit" "$mm" "$tl" "$(echo "$tl / $mm" | bc -l)" "$mm_rss" "$tl_rss"
printf '%-34s %12s %11ss %8s %14s %14s\n' "recompose after adding less" - "$re" - - "$re_rss"
