"""The demo page in a real browser: ``xlxmert serve`` started as a user starts it, headless Chromium
(Debian's ``chromium`` + ``chromium-driver``, driven by Selenium) types a caption and watches the
picture form step by step, then captions and answers an uploaded image."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip(
        "no Chromium installed (apt-get install chromium chromium-driver; .ci/run does)",
        allow_module_level=True,
    )
pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")
httpx = pytest.importorskip("httpx", reason="the serve extra is not installed (pip install 'xlxmert[serve]')")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from xlxmert.pipelines import default_model_dir  # noqa: E402

CAPTION = "a red circle to the left of a blue square at night"
MIN_FRAMES = 8  # the shipped model paints in 16 steps


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    """``xlxmert serve`` on a free loopback port with the shipped model, as a separate process."""
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "xlxmert", "serve", "--port", str(port), "--model", str(default_model_dir())]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"xlxmert serve exited with {proc.returncode}: {proc.stdout.read()}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "xlxmert serve did not answer within 120 s"
            time.sleep(0.2)
        yield url, httpx.get(url + "/model").json()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser():
    profile = tempfile.mkdtemp(prefix="xlxmert-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1000,720",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def test_page_paints_a_typed_caption_step_by_step(server, browser, tmp_path):
    url, model = server
    browser.get(url + "/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#sampler option"))  # /model was read
    assert (
        Select(browser.find_element(By.ID, "sampler")).first_selected_option.get_attribute("value")
        == (model["sampler"]["name"])
    )
    box = browser.find_element(By.ID, "caption")
    box.clear()
    box.send_keys(CAPTION)
    seed = browser.find_element(By.ID, "seed")
    seed.clear()
    seed.send_keys("2")
    browser.find_element(By.ID, "paint-button").click()
    picture = browser.find_element(By.ID, "picture")
    wait.until(lambda d: picture.get_attribute("data-final") == "1")

    steps = model["default_steps"]
    assert steps >= MIN_FRAMES
    assert int(picture.get_attribute("data-frames")) == steps  # one frame shown per step event
    frames = browser.find_elements(By.CSS_SELECTOR, "#strip img.frame")
    assert len(frames) == steps
    assert len({f.get_attribute("src") for f in frames}) > 1  # the picture changed as it formed
    assert picture.get_attribute("src") == frames[-1].get_attribute("src")  # final = last step
    assert browser.execute_script("return arguments[0].naturalWidth", picture) == model["image_size"]
    assert browser.find_element(By.ID, "status").text.startswith(f"done: {steps} steps in")

    shot = tmp_path / "serve.png"
    assert browser.save_screenshot(str(shot))
    with Image.open(shot) as img:
        assert img.format == "PNG" and img.width >= 800


def test_page_captions_and_answers_an_upload(server, browser, tmp_path):
    url, _ = server
    scene = tmp_path / "scene.png"
    img = Image.new("RGB", (64, 64), (20, 20, 60))
    img.paste((220, 30, 30), (8, 16, 28, 36))
    img.save(scene)
    browser.get(url + "/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#sampler option"))

    browser.find_element(By.CSS_SELECTOR, 'nav button[data-tab="caption"]').click()
    browser.find_element(By.ID, "caption-image").send_keys(str(scene))
    browser.find_element(By.CSS_SELECTOR, "#caption-form button").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#caption-out td"))
    caption = browser.find_element(By.CSS_SELECTOR, "#caption-out td").text
    assert caption.strip() and "error" not in browser.find_element(By.ID, "caption-out").get_attribute(
        "class"
    )

    browser.find_element(By.CSS_SELECTOR, 'nav button[data-tab="answer"]').click()
    browser.find_element(By.ID, "answer-image").send_keys(str(scene))
    browser.find_element(By.CSS_SELECTOR, "#answer-form button").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#answer-out td"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#answer-out tr")
    assert len(rows) == 1 + 5  # header + the top 5 answers
    probs = [float(r.find_elements(By.TAG_NAME, "td")[1].text) for r in rows[1:]]
    assert probs == sorted(probs, reverse=True) and 0 < probs[0] <= 1


def test_openapi_page_documents_the_api_offline(server, browser):
    url, _ = server
    browser.get(url + "/docs")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
    paths = {
        e.text.replace("\u200b", "") for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
    }
    assert {"/paint", "/paint/stream", "/caption", "/answer", "/verify", "/health", "/model"} <= paths
