#!/usr/bin/env bash
# Smoke test of the compose deployment, with Podman and podman-compose (the CI
# machines have no Docker engine; see docs/development.md, "Containers with Podman"):
#
#   1. installs podman, podman-compose, runc, the CNI dnsname plugin, debootstrap,
#      dcmtk (apt) if missing,
#      and configures Podman to use runc with cgroupfs;
#   2. builds a local Debian base image with debootstrap (once; cached as
#      localhost/debian:bookworm), the Tessera image (compose/Dockerfile) and the
#      stand-ins for postgres/redis/haproxy (compose/local-images), one at a time;
#   3. starts compose.yaml with 2 replicas of each Tessera service, waits until
#      every container's compose health check passes, and checks that the
#      health check of ingest, query and rest fails on a DICOM/HTTP port that
#      does not answer;
#   4. checks that every rest replica has a bus connection to every ingest replica;
#   5. stores 4 studies through haproxy's DICOM port with storescu over 4
#      parallel associations and, in the middle of the transfer, stops one
#      ingest replica with SIGTERM (podman stop: running associations may
#      finish); checks that every instance storescu was told was stored is
#      readable through haproxy's HTTP port (the same dataset), stores everything
#      again through what remains, and checks the totals from each rest replica;
#   6. uploads through REST while that replica is down (rest -> bus -> the other
#      ingest replica), reads them back, starts the replica again; then repeats
#      step 5 with a crash: the other replica's process is killed (SIGKILL),
#      associations are cut, and its restart policy must bring it back;
#   7. recreates the containers (down without -v, up; what an upgrade does) and
#      checks that the index and the files survived; scales ingest to 3 on the running stack: haproxy and every rest replica
#      find the new replica;
#   8. tears everything down (containers, network, volumes).
# Between 3 and 4: REST over HTTPS through haproxy with the self-signed
# certificate the tls-cert service made at the first start (curl --cacert), kept
# when the containers are recreated.
#
# Exit status: 0 passed, 1 failed, 77 skipped (Podman unavailable and not installable).
# Environment: SMOKE_KEEP=1 leaves the stack running for a look; SMOKE_PROJECT,
# SMOKE_TESSERA_IMAGE: the compose project and image tag (tessera-smoke,
# localhost/tessera:latest);
# SMOKE_INSTANCES=N instances per stream (default 200, at most 396).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PROJECT=${SMOKE_PROJECT:-tessera-smoke}
BASE_IMAGE=localhost/debian:bookworm # scripts/lib/podman.sh makes it
STREAMS=4
PER_STREAM=${SMOKE_INSTANCES:-200}
START=$(date +%s)

log() { printf '[smoke %4ds] %s\n' "$(($(date +%s) - START))" "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
skip() { log "SKIP: $*"; exit 77; }

# Rootful Podman (docs/development.md): run as root, through sudo if need be.
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    exec sudo -n --preserve-env=SMOKE_KEEP,SMOKE_INSTANCES,SMOKE_PROJECT,SMOKE_DICOM_PORT,SMOKE_HTTP_PORT,SMOKE_HTTPS_PORT,SMOKE_TESSERA_IMAGE "$0" "$@"
  fi
  skip "needs root (or sudo without a password) for rootful Podman"
fi

source "$ROOT/scripts/lib/podman.sh"

# ---- 1. tools ---------------------------------------------------------------
# dnsname: service names resolve between containers on Podman's CNI networks
# (Podman only recommends it, and recommends are not installed here)
rc=0
podman_setup podman-compose golang-github-containernetworking-plugin-dnsname \
  dcmtk curl python3 python3-pydicom python3-numpy || rc=$?
[ $rc = 0 ] || { [ $rc = 77 ] && skip "$PODMAN_SKIP"; fail "podman setup"; }
for t in podman-compose storescu curl; do
  command -v "$t" >/dev/null || skip "$t is not available"
done

WORK=$(mktemp -d /tmp/tessera-smoke-XXXXXX)
chmod 700 "$WORK"
STACK=0 # 1 once the stack may have containers

teardown() {
  local rc=$?
  trap - EXIT INT TERM
  if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
    log "logs of the failed run (last lines of each container):"
    for c in $(podman ps -a --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Names}}'); do
      echo "---- $c" >&2; podman logs --tail 15 "$c" >&2 2>&1 || true
    done
  fi
  if [ "$STACK" = 0 ]; then
    :
  elif [ "${SMOKE_KEEP:-0}" = 1 ]; then
    log "SMOKE_KEEP=1: stack left running: REST $HTTP, DICOM 127.0.0.1:$DICOM_PORT; stop with: podman-compose -p $PROJECT -f $HERE/compose.yaml down -v"
  else
    compose down -v >"$WORK/down.log" 2>&1 || true
    # whatever down left behind (podman-compose 1.0 forgets replicas it was not told about)
    cleanup_project
  fi
  if [ "${SMOKE_KEEP:-0}" = 1 ]; then
    log "SMOKE_KEEP=1: $WORK kept (the stack's secret and test data)"
  else
    rm -rf "$WORK" ${CONTAINERS_CONF:+"$CONTAINERS_CONF"}
  fi
  log "done in $(($(date +%s) - START)) s, exit $rc"
  exit $rc
}
trap teardown EXIT
trap 'exit 1' INT TERM

# ---- 2. images ----------------------------------------------------------------
build() { # build TAG CONTEXT [args...]
  local tag=$1 ctx=$2; shift 2
  local t0=$(date +%s)
  podman build -q --network host --ulimit nofile=20000:20000 --build-arg BASE="$BASE_IMAGE" \
    -t "$tag" "$@" "$ctx" >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log" >&2; fail "build of $tag"; }
  log "built $tag ($(($(date +%s) - t0)) s)"
}
rc=0
podman_base_image "$WORK/base" || rc=$?
[ $rc = 0 ] || { [ $rc = 77 ] && skip "$PODMAN_SKIP"; fail "making $BASE_IMAGE"; }
# One build at a time: the machines have few cores.
# SMOKE_TESSERA_IMAGE: another tag, so that two worktrees of one machine
# (one Podman store) do not run each other's build
TESSERA_TAG=${SMOKE_TESSERA_IMAGE:-localhost/tessera:latest}
build "$TESSERA_TAG" "$ROOT" -f "$ROOT/compose/Dockerfile"
build localhost/tessera-postgres:15 "$HERE/local-images/postgres"
build localhost/tessera-redis:7 "$HERE/local-images/redis"
build localhost/tessera-haproxy:2.8 "$HERE/local-images/haproxy"

# ---- 3. start -------------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
printf '%s' "$(head -c 18 /dev/urandom | base64 | tr -d '/+=')" >"$WORK/db_password"
chmod 644 "$WORK/db_password" # read by the services' non-root user; $WORK is 0700
export TESSERA_IMAGE=$TESSERA_TAG
export POSTGRES_IMAGE=localhost/tessera-postgres:15
export REDIS_IMAGE=localhost/tessera-redis:7
export HAPROXY_IMAGE=localhost/tessera-haproxy:2.8
export INGEST_REPLICAS=2 REST_REPLICAS=2 QUERY_REPLICAS=2 DELETER_REPLICAS=2 JOBS_REPLICAS=2
export DB_PASSWORD_FILE=$WORK/db_password
# REST users (a compose secret too): rest listens beyond loopback, so
# authentication is on; $HTTP below carries the credentials
HTTP_PW=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
printf 'smoke:%s\n' "$HTTP_PW" >"$WORK/http_users"
chmod 644 "$WORK/http_users"
export HTTP_USERS_FILE=$WORK/http_users
# free host ports: other copies of Tessera may use 4242/8042 on this machine
export DICOM_PORT=${SMOKE_DICOM_PORT:-$(free_port)} HTTP_PORT=${SMOKE_HTTP_PORT:-$(free_port)}
export QUERY_DICOM_PORT=${SMOKE_QUERY_DICOM_PORT:-$(free_port)}
export HTTPS_PORT=${SMOKE_HTTPS_PORT:-$(free_port)}
# haproxy's certificate: none given, so the tls-cert service makes one there
export TLS_CERT_DIR=$WORK/tls
mkdir -m 755 "$TLS_CERT_DIR"
HTTP=http://smoke:$HTTP_PW@127.0.0.1:$HTTP_PORT
compose() { podman-compose -p "$PROJECT" -f "$HERE/compose.yaml" "$@"; }


cleanup_project() {
  podman ps -aq --filter "label=io.podman.compose.project=$PROJECT" | xargs -r podman rm -f -t 5 >/dev/null 2>&1 || true
  podman volume ls -q --filter "label=io.podman.compose.project=$PROJECT" | xargs -r podman volume rm -f >/dev/null 2>&1 || true
  podman network rm -f "${PROJECT}_default" >/dev/null 2>&1 || true
}
STACK=1
compose down -v >/dev/null 2>&1 || true # leftovers of an interrupted run
cleanup_project
log "starting the stack: 2 ingest, 2 rest, 2 query, 2 deleter, 2 jobs, postgres, redis, haproxy (DICOM :$DICOM_PORT, HTTP :$HTTP_PORT, HTTPS :$HTTPS_PORT, Q/R :$QUERY_DICOM_PORT)"
compose up -d --no-build >"$WORK/up.log" 2>&1 || { tail -30 "$WORK/up.log" >&2; fail "podman-compose up"; }

containers() { podman ps -a --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Names}}' | sort; }
service_containers() { podman ps --filter "label=io.podman.compose.project=$PROJECT" \
  --filter "label=com.docker.compose.service=$1" --format '{{.Names}}' | sort; }
[ "$(service_containers ingest | wc -l)" = 2 ] || fail "expected 2 ingest containers: $(containers | tr '\n' ' ')"
[ "$(service_containers rest | wc -l)" = 2 ] || fail "expected 2 rest containers: $(containers | tr '\n' ' ')"
[ "$(service_containers query | wc -l)" = 2 ] || fail "expected 2 query containers: $(containers | tr '\n' ' ')"
[ "$(service_containers deleter | wc -l)" = 2 ] || fail "expected 2 deleter containers: $(containers | tr '\n' ' ')"
[ "$(service_containers jobs | wc -l)" = 2 ] || fail "expected 2 jobs containers: $(containers | tr '\n' ' ')"

# Health checks of compose.yaml, run by hand: without systemd, Podman does not
# schedule them (Docker does).
wait_healthy() {
  local deadline=$(($(date +%s) + ${1:-180})) c pending
  while :; do
    pending=()
    for c in $(podman ps --filter "label=io.podman.compose.project=$PROJECT" --format '{{.Names}}'); do
      podman healthcheck run "$c" >/dev/null 2>&1 || pending+=("$c")
    done
    [ ${#pending[@]} -eq 0 ] && return 0
    [ "$(date +%s)" -ge "$deadline" ] && fail "not healthy: ${pending[*]}"
    sleep 2
  done
}
wait_healthy 180
log "every container is healthy: $(containers | tr '\n' ' ')"

# The health checks look at the service's own port, not only at /health: the
# same check fails when pointed at a port where nothing answers.
for check in "ingest dicom 4242" "query dicom 4252" "rest http 8042"; do
  set -- $check
  c=$(service_containers "$1" | head -1)
  podman exec "$c" tessera-health "$2" "$3" >/dev/null 2>&1 || fail "tessera-health $2 $3 fails in $c"
  podman exec "$c" tessera-health "$2" 9 >/dev/null 2>&1 && fail "tessera-health $2 passes in $c on a port where nothing listens"
done
log "the health checks pass on the services' DICOM/HTTP ports and fail on a dead port"

# Through haproxy: both ports answer.
curl -fsS --retry 10 --retry-delay 1 --retry-all-errors "$HTTP/system" >"$WORK/system.json" || fail "GET /system through haproxy"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/system")" = 401 ] ||
  fail "REST answers without credentials"

TCP_NODELAY=1 echoscu -aec TESSERA 127.0.0.1 "$DICOM_PORT" || fail "C-ECHO through haproxy"
for _ in 1 2 3 4 5 6; do curl -fsS -o /dev/null "$HTTP/statistics" || fail "GET /statistics through haproxy"; done
servers=$(podman logs "$(service_containers haproxy)" 2>&1 | grep -o ' http rest/rest-[0-9]*' | sort -u | wc -l)
[ "$servers" -ge 2 ] || fail "haproxy sent HTTP to $servers rest replica(s), expected 2"
log "haproxy answers GET /system and C-ECHO, and balances HTTP over both rest replicas"

# HTTPS through haproxy, with the self-signed certificate made at the first
# start: verified against it (curl --cacert), refused without it
[ -s "$TLS_CERT_DIR/tessera.pem" ] && [ -s "$TLS_CERT_DIR/tessera.crt" ] ||
  fail "no certificate made in $TLS_CERT_DIR: $(ls -A "$TLS_CERT_DIR")"
HTTPS=https://localhost:$HTTPS_PORT
curl -fsS --cacert "$TLS_CERT_DIR/tessera.crt" -u "smoke:$HTTP_PW" --retry 10 --retry-delay 1 \
  --retry-all-errors "$HTTPS/system" >"$WORK/system-tls.json" || fail "GET /system over HTTPS (curl --cacert)"
cmp -s "$WORK/system.json" "$WORK/system-tls.json" || fail "GET /system differs over HTTPS"
[ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$TLS_CERT_DIR/tessera.crt" "$HTTPS/system")" = 401 ] ||
  fail "REST answers over HTTPS without credentials"
rc=0; curl -sS -o /dev/null -u "smoke:$HTTP_PW" "$HTTPS/system" 2>/dev/null || rc=$?
[ $rc = 60 ] || fail "curl without the certificate: exit $rc, expected 60 (certificate not trusted)"
CERT_SHA=$(sha256sum <"$TLS_CERT_DIR/tessera.pem")
log "HTTPS on haproxy :$HTTPS_PORT with the self-signed certificate made at the first start (curl --cacert; exit 60 without it)"

# Deployment properties: non-root services, Redis with AOF, no password in any
# image or container configuration (only in the secret file).
for c in $(service_containers ingest) $(service_containers rest); do
  [ "$(podman exec "$c" id -u)" = 10001 ] || fail "$c does not run as the tessera user (uid 10001)"
done
[ "$(podman exec "$(service_containers redis)" redis-cli config get appendonly | tail -1)" = yes ] ||
  fail "redis runs without AOF"
pw=$(cat "$WORK/db_password")
for secret in "$pw" "$HTTP_PW"; do
  for c in $(containers); do
    podman inspect "$c" | grep -qF "$secret" && fail "a password is in the configuration of $c"
  done
done
for c in $(containers); do
  podman inspect "$c" | grep -qF "$pw" && fail "the database password is in the configuration of $c"
done
for i in "$TESSERA_IMAGE" "$POSTGRES_IMAGE"; do
  podman image inspect "$i" | grep -qF "$pw" && fail "the database password is in image $i"
done
log "services run as uid 10001, redis has AOF on, the password is in no image or container configuration"

# ---- 4. replica discovery on the bus -------------------------------------------
# Every rest replica must have a connection to port 7410 of every ingest replica.
ip_of() { podman inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1"; }
bus_peers() { # established TCP connections of a container to port 7410, as dotted IPs
  podman exec "$1" cat /proc/net/tcp | awk 'NR > 1 && $4 == "01" { split($3, a, ":"); if (a[2] == "1CF2") print a[1] }' |
    while read -r hex; do printf '%d.%d.%d.%d\n' 0x${hex:6:2} 0x${hex:4:2} 0x${hex:2:2} 0x${hex:0:2}; done | sort -u
}
check_bus_mesh() {
  local ingest_ips=() c r ok peers
  for c in $(service_containers ingest); do ingest_ips+=("$(ip_of "$c")"); done
  for r in $(service_containers rest); do
    ok=0
    for _ in $(seq 30); do
      peers=$(bus_peers "$r")
      ok=1; for ip in "${ingest_ips[@]}"; do grep -qx "$ip" <<<"$peers" || ok=0; done
      [ $ok = 1 ] && break
      sleep 1
    done
    [ $ok = 1 ] || fail "$r is not connected to every ingest replica (${ingest_ips[*]}); it has: $(echo $peers)"
  done
  log "every rest replica is connected to every ingest replica on the bus (${ingest_ips[*]})"
}
check_bus_mesh

# ---- 5. DICOM through haproxy, an ingest replica stopped mid-transfer ----------
count() { curl -fsS "$HTTP/statistics" | python3 -c 'import json,sys; print(json.load(sys.stdin)["CountInstances"])'; }

# Each of them: found by its SOP Instance UID, and the same dataset comes back.
check_stored() { # FILE-LIST
  /usr/bin/python3 - "$HTTP" "$1" <<'PY'
import base64, io, json, sys, urllib.parse, urllib.request
import pydicom
http, listing = sys.argv[1], sys.argv[2]
# $HTTP carries the REST user as http://user:password@host:port
u = urllib.parse.urlsplit(http)
http = f"{u.scheme}://{u.hostname}:{u.port}"
auth = {"Authorization": "Basic " + base64.b64encode(f"{u.username}:{u.password}".encode()).decode()}
bad = 0
files = [l.strip() for l in open(listing) if l.strip()]
for path in files:
    uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
    try:
        req = urllib.request.Request(http + "/tools/lookup", data=uid.encode(), method="POST",
                                     headers=auth)
        hits = [h for h in json.load(urllib.request.urlopen(req, timeout=30)) if h.get("Type") == "Instance"]
        if len(hits) != 1:
            raise RuntimeError(f"lookup gave {hits}")
        body = urllib.request.urlopen(urllib.request.Request(
            f"{http}/instances/{hits[0]['ID']}/file", headers=auth), timeout=60).read()
        # the same dataset (the file meta header is the receiver's own)
        if pydicom.dcmread(io.BytesIO(body)) != pydicom.dcmread(path):
            raise RuntimeError("a different dataset came back")
    except Exception as e:
        bad += 1
        if bad <= 10:
            print(f"  not readable: {path} (SOP {uid}): {e}", file=sys.stderr)
print(f"{len(files) - bad} of {len(files)} readable", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
}

storescu_stream() { # DIR LOG: one association for a whole study
  TCP_NODELAY=1 storescu -v -aec TESSERA -to 30 -ta 30 -td 60 +sd +r 127.0.0.1 "$DICOM_PORT" "$1" >"$2" 2>&1
}

# transfer_with_stop NAME SEED VICTIM HOW: stores STREAMS studies over as many
# associations; when a tenth is stored, stops VICTIM (HOW: "stop" = SIGTERM,
# which lets running associations finish, SIGKILL after 10 s; "kill" = SIGKILL
# at once: associations are cut); checks that every instance storescu was told
# was stored is readable; then stores everything again through what remains.
expected=0
transfer_with_stop() {
  local name=$1 seed=$2 victim=$3 how=$4 dir="$WORK/$1" i p n
  /usr/bin/python3 "$ROOT/tests/tools/gendicom.py" --out "$dir" --patients "$STREAMS" --seed "$seed" \
    --series-per-study 4 --instances-per-series $((PER_STREAM / 4)) --size 256 -q
  # (4 series: gendicom.py fails with 100 or more instances per series)
  local studies=("$dir"/*/*) total before
  total=$(find "$dir" -name '*.dcm' | wc -l)
  before=$(count)
  local pids=()
  for i in "${!studies[@]}"; do
    storescu_stream "${studies[$i]}" "$dir-storescu-$i.log" &
    pids+=($!)
  done
  log "$name: storing $total instances over $STREAMS associations"
  local stopped=0 alive
  for _ in $(seq 600); do
    n=$(($(count 2>/dev/null || echo "$before") - before))
    if [ "$n" -ge $((total / 10)) ]; then
      if [ "$how" = kill ]; then
        log "$name: $n of $total stored: killing $victim's process (SIGKILL, as in a crash)"
        local pid
        pid=$(podman inspect -f '{{.State.Pid}}' "$victim")
        kill -KILL "$pid"
      else
        log "$name: $n of $total stored: stopping $victim (SIGTERM; SIGKILL after 10 s)"
        podman stop -t 10 "$victim" >/dev/null 2>>"$WORK/podman.log" || { cat "$WORK/podman.log" >&2; fail "podman stop $victim"; }
      fi
      stopped=1
      break
    fi
    alive=0; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 1 ] || break
    sleep 0.1
  done
  [ $stopped = 1 ] || fail "$name: the transfer ended before $victim could be stopped (raise SMOKE_INSTANCES)"
  local failed=0
  for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done

  # What storescu was told was stored: "Sending file: X" then "Received Store Response (Success|Warning)".
  cat "$dir"-storescu-*.log | awk '
    /Sending file: / { sub(/.*Sending file: /, ""); file = $0; next }
    /Received Store Response \((Success|Warning)/ { if (file != "") print file; file = "" }
  ' | sort -u >"$dir-stored.txt"
  local reported
  reported=$(wc -l <"$dir-stored.txt")
  log "$name: $failed of $STREAMS associations failed; storescu reported $reported of $total stored"
  [ "$reported" -gt 0 ] || fail "$name: storescu reported nothing stored: $(tail -3 "$dir-storescu-0.log")"
  check_stored "$dir-stored.txt" || fail "$name: instances that storescu reported stored are not readable through REST"
  log "$name: all $reported instances reported stored are readable through haproxy :$HTTP_PORT (same datasets)"

  # What remains takes everything: send every study again (stored ones answer Success too).
  for i in "${!studies[@]}"; do
    storescu_stream "${studies[$i]}" "$dir-storescu-again-$i.log" ||
      fail "$name: storescu again, after the stop: $(tail -3 "$dir-storescu-again-$i.log")"
  done
  expected=$((expected + total))
  for r in $(service_containers rest); do
    n=$(podman exec "$r" curl -fsS -u "smoke:$HTTP_PW" http://127.0.0.1:8042/statistics | python3 -c 'import json,sys; print(json.load(sys.stdin)["CountInstances"])')
    [ "$n" = "$expected" ] || fail "$name: $r counts $n instances, expected $expected"
  done
  log "$name: after a second pass: $expected instances in all, seen from each rest replica"
}

ingest_replicas=($(service_containers ingest))
transfer_with_stop graceful-stop 1 "${ingest_replicas[0]}" stop

# ---- 6. upload through REST while that replica is down: rest -> bus -> the other
/usr/bin/python3 "$ROOT/tests/tools/gendicom.py" --out "$WORK/upload" --patients 1 \
  --instances-per-series 10 --seed 7 -q
for f in "$WORK"/upload/*/*/*/*.dcm; do
  code=$(curl -sS -o "$WORK/upload.json" -w '%{http_code}' -X POST --data-binary @"$f" "$HTTP/instances")
  [ "$code" = 200 ] || fail "POST /instances gave $code: $(cat "$WORK/upload.json")"
done
expected=$((expected + 10))
find "$WORK/upload" -name '*.dcm' >"$WORK/uploaded.txt"
check_stored "$WORK/uploaded.txt" || fail "instances uploaded through REST are not readable"
log "10 instances uploaded through REST with ${ingest_replicas[0]} down (rest -> bus -> ingest) and read back"

podman start "${ingest_replicas[0]}" >/dev/null 2>>"$WORK/podman.log" || { cat "$WORK/podman.log" >&2; fail "podman start ${ingest_replicas[0]}"; }
wait_healthy 120
log "${ingest_replicas[0]} started again and healthy"

# A crash: the replica's process is killed from outside (not `podman kill`, which
# counts as stopped by the user), so its restart policy must bring it back.
transfer_with_stop crash 2 "${ingest_replicas[1]}" kill
studies=$(curl -fsS "$HTTP/studies" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
[ "$studies" = $((2 * STREAMS + 1)) ] || fail "GET /studies lists $studies studies, expected $((2 * STREAMS + 1))"
for _ in $(seq 60); do
  [ "$(podman inspect -f '{{.State.Status}} {{.RestartCount}}' "${ingest_replicas[1]}")" != "running 0" ] &&
    [ "$(podman inspect -f '{{.State.Status}}' "${ingest_replicas[1]}")" = running ] && break
  sleep 1
done
restarts=$(podman inspect -f '{{.RestartCount}}' "${ingest_replicas[1]}")
[ "$restarts" -ge 1 ] || fail "restart policy: ${ingest_replicas[1]} was not restarted after its crash"
wait_healthy 120
TCP_NODELAY=1 echoscu -aec TESSERA 127.0.0.1 "$DICOM_PORT" || fail "C-ECHO after ${ingest_replicas[1]} came back"
log "${ingest_replicas[1]} restarted by its restart policy ($restarts restart) and healthy"

# ---- query and deleter replicas ------------------------------------------------
# C-FIND at STUDY level through the ingest port (relayed to query over the bus)
# and through the query port: both list every study.
find_studies() { # find_studies PORT -> number of matches
  TCP_NODELAY=1 findscu -S -aec TESSERA -k QueryRetrieveLevel=STUDY -k StudyInstanceUID 127.0.0.1 "$1" 2>&1 |
    grep -c "(0020,000d)" || true
}
studies=$(curl -fsS "$HTTP/studies" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
for port in "$DICOM_PORT" "$QUERY_DICOM_PORT"; do
  got=$(find_studies "$port")
  [ "$got" = "$studies" ] || fail "C-FIND through :$port found $got studies, REST lists $studies"
done
# A DELETE through haproxy answers at once; a deleter replica removes the files.
# (A study of its own: the instances stored above are checked again later.)
/usr/bin/python3 "$ROOT/tests/tools/gendicom.py" --out "$WORK/victim" --patients 1 \
  --instances-per-series 5 --seed 99 -q --no-manifest
for f in $(find "$WORK/victim" -name '*.dcm'); do
  victim=$(curl -fsS --data-binary @"$f" "$HTTP/instances" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["ParentStudy"])') || fail "upload of $f"
done
curl -fsS -X DELETE "$HTTP/studies/$victim" >/dev/null || fail "DELETE /studies/$victim"
for _ in $(seq 60); do
  left=$(curl -fsS "$HTTP/tessera/deletion-queue" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Length"])')
  [ "$left" = 0 ] && break
  sleep 1
done
[ "$left" = 0 ] || fail "the deletion queue still holds $left files after 60 s"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$HTTP/studies/$victim")" = 404 ] || fail "deleted study still there"
[ "$(count)" = "$expected" ] || fail "after the deletion: $(count) instances, expected $expected"
log "C-FIND answers through the ingest port (relayed) and the query port ($studies studies); a DELETE's files were removed by the deleters"

# ---- a job, seen from both rest replicas --------------------------------------
# The modality is ingest itself (through its service name): the instances come
# back as AlreadyStored, which is a success, so the job runs for real.
curl -fsS -X PUT -d '{"AET": "TESSERA", "Host": "ingest", "Port": 4242}' "$HTTP/modalities/self" >/dev/null ||
  fail "PUT /modalities/self"
study=$(curl -fsS "$HTTP/studies" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0])')
job=$(curl -fsS -X POST -d "{\"Resources\": [\"$study\"], \"Asynchronous\": true}" "$HTTP/modalities/self/store" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["ID"])') || fail "POST /modalities/self/store"
for _ in $(seq 120); do
  states=""
  for r in $(service_containers rest); do
    states+="$(podman exec "$r" curl -fsS -u "smoke:$HTTP_PW" "http://127.0.0.1:8042/jobs/$job" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["State"])') "
  done
  [ "$states" = "Success Success " ] && break
  case $states in *Failure*) fail "job $job failed: $(curl -fsS "$HTTP/jobs/$job")" ;; esac
  sleep 1
done
[ "$states" = "Success Success " ] || fail "job $job states seen by the two rest replicas: $states"
log "a store job ($job) ran on a jobs replica and both rest replicas follow it to Success"

# ---- recreate (what an upgrade does): containers removed, volumes kept -------
compose down >"$WORK/down-keep.log" 2>&1 || { tail -20 "$WORK/down-keep.log" >&2; fail "podman-compose down"; }
[ -z "$(podman ps -aq --filter "label=io.podman.compose.project=$PROJECT")" ] || fail "containers left after down"
compose up -d --no-build >"$WORK/up2.log" 2>&1 || { tail -30 "$WORK/up2.log" >&2; fail "podman-compose up, again"; }
wait_healthy 180
for _ in $(seq 30); do n=$(count 2>/dev/null || echo 0); [ "$n" = "$expected" ] && break; sleep 1; done
[ "$n" = "$expected" ] || fail "after recreating the containers: $n instances, expected $expected"
check_stored "$WORK/uploaded.txt" || fail "instances not readable after recreating the containers"
check_stored "$WORK/crash-stored.txt" || fail "instances not readable after recreating the containers"
log "containers recreated (down, up): the $expected instances are still indexed and readable"
[ "$(sha256sum <"$TLS_CERT_DIR/tessera.pem")" = "$CERT_SHA" ] || fail "the certificate was made again at the second start"
curl -fsS --cacert "$TLS_CERT_DIR/tessera.crt" -u "smoke:$HTTP_PW" --retry 10 --retry-delay 1 \
  --retry-all-errors -o /dev/null "$HTTPS/system" || fail "GET /system over HTTPS after recreating the containers"
# rest sees the request as https (X-Forwarded-Proto from haproxy): the
# DICOMweb URLs it answers with point back at the HTTPS port
curl -fsS --cacert "$TLS_CERT_DIR/tessera.crt" -u "smoke:$HTTP_PW" "$HTTPS/dicom-web/studies?limit=1" \
  >"$WORK/qido-tls.json" || fail "QIDO-RS over HTTPS"
grep -qF "\"$HTTPS/dicom-web/studies/" "$WORK/qido-tls.json" ||
  fail "QIDO-RS over HTTPS: no RetrieveURL under $HTTPS: $(head -c 300 "$WORK/qido-tls.json")"
log "the certificate of the first start is kept and served again; DICOMweb URLs over HTTPS are https"

# ---- 7. scale up on the running stack: a third ingest replica is found by
# haproxy and by every rest replica (both re-resolve the service name).
export INGEST_REPLICAS=3
since=$(date +%s)
# podman-compose 1.0 ignores --scale and complains about the containers that
# exist already; it creates the missing ones.
compose up -d --no-build >"$WORK/scale.log" 2>&1 || true
[ "$(service_containers ingest | wc -l)" = 3 ] || { tail -20 "$WORK/scale.log" >&2; fail "scaling ingest to 3"; }
wait_healthy 120
check_bus_mesh
for _ in $(seq 30); do
  for _ in 1 2 3 4 5 6; do TCP_NODELAY=1 echoscu -aec TESSERA 127.0.0.1 "$DICOM_PORT" || fail "C-ECHO after scaling"; done
  servers=$(podman logs --since "$since" "$(service_containers haproxy)" 2>&1 | grep -o ' dicom ingest/ingest-[0-9]*' | sort -u | wc -l)
  [ "$servers" -ge 3 ] && break
  sleep 1
done
[ "$servers" -ge 3 ] || fail "haproxy sent DICOM to $servers ingest replicas after scaling to 3"
log "scaled to 3 ingest replicas: haproxy balances over the 3, every rest replica dials the 3"

log "PASS"
