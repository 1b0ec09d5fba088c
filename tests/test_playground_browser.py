"""The playground in a real headless browser: Debian's chromium driven by Selenium (`make browser`
installs both; nothing is downloaded). Load the page, submit a prompt, see streamed text and the
per-token view. With LMZOO_PLAYGROUND_SCREENSHOT=docs/playground.png it also saves the screenshot
the docs show."""
import os
import shutil
from pathlib import Path

import pytest
import torch

import lmzoo
from lmzoo.tokenizers import get_tokenizer

webdriver = pytest.importorskip("selenium.webdriver")  # in the dev extra
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from lmzoo.serving.app import ServerOptions, create_app  # noqa: E402
from lmzoo.serving.runner import ServerThread  # noqa: E402

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# Debian's chromium in a container: no sandbox or GPU, and nothing that calls home.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,900"]
TOKENS = 12


@pytest.fixture
def browser(tmp_path):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("chromium and chromium-driver are not installed; run `make browser` (Debian packages)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    # An explicit driver path: Selenium Manager looks for (and would download) nothing.
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def test_the_playground_streams_text_and_shows_what_each_token_did(browser, tmp_path):
    torch.manual_seed(0)
    model = lmzoo.create_model("spike-walze", "nano", vocab_size=259)
    with ServerThread(create_app(model, get_tokenizer("bytes"), ServerOptions("spike-walze-nano"))) as server:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda b: "spike-walze" in b.find_element(By.ID, "model").text)
        prompt = browser.find_element(By.ID, "prompt")
        prompt.send_keys("Once upon a time")
        for field, value in (("max_tokens", TOKENS), ("seed", 3)):
            box = browser.find_element(By.ID, field)
            box.clear()
            box.send_keys(str(value))
        browser.find_element(By.ID, "submit").click()
        wait.until(lambda b: b.find_element(By.ID, "status").text.startswith("done"))
        assert browser.find_element(By.ID, "status").text == f"done: {TOKENS} tokens (length)"
        output = browser.find_element(By.ID, "output").text
        assert output.startswith("Once upon a time") and len(output) > len("Once upon a time")
        # One column per token: the input token row and a spike row per layer.
        tokens = browser.find_elements(By.CSS_SELECTOR, "#row-tokens td")
        assert len(tokens) == TOKENS and tokens[0].text == "e"  # the prompt's last character was read first
        layers = [browser.find_elements(By.CSS_SELECTOR, f"#row-spiked-{i} td") for i in range(model.config.n_layers)]
        assert all(len(cells) == TOKENS for cells in layers)
        points = browser.find_element(By.CSS_SELECTOR, "#timeline polyline").get_attribute("points")
        assert points.count(",") == TOKENS - 1  # every token after the first
        screenshot = tmp_path / "playground.png"
        assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
        if os.environ.get("LMZOO_PLAYGROUND_SCREENSHOT"):
            shutil.copyfile(screenshot, Path(os.environ["LMZOO_PLAYGROUND_SCREENSHOT"]))
