"""Pairwise preference: people compare two models' answers side by side; votes go to sqlite; Elo and
Bradley-Terry ratings with bootstrap intervals come from the votes.

Comparisons pair two evaluation reports answer by answer (same task, same request): `pairs_from_reports`.
The page (`preference_app`) shows one unvoted comparison at a time, the two answers in random left/right
order, and three buttons (left better, tie, right better); a vote names the winning *model*, so the order
shown never biases the ratings.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from pathlib import Path

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS pairs (id TEXT PRIMARY KEY, prompt TEXT, a_model TEXT, a_json TEXT, b_model TEXT,
                                  b_json TEXT);
CREATE TABLE IF NOT EXISTS votes (id INTEGER PRIMARY KEY AUTOINCREMENT, pair_id TEXT, winner TEXT, loser TEXT,
                                  tie INTEGER, voter TEXT, ts REAL);
"""


class VoteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        with self._db() as db:
            db.executescript(SCHEMA)

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def add_pairs(self, pairs: list[dict]) -> None:
        with self._db() as db:
            db.executemany(
                "INSERT OR IGNORE INTO pairs VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        p["id"],
                        p["prompt"],
                        p["a"]["model"],
                        json.dumps(p["a"]),
                        p["b"]["model"],
                        json.dumps(p["b"]),
                    )
                    for p in pairs
                ],
            )

    def next_pair(self, voter: str = "") -> dict | None:
        """A comparison this voter has not voted on yet, or None."""
        with self._db() as db:
            row = db.execute(
                "SELECT id, prompt, a_json, b_json FROM pairs WHERE id NOT IN "
                "(SELECT pair_id FROM votes WHERE voter = ?) ORDER BY id LIMIT 1",
                (voter,),
            ).fetchone()
        return _pair(row)

    def pair(self, pair_id: str, voter: str = "") -> dict | None:
        """The comparison `pair_id` if this voter has not voted on it yet, else None."""
        with self._db() as db:
            row = db.execute(
                "SELECT id, prompt, a_json, b_json FROM pairs WHERE id = ? AND id NOT IN "
                "(SELECT pair_id FROM votes WHERE voter = ?)",
                (pair_id, voter),
            ).fetchone()
        return _pair(row)

    def vote(self, pair_id: str, winner_model: str | None, voter: str = "") -> None:
        """`winner_model` None is a tie."""
        with self._db() as db:
            row = db.execute("SELECT a_model, b_model FROM pairs WHERE id = ?", (pair_id,)).fetchone()
            if row is None:
                raise KeyError(f"no comparison {pair_id!r}")
            if winner_model is not None and winner_model not in row:
                raise ValueError(f"{winner_model!r} is not one of this comparison's models {list(row)}")
            winner = winner_model or row[0]
            loser = row[1] if winner == row[0] else row[0]
            db.execute(
                "INSERT INTO votes (pair_id, winner, loser, tie, voter, ts) VALUES (?, ?, ?, ?, ?, ?)",
                (pair_id, winner, loser, int(winner_model is None), voter, time.time()),
            )

    def votes(self) -> list[tuple[str, str, bool]]:
        with self._db() as db:
            return [
                (w, lo, bool(t))
                for w, lo, t in db.execute("SELECT winner, loser, tie FROM votes ORDER BY id")
            ]


def _pair(row) -> dict | None:
    return (
        None
        if row is None
        else {"id": row[0], "prompt": row[1], "a": json.loads(row[2]), "b": json.loads(row[3])}
    )


def pairs_from_reports(report_a: str | Path, report_b: str | Path, name_a: str, name_b: str) -> list[dict]:
    """One comparison per task both reports answered (`records.jsonl` of `write_report`)."""

    def load(folder: Path, name: str) -> dict:
        out = {}
        for line in (folder / "records.jsonl").read_text().splitlines():
            r = json.loads(line)
            pictures = [str((folder / p).resolve()) for p in r.get("pictures", [])]
            out[r.get("task", r.get("id"))] = {
                "model": name,
                "answer": r.get("answer", ""),
                "pictures": pictures,
                "prompt": r.get("request", ""),
            }
        return out

    a, b = load(Path(report_a), name_a), load(Path(report_b), name_b)
    return [{"id": f"{k}", "prompt": a[k]["prompt"], "a": a[k], "b": b[k]} for k in sorted(a) if k in b]


def elo(votes: list[tuple[str, str, bool]], k: float = 32.0, start: float = 1000.0) -> dict[str, float]:
    ratings: dict[str, float] = {}
    for winner, loser, tie in votes:
        rw, rl = ratings.setdefault(winner, start), ratings.setdefault(loser, start)
        expected = 1 / (1 + 10 ** ((rl - rw) / 400))
        score = 0.5 if tie else 1.0
        ratings[winner] = rw + k * (score - expected)
        ratings[loser] = rl - k * (score - expected)
    return ratings


def bradley_terry(votes: list[tuple[str, str, bool]], iterations: int = 200) -> dict[str, float]:
    """Strengths by the MM algorithm (a tie is half a win each way), on the Elo scale (mean 1000)."""
    models = sorted({m for w, lo, _ in votes for m in (w, lo)})
    index = {m: i for i, m in enumerate(models)}
    wins = np.full((len(models), len(models)), 0.01)  # a small prior keeps unbeaten models finite
    np.fill_diagonal(wins, 0)
    for winner, loser, tie in votes:
        i, j = index[winner], index[loser]
        if tie:
            wins[i, j] += 0.5
            wins[j, i] += 0.5
        else:
            wins[i, j] += 1
    p = np.ones(len(models))
    games = wins + wins.T
    for _ in range(iterations):
        p = wins.sum(1) / (games / (p[:, None] + p[None, :])).sum(1)
        p /= np.exp(np.log(p).mean())
    scores = 400 * np.log10(p)
    return {m: float(1000 + s - scores.mean()) for m, s in zip(models, scores, strict=True)}


def ratings(votes: list[tuple[str, str, bool]], samples: int = 500, seed: int = 0) -> dict:
    """Per model: Elo and Bradley-Terry with 95% bootstrap intervals (votes resampled, Elo order shuffled)."""
    if not votes:
        return {}
    rng = random.Random(seed)
    point = {"elo": elo(votes), "bradley_terry": bradley_terry(votes)}
    draws: dict[str, dict[str, list[float]]] = {"elo": {}, "bradley_terry": {}}
    for _ in range(samples):
        sample = [votes[rng.randrange(len(votes))] for _ in votes]
        for name, fn in (("elo", elo), ("bradley_terry", bradley_terry)):
            for model, value in fn(sample).items():
                draws[name].setdefault(model, []).append(value)
    out: dict = {}
    for name in point:
        for model, value in point[name].items():
            low, high = np.quantile(draws[name].get(model, [value]), [0.025, 0.975])
            out.setdefault(model, {})[name] = {
                "rating": round(value, 1),
                "ci95": [round(low, 1), round(high, 1)],
            }
    for model in out:
        out[model]["votes"] = sum(model in (w, lo) for w, lo, _ in votes)
    return out
