"""The web app in a real browser: headless Debian Chromium driven by Playwright clicks through plan,
merge and push, checks the table, chart and card appear, that a bad repo id reads as an error, and
that closing a page deletes its merged output.

Screenshots go to test-artifacts/ (kept by CI). Skipped where /usr/bin/chromium is missing
(`.ci/run` installs it with apt-get).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from huggingface_hub import HfApi

from ._ui_helpers import PRESET, publish_fixtures, running_app

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium (.ci/run installs it)"),
]


@dataclass(frozen=True)
class BrowserApp:
    url: str
    work_dir: Path  # where the app keeps each session's merged output
    browser: Any

    def open_page(self):  # type: ignore[no-untyped-def]
        page = self.browser.new_page(viewport={"width": 1400, "height": 1800})
        page.set_default_timeout(60_000)
        page.goto(self.url)
        return page


@pytest.fixture(scope="module")
def browser_app(local_hub, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    os.environ.pop("HF_HUB_OFFLINE", None)
    models = publish_fixtures(local_hub.endpoint, local_hub.alice_token)
    ARTIFACTS.mkdir(exist_ok=True)
    work_dir = tmp_path_factory.mktemp("browser-app")
    with running_app(local_hub.endpoint, models, work_dir) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        yield BrowserApp(url, work_dir, browser)
        browser.close()


@pytest.fixture(scope="module")
def page(browser_app):
    return browser_app.open_page()


def _field(page, elem_id: str):  # type: ignore[no-untyped-def]
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def _assert_every_row_shows(page, elem_id: str) -> None:  # type: ignore[no-untyped-def]
    """Gradio scrolls a table taller than its max_height inside a box: rows below it are easy to miss."""
    scroller = page.locator(f"#{elem_id} .virtual-table-viewport")
    assert scroller.evaluate("el => el.scrollHeight <= el.clientHeight + 1"), f"#{elem_id}'s last rows are hidden"


def _expect_output_actions(page, enabled: bool) -> None:  # type: ignore[no-untyped-def]
    """Push and Classify, each on its own tab, are both on (the page has a merged output) or both off."""
    from playwright.sync_api import expect

    for tab, elem_id in (("Push", "push"), ("Try it", "classify")):
        page.get_by_role("tab", name=tab).click()
        if enabled:
            expect(page.locator(f"#{elem_id}")).to_be_enabled()
        else:
            expect(page.locator(f"#{elem_id}")).to_be_disabled()


def test_plan_merge_and_push_in_the_browser(page, local_hub):
    from playwright.sync_api import expect

    expect(page.get_by_role("combobox", name="Preset")).to_have_value(PRESET)
    for elem_id, headers in (("plan-inputs", "input model revision files tensors size"),
                             ("plan-summary", "what value")):  # not Gradio's placeholder 1 2 3 before a plan
        assert " ".join(page.locator(f"#{elem_id} thead").inner_text().split()) == headers
    _field(page, "token").fill(local_hub.alice_token)

    page.locator("#plan").click()
    expect(page.locator("#plan-headline")).to_contain_text("Compatible: 5 models")
    expect(page.locator("#plan-inputs")).to_contain_text("demo-org/ui-convnext-base")
    expect(page.locator("#plan-summary")).to_contain_text("kept (fine-tuned)")
    _assert_every_row_shows(page, "plan-summary")  # the costs come last
    page.screenshot(path=str(ARTIFACTS / "ui-plan.png"), full_page=True)

    page.locator("#merge").click()
    page.get_by_role("tab", name="Results").click()
    expect(page.locator("#status")).to_contain_text("Merged in", timeout=240_000)
    expect(page.locator("#results")).to_contain_text("individual (own fine-tune)")
    _assert_every_row_shows(page, "results")
    expect(page.locator("#chart canvas, #chart svg").first).to_be_visible()
    expect(page.locator("#card")).to_contain_text("digits_parity")
    page.screenshot(path=str(ARTIFACTS / "ui-results.png"), full_page=True)

    page.get_by_role("tab", name="Push").click()
    _field(page, "repo-id").fill("alice/ui-browser-merged")
    page.locator("#push").click()
    expect(page.locator("#pushed")).to_contain_text("Pushed", timeout=120_000)
    expect(page.locator("#pushed a")).to_have_attribute("href", re.compile(r"/alice/ui-browser-merged$"))
    page.screenshot(path=str(ARTIFACTS / "ui-pushed.png"), full_page=True)
    files = HfApi(endpoint=local_hub.endpoint, token=local_hub.alice_token).list_repo_files("alice/ui-browser-merged")
    assert "model.safetensors" in files and "heads/digits_rotated/config.json" in files
    assert local_hub.alice_token not in page.content()


def test_a_bad_repo_id_reads_as_an_error_in_the_page(page):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Push").click()
    _field(page, "repo-id").fill("not a repo id")
    page.locator("#push").click()
    expect(page.get_by_text("is not a valid repo id").first).to_be_visible()
    expect(page.locator("#pushed")).not_to_contain_text("Pushed")  # the earlier push's line is gone
    page.wait_for_timeout(500)  # the toast fades in
    page.screenshot(path=str(ARTIFACTS / "ui-error.png"))  # the viewport: the error shows in a fixed toast
    assert "Traceback" not in page.content()


def test_a_failed_merge_leaves_no_earlier_results_on_screen(page):
    """The new merge deletes the last one's folder first, so its results, card and recipe link must go too."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Merge").click()
    _field(page, "base").fill("alice/no-such-base-model")
    page.locator("#merge").click()
    expect(page.get_by_text("alice/no-such-base-model").first).to_be_visible()  # the error names it
    page.get_by_role("tab", name="Results").click()
    expect(page.locator("#status")).not_to_contain_text("Merged in")
    expect(page.locator("#results")).not_to_contain_text("individual (own fine-tune)")
    expect(page.locator("#card")).not_to_contain_text("digits_parity")
    expect(page.locator("#recipe a")).to_have_count(0)


def test_closing_the_page_deletes_its_merged_output(browser_app):
    from playwright.sync_api import expect

    page = browser_app.open_page()
    before = set(browser_app.work_dir.iterdir())
    page.locator("#merge").click()
    page.get_by_role("tab", name="Results").click()
    expect(page.locator("#status")).to_contain_text("Merged in", timeout=240_000)
    (session,) = set(browser_app.work_dir.iterdir()) - before
    assert any(session.rglob("model.safetensors"))
    page.close()  # the app hears the page go and deletes the session's output
    deadline = time.monotonic() + 30
    while session.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not session.exists()
    assert set(browser_app.work_dir.iterdir()) == before  # the other page's output stays


def test_merge_is_off_while_its_merge_runs_and_back_after_it_ends_or_fails(browser_app):
    """Pressed again during a merge (after changing the method, say), Merge did nothing: Gradio dropped the second
    merge without a word, and the first one's results stood for the changed form."""
    from playwright.sync_api import expect

    page = browser_app.open_page()
    expect(page.locator("#cancel")).to_be_disabled()  # with no merge, Cancel could only say there is none
    page.locator("#merge").click()
    expect(page.locator("#merge")).to_be_disabled()
    expect(page.locator("#cancel")).to_be_enabled()
    page.get_by_role("tab", name="Results").click()
    expect(page.locator("#status")).to_contain_text("Merged in", timeout=240_000)
    page.get_by_role("tab", name="Merge").click()
    expect(page.locator("#merge")).to_be_enabled()
    expect(page.locator("#cancel")).to_be_disabled()
    _field(page, "base").fill("alice/no-such-base-model")
    page.locator("#merge").click()
    expect(page.get_by_text("alice/no-such-base-model").first).to_be_visible()  # the error names it
    expect(page.locator("#merge")).to_be_enabled()  # Gradio's .then does not follow a failure
    expect(page.locator("#cancel")).to_be_disabled()
    page.close()


def test_picking_the_preset_in_sight_again_puts_its_values_back(browser_app):
    """The preset loaded only when the menu's value changed: after an edit or an uploaded recipe, choosing the
    preset the menu still showed did nothing, and the only way back was through another preset."""
    from playwright.sync_api import expect

    page = browser_app.open_page()
    base = _field(page, "base").input_value()
    _field(page, "base").fill("alice/a-typo")
    page.get_by_role("combobox", name="Preset").click()
    page.get_by_role("option", name=PRESET).click()
    expect(_field(page, "base")).to_have_value(base)
    page.close()


def test_cancel_during_the_evaluation_in_the_browser(browser_app, monkeypatch):
    """Cancel pressed while the evaluation runs: the page says so at once, Merge comes back, no output is left for
    the page to show or push, and the next merge runs. The first pass waits for Cancel, as one through six
    ConvNeXt-base models on a CPU (or their downloads) takes minutes."""
    from playwright.sync_api import expect

    from hubmerge.evaluation import loop

    run_pass = loop.run_pass

    def long_first_batch(data, models, processor, settings):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + 60
        while settings.cancel is not None and not settings.cancel.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        return run_pass(data, models, processor, settings)

    monkeypatch.setattr(loop, "run_pass", long_first_batch)
    page = browser_app.open_page()
    before = set(browser_app.work_dir.iterdir())
    page.locator("#merge").click()
    page.get_by_role("tab", name="Results").click()
    expect(page.locator("#status")).to_contain_text("Loading ft:digits_rotated for digits_low",
                                                    timeout=60_000)  # waits on Cancel (a first load imports)
    _expect_output_actions(page, enabled=False)  # nothing to push or try while the merge runs
    page.get_by_role("tab", name="Merge").click()
    page.locator("#cancel").click()
    expect(page.locator("#merge")).to_be_enabled(timeout=10_000)
    expect(page.locator("#cancel")).to_be_disabled()
    page.get_by_role("tab", name="Results").click()
    expect(page.locator("#status")).to_contain_text("Cancelled: nothing was written.")
    page.screenshot(path=str(ARTIFACTS / "ui-cancelled.png"), full_page=True)
    (session,) = set(browser_app.work_dir.iterdir()) - before
    deadline = time.monotonic() + 30
    while any(session.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.2)  # the merge's thread stops at its next look at Cancel and deletes its output
    assert not any(session.iterdir())
    _expect_output_actions(page, enabled=False)  # nor after it was cancelled

    monkeypatch.setattr(loop, "run_pass", run_pass)
    page.get_by_role("tab", name="Merge").click()
    page.locator("#merge").click()
    page.get_by_role("tab", name="Results").click()
    expect(page.locator("#status")).to_contain_text("Merged in", timeout=240_000)
    page.close()


def test_push_and_classify_are_on_only_while_the_page_has_a_merged_output(browser_app, tmp_path):
    """Push and Classify were on before any merge and after a failed one, and could only answer "merge first". They
    are on once a merge has ended with its output (off while one runs or after Cancel: the test above)."""
    from PIL import Image
    from playwright.sync_api import expect

    page = browser_app.open_page()
    Image.new("RGB", (32, 32), "white").save(tmp_path / "digit.png")
    page.get_by_role("tab", name="Try it").click()
    page.locator("#image input[type=file]").set_input_files(str(tmp_path / "digit.png"))  # Classify needs one too
    _expect_output_actions(page, enabled=False)  # no merge yet
    page.get_by_role("tab", name="Merge").click()
    page.locator("#merge").click()
    page.get_by_role("tab", name="Results").click()
    expect(page.locator("#status")).to_contain_text("Merged in", timeout=240_000)
    _expect_output_actions(page, enabled=True)
    page.screenshot(path=str(ARTIFACTS / "ui-classify-on.png"), full_page=True)

    page.get_by_role("tab", name="Merge").click()
    _field(page, "base").fill("alice/no-such-base-model")
    page.locator("#merge").click()  # the new merge deletes the last one's output as it starts
    expect(page.get_by_text("alice/no-such-base-model").first).to_be_visible()  # the error names it
    expect(page.locator("#merge")).to_be_enabled()
    _expect_output_actions(page, enabled=False)  # after it failed
    page.close()


def test_push_and_classify_follow_what_can_be_done_in_the_browser(browser_app, local_hub, tmp_path, monkeypatch):
    """Push stayed on during its upload (clicked again, a second push of the same model), Classify was on with no
    image (it could only say "upload an image first"), and an output deleted by the cleanup (keep_outputs_s) was
    noticed only at the next click. The page looks at its output every OUTPUT_CHECK_S, here every second."""
    from PIL import Image
    from playwright.sync_api import expect

    from hubmerge import publish as publishing
    from hubmerge.ui import app as ui_app

    monkeypatch.setattr(ui_app, "OUTPUT_CHECK_S", 1.0)
    uploading, pushes = threading.Event(), []

    def publish_output(output, repo_id, **kwargs):  # type: ignore[no-untyped-def]
        pushes.append(repo_id)
        uploading.wait(300)  # until the test has seen the page during the upload (and a merge end)
        return SimpleNamespace(files=["model.safetensors"], commit_sha="0" * 40, url=f"{local_hub.endpoint}/{repo_id}")

    monkeypatch.setattr(publishing, "publish_output", publish_output)
    digit = tmp_path / "digit.png"
    Image.new("RGB", (32, 32), "white").save(digit)
    work_dir = tmp_path / "work"
    models = publish_fixtures(local_hub.endpoint, local_hub.alice_token)
    with running_app(local_hub.endpoint, models, work_dir) as url:
        page = BrowserApp(url, work_dir, browser_app.browser).open_page()
        _field(page, "examples").fill("4")
        _field(page, "token").fill(local_hub.alice_token)
        page.locator("#merge").click()
        page.get_by_role("tab", name="Results").click()
        expect(page.locator("#status")).to_contain_text("Merged in", timeout=240_000)

        page.get_by_role("tab", name="Try it").click()
        expect(page.locator("#classify")).to_be_disabled()  # no image yet
        page.locator("#image input[type=file]").set_input_files(str(digit))
        expect(page.locator("#classify")).to_be_enabled()
        page.locator("#classify").click()
        expect(page.locator("#top5")).to_contain_text("%")
        page.locator("#image").get_by_role("button", name="Remove Image").click()
        expect(page.locator("#classify")).to_be_disabled()  # the image cleared

        page.get_by_role("tab", name="Push").click()
        _field(page, "repo-id").fill("alice/ui-browser-once")
        page.locator("#push").dblclick()  # one push, however often it is clicked
        expect(page.locator("#push")).to_be_disabled()
        page.wait_for_timeout(2_500)  # the page's looks at its output, which is there, leave Push off
        expect(page.locator("#push")).to_be_disabled()
        page.get_by_role("tab", name="Try it").click()
        page.locator("#image input[type=file]").set_input_files(str(digit))  # an image given during the upload
        expect(page.locator("#classify")).to_be_enabled()
        page.get_by_role("tab", name="Push").click()
        expect(page.locator("#push")).to_be_disabled()  # it turned Push on
        page.get_by_role("tab", name="Merge").click()
        page.locator("#merge").click()  # a merge ending during the upload turned Push on for its output
        page.get_by_role("tab", name="Results").click()
        expect(page.locator("#status")).not_to_contain_text("Merged in")  # the new merge's, not the last one's
        expect(page.locator("#status")).to_contain_text("Merged in", timeout=240_000)
        page.get_by_role("tab", name="Push").click()
        expect(page.locator("#push")).to_be_disabled()
        uploading.set()
        expect(page.locator("#pushed")).to_contain_text("Pushed 1 files")
        expect(page.locator("#push")).to_be_enabled()
        page.wait_for_timeout(1_000)  # a second push would have started by now
        assert pushes == ["alice/ui-browser-once"]

        (session,) = work_dir.iterdir()
        shutil.rmtree(session)  # as the cleanup does, an hour after the merge
        expect(page.locator("#notice")).to_contain_text("This session's merged model was deleted", timeout=10_000)
        _expect_output_actions(page, enabled=False)
        page.screenshot(path=str(ARTIFACTS / "ui-output-deleted.png"), full_page=True)
        page.close()


PHONE = {"width": 390, "height": 844}


def _phone_page(browser_app):  # type: ignore[no-untyped-def]
    page = browser_app.browser.new_page(viewport=PHONE)
    page.set_default_timeout(60_000)
    page.goto(browser_app.url)
    return page


def test_at_a_phones_width_the_push_tabs_labels_show_whole(browser_app):
    """Gradio lets checkboxes in a row shrink to nothing: at 390 px the row cut 'Overwrite a non-empty repo' to
    'Overwri' instead of giving it a line of its own."""
    from playwright.sync_api import expect

    page = _phone_page(browser_app)
    page.get_by_role("tab", name="Push").click()
    expect(page.get_by_label("Overwrite a non-empty repo")).to_be_visible()
    for elem_id in ("repo-id", "private", "overwrite"):
        assert page.locator(f"#{elem_id}").evaluate("el => el.scrollWidth <= el.clientWidth + 1"), f"#{elem_id} is cut"
    page.close()


def test_at_a_phones_width_the_cards_tables_keep_their_numbers_whole(browser_app):
    """Gradio's markdown breaks words anywhere: at 390 px the card's accuracy table read '93.' over '6' and its task
    names a few letters a line. Each word of a cell stays on one line; the table scrolls sideways instead."""
    from playwright.sync_api import expect

    page = _phone_page(browser_app)
    page.locator("#merge").click()
    page.get_by_role("tab", name="Results").click()
    expect(page.locator("#status")).to_contain_text("Merged in", timeout=240_000)
    broken = page.locator("#card table").first.locator("th, td").evaluate_all("""cells => cells
        .filter(cell => /^\\S+$/.test(cell.textContent.trim()))
        .filter(cell => { const range = document.createRange(); range.selectNodeContents(cell);
                          return new Set([...range.getClientRects()].map(r => Math.round(r.top))).size > 1; })
        .map(cell => cell.textContent.trim())""")
    assert broken == []
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    page.close()
