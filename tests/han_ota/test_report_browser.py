"""The trial report renders its charts in a real headless browser, with no errors and nothing fetched (issue 15 part 3).

Chromium loads a copy of the report with a probe script put first in its head: the
probe records script errors, console errors and failed loads, and once the page has
loaded writes each SVG's rendered size and drawn elements, and every resource the page
fetched, into the DOM, which ``--dump-dom`` prints. The report itself has no script.

This test is not skipped when Chromium is missing: it fails and says how to install it
(the README's test command and .ci/run install it first).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from han_ota.cli import _mount, app

DATA = Path(__file__).parents[1] / "data" / "report"
BROWSERS = ("chromium", "chromium-browser")
INSTALL = "apt-get install -y chromium (Debian, as root; the README's test command runs it when chromium is missing)"

PROBE = """<script>
window.__problems = [];
window.addEventListener("error", function (e) {
  var what = e.message || (e.target && (e.target.src || e.target.href)) || "error event";
  window.__problems.push("error: " + what);
}, true);
var consoleError = console.error;
console.error = function () { window.__problems.push("console.error: " + Array.prototype.join.call(arguments, " ")); consoleError.apply(console, arguments); };
window.addEventListener("load", function () {
  var svgs = Array.prototype.map.call(document.querySelectorAll("svg"), function (s) {
    var r = s.getBoundingClientRect();
    return {width: r.width, height: r.height, drawn: s.querySelectorAll("path, line, rect, text, use").length};
  });
  var out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({svgs: svgs, problems: window.__problems, title: document.title,
    resources: performance.getEntriesByType("resource").map(function (r) { return r.name; })});
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"no headless browser to open the report in: none of {', '.join(BROWSERS)} is on PATH. Install it: {INSTALL}")


def open_in_browser(page: Path, workdir: Path) -> dict[str, Any]:
    """Load ``page`` (with the probe) in headless Chromium; the probe's findings and Chromium's stderr."""
    probed = workdir / f"probed-{page.name}"
    text = page.read_text(encoding="utf-8")
    probed.write_text(text.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={workdir / 'profile'}",
        "--window-size=1280,2000",
        "--virtual-time-budget=5000",
        "--dump-dom",
        probed.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, f"chromium exited {done.returncode}: {done.stderr[-2000:]}"
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.DOTALL)
    assert found, f"the probe wrote nothing: the page did not load? stderr: {done.stderr[-2000:]}"
    result: dict[str, Any] = json.loads(found.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
    result["stderr"] = done.stderr
    return result


@pytest.fixture
def trial_report(tmp_path: Path) -> Path:
    _mount()
    state = tmp_path / "state"
    state.mkdir()
    shutil.copy(DATA / "trial10.audit.jsonl", state / "audit.jsonl")
    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", "--state-dir", str(state), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_the_report_renders_its_charts_with_no_errors(trial_report: Path, tmp_path: Path) -> None:
    seen = open_in_browser(trial_report, tmp_path)
    assert seen["title"] == "han-ota trial report: 10 device(s)"
    assert seen["problems"] == [], seen["problems"]
    assert seen["resources"] == []  # nothing fetched: the file is self-contained
    assert "Uncaught" not in seen["stderr"]
    svgs = seen["svgs"]
    assert len(svgs) == 4, svgs  # progress, throughput, states, background traffic
    for svg in svgs:
        assert svg["width"] > 300 and svg["height"] > 100, svgs
        assert svg["drawn"] > 20, svgs  # axes, ticks, lines, bars, labels


def test_the_probe_sees_errors_and_fetches(trial_report: Path, tmp_path: Path) -> None:
    """The check above can fail: a script error and a missing file are seen."""
    broken = tmp_path / "broken.html"
    broken.write_text(
        trial_report.read_text().replace("</body>", f'<img src="{(tmp_path / "absent.png").as_uri()}"><script>notAFunction();</script></body>'),
    )
    seen = open_in_browser(broken, tmp_path)
    assert any("notAFunction" in p for p in seen["problems"]), seen["problems"]
    assert any("absent.png" in p for p in seen["problems"]), seen["problems"]
