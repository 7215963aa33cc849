"""Tests for samkit.zoo.download against throwaway HTTP servers on 127.0.0.1 (no internet needed)."""

from __future__ import annotations

import hashlib
import io
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from samkit import download as dl
from samkit.errors import DownloadError, SamkitError
from samkit.zoo.download import (
    WeightsFile,
    cache_dir,
    download_file,
    ensure_weights,
    md5_prefix_from_filename,
)

PAYLOAD = random.Random(1234).randbytes(300_000)
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
# Same length, different content (every byte flipped).
WRONG = bytes(b ^ 0xFF for b in PAYLOAD)


# --------------------------------------------------------------------------------------------
# Local HTTP server
# --------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (name fixed by BaseHTTPRequestHandler)
        self.server.hits.append(self.path)
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404, "Not Found")
            return
        route(self)

    def log_message(self, format, *args):  # keep pytest output clean
        pass


def serve(body: bytes, content_length: int | None = None):
    """Route sending ``body``; Content-Length is len(body) unless given (-1: omit it)."""

    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        length = len(body) if content_length is None else content_length
        if length >= 0:
            h.send_header("Content-Length", str(length))
        h.end_headers()
        h.wfile.write(body)

    return route


def drop_midway(body: bytes, sent: int):
    """Route announcing len(body) bytes, sending only ``sent`` of them, then closing."""

    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body[:sent])
        h.wfile.flush()
        h.close_connection = True
        h.connection.shutdown(socket.SHUT_RDWR)

    return route


def redirect(location: str):
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return route


class LocalServer:
    def __init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.routes = {}
        self.httpd.hits = []
        self.httpd.daemon_threads = True
        self.release = threading.Event()  # lets stalled handlers finish at teardown
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def routes(self) -> dict:
        return self.httpd.routes

    @property
    def hits(self) -> list:
        return self.httpd.hits

    def url(self, path: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    srv = LocalServer()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No proxies (127.0.0.1 must be reached directly) and no samkit settings from outside."""
    for name in (
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "SAMKIT_OFFLINE",
        "SAMKIT_CACHE_DIR",
        "XDG_CACHE_HOME",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def no_network(monkeypatch):
    """Make any attempt to open a URL fail the test."""

    def forbidden(url, timeout):
        raise AssertionError(f"network access attempted: {url}")

    monkeypatch.setattr(dl, "_open_url", forbidden)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".part-" in p.name)


# --------------------------------------------------------------------------------------------
# download_file
# --------------------------------------------------------------------------------------------


def test_successful_download_verifies_and_leaves_no_temp_files(server, tmp_path):
    server.routes["/sam_vit_t_abcdef.pth"] = serve(PAYLOAD)
    dest = tmp_path / "sub" / "weights.pth"  # parent directory does not exist yet
    out = download_file(
        server.url("/sam_vit_t_abcdef.pth"),
        dest,
        size=len(PAYLOAD),
        md5_prefix=PAYLOAD_MD5[:6],
        sha256=PAYLOAD_SHA256,
        progress=False,
        chunk_size=64 * 1024,
    )
    assert out == dest
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(dest.parent) == []
    assert sorted(p.name for p in dest.parent.iterdir()) == ["weights.pth"]


def test_success_without_content_length_or_expectations(server, tmp_path):
    server.routes["/f"] = serve(PAYLOAD, content_length=-1)  # body ends when connection closes
    dest = download_file(server.url("/f"), tmp_path / "f.bin", progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(tmp_path) == []


def test_progress_bar_runs(server, tmp_path, capsys):
    server.routes["/f"] = serve(PAYLOAD)
    download_file(server.url("/f"), tmp_path / "f.bin", progress=True)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert capsys.readouterr().out == ""  # progress goes to stderr only


def test_connection_dropped_midway(server, tmp_path):
    server.routes["/f"] = drop_midway(PAYLOAD, sent=len(PAYLOAD) // 3)
    dest = tmp_path / "f.bin"
    url = server.url("/f")
    with pytest.raises(DownloadError) as info:
        download_file(url, dest, progress=False, timeout=5)
    msg = str(info.value)
    assert url in msg and str(dest) in msg
    assert "closed early" in msg or "IncompleteRead" in msg or "reset" in msg.lower()
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_failed_download_keeps_existing_destination(server, tmp_path):
    server.routes["/f"] = drop_midway(PAYLOAD, sent=1000)
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"previous good file")
    with pytest.raises(DownloadError):
        download_file(server.url("/f"), dest, progress=False, timeout=5)
    assert dest.read_bytes() == b"previous good file"
    assert leftovers(tmp_path) == []


def test_md5_mismatch(server, tmp_path):
    server.routes["/f"] = serve(WRONG)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="MD5 mismatch") as info:
        download_file(
            server.url("/f"), dest, size=len(PAYLOAD), md5_prefix=PAYLOAD_MD5[:6], progress=False
        )
    assert PAYLOAD_MD5[:6] in str(info.value)
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_sha256_mismatch(server, tmp_path):
    server.routes["/f"] = serve(WRONG)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        download_file(server.url("/f"), dest, sha256=PAYLOAD_SHA256, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_md5_prefix_is_case_insensitive(server, tmp_path):
    server.routes["/f"] = serve(PAYLOAD)
    dest = download_file(
        server.url("/f"), tmp_path / "f", md5_prefix=PAYLOAD_MD5[:8].upper(), progress=False
    )
    assert dest.read_bytes() == PAYLOAD


def test_wrong_size_announced(server, tmp_path):
    server.routes["/f"] = serve(PAYLOAD)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="size mismatch") as info:
        download_file(server.url("/f"), dest, size=len(PAYLOAD) + 1, progress=False)
    assert str(len(PAYLOAD) + 1) in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("expected", [len(PAYLOAD) - 10, len(PAYLOAD) + 10])
def test_wrong_size_without_content_length(server, tmp_path, expected):
    server.routes["/f"] = serve(PAYLOAD, content_length=-1)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="size mismatch"):
        download_file(server.url("/f"), dest, size=expected, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_http_404_message_has_url_and_destination(server, tmp_path):
    url = server.url("/missing.pth")
    dest = tmp_path / "missing.pth"
    with pytest.raises(DownloadError) as info:
        download_file(url, dest, progress=False)
    msg = str(info.value)
    assert url in msg
    assert str(dest) in msg
    assert "404" in msg
    assert list(tmp_path.iterdir()) == []


def test_connection_refused_is_quick(tmp_path):
    # A bound but not listening socket: connecting to its port is refused, and no other
    # process can take the port while the test runs.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        url = f"http://127.0.0.1:{port}/f.pth"
        dest = tmp_path / "f.pth"
        start = time.monotonic()
        with pytest.raises(DownloadError) as info:
            download_file(url, dest, progress=False, timeout=5)
        assert time.monotonic() - start < 3
    msg = str(info.value)
    assert url in msg and str(dest) in msg
    assert "refused" in msg.lower()
    assert list(tmp_path.iterdir()) == []


def test_read_timeout(server, tmp_path):
    def stall(h):
        h.send_response(200)
        h.send_header("Content-Length", str(len(PAYLOAD)))
        h.end_headers()
        h.wfile.write(PAYLOAD[:1000])
        h.wfile.flush()
        server.release.wait(10)

    server.routes["/f"] = stall
    dest = tmp_path / "f.bin"
    start = time.monotonic()
    with pytest.raises(DownloadError, match="timed out"):
        download_file(server.url("/f"), dest, progress=False, timeout=0.3)
    assert time.monotonic() - start < 3
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://127.0.0.1/f.pth", "data:,hello", "no-scheme/f.pth"]
)
def test_non_http_urls_refused(tmp_path, url, no_network):
    dest = tmp_path / "f.pth"
    with pytest.raises(DownloadError, match="refusing URL scheme") as info:
        download_file(url, dest, progress=False)
    assert url in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/x"])
def test_redirect_to_non_http_refused(server, tmp_path, target):
    server.routes["/f"] = redirect(target)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError):
        download_file(server.url("/f"), dest, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_http_redirect_followed(server, tmp_path):
    server.routes["/old"] = redirect("/new")
    server.routes["/new"] = serve(PAYLOAD)
    dest = download_file(server.url("/old"), tmp_path / "f", size=len(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.hits == ["/old", "/new"]


def test_keyboard_interrupt_cleans_up(server, tmp_path, monkeypatch):
    class InterruptingBar:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            raise KeyboardInterrupt

    monkeypatch.setattr(dl, "tqdm", InterruptingBar)
    server.routes["/f"] = serve(PAYLOAD)
    dest = tmp_path / "f.bin"
    with pytest.raises(KeyboardInterrupt):
        download_file(server.url("/f"), dest, progress=False, chunk_size=1024)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", ["http://[::1/x", "http://127.0.0.1:abc/x", "http:///x"])
def test_malformed_url(tmp_path, url):
    with pytest.raises(DownloadError) as info:
        download_file(url, tmp_path / "f", progress=False, timeout=2)
    assert url in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_rejected(tmp_path):
    with pytest.raises(ValueError):
        download_file("http://127.0.0.1:1/x", tmp_path / "x", md5_prefix="xyz")
    with pytest.raises(ValueError):
        download_file("http://127.0.0.1:1/x", tmp_path / "x", sha256="ab")
    with pytest.raises(ValueError):
        download_file("http://127.0.0.1:1/x", tmp_path / "x", size=-1)
    assert list(tmp_path.iterdir()) == []


def test_download_error_is_samkit_error():
    assert issubclass(DownloadError, SamkitError)


# --------------------------------------------------------------------------------------------
# cache_dir, WeightsFile, md5_prefix_from_filename
# --------------------------------------------------------------------------------------------


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "samkit"

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "samkit"

    monkeypatch.setenv("SAMKIT_CACHE_DIR", str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"

    assert cache_dir(tmp_path / "arg") == tmp_path / "arg"
    assert cache_dir(str(tmp_path / "arg2")) == tmp_path / "arg2"
    for name in ("home/.cache/samkit", "xdg/samkit", "env", "arg", "arg2"):
        assert (tmp_path / name).is_dir()  # created on demand


def test_cache_dir_ignores_relative_xdg_and_empty_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")
    monkeypatch.setenv("SAMKIT_CACHE_DIR", "")
    assert cache_dir() == tmp_path / ".cache" / "samkit"


def test_cache_dir_create_false(tmp_path):
    assert cache_dir(tmp_path / "c", create=False) == tmp_path / "c"
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    ("name", "prefix"),
    [
        ("sam_vit_b_01ec64.pth", "01ec64"),
        ("sam_vit_l_0b3195.pth", "0b3195"),
        ("sam_vit_h_4b8939.pth", "4b8939"),
        ("/some/dir/sam_vit_h_4B8939.pth", "4b8939"),
        ("mobile_sam.pt", None),
        ("sam_vit_b.pth", None),
        ("sam_vit_b_01ec6.pth", None),
        ("sam_vit_b_01ec64x.pth", None),
        ("sam_vit_b_01ec64", None),
    ],
)
def test_md5_prefix_from_filename(name, prefix):
    assert md5_prefix_from_filename(name) == prefix


def test_weights_file_validation():
    w = WeightsFile("a_0123ab.pth", "https://example.invalid/a", 10, "0123AB")
    assert w.md5_prefix == "0123ab"
    assert w.sha256 is None
    for bad in ("../evil.pth", "dir/evil.pth", "", ".."):
        with pytest.raises(ValueError):
            WeightsFile(bad, "https://example.invalid/a", None, None)
    with pytest.raises(ValueError):
        WeightsFile("a.pth", "https://example.invalid/a", None, "not-hex")
    with pytest.raises(ValueError):
        WeightsFile("a.pth", "https://example.invalid/a", -5, None)


# --------------------------------------------------------------------------------------------
# ensure_weights
# --------------------------------------------------------------------------------------------


def _weights(url: str, size: int | None = len(PAYLOAD)) -> WeightsFile:
    name = f"sam_test_{PAYLOAD_MD5[:6]}.pth"
    return WeightsFile(name, url, size, md5_prefix_from_filename(name), PAYLOAD_SHA256)


def test_ensure_weights_downloads_into_cache(server, tmp_path):
    server.routes["/w.pth"] = serve(PAYLOAD)
    w = _weights(server.url("/w.pth"))
    path = ensure_weights(w, cache=tmp_path / "cache", progress=False)
    assert path == tmp_path / "cache" / w.filename
    assert path.read_bytes() == PAYLOAD
    # Second call: served from the cache, no new request.
    assert ensure_weights(w, cache=tmp_path / "cache", progress=False) == path
    assert server.hits == ["/w.pth"]


def test_ensure_weights_uses_env_cache_dir(server, tmp_path, monkeypatch):
    server.routes["/w.pth"] = serve(PAYLOAD)
    monkeypatch.setenv("SAMKIT_CACHE_DIR", str(tmp_path / "envcache"))
    path = ensure_weights(_weights(server.url("/w.pth")), progress=False)
    assert path.parent == tmp_path / "envcache"
    assert path.read_bytes() == PAYLOAD


def test_ensure_weights_returns_existing_file_without_network(tmp_path, no_network):
    w = _weights("http://127.0.0.1:9/never")
    (tmp_path / w.filename).write_bytes(PAYLOAD)
    assert ensure_weights(w, cache=tmp_path) == tmp_path / w.filename


def test_ensure_weights_wrong_size_cached_file_is_not_overwritten(tmp_path, no_network):
    w = _weights("http://127.0.0.1:9/never")
    cached = tmp_path / w.filename
    cached.write_bytes(b"truncated")
    with pytest.raises(DownloadError) as info:
        ensure_weights(w, cache=tmp_path)
    msg = str(info.value)
    assert str(cached) in msg and "Delete" in msg and w.url in msg
    assert cached.read_bytes() == b"truncated"


@pytest.mark.parametrize("how", ["env", "argument"])
def test_offline_raises_without_network(tmp_path, monkeypatch, no_network, how):
    kwargs = {}
    if how == "env":
        monkeypatch.setenv("SAMKIT_OFFLINE", "1")
    else:
        kwargs["download"] = False
    w = _weights("https://dl.example.invalid/sam_test.pth")
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError) as info:
        ensure_weights(w, cache=cache, **kwargs)
    msg = str(info.value)
    assert w.url in msg
    assert str(cache / w.filename) in msg
    assert not cache.exists()  # nothing created, nothing fetched


def test_offline_still_returns_cached_file(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("SAMKIT_OFFLINE", "1")
    w = _weights("https://dl.example.invalid/sam_test.pth", size=None)
    (tmp_path / w.filename).write_bytes(b"anything")
    assert ensure_weights(w, cache=tmp_path) == tmp_path / w.filename


def test_offline_env_zero_means_online(server, tmp_path, monkeypatch):
    monkeypatch.setenv("SAMKIT_OFFLINE", "0")
    server.routes["/w.pth"] = serve(PAYLOAD)
    path = ensure_weights(_weights(server.url("/w.pth")), cache=tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("https://a.example/f", "http://a.example/f"),  # downgrade
        ("http://a.example/f", "ftp://a.example/f"),
        ("http://a.example/f", "file:///etc/passwd"),
    ],
)
def test_redirect_handler_refuses(old, new):
    handler = dl._HttpOnlyRedirectHandler()
    with pytest.raises(urllib.error.URLError, match="refusing"):
        handler.redirect_request(urllib.request.Request(old), io.BytesIO(), 302, "Found", {}, new)


def test_redirect_handler_allows_http_and_upgrade():
    handler = dl._HttpOnlyRedirectHandler()
    req = urllib.request.Request("http://a.example/f")
    new = handler.redirect_request(req, io.BytesIO(), 302, "Found", {}, "https://b.example/g")
    assert new.full_url == "https://b.example/g"
