"""Browser tests: Debian's chromium, driven by Playwright, against pytest-django's live server.

The browser is never downloaded: `make test` installs the chromium package when it is missing
(as root); without it these tests fail and say so. Each test gets a new empty profile and saves
its screenshots under MODELHUB_SCREENSHOTS (default: the pytest temporary directory).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 30_000


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/browser/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"The browser tests need Debian's chromium at {CHROMIUM}: run `make browser` as root or "
                    "`sudo apt-get install -y chromium` (set CHROMIUM=<path> for another install).", pytrace=False)
    return CHROMIUM


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    """Playwright's sync API keeps an event loop in the test thread; the tests' own ORM calls are
    still plain synchronous calls, which Django refuses next to a running loop unless told. The
    permission lasts only while the driver runs, so it never reaches other tests' processes."""
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as driver:
            yield driver


@pytest.fixture
def page(playwright: Any, chromium: Path, tmp_path: Path) -> Iterator[Any]:
    """A page of a fresh headless chromium with an empty profile of its own."""
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path / "chromium-profile"), executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True,
        viewport={"width": 1400, "height": 900}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.pages[0] if context.pages else context.new_page()
    finally:
        context.close()


@pytest.fixture(scope="session")
def screenshots_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("MODELHUB_SCREENSHOTS")
    path = Path(given) if given else tmp_path_factory.getbasetemp() / "tests" / "browser" / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def shoot(page: Any, screenshots_dir: Path) -> Callable[[str], Path]:
    """Save a full-page screenshot of the current page as ``<name>.png`` (a test artifact)."""

    def shoot(name: str) -> Path:
        path = screenshots_dir / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return shoot


@pytest.fixture
def log_in(page: Any, live_server: Any) -> Callable[[Any, str], None]:
    """Log in through the admin's login page (make_user's password), then open ``path``."""

    def log_in(user: Any, path: str = "/dashboard/") -> None:
        page.goto(f"{live_server.url}/admin/login/?next={path}")
        page.fill("#id_username", user.username)
        page.fill("#id_password", f"pw-{user.username}")
        page.click("input[type=submit]")
        page.wait_for_url(f"{live_server.url}{path}")

    return log_in


@pytest.fixture
def queue_tasks() -> Callable[[], contextlib.AbstractContextManager[None]]:
    """Within it, work is queued instead of run in the request (to the in-memory broker nobody
    reads), so a test can run a job in a thread of its own while a page watches, as the demo does."""
    from modelhub import queue

    return lambda: queue.eager(False)
