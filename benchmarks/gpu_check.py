"""Every CUDA check of detzoo in one run, on one machine with a GPU and torch, in at most 8 minutes; one table.

Runs from a copy of the source tree (``PYTHONPATH=src``), needs no network and no dataset (it generates the demo's
shapes; coco128 is used for the speed table when found), and turns what is missing into rows instead of stopping:
a module that is not installed is a ``missing X`` row (docs/gpu.md: which wheels to carry), a check that needs
an earlier one's output is ``not run`` when that one failed, and a check that would overrun the time budget is
``not run (time)``.

    1. training, in parallel: ssd300_mobilenetv2 at 128 px, one epoch of the shapes, in fp32, bf16 and fp16 (the
       gradient scaler), with data.decode=cuda, with train.compile=true, and under torchrun on NCCL;
    2. with the fp32 run's CUDA-trained checkpoint, in parallel: eval (bf16), predict, serve (a request answered),
       export to ONNX (checked against PyTorch), and the tests marked ``cuda``;
    3. alone, timed: the training speed table (benchmarks/bench_train.py, the issue's goal models), inference
       latency and throughput eager vs compiled (benchmarks/bench_infer.py), and ``detzoo demo`` (time and mAP
       against the CPU run's).

    PYTHONPATH=src python benchmarks/gpu_check.py --out /tmp/gpu_check     # logs and results.json there
    python benchmarks/gpu_check.py --dry-run                               # the plan as a table, nothing run
    PYTHONPATH=src python benchmarks/gpu_check.py --device cpu             # what runs without CUDA, small
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = {"cuda": 480.0, "cpu": 1800.0}  # the whole run: 8 minutes on a GPU; the CPU mode is only a test
CPU_DEMO = {"mAP50": 0.417, "mAP": 0.255, "minutes": 6.3}  # docs/getting-started.md: the demo on the project's 2-core CPU


@dataclass
class Check:
    """One row: a command (or a Python function for the service) with what it needs."""

    name: str
    command: list[str] | None = None
    needs: tuple[str, ...] = ()  # Python modules
    cuda_only: bool = False
    cpu_note: str = ""  # why it does not run in --device cpu mode (when it does not)
    after: str | None = None  # a check whose output it uses
    timeout: float = 120.0
    figure: str = ""  # regular expression: the first group (or the match) is the row's figure
    goal: str = ""
    parse: object = None  # function(output) -> (figure, goal met: bool | None), instead of ``figure``
    cuda_goal: bool = False  # the goal is a GPU's: not judged in the CPU mode


@dataclass
class Result:
    check: str
    status: str
    figure: str = ""
    goal: str = ""
    met: str = ""
    seconds: float = 0.0
    note: str = ""
    log: str = ""


@dataclass
class Context:
    out: Path
    device: str
    python: str = sys.executable
    data: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    start: float = field(default_factory=time.monotonic)

    def env(self) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def left(self) -> float:
        return BUDGET_S[self.device] - (time.monotonic() - self.start)


def missing_modules(names) -> list[str]:
    return [name for name in names if importlib.util.find_spec(name) is None]


def missing_from_output(text: str) -> str | None:
    """The module a run died without ("No module named 'x'"), or None."""
    found = re.findall(r"No module named '([\w.]+)'", text)
    return found[-1].split(".")[0] if found else None


def last_error(text: str) -> str:
    """The last line that says what went wrong (a traceback's last line, an ``error:`` line)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^(error:|[\w.]*(Error|Exception)\b|AssertionError|FAILED|E\s)", line):
            return line[:160]
    return lines[-1][:160] if lines else ""


def outcome(check: Check, returncode: int | None, output: str, seconds: float, log: str,
            cuda: bool = True) -> Result:
    """A finished (or timed-out: returncode None) command -> its row (goals set for a GPU are judged on one)."""
    result = Result(check.name, "ok", goal=check.goal, seconds=round(seconds, 1), log=log)
    if returncode is None:
        result.status, result.note = "FAIL", f"timed out after {check.timeout:.0f} s"
        return result
    if returncode != 0:
        module = missing_from_output(output)
        result.status = f"missing {module}" if module else "FAIL"
        result.note = "" if module else last_error(output)
        return result
    if check.parse is not None:
        result.figure, met = check.parse(output)
        result.met = "" if met is None or (check.cuda_goal and not cuda) else ("yes" if met else "NO")
    elif check.figure:
        match = re.search(check.figure, output)
        result.figure = (match.group(1) if match.groups() else match.group(0)).strip() if match else "?"
    return result


def run_command(check: Check, context: Context) -> Result:
    log = context.out / f"{check.name.replace(' ', '_').replace('/', '_')}.log"
    started = time.monotonic()
    with open(log, "w") as handle:
        process = subprocess.Popen(check.command, cwd=context.out, env=context.env(), stdout=handle,
                                   stderr=subprocess.STDOUT, start_new_session=True, text=True)
        try:
            returncode = process.wait(timeout=min(check.timeout, max(5.0, context.left())))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            returncode = None
    return outcome(check, returncode, log.read_text(errors="replace"), time.monotonic() - started, log.name,
                   context.device == "cuda")


# --------------------------------------------------------------------------- the service


def serve_check(context: Context) -> Result:
    """``detzoo serve`` on the CUDA-trained checkpoint: ready, one image answered with detections, SIGTERM drains
    and exits 0."""
    check = Check("serve", needs=("starlette", "uvicorn", "multipart"))
    log = context.out / "serve.log"
    port = 18000 + os.getpid() % 1000
    started = time.monotonic()
    command = [context.python, "-m", "detzoo", "serve", str(context.data["checkpoint"]), "--port", str(port),
               "--device", context.device]
    with open(log, "w") as handle:
        process = subprocess.Popen(command, cwd=context.out, env=context.env(), stdout=handle,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        figure, problem = "", None
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    time.sleep(0.5)
            image = next(iter(sorted(Path(context.data["val_images"]).glob("*.jpg"))))
            request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/detect", data=image.read_bytes(),
                                             headers={"Content-Type": "image/jpeg"}, method="POST")
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = json.loads(response.read())
            figure = f"HTTP 200, {len(json.dumps(answer))} bytes of detections"
        except Exception as exc:  # noqa: BLE001 - any failure is this row's
            problem = f"{type(exc).__name__}: {exc}"
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                returncode = process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                returncode = process.wait()
    output = log.read_text(errors="replace")
    result = outcome(check, returncode if problem is None else 1, output, time.monotonic() - started, log.name)
    if problem and result.status == "FAIL":
        result.note = problem[:160] if returncode in (0, None) or not last_error(output) else last_error(output)
    result.figure = figure if result.status == "ok" else result.figure
    return result


# --------------------------------------------------------------------------- figures


def epoch_figure(output: str):
    match = re.search(r"epoch \d+/\d+\s+(.*?)\s+lr .*?([\d.]+) img/s", output)
    if not match:
        return "?", None
    loss = re.search(r"\bloss ([\d.naif]+)", match.group(1))
    finite = loss is not None and loss.group(1) not in ("nan", "inf")
    return f"loss {loss.group(1) if loss else '?'}, {match.group(2)} img/s", finite


def demo_figure(output: str):
    match = re.search(r"demo finished in ([\d.]+) min: val mAP@0.5 ([\d.na]+), mAP@\[.5:.95\] ([\d.na]+)", output)
    if not match:
        return "?", None
    minutes, map50, map_all = float(match.group(1)), float(match.group(2)), float(match.group(3))
    met = minutes <= 1.5 and map50 >= CPU_DEMO["mAP50"] and map_all >= CPU_DEMO["mAP"]
    return f"{minutes:.1f} min, mAP@0.5 {map50:.3f}, mAP {map_all:.3f}", met


def speed_figure(output: str):
    """bench_train's first row (ssd300_mobilenetv2): step and end-to-end img/s against the goals."""
    row = re.search(r"^ssd300_mobilenetv2\s+\d+\s+\S+\s+\d+\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", output, re.M)
    if not row:
        return "?", None
    step, e2e, share = (float(v) for v in row.groups())
    return f"ssd300_mobilenetv2 step {step:.0f}, e2e {e2e:.0f} img/s (e2e/step {share:.2f})", step >= 2500 and e2e >= 1500


def infer_figure(output: str):
    row = re.search(r"^compiled[^\n]*?\s([\d.]+)\s+(\d+)\s+(\d+)\s*$", output, re.M)
    if not row:
        return "?", None
    ms, _, many = float(row.group(1)), row.group(2), float(row.group(3))
    return f"compiled: batch 1 {ms:.2f} ms, large batch {many:.0f} img/s", ms <= 1.5 and many >= 6000


# --------------------------------------------------------------------------- the plan


def plan(context: Context, data: dict) -> list[list[Check]]:
    """The checks in three phases (each phase's checks run in parallel, the last phase's one at a time)."""
    py, cpu = context.python, context.device == "cpu"
    train = [py, "-m", "detzoo", "train", "ssd300_mobilenetv2", "model.input_size=128", f"data.train={data['train']}",
             "data.val=[]", "train.eval_every=0", "train.epochs=1", f"train.batch_size={8 if cpu else 32}",
             "train.channels_last=true", f"train.output={context.out / 'runs'}", f"train.device={context.device}",
             f"data.workers={1 if cpu else 2}"]  # several trainings share the CPUs (phase 1)
    ddp_processes = 1 if cpu else max(1, min(2, data.get("gpus", 1)))
    torchrun = [py, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ddp_processes}",
                *train[1:], "train.name=ddp"]
    run = context.out / "runs"
    checkpoint = str(run / "fp32" / "last.pt")
    trained = dict(after="train fp32")
    epoch = dict(parse=epoch_figure, goal="finite loss")
    phase1 = [
        Check("train fp32", [*train, "train.amp=none", "train.name=fp32"], **epoch),
        Check("train bf16", [*train, "train.amp=bf16", "train.name=bf16"], **epoch),
        Check("train fp16 + scaler", [*train, "train.amp=fp16", "train.name=fp16"], cuda_only=True, **epoch),
        Check("train data.decode=cuda", [*train, "train.amp=bf16", "data.decode=cuda", "train.name=decode"],
              cuda_only=True, **epoch),
        Check("train train.compile=true", [*train, "train.amp=bf16", "train.compile=true", "train.name=compiled"],
              cpu_note="minutes on a CPU; tests/test_compile.py covers it", timeout=240, **epoch),
        Check(f"torchrun x{ddp_processes} ({'gloo' if cpu else 'NCCL'})", torchrun, timeout=150, **epoch),
    ]
    metric = ["--metric", "coco"] if not missing_modules(["pycocotools"]) else ["--metric", "voc07"]
    cuda_tests = sorted(str(p) for p in (ROOT / "tests").glob("test_*.py") if "mark.cuda" in p.read_text())
    phase2 = [
        Check("eval bf16" + (" (voc07: no pycocotools)" if metric[1] == "voc07" else ""),
              [py, "-m", "detzoo", "eval", checkpoint, "--data", str(data["val"]), *metric, "--device",
               context.device, "--precision", "bf16", "--out", str(context.out / "eval")],
              figure=r"(mAP@\[[^\n]*|mAP[^\n]*)", **trained),
        Check("predict", [py, "-m", "detzoo", "predict", checkpoint, str(data["val_images"]), "--device",
                          context.device, "--out", str(context.out / "predict")],
              figure=r"(\d+ of \d+ image\(s\)[^\n]*?detection\(s\))", **trained),
        Check("serve", needs=("starlette", "uvicorn", "multipart"), **trained),
        Check("export ONNX of the CUDA-trained checkpoint",
              [py, "-m", "detzoo", "export", checkpoint, "--out", str(context.out / "model.onnx"),
               "--check-images", str(data["val_images"])], needs=("onnx", "onnxruntime"),
              figure=r"largest difference ([^;\n]*)", **trained),
        Check("tests marked cuda", [py, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "-o",
                                    "addopts=-ra", *cuda_tests], needs=("pytest",), cuda_only=True, timeout=240,
              figure=r"(\d+ passed[^\n]*)"),
    ]
    bench = [py, str(ROOT / "benchmarks" / "bench_train.py"), "--device", context.device, "--data", str(data["speed"])]
    bench += ["--models", "ssd300_mobilenetv2"] if cpu else ["--models", "ssd300_mobilenetv2", "ssd_vgg16",
                                                             "faster_rcnn_r50_fpn_dcn", "--steps", "50"]
    infer = [py, str(ROOT / "benchmarks" / "bench_infer.py"), "--device", context.device]
    infer += ["--repeats", "3"] if cpu else ["--precision", "bf16"]
    demo = [py, "-m", "detzoo", "demo", "--out", str(context.out / "demo"), *(["--quick"] if cpu else [])]
    phase3 = [
        Check("demo" + (" --quick" if cpu else ""), demo, needs=("pycocotools",), timeout=150 if not cpu else 600,
              parse=demo_figure, goal=f"<= 1.5 min, mAP@0.5 >= {CPU_DEMO['mAP50']}, mAP >= {CPU_DEMO['mAP']}",
              cuda_goal=True),
        Check("speed: bench_train.py", bench, timeout=150 if not cpu else 600, parse=speed_figure,
              goal="step >= 2500, e2e >= 1500 img/s", cuda_goal=True),
        Check("inference eager vs compiled", infer, timeout=120 if not cpu else 600, parse=infer_figure,
              goal="b1 <= 1.5 ms, b256 >= 6000 img/s", cuda_goal=True),
    ]
    return [phase1, phase2, phase3]


def run_check(check: Check, context: Context) -> Result:
    if context.device == "cpu" and (check.cuda_only or check.cpu_note):
        return Result(check.name, "skipped", note=check.cpu_note or "needs CUDA", goal=check.goal)
    missing = missing_modules(check.needs)
    if missing:
        return Result(check.name, f"missing {missing[0]}", goal=check.goal,
                      note="carry its wheel (docs/gpu.md)" if len(missing) == 1 else f"also {', '.join(missing[1:])}")
    if check.after:
        before = context.results.get(check.after)
        if before is None or before.status != "ok":
            return Result(check.name, "not run", note=f"needs '{check.after}'", goal=check.goal)
    if context.left() < 10:
        return Result(check.name, "not run (time)", note=f"{BUDGET_S[context.device]:.0f} s budget spent",
                      goal=check.goal)
    if check.name == "serve":
        return serve_check(context)
    return run_command(check, context)


def prepare_data(context: Context, coco128: Path | None) -> dict:
    """The demo's shapes (256 train + 64 val at 128 px), and what the speed table reads."""
    sys.path.insert(0, str(ROOT / "src"))
    from detzoo.data.synthetic import make_shapes_dataset

    cpu = context.device == "cpu"  # the CPU mode tests the script: 4 steps an epoch
    train, val = make_shapes_dataset(context.out / "data", train=32 if cpu else 256, val=16 if cpu else 64, size=128)
    data = {"train": train, "val": val, "val_images": train.parent.parent / "val", "speed": coco128 or train}
    import torch

    data["gpus"] = torch.cuda.device_count()
    return data


def environment_rows(context: Context) -> list[Result]:
    import torch

    rows = [Result("environment", "ok", figure=f"torch {torch.__version__}, Python {sys.version.split()[0]}")]
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        rows[0].figure += f", {torch.cuda.device_count()} x {name}, bf16 {torch.cuda.is_bf16_supported()}"
    elif context.device != "cpu":
        rows[0].status, rows[0].note = "FAIL", "no CUDA GPU visible to torch (use --device cpu for the CPU mode)"
    for module in missing_modules(["torchvision", "cv2", "yaml", "tqdm", "matplotlib", "pycocotools", "onnx",
                                   "onnxruntime", "starlette", "uvicorn", "multipart", "pytest", "hypothesis"]):
        rows.append(Result(f"module {module}", f"missing {module}", note="rows that need it say so"))
    return rows


def print_results(results: list[Result]) -> None:
    header = ["check", "status", "figure", "goal", "met", "s", "note / log"]
    rows = [[r.check, r.status, r.figure, r.goal, r.met, f"{r.seconds:.0f}" if r.seconds else "",
             r.note or r.log] for r in results]
    widths = [max(len(h), *(len(str(row[i])) for row in rows)) for i, h in enumerate(header)]
    print("\ndetzoo GPU check")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))


def _relative(path: Path) -> str:
    """``path`` relative to the folder the check runs in (as given where there is no relative path)."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="folder for logs and results.json (default: a temporary one)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--data", type=Path, help="coco128 for the speed table (default: $DETZOO_DATA/coco128 or "
                                                  "../shared/data/coco128; else the generated shapes)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan as the table; run nothing")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="detzoo-gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    context = Context(out.resolve(), args.device)
    coco128 = args.data or Path(os.environ.get("DETZOO_DATA", ROOT.parent / "shared" / "data")) / "coco128"
    coco128 = coco128 if (coco128 / "annotations").is_dir() else None
    if args.dry_run:
        fake = {"train": "TRAIN.json", "val": "VAL.json", "val_images": "VAL_IMAGES", "speed": coco128 or "TRAIN.json"}
        results = [Result(c.name, "dry run", goal=c.goal, note=" ".join(c.command[1:6]) if c.command else "in-process")
                   for phase in plan(context, fake) for c in phase]
        print_results(results)
        return 0
    results = environment_rows(context)
    if results[0].status == "ok":
        context.data = prepare_data(context, coco128)
        context.data["checkpoint"] = out / "runs" / "fp32" / "last.pt"
        for number, phase in enumerate(plan(context, context.data)):
            parallel = number < 2 and context.device == "cuda"
            with ThreadPoolExecutor(max_workers=len(phase) if parallel else 1) as pool:
                for check, result in zip(phase, pool.map(lambda c: run_check(c, context), phase)):
                    context.results[check.name] = result
                    results.append(result)
        for name in ("speed: bench_train.py", "inference eager vs compiled"):
            result = context.results.get(name)
            if result is not None and result.log:  # the benchmarks' own tables, above the summary
                print((out / result.log).read_text(errors="replace"))
    (out / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=1))
    print_results(results)
    print(f"\nlogs and results.json: {_relative(out)}; {time.monotonic() - context.start:.0f} s in all")
    return 0 if all(r.status in ("ok", "skipped") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
