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

# SPEC v2 shapes: a Stopped without FinishReason and one with an undocumented reason (taken as
# OTHER), another feature's event signed with another key (ignored before any signature check),
# and an unsigned push event at the app without a key (refused).
stopped = ex["callbacks"]["WhiteboardPushStopped"]
bare = {k: v for k, v in stopped.items() if k not in ("Sign", "ExpireTime")}
no_reason = dict(bare, SdkAppId=1400000002, EventData={k: v for k, v in bare["EventData"].items() if k != "FinishReason"})
write("callback", "WhiteboardPushStopped-no-reason.json", json.dumps(no_reason))
odd = dict(bare, SdkAppId=1400000002, EventData=dict(bare["EventData"], FinishReason="RENDER_CRASHED"))
write("callback", "WhiteboardPushStopped-undocumented-reason.json", json.dumps(odd))
other = {"EventType": "TranscodeFinished", "SdkAppId": 1400000001, "Timestamp": 1575545412,
         "EventData": {"TaskId": "x", "Progress": 100}, "ExpireTime": 1800000000,
         "Sign": hashlib.md5(b"another-feature-key1800000000").hexdigest()}
write("callback", "TranscodeFinished-other-key.json", json.dumps(other))
write("callback", "WhiteboardPushStarted-no-key-app.json", json.dumps(dict({k: v for k, v in ex["callbacks"]["WhiteboardPushStarted"].items() if k not in ("Sign", "ExpireTime")}, SdkAppId=1400000003)))

# API replies: the first byte picks status and action (see fuzz_targets/api_reply.rs).
for name, reply in ex["DescribeWhiteboardPush"].items():
    if name.startswith("reply"):
        write("api_reply", f"push-{name}", b"\x00" + json.dumps(reply).encode())
        write("api_reply", f"push-{name}-500", b"\x02" + json.dumps(reply).encode())
write("api_reply", "running-tasks", b"\x80" + json.dumps(ex["DescribeRunningTasks"]["reply"]).encode())
write("api_reply", "error-envelope", b"\x00" + json.dumps(ex["error_envelope"]).encode())
# SPEC v2: a STOPPED with an empty reason (OTHER), a bare app-level code.
write("api_reply", "push-stopped-empty-reason", b"\x00" + json.dumps({"Response": {"Status": "STOPPED", "FinishReason": "", "RequestId": "r"}}).encode())
write("api_reply", "error-bare-app-level", b"\x00" + json.dumps({"Response": {"Error": {"Code": "ResourceUnavailable", "Message": "Resource is unavailable."}, "RequestId": "r"}}).encode())

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
