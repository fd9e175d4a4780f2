#!/usr/bin/python3
"""Records what Orthanc 1.10.1 (Debian's `orthanc`, /usr/sbin/Orthanc) answers to
the requests of tests/data/orthanc/errors.json: each case's HTTP status, Allow
header and body (Orthanc's error body for an error). The unit test
tests/unit/test_rest_routes.c sends the same requests to Tessera's REST route
table in-process and compares. Only requests whose answer does not need a
stored instance are here (an empty Orthanc, an empty Tessera index).

    /usr/bin/python3 tests/data/orthanc/record_errors.py     # rewrites errors.json

A case is {"name", "method", "path"[, "body"][, "content_type"]}; the script
adds "status", "allow" (or null) and "answer" (the JSON body, or null when the
body is empty or not JSON). Keys other than those (e.g. "note") are kept."""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "integration"))
from orthanc import Orthanc  # noqa: E402  (tests/integration/orthanc.py)

CASES = HERE / "errors.json"


def main():
    cases = json.loads(CASES.read_text())
    with Orthanc() as o:
        for case in cases:
            body = case.get("body")
            headers = {}
            if "content_type" in case:
                headers["Content-Type"] = case["content_type"]
            status, raw, hdrs = o.request(case["method"], case["path"],
                                          body.encode() if body is not None else None, headers)
            case["status"] = status
            case["allow"] = hdrs.get("Allow")
            try:
                case["answer"] = json.loads(raw) if raw else None
            except ValueError:
                case["answer"] = None
            print(f'{case["name"]}: {status}', file=sys.stderr)
    CASES.write_text(json.dumps(cases, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
