#!/usr/bin/env bash
# base-image.sh — make sure the Docker engine (DOCKER_HOST) has the base image
# the plugin's Dockerfile builds FROM, when nothing can be pulled.
#
#   scripts/base-image.sh [IMAGE]     (default: debian:bookworm-slim)
#
# 1. the engine has IMAGE, and it is not one this script made with another
#    tool list (label org.stowage.base-tools): nothing to do;
# 2. a cached tarball (build/cache/<image>-<key>.tar, from an earlier run;
#    the key hashes SUITE and TOOLS, so a changed tool list never reuses a
#    stale base) exists: docker load it (seconds);
# 3. else build it: debootstrap --variant=minbase bookworm (a few minutes;
#    needs Debian's mirror), with the backends' tools already included
#    (e2fsprogs xfsprogs btrfs-progs util-linux sshfs openssh-client fuse3)
#    so that the Dockerfile's
#    apt-get step has nothing to fetch on engines without network; then
#    docker import it and docker save it to the cache.
# Users with a registry never need this: docker pull debian:bookworm-slim.
# DOCKER picks the CLI (default: docker in PATH).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${1:-debian:bookworm-slim}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
TOOLS=${TOOLS:-e2fsprogs,xfsprogs,btrfs-progs,util-linux,sshfs,openssh-client,fuse3}
CACHE_DIR=${CACHE_DIR:-build/cache}
KEY=$(printf '%s\n' "$SUITE" "$TOOLS" | sha256sum | cut -c1-12)
CACHE="$CACHE_DIR/$(echo "$IMAGE" | tr '/:' '__')-$KEY.tar"
DOCKER=${DOCKER:-docker}

# A pulled image has no label (the Dockerfile installs what it lacks); one
# this script made for another tool list is replaced.
if have=$("$DOCKER" image inspect -f '{{index .Config.Labels "org.stowage.base-tools"}}' "$IMAGE" 2>/dev/null); then
  if [ -z "$have" ] || [ "$have" = "$TOOLS" ]; then
    echo "base-image: $IMAGE is present"
    exit 0
  fi
  echo "base-image: $IMAGE was built with tools $have, not $TOOLS: replacing it"
fi
if [ -s "$CACHE" ]; then
  echo "base-image: loading $IMAGE from $CACHE"
  "$DOCKER" load -i "$CACHE" >/dev/null
  "$DOCKER" image inspect "$IMAGE" >/dev/null
  exit 0
fi
# Older caches were keyed by the image name alone.
rm -f "$CACHE_DIR/$(echo "$IMAGE" | tr '/:' '__').tar"
command -v debootstrap >/dev/null || { echo "base-image: debootstrap not found: apt-get install -y debootstrap" >&2; exit 1; }
mkdir -p "$CACHE_DIR"
# A lock so two test runs on one machine don't debootstrap twice at once.
exec 9>"$CACHE.lock"
flock 9
if [ ! -s "$CACHE" ]; then
  dir=$(mktemp -d /tmp/stowage-base.XXXXXX)
  trap 'rm -rf "$dir"' EXIT
  echo "base-image: debootstrap --variant=minbase $SUITE (a few minutes)"
  debootstrap --variant=minbase --include="$TOOLS" "$SUITE" "$dir" "$MIRROR" >"$dir.log" 2>&1 ||
    { echo "base-image: debootstrap failed; its log:" >&2; tail -30 "$dir.log" >&2; exit 1; }
  rm -f "$dir.log"
  # Slim it as debian:*-slim is: no apt lists, docs or caches.
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb \
         "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/locale/*
  tar --numeric-owner -C "$dir" -c . | "$DOCKER" import --change 'CMD ["bash"]' --change "LABEL org.stowage.base-tools=$TOOLS" - "$IMAGE" >/dev/null
  "$DOCKER" save -o "$CACHE.tmp" "$IMAGE"
  mv "$CACHE.tmp" "$CACHE"
  echo "base-image: built $IMAGE and cached it in $CACHE"
else
  "$DOCKER" load -i "$CACHE" >/dev/null
fi
"$DOCKER" image inspect "$IMAGE" >/dev/null
