"""The preference page: a small local web app over a `VoteStore` (FastAPI, served by uvicorn on 127.0.0.1).

GET  /               the page (ui/preference.html)
GET  /api/next       the next comparison for this voter, the two answers in random left/right order
                     (pictures inline as data URLs; the models are not named)
POST /api/vote       {"id", "order", "choice": "left" | "right" | "tie", "voter"}
GET  /api/ratings    Elo and Bradley-Terry with 95% bootstrap intervals
"""

from __future__ import annotations

import base64
import random
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from .preference import VoteStore, ratings

PAGE = Path(__file__).parent / "ui" / "preference.html"


class Vote(BaseModel):
    id: str = Field(max_length=200)
    order: str = Field(pattern="^(ab|ba)$")
    choice: str = Field(pattern="^(left|right|tie)$")
    voter: str = Field("", max_length=100)


def _side(answer: dict) -> dict:
    pictures = []
    for path in answer.get("pictures", []):
        data = Path(path).read_bytes() if Path(path).is_file() else b""
        pictures.append("data:image/png;base64," + base64.b64encode(data).decode())
    return {"answer": answer.get("answer", ""), "pictures": pictures}


def preference_app(store: VoteStore, seed: int | None = None) -> FastAPI:
    app = FastAPI(title="DuoGen preference votes", docs_url=None, redoc_url=None)
    rng = random.Random(seed)

    @app.get("/")
    def page() -> FileResponse:
        return FileResponse(PAGE)

    @app.get("/api/next")
    def next_pair(voter: str = "") -> dict:
        pair = store.next_pair(voter)
        if pair is None:
            return {"done": True}
        order = rng.choice(["ab", "ba"])
        left, right = (pair["a"], pair["b"]) if order == "ab" else (pair["b"], pair["a"])
        return {
            "done": False,
            "id": pair["id"],
            "prompt": pair["prompt"],
            "order": order,
            "left": _side(left),
            "right": _side(right),
        }

    @app.post("/api/vote")
    def vote(body: Vote) -> dict:
        pair = store.pair(body.id, body.voter)
        if pair is None:
            raise HTTPException(409, f"comparison {body.id!r} is not waiting for this voter's vote")
        left, right = (pair["a"], pair["b"]) if body.order == "ab" else (pair["b"], pair["a"])
        winner = None if body.choice == "tie" else (left if body.choice == "left" else right)["model"]
        store.vote(body.id, winner, body.voter)
        return {"stored": True}

    @app.get("/api/ratings")
    def get_ratings() -> dict:
        return ratings(store.votes())

    return app
