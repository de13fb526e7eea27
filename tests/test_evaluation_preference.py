"""Pairwise preference: ratings follow the votes (Elo and Bradley-Terry with intervals), and the voting page
works in headless Chromium (Debian's chromium via Playwright): it loads, a click stores a vote in sqlite
naming the model that was shown on that side, and the ratings change."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from duogen.components.evaluation.preference import VoteStore, bradley_terry, elo, ratings

sys.path.insert(0, str(Path(__file__).parent))
from browser import launch  # noqa: E402

from duogen.platform.launch import free_port  # noqa: E402

DUOGEN = str(Path(sys.executable).parent / "duogen")


def test_ratings_follow_the_votes():
    votes = [("A", "B", False)] * 8 + [("B", "A", False)] * 2 + [("A", "B", True)] * 2
    e, bt = elo(votes), bradley_terry(votes)
    assert e["A"] > 1000 > e["B"] and bt["A"] > 1000 > bt["B"]
    assert elo([("A", "B", True)])["A"] == 1000.0  # a tie between equals changes nothing
    r = ratings(votes, samples=200)
    for model in ("A", "B"):
        for name in ("elo", "bradley_terry"):
            low, high = r[model][name]["ci95"]
            assert low <= r[model][name]["rating"] <= high
    assert r["A"]["votes"] == 12 and ratings([]) == {}


def report(folder: Path, name: str, colour) -> Path:
    folder.mkdir(parents=True)
    (folder / "answers").mkdir()
    with open(folder / "records.jsonl", "w") as f:
        for task in range(2):
            Image.new("RGB", (16, 16), colour).save(folder / "answers" / f"task{task}.png")
            f.write(
                json.dumps(
                    {
                        "task": task,
                        "request": f"How do I do task {task}?",
                        "answer": f"answer of {name} to task {task}",
                        "pictures": [f"answers/task{task}.png"],
                    }
                )
                + "\n"
            )
    return folder


def test_the_voting_page_stores_votes_and_the_ratings_change(tmp_path):
    from playwright.sync_api import sync_playwright

    a, b = report(tmp_path / "a", "alpha", (255, 0, 0)), report(tmp_path / "b", "beta", (0, 0, 255))
    db, port = tmp_path / "votes.sqlite", free_port()
    server = subprocess.Popen(
        [
            DUOGEN,
            "eval",
            "elo",
            "--db",
            str(db),
            "--a",
            str(a),
            "--b",
            str(b),
            "--name-a",
            "alpha",
            "--name-b",
            "beta",
            "--serve",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{url}/api/ratings", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        with sync_playwright() as p:
            browser = launch(p)
            try:
                page = browser.new_page()
                page.goto(url)
                page.wait_for_function("document.body.dataset.pair !== undefined")
                assert page.locator("#left img").count() == 1 and page.locator("#right img").count() == 1
                left = page.inner_text("#left")
                winner = "alpha" if "alpha" in left else "beta"
                page.click("#vote-left")
                page.wait_for_function("document.getElementById('status').textContent.includes('stored')")
                page.wait_for_function("document.getElementById('ratings').textContent.includes('elo')")
                shown = json.loads(page.inner_text("#ratings"))
            finally:
                browser.close()
        rows = sqlite3.connect(db).execute("SELECT winner, loser, tie FROM votes").fetchall()
        assert rows == [(winner, "beta" if winner == "alpha" else "alpha", 0)]
        loser = rows[0][1]
        assert shown[winner]["elo"]["rating"] > shown[loser]["elo"]["rating"]
        assert httpx.get(f"{url}/api/ratings", timeout=5).json() == shown
    finally:
        server.terminate()
        server.wait(timeout=10)
    printed = subprocess.run(
        [DUOGEN, "eval", "elo", "--db", str(db)], capture_output=True, text=True, check=True
    )
    assert json.loads(printed.stdout)[winner]["votes"] == 1


def test_votes_that_do_not_fit_are_refused(tmp_path):
    import asyncio

    from duogen.components.evaluation.preference import pairs_from_reports
    from duogen.components.evaluation.preference_app import preference_app

    store = VoteStore(tmp_path / "v.sqlite")
    store.add_pairs(
        pairs_from_reports(
            report(tmp_path / "a", "alpha", (255, 0, 0)),
            report(tmp_path / "b", "beta", (0, 0, 255)),
            "alpha",
            "beta",
        )
    )
    with pytest.raises(ValueError, match="gamma"):
        store.vote("0", "gamma")

    async def calls():
        transport = httpx.ASGITransport(app=preference_app(store, seed=0))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            pair = (await client.get("/api/next")).json()
            body = {"id": pair["id"], "order": pair["order"], "choice": "tie"}
            first = await client.post("/api/vote", json=body)
            again = await client.post("/api/vote", json=body)  # already voted: not waiting any more
            unknown = await client.post("/api/vote", json={**body, "id": "99"})
            bad = await client.post("/api/vote", json={**body, "choice": "both"})
            return first.status_code, again.status_code, unknown.status_code, bad.status_code

    assert asyncio.run(calls()) == (200, 409, 409, 422)
    assert store.votes() == [("alpha", "beta", True)]
