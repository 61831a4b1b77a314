"""The demo report in a real headless browser (Playwright driving Debian's chromium).

It must render offline and self-contained (no request leaves the file, no script, no console
error), every inlined figure must be drawn at a readable size inside the page's width, and the
sections the analyses add must be there with their numbers.
"""

import importlib
import json
import os
import shutil
from pathlib import Path

import pytest

from workbench.cli import main
from workbench.paths import world_dir

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRED = os.environ.get("MW_REQUIRE_BROWSER") == "1"  # set by .ci/run: there a missing browser is a failure
if REQUIRED:
    assert CHROMIUM is not None, "MW_REQUIRE_BROWSER=1 but chromium is not installed (apt-get install chromium)"
    importlib.import_module("playwright.sync_api")  # the test extra's playwright: missing is a failure here
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is part of the test extra")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium; .ci/run does)"),
    pytest.mark.skipif(not (world_dir() / "manifest.json").is_file(), reason="data/world is not built"),
]
# what the machine's closed network needs (see the environment notes): no background connections
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    return out


def test_report_renders_offline_with_every_figure_and_section(demo):
    requests: list[str] = []
    errors: list[str] = []
    summary = json.loads((demo / "summary.json").read_text())
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("request", lambda r: requests.append(r.url))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((demo / "report.html").as_uri())
        page.wait_for_load_state("load")
        boxes = page.eval_on_selector_all("svg", "els => els.map(e => { const r = e.getBoundingClientRect(); "
                                                "return [r.width, r.height, r.right]; })")
        headings = page.eval_on_selector_all("h2, h3", "els => els.map(e => e.textContent)")
        steering = page.eval_on_selector_all("td.ok, td.bad", "els => els.map(e => [e.className, e.textContent])")
        page_width = page.evaluate("document.documentElement.scrollWidth")
        scripts = page.eval_on_selector_all("script", "els => els.length")
        browser.close()
    assert requests == [(demo / "report.html").as_uri()], requests  # nothing else is fetched
    assert errors == [] and scripts == 0
    # two pruned graphs, two supernode graphs, two circles, a tuning heatmap, a discovery ranking and the top
    # family's cloud, all drawn and inside the page
    assert len(boxes) >= 9
    assert all(w >= 300 and h >= 200 for w, h, _ in boxes), boxes
    assert page_width <= 1280 and all(right <= 1280 for _, _, right in boxes), (page_width, boxes)
    assert headings.count("Readable circuit (supernodes)") == len(summary["graphs"]) == 2
    assert "Manifold: days on a circle" in headings and "Steering" in headings
    assert any(h.startswith("Which families are rings?") for h in headings)
    assert len(steering) == 7 and all(cls == "ok" for cls, _ in steering), steering
    assert [text for _, text in steering][0] == "Wednesday"  # Friday moved to Monday: two days after is Wednesday
