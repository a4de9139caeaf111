#!/bin/sh
# Runs as root inside the appliance image's root filesystem, after the
# packages of deploy/appliance.conf are installed: makes the non-root user
# and the agents' work directory. Used by deploy/Dockerfile and by
# scripts/build-appliance-rootfs.sh, so both images get the same files.
#   appliance-setup.sh CONF [--install]
# --install first installs APPLIANCE_PACKAGES with apt, and any .deb in
# the directory debs/ beside CONF (the Dockerfile's way; the script installs
# the packages with mmdebstrap instead).
set -eu
. "$1"
if [ "${2:-}" = --install ]; then
  apt-get update
  # shellcheck disable=SC2086 # a list of package names
  apt-get install -y --no-install-recommends $APPLIANCE_PACKAGES
  for deb in "$(dirname "$1")"/debs/*.deb; do
    if [ -f "$deb" ]; then apt-get install -y --no-install-recommends "$deb"; fi
  done
  rm -rf /var/lib/apt/lists/*
fi
# A non-root user with a numeric uid, so the kubelet can verify
# `runAsNonRoot` from the image alone; the leader sets the same uid
# (podspec::AGENT_UID) in agent pods, and deploy/leader-job.yaml for itself.
groupadd --gid "$APPLIANCE_GID" "$APPLIANCE_USER"
useradd --uid "$APPLIANCE_UID" --gid "$APPLIANCE_GID" --home-dir "$APPLIANCE_HOME" \
  --create-home --shell "$APPLIANCE_SHELL" "$APPLIANCE_USER"
# The agents' work directory and node cache (a hostPath or an emptyDir is
# mounted here in pods; TOIL_WORKDIR moves it).
mkdir -p "$APPLIANCE_WORKDIR"
chown "$APPLIANCE_UID:$APPLIANCE_GID" "$APPLIANCE_WORKDIR"
