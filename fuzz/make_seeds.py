#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/seeds/<target>/ (committed).

Run from anywhere: `python3 fuzz/make_seeds.py`. Deterministic: the same
bytes every time (tarballs carry a fixed mtime, gzip a zero timestamp), so
regenerating changes nothing unless this script changes.

The renderings mirror crates/server/src/config/render.rs (its golden tests
show the same bytes). A seed that drifted from the renderer would still be
a useful seed; the targets check the real renderer, never these copies.
"""

import gzip
import io
import json
import os
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "seeds")
HEADER = (
    "# written by hero_livekit; edit with `hero_livekit configure`\n"
    "# any other change is overwritten: hero_livekit keeps this file equal to its config\n"
)
SEP = b"\n\x1e\n"  # triple_readers: the file separator
MISSING = b"\x18"  # triple_readers: a missing file
UNREADABLE = b"\x15"  # triple_readers: an unreadable file

A = dict(
    api_key="APIaaaaaaaaaaaa",
    api_secret="aaaaSecretaaaaSecretaaaaSecretaaaaSecret123",
    domain="media.example.org",
    redis_address="redis.internal:6380",
    port=7980,
    rtc_tcp_port=7981,
    rtc_port_range_start=51000,
    rtc_port_range_end=52000,
    node_ip="192.0.2.10",
    backend_port=7990,
)
B = dict(
    api_key="APIbbbbbbbbbbbb",
    api_secret="bbbbSecretbbbbSecretbbbbSecretbbbbSecret456",
    domain="2001:db8::7",
    redis_address=None,
    port=8080,
    rtc_tcp_port=8081,
    rtc_port_range_start=40000,
    rtc_port_range_end=40100,
    node_ip=None,
    backend_port=8090,
)


def q(s):
    return json.dumps(s)


def url(c):
    host = "[%s]" % c["domain"] if ":" in c["domain"] else c["domain"]
    return "ws://%s:%d" % (host, c["port"])


def runtime_json(c):
    lines = [
        '  "api_key": %s,' % q(c["api_key"]),
        '  "api_secret": %s,' % q(c["api_secret"]),
        '  "domain": %s,' % q(c["domain"]),
        '  "redis_address": %s,' % q(c["redis_address"] or ""),
        '  "port": %d,' % c["port"],
        '  "rtc_tcp_port": %d,' % c["rtc_tcp_port"],
        '  "rtc_port_range_start": %d,' % c["rtc_port_range_start"],
        '  "rtc_port_range_end": %d,' % c["rtc_port_range_end"],
        '  "node_ip": %s,' % q(c["node_ip"] or ""),
        '  "backend_port": %d,' % c["backend_port"],
        '  "livekit_url": %s' % q(url(c)),
    ]
    return "{\n" + "\n".join(lines) + "\n}\n"


def livekit_yaml(c):
    out = HEADER + "port: %d\nrtc:\n  tcp_port: %d\n  port_range_start: %d\n  port_range_end: %d\n  use_external_ip: false\n" % (
        c["port"], c["rtc_tcp_port"], c["rtc_port_range_start"], c["rtc_port_range_end"])
    if c["node_ip"]:
        out += "  node_ip: %s\n" % q(c["node_ip"])
    if c["redis_address"]:
        out += "redis:\n  address: %s\n" % q(c["redis_address"])
    out += "keys:\n  %s: %s\nlogging:\n  level: info\n" % (q(c["api_key"]), q(c["api_secret"]))
    return out


def backend_env(c):
    return HEADER + "".join('%s="%s"\n' % kv for kv in [
        ("LIVEKIT_API_KEY", c["api_key"]),
        ("LIVEKIT_API_SECRET", c["api_secret"]),
        ("LIVEKIT_URL", url(c)),
        ("PORT", str(c["backend_port"])),
    ])


def triple(*parts):
    return SEP.join(p if isinstance(p, bytes) else p.encode() for p in parts)


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def tarball(entries, wrap_gzip=True):
    """entries: (name, bytes, tarfile type, linkname)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data, kind, link in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = 0o755
            info.mtime = 1700000000
            info.linkname = link
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    if not wrap_gzip:
        return raw.getvalue()
    return gzip.compress(raw.getvalue(), compresslevel=9, mtime=0)


def main():
    a_hand = livekit_yaml(A).replace("port: 7980\n", "# moved by hand\nport: 7999   # was 7980\n")
    yaml_flow = (
        "port: 7980\nrtc: {tcp_port: 7981, port_range_start: 51000, port_range_end: 52000, use_external_ip: false}\n"
        "keys: {APIaaaaaaaaaaaa: aaaaSecretaaaaSecretaaaaSecretaaaaSecret123}\nlogging: {level: debug}\nextra: 1\n"
    )
    yaml_two_keys = livekit_yaml(B).replace("keys:\n", "keys:\n  APIccccccccccc: cccccccccccccccccccccccccccccccccccccc\n")
    yaml_anchors = "port: &p 7880\nrtc:\n  tcp_port: *p\n  port_range_start: 0x10000\nkeys: !!map {? a : b}\n"
    env_hand = "# edited\r\nexport LIVEKIT_API_KEY=APIaaaaaaaaaaaa\r\nLIVEKIT_API_SECRET='aaaaSecretaaaaSecretaaaaSecretaaaaSecret123'\r\nPORT=7990 # lk-backend\r\n"
    t = "triple_readers"
    write(t, "a_consistent", triple(runtime_json(A), livekit_yaml(A), backend_env(A)))
    write(t, "b_consistent", triple(runtime_json(B), livekit_yaml(B), backend_env(B)))
    write(t, "a_yaml_hand_edited", triple(runtime_json(A), a_hand, backend_env(A)))
    write(t, "yaml_only_flow_style", triple(MISSING, yaml_flow, MISSING))
    write(t, "env_only_hand_edited", triple(MISSING, MISSING, env_hand))
    write(t, "mixed_credentials", triple(runtime_json(B).replace('"api_secret"', '"api_secrets"'), yaml_two_keys, backend_env(A)))
    write(t, "runtime_unreadable_yaml_anchors", triple(UNREADABLE, yaml_anchors, backend_env(B)))
    write(t, "runtime_json_wrong_types", triple('{"api_key": 5, "port": "7880", "node_ip": null, "domain": ["x"]}', "", "PORT=\n"))
    write(t, "garbage", triple(b"\xff\xfe{\x00", b"- [\n  ]: :", b"A=\"unterminated\n"))
    write(t, "all_missing", MISSING)

    t = "envfile"
    write(t, "rendered_a", backend_env(A))
    write(t, "rendered_b", backend_env(B))
    write(t, "hand_edited_crlf", env_hand)
    write(t, "escapes", 'K="a\\"b\\\\c\\$d\\`e\\nf"\nexport  J=\'x y\'   # c\n_=\n')
    write(t, "bad_lines", "A=1\nA=2\n1B=3\nC=\"\\q\"\nD='open\nE=x\"y\n  # ok\n")
    write(t, "garbage", b"\x00\xff=\r\n\r\r=\"")

    t = "configure_params"
    write(t, "empty_object", "{}")
    write(t, "null", "null")
    write(t, "full", json.dumps({
        "api_key": "APIgivengivengi", "api_secret": "given/Secret+given/Secret+given/Secret+given==",
        "domain": "media.example.org", "redis_address": "redis:6379", "port": 7880, "rtc_tcp_port": 7881,
        "rtc_port_range_start": 50000, "rtc_port_range_end": 60000, "node_ip": "192.0.2.7", "backend_port": 7890}))
    write(t, "production", json.dumps({
        "bind_addresses": ["127.0.0.1"], "use_external_ip": True, "rtc_udp_port": "7882-7892",
        "stun_servers": ["stun.example.org:3478"],
        "turn_servers": [{"host": "turn.example.org", "port": 443, "protocol": "tls", "username": "u", "credential": "c"}],
        "turn_enabled": True, "turn_domain": "turn.example.org", "turn_external_tls": True,
        "webhook_urls": ["https://hooks.example.org/lk"], "room_auto_create": False, "room_empty_timeout": 600,
        "room_enabled_codecs": ["audio/opus", "video/vp8"], "log_level": "warn", "log_json": True,
        "prometheus_port": 6789, "prometheus_username": "scraper", "prometheus_password": "pw", "region": "eu-west-1"}))
    write(t, "production_bad", '{"turn_enabled": true, "turn_domain": "t.example.org", "webhook_urls": ["ftp://x"], "unset": ["webhook_urls"]}')
    write(t, "unset_both", '{"unset": ["redis_address", "node_ip"], "domain": "2001:db8::1"}')
    write(t, "port_clash", '{"port": 7990, "rtc_tcp_port": 7990}')
    write(t, "wrong_types", '{"port": "7880", "api_secret": 12, "unset": "node_ip"}')
    write(t, "unknown_field", '{"apiKey": "x", "api_key": "short"}')
    write(t, "secret_with_space", '{"api_secret": "given Secret given Secret given Secret given"}')
    write(t, "positional", '["APIkey", "secret"]')
    write(t, "structured_random", bytes(range(1, 200, 3)))

    t = "install_archive"
    script = b"#!/bin/sh\necho livekit-server-test\n"
    elf = b"\x7fELF\x02\x01\x01\x00" + bytes(56)
    reg = tarfile.REGTYPE
    write(t, "release_tarball", tarball([("LICENSE", b"Apache-2.0\n", reg, ""), ("README.md", b"# LiveKit\n", reg, ""), ("livekit-server", script, reg, "")]))
    write(t, "wrapped_tarball", tarball([("livekit_1.13.5_linux_amd64/", b"", tarfile.DIRTYPE, ""), ("livekit_1.13.5_linux_amd64/livekit-server", elf, reg, "")]))
    write(t, "escaping_entry", tarball([("../livekit-server", script, reg, "")]))
    write(t, "symlink_entry", tarball([("livekit-server", b"", tarfile.SYMTYPE, "/bin/sh")]))
    write(t, "two_binaries", tarball([("livekit-server", script, reg, ""), ("a/livekit-server", script, reg, "")]))
    write(t, "no_binary", tarball([("LICENSE", b"x", reg, "")]))
    write(t, "plain_tar_not_gzip", tarball([("livekit-server", script, reg, "")], wrap_gzip=False))
    write(t, "bare_script", script)
    write(t, "bare_elf", elf)
    write(t, "html_error_page", b"<html><body>404 Not Found</body></html>\n")
    write(t, "truncated_gzip", tarball([("livekit-server", script * 50, reg, "")])[:60])
    write(t, "structured_random", b"\x00T" + bytes((i * 37) % 251 for i in range(300)))


    t = "http_front"
    # Request bytes of a peer with full access; a first byte \x01 or \x02
    # makes the rest a read-only or a refused peer's (see the target).
    health_call = b'{"jsonrpc":"2.0","id":1,"method":"livekitservice.health","params":{}}'
    batch = b'[{"jsonrpc":"2.0","id":1,"method":"livekitservice.health"},{"jsonrpc":"2.0","id":2,"method":"rpc.discover"},{"jsonrpc":"2.0","method":"livekitservice.health"}]'

    def post(body, path=b"/rpc", extra=b""):
        return b"POST " + path + b" HTTP/1.1\r\nHost: hero\r\nContent-Type: application/json\r\n" + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body

    def chunked(body, size=16):
        parts = [body[i:i + size] for i in range(0, len(body), size)]
        return b"".join(b"%x\r\n" % len(p) + p + b"\r\n" for p in parts) + b"0\r\n\r\n"

    write(t, "get_health", b"GET /health HTTP/1.1\r\nHost: hero\r\n\r\n")
    write(t, "get_openrpc", b"GET /openrpc.json HTTP/1.1\r\nHost: hero\r\nAccept: application/json\r\n\r\n")
    write(t, "get_service_info_http10", b"GET /.well-known/heroservice.json HTTP/1.0\r\n\r\n")
    write(t, "post_health", post(health_call))
    write(t, "post_batch", post(batch, path=b"/"))
    write(t, "post_subscribe_over_http", post(b'{"jsonrpc":"2.0","id":"s","method":"livekitservice.subscribe_events","params":[]}'))
    write(t, "post_configure_bad_port", post(b'{"jsonrpc":"2.0","id":3,"method":"livekitservice.configure","params":{"port":1}}'))
    write(t, "post_start_not_installed", post(b'{"jsonrpc":"2.0","id":4,"method":"livekitservice.start","params":{"timeout_ms":1000}}'))
    write(t, "post_deep", post(b"[" * 70 + b"]" * 70))
    write(t, "post_chunked", b"POST /rpc HTTP/1.1\r\nHost: hero\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(health_call))
    write(t, "post_huge_content_length", b"POST /rpc HTTP/1.1\r\nHost: hero\r\nContent-Type: application/json\r\nContent-Length: 52428800\r\n\r\n" + health_call)
    write(t, "post_short_body", post(health_call)[:-10])
    write(t, "websocket_upgrade", b"GET / HTTP/1.1\r\nHost: hero\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    mask = b"\x11\x22\x33\x44"
    frame = b"\x81" + bytes([0x80 | len(health_call)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(health_call))
    write(t, "websocket_upgrade_then_call", b"GET /rpc HTTP/1.1\r\nHost: hero\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n" + frame)
    write(t, "pipelined_pair", b"GET /health HTTP/1.1\r\nHost: hero\r\n\r\n" + post(health_call))
    write(t, "wrong_method_and_route", b"PUT /health HTTP/1.1\r\nHost: hero\r\nContent-Length: 0\r\n\r\nGET /nope HTTP/1.1\r\nHost: hero\r\n\r\n")
    write(t, "read_only_configure", b"\x01" + post(b'{"jsonrpc":"2.0","id":5,"method":"livekitservice.configure","params":{}}'))
    write(t, "refused_get_health", b"\x02GET /health HTTP/1.1\r\nHost: hero\r\n\r\n")
    write(t, "garbage", b"\x00\xffGET\r\n\r\n / HTTP/9.9\r\n\r\n")

if __name__ == "__main__":
    main()
