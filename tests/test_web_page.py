"""The web page in headless Chromium: a text search shows result images with the words that matched, the filters are
the collection's own with their item counts, clicking a result searches for more like it, likes and dislikes make a
For-you row, and the Inspect view shows what is served."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from retrieval.strategies import RECOMMEND_DIVERSITY  # the Diverse switch's "on": /recommend's default

pytestmark = [pytest.mark.ray, pytest.mark.e2e]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture(scope="module")
def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium and chromium-driver (.ci/run does)")
        pytest.skip("chromium / chromedriver not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    session = webdriver.Chrome(service=Service(driver), options=options)
    yield session
    session.quit()


def _cards(browser):
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, "#results .card")


def _wait_for(browser, condition, seconds=60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, seconds).until(lambda _: condition())


def _search_for(server, browser, words: str) -> None:
    """The page, fresh, searching for `words` until results show."""
    from selenium.webdriver.common.by import By

    browser.get(f"{server.base_url}/")
    browser.find_element(By.ID, "text").send_keys(words)
    browser.find_element(By.CSS_SELECTOR, "#search button[type=submit]").click()
    _wait_for(browser, lambda: len(_cards(browser)) > 0)


def test_search_shows_result_images_and_refines(server, browser):
    from selenium.webdriver.common.by import By

    _search_for(server, browser, "blue jeans")
    images = browser.find_elements(By.CSS_SELECTOR, "#results .card img")
    loaded = "return arguments[0].complete && arguments[0].naturalWidth > 0"
    _wait_for(browser, lambda: all(browser.execute_script(loaded, i) for i in images[:8]))
    names = " ".join(c.text for c in _cards(browser)[:5])
    assert "Jeans" in names
    marked = {m.text.lower() for m in browser.find_elements(By.CSS_SELECTOR, "#results .card mark")}
    assert {"blue", "jeans"} <= marked  # the matched words are shown in each item's document
    gender = browser.find_element(By.ID, "filter-gender")  # the collection's own filter fields, from /readyz
    assert {"Men", "Women"} <= {o.get_attribute("value") for o in gender.find_elements(By.TAG_NAME, "option")}
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "web-search.png"))
    shown = [c.get_attribute("data-id") for c in _cards(browser)]
    browser.find_element(By.CSS_SELECTOR, "#search button[type=submit]").click()  # the same search: a kept answer
    _wait_for(browser, lambda: "a kept answer" in browser.find_element(By.ID, "status").text)
    assert [c.get_attribute("data-id") for c in _cards(browser)] == shown
    first = _cards(browser)[0]
    clicked = first.get_attribute("data-id")
    first.click()  # refine: search by that item's photo
    _wait_for(browser, lambda: _cards(browser) and _cards(browser)[0].get_attribute("data-id") != clicked)
    assert clicked not in [c.get_attribute("data-id") for c in _cards(browser)]
    assert "results in" in browser.find_element(By.ID, "status").text


def test_the_page_says_what_the_words_were_understood_as(server, browser):
    """A misspelt word: the page offers the corrected words, says which catalog values the words name, and each
    result says which of them it has; the correction is one click."""
    from selenium.webdriver.common.by import By

    _search_for(server, browser, "blue jeens")
    line = browser.find_element(By.ID, "understood").text
    assert "Did you mean: blue jeans" in line and "Understood: baseColour Blue, articleType Jeans" in line
    values = [v.text for v in browser.find_elements(By.CSS_SELECTOR, "#results .card .values")[:3]]
    assert values and all("baseColour: Blue" in v and "articleType: Jeans" in v for v in values)
    browser.find_element(By.ID, "did-you-mean").click()
    _wait_for(browser, lambda: "Did you mean" not in browser.find_element(By.ID, "understood").text)
    assert browser.find_element(By.ID, "text").get_attribute("value") == "blue jeans"


def test_the_inspect_view_shows_the_alias_generation_model_count_and_value_counts(server, browser):
    """The Inspect tab shows what GET /inspect reads through the service's store; the Search tab comes back."""
    from selenium.webdriver.common.by import By

    browser.get(f"{server.base_url}/")
    browser.find_element(By.ID, "tab-inspect").click()
    _wait_for(browser, lambda: browser.find_elements(By.CSS_SELECTOR, "#facets table"))
    body = server.get("/inspect").json()
    summary = browser.find_element(By.ID, "inspect-summary").text
    assert summary == (f"Alias {body['alias']} → generation {body['collection']} · model {body['spec']['model']} · "
                       f"{body['points']} items")
    assert body["collection"] in browser.find_element(By.CSS_SELECTOR, "#generations .live").text
    for field, counts in body["filter_values"].items():
        table = browser.find_element(By.CSS_SELECTOR, f"#facets table[data-field={field}]")
        cells = [r.find_elements(By.TAG_NAME, "td") for r in table.find_elements(By.TAG_NAME, "tr")]
        assert {value.text: int(count.text) for value, count in cells} == counts, field
        top = len(counts) == body["facet_limit"]  # more values than shown: the caption says so
        assert table.find_element(By.TAG_NAME, "caption").text == (f"{field} (top 20)" if top else field)
    assert not browser.find_element(By.ID, "search").is_displayed()
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "web-inspect.png"))
    browser.find_element(By.ID, "tab-search").click()
    _wait_for(browser, lambda: browser.find_element(By.ID, "search").is_displayed())
    assert not browser.find_element(By.ID, "inspect").is_displayed()


def _row(browser) -> list[str]:
    from selenium.webdriver.common.by import By

    return [c.get_attribute("data-id") for c in browser.find_elements(By.CSS_SELECTOR, "#foryou-row .card")]


def _row_settles(browser, status: str) -> list[str]:
    """The For-you row once its status line says `status` (the answer to the latest likes and switch)."""
    from selenium.webdriver.common.by import By

    _wait_for(browser, lambda: status in browser.find_element(By.ID, "foryou-status").text)
    return _row(browser)


def _recommended(server, liked, disliked=(), diversity=RECOMMEND_DIVERSITY) -> list[dict]:
    body = {"liked": list(liked), "disliked": list(disliked), "k": 12, "diversity": diversity}
    response = server.post("/recommend", json=body)
    assert response.status_code == 200, response.text
    return response.json()["results"]


def _shared_values(server, liked) -> dict:
    response = server.post("/recommend", json={"liked": list(liked), "k": 1})
    return response.json()["shared_values"] or {}


def test_likes_make_a_for_you_row_that_follows_them(server, browser):
    """The filters show each value's item count. Liking two results shows a For-you row of other items, as POST
    /recommend ranks them, each naming the liked item it is closest to; a dislike and the diversity switch change
    it; the likes outlive a reload (sessionStorage), and "clear likes" hides the row."""
    from selenium.webdriver.common.by import By

    browser.get(f"{server.base_url}/")
    browser.execute_script("sessionStorage.clear()")
    _search_for(server, browser, "blue jeans")
    for field, counts in server.get("/readyz").json()["filter_values"].items():
        options = [o.text for o in browser.find_elements(By.CSS_SELECTOR, f"#filter-{field} option")]
        assert options == ["any", *(f"{value} ({count})" for value, count in counts.items())], field
    assert not browser.find_element(By.ID, "personal").is_displayed()
    results = [c.get_attribute("data-id") for c in _cards(browser)]
    names = {c.get_attribute("data-id"): c.find_element(By.CLASS_NAME, "name").text for c in _cards(browser)[:2]}
    for card in _cards(browser)[:2]:
        card.find_element(By.CSS_SELECTOR, "button.like").click()
    row = _row_settles(browser, "from 2 liked and 0 disliked, diverse")  # the switch starts on
    assert [c.get_attribute("data-id") for c in _cards(browser)] == results  # liking is not a search
    pressed = [c.find_element(By.CSS_SELECTOR, "button.like").get_attribute("aria-pressed") for c in _cards(browser)]
    assert pressed[:3] == ["true", "true", "false"]
    expected, shared = _recommended(server, names), _shared_values(server, names)
    assert row == [r["id"] for r in expected] and len(row) == 12 and not set(row) & set(names)
    assert browser.find_element(By.ID, "foryou-shared").text == (
        f"Your likes share: {' · '.join(shared.values())}" if shared else "")
    closest = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#foryou-row .card .closest")]
    assert closest == [f"closest to {names[r['closest_liked']]}" for r in expected]
    assert browser.find_element(By.ID, "prefs-count").text == "2 liked · 0 disliked"
    ARTIFACTS.mkdir(exist_ok=True)
    browser.execute_script("window.scrollTo(0, 0)")  # the clicks scrolled: show the filters, the row and the likes
    browser.save_screenshot(str(ARTIFACTS / "web-for-you.png"))

    disliked = row[0]
    browser.find_element(By.CSS_SELECTOR, "#foryou-row .card button.dislike").click()
    row = _row_settles(browser, "from 2 liked and 1 disliked, diverse")
    assert disliked not in row and row == [r["id"] for r in _recommended(server, names, [disliked])]
    browser.find_element(By.ID, "diverse").click()
    _wait_for(browser, lambda: browser.find_element(By.ID, "foryou-status").text.endswith("1 disliked"))
    assert _row(browser) == [r["id"] for r in _recommended(server, names, [disliked], diversity=0.0)]

    browser.get(f"{server.base_url}/")  # the same browser session: the likes are still there
    assert _row_settles(browser, "from 2 liked and 1 disliked") and not set(_row(browser)) & set(names)
    browser.find_element(By.ID, "clear-prefs").click()
    _wait_for(browser, lambda: not browser.find_element(By.ID, "personal").is_displayed())
    assert _row(browser) == [] and browser.execute_script("return sessionStorage.getItem('prefs')") == (
        '{"liked":[],"disliked":[]}')
