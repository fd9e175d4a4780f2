# Shared by scripts/run, scripts/test and bench/: packages, build, and the
# throwaway PostgreSQL and Redis servers. Source it; it defines functions only.

TESSERA_ROOT=${TESSERA_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

# Debian 12 packages, by purpose.
PKGS_BUILD="build-essential cmake pkg-config protobuf-c-compiler libprotobuf-c-dev libnng-dev
  libdcmtk-dev libpq-dev libhiredis-dev libmicrohttpd-dev libjansson-dev libssl-dev uuid-dev
  libarchive-dev libcurl4-openssl-dev zlib1g-dev libxml2-dev libgnutls28-dev libopenjp2-7-dev"
PKGS_RUN="postgresql redis-server dcmtk libopenjp2-7"
# the libFuzzer targets (scripts/fuzz; scripts/test runs them over their corpus)
PKGS_FUZZ="clang"
PKGS_TEST="libcmocka-dev python3 python3-pytest python3-pytest-xdist python3-pydicom python3-numpy python3-psycopg2
  python3-jwt python3-cryptography
  orthanc orthanc-dicomweb orthanc-gdcm haproxy chromium libgdcm-tools libopenjp2-tools"  # orthanc (+ its DICOMweb and GDCM plugins): the references the tests compare with; gdcmconv, opj_compress: JPEG 2000 test files (tests/unit/test_transcode.c); haproxy: DICOMweb URLs behind it; chromium: CORS and the web UI in a browser; jwt/cryptography: tokens in test_auth.py; xdist: the integration files on several workers
# the image tests (tests/integration/test_image.py): libpng/libjpeg for lib/dicom/image.cc
# (PKGS_BUILD), PIL to read PNG/JPEG answers
PKGS_BUILD="$PKGS_BUILD libpng-dev libjpeg-dev"
PKGS_RUN="$PKGS_RUN libpng16-16 libjpeg62-turbo"
PKGS_TEST="$PKGS_TEST python3-pil"
# ss (test_dicomweb.py: the send buffer of a retrieve's socket)
PKGS_TEST="$PKGS_TEST iproute2"
# scripts/fetch-viewer minifies OHIF's bundles (test_ui.py's viewer tests)
PKGS_TEST="$PKGS_TEST esbuild"
# Orthanc's Lua scripts (lib/domain/lua_scripts.c): Debian's Lua 5.4
PKGS_BUILD="$PKGS_BUILD liblua5.4-dev"
PKGS_RUN="$PKGS_RUN liblua5.4-0"
# bench/run: Orthanc with its PostgreSQL index plugin as the reference, wrk for HTTP load
PKGS_BENCH="postgresql dcmtk python3 python3-pydicom python3-numpy python3-psycopg2
  python3-pytest orthanc orthanc-postgresql wrk gnuplot-nox"  # gnuplot: bench/plot

log() { printf '%s\n' "$*" >&2; }

# Installs the Debian packages that are missing (as root, or through sudo).
# When it cannot, it says in one line which packages are missing and returns 1.
ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      log "missing Debian packages: ${missing[*]} (as root: apt-get install ${missing[*]})"
      return 1
    fi
    sudo=(sudo)
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    log "missing Debian packages: ${missing[*]}, and no apt-get to install them (Tessera's scripts expect Debian 12)"
    return 1
  fi
  log "installing: ${missing[*]}"
  local out
  out=$(mktemp)
  # DPkg::Lock::Timeout: wait for another apt/dpkg instead of failing at once
  if ! "${sudo[@]}" apt-get -q -o DPkg::Lock::Timeout=300 update >"$out" 2>&1 ||
    ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 \
      --no-install-recommends "${missing[@]}" >"$out" 2>&1; then
    tail -5 "$out" >&2
    rm -f "$out"
    log "could not install the Debian packages ${missing[*]} (apt-get's last lines above)"
    return 1
  fi
  rm -f "$out"
}

# build_tree DIR [cmake args...]: configures (RelWithDebInfo unless the args say
# otherwise) and builds DIR. The packages must be there (ensure_packages); a tool
# that is still missing is named with its Debian package before cmake runs.
build_tree() {
  local dir=$1; shift
  local tool deb
  for tool in cmake:cmake cc:build-essential c++:build-essential make:build-essential pkg-config:pkg-config; do
    deb=${tool#*:}; tool=${tool%%:*}
    command -v "$tool" >/dev/null 2>&1 || { log "$tool not found: install the Debian package $deb (apt-get install $deb)"; return 1; }
  done
  cmake -S "$TESSERA_ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null || return 1
  cmake --build "$dir" -j"$(nproc)"
}

# Runs a command as the owner of PostgreSQL's files: PostgreSQL refuses to run as root.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# pg_start DATADIR SOCKETDIR PORT: creates the cluster on first use (superuser
# "tessera", trust on the unix socket only) and starts it; the database
# "tessera" exists afterwards. Listens on the unix socket only.
pg_start() {
  local data=$1 sock=$2 port=$3
  mkdir -p "$data" "$sock"
  if [ "$(id -u)" -eq 0 ]; then chown postgres "$data" "$sock"; chmod 700 "$data"; fi
  if [ ! -f "$data/PG_VERSION" ]; then
    as_pg "$PG_BIN/initdb" -D "$data" -U tessera -A trust -E UTF8 --no-locale >/dev/null
  fi
  as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
    -o "-c listen_addresses='' -k $sock -p $port -c fsync=${TESSERA_PG_FSYNC:-on} -c max_connections=200" \
    start >/dev/null
  as_pg "$PG_BIN/psql" -h "$sock" -p "$port" -U tessera -d postgres -tAq \
    -c "SELECT 1 FROM pg_database WHERE datname = 'tessera'" | grep -q 1 ||
    as_pg "$PG_BIN/createdb" -h "$sock" -p "$port" -U tessera tessera
}

pg_stop() {
  local data=$1
  [ -f "$data/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null || true
}

# redis_start DIR SOCKET: AOF persistence on, unix socket only. Writes DIR/redis.pid.
redis_start() {
  local dir=$1 sock=$2
  mkdir -p "$dir"
  redis-server --port 0 --unixsocket "$sock" --unixsocketperm 700 --dir "$dir" \
    --appendonly yes --save "" --daemonize yes --pidfile "$dir/redis.pid" \
    --logfile "$dir/redis.log"
  for _ in $(seq 50); do [ -S "$sock" ] && return 0; sleep 0.1; done
  log "redis did not start: see $dir/redis.log"; return 1
}

redis_stop() {
  local dir=$1
  [ -f "$dir/redis.pid" ] && kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
}

# A TCP port nobody listens on now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
