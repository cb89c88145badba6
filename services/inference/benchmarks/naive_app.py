"""The naive baseline of `bench_serve.py` (issue 7): FastAPI + pydantic, one Redis hash per entity, torch scoring.

Deliberately the straightforward build: every candidate's hash is read (HGETALL, pipelined in one round trip,
which is kinder to the baseline than one call per key), distances in a Python loop, and the TorchScript model
scores all known candidates before the distance filter. It lives here, not in the service package.

Run: ``python naive_app.py --port P --redis-url URL --model-dir DIR`` (the hashes are written by bench_serve.py).
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import redis
import torch
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

NAIVE_PREFIX = "naive"
R = 6_371_008.8


class Body(BaseModel):
    candidate_restaurant_ids: list[int] = Field(min_length=1, max_length=2000)
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    size: int = Field(default=20, ge=1)
    max_dist: float = Field(default=5000, ge=0)
    sort_dist: bool = False


class Item(BaseModel):
    id: int
    score: float
    displacement: float


class Answer(BaseModel):
    restaurants: list[Item]


def create_naive_app(redis_url: str, model_dir: Path) -> FastAPI:
    torch.set_num_threads(1)
    client = redis.Redis.from_url(redis_url)
    model = torch.jit.load(str(model_dir / "model.pt"))
    with np.load(model_dir / "scaler.npz") as z:
        mean, std = torch.from_numpy(z["mean"]), torch.from_numpy(z["std"])
    app = FastAPI()

    @app.post("/recommend/{user_id}")
    def recommend(user_id: str, body: Body) -> Answer:
        uid = int(user_id.removeprefix("u"))
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(f"{NAIVE_PREFIX}:u:{uid}")
        for rid in body.candidate_restaurant_ids:
            pipe.hgetall(f"{NAIVE_PREFIX}:r:{rid}")
        user, *rests = pipe.execute()
        if not user:
            raise HTTPException(404, "unknown user")
        ufeat = [float(user[f"f{i:02d}".encode()]) for i in range(30)]
        ids, rows, disp = [], [], []
        for rid, h in zip(body.candidate_restaurant_ids, rests, strict=True):
            if not h:
                continue
            lat, lng = float(h[b"latitude"]), float(h[b"longitude"])
            p1, p2 = math.radians(body.latitude), math.radians(lat)
            a = (
                math.sin((p2 - p1) / 2) ** 2
                + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lng - body.longitude) / 2) ** 2
            )
            ids.append(rid)
            disp.append(2 * R * math.asin(math.sqrt(a)))
            rows.append(ufeat + [float(h[f"f{i:02d}".encode()]) for i in range(10)])
        if not rows:
            return Answer(restaurants=[])
        with torch.no_grad():
            x = (torch.tensor(rows, dtype=torch.float32) - mean) / std
            scores = torch.sigmoid(model(x)).tolist()
        items = [
            Item(id=i, score=s, displacement=d)
            for i, s, d in zip(ids, scores, disp, strict=True)
            if d <= body.max_dist
        ]
        items.sort(key=(lambda t: (t.displacement, t.id)) if body.sort_dist else (lambda t: (-t.score, t.id)))
        return Answer(restaurants=items[: body.size])

    @app.get("/readyz")
    def readyz() -> dict[str, bool]:
        return {"ready": True}

    return app


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--model-dir", type=Path, required=True)
    a = p.parse_args()
    uvicorn.run(
        create_naive_app(a.redis_url, a.model_dir),
        host="127.0.0.1",
        port=a.port,
        access_log=False,
        log_level="warning",
        loop="uvloop",
        http="httptools",
    )
