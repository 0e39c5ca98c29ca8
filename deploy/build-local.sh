#!/usr/bin/env bash
# deploy/build-local.sh [TAG] - builds deploy/Dockerfile with podman on a machine that reaches
# Debian's archive but not Docker Hub: the two base images the Dockerfile names
# (docker.io/library/debian:bookworm and :bookworm-slim) are made with debootstrap and imported
# under those names, then the image is built with --pull=never. Run as root from anywhere.
#
#   deploy/build-local.sh                      # -> localhost/somaagent:local
#   BUILD_JOBS=1 deploy/build-local.sh somaagent:0.1.0
#
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), BUILD_JOBS (ninja -j in the
# build stage, default 2), PODMAN_BUILD_ARGS (extra podman build options, e.g. "--network host
# --isolation chroot" in a VM without user namespaces), REBUILD_BASE=1 (make the base images again
# although they exist). Needs: podman, debootstrap (apt-get install podman debootstrap).
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-somaagent:local}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
full=docker.io/library/debian:bookworm
slim=docker.io/library/debian:bookworm-slim

for tool in podman debootstrap; do
  command -v "$tool" >/dev/null || { echo "build-local: $tool is missing: apt-get install -y $tool" >&2; exit 1; }
done

if [ "${REBUILD_BASE:-0}" = 1 ] || ! podman image exists "$full" || ! podman image exists "$slim"; then
  work=$(mktemp -d "${TMPDIR:-/var/tmp}/somaagent-base.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  echo "build-local: debootstrap bookworm from $mirror into $work/rootfs" >&2
  debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
  tar -C "$work/rootfs" -c . | podman import --change 'CMD ["bash"]' - "$full" >/dev/null
  # slim, as Docker's: no documentation, manual pages or translations, now or from later installs
  mkdir -p "$work/rootfs/etc/dpkg/dpkg.cfg.d"
  printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
    'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
    'path-exclude /usr/share/locale/*' 'path-include /usr/share/locale/locale.alias' \
    >"$work/rootfs/etc/dpkg/dpkg.cfg.d/slim"
  find "$work/rootfs/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
  rm -rf "$work"/rootfs/usr/share/man/* "$work"/rootfs/usr/share/info/*
  find "$work/rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  tar -C "$work/rootfs" -c . | podman import --change 'CMD ["bash"]' - "$slim" >/dev/null
  echo "build-local: imported $full and $slim" >&2
fi

# shellcheck disable=SC2086
# --format docker: the OCI format has no HEALTHCHECK (podman drops it with a warning)
podman build --pull=never --format docker --build-arg BUILD_JOBS="${BUILD_JOBS:-2}" ${PODMAN_BUILD_ARGS:-} \
  -f deploy/Dockerfile -t "$tag" .
podman image inspect "$tag" --format 'build-local: {{.Id}} {{.Size}} bytes' >&2
