"""A pip-installed detzoo works outside the checkout (issue 9, item 7): build the wheel, install it into a
fresh virtual environment and run `detzoo models` and a one-step `detzoo train RECIPE` from an empty folder.

The fresh environment reuses this interpreter's installed packages (torch, torchvision, ...) through a .pth
file naming their folder; a plain folder line adds no .pth files of its own, so this checkout's editable
install is not seen and detzoo can only come from the wheel. Nothing is downloaded."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from detzoo.data.synthetic import make_shapes_dataset

ROOT = Path(__file__).resolve().parents[1]


def _run(args, cwd, env=None):
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_wheel_installs_and_trains_from_an_empty_folder(tmp_path):
    # build from a copy, so the checkout gets no build/ or egg-info
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w",
          tmp_path / "dist", source], cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("detzoo-*.whl"))

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)  # ensurepip takes seconds
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel],
         cwd=tmp_path)
    # only now the installed packages of this interpreter (pip would otherwise see this checkout's detzoo)
    site_packages = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              cwd=tmp_path).strip())
    shared = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site_packages / "shared_packages.pth").write_text("\n".join(shared) + "\n")

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    where = _run([python, "-c", "import detzoo; print(detzoo.__file__)"], cwd=empty, env=env)
    assert Path(where.strip()).is_relative_to(venv)  # the wheel's detzoo, not the checkout's

    assert "ssd300_mobilenetv2" in _run([bin_dir / "detzoo", "models"], cwd=empty, env=env).split()
    listed = _run([bin_dir / "detzoo", "data", "list"], cwd=empty, env=env)  # the manifests are package data
    assert "coco128: the first 128 images" in listed and "microcontroller: " in listed
    train_json, _ = make_shapes_dataset(tmp_path / "shapes", train=2, val=1, size=64)
    _run([bin_dir / "detzoo", "train", "ssd300_mobilenetv2", f"data.train={train_json}", "data.val=[]",
          "train.max_steps=1", "train.epochs=1", "model.input_size=96", "train.batch_size=2", "data.workers=0",
          "train.name=one"], cwd=empty, env=env)
    assert (empty / "runs" / "one" / "last.pt").is_file()
