"""The direct ranged reader (http.client, readinto) against a scripted server: the checks, redirects,
connection reuse, and the hand-over to huggingface_hub's session."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hubmerge.errors import RangeReadError
from hubmerge.weights import http as ranged
from hubmerge.weights.http import DirectConnections, RetryPolicy, read_range_into

DATA = bytes(range(256)) * 64  # 16 KiB
FAST = RetryPolicy(max_retries=3, base_wait=0, max_wait=0, timeout=5)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hangs up mid-answer is what these tests script; socketserver printed its traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class Server:
    """A threaded HTTP/1.1 server whose answers ``handle(request_handler)`` scripts; it logs what it saw."""

    def __init__(self, handle: Callable[[BaseHTTPRequestHandler], None]) -> None:
        self.seen: list[dict[str, str]] = []
        self.connections: set[int] = set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
                outer.connections.add(self.client_address[1])
                handle(self)

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def ranged_answer(handler: BaseHTTPRequestHandler, *, body_extra: bytes = b"", content_range: str | None = None) -> None:
    start, end = map(int, handler.headers["Range"].removeprefix("bytes=").split("-"))
    body = DATA[start : end + 1] + body_extra
    handler.send_response(206)
    handler.send_header("Content-Range", content_range or f"bytes {start}-{end}/{len(DATA)}")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[BaseHTTPRequestHandler], None]], Server]]:
    servers: list[Server] = []

    def start(handle: Callable[[BaseHTTPRequestHandler], None]) -> Server:
        servers.append(Server(handle))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def direct() -> Iterator[DirectConnections]:
    connections = DirectConnections()
    yield connections
    connections.close()


def read(url: str, offset: int, length: int, direct: DirectConnections | None, **kwargs: object) -> bytes:
    out = bytearray(length)
    read_range_into(url, offset, memoryview(out), where="r@s:f", policy=FAST, direct=direct, **kwargs)
    return bytes(out)


def test_ranges_arrive_whole_over_one_kept_alive_connection(serve, direct):
    server = serve(ranged_answer)
    for offset, length in ((0, 300), (100, 300), (5000, 300), (16_000, 384)):
        assert read(f"{server.url}/f", offset, length, direct) == DATA[offset : offset + length]
    assert len(server.connections) == 1
    assert all(s["range"].startswith("bytes=") and s["accept-encoding"] == "identity" for s in server.seen)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda h: (h.send_response(200), h.send_header("Content-Length", "3"), h.end_headers(), h.wfile.write(b"abc")),
         "ignored the Range header"),
        (lambda h: ranged_answer(h, content_range="bytes 0-9/16384"), "Content-Range"),
        # only one end wrong (the body is still the 5 bytes asked for): each bound is checked on its own
        (lambda h: ranged_answer(h, content_range="bytes 9-14/16384"), "Content-Range"),
        (lambda h: ranged_answer(h, content_range="bytes 10-15/16384"), "Content-Range"),
        (lambda h: ranged_answer(h, body_extra=b"!!"), "more bytes"),
    ],
    ids=["200", "wrong-content-range", "wrong-start-only", "wrong-end-only", "too-many-bytes"],
)
def test_wrong_answers_are_refused_not_retried(serve, direct, answer, message):
    server = serve(answer)
    with pytest.raises(RangeReadError, match=message):
        read(f"{server.url}/f", 10, 5, direct)
    assert len(server.seen) == 1


def test_short_answers_resume_from_the_last_byte(serve, direct):
    def handle(h: BaseHTTPRequestHandler) -> None:  # at most 7 bytes, then the connection closes
        start, end = map(int, h.headers["Range"].removeprefix("bytes=").split("-"))
        h.send_response(206)
        h.send_header("Content-Range", f"bytes {start}-{end}/{len(DATA)}")
        h.send_header("Content-Length", str(end - start + 1))
        h.end_headers()
        h.wfile.write(DATA[start : min(end + 1, start + 7)])
        h.close_connection = True

    server = serve(handle)
    assert read(f"{server.url}/f", 50, 30, direct) == DATA[50:80]
    assert [s["range"] for s in server.seen[:2]] == ["bytes=50-79", "bytes=57-79"]


def test_redirects_keep_the_token_on_their_origin_only(serve, direct):
    cdn = serve(ranged_answer)

    def hub(h: BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", "/same-origin" if h.path == "/f" else f"{cdn.url}/blob")
        h.send_header("Content-Length", "0")
        h.end_headers()

    server = serve(hub)
    assert read(f"{server.url}/f", 0, 64, direct, headers={"authorization": "Bearer hf_secret"}) == DATA[:64]
    assert [s["path"] for s in server.seen] == ["/f", "/same-origin"]
    assert all(s["authorization"] == "Bearer hf_secret" for s in server.seen)
    assert "authorization" not in cdn.seen[0]


def test_error_answers_go_to_the_session_for_its_typed_errors(serve, direct, monkeypatch):
    server = serve(lambda h: (h.send_response(404), h.send_header("Content-Length", "0"), h.end_headers()))
    used: list[str] = []

    def session_fetch(url, start, out, headers, where, policy, raise_for_status):
        used.append(url)
        raise_for_status(None)

    class Typed(Exception):
        pass

    def raise_typed(response: object) -> None:
        raise Typed("404 as huggingface_hub says it")

    monkeypatch.setattr(ranged, "_session_fetch_into", session_fetch)
    with pytest.raises(Typed):
        read(f"{server.url}/f", 0, 8, direct, raise_for_status=raise_typed)
    assert used == [f"{server.url}/f"] and len(server.seen) == 1


@pytest.mark.parametrize("status", [401, 403, 404])
@pytest.mark.parametrize("go_direct", [True, False], ids=["direct", "session"])
def test_refusals_typed_by_huggingface_hub_are_final_not_retried(serve, direct, status, go_direct):
    # huggingface_hub's HTTP errors are OSErrors: taken for transport failures, a 401 was retried six
    # times and ended as "giving up after 6 attempts" instead of the error that says what is wrong.
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import hf_raise_for_status

    server = serve(lambda h: (h.send_response(status), h.send_header("Content-Length", "0"), h.end_headers()))
    with pytest.raises(HfHubHTTPError) as raised:
        read(f"{server.url}/f", 0, 8, direct if go_direct else None, raise_for_status=hf_raise_for_status)
    assert raised.value.response.status_code == status
    assert len(server.seen) == (2 if go_direct else 1)  # the direct try, then the session's one request


def test_retry_after_sets_the_wait_within_a_cap():
    policy = RetryPolicy(base_wait=0, max_wait=0)
    assert policy.wait(0, "7") == 7
    assert policy.wait(3, "9999") == 60
    assert policy.wait(0, "Wed, 21 Oct 2015 07:28:00 GMT") == 0  # a date: the policy's own wait
    assert policy.wait(0, "-1") == 0 and policy.wait(0, "nan") == 0  # time.sleep refuses both
    own = RetryPolicy(base_wait=2, max_wait=2)  # a date gets the policy's wait (with its jitter), not none
    assert 1.5 <= own.wait(0, "Wed, 21 Oct 2015 07:28:00 GMT") <= 2.5 and 1.5 <= own.wait(0, "-1") <= 2.5


def test_a_429_waits_as_long_as_its_retry_after_says(serve, direct, monkeypatch):
    answers = iter([429, 206])

    def handle(h: BaseHTTPRequestHandler) -> None:
        if next(answers) == 429:
            h.send_response(429)
            h.send_header("Retry-After", "3")
            h.send_header("Content-Length", "0")
            h.end_headers()
        else:
            ranged_answer(h)

    slept: list[float] = []
    monkeypatch.setattr(ranged.time, "sleep", slept.append)
    server = serve(handle)
    assert read(f"{server.url}/f", 0, 8, direct) == DATA[:8]
    assert slept == [3.0]


def test_a_configured_proxy_leaves_the_reads_to_the_session(monkeypatch):
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.setenv("no_proxy", "internal.example")
    assert not DirectConnections.usable("https://huggingface.co/x/resolve/main/model.safetensors")
    assert DirectConnections.usable("https://internal.example/x")
    assert DirectConnections.usable("http://127.0.0.1:1/x")  # no http_proxy set
    assert not DirectConnections.usable("ftp://host/x")


def self_signed(directory) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime
    import ipaddress

    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


def test_https_goes_direct_when_the_certificate_verifies_and_to_the_session_when_not(tmp_path, serve, monkeypatch):
    import ssl

    cert_file, key_file = self_signed(tmp_path)
    server = serve(ranged_answer)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
    url = server.url.replace("http://", "https://") + "/f"
    handed_over: list[str] = []
    monkeypatch.setattr(ranged, "_session_fetch_into", lambda url, *args: handed_over.append(url) or 0)

    monkeypatch.setenv("SSL_CERT_FILE", cert_file)  # trusted, as the session would trust it
    trusting = DirectConnections()
    assert read(url, 100, 200, trusting) == DATA[100:300] and handed_over == []
    trusting.close()

    monkeypatch.delenv("SSL_CERT_FILE")
    untrusting = DirectConnections()
    with pytest.raises(RangeReadError):  # the stub session returns no bytes: retried, then given up
        read(url, 0, 8, untrusting)
    assert handed_over and all(u == url for u in handed_over)
    untrusting.close()
