"""The web chat page in headless Chromium: type a message, see the reply, see the heatmap.

Uses Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``,
``/usr/bin/chromedriver``), driven by selenium; Selenium Manager is never asked to download
anything (the driver's path is given). Without the browser the test is skipped, unless
``PADLESS_REQUIRE_BROWSER=1`` (set by ``.ci/run``): then it fails. The screenshot goes to
``$PADLESS_SCREENSHOT_DIR/serve.png`` (default: the test's temporary directory).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from padless.decoding.batched import decode_ids
from padless.decoding.options import SearchOptions
from padless.runs.loading import load_model
from padless.serving.server import load_app
from tests.helpers import serve_in_thread

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--window-size=1280,860"]
# pixels of the canvas that are clearly blue: drawn cells (the background is white)
COUNT_CELL_PIXELS = """
const canvas = document.getElementById("heatmap");
const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
let blue = 0;
for (let i = 0; i < data.length; i += 4) if (data[i + 2] - data[i] > 15) blue++;
return blue;
"""


def chromium(profile: Path) -> webdriver.Chrome:
    """Headless Chromium with a fresh profile, or skip (fail when a browser is required)."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if missing:
        reason = (f"the browser test needs {' and '.join(missing)} "
                  "(apt-get install chromium chromium-driver)")
        if os.environ.get("PADLESS_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


def send(driver: webdriver.Chrome, message: str) -> str:
    """Type ``message``, press Enter, wait for the whole new answer (a streamed one shows its
    words first, its scores last); returns its text."""
    answers = len(driver.find_elements(By.CSS_SELECTOR, ".turn.bot .meta"))
    box = driver.find_element(By.ID, "message")
    box.send_keys(message)
    box.send_keys(Keys.ENTER)
    WebDriverWait(driver, 60).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".turn.bot .meta")) > answers
        or d.find_element(By.ID, "error").is_displayed())
    assert not driver.find_element(By.ID, "error").is_displayed(), (
        driver.find_element(By.ID, "error").text)
    return driver.find_elements(By.CSS_SELECTOR, ".turn.bot")[-1].text


@pytest.mark.slow
def test_the_page_answers_and_draws_the_attention_heatmap(qa_run_dir: Path,
                                                          tmp_path: Path) -> None:
    options = SearchOptions(max_length=8)
    model, text, _ = load_model(qa_run_dir, device="cpu")
    driver = chromium(tmp_path / "profile")
    try:
        with serve_in_thread(load_app(qa_run_dir, device="cpu", defaults=options)) as url:
            driver.get(f"{url}/")
            WebDriverWait(driver, 30).until(
                lambda d: "parameters" in d.find_element(By.ID, "model-info").text)
            assert driver.find_element(By.ID, "heatmap").get_attribute("data-rows") is None

            answer = send(driver, "how are you ?")
            ((hyp,),) = decode_ids(model, [text.encode("how are you ?")], options)
            reply, meta = answer.splitlines()
            assert reply == text.decode(hyp.tokens) and meta.startswith("greedy")
            streamed = driver.find_elements(By.CSS_SELECTOR, ".turn.bot")[-1]
            assert int(streamed.get_attribute("data-streamed")) >= min(1, len(hyp.tokens) - 1)
            canvas = driver.find_element(By.ID, "heatmap")
            assert canvas.get_attribute("data-rows") == str(len(hyp.tokens) + hyp.finished)
            assert canvas.get_attribute("data-columns") == "4"
            assert driver.execute_script(COUNT_CELL_PIXELS) > 4 * 16 * 16  # cells drawn

            driver.find_element(By.CSS_SELECTOR, "#options summary").click()
            Select(driver.find_element(By.ID, "method")).select_by_value("beam")
            assert send(driver, "hello there").splitlines()[1].startswith("beam")
            assert canvas.get_attribute("data-columns") == "2"
            beam_turn = driver.find_elements(By.CSS_SELECTOR, ".turn.bot")[-1]
            assert beam_turn.get_attribute("data-streamed") is None  # beam does not stream

            shots = Path(os.environ.get("PADLESS_SCREENSHOT_DIR", tmp_path))
            shots.mkdir(parents=True, exist_ok=True)
            assert driver.save_screenshot(str(shots / "serve.png"))
            assert (shots / "serve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        driver.quit()
