#!/usr/bin/env python3
"""Writes the hand-made seed files, fuzz/corpus/<target>/seed-*.

The seeds document what each target is meant to reach; the fuzzer-found
files beside them (named by their SHA-1) are what `cargo fuzz cmin` kept.
Run from anywhere: python3 fuzz/seeds.py. Input layouts are described in
fuzz/fuzz_targets/checks.rs."""

import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
SECRET = "q83vEjRWeJCrze8SNFZ4kA"  # 22 chars of canonical base64url


def write(target, name, data):
    os.makedirs(os.path.join(ROOT, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(ROOT, target, "seed-" + name), "wb") as f:
        f.write(data)


# http_framer: [step, mode, head, body] then the connection's bytes.
# mode even: the server's limits; mode odd: target mode>>1, head, body bytes.
def http(name, stream, step=0, mode=0, head=0, body=0):
    write("http_framer", name, bytes([step, mode, head, body]) + stream.encode("latin-1"))


http("get", "GET /v1/pairs/p/a/events?after=1 HTTP/1.1\r\nHost: x\r\n"
     "Authorization: Bearer n1.7.42.%s\r\n\r\n" % SECRET, step=6)
http("post-length", "POST /v1/pairs/p/a/messages HTTP/1.1\r\nContent-Length: 5\r\n"
     "Idempotency-Key: k1\r\nExpect: 100-continue\r\n\r\nhello", step=0)
http("chunked", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
     "5;a=\"b\\\"c\" ; d\r\nhello\r\n1\t;e=f\r\n!\r\n0\r\nTrailer: v\r\n\r\n", step=2)
http("pipelined", "\r\nGET /healthz HTTP/1.1\r\n\r\n"
     "POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
     "PUT /y HTTP/1.1\r\nTransfer-Encoding: CHUNKED\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
     "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.1\r\n", step=10)
http("cl-te", "POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
     "0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n")
http("te-cl", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
     "5c\r\nGET /smuggled HTTP/1.1\r\n\r\n0\r\n\r\n")
http("te-te", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n")
http("te-list", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
http("te-http10", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
http("te-vtab", "POST / HTTP/1.1\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n")
http("cl-twice-same", "POST / HTTP/1.1\r\nContent-Length: 03\r\nContent-Length: 3\r\n\r\nabc")
http("cl-twice-differ", "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd")
http("cl-sign", "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc")
http("cl-list", "POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc")
http("cl-huge", "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n\r\n")
http("space-before-colon", "POST / HTTP/1.1\r\nContent-Length : 3\r\n\r\nabc")
http("obs-fold", "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n")
http("bare-lf", "GET / HTTP/1.1\nHost: x\n\n")
http("bare-cr", "GET / HTTP/1.1\r\nHost: x\rY: z\r\n\r\n")
http("chunk-size-long", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
     "00000000000000005\r\nhello\r\n0\r\n\r\n")
http("chunk-size-bare-lf", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n")
http("chunk-no-crlf", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX0\r\n\r\n")
http("dup-authorization", "GET / HTTP/1.1\r\nAuthorization: a\r\nauthorization: b\r\n\r\n")
http("version", "GET / HTTP/2.0\r\n\r\n")
http("method-long", "ABCDEFGHIJKLMNOPQ / HTTP/1.1\r\n\r\n")
http("nul-value", "GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n")
http("small-414", "GET /abcdefgh HTTP/1.1\r\n\r\n", step=3, mode=(6 << 1) | 1, head=60, body=4)
http("small-431", "GET / HTTP/1.1\r\nX: 0123456789012345678901234567890123456789\r\n\r\n",
     mode=(6 << 1) | 1, head=40, body=4)
http("small-413", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
     "2\r\nab\r\n3\r\nabc\r\n0\r\n\r\n", step=1, mode=(6 << 1) | 1, head=80, body=4)

# poll_query: the query string of a poll.
for name, q in [
    ("empty", ""), ("both", "after=5&timeout_ms=1000"), ("repeat", "after=1&after=2"),
    ("saturate", "timeout_ms=99999999999999999999999"), ("unknown", "_=1&&after=007&x"),
    ("sign", "after=+1"), ("percent", "after=%31"), ("no-value", "timeout_ms"),
]:
    write("poll_query", name, q)

# ids_tokens: token, secret, pair and side text; 28+ raw bytes also build a
# token from values (secret, key, gen, node).
for name, t in [
    ("token", "n1.7.42." + SECRET), ("token-zero", "node_-9.0.0." + "A" * 22),
    ("token-noncanonical", "n1.7.42." + SECRET[:-1] + "B"),
    ("token-leading-zero", "n1.07.42." + SECRET), ("token-key-big", "n1.4294967296.1." + SECRET),
    ("secret", SECRET), ("pair", "Az09_-"), ("pair-long", "p" * 65), ("side", "b"),
]:
    write("ids_tokens", name, t)
write("ids_tokens", "values", bytes(range(0xf0, 0x100)) + b"\xff\xff\xff\xff" + b"\x01" * 8 + b"node")

# json_escape: any UTF-8 text.
for name, s in [
    ("plain", "hello"), ("escapes", "\"\\/\b\f\n\r\t"), ("controls", "\x00\x01\x1f\x7f"),
    ("unicode", "é 日本 🎉 \u2028\u2029"),
]:
    write("json_escape", name, s)

# api_requests: two config bytes, then operations (see checks.rs, Sim::step).
J, P, S, L, TICK, CANCEL, OTHER, RAW = 0, 1, 2, 3, 4, 5, 6, 7
A0, B0 = 0x00, 0x80        # pair p0, side a / b
NONE = [0, 0]              # auth: no token
def tok(i): return [1, i]  # auth: the i-th issued token
write("api_requests", "pair-up", bytes(
    [0x3f, 1, J, A0] + NONE + [J, B0] + NONE
    + [P, A0] + tok(0) + [0, 1]                      # poll a, after 0, no wait
    + [S, B0] + tok(1) + [2, 5] + list(b"hello")     # send b->a, key k2
    + [S, B0] + tok(1) + [2, 5] + list(b"hello")     # retry: no-op
    + [P, A0] + tok(0) + [1, 2]                      # poll a after 1, waits 8 ms
    + [TICK, 1]                                      # 10 ms: answered
    + [P, B0] + tok(1) + [1, 2] + [CANCEL, 0]        # poll b waits, cancelled
    + [L, B0] + tok(1) + [P, A0] + tok(0) + [3, 1]   # b leaves; a sees it
))
write("api_requests", "forged", bytes(
    [0x00, 0, J, A0] + NONE + [P, A0, 2, 0, 30, 7, 0, 1]  # one char changed
    + [P, A0, 3, 0, 20] + list(b"n1.0.1.AAAAAAAAAAAAAAAAAAAAAA")[:20]
    + [J, A0] + tok(0) + [J, A0] + NONE              # resume; side taken
    + [J, 1] + tok(0)                                # other pair, token of p0
))
write("api_requests", "routes", bytes(
    [0xff, 1] + sum([[OTHER, i] for i in range(10)], [])
    + [RAW, 2, 14] + list(b"v1/pairs/x/a/e") + NONE + [0]
    + [8, J, A0] + NONE + [J, A0] + NONE + [19, 9]  # random source fails; expire; drain
))
