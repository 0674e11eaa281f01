"""`export --format html` opens in a real headless browser (Debian's Chromium) with no network
and shows its plots: checked on a screenshot, and in the file (no script or stylesheet is
fetched from anywhere)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.test_results import make_study
from tui_tuner.cli import main

plotly = pytest.importorskip("plotly", reason="the [report] extra (plotly) is not installed")
Image = pytest.importorskip("PIL.Image", reason="Pillow reads the screenshot")

#: Plotly's default blue and the baseline's orange, as the report draws them.
BLUE = (31, 119, 180)
ORANGE = (255, 127, 14)


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def _near(pixel: tuple[int, ...], colour: tuple[int, int, int], tol: int = 12) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel[:3], colour, strict=True))


def test_html_report_opens_offline_and_shows_its_plots(tmp_path: Path) -> None:
    chromium = _chromium()
    study = make_study(tmp_path / "studies" / "alpha", "alpha")
    report = tmp_path / "report.html"
    assert main(["export", str(study), "--format", "html", "-o", str(report)]) == 0
    text = report.read_text()
    # Self-contained: nothing is loaded from the network.
    assert not re.search(r"<script[^>]+src=[\"']?(https?:)?//", text)
    assert not re.search(r"<link[^>]+href=[\"']?(https?:)?//", text)
    assert text.count('class="plotly-graph-div"') == 3  # history, Pareto, importances
    assert "Parameter importances" in text and "<table>" in text
    assert "gpu_memory_utilization=0.85" in text and "0.8500000000000001" not in text
    shot = tmp_path / "shot.png"
    home = tmp_path / "home"  # Chromium's profile, away from the user's
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", f"--user-data-dir={home}", "--window-size=1200,3200",
         "--virtual-time-budget=8000", f"--screenshot={shot}", report.as_uri()],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(home)},
    )  # fmt: skip
    assert shot.is_file(), result.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    flat = getattr(image, "get_flattened_data", image.getdata)  # Pillow 13 renamed it
    pixels = list(flat())
    colours = len(set(pixels))
    assert colours > 200, f"a blank page? {colours} colours"
    blue = sum(_near(p, BLUE) for p in pixels)
    orange = sum(_near(p, ORANGE) for p in pixels)
    # The markers and bars of the plots are drawn (plotly rendered in the browser).
    assert blue > 500 and orange > 50, (blue, orange)
