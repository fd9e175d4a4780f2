# Rootful Podman on a Debian 12 machine that reaches Debian's mirrors but no
# image registry (docs/development.md, "Containers with Podman"). Used by
# compose/smoke-test.sh and .ci/bare-machine, which run as root. Source it; it
# defines functions only and expects the caller's log().
#
#   podman_setup [PKG...]    installs podman, runc, debootstrap and PKG... when
#                            missing, makes Podman use runc with cgroupfs; returns
#                            77 with the reason in PODMAN_SKIP when Podman cannot
#                            be had or cannot run here
#   podman_base_image DIR    makes $PODMAN_BASE_IMAGE once (debootstrap in DIR)
#
# A configuration Podman did not have is written to /etc/containers; when
# someone else's is there, ours goes to a temporary file named by
# CONTAINERS_CONF (the caller removes it).

PODMAN_BASE_IMAGE=localhost/debian:bookworm

# apt-get with patience: another process may hold the dpkg or lists lock.
podman_apt() {
  local i
  for i in $(seq 60); do
    if DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=60 -q "$@"; then
      return 0
    fi
    log "apt-get $1 failed (lock held by another process?); retrying in 10 s ($i/60)"
    sleep 10
  done
  return 1
}

podman_setup() {
  local need=() p
  PODMAN_SKIP=
  for p in podman runc debootstrap "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null; then
      command -v podman >/dev/null && return 0
      PODMAN_SKIP="podman is not installed and cannot be installed here (no apt-get)"
      return 77
    fi
    log "installing: ${need[*]}"
    podman_apt update >/dev/null || { PODMAN_SKIP="apt-get update failed; cannot install podman"; return 77; }
    podman_apt install -y --no-install-recommends "${need[@]}" >/dev/null ||
      { PODMAN_SKIP="cannot install ${need[*]}"; return 77; }
  fi
  command -v podman >/dev/null || { PODMAN_SKIP="podman is not available"; return 77; }

  # runc, not crun (crun is refused setrlimit on these machines); cgroupfs; no
  # default ulimits
  local conf='[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"'
  if [ ! -e /etc/containers/containers.conf ]; then
    mkdir -p /etc/containers
    printf '%s\n' "$conf" >/etc/containers/containers.conf
  elif ! grep -qs '^runtime *= *"runc"' /etc/containers/containers.conf; then
    # someone else's configuration: leave it, use ours for this run only
    CONTAINERS_CONF=$(mktemp /tmp/tessera-containers-XXXXXX.conf)
    export CONTAINERS_CONF
    printf '%s\n' "$conf" >"$CONTAINERS_CONF"
  fi
  podman info >/dev/null 2>&1 || { PODMAN_SKIP="podman cannot run here: $(podman info 2>&1 | tail -1)"; return 77; }
}

# A minimal Debian 12 (debootstrap's minbase: apt, bash, coreutils, no
# compiler, no sudo) as a local image; about 40 s and 200 MB, once per machine.
podman_base_image() {
  local dir=$1
  podman image exists "$PODMAN_BASE_IMAGE" && return 0
  command -v debootstrap >/dev/null || { PODMAN_SKIP="debootstrap is not available to make $PODMAN_BASE_IMAGE"; return 77; }
  log "making $PODMAN_BASE_IMAGE with debootstrap (once)"
  mkdir -p "$dir"
  if ! debootstrap --variant=minbase bookworm "$dir/rootfs" http://deb.debian.org/debian >"$dir/debootstrap.log" 2>&1; then
    tail -20 "$dir/debootstrap.log" >&2
    log "debootstrap failed"
    return 1
  fi
  tar -C "$dir/rootfs" -c . | podman import - "$PODMAN_BASE_IMAGE" >"$dir/import.log" 2>&1 ||
    { tail -5 "$dir/import.log" >&2; log "podman import failed"; return 1; }
  rm -rf "$dir/rootfs"
}
