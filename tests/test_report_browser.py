"""The report in a real browser: headless Chromium over the DevTools protocol renders every figure,
logs no console error, makes no network request, and leaves a screenshot to look at.

Needs Debian's `chromium` package and the `websocket-client` wheel; skips with the reason otherwise.
Screenshots go to $AUTOSCALE_ARTIFACTS when set (CI keeps them), else the test's tmp folder.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from autoscale.reports import build
try:
    from test_reports import write_run
except ImportError:  # tests/ run as a package
    from tests.test_reports import write_run

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
websocket = pytest.importorskip("websocket", reason="needs the websocket-client package (pip install websocket-client)")
if CHROMIUM is None:
    pytest.skip("needs headless Chromium: apt-get install -y chromium", allow_module_level=True)


class DevTools:
    """Just enough of the Chrome DevTools protocol: numbered calls, and the events that arrive in
    between kept for later assertions."""

    def __init__(self, ws_url: str):
        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def wait_for_event(self, method: str, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(e.get("method") == method for e in self.events):
                return next(e for e in self.events if e.get("method") == method)
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                self.events.append(json.loads(self.ws.recv()))
            except websocket.WebSocketTimeoutException:
                break
        raise TimeoutError(f"no {method} within {timeout_s} s")

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        self.ws.close()


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    profile = tmp_path_factory.mktemp("chromium-profile")
    process = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
         "--disable-extensions", "--enable-unsafe-swiftshader",  # software WebGL for the parallel coordinates
         f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "--window-size=1280,900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(f"chromium did not start (exit code {process.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        yield port
    finally:
        process.kill()
        process.wait(timeout=30)


def _open_page(port: int) -> DevTools:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?about:blank", method="PUT")
    with urllib.request.urlopen(request, timeout=30) as response:
        target = json.loads(response.read())
    tools = DevTools(target["webSocketDebuggerUrl"])
    for domain in ("Page", "Runtime", "Network", "Log"):
        tools.call(f"{domain}.enable")
    tools.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
    return tools


def _load(tools: DevTools, page: Path, expected_plots: int) -> None:
    tools.events.clear()
    tools.call("Page.navigate", url=page.as_uri())
    tools.wait_for_event("Page.loadEventFired", 60)
    deadline = time.monotonic() + 60
    while tools.evaluate("document.querySelectorAll('.js-plotly-plot').length") < expected_plots:
        assert time.monotonic() < deadline, "figures did not render within 60 s"
        time.sleep(0.2)
    time.sleep(0.5)  # let plotly finish its last relayout before the screenshot


def _problems(tools: DevTools, page: Path) -> tuple[list[str], list[str]]:
    """Console errors and exceptions; requests for anything but the page itself."""
    errors, requests = [], []
    for event in tools.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            errors.append(json.dumps(params["exceptionDetails"])[:500])
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(params["entry"]["text"])
        elif method == "Page.javascriptDialogOpening":
            errors.append(f"dialog opened: {params.get('message')}")
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if url != page.as_uri() and not url.startswith(("data:", "blob:")):
                requests.append(url)
    return errors, requests


def _screenshot(tools: DevTools, name: str, tmp_path: Path) -> Path:
    """The whole page: the viewport grows to the page's height first, so plotly lays out once at
    the size it is shot at."""
    height = tools.evaluate("document.documentElement.scrollHeight")
    tools.call("Emulation.setDeviceMetricsOverride", width=1280, height=height, deviceScaleFactor=1, mobile=False)
    time.sleep(1.0)
    shot = tools.call("Page.captureScreenshot", format="png")
    tools.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
    folder = Path(os.environ.get("AUTOSCALE_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(base64.b64decode(shot["data"]))
    print(f"\nscreenshot: {path}")
    return path


def test_report_renders_every_figure_offline_without_errors(chromium, tmp_path):
    run = write_run(tmp_path / "run", 120, study=True, predictions=True)
    page = build.build_report(run)
    expected = page.read_text().count('class="plot-spec"')
    assert expected == 5
    tools = _open_page(chromium)
    try:
        _load(tools, page, expected)
        assert tools.evaluate("document.querySelectorAll('.js-plotly-plot').length") == expected
        assert tools.evaluate("document.querySelectorAll('.js-plotly-plot .main-svg').length") >= 2 * expected
        # the Pareto front and the failures were drawn, not just an empty plot frame
        assert tools.evaluate("document.querySelectorAll('#plot-memory .scatterlayer .trace').length") >= 6
        assert tools.evaluate("document.querySelectorAll('#plot-parallel .parcoords .y-axis').length") >= 4
        assert tools.evaluate("document.querySelectorAll('#trials tbody tr').length") == 121
        tools.evaluate("var f = document.getElementById('trial-filter'); f.value = 'oom';"
                       "f.dispatchEvent(new Event('input'))")
        ooms = tools.evaluate("document.querySelectorAll('#trials tbody tr').length")
        assert 0 < ooms < 121
        assert tools.evaluate("document.querySelector('#trials tbody tr.status-failed') !== null")
        tools.evaluate("var f = document.getElementById('trial-filter'); f.value = '';"
                       "f.dispatchEvent(new Event('input'));"
                       "[...document.querySelectorAll('#trials th')].find(t => t.textContent === 'tokens_per_s').click()")
        top = tools.evaluate("document.querySelector('#trials tbody tr').classList.contains('best-row')")
        assert top, "sorting by tokens_per_s should put the best trial first"
        _assert_the_trials_table_fits_a_laptop_and_shows_every_column_on_request(tools)
        _screenshot(tools, "report.png", tmp_path)
        errors, requests = _problems(tools, page)
        assert errors == [], errors
        assert requests == [], requests
        seen = [e for e in tools.events if e.get("method") == "Network.requestWillBeSent"]
        assert seen and seen[0]["params"]["request"]["url"] == page.as_uri()  # the monitor saw the page load
    finally:
        tools.close()


def _assert_the_trials_table_fits_a_laptop_and_shows_every_column_on_request(tools: DevTools) -> None:
    """At 1280 px the table needs no horizontal scroll; "every column" brings the knobs back one per column."""
    width = "[document.getElementById('trials-wrap').scrollWidth, document.getElementById('trials-wrap').clientWidth]"
    visible = "[...document.querySelectorAll('#trials th')].filter(t => t.offsetParent !== null).map(t => t.textContent)"
    scroll_width, client_width = tools.evaluate(width)
    assert scroll_width <= client_width, f"the trials table scrolls sideways at 1280 px: {scroll_width} > {client_width}"
    compact = tools.evaluate(visible)
    assert "config" in compact and "zero_stage" not in compact
    tools.evaluate("document.getElementById('all-columns').click()")
    assert {"zero_stage", "micro_batch", "precision", "wall_s"} <= set(tools.evaluate(visible))
    tools.evaluate("document.getElementById('all-columns').click()")
    assert tools.evaluate(visible) == compact


def test_hostile_study_name_shows_as_text_and_runs_nothing(chromium, tmp_path):
    hostile = "<script>alert(1)</script>"
    page = build.build_report(write_run(tmp_path / "run", 10, study_name=hostile))
    tools = _open_page(chromium)
    try:
        _load(tools, page, page.read_text().count('class="plot-spec"'))
        assert tools.evaluate("document.querySelector('h1').textContent") == hostile
        errors, requests = _problems(tools, page)
        assert errors == [] and requests == []
    finally:
        tools.close()


def test_empty_study_page_says_so(chromium, tmp_path):
    from autoscale.results import COLUMNS

    run = tmp_path / "run"
    run.mkdir()
    (run / "trials.csv").write_text(",".join(COLUMNS) + "\n")
    (run / "summary.json").write_text(json.dumps({"study_name": "nothing-yet", "best": None}))
    page = build.build_report(run)
    tools = _open_page(chromium)
    try:
        _load(tools, page, 0)
        assert "No trial finished" in tools.evaluate("document.getElementById('empty-study').textContent")
        assert tools.evaluate("document.getElementById('trial-count').textContent") == "0 of 0 trials"
        errors, requests = _problems(tools, page)
        assert errors == [] and requests == []
    finally:
        tools.close()


def test_compare_page_renders_both_studies(chromium, tmp_path):
    a = write_run(tmp_path / "a", 40, study_name="h100-commit-a", seed=1)
    b = write_run(tmp_path / "b", 40, study_name="h100-commit-b", seed=2)
    page, _ = build.compare_reports(a, b, tmp_path / "compare.html")
    tools = _open_page(chromium)
    try:
        _load(tools, page, 2)
        legend = tools.evaluate("[...document.querySelectorAll('#plot-compare-memory .legendtext')]"
                                ".map(e => e.textContent)")
        assert "h100-commit-a" in legend and "h100-commit-b" in legend
        _screenshot(tools, "compare.png", tmp_path)
        errors, requests = _problems(tools, page)
        assert errors == [] and requests == []
    finally:
        tools.close()
