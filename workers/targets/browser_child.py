"""The measuring child of the ``browser-wasm`` target: one variant in headless Chromium, on
onnxruntime-web's wasm backend (pure: no Django).

It speaks the Node runner's protocol (``workers/targets/js/node_runner.mjs``: load, round,
outputs, finish, one JSON object per line on stdin / the result channel) and relays each request
to the product's measuring page (``static/modelhub/ort/bench.html``), which answers it in the
page. The page, onnxruntime-web's dist files and the model are served by a local
cross-origin-isolated server (``workers.targets.server``), so wasm may use more than one thread.

Chromium is Debian's (``CHROMIUM``, default ``/usr/bin/chromium``), driven by Playwright, never a
downloaded browser; each child gets a fresh, empty profile, removed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

from workers import sandbox
from workers.child import report
from workers.targets.server import IsolatedServer

ROOT = Path(__file__).resolve().parents[2]
ORT_WEB_DIST = ROOT / "node_modules" / "onnxruntime-web" / "dist"
PAGES = ROOT / "static" / "modelhub" / "ort"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
# No network beyond loopback, no GPU, no background services; a fresh profile each time.
# ForceEagerMeasureMemory: measureUserAgentSpecificMemory answers now instead of at the next GC.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--enable-blink-features=ForceEagerMeasureMemory"]
PAGE_TIMEOUT_MS = 120_000


class Browser:
    """One Chromium with the measuring page open, and the server that feeds it."""

    def __init__(self, scratch: str | None = None) -> None:
        from playwright.sync_api import sync_playwright

        if not os.access(CHROMIUM, os.X_OK):
            raise RuntimeError(f"The browser-wasm target needs Debian's chromium at {CHROMIUM} (apt-get install chromium).")
        if not (ORT_WEB_DIST / "ort.wasm.min.mjs").is_file():
            raise RuntimeError("onnxruntime-web is not installed in node_modules; run `make install` (npm ci).")
        self.server = IsolatedServer().start()
        self.server.mount("ort", ORT_WEB_DIST)
        self.server.mount("modelhub", PAGES)
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=scratch)
        self.driver = self.context = None
        try:
            self.driver = sync_playwright().start()
            self.context = self.driver.chromium.launch_persistent_context(
                self.profile, executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        except Exception:
            self.close()  # no server, driver or profile outlives a failed launch
            raise
        self.context.set_default_timeout(PAGE_TIMEOUT_MS)
        self.page = self.context.pages[0] if self.context.pages else self.context.new_page()
        self.console: list[str] = []
        self.page.on("console", lambda message: self.console.append(message.text))
        self.version = self.context.browser.version if self.context.browser else _chromium_version()
        self.renderer_baseline_kb = 0
        self.page.goto(self.server.url("/modelhub/bench.html"))
        self.page.wait_for_function("() => globalThis.modelhub !== undefined")

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """The page's answer to one request ({"ok": ...} or {"error": ...})."""
        if request.get("op") == "load":
            model = Path(request.pop("model"))
            request["model_url"] = self.server.publish("model", model)  # the file alone, not its directory
            self.renderer_baseline_kb = renderer_memory_kb(self.profile, "VmRSS", reset=True)
        answer = self.page.evaluate("request => globalThis.modelhub.handle(request)", request)
        if request.get("op") == "load" and "ok" in answer:
            answer["ok"]["runtime"]["runtime_version"] = self.version
        if request.get("op") == "finish" and "ok" in answer and answer["ok"]["peak_memory_mb"] is None:
            answer["ok"] = self._renderer_peak()
        return answer

    def _renderer_peak(self) -> dict[str, Any]:
        """The page's renderer process as the kernel counts it: VmHWM (reset at load) − VmRSS then."""
        peak_kb = renderer_memory_kb(self.profile, "VmHWM")
        return {"peak_memory_mb": max(peak_kb - self.renderer_baseline_kb, 0) / 1024.0,
                "baseline_memory_mb": self.renderer_baseline_kb / 1024.0,
                "memory_method": "renderer VmHWM after clear_refs reset - VmRSS before the session "
                                 "(measureUserAgentSpecificMemory never settles with wasm threads)"}

    def close(self) -> None:
        """Close the browser, stop the driver and the server, remove the profile."""
        for part, step in ((self.context, "close"), (self.driver, "stop"), (self.server, "close")):
            try:
                if part is not None:
                    getattr(part, step)()
            except Exception:  # noqa: BLE001 - closing what is already gone is fine
                pass
        shutil.rmtree(self.profile, ignore_errors=True)


def _chromium_version() -> str:
    """Chromium's version as its binary reports it ("Chromium 150.0.7871.100 built on Debian")."""
    import subprocess

    try:
        out = subprocess.run([str(CHROMIUM), "--version"], capture_output=True, text=True, timeout=30).stdout  # noqa: S603
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    words = [word for word in out.split() if word[:1].isdigit()]
    return words[0] if words else out.strip() or "unknown"


def _processes() -> dict[int, tuple[int, str]]:
    """Every process this user can read: pid → (parent pid, command line)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        found[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmdline)
    return found


def renderer_memory_kb(profile: str, field_name: str, *, reset: bool = False) -> int:
    """The largest ``field_name`` (VmRSS, VmHWM) of the renderers of the Chromium using
    ``profile``; ``reset`` also resets their high-water marks (clear_refs 5) where allowed."""
    processes = _processes()
    family = {pid for pid, (_, cmd) in processes.items() if f"--user-data-dir={profile}" in cmd}
    grew = True
    while grew:
        more = {pid for pid, (parent, _) in processes.items() if parent in family} - family
        family |= more
        grew = bool(more)
    largest = 0
    for pid in (pid for pid in family if "--type=renderer" in processes[pid][1]):
        if reset:
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                pass
        largest = max(largest, _status_kb(pid, field_name))
    return largest


def _status_kb(pid: int, field_name: str) -> int:
    """One kB field of a process's /proc status (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return 0


def serve(requests: IO[str], out: IO[str], scratch: str | None = None) -> int:
    """Relay requests to the page until ``finish`` (or the parent closes stdin); an error ends it.
    The browser is closed before the last answer: the parent kills this child's process group
    right after it, and Chromium, started by Playwright's driver, is not in that group.
    ``scratch``: where the browser's profile goes (the parent removes it)."""
    browser: Browser | None = None
    try:
        for line in requests:
            op = None
            try:
                request = json.loads(line)
                op = request.get("op")
                browser = browser or Browser(scratch)
                answer = browser.ask(request)
            except Exception as exc:  # the parent gets every failure as a readable message
                answer = {"error": f"The browser runner failed: {type(exc).__name__}: {exc}"}
            last = "error" in answer or op == "finish"
            if last and browser is not None:
                browser.close()
                browser = None
            report(out, answer)
            if last:
                return 2 if "error" in answer else 0
    finally:
        if browser is not None:
            browser.close()
    return 0


def main() -> int:
    """Serve the parent on stdin and the result channel; the exit status (2: an error)."""
    out = sandbox.result_channel()
    sys.stdout = sys.stderr
    return serve(sys.stdin, out, sys.argv[1] if len(sys.argv) > 1 else None)


if __name__ == "__main__":
    raise SystemExit(main())
