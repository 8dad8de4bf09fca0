#!/usr/bin/env python3
"""Verify a LiveKit access token with LiveKit's own Python SDK.

A second, independent implementation of LiveKit's token check (PyPI
`livekit-api`, the library LiveKit's Python services use), so that the
end-to-end tests do not only trust the Rust crate that also signs the tokens.

Input, either:
  verify_token.py API_KEY API_SECRET TOKEN
or, to keep the secret out of the process list, no arguments and a JSON
object on stdin:
  {"api_key": "...", "api_secret": "...", "token": "..."}

Output: on success, exit 0 and one JSON object on stdout with the claims the
tests check: {"identity", "name", "room", "room_join", "can_publish",
"can_subscribe", "can_publish_data", "metadata"}. On failure, exit 1 and
{"error": "<exception class>", "message": "<text>"} on stdout. Bad usage
exits 2. The secret is never printed.
"""

import json
import sys


def read_input(argv):
    if len(argv) == 4:
        return argv[1], argv[2], argv[3]
    if len(argv) == 1:
        doc = json.load(sys.stdin)
        return doc["api_key"], doc["api_secret"], doc["token"]
    raise ValueError("usage: verify_token.py API_KEY API_SECRET TOKEN, or a JSON object on stdin")


def main(argv):
    try:
        key, secret, token = read_input(argv)
    except (ValueError, KeyError, TypeError) as e:
        print(json.dumps({"error": "usage", "message": str(e)}))
        return 2
    # TokenVerifier falls back to LIVEKIT_API_KEY/LIVEKIT_API_SECRET from the
    # environment when given empty values; refuse them so a stray variable can
    # never make a verification pass.
    if not key or not secret:
        print(json.dumps({"error": "usage", "message": "api_key and api_secret must be non-empty"}))
        return 2

    try:
        from livekit import api
    except ImportError as e:
        hint = "pip install -r tests/python/requirements.txt"
        print(json.dumps({"error": "ImportError", "message": f"{e}; {hint}"}))
        return 2

    try:
        claims = api.TokenVerifier(key, secret).verify(token)
    except Exception as e:  # every verification failure is a result, not a crash
        print(json.dumps({"error": type(e).__name__, "message": str(e)}))
        return 1
    video = claims.video
    print(
        json.dumps(
            {
                "identity": claims.identity,
                "name": claims.name,
                "metadata": claims.metadata,
                "room": video.room,
                "room_join": video.room_join,
                "can_publish": video.can_publish,
                "can_subscribe": video.can_subscribe,
                "can_publish_data": video.can_publish_data,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
