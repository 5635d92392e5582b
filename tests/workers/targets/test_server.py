"""The local server of the browser target: isolated, loopback only, nothing outside its mounts."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from workers.targets.server import IsolatedServer


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - loopback URL made here
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), b""


def test_every_answer_is_cross_origin_isolated_and_typed_for_es_modules_and_wasm(tmp_path: Path) -> None:
    """(B6) A module and a wasm file come back with COOP same-origin, COEP require-corp and the
    exact types a browser insists on; the server listens on 127.0.0.1 only."""
    (tmp_path / "loader.mjs").write_text("export const x = 1;\n")
    (tmp_path / "kernel.wasm").write_bytes(b"\0asm\1\0\0\0")
    with IsolatedServer() as server:
        base = server.mount("files", tmp_path)
        status, headers, body = _get(base + "loader.mjs")
        _, wasm_headers, _ = _get(base + "kernel.wasm")
    assert server.server_address[0] == "127.0.0.1"
    assert status == 200 and body == b"export const x = 1;\n"
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    assert headers["Content-Type"] == "text/javascript" and wasm_headers["Content-Type"] == "application/wasm"


@pytest.mark.parametrize("path", ["/files/../secret.txt", "/files/%2e%2e/secret.txt", "/files/link.txt",
                                  "/other/loader.mjs", "/files/", "//etc/passwd"])
def test_a_path_outside_the_mounted_directory_is_a_404(tmp_path: Path, path: str) -> None:
    """(B6) Dot-dot segments (plain or encoded), a symlink out of the mount, an unknown prefix and a
    directory are all refused with 404, still isolated, and the secret's bytes never come back."""
    served = tmp_path / "served"
    served.mkdir()
    (tmp_path / "secret.txt").write_text("do not serve")
    (served / "link.txt").symlink_to(tmp_path / "secret.txt")
    with IsolatedServer() as server:
        server.mount("files", served)
        status, headers, body = _get(server.url(path))
    assert status == 404 and b"do not serve" not in body
    assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"


def test_a_published_file_is_served_alone_and_its_neighbours_are_not(tmp_path: Path) -> None:
    """(B6) The model is published as one file: it comes back, while another file of the same
    (cache) directory, at the same URL prefix, is a 404."""
    (tmp_path / "model.onnx").write_bytes(b"model bytes")
    (tmp_path / "other-model.onnx").write_bytes(b"someone else's model")
    with IsolatedServer() as server:
        url = server.publish("model", tmp_path / "model.onnx")
        status, _, body = _get(url)
        neighbour, _, _ = _get(server.url("/model/other-model.onnx"))
    assert (status, body) == (200, b"model bytes") and neighbour == 404
