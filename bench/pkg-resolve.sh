#!/bin/sh
# Dependency resolution: treeline-pkg's solver (crates/treeline-pkg/examples/resolve)
# against `apt-get install --simulate` (host apt, bookworm lists, empty dpkg status) and
# `apk add --simulate` (apk 2.14.4 from the Alpine 3.19.4 minirootfs, in a chroot, v3.19
# main + community indexes, empty target database), on the same requests and indexes.
#
# Method: one warm-up run each, then RUNS (default 3) alternating runs; the table shows
# the median wall time and median peak RSS (/usr/bin/time -v) of each, and the ratio
# reference/treeline (above 1: treeline is faster). Both sides start from the index
# files: apt reads its lists (and rebuilds its binary cache, as it must for a new status
# file), ours parses the same lists decompressed by apt-helper; apk and ours read the
# same APKINDEX.tar.gz files. Needs root (chroot) and the shared test data
# (TREELINE_TEST_DATA, default ../shared/data beside the checkout).
set -eu

RUNS=${RUNS:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
data=${TREELINE_TEST_DATA:-$here/../shared/data}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build -q --release -p treeline-pkg --example resolve --manifest-path "$here/Cargo.toml"
resolve=$(cd "$here" && cargo metadata -q --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/examples/resolve

# Debian side: the lists apt uses, decompressed for us by apt itself.
mkdir -p "$work/lists"
for list in /var/lib/apt/lists/*_Packages*; do
    name=$(basename "$list")
    /usr/lib/apt/apt-helper cat-file "$list" > "$work/lists/${name%.*}"
done
: > "$work/status"
# Commands as strings, run with `sh -c "exec ..."` under /usr/bin/time.
apt_cmd() {
    echo "exec apt-get install --simulate -q -o Dir::State::status=$work/status \
-o Dir::State::extended_states=$work/extended_states -o Debug::NoLocking=1 \
-o APT::Install-Recommends=$1 $2"
}
ours_deb_cmd() {
    if [ "$1" = true ]; then rec=; else rec=--no-recommends; fi
    echo "exec $resolve deb $rec $work/lists/* -- $2"
}

# Alpine side: a minirootfs whose apk resolves into an empty /target.
root="$work/alpine"
mkdir -p "$root"
tar -xzf "$data/alpine/minirootfs/alpine-minirootfs-3.19.4-x86_64.tar.gz" -C "$root" --numeric-owner
n=0
indexes=""
for repo in main community; do
    mkdir -p "$root/repo$n/x86_64"
    cp "$data/alpine/indexes/v3.19-$repo-x86_64-APKINDEX.tar.gz" "$root/repo$n/x86_64/APKINDEX.tar.gz"
    indexes="$indexes $root/repo$n/x86_64/APKINDEX.tar.gz"
    n=$((n + 1))
done
mkdir -p "$root/target/lib/apk/db" "$root/target/etc/apk/keys" "$root/target/var/cache/apk"
: > "$root/target/lib/apk/db/installed"
: > "$root/target/lib/apk/db/triggers"
: > "$root/target/etc/apk/world"
echo x86_64 > "$root/target/etc/apk/arch"
cp "$root"/etc/apk/keys/* "$root/target/etc/apk/keys/"
apk_cmd() {
    echo "exec chroot $root /sbin/apk --no-network add --simulate --root /target \
--repository /repo0 --repository /repo1 $1"
}
ours_apk_cmd() {
    echo "exec $resolve apk $indexes -- $1"
}

# measure OUTFILE COMMAND: appends "seconds kilobytes" for one run.
measure() {
    /usr/bin/time -f "%e %M" -o "$work/time" sh -c "$2" > /dev/null
    cat "$work/time" >> "$1"
}
median() {
    sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

printf '%-36s %8s %8s %7s %12s %12s\n' request "ref s" "ours s" ratio "ref RSS KB" "ours RSS KB"
# row LABEL REFERENCE-COMMAND OUR-COMMAND
row() {
    rm -f "$work/ref" "$work/ours"
    sh -c "$2" > /dev/null
    sh -c "$3" > /dev/null
    i=0
    while [ $i -lt "$RUNS" ]; do
        measure "$work/ref" "$2"
        measure "$work/ours" "$3"
        i=$((i + 1))
    done
    rt=$(cut -d' ' -f1 "$work/ref" | median)
    ot=$(cut -d' ' -f1 "$work/ours" | median)
    rm_=$(cut -d' ' -f2 "$work/ref" | median)
    om=$(cut -d' ' -f2 "$work/ours" | median)
    ratio=$(awk -v r="$rt" -v o="$ot" 'BEGIN { if (o > 0) printf "%.2f", r / o; else print "inf" }')
    printf '%-36s %8s %8s %7s %12s %12s\n' "$1" "$rt" "$ot" "$ratio" "$rm_" "$om"
}

for request in openssh-server nginx systemd; do
    for recommends in true false; do
        row "apt $request (recommends=$recommends)" \
            "$(apt_cmd "$recommends" "$request")" "$(ours_deb_cmd "$recommends" "$request")"
    done
done
for request in "alpine-base" "alpine-base openssh" "nginx" "python3" "docker"; do
    row "apk $request" "$(apk_cmd "$request")" "$(ours_apk_cmd "$request")"
done
