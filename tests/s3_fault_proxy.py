"""A fault-injecting HTTP proxy on loopback in front of the moto S3 server.

Object storage fails in four ways that matter to a long job: throttling (503 SlowDown), server errors (500),
dropped connections and responses cut short (a body that ends before its Content-Length). The proxy answers the first N requests that match a rule with one of those faults, then
forwards everything to the real server, and counts what it did so a test can report faults injected and retries
seen. `latency` delays every request by that many seconds (a store far away: round trips that cost tens of ms), and
`max_in_flight` is the most requests it held at once (how many a client overlaps). Point `storage.endpoint_url` at
`proxy.url` to put it between the job and the S3 server.

It is also an HTTP forward proxy (`HTTP_PROXY=proxy.url`, for an http:// endpoint that need not resolve): such a
request names its host in an absolute URI, counted in `hosts` (an https:// one asks for a CONNECT tunnel, counted
there too). With `virtual_host` set to the endpoint's
`host:port`, a request to `<bucket>.<virtual_host>` is virtual-hosted-style and passed on to the server path-style;
`refuse_path_style` answers a path-style one (to `virtual_host` itself) 403, as stores that serve only
virtual-hosted-style requests do.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import re
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULT_BODIES = {
    503: b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
    500: b"<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>",
    # a store that refuses the request for good: no write access there, a bucket policy, object lock (WORM)
    403: b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
}


@dataclass
class FaultRule:
    """Fail `count` requests whose method is in `methods` and whose path matches `path` (after the first `after`).

    `kinds` cycles over the injected faults: 503 (SlowDown), 500 (InternalError), 403 (AccessDenied: a refusal for
    good), "reset" (TCP RST, no reply) or
    "truncate" (the real reply's status and headers, then half its body and a TCP RST).
    """

    methods: tuple[str, ...]
    path: str
    count: int
    kinds: tuple[int | str, ...] = (503,)
    after: int = 0  # matching requests let through before the faults start (some writes land, later ones fail)
    injected: int = 0
    passed: int = 0

    def take(self, method: str, path: str) -> int | str | None:
        if method not in self.methods or not re.search(self.path, path) or self.injected >= self.count:
            return None
        if self.passed < self.after:
            self.passed += 1
            return None
        kind = self.kinds[self.injected % len(self.kinds)]
        self.injected += 1
        return kind


@dataclass
class FaultProxy:
    upstream: str
    rules: list[FaultRule] = field(default_factory=list)
    faults: Counter = field(default_factory=Counter)  # (method, path) -> faults injected
    forwarded: Counter = field(default_factory=Counter)  # (method, path) -> requests passed to the server
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None
    latency: float = 0.0  # seconds each request waits before it is answered
    in_flight: int = 0
    max_in_flight: int = 0  # the most requests held at once
    drop_headers: set[str] = field(default_factory=set)  # lower-case request headers not passed on (a store that
    # ignores them, e.g. If-None-Match); the moto server checks no signatures
    # Not None: the store's ETags are no MD5 of the bytes (SSE-KMS, SSE-C objects): each ETag answered (headers,
    # listings) is replaced by md5(etag_salt + etag), its `-N` kept; change the salt to model an upload of the same
    # bytes that gets a new ETag
    etag_salt: str | None = None
    real_etags: dict[str, str] = field(default_factory=dict)  # opaque ETag -> the server's, for If-Match requests
    hosts: Counter = field(default_factory=Counter)  # host:port each forward-proxy request addressed
    virtual_host: str | None = None  # the endpoint's host:port that clients reach through this forward proxy
    refuse_path_style: bool = False

    def as_path_style(self, netloc: str, path: str) -> tuple[str, bool]:
        """(the path to ask the server, whether the request was path-style) for a forward-proxy request to
        `netloc`: a virtual-hosted-style one (`bucket.<virtual_host>/key`) becomes `/bucket/key`."""
        with self.lock:
            self.hosts[netloc] += 1
        if self.virtual_host and netloc.endswith("." + self.virtual_host):
            return "/" + netloc[: -len(self.virtual_host) - 1] + path, False
        return path, True

    def real_request(self, headers: dict[str, str], body: bytes) -> tuple[dict[str, str], bytes]:
        """A request with the opaque ETags it names put back as the server's: If-Match / If-None-Match, and the
        parts' `<ETag>`s of a multipart upload's completion (same lengths)."""

        def real(text: str) -> str:
            return re.sub("[0-9a-f]{32}", lambda m: self.real_etags.get(m.group(0), m.group(0)), text)

        if not self.real_etags:
            return headers, body
        conditional = ("if-match", "if-none-match")
        headers = {k: real(v) if k.lower() in conditional else v for k, v in headers.items()}
        if body.lstrip().startswith(b"<"):
            body = re.sub(
                rb"<ETag>(.*?)</ETag>", lambda m: b"<ETag>" + real(m.group(1).decode()).encode() + b"</ETag>", body
            )
        return headers, body

    def opaque_etags(self, headers: dict[str, str], data: bytes) -> tuple[dict[str, str], bytes]:
        """`headers` and `data` with each ETag rewritten as `etag_salt` says (same lengths)."""
        if self.etag_salt is None:
            return headers, data

        def opaque(match: re.Match) -> str:
            made = hashlib.md5((self.etag_salt + match.group(1)).encode()).hexdigest()
            self.real_etags[made] = match.group(1)
            return made

        pattern = "(?<![0-9a-f])([0-9a-f]{32})(?![0-9a-f])"
        headers = {k: re.sub(pattern, opaque, v) if k.lower() == "etag" else v for k, v in headers.items()}
        etag_elements = re.compile(rb"<ETag>(.*?)</ETag>")
        data = etag_elements.sub(
            lambda m: b"<ETag>" + re.sub(pattern, opaque, m.group(1).decode()).encode() + b"</ETag>", data
        )
        return headers, data

    def enter(self) -> None:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if self.latency:
            time.sleep(self.latency)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def decide(self, method: str, path: str) -> int | str | None:
        with self.lock:
            for rule in self.rules:
                kind = rule.take(method, path)
                if kind is not None:
                    self.faults[(method, path)] += 1
                    return kind
            self.forwarded[(method, path)] += 1
            return None

    def retries_seen(self) -> int:
        """Requests forwarded for an object after at least one fault on it: the client retried and got through."""
        return sum(min(1, self.forwarded[key]) * n for key, n in self.faults.items())

    def start(self) -> FaultProxy:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(self))
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def make_handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    up = urlsplit(proxy.upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def setup(self) -> None:
            super().setup()
            # a reply is two writes (headers, then body): with Nagle on, the body waited for the client's delayed
            # ACK of the headers, ~40 ms a request (pyarrow's S3 client: 200-300 ms per small write + read here,
            # 65 ms straight to the server), as no real store answers
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _handle(self) -> None:
            proxy.enter()
            try:
                self._answer()
            finally:
                proxy.leave()

        def _answer(self) -> None:
            body = self._read_body()
            target = urlsplit(self.path)
            path, forward = target.path, self.path
            if target.netloc:  # a forward-proxy request: an absolute URI naming the host the client addressed
                path, path_style = proxy.as_path_style(target.netloc, target.path)
                forward = path + (f"?{target.query}" if target.query else "")
                if path_style and proxy.refuse_path_style:
                    body = b"<Error><Code>InvalidRequest</Code><Message>Path-style requests are not supported; use virtual-hosted-style requests</Message></Error>"
                    self._reply(403, {"Content-Type": "application/xml"}, body)
                    return
            kind = proxy.decide(self.command, path)
            if kind == "reset":
                self._reset()
                return
            if kind not in (None, "truncate"):
                self._reply(kind, {"Content-Type": "application/xml"}, FAULT_BODIES[kind])
                return
            conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
            try:
                drop = {"connection", "transfer-encoding", "content-length", "expect", *proxy.drop_headers}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in drop}
                headers, body = proxy.real_request(headers, body)
                headers["Content-Length"] = str(len(body))
                if target.netloc:  # the server reads the bucket from the path, for its own host
                    headers = {k: v for k, v in headers.items() if k.lower() != "host"}
                    headers["Host"] = up.netloc
                conn.request(self.command, forward, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                skip = {"transfer-encoding", "connection", "content-length"}
                headers = {k: v for k, v in resp.getheaders() if k.lower() not in skip}
                headers, data = proxy.opaque_etags(headers, data)
                length = resp.getheader("Content-Length") if self.command == "HEAD" else None
                if kind == "truncate":
                    # HEAD has no body to cut: its Content-Length stays the object's size
                    self._reply(resp.status, headers, data[: len(data) // 2], length or str(len(data)))
                    self._reset()
                    return
                self._reply(resp.status, headers, data, length)
            finally:
                conn.close()

        def _reset(self) -> None:
            # SO_LINGER 0 turns close() into a TCP RST: the client sees "connection reset by peer"
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()

        def _read_body(self) -> bytes:
            """The request body, de-chunked: the AWS SDK streams uploads with Transfer-Encoding: chunked."""
            if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers up to the blank line
                pass
            return b"".join(parts)

        def _reply(self, status: int, headers: dict[str, str], data: bytes, length: str | None = None) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", length or str(len(data)))  # HEAD: the object's length
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def do_CONNECT(self) -> None:
            """A tunnel to the `host:port` asked for (an https:// endpoint through this proxy): bytes both ways,
            neither read nor faulted (the TLS inside is the client's and the server's); counted in `hosts`."""
            with proxy.lock:
                proxy.hosts[self.path] += 1
            host, _, port = self.path.rpartition(":")
            try:
                upstream = socket.create_connection((host, int(port)), timeout=60)
                upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as setup(): no wait on an ACK
            except OSError:
                self.send_error(502)
                return
            self.send_response(200, "Connection established")
            self.end_headers()
            self.close_connection = True

            def pump(source: socket.socket, sink: socket.socket) -> None:
                try:
                    while data := source.recv(65536):
                        sink.sendall(data)
                except OSError:
                    pass
                finally:
                    for s in (source, sink):
                        with contextlib.suppress(OSError):
                            s.shutdown(socket.SHUT_RDWR)

            back = threading.Thread(target=pump, args=(upstream, self.connection), daemon=True)
            back.start()
            pump(self.connection, upstream)
            back.join()
            upstream.close()

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

    return Handler
