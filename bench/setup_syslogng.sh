#!/bin/sh
# Unpack Debian's syslog-ng into bench/.work/syslog-ng/ for the end-to-end benchmark's reference.
#
# syslog-ng-core conflicts with rsyslog (both provide system-log-daemon), so it is NOT installed:
# the .deb is fetched with `apt-get download` and unpacked with `dpkg-deb -x`. Only its small
# library dependencies that are missing are installed with apt-get (libivykis0, libnet1, libpcre3,
# libwrap0; the others, libglib2.0-0, libjson-c5, libssl3, libcap2, libsystemd0, are already on a
# Debian 12 machine with rsyslog). Idempotent: a second run does nothing but print the usage.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
WORK="$HERE/.work"
ROOT="$WORK/syslog-ng"
STAMP="$ROOT/.unpacked"
LIBS="libivykis0 libnet1 libpcre3 libwrap0 libglib2.0-0 libjson-c5 libssl3 libcap2 libsystemd0"
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

missing=""
for pkg in $LIBS; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    echo "installing library dependencies of syslog-ng-core:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if [ ! -f "$STAMP" ]; then
    mkdir -p "$WORK/debs"
    # apt-get download writes into the current directory; the _apt user may not be able to
    # write there (a harmless warning), so download into a fresh directory.
    ( cd "$WORK/debs" && rm -f syslog-ng-core_*.deb && { apt-get download -q syslog-ng-core 2>/dev/null \
        || { $SUDO apt-get update -qq && apt-get download -q syslog-ng-core; }; } )
    deb=$(ls "$WORK"/debs/syslog-ng-core_*.deb | head -n 1)
    rm -rf "$ROOT"
    mkdir -p "$ROOT"
    dpkg-deb -x "$deb" "$ROOT"
    dpkg-deb -f "$deb" Version > "$ROOT/.version"
    touch "$STAMP"
fi

MODDIR=$(ls -d "$ROOT"/usr/lib/syslog-ng/[0-9]* | head -n 1)
export LD_LIBRARY_PATH="$ROOT/usr/lib/syslog-ng${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Fails here, not in the middle of a benchmark, if a library is missing.
"$ROOT/usr/sbin/syslog-ng" --version | head -n 1 >/dev/null
if ldd "$ROOT/usr/sbin/syslog-ng" "$MODDIR/libregexp-parser.so" "$MODDIR/libafsocket.so" "$MODDIR/libaffile.so" \
        | grep -q "not found"; then
    ldd "$ROOT/usr/sbin/syslog-ng" "$MODDIR/libregexp-parser.so" | grep "not found" >&2
    exit 1
fi

cat <<EOF
syslog-ng $(cat "$ROOT/.version") is unpacked in $ROOT (not installed; rsyslog stays).
Run it by hand (bench/bench_e2e.py does this with its own config and work directory):

  export LD_LIBRARY_PATH=$ROOT/usr/lib/syslog-ng
  $ROOT/usr/sbin/syslog-ng -F --no-caps -f CONFIG \\
      --module-path=$MODDIR \\
      --control=DIR/syslog-ng.ctl --persist-file=DIR/syslog-ng.persist --pidfile=DIR/syslog-ng.pid
  $ROOT/usr/sbin/syslog-ng-ctl stats --control=DIR/syslog-ng.ctl

The config must start with "@version: $(basename "$MODDIR")"; python -m bench.syslogng --print-config shows the one the benchmark uses.
EOF
