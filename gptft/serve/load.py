"""`python -m gptft.serve.load ckpt=PATH`: throughput and latency of POST /predict with batching off and on.

For each max_batch_size it starts a server for the classifier checkpoint, sends `requests` requests from
`concurrency` threads (each one text, after a warm-up), and prints p50 / p95 latency and requests per second."""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..cli_args import command, parse
from ..errors import ConfigError
from .process import running_server

USAGE = """usage: python -m gptft.serve.load ckpt=PATH [requests=200] [concurrency=16] [batch_sizes=1,16]
         [batch_timeout=0.01] [request_timeout=60]
  ckpt         a classifier checkpoint (or its folder of python -m gptft.export)
  batch_sizes  the max_batch_size of each server started (1: batching off)"""

DEFAULTS = {"ckpt": None, "requests": 200, "concurrency": 16, "batch_sizes": "1,16", "batch_timeout": 0.01,
            "request_timeout": 60.0}
TEXTS = ["Are we still meeting for lunch tomorrow?", "WINNER!! You have won a 1000 cash prize. Call 09061701461 now",
         "Sorry, I'll call later", "Free entry in a weekly competition to win FA Cup final tickets. Text FA to 87121",
         "I'm on the bus, be home in 10 minutes", "URGENT! Your mobile number has been awarded a 2000 bonus prize"]


def one_request(url: str, i: int, timeout: float) -> tuple[float, str | None]:
    """(seconds, error or None) of one POST /predict."""
    body = json.dumps({"text": TEXTS[i % len(TEXTS)]}).encode()
    req = urllib.request.Request(url + "/predict", data=body, headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            answer = json.loads(resp.read())
            error = None if "label" in answer else f"no label in {answer}"
    except (urllib.error.URLError, OSError, ValueError) as err:
        error = str(err)
    return time.perf_counter() - start, error


def measure(url: str, requests: int, concurrency: int, timeout: float) -> dict:
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda i: one_request(url, i, timeout), range(concurrency)))  # warm-up
        start = time.perf_counter()
        results = list(pool.map(lambda i: one_request(url, i, timeout), range(requests)))
        wall = time.perf_counter() - start
    ms = sorted(1000 * s for s, _ in results)
    errors = [e for _, e in results if e]
    return {"requests": requests, "concurrency": concurrency, "errors": len(errors), "first_error": errors[0] if errors else None,
            "p50_ms": statistics.median(ms), "p95_ms": ms[min(len(ms) - 1, int(0.95 * len(ms)))],
            "req_per_s": requests / wall}


def table(rows: list[dict]) -> str:
    lines = ["| max_batch_size | requests | concurrency | errors | p50 ms | p95 ms | requests/s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['max_batch_size']} | {r['requests']} | {r['concurrency']} | {r['errors']} | "
                     f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['req_per_s']:.1f} |")
    return "\n".join(lines)


@command
def main(argv: list[str] | None = None) -> list[dict]:
    args = parse(DEFAULTS, USAGE, argv)
    if not args.ckpt:
        raise ConfigError(f"give ckpt=PATH\n\n{USAGE}")
    try:
        sizes = [int(s) for s in str(args.batch_sizes).split(",")]
    except ValueError:
        raise ConfigError(f"batch_sizes must be integers separated by commas, got {args.batch_sizes!r}") from None
    if args.requests < 1 or args.concurrency < 1 or min(sizes) < 1:
        raise ConfigError("requests, concurrency and every batch size must be positive integers")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            print(f"max_batch_size={size}: starting a server, then {args.requests} requests from "
                  f"{args.concurrency} threads", file=sys.stderr, flush=True)
            with running_server(args.ckpt, f"max_batch_size={size}", f"batch_timeout={args.batch_timeout}",
                                log=Path(tmp) / f"server-{size}.log") as url:
                rows.append({"max_batch_size": size, **measure(url, args.requests, args.concurrency,
                                                               args.request_timeout)})
    print(table(rows), flush=True)
    return rows


if __name__ == "__main__":
    main()
