"""`detzoo serve` under load, in one table: answered requests/s and p50/p95/p99 latency at 1, 4, 16 and 64
concurrent clients, batching off (--max-batch 1) and on (--max-batch 8), for PyTorch, ONNX Runtime FP32 and
ONNX Runtime INT8, next to the in-process Predictor's throughput on the same images (the ceiling: what
`detzoo predict` does, decoding in 2 workers while the model runs batches of 8, no HTTP). Each request is one
real JPEG (coco128) sent as an image/jpeg body.

Each configuration is a real server process on 127.0.0.1 (`python -m detzoo serve ...`); the clients are
asyncio tasks of this process (httpx2), each sending its next request when its previous one is answered. On
one machine the clients take CPU from the server, as any load generator on the same machine does.

    python benchmarks/bench_serve.py [--model runs/demo/run/best.pt] [--clients 1 4 16 64]
        [--requests-per-client 8] [--min-requests 64] [--backends pytorch onnxruntime int8] [--delays-ms 5]

Without --model it serves the demo's model (runs/demo/run/best.pt, from `make demo`), or else a randomly
initialised ssd300_mobilenetv2 (300 px, 80 classes: speed needs no trained weights).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2
import onnxruntime
import torch
from common import machine, print_table

from detzoo.common.checkpoints import atomic_save, model_payload
from detzoo.common.config import DatasetSpec, load_config
from detzoo.data.formats import read_dataset
from detzoo.export.api import export_checkpoint
from detzoo.export.quantize import quantize_model
from detzoo.models import create_model
from detzoo.predict import Predictor

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DETZOO_DATA", ROOT.parent / "shared" / "data")) / "coco128"
DEMO_MODEL = ROOT / "runs" / "demo" / "run" / "best.pt"
BATCH = 8


def random_checkpoint(folder: Path) -> Path:
    torch.manual_seed(0)
    config = load_config("ssd300_mobilenetv2", [])
    model = create_model("ssd300_mobilenetv2", num_classes=80, **config.model.model_kwargs()).eval()
    path = folder / "random_ssd300_mobilenetv2.pt"
    atomic_save(model_payload(model, config.to_dict(), [f"class{i}" for i in range(80)]), path)
    return path


def models(folder: Path) -> dict[str, Path]:
    """backend name -> the file the server gets: the checkpoint, its ONNX export, the INT8 file."""
    checkpoint = Path(ARGS.model) if ARGS.model else DEMO_MODEL if DEMO_MODEL.is_file() else random_checkpoint(folder)
    files = {"pytorch": checkpoint}
    if {"onnxruntime", "int8"} & set(ARGS.backends):
        files["onnxruntime"], _ = export_checkpoint(checkpoint, folder / "model.onnx", check_images=ARGS.data / "val2017",
                                                    check_count=2)
    if "int8" in ARGS.backends:
        calibration = read_dataset(DatasetSpec(str(ARGS.data)))
        files["int8"] = quantize_model(files["onnxruntime"], folder / "model.int8.onnx", calibration,
                                       ARGS.calibration_images)
    return {name: files[name] for name in ARGS.backends}


def ceiling(model: Path, paths: list[Path]) -> float:
    """Images/s of the in-process Predictor on the same images, as `detzoo predict` runs it: batches of BATCH,
    decoded by 2 DataLoader workers while the model runs, no HTTP (the images 4 times over, after a warm-up)."""
    predictor = Predictor.from_file(model, device="cpu", batch_size=BATCH, workers=2)
    list(predictor.predict_paths(paths[:BATCH]))
    started = time.perf_counter()
    count = len(list(predictor.predict_paths(paths * 4)))
    return count / (time.perf_counter() - started)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model: Path, max_batch: int, delay_ms: float, log) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-m", "detzoo", "serve", str(model), "--port", str(port),
                                "--max-batch", str(max_batch), "--max-batch-delay-ms", str(delay_ms),
                                "--queue-size", str(max(ARGS.clients) * 2), "--device", "cpu"],
                               env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(process, url, log)
    return process, url


def wait_until_ready(process: subprocess.Popen, url: str, log) -> None:
    """Until the server's /readyz says 200; a server that stops or is not ready within 10 minutes ends the
    benchmark with the name of its log."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server stopped (code {process.returncode}); see {log.name}")
        try:
            if httpx2.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f"the server was not ready within 10 minutes; see {log.name}")


def requests_per_client(clients: int) -> int:
    return max(ARGS.requests_per_client, -(-ARGS.min_requests // clients))


async def load(url: str, bodies: list[bytes], clients: int) -> dict:
    """Every client sends its requests one after the other."""
    latencies, failed, count = [], 0, requests_per_client(clients)
    limits = httpx2.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(600.0), limits=limits) as client:
        async def one_client(index: int) -> None:
            nonlocal failed
            for request in range(count):
                body = bodies[(index * count + request) % len(bodies)]
                started = time.perf_counter()
                response = await client.post(f"{url}/v1/detect", content=body, headers={"Content-Type": "image/jpeg"})
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    failed += 1

        started = time.perf_counter()
        await asyncio.gather(*(one_client(i) for i in range(clients)))
        elapsed = time.perf_counter() - started
    ms = sorted(latency * 1000 for latency in latencies)

    def percentile(p: float) -> float:
        return ms[min(len(ms) - 1, round(p / 100 * (len(ms) - 1)))] if ms else float("nan")

    return {"rps": len(latencies) / elapsed, "p50": statistics.median(ms) if ms else float("nan"),
            "p95": percentile(95), "p99": percentile(99), "failed": failed}


def main() -> None:
    print(f"machine: {machine()}, onnxruntime {onnxruntime.__version__}; server and clients on this machine")
    paths = sorted((ARGS.data / "val2017").iterdir())[: ARGS.images]
    bodies = [path.read_bytes() for path in paths]
    rows, log_path = [], Path(tempfile.gettempdir()) / "bench_serve_server.log"
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp, open(log_path, "w") as log:
        for backend, model in models(Path(tmp)).items():
            best = ceiling(model, paths)
            rows.append([backend, "in-process Predictor (ceiling)", "-", best, "-", "-", "-", 0, "1.00"])
            settings = [("off", 1, 0.0)] + [(f"on, {delay:g} ms", BATCH, delay) for delay in ARGS.delays_ms]
            for label, max_batch, delay in settings:
                process, url = start_server(model, max_batch, delay, log)
                try:
                    for clients in ARGS.clients:
                        result = asyncio.run(load(url, bodies, clients))
                        rows.append([backend, f"batching {label}", clients, result["rps"], result["p50"],
                                     result["p95"], result["p99"], result["failed"],
                                     f"{result['rps'] / best:.2f}"])
                finally:
                    process.terminate()
                    process.wait(timeout=120)
    print_table(f"detzoo serve under load ({len(paths)} coco128 JPEGs, one image per request, "
                f"at least {ARGS.min_requests} per level; ceiling = in-process Predictor, batch {BATCH})",
                ["backend", "server", "clients", "req/s", "p50 ms", "p95 ms", "p99 ms", "failed", "vs ceiling"], rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint or run folder (default: the demo's, else a random model)")
    parser.add_argument("--data", type=Path, default=DATA, help="a COCO folder with val2017/ (coco128)")
    parser.add_argument("--images", type=int, default=64, help="how many of its images the clients send")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--requests-per-client", type=int, default=8)
    parser.add_argument("--min-requests", type=int, default=64, help="at least this many requests per level")
    parser.add_argument("--backends", nargs="+", default=["pytorch", "onnxruntime", "int8"],
                        choices=["pytorch", "onnxruntime", "int8"])
    parser.add_argument("--delays-ms", type=float, nargs="+", default=[5.0],
                        help="--max-batch-delay-ms values to measure with batching on")
    parser.add_argument("--calibration-images", type=int, default=32)
    ARGS = parser.parse_args()
    main()
