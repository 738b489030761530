"""A small client of headless Chromium's DevTools protocol, for tests that check a page as a browser
renders it. It talks over `--remote-debugging-pipe` (JSON messages ending in NUL on the browser's
file descriptors 3 and 4), so it needs no WebSocket library, no port and no npm package: only the
browser, Debian's `chromium`. Every request the page makes, every console message and every log entry
(a Content-Security-Policy violation is one) is recorded while it loads."""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-default-apps", "--mute-audio")
"""Flags that work in a container without a display, a sandbox or a network. Scrollbars are kept:
a page is as wide as a real window leaves it beside its vertical scrollbar."""
TIMEOUT = 60.0


def find_chromium() -> str | None:
    """$CHROMIUM, else Debian's chromium (or a chromium-browser / google-chrome on the PATH)."""
    given = os.environ.get("CHROMIUM")
    if given:
        return given if Path(given).is_file() else None
    return next((found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))),
                None)


def _high(fd: int) -> int:
    """`fd` moved to 10 or above: the shell below puts the browser's ends on 3 and 4, which must not be
    one of them already (a test runner may leave the low numbers free)."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


@dataclass
class Loaded:
    """What a page did while it loaded."""

    requests: list[str] = field(default_factory=list)
    """Every URL the page asked for, the page itself included."""
    console: list[dict] = field(default_factory=list)
    """Console API calls (level, text)."""
    log: list[dict] = field(default_factory=list)
    """Browser log entries (source, level, text): CSP violations, failed loads."""
    exceptions: list[str] = field(default_factory=list)


class Chromium:
    """One headless browser with one page of `width` x `height` CSS pixels."""

    def __init__(self, binary: str, width: int = 1400, height: int = 900) -> None:
        self.profile = tempfile.mkdtemp(prefix="apm-bench-chromium-")
        to_browser, self._out = map(_high, os.pipe())
        self._in, from_browser = map(_high, os.pipe())
        command = [binary, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={self.profile}",
                   f"--window-size={width},{height}", "about:blank"]
        # the browser reads fd 3 and writes fd 4: bash (dash takes single-digit descriptors only) puts the
        # pipes there, then becomes the browser
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{to_browser} 4>&{from_browser}', *command],
            pass_fds=(to_browser, from_browser), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._next = 0
        self._events: list[dict] = []
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Network", "Runtime", "Log"):
                self.call(f"{domain}.enable", session=True)
            self.call("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=True)
        except BaseException:  # a browser that does not start leaves no process and no profile behind
            self.close()
            raise

    def _send(self, message: dict) -> None:
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._out, data):]

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._in, 1 << 16)
            if not chunk:
                raise RuntimeError(f"chromium closed its pipe (exit code {self.process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: bool = False, timeout: float = TIMEOUT) -> Any:
        """Send one command and wait for its answer; events that arrive meanwhile are kept."""
        self._next += 1
        message: dict = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        self._send(message)
        deadline = time.monotonic() + timeout
        while True:
            answer = self._receive(deadline)
            if answer.get("id") == self._next:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self._events.append(answer)

    def wait_for(self, event: str, timeout: float = TIMEOUT) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, seen in enumerate(self._events):
                if seen.get("method") == event:
                    return self._events.pop(i)
            self._events.append(self._receive(deadline))

    def load(self, url: str) -> Loaded:
        """Navigate and wait for the load event (every image decoded or failed); what it did."""
        self._events.clear()
        self.call("Page.navigate", {"url": url}, session=True)
        self.wait_for("Page.loadEventFired")
        self.evaluate("1")  # a round trip: events sent before it are in
        loaded = Loaded()
        for event in self._events:
            params = event.get("params", {})
            method = event.get("method")
            if method == "Network.requestWillBeSent":
                loaded.requests.append(params["request"]["url"])
            elif method == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                loaded.console.append({"level": params.get("type"), "text": text})
            elif method == "Log.entryAdded":
                entry = params.get("entry", {})
                loaded.log.append({k: entry.get(k) for k in ("source", "level", "text", "url")})
            elif method == "Runtime.exceptionThrown":
                loaded.exceptions.append(str(params.get("exceptionDetails", {}).get("text")))
        return loaded

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        import base64

        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._in, self._out):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
