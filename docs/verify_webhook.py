#!/usr/bin/env python3
"""Verify an agent-supervisor webhook signature (Standard Webhooks, stdlib only).

Use verify() in your receiver, with the raw request body (before any JSON
parsing) and the three `webhook-*` headers. From a shell:

    WEBHOOK_SECRET=whsec_... python3 verify_webhook.py body.json \
        "$WEBHOOK_ID" "$WEBHOOK_TIMESTAMP" "$WEBHOOK_SIGNATURE"

exits 0 when the signature is valid, 1 when it is not.
"""
import base64
import hashlib
import hmac
import os
import sys
import time

TOLERANCE_SECONDS = 5 * 60  # reject replays of old requests


def verify(secret: str, headers: dict, body: bytes, now: float | None = None) -> bool:
    msg_id = headers["webhook-id"]
    timestamp = headers["webhook-timestamp"]
    signatures = headers["webhook-signature"]
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    # `whsec_<base64>` or plain base64, as the standardwebhooks libraries
    # take it.
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    # The header may hold several space-separated signatures (key rotation).
    return any(
        hmac.compare_digest(expected, sig.split(",", 1)[1])
        for sig in signatures.split()
        if sig.startswith("v1,")
    )


if __name__ == "__main__":
    body_file, msg_id, timestamp, signature = sys.argv[1:5]
    with open(body_file, "rb") as f:
        body = f.read()
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": signature,
    }
    sys.exit(0 if verify(os.environ["WEBHOOK_SECRET"], headers, body) else 1)
