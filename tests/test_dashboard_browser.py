"""The dashboard in a real browser: `wavesweep dashboard` serves a store filled by a real study, headless Chromium
(Debian's `chromium` and `chromium-driver`, which `.ci/run` installs) loads the Interactions view, waits for the
interaction plot and takes a screenshot. Any Streamlit exception element on the page fails the test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.ray_nodes import free_port

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--window-size=1400,1800")
EXCEPTION = '[data-testid="stException"]'
PLOT = ".st-key-interaction-plot .js-plotly-plot"


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        reason = (f"no {CHROMIUM} and {CHROMEDRIVER}: install Debian's browser and driver "
                  "(apt install chromium chromium-driver) to run the dashboard's browser test")
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser test is required in CI: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def served(tmp_path_factory, dashboard_store):
    """`wavesweep dashboard` on a free port over the dashboard tests' store (its 2^3 study "effects" has an x:y
    interaction); its URL."""
    directory = tmp_path_factory.mktemp("browser")
    url = dashboard_store
    port = free_port()
    log = (directory / "server.log").open("w")
    # Its own process group: `wavesweep dashboard` starts Streamlit as a child, and both must stop at the end.
    server = subprocess.Popen([sys.executable, "-m", "orchestrator", "dashboard", "--store", url, "--port", str(port)],
                              cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert server.poll() is None, (directory / "server.log").read_text()
        try:
            with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as response:
                if response.read() == b"ok":
                    break
        except OSError:
            pass
        assert time.monotonic() < deadline, "the dashboard did not answer its health check in 60 s"
        time.sleep(0.2)
    yield base
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=20)
    log.close()
    assert "Traceback" not in (directory / "server.log").read_text()


def count(driver, selector: str) -> int:
    # Through JavaScript: Streamlit re-renders elements, which would leave Selenium element handles stale.
    return driver.execute_script("return document.querySelectorAll(arguments[0]).length", selector)


def test_the_interaction_plot_renders_in_chromium(served, browser, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{served}/?view=Interactions&study=effects")

    def plot_drawn(driver) -> bool:
        assert count(driver, EXCEPTION) == 0, driver.find_element("css selector", EXCEPTION).text
        return count(driver, f"{PLOT} .scatterlayer .trace") >= 2  # one line per level of y

    WebDriverWait(browser, 90, poll_frequency=0.25).until(plot_drawn)
    title = browser.execute_script(f"return document.querySelector('{PLOT} .gtitle').textContent")
    assert title == "Interaction x × y: mean loss (95% CI)"
    shot = tmp_path / "interactions.png"
    assert browser.save_screenshot(str(shot))
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000  # a rendered page, not a blank one
    assert count(browser, EXCEPTION) == 0
