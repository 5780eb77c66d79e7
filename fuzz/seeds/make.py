#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/seeds/ from Tencent's documented examples
(../shared/conformance/tencent-doc-examples.json, or the path given) and config.example.yaml.

Run once after the examples change: python3 fuzz/seeds/make.py [examples.json]
"""
import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
examples_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "..", "shared", "conformance", "tencent-doc-examples.json")
ex = json.load(open(examples_path))


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    open(os.path.join(d, name), "wb").write(data)


# Callbacks: Tencent's own examples, as-is (signed with a key we do not hold: bad_signature),
# re-signed with the fuzz target's key, and sent to the app without a key (reaches the registry).
for event in ("WhiteboardPushStarted", "WhiteboardPushStopped"):
    body = dict(ex["callbacks"][event])
    write("callback", f"{event}-doc.json", json.dumps(body))
    signed = dict(body, SdkAppId=1400000001, ExpireTime=1800000000)
    signed["Sign"] = hashlib.md5(f"fuzz-callback-key{signed['ExpireTime']}".encode()).hexdigest()
    write("callback", f"{event}-signed.json", json.dumps(signed))
    unsigned = {k: v for k, v in body.items() if k not in ("Sign", "ExpireTime")}
    write("callback", f"{event}-unsigned.json", json.dumps(dict(unsigned, SdkAppId=1400000002)))

# API replies: the first byte picks status and action (see fuzz_targets/api_reply.rs).
for name, reply in ex["DescribeWhiteboardPush"].items():
    if name.startswith("reply"):
        write("api_reply", f"push-{name}", b"\x00" + json.dumps(reply).encode())
        write("api_reply", f"push-{name}-500", b"\x02" + json.dumps(reply).encode())
write("api_reply", "running-tasks", b"\x80" + json.dumps(ex["DescribeRunningTasks"]["reply"]).encode())
write("api_reply", "error-envelope", b"\x00" + json.dumps(ex["error_envelope"]).encode())

# Config: the shipped example, and a few shapes of ${VAR}.
write("config", "example.yaml", open(os.path.join(ROOT, "config.example.yaml")).read())
write("config", "env.yaml", """tencentcloud:
  secret_id: ${SID:-AKIDexample}
  secret_key: ${SK}
  session_token: ${TOKEN}
apps:
  - sdk_app_id: ${NUM}
    callback_key: ${KEY}
    callback_key_previous: ${KEY:-old}
poll:
  interval: ${DUR}
""")
write("config", "escape.yaml", "tencentcloud: {secret_id: a$$b, secret_key: ${SK}}\napps: [{sdk_app_id: 1}]\n")
