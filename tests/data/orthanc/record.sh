#!/bin/sh
# Records what Orthanc 1.10.1 (Debian's `orthanc`, plus `orthanc-dicomweb` for the
# DICOMweb form) answers for every file in tests/data/dicom, so that unit tests can
# compare Tessera's JSON with the reference. Starts a throwaway Orthanc on free
# loopback ports, uploads one file at a time (several files share UIDs, so each
# is deleted again before the next), saves the answers, stops Orthanc.
#
#   tests/data/orthanc/record.sh            # rewrites tests/data/orthanc/*
#   DICOM_DIR=/some/files OUT_DIR=/tmp/ref tests/data/orthanc/record.sh
#                                           # the same for other files, elsewhere
#
# Per file NAME.dcm it writes NAME/:
#   tags.json             GET /instances/{id}/tags
#   simplified-tags.json  GET /instances/{id}/simplified-tags
#   main-tags.json        {"Patient": MainDicomTags of GET /patients/{id}, "Study": ...,
#                          "Series": ..., "Instance": ...}
#   dicomweb.json         GET /dicom-web/studies/{}/series/{}/instances/{}/metadata,
#                         first (only) element; BulkDataURIs start with
#                         http://orthanc.test/dicom-web/studies/{}/series/{}/instances/{}/bulk
# and ids.json maps NAME.dcm to the four public ids Orthanc gave it.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
dicom_dir=${DICOM_DIR:-$here/../dicom}
out_dir=${OUT_DIR:-$here}
orthanc=${ORTHANC:-/usr/sbin/Orthanc}
dicomweb_plugin=${DICOMWEB_PLUGIN:-/usr/share/orthanc/plugins/libOrthancDicomWeb.so}

for tool in "$orthanc" curl python3; do
    command -v "$tool" >/dev/null || { echo "record.sh: $tool not found" >&2; exit 1; }
done
[ -e "$dicomweb_plugin" ] || { echo "record.sh: $dicomweb_plugin not found (apt-get install orthanc-dicomweb)" >&2; exit 1; }

tmp=$(mktemp -d /tmp/ts-orthanc-record-XXXXXX)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

# Two free loopback ports (a race with another process is possible but harmless:
# Orthanc would then fail to start and the script stops).
set -- $(python3 -c '
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
http_port=$1
dicom_port=$2

cat >"$tmp/orthanc.json" <<EOF
{
  "Name": "tessera-fixtures",
  "StorageDirectory": "$tmp/storage",
  "IndexDirectory": "$tmp/index",
  "HttpPort": $http_port,
  "DicomPort": $dicom_port,
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false,
  "OverwriteInstances": true,
  "Plugins": ["$dicomweb_plugin"],
  "DicomWeb": {"Enable": true, "Root": "/dicom-web/", "EnableWado": false,
               "Host": "orthanc.test", "Ssl": false}
}
EOF

"$orthanc" "$tmp/orthanc.json" >"$tmp/orthanc.log" 2>&1 &
pid=$!
base="http://127.0.0.1:$http_port"
i=0
until curl -sf "$base/system" >/dev/null; do
    i=$((i + 1))
    if [ $i -gt 100 ] || ! kill -0 "$pid" 2>/dev/null; then
        echo "record.sh: Orthanc did not start; its log:" >&2
        cat "$tmp/orthanc.log" >&2
        exit 1
    fi
    sleep 0.1
done
curl -sf "$base/system" | python3 -c 'import json,sys; print("recording with Orthanc", json.load(sys.stdin)["Version"])'

get() { curl -sSf "$base$1"; }
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

echo "{" >"$tmp/ids.json"
sep=
for f in "$dicom_dir"/*.dcm; do
    name=$(basename "$f" .dcm)
    out="$out_dir/$name"
    mkdir -p "$out"
    if ! answer=$(curl -sSf -X POST --data-binary "@$f" "$base/instances"); then
        echo "record.sh: Orthanc refused $f" >&2
        exit 1
    fi
    id=$(printf "%s\n" "$answer" | field ID)
    instance=$(get "/instances/$id")
    series_id=$(printf "%s\n" "$instance" | field ParentSeries)
    series=$(get "/series/$series_id")
    study_id=$(printf "%s\n" "$series" | field ParentStudy)
    study=$(get "/studies/$study_id")
    patient_id=$(printf "%s\n" "$study" | field ParentPatient)
    patient=$(get "/patients/$patient_id")

    get "/instances/$id/tags" >"$out/tags.json"
    get "/instances/$id/simplified-tags" >"$out/simplified-tags.json"
    # Only MainDicomTags: the rest of the answers holds dates and file UUIDs.
    python3 - "$out/main-tags.json" "$patient" "$study" "$series" "$instance" <<'PY'
import json, sys
levels = ["Patient", "Study", "Series", "Instance"]
main = {lvl: json.loads(doc)["MainDicomTags"] for lvl, doc in zip(levels, sys.argv[2:])}
with open(sys.argv[1], "w", encoding="utf-8") as fp:
    json.dump(main, fp, indent=2, ensure_ascii=False)
    fp.write("\n")
PY
    study_uid=$(printf "%s\n" "$study" | python3 -c 'import json,sys; print(json.load(sys.stdin)["MainDicomTags"]["StudyInstanceUID"])')
    series_uid=$(printf "%s\n" "$series" | python3 -c 'import json,sys; print(json.load(sys.stdin)["MainDicomTags"]["SeriesInstanceUID"])')
    sop_uid=$(printf "%s\n" "$instance" | python3 -c 'import json,sys; print(json.load(sys.stdin)["MainDicomTags"]["SOPInstanceUID"])')
    get "/dicom-web/studies/$study_uid/series/$series_uid/instances/$sop_uid/metadata" |
        python3 -c 'import json,sys; d=json.load(sys.stdin); assert len(d)==1; json.dump(d[0], sys.stdout, indent=2, ensure_ascii=False); print()' \
        >"$out/dicomweb.json"

    printf '%s  "%s.dcm": {"Patient": "%s", "Study": "%s", "Series": "%s", "Instance": "%s"}' \
        "$sep" "$name" "$patient_id" "$study_id" "$series_id" "$id" >>"$tmp/ids.json"
    sep=",
"
    # Deleting the patient removes everything, so the next file starts afresh.
    curl -sSf -X DELETE "$base/patients/$patient_id" >/dev/null
    echo "recorded $name.dcm"
done
printf '\n}\n' >>"$tmp/ids.json"
cp "$tmp/ids.json" "$out_dir/ids.json"
