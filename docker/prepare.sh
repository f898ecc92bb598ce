#!/usr/bin/env bash
# Prepares this machine for the real-engine tests (test/docker-engine.test.ts), as CI does before
# `npx jest`:
#   1. installs Debian's docker.io and debootstrap when missing;
#   2. starts dockerd in the background when no engine answers (log: $MAILSTACK_DOCKERD_LOG,
#      default /var/log/mailstack-dockerd.log; pid: /run/mailstack-dockerd.pid). It runs without
#      a bridge or iptables rules (--bridge=none --iptables=false): mailstack's containers use the
#      host network, so the engine needs neither, and it touches nothing of the host's firewall;
#   3. builds the offline base image (debootstrap minbase + Node 22 from the npm registry) unless
#      it is already there; the debootstrap tarball is cached in /var/cache/mailstack.
# Idempotent: a second run finds everything in place and takes about a second.
# Must run as root (it installs packages and starts a daemon).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "prepare: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "must run as root (apt-get, dockerd)"
  exit 1
fi

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  logfile="${MAILSTACK_DOCKERD_LOG:-/var/log/mailstack-dockerd.log}"
  pidfile=/run/mailstack-dockerd.pid
  log "starting dockerd (log $logfile)"
  # The Debian package's own service may be half-started by apt; dockerd's default pid file
  # (/var/run/docker.pid) then stops a second one, so remove it only if its process is gone.
  if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then rm -f /var/run/docker.pid; fi
  nohup dockerd --bridge=none --iptables=false --ip6tables=false >>"$logfile" 2>&1 </dev/null &
  echo $! >"$pidfile"
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      log "dockerd exited:"
      tail -n 20 "$logfile" >&2
      exit 1
    fi
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { log "dockerd did not answer within 30s"; tail -n 20 "$logfile" >&2; exit 1; }
fi
log "engine $(docker info --format '{{.ServerVersion}}') ready"

start=$SECONDS
base="$(bash docker/build-base.sh)"
log "base image $base ready ($((SECONDS - start))s)"
