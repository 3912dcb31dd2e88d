#!/usr/bin/env bash
# Build dist/slsfwd_<version>_<arch>.deb: the agent and every runtime dependency in a venv at
# /opt/slsfwd made from Debian's /usr/bin/python3, so installing the package needs no network.
# Building does need the Python package index (pip fetches the dependencies' wheels).
#
#   packaging/deb/build.sh            (or: make deb)
#
# Environment: DEB_PYTHON (default /usr/bin/python3: the interpreter the target runs; never a
# pyenv or other private Python), DEBFULLNAME/DEBEMAIL (Maintainer), KEEP_STAGING=1 (keep the
# staging tree for inspection), SOURCE_DATE_EPOCH (clamps file times in the .deb), DEB_OUT_DIR
# (default dist/: where the .deb goes), and pip's own variables (PIP_CONSTRAINT=file pins the
# dependencies' versions).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PREFIX=/opt/slsfwd
PY=${DEB_PYTHON:-/usr/bin/python3}
MAINTAINER="${DEBFULLNAME:-slsfwd maintainers} <${DEBEMAIL:-maintainers@slsfwd.invalid}>"

say() { printf 'build.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

command -v dpkg-deb >/dev/null || die "dpkg-deb is missing (Debian/Ubuntu only)"
[ -x "$PY" ] || die "$PY not found: install Debian's python3"
case "$PY" in /usr/bin/*) ;; *) die "DEB_PYTHON=$PY: the venv must be made from the target's /usr/bin python3" ;; esac

# python3-venv provides ensurepip on Debian; install it when missing (root) or say how.
if ! "$PY" -I -c 'import ensurepip, venv' 2>/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        say "installing python3-venv"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
    else
        die "python3-venv is missing: sudo apt-get install python3-venv"
    fi
fi

VERSION=$(sed -n 's/^__version__ = "\([^"]*\)"$/\1/p' "$ROOT/agent/__init__.py")
[ -n "$VERSION" ] || die "no __version__ in agent/__init__.py"
ARCH=$(dpkg --print-architecture)
PYVER=$("$PY" -I -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PYNEXT=$("$PY" -I -c 'import sys; print("%d.%d" % (sys.version_info[0], sys.version_info[1] + 1))')
OUT_DIR=${DEB_OUT_DIR:-$ROOT/dist}
OUT="$OUT_DIR/slsfwd_${VERSION}_${ARCH}.deb"

umask 022
WORK=$(mktemp -d "${TMPDIR:-/tmp}/slsfwd-deb.XXXXXXXX")
cleanup() { if [ "${KEEP_STAGING:-0}" = 1 ]; then say "staging kept in $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
PKG="$WORK/root"              # becomes / on the target
VENV="$PKG$PREFIX"            # becomes /opt/slsfwd
say "slsfwd $VERSION for $ARCH, Python $PYVER ($PY), staging in $WORK"

# 1. A clean copy of the source: building in the work tree would leave build/ and egg-info behind.
mkdir -p "$WORK/src"
cp -R "$ROOT/agent" "$ROOT/pyproject.toml" "$ROOT/README.md" "$WORK/src/"
find "$WORK/src" -name __pycache__ -type d -prune -exec rm -rf {} +

# 2. The venv, from Debian's interpreter. bin/python is a symlink to /usr/bin/python3 and
#    pyvenv.cfg says home = /usr/bin: both already right for the target.
"$PY" -I -m venv "$VENV"
VPY="$VENV/bin/python"

# 3. Wheels for the project and every dependency (network), then an offline install of exactly
#    those wheels. --isolated ignores pip's config and environment, so nothing else is mixed in;
#    installing by name (not by path) leaves no direct_url.json pointing into the staging tree.
#    --no-compile: bytecode is made in step 6, after relocation, with the final paths in it.
#    python -I everywhere: neither PYTHONPATH nor the current directory (the source tree, with
#    its egg-info from an editable install) may make pip think slsfwd is already installed.
say "fetching and building wheels"
"$VPY" -I -m pip wheel -q --wheel-dir "$WORK/wheels" "$WORK/src"
"$VPY" -I -m pip install -q --isolated --disable-pip-version-check --no-compile --no-index \
    --find-links "$WORK/wheels" "slsfwd==$VERSION"
# The wheels' extension modules carry debug symbols the target cannot use (uvloop alone ~12 MiB):
# strip them, as dh_strip does for every Debian package.
if command -v strip >/dev/null; then
    find "$VENV" -name '*.so*' -type f -exec strip --strip-unneeded {} +
else
    say "warning: strip (binutils) not found; extension modules keep their debug symbols"
fi
[ -x "$VENV/bin/slsfwd" ] || die "pip did not install slsfwd into the venv"
"$VPY" -I -B -c 'import agent.app, agent.cli, lz4.block, prometheus_client, uvloop, aliyun.log' \
    || die "the staged venv cannot import the agent"
"$VPY" -I -m pip list --isolated --disable-pip-version-check --format=freeze --exclude pip --exclude setuptools \
    > "$WORK/bundled.txt"
# pip and setuptools are not needed at run time; shipping them would only add code to patch.
"$VPY" -I -m pip uninstall -q -y --isolated --disable-pip-version-check pip setuptools
rm -f "$VENV"/bin/pip "$VENV"/bin/pip3* "$VENV"/bin/easy_install*
find "$VENV" -name __pycache__ -type d -prune -exec rm -rf {} +   # pip's own, written in staging

# 4. Relocation: the scripts' shebangs, activate* and pyvenv.cfg's "command" name the staging path.
{ grep -rlI --null -F "$VENV" "$VENV/bin" "$VENV/pyvenv.cfg" || true; } | xargs -0 -r sed -i "s|$VENV|$PREFIX|g"

# 5. The rest of the tree.
install -d "$PKG/usr/bin" "$PKG/lib/systemd/system" "$PKG/etc/slsfwd" "$PKG/etc/rsyslog.d" \
    "$PKG/usr/share/doc/slsfwd" "$PKG/DEBIAN"
ln -s "$PREFIX/bin/slsfwd" "$PKG/usr/bin/slsfwd"
install -m 0644 "$ROOT/systemd/slsfwd.service" "$PKG/lib/systemd/system/slsfwd.service"
if [ -f "$ROOT/systemd/slsfwd.socket" ]; then   # socket activation: shipped, not enabled (opt-in)
    install -m 0644 "$ROOT/systemd/slsfwd.socket" "$PKG/lib/systemd/system/slsfwd.socket"
fi
install -m 0640 "$ROOT/packaging/slsfwd.toml" "$PKG/etc/slsfwd/slsfwd.toml"   # group: postinst
install -m 0644 "$ROOT/packaging/rsyslog/80-slsfwd.conf" "$PKG/etc/rsyslog.d/80-slsfwd.conf"
install -m 0644 "$ROOT/README.md" "$VENV/README.md"          # the unit's Documentation=
install -m 0644 "$HERE/copyright" "$PKG/usr/share/doc/slsfwd/copyright"
install -m 0644 "$WORK/bundled.txt" "$PKG/usr/share/doc/slsfwd/bundled-python-packages.txt"
{   # a native package's changelog: one entry for this build
    printf 'slsfwd (%s) unstable; urgency=medium\n\n' "$VERSION"
    printf '  * Built from the slsfwd source tree by packaging/deb/build.sh.\n\n'
    printf ' -- %s  %s\n' "$MAINTAINER" "$(date -R ${SOURCE_DATE_EPOCH:+-d "@$SOURCE_DATE_EPOCH"})"
} | gzip -9n > "$PKG/usr/share/doc/slsfwd/changelog.gz"
chmod 0644 "$PKG/usr/share/doc/slsfwd/changelog.gz"

# 6. Bytecode, shipped in the package (see packaging/README.md): compiled by the target's
#    interpreter version, with file names as installed (-s/-p), checked against the source's
#    hash rather than its mtime (so SOURCE_DATE_EPOCH clamping or a touched file cannot
#    leave stale or ignored caches).
say "byte-compiling"
"$PY" -I -m compileall -q -j0 -s "$PKG" -p / --invalidation-mode checked-hash "$VENV/lib" >"$WORK/compileall.log" 2>&1 || {
    cat "$WORK/compileall.log" >&2; die "byte-compiling failed"; }

# 7. No trace of the staging tree may remain: scripts, pyvenv.cfg, RECORD files, bytecode.
if leaks=$(grep -rlaF "$WORK" "$PKG"); then
    printf '%s\n' "$leaks" >&2
    die "the staging path $WORK remains in the files above"
fi
head -n1 "$VENV/bin/slsfwd" | grep -qx "#!$PREFIX/bin/python" || die "bad shebang in bin/slsfwd"
grep -qx "home = /usr/bin" "$VENV/pyvenv.cfg" || die "pyvenv.cfg does not point at /usr/bin"

# 8. Control files. The extension modules link against libc, libgcc_s and libstdc++: ask
#    dpkg-shlibdeps (dpkg-dev) for the versions, as a Debian source package build would.
SHLIBS="libc6, libgcc-s1, libstdc++6"
if command -v dpkg-shlibdeps >/dev/null; then
    mkdir -p "$WORK/shlibs/debian"
    printf 'Source: slsfwd\n\nPackage: slsfwd\nArchitecture: any\n' > "$WORK/shlibs/debian/control"
    find "$VENV" -name '*.so*' -type f -print0 > "$WORK/shlibs/objects"
    if out=$(cd "$WORK/shlibs" && xargs -0 dpkg-shlibdeps -O --warnings=0 < objects 2>/dev/null); then
        SHLIBS=${out#shlibs:Depends=}
    fi
fi
INSTALLED_SIZE=$(du -sk --apparent-size "$PKG" | cut -f1)
sed -e "s|@VERSION@|$VERSION|" -e "s|@ARCH@|$ARCH|" -e "s|@MAINTAINER@|$MAINTAINER|" \
    -e "s|@INSTALLED_SIZE@|$INSTALLED_SIZE|" -e "s|@PYVER@|$PYVER|" -e "s|@PYNEXT@|$PYNEXT|" -e "s|@SHLIBS@|$SHLIBS|" \
    "$HERE/control.in" > "$PKG/DEBIAN/control"
install -m 0644 "$HERE/conffiles" "$PKG/DEBIAN/conffiles"
install -m 0755 "$HERE/postinst" "$HERE/prerm" "$HERE/postrm" "$PKG/DEBIAN/"
(cd "$PKG" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z \
    | xargs -0 md5sum) > "$PKG/DEBIAN/md5sums"
chmod 0644 "$PKG/DEBIAN/md5sums"
while read -r conffile; do
    [ -f "$PKG$conffile" ] || die "conffile $conffile is not in the package"
done < "$PKG/DEBIAN/conffiles"

# 9. The archive.
mkdir -p "$OUT_DIR"
rm -f "$OUT"
dpkg-deb --build --root-owner-group "$PKG" "$OUT" >/dev/null
say "built $OUT ($(du -h "$OUT" | cut -f1), installed $((INSTALLED_SIZE / 1024)) MiB)"
