#!/usr/bin/env python3
"""Verify captured webhook requests with the Standard Webhooks reference library.

The integration tests capture what contractd POSTs and check every signature with an
implementation that is not the code under test: the PyPI package `standardwebhooks`
(`.ci/run` installs it).

Usage: verify_webhooks.py CAPTURE.json

CAPTURE.json: {"secret": "whsec_...", "requests": [{"headers": {...}, "body": "..."}, ...]}

Exit codes: 0 every request verifies; 1 a request does not (the first one is named on
stderr); 2 usage or an unreadable capture; 3 the `standardwebhooks` package is missing (a
broken set-up, never a verification result).
"""

import json
import sys

try:
    from standardwebhooks.webhooks import Webhook
except ImportError as error:  # pragma: no cover - the set-up, not the verification
    print(
        f"the Python package standardwebhooks is missing ({error}): "
        "python3 -m pip install standardwebhooks (.ci/run does)",
        file=sys.stderr,
    )
    sys.exit(3)


def main(argv):
    if len(argv) != 2:
        print("usage: verify_webhooks.py CAPTURE.json", file=sys.stderr)
        return 2
    try:
        with open(argv[1], encoding="utf-8") as capture_file:
            capture = json.load(capture_file)
        webhook = Webhook(capture["secret"])
        requests = capture["requests"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(f"cannot read the capture {argv[1]}: {error!r}", file=sys.stderr)
        return 2
    if not requests:
        print("the capture holds no request: nothing was verified", file=sys.stderr)
        return 1
    for index, request in enumerate(requests):
        headers = request.get("headers", {})
        webhook_id = headers.get("webhook-id")
        try:
            payload = webhook.verify(request["body"], headers)
        except Exception as error:  # WebhookVerificationError, or a malformed header
            print(
                f"request {index} (webhook-id {webhook_id!r}) does not verify: "
                f"{type(error).__name__}: {error}",
                file=sys.stderr,
            )
            return 1
        if not isinstance(payload, dict) or "type" not in payload:
            print(
                f"request {index} (webhook-id {webhook_id!r}) verifies but its body is "
                f"not an event envelope: {request['body'][:200]!r}",
                file=sys.stderr,
            )
            return 1
    print(f"verified {len(requests)} request(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
