#!/usr/bin/env bash
# engines.sh — unpack the newest Debian-packaged Docker engine into a private
# prefix, for running the e2e suites against it (STOWAGE_ENGINE=DIR).
#
#   scripts/engines.sh            prints the prefix (ABSOLUTE/build/cache/engines/debian-sid)
#   REFRESH=1 scripts/engines.sh  resolve sid's candidates again
#
# It takes sid's current candidates of docker.io, docker-cli, containerd and
# tini-static (nothing is pinned: whatever sid has today), and the newest runc
# among sid, trixie and bookworm whose binary runs on this host (sid's and
# trixie's need a newer glibc than bookworm has). Packages are fetched with
# apt-get download into a private apt state under build/cache/engines/apt and
# unpacked with dpkg -x: the system's apt sources, packages and engine are not
# touched. The versions are recorded in PREFIX/VERSIONS. Cached: a second run
# with a complete prefix does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

NAME=${NAME:-debian-sid}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
CACHE_DIR=${CACHE_DIR:-build/cache/engines}
PREFIX="$CACHE_DIR/$NAME"
APT_DIR="$CACHE_DIR/apt"
# Packages from sid; runc is chosen separately.
PKGS=(docker.io docker-cli containerd tini-static)
RUNC_SUITES=(sid trixie bookworm)
BINS=(usr/sbin/dockerd usr/bin/docker usr/bin/containerd usr/bin/containerd-shim-runc-v2 usr/sbin/runc usr/bin/docker-init)

say() { echo "engines: $*" >&2; }
die() { echo "engines: $*" >&2; exit 1; }

# runs reports whether every engine binary in $1 starts on this host.
runs() {
  local b
  for b in "${BINS[@]}"; do
    [ -x "$1/$b" ] || return 1
  done
  "$1/usr/sbin/dockerd" --version >/dev/null 2>&1 &&
    "$1/usr/bin/docker" --version >/dev/null 2>&1 &&
    "$1/usr/bin/containerd" --version >/dev/null 2>&1 &&
    "$1/usr/sbin/runc" --version >/dev/null 2>&1
}

if [ -z "${REFRESH:-}" ] && [ -s "$PREFIX/VERSIONS" ] && runs "$PREFIX"; then
  echo "$PWD/$PREFIX"
  exit 0
fi

command -v apt-get >/dev/null && command -v dpkg >/dev/null || die "apt-get and dpkg are needed (a Debian host)"
mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$CACHE_DIR"
exec 9>"$CACHE_DIR/$NAME.lock"
flock 9

printf 'deb %s %s main\n' "$MIRROR" sid "$MIRROR" trixie "$MIRROR" bookworm >"$APT_DIR/sources.list"
APT=(-o "Dir::Etc::SourceList=$PWD/$APT_DIR/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o "Dir::State::Lists=$PWD/$APT_DIR/lists" -o "Dir::Cache=$PWD/$APT_DIR/cache"
     -o APT::Sandbox::User=root -qq)
say "apt-get update (private lists in $APT_DIR)"
apt-get "${APT[@]}" update >"$APT_DIR/update.log" 2>&1 ||
  { cat "$APT_DIR/update.log" >&2; die "apt-get update of sid/trixie/bookworm from $MIRROR failed (set MIRROR= for another Debian mirror)"; }

debs="$CACHE_DIR/$NAME.debs"
rm -rf "$debs" "$PREFIX.new"
mkdir -p "$debs" "$PREFIX.new"
(cd "$debs" && apt-get "${APT[@]}" download "${PKGS[@]/%//sid}") ||
  die "sid has no installable candidate for one of: ${PKGS[*]} (apt-cache policy ${PKGS[*]} with the options above says which)"
for d in "$debs"/*.deb; do dpkg -x "$d" "$PREFIX.new"; done

runc_from=
for suite in "${RUNC_SUITES[@]}"; do
  rm -rf "$debs/runc" && mkdir -p "$debs/runc"
  (cd "$debs/runc" && apt-get "${APT[@]}" download "runc/$suite") 2>/dev/null || continue
  dpkg -x "$debs"/runc/runc_*.deb "$debs/runc/x"
  if "$debs/runc/x/usr/sbin/runc" --version >/dev/null 2>&1; then
    cp -a "$debs/runc/x/usr/sbin/runc" "$PREFIX.new/usr/sbin/runc"
    runc_from=$suite
    break
  fi
  say "runc from $suite does not run here: $("$debs/runc/x/usr/sbin/runc" --version 2>&1 | head -1)"
done
[ -n "$runc_from" ] || die "no runc from ${RUNC_SUITES[*]} runs on this host"
# moby 29.5 gives containers a time namespace, which runc learnt in 1.2:
# with an older runc every container start fails.
dv=$("$PREFIX.new/usr/sbin/dockerd" --version | sed -n 's/^Docker version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
rv=$("$PREFIX.new/usr/sbin/runc" --version | sed -n 's/^runc version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
read -r dmaj dmin <<<"$dv"
read -r rmaj rmin <<<"$rv"
if [ $((dmaj * 100 + dmin)) -ge 2905 ] && [ $((rmaj * 100 + rmin)) -lt 102 ]; then
  die "dockerd $dmaj.$dmin needs runc >= 1.2 (time namespaces), but the newest runc that runs here is $rmaj.$rmin (from $runc_from)"
fi
runs "$PREFIX.new" || {
  for b in usr/sbin/dockerd usr/bin/docker usr/bin/containerd; do "$PREFIX.new/$b" --version 2>&1 | head -2 >&2 || true; done
  die "the engine unpacked in $PREFIX.new does not run on this host (see above)"
}

{
  for d in "$debs"/*.deb "$debs"/runc/*.deb; do
    dpkg-deb -f "$d" Package Version | sed "s/^[^:]*: //" | paste -sd" "
  done
  echo "runc-suite $runc_from"
  "$PREFIX.new/usr/sbin/dockerd" --version
  "$PREFIX.new/usr/bin/containerd" --version
  "$PREFIX.new/usr/sbin/runc" --version | head -1
} >"$PREFIX.new/VERSIONS"
rm -rf "$PREFIX" "$debs"
mv "$PREFIX.new" "$PREFIX"
say "$(grep '^Docker version' "$PREFIX/VERSIONS") in $PREFIX (runc from $runc_from)"
echo "$PWD/$PREFIX"
