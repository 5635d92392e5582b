"""A local, cross-origin-isolated HTTP server for the browser-wasm runner and the bundle checks
(pure: stdlib only).

It listens on 127.0.0.1 only, on a port the kernel picks, and answers GET / HEAD for files under
the directories mounted on it (``mount``: a URL prefix → a directory) and the single files
published on it (``publish``: a URL prefix → one file, e.g. the model, whose neighbours in a cache
directory stay unserved), nothing else. Every answer
carries COOP: same-origin and COEP: require-corp (plus CORP: same-origin), so the page is
``crossOriginIsolated`` and onnxruntime-web may run wasm threads on shared memory. A path that
climbs out of its mount, a symlink out of it or an unknown prefix is a 404.
"""

from __future__ import annotations

import mimetypes
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp",
                     "Cross-Origin-Resource-Policy": "same-origin", "X-Content-Type-Options": "nosniff",
                     "Cache-Control": "no-store"}
_TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
          ".html": "text/html; charset=utf-8", ".json": "application/json", ".onnx": "application/octet-stream"}


def content_type(path: Path) -> str:
    """The Content-Type of a served file (ES modules and wasm need exact ones)."""
    return _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


class _Handler(BaseHTTPRequestHandler):
    server: IsolatedServer

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        """Answer a file under a mount (or a published file) with its bytes, else 404."""
        self._answer(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        """GET's headers without the body."""
        self._answer(body=False)

    def _answer(self, *, body: bool) -> None:
        path = self.server.resolve(unquote(urlsplit(self.path).path))
        if path is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        data = path.read_bytes()
        self.send_response(HTTPStatus.OK)
        for name, value in {**ISOLATION_HEADERS, "Content-Type": content_type(path),
                            "Content-Length": str(len(data))}.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def end_headers(self) -> None:
        """Close the headers, adding the isolation headers to answers that lack them (errors)."""
        # Error pages are same-origin documents too: the isolation must hold for every answer.
        if not self._headers_buffer or b"Cross-Origin-Opener-Policy" not in b"".join(self._headers_buffer):
            for name, value in ISOLATION_HEADERS.items():
                self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        """Log nothing per request."""
        return  # a page fetches dozens of files; the runner's report says what matters


class IsolatedServer(ThreadingHTTPServer):
    """The server: ``mount`` directories, ``start`` it in a thread, ``url`` of a path, ``close``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mounts: dict[str, Path] = {}
        self.files: dict[str, Path] = {}
        self._thread: threading.Thread | None = None

    def mount(self, prefix: str, directory: Path) -> str:
        """Serve ``directory`` under ``/prefix/``; returns that URL prefix."""
        self.mounts[prefix.strip("/")] = Path(directory).resolve()
        return self.url(f"/{prefix.strip('/')}/")

    def publish(self, prefix: str, path: Path) -> str:
        """Serve the one file ``path`` at ``/prefix/<its name>``; returns that URL."""
        path = Path(path).resolve()
        self.files[f"{prefix.strip('/')}/{path.name}"] = path
        return self.url(f"/{prefix.strip('/')}/{path.name}")

    def resolve(self, url_path: str) -> Path | None:
        """The file a URL path names, or None (unknown mount, outside it, not a file)."""
        published = self.files.get(url_path.lstrip("/"))
        if published is not None:
            return published if published.is_file() else None
        prefix, _, rest = url_path.lstrip("/").partition("/")
        root = self.mounts.get(prefix)
        if root is None or not rest:
            return None
        path = (root / rest).resolve()
        return path if path.is_relative_to(root) and path.is_file() else None

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` on this server."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}{path}"

    def start(self) -> IsolatedServer:
        """Serve in a daemon thread until ``close``."""
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="isolated-server", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port."""
        self.shutdown()
        self.server_close()

    def __enter__(self) -> IsolatedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
