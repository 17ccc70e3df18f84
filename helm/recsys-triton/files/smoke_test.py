"""`helm test`: one inference request to the `recommender` ensemble over HTTP (KServe v2).

Environment: TRITON_URL (http://host:port), MODEL, USER_ID, TOP_K. Exits non-zero unless the
server answers 200 with at least one non-empty output.
"""

import json
import os
import sys
import urllib.error
import urllib.request

url = f"{os.environ['TRITON_URL'].rstrip('/')}/v2/models/{os.environ['MODEL']}/infer"
body = {
    "inputs": [
        {
            "name": "user_id",
            "datatype": "INT64",
            "shape": [1, 1],
            "data": [int(os.environ["USER_ID"])],
        },
        {"name": "top_k", "datatype": "INT32", "shape": [1, 1], "data": [int(os.environ["TOP_K"])]},
    ]
}
request = urllib.request.Request(
    url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
)
try:
    with urllib.request.urlopen(request, timeout=30) as response:
        status, payload = response.status, json.loads(response.read())
except urllib.error.HTTPError as exc:
    print(f"FAIL: {url} answered {exc.code}: {exc.read()[:500]!r}")
    sys.exit(1)
outputs = payload.get("outputs") or []
if status != 200 or not outputs or not all(o.get("data") for o in outputs):
    print(f"FAIL: unexpected answer from {url}: {json.dumps(payload)[:500]}")
    sys.exit(1)
print(f"OK: {url} -> " + ", ".join(f"{o['name']}{o.get('shape')}" for o in outputs))
