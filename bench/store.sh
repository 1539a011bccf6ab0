#!/usr/bin/env bash
# Benchmark treeline's store against OSTree (2022.7) on two real root filesystems.
#
# Inputs:  the Alpine 3.20.3 minirootfs (from $TREELINE_TEST_DATA) and a Debian bookworm
#          minbase tree made with debootstrap (mirror read from the host's apt sources).
# Ops:     commit into an archive repo, commit into a bare-user repo, checkout -U (hardlinks)
#          from the bare-user repo, fsck of the archive repo, prune --refs-only --depth=0
#          after a second commit that changes a few files.
# Method:  treeline and ostree run on the same input with equivalent flags, one warm-up each,
#          then RUNS alternating runs (treeline, ostree, treeline, ...), each writing to a fresh
#          output path; medians are reported. `sync` (untimed) before every timed run. Old
#          outputs are deleted only at the end.
#
# Usage:   bench/store.sh [--workdir DIR] [--keep] [--runs N] [--inputs "alpine debian"]
# Env:     RUNS (3), TREELINE_BIN (skip the build and use this binary), TREELINE_TEST_DATA,
#          BENCH_WORKDIR (same as --workdir; a given work dir is kept, so the debootstrap
#          result is cached there between runs), KEEP=1 (keep a mktemp work dir),
#          INPUTS ("alpine debian"), MIRROR (override the Debian mirror read from apt sources),
#          TIMESTAMP (commit time in seconds since the epoch, 1700000000).
#
# Not a test: CI does not run it. Numbers are noisy on a shared machine.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${RUNS:-3}
WORK=${BENCH_WORKDIR:-}
KEEP=${KEEP:-0}
INPUTS=${INPUTS:-alpine debian}
TIMESTAMP=${TIMESTAMP:-1700000000}
DATA=${TREELINE_TEST_DATA:-$REPO_ROOT/../shared/data}
ALPINE_TAR=$DATA/alpine/minirootfs/alpine-minirootfs-3.20.3-x86_64.tar.gz

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "store.sh: error: $*" >&2; exit 1; }
note() { echo "store.sh: $*" >&2; }

while [ $# -gt 0 ]; do
    case $1 in
        --workdir) WORK=${2:?--workdir needs a directory}; shift 2 ;;
        --workdir=*) WORK=${1#*=}; shift ;;
        --keep) KEEP=1; shift ;;
        --runs) RUNS=${2:?--runs needs a number}; shift 2 ;;
        --runs=*) RUNS=${1#*=}; shift ;;
        --inputs) INPUTS=${2:?--inputs needs a list}; shift 2 ;;
        --inputs=*) INPUTS=${1#*=}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer, got '$RUNS'"

# ---------------------------------------------------------------- tools
apt_install() { # PACKAGE...
    [ "$(id -u)" = 0 ] || die "need root to apt-get install $*"
    note "installing $* with apt-get"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; then
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
    fi
}
[ -x /usr/bin/time ] || apt_install time
command -v ostree >/dev/null || die "ostree is not installed (apt-get install ostree)"

if [ -n "${TREELINE_BIN:-}" ]; then
    TL=$TREELINE_BIN
else
    note "building treeline (cargo build --release -q)"
    (cd "$REPO_ROOT" && cargo build --release -q)
    TL=$REPO_ROOT/target/release/treeline
fi
[ -x "$TL" ] || die "treeline binary not found at $TL"

# ---------------------------------------------------------------- work dir
if [ -n "$WORK" ]; then
    mkdir -p "$WORK"
    WORK=$(cd "$WORK" && pwd)
    KEEP=1
else
    WORK=$(mktemp -d /var/tmp/treeline-bench.XXXXXX)
fi
RUNDIR=$WORK/runs.$$
mkdir -p "$RUNDIR"
cleanup() {
    # Outputs are deleted only now, never between timed runs.
    if [ "$KEEP" = 1 ]; then
        rm -rf "$RUNDIR"
        note "work dir kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- inputs
# Remove what ostree commit rejects (device nodes, FIFOs, sockets); print how many.
# The count is kept next to the (cached) tree, so later runs still report it.
strip_special() { # DIR LABEL
    local n
    n=$(find "$1" -xdev \( -type b -o -type c -o -type p -o -type s \) -print | wc -l)
    find "$1" -xdev \( -type b -o -type c -o -type p -o -type s \) -delete
    if [ "$n" != 0 ] || [ ! -e "$1.special" ]; then echo "$n" >"$1.special"; fi
    STRIPPED[$2]=$(cat "$1.special")
}

# First `deb` URI of a bookworm line with component main, from the host's apt sources.
debian_mirror() {
    local f
    {
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [ -f "$f" ] || continue
            awk '
                { sub(/#.*/, "") }
                $1 == "deb" {
                    i = 2
                    if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                    uri = $(i); suite = $(i + 1)
                    if (suite != "bookworm") next
                    for (j = i + 2; j <= NF; j++) if ($j == "main") { print uri; exit }
                }' "$f"
        done
        for f in /etc/apt/sources.list.d/*.sources; do
            [ -f "$f" ] || continue
            awk '
                function flush() {
                    if (types ~ /(^| )deb( |$)/ && suites ~ /(^| )bookworm( |$)/ &&
                        comps ~ /(^| )main( |$)/ && enabled !~ /^(no|false)$/ && uris != "") {
                        split(uris, u, " "); print u[1]; found = 1
                    }
                    types = suites = comps = uris = enabled = ""
                }
                /^[ \t]*#/ { next }
                /^[ \t]*$/ { flush(); if (found) exit; next }
                {
                    line = $0; key = tolower(line); sub(/:.*/, "", key)
                    val = line; sub(/^[^:]*:[ \t]*/, "", val)
                    if (key == "types") types = val
                    else if (key == "suites") suites = val
                    else if (key == "components") comps = val
                    else if (key == "uris") uris = val
                    else if (key == "enabled") enabled = tolower(val)
                }
                END { if (!found) flush() }' "$f"
        done
    } | grep -v '^cdrom:' | head -n1
}

prepare_alpine() {
    [ -f "$ALPINE_TAR" ] || die "missing test data: $ALPINE_TAR (set TREELINE_TEST_DATA to the shared data dir)"
    local dir=$WORK/inputs/alpine
    if [ ! -e "$dir.done" ]; then
        rm -rf "$dir"; mkdir -p "$dir"
        tar --numeric-owner -xzf "$ALPINE_TAR" -C "$dir"
        touch "$dir.done"
    fi
    strip_special "$dir" alpine
    SRC[alpine]=$dir
}

prepare_debian() {
    local dir=$WORK/inputs/debian mirror
    if [ ! -e "$dir.done" ]; then
        command -v debootstrap >/dev/null || apt_install debootstrap
        mirror=${MIRROR:-$(debian_mirror)}
        [ -n "$mirror" ] || die "no 'deb' bookworm main source found in /etc/apt/sources.list(.d); set MIRROR"
        note "debootstrap --variant=minbase bookworm from $mirror (takes minutes; cached in $WORK/inputs)"
        rm -rf "$dir" "$dir.tmp"; mkdir -p "$WORK/inputs"
        if ! debootstrap --variant=minbase bookworm "$dir.tmp" "$mirror" >"$WORK/inputs/debootstrap.log" 2>&1; then
            tail -n 20 "$WORK/inputs/debootstrap.log" >&2
            die "debootstrap failed (log: $WORK/inputs/debootstrap.log)"
        fi
        if grep -q " $dir.tmp[/ ]" /proc/mounts; then
            die "debootstrap left mounts under $dir.tmp"
        fi
        mv "$dir.tmp" "$dir"
        echo "$mirror" >"$dir.mirror"
        touch "$dir.done"
    fi
    strip_special "$dir" debian
    SRC[debian]=$dir
    MIRROR_USED=$(cat "$dir.mirror")
}

# Second version of an input: hardlinked copy with a few files replaced (rm + write, so the
# original's inodes are untouched) and one file added.
prepare_v2() { # NAME
    local src=${SRC[$1]} dst=$WORK/inputs/$1-v2 f
    rm -rf "$dst"
    cp -al "$src" "$dst"
    for f in etc/hostname etc/issue etc/passwd; do
        if [ -f "$dst/$f" ] && [ ! -L "$dst/$f" ]; then
            local content
            content=$(cat "$dst/$f")
            rm -f "$dst/$f"
            printf '%s\n# treeline bench v2\n' "$content" >"$dst/$f"
        fi
    done
    echo "treeline bench v2" >"$dst/etc/treeline-bench-v2"
    V2[$1]=$dst
}

# ---------------------------------------------------------------- measurement
# run_timed OUTFILE_PREFIX CMD...: runs CMD under /usr/bin/time; appends "wall_s rss_kib" to
# $RESULT. Wall time comes from bash's $EPOCHREALTIME around the run (ms resolution; /usr/bin/time
# %e has only 10 ms, too coarse for the Alpine operations) and is checked against %e; RSS is %M.
run_timed() {
    local prefix=$1; shift
    sync
    local t0 t1 rc=0
    t0=$EPOCHREALTIME
    /usr/bin/time -f '%e %M' -o "$prefix.time" "$@" >"$prefix.out" 2>"$prefix.err" || rc=$?
    t1=$EPOCHREALTIME
    if [ "$rc" != 0 ]; then
        LAST_ERR="exit $rc: $(grep -v '^Command exited with non-zero status' "$prefix.err" | tail -n 5)"
        return 1
    fi
    local e m
    read -r e m <"$prefix.time"
    RESULT=$(awk -v a="$t0" -v b="$t1" -v m="$m" 'BEGIN { printf "%.3f %d", b - a, m }')
    RESULT_E=$e
}

median() { # numbers on stdin
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "NA"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

declare -A SRC V2 STRIPPED
declare -A TIMES RSS FAILED
declare -A LAST_REPO CKSUM
MIRROR_USED=
RESULT='' RESULT_E='' LAST_ERR=''
WARNINGS=()
warn() { WARNINGS+=("$*"); note "WARNING: $*"; }

TOOLS=(treeline ostree)
tool_cmd() { # TOOL -> command prefix in TOOLCMD array
    case $1 in
        treeline) TOOLCMD=("$TL") ;;
        ostree) TOOLCMD=(ostree) ;;
    esac
}

# Per-run setup (untimed) and the timed command, for one operation, tool, run id.
# Sets CMD (array) and OUTREPO.
setup_run() { # INPUT OP TOOL ID
    local input=$1 op=$2 tool=$3 id=$4 d=$RUNDIR/$1/$2/$3-$4
    mkdir -p "$d"
    tool_cmd "$tool"
    case $op in
        commit-archive|commit-bare-user)
            local mode=${op#commit-}
            "${TOOLCMD[@]}" --repo="$d/repo" init --mode="$mode" >/dev/null
            CMD=("${TOOLCMD[@]}" --repo="$d/repo" commit -b bench -s bench "--timestamp=@$TIMESTAMP" "${SRC[$input]}")
            OUTREPO=$d/repo ;;
        checkout)
            CMD=("${TOOLCMD[@]}" --repo="${LAST_REPO[$input/commit-bare-user/$tool]}" checkout -U bench "$d/co")
            OUTREPO=$d/co ;;
        fsck)
            CMD=("${TOOLCMD[@]}" --repo="${LAST_REPO[$input/commit-archive/$tool]}" fsck)
            OUTREPO= ;;
        prune)
            cp -a "${PRUNE_TEMPLATE[$input/$tool]}" "$d/repo"
            CMD=("${TOOLCMD[@]}" --repo="$d/repo" prune --refs-only --depth=0)
            OUTREPO=$d/repo ;;
    esac
    RUNPREFIX=$d/cmd
}

declare -A PRUNE_TEMPLATE
# Two-commit archive repo per tool (v1 then v2 on the same branch), made once per input.
make_prune_templates() { # INPUT
    local input=$1 tool r c1 c2
    for tool in "${TOOLS[@]}"; do
        tool_cmd "$tool"
        r=$RUNDIR/$input/prune-template-$tool
        mkdir -p "$(dirname "$r")"
        if ! { "${TOOLCMD[@]}" --repo="$r" init --mode=archive >/dev/null &&
               "${TOOLCMD[@]}" --repo="$r" commit -b bench -s v1 "--timestamp=@$TIMESTAMP" "${SRC[$input]}" >/dev/null &&
               "${TOOLCMD[@]}" --repo="$r" commit -b bench -s v2 "--timestamp=@$((TIMESTAMP + 1))" "${V2[$input]}" >/dev/null
             } 2>"$r.err"; then
            FAILED[$input/prune/$tool]="prune setup (two commits) failed: $(tail -n 5 "$r.err")"
            continue
        fi
        c2=$("${TOOLCMD[@]}" --repo="$r" rev-parse bench)
        CKSUM[$input/prune-v2/$tool]=$c2
        PRUNE_TEMPLATE[$input/$tool]=$r
    done
    c1=${CKSUM[$input/prune-v2/treeline]:-} c2=${CKSUM[$input/prune-v2/ostree]:-}
    if [ -n "$c1" ] && [ -n "$c2" ] && [ "$c1" != "$c2" ]; then
        warn "$input: second commit (prune setup) differs: treeline $c1, ostree $c2"
    fi
}

count_objects() { find "$1/objects" -type f | wc -l; }

bench_op() { # INPUT OP
    local input=$1 op=$2 tool i id
    note "$input / $op"
    for i in $(seq 0 "$RUNS"); do
        for tool in "${TOOLS[@]}"; do
            [ -z "${FAILED[$input/$op/$tool]:-}" ] || continue
            case $op in
                checkout) [ -n "${LAST_REPO[$input/commit-bare-user/$tool]:-}" ] || { FAILED[$input/$op/$tool]="no bare-user repo (commit failed)"; continue; } ;;
                fsck) [ -n "${LAST_REPO[$input/commit-archive/$tool]:-}" ] || { FAILED[$input/$op/$tool]="no archive repo (commit failed)"; continue; } ;;
            esac
            if [ "$i" = 0 ]; then id=warmup; else id=$i; fi
            setup_run "$input" "$op" "$tool" "$id"
            if ! run_timed "$RUNPREFIX" "${CMD[@]}"; then
                FAILED[$input/$op/$tool]="$tool ${CMD[*]:1}: $LAST_ERR"
                warn "$input/$op: $tool failed: ${CMD[*]}: $LAST_ERR"
                continue
            fi
            if [ "$id" != warmup ]; then
                TIMES[$input/$op/$tool]+="${RESULT% *} "
                RSS[$input/$op/$tool]+="${RESULT#* } "
                # /usr/bin/time's own %e must agree with the wall clock to its 10 ms resolution.
                if awk -v a="${RESULT% *}" -v e="$RESULT_E" 'BEGIN { exit !(a - e > 0.05 || e - a > 0.05) }'; then
                    warn "$input/$op/$tool run $id: wall ${RESULT% *}s vs /usr/bin/time %e ${RESULT_E}s"
                fi
            fi
            case $op in
                commit-*)
                    LAST_REPO[$input/$op/$tool]=$OUTREPO
                    CKSUM[$input/$op/$tool]=$(tail -n 1 "$RUNPREFIX.out") ;;
            esac
            LAST_OUT[$input/$op/$tool]=$OUTREPO
        done
    done
    # Equivalence checks on the last outputs.
    local a=${LAST_OUT[$input/$op/treeline]:-} b=${LAST_OUT[$input/$op/ostree]:-}
    case $op in
        commit-*)
            local ct=${CKSUM[$input/$op/treeline]:-} co=${CKSUM[$input/$op/ostree]:-}
            if [ -n "$ct" ] && [ -n "$co" ]; then
                if [ "$ct" = "$co" ]; then CHECKS+=("$input $op: same commit $ct")
                else warn "$input $op: commit checksums differ: treeline $ct, ostree $co"; fi
            fi ;;
        checkout)
            if [ -n "$a" ] && [ -n "$b" ]; then
                local d
                d=$(diff <(cd "$a" && find . -printf '%p %y %m %s %l\n' | sort) \
                         <(cd "$b" && find . -printf '%p %y %m %s %l\n' | sort) | grep '^[<>]' || true)
                if [ -z "$d" ]; then
                    CHECKS+=("$input checkout: same paths, types, modes, sizes")
                else
                    warn "$input checkout: trees differ in $(grep -c '^<' <<<"$d") entries ('path type mode size target', < treeline, > ostree), e.g. $(head -n 4 <<<"$d" | tr '\n' ';')"
                fi
            fi ;;
        prune)
            if [ -n "$a" ] && [ -n "$b" ]; then
                local na nb
                na=$(count_objects "$a") nb=$(count_objects "$b")
                if [ "$na" = "$nb" ]; then CHECKS+=("$input prune: both keep $na objects")
                else warn "$input prune: objects left differ: treeline $na, ostree $nb"; fi
            fi ;;
    esac
}
declare -A LAST_OUT
CHECKS=()

# ---------------------------------------------------------------- main
for input in $INPUTS; do
    case $input in
        alpine) prepare_alpine ;;
        debian) prepare_debian ;;
        *) die "unknown input '$input' (alpine, debian)" ;;
    esac
    prepare_v2 "$input"
done

OPS=(commit-archive commit-bare-user checkout fsck prune)
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
for input in $INPUTS; do
    for op in "${OPS[@]}"; do
        [ "$op" = prune ] && make_prune_templates "$input"
        bench_op "$input" "$op"
    done
done
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
tl_version=$("$TL" --version 2>/dev/null | head -n1)
tl_commit=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
tl_dirty=
if git -C "$REPO_ROOT" status --porcelain 2>/dev/null | grep -q .; then tl_dirty=" + uncommitted changes"; fi
os_version=$(ostree --version | sed -n "s/^ *Version: '\(.*\)'/\1/p")
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)

echo
echo "treeline store benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine:  $(nproc) cores ($cpu), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM; load avg at start $START_LOAD, at end $END_LOAD"
if [ -n "${TREELINE_BIN:-}" ]; then
    tl_build="binary from TREELINE_BIN=$TL; $REPO_ROOT is at git $tl_commit$tl_dirty"
else
    tl_build="built from $REPO_ROOT at git $tl_commit$tl_dirty"
fi
echo "versions: $tl_version ($tl_build); ostree $os_version"
echo "method:   $RUNS alternating runs per tool (treeline, ostree, ...) after 1 warm-up each; fresh output"
echo "          path per run; sync before each run; medians. Wall time from \$EPOCHREALTIME around"
echo "          /usr/bin/time -f '%e %M' (checked against %e), peak RSS from %M. Same --timestamp for both."
echo "          commit: -b bench -s bench --timestamp=@$TIMESTAMP DIR into a new repo per run (init untimed)"
echo "          checkout: -U from the tool's own bare-user repo (hardlinks); fsck: the tool's own archive repo"
echo "          prune: --refs-only --depth=0 on a copy (untimed) of an archive repo with 2 commits (v2 changes"
echo "          etc/hostname, etc/issue, etc/passwd, adds etc/treeline-bench-v2)"
for input in $INPUTS; do
    files=$(find "${SRC[$input]}" | wc -l)
    size=$(du -sh "${SRC[$input]}" | cut -f1)
    extra=
    [ "$input" = debian ] && extra="; debootstrap --variant=minbase bookworm from $MIRROR_USED"
    echo "input:    $input: $files paths, $size$extra; removed ${STRIPPED[$input]} device nodes/FIFOs/sockets before committing (ostree commit rejects them)"
done
echo

fmt='%-7s %-17s %11s %13s %9s %12s %14s\n'
# shellcheck disable=SC2059
printf "$fmt" input operation "ostree s" "treeline s" "tl/ostree" "ostree MiB" "treeline MiB"
# shellcheck disable=SC2059
printf "$fmt" ------- ----------------- ----------- ------------- --------- ------------ --------------
for input in $INPUTS; do
    for op in "${OPS[@]}"; do
        declare -A med=() mib=()
        for tool in "${TOOLS[@]}"; do
            if [ -n "${FAILED[$input/$op/$tool]:-}" ] || [ -z "${TIMES[$input/$op/$tool]:-}" ]; then
                med[$tool]=FAIL mib[$tool]=FAIL
            else
                med[$tool]=$(tr ' ' '\n' <<<"${TIMES[$input/$op/$tool]}" | grep . | median)
                mib[$tool]=$(tr ' ' '\n' <<<"${RSS[$input/$op/$tool]}" | grep . | median | awk '{ printf "%.1f", $1 / 1024 }')
                med[$tool]=$(awk -v v="${med[$tool]}" 'BEGIN { printf "%.3f", v }')
            fi
        done
        ratio=-
        if [ "${med[ostree]}" != FAIL ] && [ "${med[treeline]}" != FAIL ]; then
            ratio=$(awk -v t="${med[treeline]}" -v o="${med[ostree]}" 'BEGIN { if (o > 0) printf "%.2fx", t / o; else print "-" }')
        fi
        # shellcheck disable=SC2059
        printf "$fmt" "$input" "$op" "${med[ostree]}" "${med[treeline]}" "$ratio" "${mib[ostree]}" "${mib[treeline]}"
        unset med mib
    done
done
echo
echo "targets (issue): commit and fsck <= 0.5x ostree wall time; checkout <= 1.0x; peak RSS <= ostree's"
for input in $INPUTS; do
    for op in "${OPS[@]}"; do
        for tool in "${TOOLS[@]}"; do
            [ -n "${TIMES[$input/$op/$tool]:-}" ] || continue
            printf 'runs:     %-7s %-17s %-9s s: %s  KiB: %s\n' "$input" "$op" "$tool" \
                "${TIMES[$input/$op/$tool]% }" "${RSS[$input/$op/$tool]% }"
        done
    done
done
for c in "${CHECKS[@]}"; do echo "check:    $c"; done
for w in "${WARNINGS[@]}"; do echo "WARNING:  $w"; done
for k in "${!FAILED[@]}"; do echo "FAILED:   $k: ${FAILED[$k]}"; done
