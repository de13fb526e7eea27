"""Load on the predictor server: 1, 8 and 32 concurrent clients streaming Responses requests that each draw
one picture, against a real `duogen serve` process on 127.0.0.1; then the same 8-client load on the same
server started with `--no-batching` (one request's denoising step per DiT forward), measured in this run.

Prints one JSON line: `runs` (per client count: requests, p50/p99 latency, requests and images per second,
`first_event_ms` = median time to the first output item, errors, rejected_429) and `batching_speedup`
(images/s at 8 clients with cross-request batching / without).

    python tests/benchmarks/serving_load.py [--preset toy] [--size 64] [--requests 64]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parents[1]))
from serving_server import predictor_server  # noqa: E402

DUOGEN = str(Path(sys.executable).parent / "duogen")


def one_request(client: httpx.Client, url: str, body: dict) -> dict:
    start = time.perf_counter()
    first = None
    images = 0
    with client.stream("POST", url, json=body) as r:
        if r.status_code == 429:
            return {"status": 429}
        if r.status_code != 200:
            r.read()
            return {"status": r.status_code, "error": r.text[:200]}
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":  # the stream's terminal event
                break
            event = json.loads(line[6:])
            if first is None and event["type"] == "response.output_item.added":
                first = time.perf_counter() - start
            if event["type"] == "response.image_generation_call.completed":
                images += 1
            if event["type"] == "error":
                return {"status": 200, "error": event["error"]["message"]}
    return {"status": 200, "seconds": time.perf_counter() - start, "first": first, "images": images}


def load(server_url: str, clients: int, total: int, body: dict) -> dict:
    url = f"{server_url}/openai/v1/responses"
    results: list[dict] = []
    lock = threading.Lock()
    per_client = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]

    def client_loop(n: int) -> None:
        with httpx.Client(timeout=600) as client:
            for _ in range(n):
                try:
                    result = one_request(client, url, body)
                except httpx.HTTPError as err:
                    result = {"status": 0, "error": type(err).__name__}
                with lock:
                    results.append(result)

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in per_client]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ok = [r for r in results if r["status"] == 200 and "error" not in r]
    latencies = sorted(r["seconds"] * 1000 for r in ok)
    firsts = [r["first"] * 1000 for r in ok if r["first"] is not None]
    return {
        "clients": clients,
        "requests": len(results),
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p99_ms": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1)
        if latencies
        else None,
        "requests_per_s": round(len(ok) / wall, 3),
        "first_event_ms": round(statistics.median(firsts), 1) if firsts else None,
        "images_per_s": round(sum(r["images"] for r in ok) / wall, 3),
        "errors": sum(1 for r in results if r["status"] not in (200, 429) or "error" in r),
        "rejected_429": sum(1 for r in results if r["status"] == 429),
        "seconds": round(wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="toy", help="pair preset, random weights (default: toy)")
    parser.add_argument("--size", type=int, default=64, help="side of the drawn pictures (default: 64)")
    parser.add_argument("--requests", type=int, default=64, help="requests per client count (default: 64)")
    parser.add_argument("--clients", default="1,8,32", help="client counts (default: 1,8,32)")
    args = parser.parse_args()

    from duogen.model.pair import DuoGenPair
    from duogen.model.presets import get_preset

    body = {
        "input": "Draw the scene.",
        "stream": True,
        "max_output_tokens": 4,
        "max_images": 1,
        "tool_choice": {"type": "image_generation"},
        "size": f"{args.size}x{args.size}",
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        DuoGenPair.build(get_preset(args.preset), seed=0).save_pretrained(root / "pair")
        common = [DUOGEN, "serve", "--model", str(root / "pair"), "--max-running", "8", "--max-queued", "64"]
        runs = []
        with predictor_server(common, root / "batched.log") as server:
            load(server.url, 2, 4, body)  # warm-up
            for clients in (int(c) for c in args.clients.split(",")):
                runs.append(load(server.url, clients, max(args.requests, clients), body))
                print(json.dumps(runs[-1]), file=sys.stderr)
        with predictor_server([*common, "--no-batching"], root / "single.log") as server:
            load(server.url, 2, 4, body)
            unbatched = load(server.url, 8, max(args.requests, 8), body)
            print(json.dumps(unbatched), file=sys.stderr)
    batched = next((r for r in runs if r["clients"] == 8), None)
    speedup = round(batched["images_per_s"] / unbatched["images_per_s"], 3) if batched else None
    print(
        json.dumps(
            {
                "runs": runs,
                "no_batching_8_clients": unbatched,
                "batching_speedup": speedup,
                "preset": args.preset,
                "image_size": f"{args.size}x{args.size}",
            }
        )
    )


if __name__ == "__main__":
    main()
