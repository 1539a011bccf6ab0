#!/usr/bin/env bash
# Benchmark `treeline image build` and the boot of the image it makes.
#
# Input:   the Alpine 3.20.3 minirootfs (test data) carrying Debian's kernel (the
#          linux-image package linux-image-amd64 depends on, from the host's apt sources,
#          unpacked with depmod; the integration tests' cache is reused when there), with
#          /etc moved to /usr/etc and an initramfs from `treeline image initramfs` whose
#          init is a busybox script (the static busybox of the host) that loads the modules,
#          mounts the root by label, follows ostree= and prints a marker: a stand-in for
#          treeline-boot until it exists. Committed once into an archive repo (untimed).
# Op:      `image build --format raw` (extlinux) and `--format qcow2`, timed; sizes of the
#          tree (du, hardlinks once), the raw image (virtual and allocated) and the qcow2;
#          then qemu (TCG, 256 MiB) boots the raw image: time from qemu start to the marker
#          on the serial console (SeaBIOS, extlinux, kernel, initramfs, root mount).
#          Then a composed system: `treeline compose` of alpine-base (3.19 packages of the
#          test data; OpenRC under busybox init, a getty on the serial console) carrying
#          the same kernel with treeline-boot's initramfs (untimed), `image build` of it
#          timed, and qemu booting it: time from qemu start to the `login:` prompt.
#          Then examples/debian-vm.toml (bookworm, systemd; compose builds the initramfs;
#          untimed), its `image build` timed, and qemu (512 MiB) to `login:` (DEBIAN=0
#          skips it).
# Method:  RUNS runs of each (default 3), `sync` before each; wall time; medians.
#
# Usage:   bench/image.sh [--runs N] [--workdir DIR] [--keep]
# Env:     RUNS, TREELINE_BIN (skip the build), TREELINE_BOOT_STATIC (the static
#          treeline-boot; default target/x86_64-unknown-linux-gnu/debug/treeline-boot),
#          BENCH_WORKDIR, KEEP=1,
#          TREELINE_TEST_DATA (default ../shared/data), TREELINE_TEST_CACHE.
#
# Not a test: CI does not run it. Needs root (extlinux install loop-mounts). Numbers are
# noisy on a shared machine.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${RUNS:-3}
WORK=${BENCH_WORKDIR:-}
KEEP=${KEEP:-0}
DATA=${TREELINE_TEST_DATA:-$REPO_ROOT/../shared/data}
CACHE=${TREELINE_TEST_CACHE:-/var/tmp/treeline-test-cache}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "image.sh: error: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --workdir) WORK=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument $1" ;;
    esac
done
[ "$(id -u)" = 0 ] || die "needs root (the extlinux install loop-mounts the boot partition)"

if [ -n "${TREELINE_BIN:-}" ]; then
    TL=$TREELINE_BIN
else
    (cd "$REPO_ROOT" && cargo build --release --locked -q)
    TL=$REPO_ROOT/target/release/treeline
fi
if [ -z "$WORK" ]; then
    WORK=$(mktemp -d /var/tmp/treeline-bench-image.XXXXXX)
fi
cleanup() { [ "$KEEP" = 1 ] || rm -rf "$WORK"; }
trap cleanup EXIT

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
now() { date +%s.%N; }
# boot_to_login MEM_MIB DISK LOG PATTERN: boot DISK in qemu (TCG), print the seconds from
# qemu's start until PATTERN shows on the serial console (then qemu is stopped), or
# nothing when it never shows (10 minutes at most).
boot_to_login() {
    local mem=$1 disk=$2 log=$3 pattern=$4 t0 qpid t=
    rm -f "$log"
    t0=$(now)
    timeout 600 qemu-system-x86_64 -accel tcg -m "$mem" -display none -no-reboot -monitor none \
        -serial "file:$log" -drive "file=$disk,format=raw,if=virtio" &
    qpid=$!
    while kill -0 "$qpid" 2>/dev/null; do
        if grep -q "$pattern" "$log" 2>/dev/null; then
            t=$(echo "$(now) - $t0" | bc)
            kill "$qpid"
            break
        fi
        sleep 0.2
    done
    wait "$qpid" 2>/dev/null || true
    echo "$t"
}

# The kernel: the test cache's unpacked copy, else download and unpack it here.
pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ { print $2; exit }')
[ -n "$pkg" ] || die "linux-image-amd64 depends on no linux-image-* in the apt sources"
kver=${pkg#linux-image-}
kernel=$(ls -d "$CACHE"/kernels/"${pkg}"_*/ 2>/dev/null | head -1 || true)
if [ -z "$kernel" ]; then
    mkdir -p "$WORK/deb" && (cd "$WORK/deb" && apt-get download -q "$pkg")
    kernel=$WORK/kernel
    dpkg-deb -x "$WORK"/deb/*.deb "$kernel"
    depmod -b "$kernel" "$kver"
fi

# The tree.
tree=$WORK/tree
mkdir -p "$tree"
tar -xzf "$DATA/alpine/minirootfs/alpine-minirootfs-3.20.3-x86_64.tar.gz" -C "$tree"
mv "$tree/etc" "$tree/usr/etc"
moddir=$tree/usr/lib/modules/$kver
mkdir -p "$moddir"
cp "$kernel/boot/vmlinuz-$kver" "$moddir/vmlinuz"
cat >"$WORK/init" <<'EOF'
#!/bin/busybox sh
bb=/bin/busybox
$bb mount -t proc proc /proc; $bb mount -t sysfs sys /sys; $bb mount -t devtmpfs dev /dev
kver=$($bb uname -r)
while read -r m; do $bb insmod /usr/lib/modules/$kver/$m 2>/dev/null; done < /usr/lib/modules/$kver/modules.load-order
for arg in $($bb cat /proc/cmdline); do
    case "$arg" in ostree=*) ostree=${arg#ostree=} ;; root=LABEL=*) label=${arg#root=LABEL=} ;; esac
done
$bb mount -t ext4 -o ro "$($bb findfs LABEL=$label)" /sysroot
for f in usr/lib/os-release etc/os-release; do
    if [ -f "/sysroot$ostree/$f" ]; then . "/sysroot$ostree/$f"; break; fi
done
echo "BENCH-BOOTED $PRETTY_NAME"
$bb poweroff -f
EOF
chmod 755 "$WORK/init"
t0=$(now)
"$TL" image initramfs --root "$kernel" --init "$WORK/init" --file /bin/busybox:bin/busybox \
    --out "$moddir/initramfs.img" >/dev/null
t_initramfs=$(echo "$(now) - $t0" | bc)
repo=$WORK/repo
ostree --repo="$repo" init --mode=archive
"$TL" --repo="$repo" commit -b alpine/bench/x86_64 --subject=bench "$tree" >/dev/null
tree_kib=$(du -sk "$tree" | cut -f1)

build_times_raw=()
build_times_qcow2=()
boot_times=()
for i in $(seq "$RUNS"); do
    rm -f "$WORK/disk.img" "$WORK/disk.qcow2"
    sync
    t0=$(now)
    "$TL" --repo="$repo" image build --ref alpine/bench/x86_64 --out "$WORK/disk.img" \
        --karg console=ttyS0 --karg panic=-1 >/dev/null
    build_times_raw+=("$(echo "$(now) - $t0" | bc)")
    sync
    t0=$(now)
    "$TL" --repo="$repo" image build --ref alpine/bench/x86_64 --out "$WORK/disk.qcow2" \
        --format qcow2 --karg console=ttyS0 >/dev/null
    build_times_qcow2+=("$(echo "$(now) - $t0" | bc)")

    log=$WORK/serial.log
    rm -f "$log"
    t0=$(now)
    timeout 300 qemu-system-x86_64 -accel tcg -m 256 -display none -no-reboot -monitor none \
        -serial "file:$log" -drive "file=$WORK/disk.img,format=raw,if=virtio" || true
    grep -q BENCH-BOOTED "$log" || die "run $i: the image did not boot; serial log in $log"
    boot_times+=("$(echo "$(now) - $t0" | bc)")
done

raw_virtual=$(stat -c %s "$WORK/disk.img")
raw_alloc=$(( $(stat -c %b "$WORK/disk.img") * $(stat -c %B "$WORK/disk.img") ))
qcow2_size=$(stat -c %s "$WORK/disk.qcow2")
initramfs_size=$(stat -c %s "$moddir/initramfs.img")

echo "treeline image build: Alpine 3.20.3 minirootfs + Debian kernel $kver ($RUNS runs, medians)"
printf '  tree (du)                 %8d KiB\n' "$tree_kib"
printf '  initramfs                 %8d KiB  built in %.2f s\n' $((initramfs_size / 1024)) "$t_initramfs"
printf '  raw image: virtual        %8d KiB, allocated %d KiB\n' $((raw_virtual / 1024)) $((raw_alloc / 1024))
printf '  qcow2 image               %8d KiB\n' $((qcow2_size / 1024))
printf '  build raw   (wall)        %8.2f s\n' "$(printf '%s\n' "${build_times_raw[@]}" | median)"
printf '  build qcow2 (wall)        %8.2f s\n' "$(printf '%s\n' "${build_times_qcow2[@]}" | median)"
printf '  boot to marker, TCG       %8.2f s\n' "$(printf '%s\n' "${boot_times[@]}" | median)"

# The composed Alpine system (OpenRC), booted through treeline-boot to a login prompt.
boot_bin=${TREELINE_BOOT_STATIC:-$REPO_ROOT/target/x86_64-unknown-linux-gnu/debug/treeline-boot}
[ -f "$boot_bin" ] || die "no static treeline-boot at $boot_bin (build it as README says, or set TREELINE_BOOT_STATIC)"
cw=$WORK/composed
mkdir -p "$cw/keysroot"
tar -xzf "$DATA/alpine/minirootfs/alpine-minirootfs-3.19.4-x86_64.tar.gz" -C "$cw/keysroot" ./etc/apk/keys
"$TL" image initramfs --root "$kernel" --init "$boot_bin" --out "$cw/initramfs.img" >/dev/null
printf '%s\n' '::sysinit:/sbin/openrc sysinit' '::sysinit:/sbin/openrc boot' \
    '::wait:/sbin/openrc default' 'ttyS0::respawn:/sbin/getty -L ttyS0 115200 vt100' \
    '::shutdown:/sbin/openrc shutdown' >"$cw/inittab"
printf '%s\n' '#!/bin/sh' '(while ! pidof getty >/dev/null; do sleep 1; done; sleep 2; poweroff) >/dev/null 2>&1 &' \
    >"$cw/off.start"
cat >"$cw/vm.toml" <<EOF
ref = "alpine/bench/composed"
distribution = "alpine"
arch = "x86_64"
repositories = ["$DATA/alpine/v3.19-standard-iso-apks"]
keys = "$cw/keysroot/etc/apk/keys"
packages = ["alpine-base"]
hostname = "tl-bench"
services = [{ name = "hostname", runlevel = "boot" }, { name = "local", runlevel = "default" }]
[[files]]
src = "$cw/inittab"
dest = "/etc/inittab"
[[files]]
src = "$cw/off.start"
dest = "/etc/local.d/off.start"
mode = "0755"
[[files]]
src = "$kernel/boot/vmlinuz-$kver"
dest = "/usr/lib/modules/$kver/vmlinuz"
[[files]]
src = "$cw/initramfs.img"
dest = "/usr/lib/modules/$kver/initramfs.img"
EOF
crepo=$cw/repo
ostree --repo="$crepo" init --mode=bare
"$TL" --repo="$crepo" compose tree --cache-dir "$cw/cache" "$cw/vm.toml" >/dev/null
ostree --repo="$crepo" checkout -H alpine/bench/composed "$cw/tree"
ctree_kib=$(du -sk "$cw/tree" | cut -f1)
cbuild=()
cboot=()
for i in $(seq "$RUNS"); do
    rm -f "$cw/disk.img"
    sync
    t0=$(now)
    "$TL" --repo="$crepo" image build --ref alpine/bench/composed --out "$cw/disk.img" \
        --karg console=ttyS0 --karg panic=-1 >/dev/null
    cbuild+=("$(echo "$(now) - $t0" | bc)")
    t_login=$(boot_to_login 256 "$cw/disk.img" "$cw/serial.log" 'tl-bench login:')
    [ -n "$t_login" ] || die "run $i: the composed image showed no login prompt; serial log in $cw/serial.log"
    cboot+=("$t_login")
done
craw_alloc=$(( $(stat -c %b "$cw/disk.img") * $(stat -c %B "$cw/disk.img") ))
echo "composed alpine-base (OpenRC) + Debian kernel $kver, treeline-boot initramfs ($RUNS runs, medians)"
printf '  tree (du)                 %8d KiB\n' "$ctree_kib"
printf '  raw image: virtual        %8d KiB, allocated %d KiB\n' $(($(stat -c %s "$cw/disk.img") / 1024)) $((craw_alloc / 1024))
printf '  build raw   (wall)        %8.2f s\n' "$(printf '%s\n' "${cbuild[@]}" | median)"
printf '  boot to login:, TCG       %8.2f s\n' "$(printf '%s\n' "${cboot[@]}" | median)"

# The composed Debian system (systemd): examples/debian-vm.toml (Debian's kernel from the
# host's mirror, compose's own treeline-boot initramfs), untimed compose; `image build`
# timed; qemu (TCG, 512 MiB) from start to the serial getty's `login:`, then killed.
# DEBIAN=0 skips it.
if [ "${DEBIAN:-1}" != 0 ]; then
    dw=$WORK/debian
    mkdir -p "$dw"
    drepo=$dw/repo
    dref=debian/bookworm/amd64/vm
    ostree --repo="$drepo" init --mode=bare
    "$TL" --repo="$drepo" compose tree --cache-dir "$CACHE/compose-debian" \
        --boot-init "$boot_bin" "$REPO_ROOT/examples/debian-vm.toml" >/dev/null
    ostree --repo="$drepo" checkout -H "$dref" "$dw/tree"
    dtree_kib=$(du -sk "$dw/tree" | cut -f1)
    dbuild=()
    dboot=()
    for i in $(seq "$RUNS"); do
        rm -f "$dw/disk.img"
        sync
        t0=$(now)
        "$TL" --repo="$drepo" image build --ref "$dref" --out "$dw/disk.img" \
            --karg console=ttyS0 --karg panic=-1 >/dev/null 2>&1
        dbuild+=("$(echo "$(now) - $t0" | bc)")
        t_login=$(boot_to_login 512 "$dw/disk.img" "$dw/serial.log" 'treeline-vm login:')
        [ -n "$t_login" ] || die "run $i: the Debian image showed no login prompt; serial log in $dw/serial.log"
        dboot+=("$t_login")
    done
    draw_alloc=$(( $(stat -c %b "$dw/disk.img") * $(stat -c %B "$dw/disk.img") ))
    echo "composed Debian bookworm (systemd, udev, linux-image-amd64), compose-time treeline-boot initramfs ($RUNS runs, medians)"
    printf '  tree (du)                 %8d KiB\n' "$dtree_kib"
    printf '  raw image: virtual        %8d KiB, allocated %d KiB\n' $(($(stat -c %s "$dw/disk.img") / 1024)) $((draw_alloc / 1024))
    printf '  build raw   (wall)        %8.2f s\n' "$(printf '%s\n' "${dbuild[@]}" | median)"
    printf '  boot to login:, TCG       %8.2f s\n' "$(printf '%s\n' "${dboot[@]}" | median)"
fi
