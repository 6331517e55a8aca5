"""The datasets detzoo can fetch (``detzoo data get NAME``): coco128 and microcontroller, the real data of the
test suite, each described by a manifest shipped with the package (``data/catalog/<name>.json``) that lists
every file with its public URL, size and SHA-256, and the published archives some files are built from.

Where a dataset is looked for, first hit wins (``find_dataset``; the tests use the same lookup):

1. ``$DETZOO_DATA/<name>`` when the variable is set;
2. ``shared/data/<name>`` beside a source checkout (``../shared/data`` from the repository root: this project's
   development machines and CI);
3. the download cache, ``<platform cache>/detzoo/data/<name>`` (``~/.cache/detzoo/data`` on Linux).

``get_dataset`` downloads into ``$DETZOO_DATA`` when set, else the cache. Everything is built in a hidden
temporary folder beside the target and renamed into place once every file checked out, so the dataset folder
is complete or absent - never half there. A finished dataset is reused, never fetched again.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..common.errors import DataError
from ..common.files import write_json
from .derived import content_sha256, convert_member
from .download import download, sha256_file

CATALOG = Path(__file__).with_name("catalog")
DATA_ENV = "DETZOO_DATA"
MARKER = ".detzoo-data.json"  # written last into a dataset detzoo fetched
PARTIAL = ".partial-"
DOWNLOADS = ".downloads"
THREADS = 8  # files downloaded at once


@dataclass(frozen=True)
class RemoteFile:
    path: str  # inside the dataset folder
    url: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ArchiveMember:
    member: str  # name inside the archive
    path: str  # inside the dataset folder
    sha256: str | None = None  # of the member as it is (no conversion)
    convert: str | None = None  # a conversion of ``derived.py``; its result is checked by ``content_sha256``
    content_sha256: str | None = None
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Archive:
    url: str
    size: int
    sha256: str
    members: list[ArchiveMember]
    checksum_source: str = ""  # where the published SHA-256 comes from


@dataclass(frozen=True)
class Manifest:
    name: str
    description: str
    license: str
    files: list[RemoteFile]
    archives: list[Archive] = field(default_factory=list)
    source: str = ""  # where the files are published

    @property
    def download_bytes(self) -> int:
        return sum(f.size for f in self.files) + sum(a.size for a in self.archives)

    @classmethod
    def from_dict(cls, data: dict, where: str) -> Manifest:
        try:
            archives = [Archive(a["url"], a["size"], a["sha256"],
                                [ArchiveMember(**m) for m in a["members"]], a.get("checksum_source", ""))
                        for a in data.get("archives", [])]
            manifest = cls(data["name"], data["description"], data["license"],
                           [RemoteFile(**f) for f in data["files"]], archives, data.get("source", ""))
        except (KeyError, TypeError) as exc:
            raise DataError(f"{where}: not a dataset manifest ({type(exc).__name__}: {exc})") from None
        for path in [f.path for f in manifest.files] + [m.path for a in archives for m in a.members]:
            if Path(path).is_absolute() or ".." in Path(path).parts:
                raise DataError(f"{where}: file path '{path}' leaves the dataset folder")
        return manifest


def dataset_names() -> list[str]:
    return sorted(p.stem for p in CATALOG.glob("*.json"))


def manifest(name: str) -> Manifest:
    path = CATALOG / f"{name}.json"
    if not path.is_file():
        raise DataError(f"unknown dataset '{name}' (detzoo fetches: {', '.join(dataset_names())})")
    return Manifest.from_dict(json.loads(path.read_text()), str(path))


def _checkout_shared_data() -> Path | None:
    """``shared/data`` beside the source checkout this module runs from (None for an installed package)."""
    root = Path(__file__).resolve().parents[3]
    return root.parent / "shared" / "data" if (root / "pyproject.toml").is_file() else None


def cache_root() -> Path:
    """Where ``get_dataset`` puts datasets: ``$DETZOO_DATA``, else the platform's cache folder."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("detzoo")) / "data"


def search_roots() -> list[Path]:
    """The folders datasets are looked for in, first hit wins (module docstring)."""
    roots = [Path(os.environ[DATA_ENV]).expanduser()] if os.environ.get(DATA_ENV) else []
    shared = _checkout_shared_data()
    roots += [shared] if shared is not None else []
    roots.append(cache_root())
    return list(dict.fromkeys(roots))


def find_dataset(name: str) -> Path | None:
    for root in search_roots():
        if (root / name).is_dir():
            return root / name
    return None


def get_dataset(name_or_manifest: str | Manifest, root: str | Path | None = None, mirror: str | None = None,
                log=print) -> Path:
    """The dataset's folder: found (``find_dataset``; with ``root`` given only there), or downloaded into
    ``root`` (default ``cache_root()``), verified and renamed into place. ``mirror``: a base URL serving each
    file at ``MIRROR/host/path`` (air-gapped machines, tests). DataError in one line when a file cannot be
    fetched or does not check out; nothing of the attempt is left behind but verified archive downloads, which
    the next attempt reuses."""
    spec = name_or_manifest if isinstance(name_or_manifest, Manifest) else manifest(name_or_manifest)
    root = Path(root) if root is not None else None
    found = find_dataset(spec.name) if root is None else root / spec.name if (root / spec.name).is_dir() else None
    if found is not None:
        log(f"{spec.name}: {found}")
        return found
    root = root or cache_root()
    root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_builds(root, spec.name)
    log(f"{spec.name}: downloading {len(spec.files) + len(spec.archives)} file(s), "
        f"{spec.download_bytes / 1e6:.1f} MB, into {root / spec.name}")
    build = Path(tempfile.mkdtemp(prefix=f".{spec.name}{PARTIAL}{os.getpid()}-", dir=root))
    try:
        archives = [_fetch_archive(archive, root / DOWNLOADS, mirror) for archive in spec.archives]
        for archive, path in zip(spec.archives, archives):
            _unpack(archive, path, build)
        _fetch_files(spec.files, build, mirror)
        write_json({"name": spec.name, "fetched": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "files": len(spec.files) + sum(len(a.members) for a in spec.archives)}, build / MARKER)
        os.replace(build, root / spec.name)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    for path in archives:  # verified and used: not needed any more
        path.unlink(missing_ok=True)
    log(f"{spec.name}: {root / spec.name}")
    return root / spec.name


def _remove_abandoned_builds(root: Path, name: str) -> None:
    """Temporary folders of a build whose process is gone (killed): never half a dataset left lying around."""
    for folder in root.glob(f".{name}{PARTIAL}*"):
        pid = folder.name.removeprefix(f".{name}{PARTIAL}").split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fetch_archive(archive: Archive, folder: Path, mirror: str | None) -> Path:
    """A verified copy of the archive (one already there from an earlier attempt is checked and reused)."""
    path = folder / Path(archive.url).name
    if path.is_file() and path.stat().st_size == archive.size and sha256_file(path) == archive.sha256:
        return path
    return download(archive.url, path, archive.sha256, archive.size, mirror)


def _unpack(archive: Archive, path: Path, build: Path) -> None:
    where = f"{archive.url} ({path.name})"
    try:
        with zipfile.ZipFile(path) as zipped:
            names = set(zipped.namelist())
            for member in archive.members:
                if member.member not in names:
                    raise DataError(f"{where}: the archive has no {member.member}")
                target = build / member.path
                target.parent.mkdir(parents=True, exist_ok=True)
                with zipped.open(member.member) as handle:
                    if member.convert:
                        _write_converted(member, handle, target, f"{where}: {member.member}")
                        continue
                    with open(target, "wb") as out:
                        shutil.copyfileobj(handle, out)
                if member.sha256 and sha256_file(target) != member.sha256:
                    raise DataError(f"{where}: {member.member} does not have the SHA-256 the manifest lists")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError) as exc:
        raise DataError(f"{where}: cannot unpack ({type(exc).__name__}: {exc})") from None


def _write_converted(member: ArchiveMember, handle, target: Path, where: str) -> None:
    converted = convert_member(member.convert, handle, member.options, where)
    if member.content_sha256 and content_sha256(json.loads(converted)) != member.content_sha256:
        raise DataError(f"{where}: the converted {member.path} differs from the one the manifest describes "
                        "(content SHA-256)")
    target.write_bytes(converted)


def _fetch_files(files: list[RemoteFile], build: Path, mirror: str | None) -> None:
    from tqdm import tqdm

    with tqdm(total=sum(f.size for f in files), unit="B", unit_scale=True, disable=None) as bar:
        def fetch(remote: RemoteFile) -> Path:
            return download(remote.url, build / remote.path, remote.sha256, remote.size, mirror, bar.update)

        pool = ThreadPoolExecutor(THREADS)
        try:
            for _ in pool.map(fetch, files):  # the first failure is raised here, in order
                pass
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # after a failure: no more downloads start
