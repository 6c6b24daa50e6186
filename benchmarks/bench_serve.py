"""Load on ``xlxmert serve`` over loopback: C concurrent clients × R ``POST /paint`` requests each.

Starts ``xlxmert serve`` as a separate process on 127.0.0.1 (a free port), waits for ``/health``,
paints once to warm up, then lets ``--clients`` clients send ``--requests`` paint requests each,
one after another, all at once. Reports latency p50/p95 (answered requests), throughput (paintings
per second of wall time), the server's peak memory (VmHWM), and how many requests were answered 200,
503 (queue full or waited too long: ``--max-waiting``, ``--wait-timeout``) or lost (no answer, an
error, or another status). Bounded: every request has ``--request-timeout`` seconds and the whole
run ``--budget`` seconds. Exit status 1 when a request was lost.

    python benchmarks/bench_serve.py                                # 16 × 5, the shipped model
    python benchmarks/bench_serve.py --max-concurrent 2 --max-waiting 4 --json out.json
    python benchmarks/bench_serve.py --url http://127.0.0.1:8000      # a server already running
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import httpx

CAPTIONS = [
    "a red circle to the left of a blue square",
    "two green stars and a yellow diamond at night",
    "a large red circle and a small red circle in the snow",
    "three shapes on the sand",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mib(pid: int) -> float | None:
    """The process's peak resident memory (Linux ``VmHWM``), MiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "xlxmert", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--max-concurrent", str(args.max_concurrent), "--max-waiting", str(args.max_waiting)]
    cmd += ["--wait-timeout", str(args.wait_timeout), "--log-level", "warning"]
    if args.model:
        cmd += ["--model", args.model]
    proc = subprocess.Popen(cmd, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"xlxmert serve exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit("xlxmert serve did not answer /health within 120 s")


async def client(http: httpx.AsyncClient, k: int, args: argparse.Namespace, results: list) -> None:
    for r in range(args.requests):
        body = {"caption": CAPTIONS[(k + r) % len(CAPTIONS)], "seed": k * args.requests + r}
        start = time.perf_counter()
        try:
            res = await http.post("/paint", json=body, timeout=args.request_timeout)
            ok = res.status_code != 200 or res.headers.get("content-type") == "image/png"
            status = res.status_code if ok else f"{res.status_code} without a PNG"
        except (httpx.HTTPError, OSError) as exc:
            status = f"lost: {type(exc).__name__}"
        results.append((status, time.perf_counter() - start))


async def load(url: str, args: argparse.Namespace) -> tuple[list, float]:
    results: list = []
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(base_url=url, limits=limits) as http:
        await http.post("/paint", json={"caption": CAPTIONS[0]}, timeout=args.request_timeout)  # warm up
        start = time.perf_counter()
        tasks = [asyncio.create_task(client(http, k, args, results)) for k in range(args.clients)]
        done, pending = await asyncio.wait(tasks, timeout=args.budget)
        for t in pending:
            t.cancel()
        wall = time.perf_counter() - start
    missing = args.clients * args.requests - len(results)
    results += [("lost: over the budget", float("nan"))] * missing
    return results, wall


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))] if values else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="model folder (default: the shipped model)")
    p.add_argument(
        "--url",
        help="load a server already running on this machine (http://127.0.0.1:PORT) instead of "
        "starting one; its settings are its own and its memory is not measured",
    )
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=5, help="paint requests per client")
    p.add_argument("--max-concurrent", type=int, default=1)
    p.add_argument("--max-waiting", type=int, default=32)
    p.add_argument("--wait-timeout", type=float, default=30.0)
    p.add_argument("--request-timeout", type=float, default=60.0)
    p.add_argument("--budget", type=float, default=300.0, help="seconds for the whole load")
    p.add_argument("--json", help="also write the report here")
    args = p.parse_args()

    if args.url:
        host = httpx.URL(args.url).host
        if host not in ("127.0.0.1", "localhost", "::1"):
            sys.exit(f"--url must be a loopback server (127.0.0.1), got {args.url}")
        proc, url = None, args.url.rstrip("/")
    else:
        proc, url = start_server(args)
    try:
        results, wall = asyncio.run(load(url, args))
        health = httpx.get(url + "/health", timeout=10).json()
        peak = None if proc is None else peak_rss_mib(proc.pid)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    ok = [s for st, s in results if st == 200]
    busy = [s for st, s in results if st == 503]
    lost = [st for st, _ in results if st not in (200, 503)]
    report = {
        "clients": args.clients,
        "requests": len(results),
        "max_concurrent": health["max_concurrent"],
        "answered_200": len(ok),
        "answered_503": len(busy),
        "lost": len(lost),
        "lost_kinds": sorted(set(map(str, lost))),
        "p50_s": round(percentile(ok, 0.5), 3),
        "p95_s": round(percentile(ok, 0.95), 3),
        "p50_503_s": round(percentile(busy, 0.5), 3) if busy else None,
        "wall_s": round(wall, 2),
        "throughput_per_s": round(len(ok) / wall, 2),
        "server_peak_rss_mib": None if peak is None else round(peak, 1),
        "server_health": health,
        "torch_threads": os.environ.get("OMP_NUM_THREADS", "default"),
    }
    print(
        f"{report['requests']} requests ({args.clients} clients × {args.requests}, "
        f"max-concurrent {health['max_concurrent']}): {len(ok)} × 200, {len(busy)} × 503, {len(lost)} lost\n"
        f"latency of 200s: p50 {report['p50_s']} s, p95 {report['p95_s']} s; "
        f"throughput {report['throughput_per_s']} paintings/s over {report['wall_s']} s; "
        f"server peak memory {report['server_peak_rss_mib']} MiB"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    if lost:
        print(f"lost requests: {report['lost_kinds']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
