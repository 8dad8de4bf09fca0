#!/usr/bin/env python3
"""A real LiveKit participant for the end-to-end tests: joins a room over
WebRTC with LiveKit's realtime SDK (PyPI `livekit`), publishes a tone and
counts the audio it hears.

The token comes from lk-backend's `POST /token`, as a browser's backend
would fetch it: the script proves the product's whole chain (backend signs,
livekit-server accepts, media flows), not a token the test made itself.
Like any service allowed to mint, it presents lk-backend's mint secret as a
bearer: `LK_MINT_SECRET` from its environment, else the `MINT_SECRET` of the
env file the lk-backend serving the token URL's port was started with (the
secret is never on the command line).

Usage:
  participant.py --token-url http://127.0.0.1:PORT/token --room R --identity I
                 [--url ws://...] [--publish] [--connect-timeout S]
  participant.py --token-url http://127.0.0.1:PORT/token --serve

The first form joins once and stays until stdin closes (or says `quit`),
printing events as they happen. With --serve it reads commands on stdin,
`join ROOM IDENTITY`, and for each joins, leaves and answers one `join`
line: a real join per command without a new process each time (the
invariant sampler and the join benchmark).

Output: one JSON object per line on stdout; every object has `event` and
`t` (CLOCK_MONOTONIC, seconds, when it was printed):
  {"event": "started"}                              the SDK is loaded
  {"event": "connected", "token_ms", "connect_ms", "url"}
  {"event": "published"}
  {"event": "subscribed", "from"}
  {"event": "audio", "from", "frames", "loud", "total"}   every --report-every frames
  {"event": "reconnecting"} / {"event": "reconnected"} / {"event": "disconnected", "reason"}
  {"event": "join", "ok": true, "token_ms", "connect_ms"}            (--serve)
  {"event": "join", "ok": false, "stage", "message"}                 (--serve)
  {"event": "error", "stage", "message"}            then exit 1
`frames` is the number of frames in this report (the window), `loud` those
of them whose level is the tone's (the engine's packet-loss concealment
produces frames too, fading to silence, when the sender is gone), `total`
every frame of this subscription so far. The token is never printed.
"""

import argparse
import asyncio
import json
import math
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

SAMPLE_RATE = 48000
CHANNELS = 1
FRAME_SAMPLES = 480  # 10 ms, the engine's own frame size
TONE_HZ = 440.0
TONE_AMPLITUDE = 0.3
# A frame is "loud" when its RMS is above a tenth of the tone's (0.3/sqrt(2)
# of full scale): the tone after Opus is near its own level, silence and
# the faded concealment are far below.
LOUD_RMS = 0.1 * TONE_AMPLITUDE / math.sqrt(2) * 32767


def emit(event, **fields):
    # `t`: CLOCK_MONOTONIC in seconds, the clock a caller on the same
    # machine can read too, to time an event without the pipe's delay.
    print(json.dumps({"event": event, "t": time.monotonic(), **fields}), flush=True)


def describe(err):
    """An exception as text, with any JWT (a URL's access_token) redacted."""
    return re.sub(r"eyJ[A-Za-z0-9_.-]+", "<jwt>", f"{type(err).__name__}: {err}")


def fail(stage, err):
    emit("error", stage=stage, message=describe(err))
    return 1


def mint_secret_for(port):
    """The MINT_SECRET of the env file of the `lk-backend --env-file FILE`
    whose PORT is `port` in this network namespace (the one the token URL's
    127.0.0.1 is in; tests run several namespaces, each with its own 7890),
    read afresh (a rotation changes it); None when no such process is found."""
    try:
        own_net = os.readlink("/proc/self/ns/net")
    except OSError:
        own_net = None
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if own_net is not None and os.readlink(f"/proc/{pid}/ns/net") != own_net:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            if not args[0].endswith(b"lk-backend") or b"--env-file" not in args:
                continue
            path = args[args.index(b"--env-file") + 1].decode()
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, IndexError, UnicodeDecodeError):
            continue
        env = {}
        for line in lines:
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith("#"):
                env[key.removeprefix("export ").strip()] = value.strip().strip('"').strip("'")
        if env.get("PORT") == str(port) and env.get("MINT_SECRET"):
            return env["MINT_SECRET"]
    return None


def fetch_token(token_url, room, identity, timeout, wait_for_backend):
    """POST /token to lk-backend; returns (token, url).

    With `wait_for_backend` seconds, a refused connection (lk-backend not
    listening yet) is retried until then: the script can be started, its
    SDK loaded, before the service exists.
    """
    body = json.dumps({"room": room, "identity": identity}).encode()
    deadline = time.monotonic() + wait_for_backend
    delay = 0.005
    while True:
        headers = {"Content-Type": "application/json"}
        secret = os.environ.get("LK_MINT_SECRET") or mint_secret_for(urllib.parse.urlsplit(token_url).port)
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        req = urllib.request.Request(token_url, data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                doc = json.load(resp)
            return doc["token"], doc["url"]
        except urllib.error.HTTPError as e:
            # lk-backend's error bodies carry no token: safe to quote.
            raise RuntimeError(f"POST /token answered {e.code}: {e.read()[:300]!r}") from None
        except (urllib.error.URLError, ConnectionError) as e:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"POST /token: {e}") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


async def join(rtc, args):
    """Fetches a token and connects; returns (room, token_ms, connect_ms, url)."""
    t0 = time.monotonic()
    token, url = await asyncio.to_thread(
        fetch_token, args.token_url, args.room, args.identity, args.connect_timeout, args.wait_for_backend
    )
    t1 = time.monotonic()
    url = args.url or url
    room = rtc.Room()
    await room.connect(url, token, rtc.RoomOptions(connect_timeout=args.connect_timeout))
    t2 = time.monotonic()
    return room, round((t1 - t0) * 1000, 2), round((t2 - t1) * 1000, 2), url


def tone_frame(rtc, phase):
    frame = rtc.AudioFrame.create(SAMPLE_RATE, CHANNELS, FRAME_SAMPLES)
    data = frame.data
    step = 2 * math.pi * TONE_HZ / SAMPLE_RATE
    for i in range(FRAME_SAMPLES):
        data[i] = int(TONE_AMPLITUDE * 32767 * math.sin(phase + i * step))
    return frame, (phase + FRAME_SAMPLES * step) % (2 * math.pi)


async def publish_tone(rtc, room):
    source = rtc.AudioSource(SAMPLE_RATE, CHANNELS)
    track = rtc.LocalAudioTrack.create_audio_track("tone", source)
    opts = rtc.TrackPublishOptions()
    opts.source = rtc.TrackSource.SOURCE_MICROPHONE
    await room.local_participant.publish_track(track, opts)
    emit("published")
    # capture_frame paces itself on the source's queue: the loop runs in
    # real time without a sleep of its own.
    phase = 0.0
    frames = []
    for _ in range(100):
        frame, phase = tone_frame(rtc, phase)
        frames.append(frame)
    i = 0
    while True:
        await source.capture_frame(frames[i % len(frames)])
        i += 1


def rms(frame):
    data = frame.data
    n = len(data)
    if n == 0:
        return 0.0
    return math.sqrt(sum(s * s for s in data) / n)


async def count_audio(rtc, track, who, every):
    total = 0
    loud = 0
    async for ev in rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=CHANNELS):
        total += 1
        if rms(ev.frame) >= LOUD_RMS:
            loud += 1
        if total % every == 0:
            emit("audio", **{"from": who, "frames": every, "loud": loud, "total": total})
            loud = 0


async def wait_stdin_closed():
    """Returns when stdin reaches EOF or a line says `quit`."""
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() == "quit":
            return


async def stay(rtc, args):
    try:
        room, token_ms, connect_ms, url = await join(rtc, args)
    except Exception as e:  # noqa: BLE001 - every failure is reported as a line
        return fail("join", e)
    emit("connected", token_ms=token_ms, connect_ms=connect_ms, url=url)
    tasks = []

    @room.on("track_subscribed")
    def on_track(track, _pub, participant):
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            emit("subscribed", **{"from": participant.identity})
            tasks.append(asyncio.ensure_future(count_audio(rtc, track, participant.identity, args.report_every)))

    @room.on("reconnecting")
    def on_reconnecting():
        emit("reconnecting")

    @room.on("reconnected")
    def on_reconnected():
        emit("reconnected")

    @room.on("disconnected")
    def on_disconnected(reason=None):
        emit("disconnected", reason=str(reason))

    # Tracks already published before this participant joined.
    for participant in room.remote_participants.values():
        for pub in participant.track_publications.values():
            if pub.track is not None and pub.kind == rtc.TrackKind.KIND_AUDIO:
                on_track(pub.track, pub, participant)

    if args.publish:
        try:
            tasks.append(asyncio.ensure_future(publish_tone(rtc, room)))
        except Exception as e:  # noqa: BLE001
            return fail("publish", e)
    await wait_stdin_closed()
    for t in tasks:
        t.cancel()
    await room.disconnect()
    return 0


async def serve(rtc, args):
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        words = line.split()
        if not words or words[0] == "quit":
            return 0
        if words[0] != "join" or len(words) != 3:
            emit("join", ok=False, stage="command", message=f"unknown command: {line.strip()!r}")
            continue
        args.room, args.identity = words[1], words[2]
        try:
            room, token_ms, connect_ms, _ = await join(rtc, args)
        except Exception as e:  # noqa: BLE001 - a refused join is an answer, not a crash
            emit("join", ok=False, stage="join", message=describe(e))
            continue
        emit("join", ok=True, token_ms=token_ms, connect_ms=connect_ms)
        await room.disconnect()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--token-url", required=True, help="lk-backend's POST /token URL")
    p.add_argument("--room")
    p.add_argument("--identity")
    p.add_argument("--url", help="livekit URL; default: the one lk-backend answers")
    p.add_argument("--publish", action="store_true", help="publish a 440 Hz tone")
    p.add_argument("--serve", action="store_true", help="join and leave on each `join ROOM IDENTITY` line")
    p.add_argument("--connect-timeout", type=float, default=20.0)
    p.add_argument("--report-every", type=int, default=25, help="frames between audio lines")
    p.add_argument(
        "--wait-for-backend", type=float, default=0.0, help="seconds to retry POST /token while lk-backend is not up"
    )
    args = p.parse_args()
    if not args.serve and not (args.room and args.identity):
        p.error("--room and --identity are required without --serve")
    # Imported here so that a missing SDK is a JSON error line too.
    try:
        from livekit import rtc
    except Exception as e:  # noqa: BLE001
        return fail("import", e)
    # The SDK is loaded: a caller timing the service, not Python, waits
    # for this line before it starts its clock.
    emit("started")
    run = serve if args.serve else stay
    return asyncio.run(run(rtc, args))


if __name__ == "__main__":
    sys.exit(main())
