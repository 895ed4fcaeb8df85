"""The chat page at / in a real headless Chromium (Debian's chromium and
chromium-driver, through selenium): the page loads from the server itself,
names the model, streams an answer to a typed question, and its live panel
shows the server's figures from /metrics. The screenshot is written next to
the test output (TETRA_TEST_OUTPUT_DIR, else /tmp) and its path printed."""
import os
import shutil
import time

import httpx
import pytest


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("no chromium: scripts/install-deps.sh installs Debian's chromium and chromium-driver")


def test_chat_page_streams_an_answer_and_shows_the_servers_figures(server):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    page = httpx.get(server.base_url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    options = webdriver.ChromeOptions()
    options.binary_location = find_chromium()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1200,800", "--no-proxy-server"):
        options.add_argument(flag)
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(server.base_url + "/")
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_element(By.ID, "model").text not in ("", "connecting…"))
        assert "unavailable" not in driver.find_element(By.ID, "model").text
        box = driver.find_element(By.ID, "input")
        box.send_keys("What is the capital of France?")
        driver.find_element(By.ID, "send").click()
        # The answer streams in, then its summary line appears.
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant")) == 1)
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".msg.assistant .meta").text != "")
        answer = driver.find_element(By.CSS_SELECTOR, ".msg.assistant").text
        assert "tokens" in answer and "error" not in answer, answer
        # The panel has read /metrics: numbers, and tokens generated counted.
        time.sleep(1.5)
        assert driver.find_element(By.ID, "running").text.isdigit()
        assert float(driver.find_element(By.ID, "generated").text) > 0
        assert driver.find_element(By.ID, "kv").text.endswith("%")
        out_dir = os.environ.get("TETRA_TEST_OUTPUT_DIR", "/tmp")
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, "chat_page.png")
        driver.save_screenshot(path)
        assert os.path.getsize(path) > 10_000
        print(f"\nscreenshot of the chat page: {path}")
    finally:
        driver.quit()
