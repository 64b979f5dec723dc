"""What a person sees in the UI, in a real browser: `dg dev` as `make run` serves it (the project's
dagster.yaml, the partition bounds `cpa calendar` fits to the data), after `cpa backfill` of the
course dataset, driven by headless Chromium. Screenshots go to tests/artifacts/ui/ (git-ignored)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bench.stack import LiveStack
from cpa_assets.landing import landing_calendar
from cpa_resources import LakeResource
from tests.browser import Browser
from tests.conftest import REPO, fresh_keyspace, require_real_landing

pytestmark = pytest.mark.integration

ARTIFACTS = REPO / "tests" / "artifacts" / "ui"
ISO_DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")


@pytest.fixture(scope="module")
def ui(cassandra_server, tmp_path_factory):
    """The course dataset backfilled by `cpa backfill` into a scratch instance, lake and keyspace,
    then served by `dg dev`; a browser pointed at it."""
    landing = require_real_landing()
    root = tmp_path_factory.mktemp("ui")
    calendar = landing_calendar(landing, LakeResource(landing=str(landing)).event_files())
    with fresh_keyspace("ui_browser") as cassandra:
        stack = LiveStack(root / "home", root / "lake", landing, cassandra.keyspace, env=calendar)
        stack.prepare()  # its instance's database and the Spark Connect server, as `make run` has them
        backfill = subprocess.run([str(Path(sys.executable).parent / "cpa"), "backfill"], env=stack.env, cwd=REPO,
                                  capture_output=True, text=True, timeout=900)
        assert backfill.returncode == 0, backfill.stdout[-3000:] + backfill.stderr[-3000:]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with stack, Browser() as browser:
            # Dagster greets a new instance with a "Join the Dagster community" dialog over every page,
            # a second after it loads; a person dismisses it once, which the instance remembers.
            assert "errors" not in stack.graphql("mutation { setNuxSeen }")
            yield stack, browser, root / "lake", calendar


# Should the community dialog still show, press its Skip as a person would.
SKIP_COMMUNITY_DIALOG = """(() => {
    if (!document.body.innerText.includes('Join the Dagster community')) return false;
    const skip = Array.from(document.querySelectorAll('button')).find(b => b.innerText.trim() === 'Skip');
    if (skip) skip.click();
    return Boolean(skip);
})()"""


def _open(ui, path: str, *needles: str) -> str:
    stack, browser, _, _ = ui
    browser.open(f"http://127.0.0.1:{stack.port}{path}")
    browser.wait_for_text(*needles, timeout=120)
    if browser.evaluate(SKIP_COMMUNITY_DIALOG):
        browser.wait_for("!document.body.innerText.includes('Join the Dagster community')", timeout=20)
    return browser.text()


def test_the_catalog_lists_every_asset(ui):
    from cpa_assets.definitions import defs

    _, browser, _, _ = ui
    browser.call("Emulation.setDeviceMetricsOverride", width=1440, height=6000, deviceScaleFactor=1, mobile=False)
    try:
        text = _open(ui, "/assets", "bronze / usage_events")
        expected = {" / ".join(key.path) for key in defs.resolve_asset_graph().get_all_asset_keys()}
        browser.wait_for(f"{json.dumps(sorted(expected))}.every(name => document.body.innerText.includes(name))",
                         timeout=60, what="every asset in the catalog")
        browser.screenshot(ARTIFACTS / "catalog.png")
        text = browser.text()
        assert len(expected) == 46 and all(name in text for name in expected)
    finally:
        browser.call("Emulation.setDeviceMetricsOverride", width=1440, height=1600, deviceScaleFactor=1, mobile=False)


def test_the_partitions_view_shows_the_dates_with_data_and_no_empty_ones(ui):
    _, browser, _, calendar = ui
    first, last = calendar["CPA_FIRST_EVENT_DATE"], calendar["CPA_LAST_EVENT_DATE"]
    assert (first, last) == ("2025-07-03", "2025-08-31")
    text = _open(ui, "/assets/bronze/usage_events?view=partitions", "Materialized (60)", "Missing (0)")
    browser.screenshot(ARTIFACTS / "bronze_usage_events_partitions.png")
    assert "Failed (0)" in text and first in text and last in text
    shown = set(ISO_DATE.findall(text))
    assert shown and all(first <= day <= last for day in shown), sorted(shown)

    # The Materialize dialog offers exactly the dates of the data.
    browser.evaluate("Array.from(document.querySelectorAll('button')).find(b => b.innerText.trim() === 'Materialize…').click()")
    dialog = browser.wait_for_text("Launch runs to materialize bronze / usage_events", "Partition selection")
    browser.screenshot(ARTIFACTS / "materialize_dialog.png")
    launch = dialog[dialog.index("Launch runs to materialize"):]
    assert first in launch and last in launch
    assert all(first <= day <= last for day in ISO_DATE.findall(launch))


def test_a_silver_date_shows_its_own_row_count(ui):
    _, browser, lake, _ = ui
    day = "2025-07-03"
    def stored(layer: str, table: str) -> int:
        folder = lake / layer / table / f"event_date={day}"
        return pq.ParquetDataset(str(folder)).read().num_rows if folder.exists() else 0

    rows, held, bronze = stored("silver", "usage_events"), stored("silver", "usage_events_quarantine"), stored("bronze", "usage_events")
    assert 0 < rows < 42989  # a day, not the 60 days' total
    text = _open(ui, f"/assets/silver/usage_events?view=partitions&partition={day}", "dagster/row_count", "conservation")
    browser.screenshot(ARTIFACTS / f"silver_usage_events_{day}.png")
    assert re.search(rf"dagster/row_count\s+{rows}\b", text), text[-3000:]
    assert re.search(rf"rows_quarantined\s+{held}\b", text) and re.search(rf"rows_in\s+{bronze}\b", text)
    assert f"{bronze} bronze = {rows} silver + {held} quarantined" in text


def test_the_p1_page_renders_its_chart(ui):
    _, browser, _, _ = ui
    _open(ui, "/assets/gold/org_daily_usage_by_service", "Latest materialization", "chart", "[Show Markdown]")
    clicked = browser.evaluate("""(() => {
        const rows = Array.from(document.querySelectorAll('tr')).filter(r => r.innerText.trim().startsWith('chart'));
        const button = rows.flatMap(r => Array.from(r.querySelectorAll('button, a')))
            .find(e => e.innerText.trim() === '[Show Markdown]');
        if (button) button.click();
        return Boolean(button);
    })()""")
    assert clicked, "no [Show Markdown] for the chart entry"
    width = browser.wait_for(
        "(() => { const i = Array.from(document.images).find(i => i.src.startsWith('data:image/png'));"
        " return i && i.complete && i.naturalWidth; })()", timeout=60, what="the chart image")
    browser.screenshot(ARTIFACTS / "p1_chart.png")
    assert width >= 400
    assert "P1 daily cost per service" in browser.text()
