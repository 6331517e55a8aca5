"""Issue 19's goal, measured: one client holding thousands of stalled uploads against `detzoo serve` at an
open-file limit of 1 024, next to the same app under uvicorn's defaults (how `detzoo serve` ran before).

Each server is a real process on 127.0.0.1 whose RLIMIT_NOFILE is set to --open-files (soft and hard, as
`ulimit -n 1024` does). This process then opens --stalled connections, one after the other; each declares a
100 000-byte upload to POST /v1/detect, sends 1 000 bytes and stalls. Meanwhile another thread sends a normal
request (a coco128 JPEG to POST /v1/detect, on a new connection, 10-s timeout) every 0.5 s. --hold seconds
(default: the deadline + 15) after the last stalled upload was opened, everything still open is closed. Printed per server: how the stalled
uploads ended (408, 503, closed without an answer, still open) and the longest time from an upload's last
byte to its close, next to the deadline; the normal requests' latency (p50, max) and how many failed.

    python benchmarks/bench_hostile_clients.py [--model runs/demo/run/best.pt] [--stalled 2000]
        [--open-files 1024] [--body-timeout 30] [--hold SECONDS]

Without --model it serves the demo's model (runs/demo/run/best.pt, from `make demo`), or else a randomly
initialised ssd300_mobilenetv2. This process needs an open-file limit above --stalled (it raises its soft
limit to the hard one).
"""

from __future__ import annotations

import argparse
import os
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx2
from bench_serve import DATA, DEMO_MODEL, ROOT, free_port, random_checkpoint, wait_until_ready
from common import machine, print_table

HEAD = (b"POST /v1/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: 100000\r\n\r\n")
REFERENCE = """
import sys, uvicorn
from detzoo.predict import Predictor
from detzoo.serve.app import create_app
model, port = sys.argv[1], int(sys.argv[2])
app = create_app(Predictor.from_file(model, device="cpu"), source=model)
uvicorn.run(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning")
"""


def limit_open_files() -> None:
    """Runs in the server's process before it starts: `ulimit -n N`."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (ARGS.open_files, ARGS.open_files))


def start(command: list[str], log) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([*command, str(port)], env=env, stdout=log, stderr=log,
                               preexec_fn=limit_open_files)
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(process, url, log)
    return process, url


class NormalClient(threading.Thread):
    """A new connection with one detection request every 0.5 s: its latency (s), or how it failed (the
    status code or the exception's name)."""

    def __init__(self, url: str, image: bytes):
        super().__init__(daemon=True)
        self.url, self.image, self.stop, self.results = url, image, threading.Event(), []

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                response = httpx2.post(f"{self.url}/v1/detect", content=self.image, timeout=10.0,
                                       headers={"Content-Type": "image/jpeg"})
                self.results.append(time.monotonic() - started if response.status_code == 200
                                    else str(response.status_code))
            except httpx2.TransportError as error:
                self.results.append(type(error).__name__)
            self.stop.wait(max(0.0, 0.5 - (time.monotonic() - started)))


def attack(port: int, hold: float) -> dict[str, object]:
    """Open the stalled uploads (watching those already open meanwhile), then watch them until they are all
    closed or ``hold`` seconds have passed."""
    ends = {"408": 0, "503": 0, "other answer": 0, "closed, no answer": 0, "connect failed": 0}
    selector, sent_at, answers, waits = selectors.DefaultSelector(), {}, {}, []

    def watch(timeout: float) -> None:
        for key, _ in selector.select(timeout=timeout):
            connection = key.fileobj
            try:
                chunk = connection.recv(4096)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                chunk = b""
            if chunk:
                answers[connection] += chunk
                continue
            waits.append(time.monotonic() - sent_at.pop(connection))
            answer = answers.pop(connection)
            status = answer[9:12].decode() if answer.startswith(b"HTTP/1.1 ") else ""
            ends[status if status in ("408", "503") else "other answer" if answer else "closed, no answer"] += 1
            selector.unregister(connection)
            connection.close()

    opening = time.monotonic()
    for _ in range(ARGS.stalled):
        connection = socket.socket()
        connection.settimeout(5.0)
        try:
            connection.connect(("127.0.0.1", port))
            connection.sendall(HEAD + b"x" * 1000)
        except OSError:
            connection.close()
            ends["connect failed"] += 1
            continue
        connection.setblocking(False)
        sent_at[connection] = time.monotonic()
        answers[connection] = b""
        selector.register(connection, selectors.EVENT_READ)
        watch(0.0)
    opened = time.monotonic()
    while sent_at and time.monotonic() < opened + hold:
        watch(0.5)
    still_open = len(sent_at)
    for connection in sent_at:
        connection.close()
    selector.close()
    return {**ends, "still open": still_open, "longest wait": max(waits) if waits else float("nan"),
            "opening": opened - opening}


def connection_cap(url: str) -> str:
    """The cap the server chose (detzoo serve only: GET /v1/models shows it)."""
    limits = httpx2.get(f"{url}/v1/models", timeout=30).json().get("limits", {})
    return str(limits.get("max_connections") or "none")


def server_counts(url: str) -> str:
    """What the server's /metrics says it did (detzoo serve only): evicted, refused (503 after the headers,
    503 before them), timed out (headers, body)."""
    text = httpx2.get(f"{url}/metrics", timeout=30).text
    if "detzoo_connections_evicted_total" not in text:
        return "-"
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line.startswith("detzoo_") and " " in line}
    names = ["detzoo_connections_evicted_total", 'detzoo_connections_refused_total{how="overflow"}',
             'detzoo_connections_refused_total{how="accept"}', 'detzoo_request_timeouts_total{phase="headers"}',
             'detzoo_request_timeouts_total{phase="body"}']
    return " / ".join(f"{values.get(name, 0):.0f}" for name in names)


def measure(name: str, command: list[str], deadline: str, image: bytes, log) -> list[object]:
    process, url = start(command, log)
    try:
        cap = connection_cap(url)
        normal = NormalClient(url, image)
        normal.start()
        time.sleep(2.0)  # a few normal requests before the attack
        result = attack(int(url.rsplit(":", 1)[1]), ARGS.hold)
        normal.stop.set()
        normal.join()
        counts = server_counts(url)
    finally:
        process.kill()
        process.wait()
    answered = [latency for latency in normal.results if isinstance(latency, float)]
    failures = Counter(result for result in normal.results if not isinstance(result, float))
    return [name, ARGS.open_files, cap, ARGS.stalled, result["opening"], counts, result["408"], result["503"],
            result["closed, no answer"], result["other answer"], result["connect failed"], result["still open"],
            result["longest wait"], deadline, len(normal.results),
            ", ".join(f"{count} ({why})" for why, count in sorted(failures.items())) or "0",
            statistics.median(answered) if answered else float("nan"), max(answered, default=float("nan"))]


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < ARGS.stalled + 64:
        raise SystemExit(f"this process may open only {hard} files; --stalled {ARGS.stalled} needs more")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"machine: {machine()}; server and client on this machine")
    image = sorted((DATA / "val2017").iterdir())[0].read_bytes()
    log_path = Path(tempfile.gettempdir()) / "bench_hostile_clients_server.log"
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp, open(log_path, "w") as log:
        model = Path(ARGS.model) if ARGS.model else DEMO_MODEL if DEMO_MODEL.is_file() else random_checkpoint(Path(tmp))
        guarded = [sys.executable, "-m", "detzoo", "serve", str(model), "--device", "cpu",
                   "--body-timeout", str(ARGS.body_timeout), "--port"]
        rows = [measure("detzoo serve", guarded, f"{ARGS.body_timeout:g}", image, log)]
        if not ARGS.no_reference:
            reference = [sys.executable, "-c", REFERENCE, str(model)]
            rows.append(measure("uvicorn defaults (before)", reference, "none", image, log))
    print_table(f"{ARGS.stalled} stalled uploads from one client (each: Content-Length 100000, 1000 bytes sent), "
                f"server at an open-file limit of {ARGS.open_files}; a normal POST /v1/detect every 0.5 s "
                f"(10-s timeout); watched for {ARGS.hold:g} s once all are open",
                ["server", "open files", "cap", "stalled", "opened in s", "evicted / 503 / 503 at once / timed out h / b",
                 "408", "503", "no answer", "other answer",
                 "connect failed", "still open", "longest wait s", "deadline s", "normal", "failed", "p50 s",
                 "max s"], rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint or run folder (default: the demo's, else a random model)")
    parser.add_argument("--stalled", type=int, default=2000, help="stalled uploads the client opens")
    parser.add_argument("--open-files", type=int, default=1024, help="the server's RLIMIT_NOFILE")
    parser.add_argument("--body-timeout", type=float, default=30.0, help="detzoo serve's --body-timeout")
    parser.add_argument("--hold", type=float, help="seconds the stalled uploads are watched (default: the "
                                                   "deadline + 15)")
    parser.add_argument("--no-reference", action="store_true", help="skip the uvicorn-defaults server")
    ARGS = parser.parse_args()
    ARGS.hold = ARGS.hold if ARGS.hold is not None else ARGS.body_timeout + 15
    main()
