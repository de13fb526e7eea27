"""Load on the predictor server: 1, 8 and 32 concurrent clients streaming Responses requests that each draw
one picture, against a real `duogen serve` process on 127.0.0.1; then a text-only workload (chat follow-ups
that write ~128 tokens each, no picture) at 8 clients; then the same 8-client loads on servers started with
`--no-decode-batching` (each request runs its own MLLM forwards in its thread) and with `--no-batching` (one
request's denoising step per DiT forward), all measured in this run.

Prints one JSON line: `runs` (per client count: requests, p50/p99 latency, requests, images and output
tokens per second, `first_event_ms` = median time to the first output item, errors, rejected_429),
`batching_speedup` (images/s at 8 clients with cross-request DiT batching / without),
`decode_batching_speedup` (text-only workload, 8 clients: output tokens/s with batched decoding / without)
and `picture_workload_ratio` (picture workload, 8 clients: requests/s with batched decoding / without).

    python tests/benchmarks/serving_load.py [--preset toy] [--size 64] [--requests 64] [--text-tokens 128]
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
    images = tokens = 0
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
            if event["type"] in ("response.completed", "response.incomplete"):
                tokens = event["response"]["usage"]["output_tokens"]
            if event["type"] == "error":
                return {"status": 200, "error": event["error"]["message"]}
    return {
        "status": 200,
        "seconds": time.perf_counter() - start,
        "first": first,
        "images": images,
        "tokens": tokens,
    }


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
        "output_tokens_per_s": round(sum(r["tokens"] for r in ok) / wall, 1),
        "output_tokens_per_request": round(statistics.mean(r["tokens"] for r in ok), 1) if ok else None,
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
    parser.add_argument(
        "--text-tokens", type=int, default=128, help="tokens each text-only request writes (default: 128)"
    )
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
    follow_up = {  # a text-only turn of a conversation: no picture, ~128 tokens written
        "input": [
            {"role": "user", "content": "How do I repot a plant? Show the steps."},
            {
                "role": "assistant",
                "content": "Water it, lift it out, loosen the roots, set it in the new pot.",
            },
            {"role": "user", "content": "Why loosen the roots? Explain in detail."},
        ],
        "stream": True,
        "max_output_tokens": args.text_tokens,
        "min_tokens": args.text_tokens,  # random weights end a turn early; a real answer runs on
        "tool_choice": "none",
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        DuoGenPair.build(get_preset(args.preset), seed=0).save_pretrained(root / "pair")
        common = [DUOGEN, "serve", "--model", str(root / "pair"), "--max-running", "8", "--max-queued", "64"]
        n = max(args.requests, 8)
        runs = []
        with predictor_server(common, root / "batched.log") as server:
            load(server.url, 2, 4, body)  # warm-up
            for clients in (int(c) for c in args.clients.split(",")):
                runs.append(load(server.url, clients, max(args.requests, clients), body))
                print(json.dumps(runs[-1]), file=sys.stderr)
            text = load(server.url, 8, n, follow_up)
            print(json.dumps(text), file=sys.stderr)
        with predictor_server([*common, "--no-decode-batching"], root / "threads.log") as server:
            load(server.url, 2, 4, body)
            pictures_threads = load(server.url, 8, n, body)
            text_threads = load(server.url, 8, n, follow_up)
            print(json.dumps(pictures_threads), json.dumps(text_threads), file=sys.stderr)
        with predictor_server([*common, "--no-batching"], root / "single.log") as server:
            load(server.url, 2, 4, body)
            unbatched = load(server.url, 8, n, body)
            print(json.dumps(unbatched), file=sys.stderr)
    batched = next((r for r in runs if r["clients"] == 8), None)

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    print(
        json.dumps(
            {
                "runs": runs,
                "text_only_8_clients": text,
                "no_decode_batching_8_clients": {"pictures": pictures_threads, "text_only": text_threads},
                "no_batching_8_clients": unbatched,
                "batching_speedup": ratio(batched and batched["images_per_s"], unbatched["images_per_s"]),
                "decode_batching_speedup": ratio(
                    text["output_tokens_per_s"], text_threads["output_tokens_per_s"]
                ),
                "picture_workload_ratio": ratio(
                    batched and batched["requests_per_s"], pictures_threads["requests_per_s"]
                ),
                "errors": sum(r["errors"] for r in [*runs, text, pictures_threads, text_threads, unbatched]),
                "preset": args.preset,
                "image_size": f"{args.size}x{args.size}",
            }
        )
    )


if __name__ == "__main__":
    main()
