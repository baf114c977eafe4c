"""A real browser for the integration tests: Debian's Chromium, headless, driven through
WebDriver (Debian's chromium-driver) by selenium. Imported by the tests of the patient's side
(the portal, the OHIF viewer under /viewer, share links).

- `browser` (fixture): a started `Browser` (its `driver` is selenium's), quit at the end.
  Chromium resolves every host name but 127.0.0.1 to nothing
  (`--host-resolver-rules`), so a page cannot reach the internet; `outside_requests()`
  lists, from the DevTools performance log, every request the pages made that left the
  origin (none may).
- `painted(element)`: whether a canvas shows an image (an element screenshot read with
  Pillow; a WebGL canvas read back from script can come out blank).
- `axe(driver, exclude=..., allow=...)`: axe-core (npm, `.radveil/fixtures/axe/axe.min.js`)
  run in the page for WCAG 2.0/2.1 A and AA; the violations whose rule is not allowed.
- `shot(driver, name)`: a screenshot saved as a test artefact in
  `target/test-artefacts/browser/NAME.png`.

Peers (chromium, chromium-driver, selenium, Pillow, axe-core, the prepared viewer: all from
tools/setup-peers): with CI=true a missing one FAILS the test; otherwise it is skipped loudly.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT, missing_peer

CHROMIUM = os.environ.get("RADVEIL_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("RADVEIL_CHROMEDRIVER", "/usr/bin/chromedriver")
AXE_JS = REPO_ROOT / ".radveil" / "fixtures" / "axe" / "axe.min.js"
VIEWER_DIR = REPO_ROOT / ".radveil" / "viewer"
ARTEFACTS = REPO_ROOT / "target" / "test-artefacts" / "browser"

# WCAG 2.0 and 2.1, levels A and AA.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]

FLAGS = [
    "--headless=new",
    "--no-sandbox",                 # CI runs as root
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
    # WebGL (OHIF's viewport) without a GPU: SwiftShader.
    "--enable-unsafe-swiftshader",
    "--use-angle=swiftshader",
    # No name resolves but 127.0.0.1: nothing a page asks for can leave this machine.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
    "--password-store=basic",
]


def _module(name: str):
    try:
        return __import__(name)
    except ImportError:
        return None


def require_browser():
    """Chromium, its WebDriver, selenium and Pillow; fails (CI) or skips when one is missing."""
    for path, what in ((CHROMIUM, "Debian package chromium"),
                       (CHROMEDRIVER, "Debian package chromium-driver")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            missing_peer(f"{path} ({what}; tools/setup-peers)")
    for mod, pip in (("selenium", "selenium==4.51.0"), ("PIL", "pillow")):
        if _module(mod) is None:
            missing_peer(f"Python module '{mod}' (pip {pip} into .venv; tools/setup-peers)")


def require_axe() -> Path:
    """axe-core's axe.min.js (npm axe-core, tools/setup-peers)."""
    if not AXE_JS.is_file():
        missing_peer(f"{AXE_JS} (npm axe-core; tools/setup-peers)")
    return AXE_JS


def require_viewer() -> Path:
    """The OHIF viewer prepared for /viewer (tools/setup-peers, tools/viewer/prepare)."""
    if not (VIEWER_DIR / "index.html").is_file():
        missing_peer(f"the prepared OHIF viewer {VIEWER_DIR} (tools/setup-peers)")
    return VIEWER_DIR


def artefact(name: str) -> Path:
    """Where a test artefact called `name` goes (its folder made)."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    return ARTEFACTS / safe


def shot(driver, name: str) -> Path:
    """A screenshot of the whole window, kept as `target/test-artefacts/browser/NAME.png`."""
    path = artefact(name if name.endswith(".png") else name + ".png")
    driver.save_screenshot(str(path))
    return path


def painted(element, *, spread: int = 50, stddev: float = 10.0, centre: float = 0.5):
    """The element's screenshot (a Pillow image) when it shows a picture: in its centre (the
    middle `centre` of its width and height: an element screenshot also holds whatever is
    drawn over it, like a viewer's overlay text at the edges and corners), grey levels spread
    over more than `spread` and varying (standard deviation above `stddev`). False when it is
    blank or nearly uniform there. Shaped for `WebDriverWait(...).until(lambda d: painted(el))`."""
    from PIL import Image, ImageStat

    img = Image.open(io.BytesIO(element.screenshot_as_png)).convert("L")
    w, h = img.size
    if w < 4 or h < 4:
        return False
    mx, my = int(w * (1 - centre) / 2), int(h * (1 - centre) / 2)
    middle = img.crop((mx, my, w - mx, h - my))
    lo, hi = middle.getextrema()
    if hi - lo > spread and ImageStat.Stat(middle).stddev[0] > stddev:
        return img
    return False


def axe(driver, *, exclude=(), allow=(), name: str | None = None) -> list[dict]:
    """Runs axe-core in the current page (WCAG 2.0/2.1 A and AA) leaving out the elements
    matched by the CSS selectors `exclude`. Returns the violations whose rule id is not in
    `allow`, each {id, impact, help, nodes, targets}; every violation found (allowed or
    not) is kept in `target/test-artefacts/browser/NAME.axe.json` when `name` is given.
    The script is injected over WebDriver, so the page's CSP does not block it."""
    driver.execute_script(require_axe().read_text(encoding="utf-8"))
    result = driver.execute_async_script(
        """
        const [exclude, tags, done] = arguments;
        const context = exclude.length ? {include: [document], exclude: exclude.map(s => [s])}
                                       : document;
        axe.run(context, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})
           .then(r => done({violations: r.violations.map(v => ({
                 id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.length,
                 targets: v.nodes.slice(0, 5).map(n => n.target)}))}))
           .catch(e => done({error: String(e)}));
        """, list(exclude), AXE_TAGS)
    if result.get("error"):
        raise AssertionError(f"axe-core failed in the page: {result['error']}")
    found = result["violations"]
    if name:
        artefact(name + ".axe.json").write_text(json.dumps(found, indent=1))
    allowed = set(allow)
    return [v for v in found if v["id"] not in allowed]


class Browser:
    """Headless Chromium under chromedriver. `driver` is selenium's WebDriver; the DevTools
    performance log is collected as it is read (reading drains it) so that
    `outside_requests` and `responses` see every request since the start."""

    def __init__(self):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        opts = webdriver.ChromeOptions()
        # Given explicitly, so Selenium Manager never looks for (or downloads) a browser.
        opts.binary_location = CHROMIUM
        for a in FLAGS:
            opts.add_argument(a)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        self.driver.set_script_timeout(120)
        self.driver.set_page_load_timeout(60)
        self._events: list[dict] = []
        self._console: list[dict] = []

    def _drain(self):
        for e in self.driver.get_log("performance"):
            try:
                self._events.append(json.loads(e["message"])["message"])
            except (ValueError, KeyError):
                pass
        self._console.extend(self.driver.get_log("browser"))

    def requests(self) -> list[str]:
        """Every URL a page asked for since the start (DevTools Network.requestWillBeSent)."""
        self._drain()
        return [m["params"]["request"]["url"] for m in self._events
                if m.get("method") == "Network.requestWillBeSent"]

    def responses(self) -> list[tuple[str, int, str]]:
        """Every response received since the start: (URL, status, Content-Type)."""
        self._drain()
        out = []
        for m in self._events:
            if m.get("method") == "Network.responseReceived":
                r = m["params"]["response"]
                headers = {k.lower(): v for k, v in (r.get("headers") or {}).items()}
                out.append((r["url"], int(r["status"]), headers.get("content-type", "")))
        return out

    def outside_requests(self, origin: str) -> list[str]:
        """The requests that left `origin` (data: and blob: URLs stay in the page)."""
        origin = origin.rstrip("/")
        return sorted({u for u in self.requests()
                       if not (u == origin or u.startswith(origin + "/")
                               or u.startswith(("data:", "blob:")))})

    def console(self, level: str = "SEVERE") -> list[str]:
        """The page console's messages of `level` since the start."""
        self._drain()
        return [c["message"] for c in self._console if c.get("level") == level]

    def quit(self):
        try:
            self.driver.quit()
        except Exception:  # noqa: BLE001 - already gone
            pass


def outside_requests(browser: Browser, origin: str) -> list[str]:
    """The requests the browser's pages made that left `origin` (see Browser)."""
    return browser.outside_requests(origin)


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium for the module's tests (started once: about a second)."""
    require_browser()
    started = time.monotonic()
    b = Browser()
    b.started_in = time.monotonic() - started
    yield b
    b.quit()


def chromium_version() -> str:
    """`chromium --version`, for reports."""
    import subprocess

    exe = shutil.which(CHROMIUM) or CHROMIUM
    r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    return r.stdout.strip()
