"""The rating page in headless Chromium (Debian's chromium + chromedriver, driven by selenium): keys and buttons,
the browser closed mid-session and opened again (answers kept, the page resumes), finished, files checked.
Deselect with ``-m "not browser"``; the chromium_tools fixture (conftest.py) installs or skips with the reason."""

import json

import pytest

from gen_research.rating.stats import summarize, t_interval
from gen_research.rating.store import read_answers
from tests.rating.helpers import plan_of, serving

pytestmark = pytest.mark.browser


def _chrome(chromium_tools):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = chromium_tools
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
                     "--disable-extensions", "--no-first-run"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)  # no selenium-manager download


def _wait_ready(chrome, answered, total, button):
    """The page shows trial ``answered + 1`` and takes input (its buttons are enabled again)."""
    from selenium.webdriver.support.ui import WebDriverWait

    state = ("const button = document.getElementById(arguments[0]);"  # one look at the page: it changes in between
             "return [document.getElementById('progress').textContent, !!button && !button.disabled];")
    WebDriverWait(chrome, 15).until(lambda d: d.execute_script(state, button) == [f"{answered} / {total}", True])


def _wait_done(chrome, total):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(chrome, 15).until(lambda d: d.find_elements(By.ID, "done"))
    assert chrome.find_element(By.ID, "progress").text == f"{total} / {total}"
    assert f"all {total} trials are answered" in chrome.find_element(By.ID, "done").text


def _press(chrome, key):
    from selenium.webdriver.common.by import By

    chrome.find_element(By.TAG_NAME, "body").send_keys(key)


def _only_local_requests(chrome, url):
    names = chrome.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert names and all(name.startswith(url) for name in names), names


def test_mos_in_chromium_with_a_closed_browser_in_between(tmp_path, folders, chromium_tools):
    from selenium.webdriver.common.by import By

    plan = plan_of(folders, mode="mos", num_trials=6, seed=4)
    ratings = [5, 1, 4, 2, 3, 5]  # the rater's answers to trials 0..5, in the order the page asks them
    with serving(tmp_path, plan) as server:
        chrome = _chrome(chromium_tools)
        try:
            chrome.get(server.url)
            _wait_ready(chrome, 0, 6, "rate-1")
            image = chrome.find_element(By.CSS_SELECTOR, "#stage img")
            side = 28 if plan["sets"][plan["trials"][0]["images"][0]["set"]]["name"] != "b/samples" else 32
            assert image.get_attribute("width") == str(side * (256 // side))  # a whole factor up to about 256 px
            assert chrome.execute_script("return getComputedStyle(arguments[0]).imageRendering", image) == "pixelated"
            for forbidden in ("image_0", "samples", str(tmp_path)):  # nothing tells the rater where an image is from
                assert forbidden not in chrome.page_source
            for number in range(3):
                _wait_ready(chrome, number, 6, "rate-1")
                _press(chrome, str(ratings[number]))  # keys 1..5
            _wait_ready(chrome, 3, 6, "rate-1")
            _only_local_requests(chrome, server.url)
        finally:
            chrome.quit()  # the rater closes the browser mid-session
        assert len((tmp_path / "answers.jsonl").read_text().splitlines()) == 3
        chrome = _chrome(chromium_tools)
        try:
            chrome.get(server.url)
            for number in range(3, 6):
                _wait_ready(chrome, number, 6, "rate-1")  # resumes at the first unanswered trial
                chrome.find_element(By.ID, f"rate-{ratings[number]}").click()  # the buttons
            _wait_done(chrome, 6)
        finally:
            chrome.quit()
    answers, _ = read_answers(tmp_path / "answers.jsonl", plan)
    lines = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert [(line["trial"], line["rating"]) for line in lines] == list(enumerate(ratings))
    assert all(0 < line["response_ms"] < 60_000 for line in lines)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results == json.loads(json.dumps(summarize(plan, answers))) and results["complete"]
    for index, name in enumerate(("real", "a/samples", "b/samples")):
        mine = [ratings[t["id"]] for t in plan["trials"] if t["images"][0]["set"] == index]
        assert results["mos"][name] == {"mos": pytest.approx(sum(mine) / 2), "ratings": 2, "ci95": pytest.approx(list(t_interval(mine)))}


def test_2afc_in_chromium_keys_buttons_and_image_clicks(tmp_path, folders, chromium_tools):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    plan = plan_of(folders, mode="2afc", num_trials=4, seed=2)
    choices = [0, 1, 1, 0]
    with serving(tmp_path, plan) as server:
        chrome = _chrome(chromium_tools)
        try:
            chrome.get(server.url)
            _wait_ready(chrome, 0, 4, "choose-0")
            assert chrome.find_element(By.ID, "question").text == "Which image is real?"
            assert len(chrome.find_elements(By.CSS_SELECTOR, "#stage img")) == 2
            _press(chrome, Keys.ARROW_LEFT)
            _wait_ready(chrome, 1, 4, "choose-0")
            _press(chrome, Keys.ARROW_RIGHT)
            _wait_ready(chrome, 2, 4, "choose-0")
            chrome.find_elements(By.CSS_SELECTOR, "#stage img")[1].click()  # clicking the right image
            _wait_ready(chrome, 3, 4, "choose-0")
            chrome.find_element(By.ID, "choose-0").click()
            _wait_done(chrome, 4)
        finally:
            chrome.quit()
    lines = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert [(line["trial"], line["choice"]) for line in lines] == list(enumerate(choices))
    results = json.loads((tmp_path / "results.json").read_text())
    for condition, name in ((0, "a/samples"), (1, "b/samples")):
        trials = [t for t in plan["trials"] if t["condition"] == condition]
        fooled = sum(t["images"][choices[t["id"]]]["set"] != 0 for t in trials)
        assert results["fool_rate"][name]["fool_rate"] == fooled / len(trials) and results["fool_rate"][name]["trials"] == 2
