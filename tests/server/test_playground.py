"""The web playground in a real headless Chromium (Debian's chromium + chromium-driver, Selenium).
Skipped where no browser is installed; .ci/run installs one."""

import shutil
import time

import pytest

from tests.servers import running_server

webdriver = pytest.importorskip("selenium.webdriver")
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver")


@pytest.fixture(scope="module")
def server_url(trained_run):
    with running_server(trained_run) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def wait_for(condition, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting in the browser")


@pytest.mark.slow
def test_type_a_prompt_click_generate_and_see_text_stream_in(browser, server_url):
    from selenium.webdriver.common.by import By

    browser.get(server_url + "/")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#model option"))
    browser.find_element(By.ID, "prompt").send_keys("The ")
    browser.find_element(By.ID, "generate").click()
    text = wait_for(
        lambda: len(browser.find_element(By.ID, "output").text) > 20 and browser.find_element(By.ID, "output").text
    )
    assert text.startswith("The ")
    assert browser.find_element(By.ID, "error").text == ""


def test_three_temperatures_side_by_side(browser, server_url):
    from selenium.webdriver.common.by import By

    browser.get(server_url + "/")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#model option"))
    browser.find_element(By.ID, "prompt").send_keys("A ")
    browser.find_element(By.ID, "compare").click()
    columns = wait_for(
        lambda: (
            len(browser.find_elements(By.CSS_SELECTOR, "#sweep h3")) == 3
            and browser.find_elements(By.CSS_SELECTOR, "#sweep h3")
        )
    )
    assert [c.text for c in columns] == ["temperature 0.3", "temperature 0.8", "temperature 1.2"]
    assert all(p.text.startswith("A ") for p in browser.find_elements(By.CSS_SELECTOR, "#sweep pre"))


@pytest.mark.slow
def test_the_playground_asks_once_for_the_key_of_a_guarded_server(browser, trained_run):
    from selenium.webdriver.common.by import By

    with running_server(trained_run, "--api-key", "s3cret") as url:
        browser.get(url + "/")
        alert = wait_for(lambda: _alert(browser))
        assert "API key" in alert.text
        alert.send_keys("s3cret")
        alert.accept()
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#model option"))
        browser.find_element(By.ID, "prompt").send_keys("The ")
        browser.find_element(By.ID, "generate").click()
        text = wait_for(
            lambda: len(browser.find_element(By.ID, "output").text) > 20 and browser.find_element(By.ID, "output").text
        )
        assert text.startswith("The ") and _alert(browser) is None  # asked once, not again
        browser.execute_script("sessionStorage.clear()")


def _alert(browser):
    from selenium.common.exceptions import NoAlertPresentException

    try:
        return browser.switch_to.alert
    except NoAlertPresentException:
        return None


@pytest.mark.slow
def test_a_labelled_run_offers_its_labels_and_generates_from_the_one_picked(browser, labelled_root):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    with running_server(labelled_root / "run") as url:
        browser.get(url + "/")
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#label option"))
        assert browser.find_element(By.ID, "label-picker").is_displayed()
        picker = Select(browser.find_element(By.ID, "label"))
        assert [o.text for o in picker.options] == ["soft", "hard"]
        picker.select_by_visible_text("hard")
        browser.execute_script("document.getElementById('temperature').value = 0")  # greedy: no luck involved
        browser.find_element(By.ID, "generate").click()
        # a labelled document ends at its newline: greedy from "hard" writes one line of ~20 characters
        text = wait_for(
            lambda: len(browser.find_element(By.ID, "output").text) > 12 and browser.find_element(By.ID, "output").text
        )
        assert sum(c in "kptgd" for c in text) > sum(c in "aeiou" for c in text)
        assert browser.find_element(By.ID, "error").text == ""


@pytest.mark.slow
def test_a_picture_chosen_in_the_caption_panel_gets_captions(browser, tmp_path_factory):
    from selenium.webdriver.common.by import By

    import gentext
    from gentext.data.shapes import make_shapes

    root = tmp_path_factory.mktemp("caption-panel")
    make_shapes(root / "shapes", 20, seed=4)
    settings = dict(hidden_size=32, embed_size=8, batch_size=8, eval_every=50)
    gentext.train(root / "run", paths=[str(root / "shapes")], condition="image", steps=20, **settings)
    with running_server(root / "run") as url:
        browser.get(url + "/")
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#model option"))
        assert browser.find_element(By.ID, "caption-panel").is_displayed()
        browser.find_element(By.ID, "picture").send_keys(str(root / "shapes" / "images" / "00000.png"))
        text = wait_for(lambda: browser.find_element(By.ID, "captions").text)
        assert text.strip()  # the captions of the picture (three asked; a 20-step model may end some at once)
        assert browser.find_element(By.ID, "picture-view").is_displayed()
        assert browser.find_element(By.ID, "error").text == ""


@pytest.mark.slow
def test_a_seq2seq_run_takes_a_source_and_shows_its_attention(browser, tmp_path_factory):
    pytest.importorskip("babel")
    from selenium.webdriver.common.by import By

    import gentext
    from gentext.data.generated import dates

    root = tmp_path_factory.mktemp("seq2seq-panel")
    (root / "dates.tsv").write_text(dates(200, seed=1), encoding="utf-8")
    settings = dict(hidden_size=32, embed_size=8, batch_size=16, eval_every=50)
    gentext.train(
        root / "run", paths=[str(root / "dates.tsv")], condition="source", model="seq2seq", steps=20, **settings
    )
    with running_server(root / "run") as url:
        browser.get(url + "/")
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#model option"))
        assert browser.find_element(By.ID, "source-box").is_displayed()
        browser.find_element(By.ID, "source").send_keys("7 mars 2021")
        browser.find_element(By.ID, "attention-button").click()
        rows = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#attention tr"))
        header = rows[0].find_elements(By.TAG_NAME, "th")
        assert [h.text for h in header[1:]] == ["7", "␣", "m", "a", "r", "s", "␣", "2", "0", "2", "1"]
        assert len(rows) >= 2 and browser.find_element(By.ID, "error").text == ""
