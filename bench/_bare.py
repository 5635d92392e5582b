"""A bare WSGI application for bench/serving.py: reads the body, answers fixed JSON, does nothing else.

Served by the same gunicorn settings as modelhub, it measures what HTTP, gunicorn and the client
cost on this host at this moment, so that modelhub's own share can be told apart from the host's.
"""

from collections.abc import Callable, Iterable
from typing import Any

ANSWER = b'{"outputs": {"quality": [[0.5]]}}'


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Read the request body and answer ANSWER."""
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(ANSWER)))])
    return [ANSWER]
