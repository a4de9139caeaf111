#!/usr/bin/env bash
# Builds the appliance image (deploy/Dockerfile's final stage) without a
# Docker daemon, from Debian packages only:
#   1. mmdebstrap: a Debian root filesystem (variant minbase, trimmed like
#      debian:*-slim) with the packages of deploy/appliance.conf, the user and
#      work directory of deploy/appliance-setup.sh (the same script the
#      Dockerfile runs), and the project's binaries where the Dockerfile
#      copies them;
#   2. umoci: packs it as an OCI image layout with the Dockerfile's USER,
#      WORKDIR, ENV PATH and CMD, and unpacks that image into a runtime
#      bundle (config.json + rootfs/), which is what the emulator's kubelet
#      runs pods from (its `--image-bundle NAME=DIR`).
#
# Usage: scripts/build-appliance-rootfs.sh [options]
#   --binaries DIR   where toil-leader and toil-agent are (default
#                    target/release, built with `cargo build --release` when
#                    missing; the tests pass target/debug)
#   --out DIR        cache directory (default target/appliance)
#   --mirror URL     Debian mirror (default $TOIL_APPLIANCE_MIRROR, else
#                    mmdebstrap's default Debian mirror; a snapshot mirror
#                    works too)
#   --withApptainer  include Apptainer. Debian bookworm (the image's suite)
#                    has no apptainer or singularity-container package, so
#                    with bookworm this option fails and says so: build with
#                    deploy/Dockerfile's `--build-arg APPTAINER_DEB_URL=...`
#                    (the stage that fetches Apptainer's release .deb).
#   -h, --help       this text
#
# The result is cached under OUT/KEY, KEY a hash of the inputs (the
# appliance conf and setup script, this script, the options and the
# binaries' contents): a second run with the same inputs only prints the
# path; the three last used builds are kept. The last line of standard output
# is the bundle directory (OUT/KEY/bundle); the OCI layout is OUT/KEY/oci
# (tag `dev`), e.g.
#   umoci ls --layout target/appliance/KEY/oci
#   skopeo copy oci:target/appliance/KEY/oci:dev docker://REGISTRY/toil-appliance:TAG
# Needs root (mmdebstrap's root mode; umoci keeps file owners) and the
# Debian packages mmdebstrap and umoci (scripts/setup-test-env.sh installs
# them).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONF=$ROOT/deploy/appliance.conf
SETUP=$ROOT/deploy/appliance-setup.sh
SELF=$ROOT/scripts/build-appliance-rootfs.sh

log() { printf '[appliance] %s\n' "$*" >&2; }
die() { printf '[appliance] error: %s\n' "$*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$SELF"; }

bins=""
out=$ROOT/target/appliance
mirror=${TOIL_APPLIANCE_MIRROR:-}
with_apptainer=0
while [ $# -gt 0 ]; do
  case "$1" in
    --binaries) bins=${2:?--binaries needs a directory}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --mirror) mirror=${2:?--mirror needs a URL}; shift 2 ;;
    --withApptainer) with_apptainer=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
done

# shellcheck source=../deploy/appliance.conf
. "$CONF"

[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap --mode=root, and umoci keeps file owners only as root)"
for tool in mmdebstrap umoci; do
  command -v "$tool" >/dev/null ||
    die "$tool is not installed: run scripts/setup-test-env.sh (or apt-get install mmdebstrap umoci)"
done

packages=$APPLIANCE_PACKAGES
if [ "$with_apptainer" = 1 ]; then
  if [ "$APPLIANCE_SUITE" = bookworm ]; then
    die "--withApptainer: Debian bookworm has no apptainer (nor singularity-container) package, so this script cannot add it; build the image with deploy/Dockerfile and --build-arg APPTAINER_DEB_URL=<Apptainer's release .deb for amd64>"
  fi
  packages="$packages apptainer"
fi

if [ -z "$bins" ]; then
  bins=$ROOT/target/release
  missing=0
  for b in $APPLIANCE_BINARIES; do [ -x "$bins/$b" ] || missing=1; done
  if [ "$missing" = 1 ]; then
    log "building the release binaries ($APPLIANCE_BINARIES)"
    # shellcheck disable=SC2046 # one -p per binary
    (cd "$ROOT" && cargo build --release --locked $(printf -- '-p %s ' $APPLIANCE_BINARIES) --bins)
  fi
fi
bins=$(cd "$bins" && pwd)
for b in $APPLIANCE_BINARIES; do
  [ -x "$bins/$b" ] || die "$bins/$b is missing: build it (cargo build -p $b) or pass --binaries DIR"
done

# The cache key: everything that decides the image's contents.
key=$(
  {
    sha256sum "$CONF" "$SETUP" "$SELF" | cut -d' ' -f1
    printf 'packages=%s apptainer=%s\n' "$packages" "$with_apptainer"
    for b in $APPLIANCE_BINARIES; do sha256sum "$bins/$b" | cut -d' ' -f1; done
  } | sha256sum | cut -c1-16
)
mkdir -p "$out"
out=$(cd "$out" && pwd)
dir=$out/$key

if [ ! -f "$dir/built" ]; then
  exec 9>"$out/.lock"
  flock 9
fi
if [ -f "$dir/built" ]; then
  touch "$dir" # the newest used, for the pruning below
  log "cached: $dir ($(cat "$dir/built"))"
  printf '%s\n' "$dir/bundle"
  exit 0
fi

start=$(date +%s)
tmp=$out/.build-$key-$$
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

hooks=(
  --customize-hook="upload $CONF /tmp/appliance.conf"
  --customize-hook="upload $SETUP /tmp/appliance-setup.sh"
  --customize-hook='chroot "$1" sh /tmp/appliance-setup.sh /tmp/appliance.conf'
  --customize-hook='rm -f "$1/tmp/appliance.conf" "$1/tmp/appliance-setup.sh"'
)
for b in $APPLIANCE_BINARIES; do
  hooks+=(
    --customize-hook="upload $bins/$b $APPLIANCE_BINDIR/$b"
    --customize-hook="chmod 0755 \"\$1$APPLIANCE_BINDIR/$b\""
  )
done
log "mmdebstrap $APPLIANCE_SUITE (minbase + $packages) from ${mirror:-the default mirror}"
mirror_arg=()
[ -n "$mirror" ] && mirror_arg=("$mirror")
# The path filters are those of the debian:*-slim images.
mmdebstrap --mode=root --variant=minbase --format=tar --skip=output/dev \
  --include="${packages// /,}" \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/groff/*' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' \
  "${hooks[@]}" \
  "$APPLIANCE_SUITE" "$tmp/rootfs.tar" "${mirror_arg[@]}" >&2 ||
  die "mmdebstrap failed (see its messages above); if the Debian mirror (${mirror:-the default}) is unreachable, give another with --mirror URL or TOIL_APPLIANCE_MIRROR (a Debian snapshot mirror works)"
debootstrapped=$(date +%s)

log "packing the OCI image with umoci"
image=$tmp/oci:dev
umoci init --layout "$tmp/oci"
umoci new --image "$image"
umoci raw add-layer --image "$image" "$tmp/rootfs.tar"
rm -f "$tmp/rootfs.tar"
read -r -a cmd <<<"$APPLIANCE_CMD"
cmd_args=()
for a in "${cmd[@]}"; do cmd_args+=(--config.cmd "$a"); done
umoci config --image "$image" \
  --config.user "$APPLIANCE_UID:$APPLIANCE_GID" \
  --config.workingdir "$APPLIANCE_WORKDIR" \
  --config.env "PATH=$APPLIANCE_PATH" \
  "${cmd_args[@]}"
# The bundle the kubelet runs is unpacked from the image, not the tar.
umoci unpack --image "$image" "$tmp/bundle" >&2
umoci gc --layout "$tmp/oci"

end=$(date +%s)
info="built in $((end - start)) s (mmdebstrap $((debootstrapped - start)) s); OCI image $(du -sh "$tmp/oci" | cut -f1), rootfs $(du -sh "$tmp/bundle/rootfs" | cut -f1)"
printf '%s\n' "$info" >"$tmp/built"
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
# Keep the three last used builds (a few hundred MB each).
find "$out" -mindepth 1 -maxdepth 1 -type d -name '????????????????' -printf '%T@ %p\n' |
  sort -rn | tail -n +4 | cut -d' ' -f2- | xargs -r rm -rf
log "$info: $dir"
printf '%s\n' "$dir/bundle"
