"""The chat page at `/` in a real headless Chromium (Debian's `chromium`, driven by Playwright): it lists
the model, sends a message, shows the reply as it streams, stops a generation with the Stop button,
keeps the conversation across a reload, and a screenshot is saved under the test's tmp dir."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser():
    path = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if path is None:
        pytest.fail(
            "Chromium is not installed: run `make setup` (it installs Debian's chromium and chromium-driver)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=FLAGS)
        yield browser
        browser.close()


def test_chat_page_streams_stops_and_keeps_the_conversation(browser, tiny_server, tmp_path):
    page = browser.new_page()
    page.set_default_timeout(30_000)
    page.goto(tiny_server.url + "/")
    page.wait_for_function("document.querySelector('#model').options.length > 0")
    assert page.eval_on_selector("#model", "s => s.value") == "tiny"

    # a short reply, streamed to the end
    page.fill("#system", "You are terse.")
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "12")
    page.fill("#input", "hello world")
    page.click("#send")
    page.wait_for_function("!document.querySelector('#send').disabled")
    first = page.locator(".msg.assistant .content").last.inner_text()
    assert first.strip(), "no reply text appeared"

    # a long one (ignore_eos through the extra-options field), stopped while it streams
    cancelled = 'lmforge_sequences_finished_total{reason="cancelled"}'
    before = tiny_server.metrics().get(cancelled, 0)
    page.fill("#max-tokens", "900")  # with the conversation so far, within the 1,024-token context
    page.fill("#extra", '{"ignore_eos": true}')
    page.fill("#input", "go on")
    page.click("#send")
    page.wait_for_function(
        "() => { const m = document.querySelectorAll('.msg.assistant .content');"
        " return m[m.length - 1].textContent.length > 20; }"
    )
    assert page.is_enabled("#stop")
    page.click("#stop")
    page.wait_for_function("document.querySelector('#status').textContent === 'stopped'")
    stopped = page.locator(".msg.assistant .content").last.inner_text()
    page.wait_for_timeout(500)
    assert page.locator(".msg.assistant .content").last.inner_text() == stopped  # nothing more arrives
    assert page.is_enabled("#send") and not page.is_enabled("#stop")
    assert tiny_server.metrics()[cancelled] == before + 1  # the server dropped it too
    page.screenshot(path=str(tmp_path / "chat_page.png"), full_page=True)
    print(f"screenshot: {tmp_path / 'chat_page.png'}")
    assert (tmp_path / "chat_page.png").stat().st_size > 1000

    # the conversation lives in the browser: a reload shows it again
    page.reload()
    page.wait_for_selector(".msg.assistant")
    roles = page.locator(".msg .role").all_inner_texts()
    assert roles == ["user", "assistant", "user", "assistant"]
    assert page.input_value("#system") == "You are terse."
    page.close()
