"""The human-evaluation page end to end: `lmforge eval human` in its own process on a free loopback
port, two annotators voting in a real headless Chromium (Debian's chromium driven by Playwright), the
votes in SQLite with annotator ids and anonymized random order, and `human_results` / `lmforge eval
human-results` turning them into win rates, ratings and agreement checked against scikit-learn and the
`krippendorff` package."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
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
ITEMS = [
    {
        "id": "q1",
        "prompt": "What is the capital of France?",
        "answers": {"alpha": "★ Paris is the capital of France.", "beta": "I like trains."},
    },
    {
        "id": "q2",
        "prompt": "Name a primary colour.",
        "answers": {"alpha": "★ Red.", "beta": "Purple, maybe."},
    },
    {"id": "q3", "prompt": "2 + 2 = ?", "answers": {"alpha": "★ 4", "beta": "22"}},
    {"id": "q4", "prompt": "Say hello.", "answer": "Hello there!", "model": "solo"},
    {"id": "q5", "prompt": "Give a tip for sleep.", "answer": "Keep a regular bedtime.", "model": "solo"},
]


def http(url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("human")
    items = tmp / "items.jsonl"
    items.write_text("".join(json.dumps(i) + "\n" for i in ITEMS))
    port = free_port()
    log = tmp / "server.log"
    cmd = [sys.executable, "-m", "lmforge.cli", "eval", "human", "--items", str(items), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"lmforge eval human exited:\n{log.read_text()}")
        try:
            if http(url + "/api/config")[0] == 200:
                break
        except OSError:
            time.sleep(0.2)
    yield url, items
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    path = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if path is None:
        pytest.fail("Chromium is not installed: run `make setup` (it installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        b = playwright.chromium.launch(executable_path=path, args=FLAGS)
        yield b
        b.close()


def annotate(browser, url: str, who: str, tie_first: bool, likert: list[int]) -> list[str]:
    """Vote as `who`: the ★ answer wins (or a tie on the first pair), Likert items get `likert`."""
    page = browser.new_page()
    page.set_default_timeout(30_000)
    page.goto(url + "/")
    page.fill("#annotator", who)
    page.click("#start")
    page.wait_for_function("document.querySelector('#progress').textContent.includes('/ 5')")
    seen, pair_seen = [], 0
    while True:
        page.wait_for_function(
            "!document.querySelector('#task').hidden || !document.querySelector('#done').hidden"
        )
        if page.is_visible("#done"):
            break
        prompt = page.inner_text("#prompt")
        seen.append(prompt)
        html = page.inner_html("#answers")
        assert "alpha" not in html and "beta" not in html and "solo" not in html  # anonymized
        if page.is_visible("#pair-buttons"):
            texts = page.locator("#answers .answer .text").all_inner_texts()
            assert len(texts) == 2
            choice = (
                "#vote-tie" if tie_first and pair_seen == 0 else ("#vote-1" if "★" in texts[0] else "#vote-2")
            )
            pair_seen += 1
            page.click(choice)
        else:
            for aspect, value in zip(["coherence", "helpfulness", "safety"], likert):
                page.check(f"#{aspect}-{value}")
            page.click("#submit-ratings")
        try:
            page.wait_for_function(
                f"document.querySelector('#prompt').textContent !== {json.dumps(prompt)}"
                " || !document.querySelector('#done').hidden",
                timeout=10_000,
            )
        except Exception as exc:
            raise AssertionError(f"stuck at {prompt!r}: status {page.inner_text('#status')!r}") from exc
    assert page.inner_text("#progress") == "5 / 5 done"
    page.close()
    return seen


def test_two_annotators_vote_in_chromium_and_the_votes_become_figures(server, browser, tmp_path, capsys):
    url, items = server
    seen1 = annotate(browser, url, "ann-1", tie_first=False, likert=[5, 4, 5])
    seen2 = annotate(browser, url, "ann-2", tie_first=True, likert=[4, 4, 5])
    assert sorted(seen1) == sorted(seen2) == sorted(i["prompt"] for i in ITEMS)

    with sqlite3.connect(str(items) + ".votes.sqlite") as con:
        rows = con.execute("SELECT annotator, unit, shown, choice, ratings FROM votes").fetchall()
    assert len(rows) == 10 and {r[0] for r in rows} == {"ann-1", "ann-2"}
    shown = {tuple(json.loads(r[2])) for r in rows if r[3] is not None}
    assert shown == {("alpha", "beta"), ("beta", "alpha")}  # both orders were shown
    assert all(r[3] == "alpha" for r in rows if r[0] == "ann-1" and r[3] is not None)

    import krippendorff
    import numpy as np
    from sklearn.metrics import cohen_kappa_score

    import lmforge

    result = lmforge.human_results(items, output=tmp_path / "report", n_resamples=200)
    h = result.report["human"]
    assert h["pairwise"]["alpha vs beta"]["win_rate"]["value"] == pytest.approx((3 + 2 + 0.5) / 6)
    assert list(h["ratings"]) == ["alpha", "beta"]
    units = sorted(r[1] for r in rows if r[0] == "ann-1" and r[3] is not None)
    choice = {(r[0], r[1]): r[3] for r in rows}
    a1, a2 = [choice[("ann-1", u)] for u in units], [choice[("ann-2", u)] for u in units]
    assert h["pairwise_agreement"]["cohen_kappa"] == pytest.approx(cohen_kappa_score(a1, a2))
    code = {"alpha": 0, "tie": 1}
    matrix = np.array([[code[x] for x in a1], [code[x] for x in a2]], dtype=float)
    assert h["pairwise_agreement"]["krippendorff_alpha"] == pytest.approx(
        krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal")
    )
    coherence = h["likert"]["coherence"]
    assert coherence["mean"]["solo"]["value"] == pytest.approx(4.5)
    assert h["likert"]["safety"]["mean"]["solo"]["value"] == 5
    assert (tmp_path / "report" / "report.md").is_file() and (tmp_path / "report" / "report.json").is_file()

    # a bad vote is refused with a message; the CLI prints the same figures
    status, body = http(url + "/api/vote", {"annotator": "x", "unit": units[0], "choice": "3"})
    assert status == 422 and "choice" in body["detail"]
    from lmforge.cli import main

    assert main(["eval", "human-results", "--items", str(items), "--n-resamples", "50"]) == 0
    assert json.loads(capsys.readouterr().out)["pairwise"]["alpha vs beta"]["n"] == 6
