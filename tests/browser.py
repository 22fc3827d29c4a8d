"""Headless Chromium for the report tests: load a page, read its DOM, its images and its console.

Debian's `chromium` (installed by `make test` as root) speaks the DevTools protocol over a pipe
(`--remote-debugging-pipe`: JSON messages, NUL-terminated, on file descriptors 3 and 4), so no
websocket client, port or Playwright is needed. The browser is offline for the page: no network
service, no component updates, a throwaway profile.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--remote-debugging-pipe",
         # A page's own files may be read by its scripts (a test reads a figure's pixels through a canvas,
         # and the page a link points to): file:// is otherwise an opaque origin.
         "--allow-file-access-from-files")

# Seconds to wait for one protocol answer, and for a page's load event (a local file: fast).
ANSWER_TIMEOUT_S = 60


@dataclass
class Page:
    dom: str                                            # document.documentElement.outerHTML
    text: str                                           # document.body.innerText
    images: list[dict[str, Any]]                        # src, complete, naturalWidth/Height, top, left, right
    console_errors: list[str] = field(default_factory=list)
    scroll_width: int = 0                               # document width; > viewport = horizontal scroll
    measured: Any = None                                # the value of `measure`


class _Pipe:
    def __init__(self, process: subprocess.Popen, write_fd: int, read_fd: int) -> None:
        self.process, self.write_fd, self.read_fd = process, write_fd, read_fd
        self.buffer, self.next_id, self.events = b"", 0, []

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self.read_fd, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)


def render(path: Path, *, width: int = 1280, height: int = 800, screenshot: Path | None = None,
           full_page: bool = False, script: str | None = None, measure: str | None = None) -> Page:
    """Open `path` (a local file) at width x height CSS pixels; return its DOM, images and
    console errors (console.error, uncaught exceptions, failed loads); write a PNG of the first
    screen (or, with full_page, of the whole page) to `screenshot` if given. `script`: a
    JavaScript expression run once the page has loaded (to open a view), before all that;
    `measure`: one evaluated after it, whose (JSON) value is the page's `measured`."""
    if CHROMIUM is None:
        raise RuntimeError("chromium is not installed")
    to_browser_read, to_browser_write = os.pipe()
    from_browser_read, from_browser_write = os.pipe()

    def wire_fds() -> None:  # in the child: the protocol wants fd 3 to read, fd 4 to write
        read_end, write_end = os.dup(to_browser_read), os.dup(from_browser_write)
        os.dup2(read_end, 3)
        os.dup2(write_end, 4)

    # The browser's helper processes may still be writing the profile as it exits.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        process = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                                    "about:blank"], preexec_fn=wire_fds, close_fds=False,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_read)
        os.close(from_browser_write)
        pipe = _Pipe(process, to_browser_write, from_browser_read)
        try:
            target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                pipe.call(f"{domain}.enable", session=session)
            pipe.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                             "mobile": False}, session=session)
            pipe.call("Page.navigate", {"url": Path(path).resolve().as_uri()}, session=session)
            pipe.wait_for("Page.loadEventFired")

            def evaluate(expression: str) -> Any:
                return pipe.call("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                                 session=session)["result"].get("value")

            if script is not None:
                evaluate(script)
                time.sleep(1)  # let the page redraw
            page = Page(
                dom=evaluate("document.documentElement.outerHTML"), text=evaluate("document.body.innerText"),
                images=json.loads(evaluate("JSON.stringify(Array.from(document.images).map(i => ({src: i.src, "
                                           "complete: i.complete, naturalWidth: i.naturalWidth, "
                                           "naturalHeight: i.naturalHeight, top: i.getBoundingClientRect().top, "
                                           "left: i.getBoundingClientRect().left, "
                                           "right: i.getBoundingClientRect().right})))")),
                scroll_width=evaluate("document.documentElement.scrollWidth"),
                measured=evaluate(measure) if measure is not None else None)
            if screenshot is not None:
                options: dict[str, Any] = {"format": "png"}
                if full_page:
                    size = pipe.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
                    options.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": size["width"],
                                                                      "height": size["height"], "scale": 1})
                data = pipe.call("Page.captureScreenshot", options, session=session)["data"]
                Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                Path(screenshot).write_bytes(base64.b64decode(data))
            page.console_errors = _errors(pipe.events)
            return page
        finally:
            try:
                pipe.call("Browser.close")
            except (RuntimeError, TimeoutError, OSError):
                pass  # already gone
            os.close(to_browser_write)
            os.close(from_browser_read)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


def _errors(events: list[dict[str, Any]]) -> list[str]:
    errors = []
    for event in events:
        params = event.get("params", {})
        if event.get("method") == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(" ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", [])))
        elif event.get("method") == "Runtime.exceptionThrown":
            errors.append(params.get("exceptionDetails", {}).get("text", "exception"))
        elif event.get("method") == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            errors.append(f"{entry.get('text')} {entry.get('url', '')}".strip())
    return errors
