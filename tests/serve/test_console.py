"""The web console in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright, against a
real ``adapterhub serve`` app on 127.0.0.1 over the tiny llama.

Screenshots of each page go to ``<tmp>/screens`` (``CONSOLE_SCREENSHOTS=<dir>`` writes them there instead:
that is how README's two images were made).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import httpx
import pytest

from tests.helpers.serving import SENTIMENT, start_server

CHROMIUM = os.environ.get("CHROMIUM_EXECUTABLE") or shutil.which("chromium") or shutil.which("chromium-browser")
sync_api = pytest.importorskip("playwright.sync_api", reason="the console tests drive Chromium with Playwright "
                                                           "(pip install playwright)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium to drive: apt-get install chromium "
                                                         "(or set CHROMIUM_EXECUTABLE to a Chromium executable)")
PROMPT = "The contract says that"
SCHEMA = {"type": "object", "properties": {"level": {"enum": ["primary", "secondary", "university"]}},
          "required": ["level"], "additionalProperties": False}
CONFUSION = {"labels": ["positive", "negative", "neutral"], "matrix": [[5, 1, 0], [0, 6, 1], [1, 0, 4]]}
METRICS = {"validation": {"accuracy": 0.8333, "loss": 0.41}, "test": {"accuracy": 0.8889, "loss": 0.35,
                                                                      "confusion": CONFUSION},
           "train": {"steps": 30, "curve": [{"step": s, "loss": 2.0 / s, "split": "train"} for s in range(1, 31)]
                     + [{"step": 15, "loss": 0.5, "split": "validation"}, {"step": 30, "loss": 0.4, "split": "validation"}]}}


@pytest.fixture(scope="module")
def console_registry(tiny_base, tmp_path_factory):
    """legal@1/@2 (LoRA), finance (classifier with metrics, a loss curve and a confusion matrix), medical (prefix),
    blend (a merge of legal@1 and legal@2), tutor (answers under its contract's JSON schema)."""
    from adapterhub import Registry
    from adapterhub.runtime.testing import make_random_adapters

    root = tmp_path_factory.mktemp("console-adapters")
    lora = make_random_adapters(tiny_base, root, count=4, r=4, prefix="ui")
    prefix = make_random_adapters(tiny_base, root, count=1, method="prefix", num_virtual_tokens=4, prefix="uip")
    registry = Registry(tmp_path_factory.mktemp("console-registry"))
    registry.add(lora[0], "legal", domain="legal", base=tiny_base, description="Contract clauses")
    registry.add(lora[1], "legal", domain="legal", base=tiny_base, tags=["prod"])
    registry.add(lora[2], "finance", domain="finance", task=SENTIMENT, base=tiny_base, metrics=METRICS,
                 description="Sentiment of financial news")
    registry.add(prefix[0], "medical", domain="medical", base=tiny_base)
    registry.add(lora[3], "tutor", domain="education", base=tiny_base, contract={"schema": SCHEMA, "max_tokens": 24})
    registry.add(lora[0], "blend", domain="legal", base=tiny_base,
                 source={"kind": "merged", "parents": [{"ref": "legal@1"}, {"ref": "legal@2"}], "weights": [0.5, 0.5],
                         "how": "linear"})
    return registry


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def open_server(tiny_base, console_registry):
    hub, server = start_server(tiny_base, console_registry)
    yield hub, server
    server.stop()
    hub.close()


@pytest.fixture()
def tab(browser, open_server):
    """A tab on the shared server; a JavaScript error, console error or failed request in it fails the test."""
    page = Page(browser, open_server[1].url)
    yield page
    page.close()
    assert page.errors == []


@pytest.fixture()
def screens(tmp_path):
    folder = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path / "screens")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Page:
    """A browser tab that records JavaScript errors and console errors."""

    def __init__(self, browser, url, bypass_csp=True):
        # the page's CSP forbids eval, which Playwright's wait_for_function uses: tabs bypass it by default (the
        # page's own scripts never need it: test_the_page_works_under_its_strict_policy runs one tab without)
        self.page = browser.new_page(viewport={"width": 1280, "height": 860}, bypass_csp=bypass_csp)
        self.errors = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("response", lambda response: response.status >= 400 and self.errors.append(
            f"{response.status} {response.url}"))
        self.url = url

    def go(self, hash_, shown=None):
        """Open ``/ui#<hash_>`` and wait until the console shows it (or ``shown``: ``"key"`` for the key form)."""
        self.page.goto(f"{self.url}/ui#{hash_}")
        self.wait_shown(shown or f"#{hash_}")
        return self.page

    def wait_shown(self, marker):
        """Wait until route() has rendered ``marker`` (the page's hash, or ``"key"``) into #main."""
        self.page.wait_for_function("m => document.getElementById('main').dataset.rendered === m", arg=marker)

    def close(self):
        self.page.close()


def test_the_page_works_under_its_strict_policy(browser, open_server):
    _, server = open_server
    page = httpx.get(f"{server.url}/ui")
    assert page.status_code == 200 and "console.js" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert httpx.get(f"{server.url}/ui/static/console.js").status_code == 200
    tab = Page(browser, server.url, bypass_csp=False)  # a policy violation would be a console error
    tab.page.goto(f"{server.url}/ui#/adapter/finance")
    tab.page.wait_for_selector("#confusion td")
    assert tab.page.locator("#confusion td").first.evaluate("td => getComputedStyle(td).backgroundColor") != \
        "rgba(0, 0, 0, 0)"  # styles set from script are not blocked
    assert tab.errors == []
    tab.close()


def rows(page):
    return [cell.inner_text() for cell in page.locator("#adapters tbody tr td:first-child").all()]


def test_the_registry_list_filters_and_pages(tab, screens):
    page = tab.go("/adapters")
    page.wait_for_selector("#adapters tbody tr")
    assert rows(page) == ["blend", "finance", "legal", "medical", "tutor"]
    page.screenshot(path=screens / "registry.png")
    page.fill("#filter-q", "fin")
    page.press("#filter-q", "Enter")
    page.wait_for_function("document.querySelectorAll('#adapters tbody tr').length === 1")
    assert rows(page) == ["finance"]
    assert "accuracy 0.8889" in page.inner_text("#adapters tbody")  # the headline metric of its latest version
    page = tab.go("/adapters?method=prefix")
    page.wait_for_selector("#range")
    assert rows(page) == ["medical"]
    page = tab.go("/adapters?tag=prod")
    assert rows(page) == ["legal"]
    page = tab.go("/adapters?limit=3")
    assert rows(page) == ["blend", "finance", "legal"] and page.inner_text("#range") == "1–3 of 5"
    page.click("#next")
    tab.wait_shown("#/adapters?limit=3&offset=3")
    assert rows(page) == ["medical", "tutor"] and page.is_disabled("#next") and page.inner_text("#range") == "4–5 of 5"
    page.select_option("#filter-domain", "legal")
    page.wait_for_function("document.querySelector('#range').textContent === '1–2 of 2'")
    assert rows(page) == ["blend", "legal"]


def test_an_adapter_page_shows_metrics_plots_lineage_and_card(tab, open_server, screens):
    _, server = open_server
    page = tab.go("/adapter/finance")
    page.wait_for_selector("#metrics")
    metrics = page.inner_text("#metrics")
    assert "accuracy" in metrics and "0.8889" in metrics and "0.8333" in metrics
    assert page.locator("#loss-chart polyline").count() == 2  # training and validation loss
    confusion = page.inner_text("#confusion")
    assert "negative" in confusion and "6" in confusion
    assert "finance" in page.inner_text("#card") and "Sentiment" in page.inner_text("#card")
    page.screenshot(path=screens / "adapter.png", full_page=True)
    page = tab.go("/adapter/blend")
    page.wait_for_selector("#lineage")
    page.click("#lineage a >> nth=0")
    tab.wait_shown("#/adapter/legal")
    assert page.inner_text("#adapter-name").startswith("legal")
    assert "legal@2" in page.inner_text("#versions") and "prod" in page.inner_text("#versions")
    import io
    import zipfile

    def exported(ref):
        response = httpx.get(f"{server.url}/v1/registry/adapters/{ref.replace('@', '/')}/export")
        return set(zipfile.ZipFile(io.BytesIO(response.content)).namelist())

    assert {"legal-2/adapter_config.json", "legal-2/adapter_model.safetensors", "legal-2/adapterhub.json",
            "legal-2/README.md"} <= exported("legal@2")
    assert "finance-1/label_scoring.py" in exported("finance@1")  # what `registry export` writes for a classifier


def test_the_playground_streams_two_adapters_side_by_side(tab, open_server, screens):
    hub, server = open_server
    page = tab.go(f"/playground?models=legal,medical&max_tokens=8&text={PROMPT.replace(' ', '%20')}")
    page.wait_for_selector("#run")
    page.click("#run")
    page.wait_for_function("document.querySelectorAll('.answer-pane.done').length === 2", timeout=120_000)
    answers = {pane.get_attribute("data-model"): pane.locator(".answer").get_attribute("data-text")
               for pane in page.locator(".answer-pane").all()}
    for model in ("legal", "medical"):
        assert answers[model] == hub.generate(PROMPT, domain=model, max_new_tokens=8, chat=False)
    assert "tokens" in page.inner_text(".answer-pane .stats >> nth=0")
    page.screenshot(path=screens / "playground.png")
    page = tab.go("/playground?models=finance,tutor&text=great%20quarter")
    page.click("#run")
    page.wait_for_function("document.querySelectorAll('.answer-pane.done').length === 2", timeout=120_000)
    assert page.locator(".answer-pane[data-model=finance] .bar").count() == 3  # one bar per label, with its probability
    parsed = json.loads(page.inner_text(".answer-pane[data-model=tutor] .parsed"))  # under the tutor's contract schema
    assert set(parsed) == {"level"} and parsed["level"] in SCHEMA["properties"]["level"]["enum"]


def test_the_live_view_updates(tab, open_server, screens):
    _, server = open_server
    page = tab.go("/live")
    page.wait_for_selector("#stat-tokens")
    before = float(page.inner_text("#stat-tokens"))
    httpx.post(f"{server.url}/v1/completions", json={"model": "legal", "prompt": PROMPT, "max_tokens": 5,
                                                     "temperature": 0}, timeout=60).raise_for_status()
    page.wait_for_function(f"Number(document.querySelector('#stat-tokens').textContent) > {before}", timeout=15_000)
    page.wait_for_selector("#chart-tokens polyline")
    page.wait_for_function("document.querySelector('#resident').textContent.includes('legal')")
    assert "device" in page.inner_text("#tiers") and "host" in page.inner_text("#tiers")  # each tier's use
    httpx.post(f"{server.url}/v1/completions", json={"model": "nope", "prompt": "x", "max_tokens": 2})
    page.wait_for_function("document.querySelector('#errors').textContent.includes('404')", timeout=15_000)
    page.screenshot(path=screens / "live.png")


def test_a_restricted_key_sees_and_calls_only_its_adapters(browser, tiny_base, console_registry, tmp_path):
    from adapterhub.serve.auth import KeyStore

    keys = KeyStore(tmp_path / "keys.sqlite")
    viewer, ops = keys.create("viewer", allow=["legal"]), keys.create("ops", admin=True)
    hub, server = start_server(tiny_base, console_registry, auth=True, keys_path=str(tmp_path / "keys.sqlite"))
    try:
        tab = Page(browser, server.url)
        page = tab.go("/adapters", shown="key")  # the page asks for a key before anything else
        page.fill("#key-input", viewer)
        page.click("#key button")
        tab.wait_shown("#/adapters")
        assert rows(page) == ["legal"]
        assert page.evaluate("Object.keys(localStorage).length") == 0  # only the tab's session storage holds it
        page = tab.go("/adapter/legal")
        page.wait_for_selector("#versions")
        assert page.locator("#admin").count() == 0  # admin actions appear only for admin keys
        page = tab.go("/adapter/finance")
        page.wait_for_selector("#page-error")
        page = tab.go("/playground")
        page.wait_for_selector("#model-0")
        assert set(page.locator("#model-0 option").all_inner_texts()) == {"choose…", "tiny", "legal"}
        assert httpx.post(f"{server.url}/v1/completions", headers={"Authorization": f"Bearer {viewer}"},
                          json={"model": "finance", "prompt": "x", "max_tokens": 2}).status_code == 403
        assert httpx.get(f"{server.url}/v1/registry/adapters/finance/1/export",
                         headers={"Authorization": f"Bearer {viewer}"}).status_code == 404
        page.click("#signout")
        tab.wait_shown("key")
        page.fill("#key-input", ops)
        page.click("#key button")
        tab.wait_shown("#/playground")
        page = tab.go("/adapter/finance")
        page.wait_for_selector("#admin")
        page.click("#load")
        page.wait_for_function("document.querySelector('#admin-status').textContent === 'done'")
        page = tab.go("/adapter/legal")  # admin channel moves: promote v2, then v1, then roll back to v2
        for version in ("2", "1"):
            page.fill("#promote-channel", "stable")
            page.select_option("#promote-version", version)
            page.click("#promote")
            page.wait_for_function(f"(document.querySelector('#channels') || {{}}).textContent?.includes('stablev{version}')")
        page.fill("#promote-channel", "stable")
        page.click("#rollback")
        page.wait_for_function("(document.querySelector('#channels') || {}).textContent?.includes('stablev2')")
        history = page.inner_text("#history")
        assert history.index("rollback") < history.index("promote") and "ops" in history  # newest first, by whom
        assert console_registry.channel("legal", "stable").holder == 2
        provoked = ("401", "403", "404")  # the refusals this test provokes on purpose
        unexpected = [e for e in tab.errors if not any(code in e for code in provoked)]
        assert unexpected == []
        tab.close()
    finally:
        server.stop()
        hub.close()


def test_the_playground_offers_auto_where_a_router_serves(browser, tiny_base, routing_registry, routing_router):
    from tests.helpers.routing import domain_texts

    hub, server = start_server(tiny_base, routing_registry)
    hub.use_router(routing_router.ref)
    try:
        tab = Page(browser, server.url)
        text = domain_texts("finance", 1, seed=99)[0]
        page = tab.go(f"/playground?models=auto&max_tokens=4&text={text.replace(' ', '%20')}")
        assert "auto" in page.locator("#model-0 option").all_inner_texts()
        page.click("#run")
        page.wait_for_selector(".answer-pane.done")
        assert "served by finance@1" in page.inner_text(".answer-pane .stats")  # what the router chose
        assert tab.errors == []
        tab.close()
    finally:
        server.stop()
        hub.close()
