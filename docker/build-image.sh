#!/usr/bin/env bash
# Builds the mailstack image from the repository's Dockerfile on the local engine, never pulling:
# the base image must already be there (docker/build-base.sh makes one offline).
#
#   docker/build-image.sh [TAG]        prints the image id (sha256:...) on stdout
#
# Environment: BASE_IMAGE (default: the image docker/build-base.sh builds, built if missing);
# MAILSTACK_BUILD (optional): a label value (mailstack.build) on every stage's image, so a caller
# can prune exactly its own untagged stage images:
#   docker image prune -f --filter label=mailstack.stage --filter label=mailstack.build=$MAILSTACK_BUILD
set -euo pipefail
cd "$(dirname "$0")/.."
TAG="${1:-mailstack:local}"
# One build at a time per machine (they share docker/build-ca/).
exec 9>"${TMPDIR:-/tmp}/mailstack-build-image.lock"
flock 9
BASE_IMAGE="${BASE_IMAGE:-$(bash docker/build-base.sh)}"
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  echo "build-image: base image $BASE_IMAGE is not on this engine (and is never pulled)" >&2
  exit 1
fi
# A TLS-inspecting proxy's CA, for npm inside the build stages only (see docker/build-ca/README.md).
ca="${MAILSTACK_BUILD_CA:-$(npm config get cafile 2>/dev/null || true)}"
case "$ca" in null | undefined | "") ca="${NODE_EXTRA_CA_CERTS:-}" ;; esac
rm -f docker/build-ca/extra.crt
trap 'rm -f docker/build-ca/extra.crt' EXIT
if [ -n "$ca" ] && [ -s "$ca" ]; then cp "$ca" docker/build-ca/extra.crt; fi
start=$SECONDS
# `docker build` takes no --pull=never (its --pull is a boolean): --pull=false plus the check above
# means nothing is pulled. --network host: RUN steps reach the npm registry without a bridge.
DOCKER_BUILDKIT=0 docker build --pull=false --network host --quiet=false \
  --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg MAILSTACK_BUILD="${MAILSTACK_BUILD:-}" -t "$TAG" -f Dockerfile . >&2
echo "build-image: $TAG built in $((SECONDS - start))s" >&2
docker image inspect --format '{{.Id}}' "$TAG"
