"""Check every image of a dataset before any work is spent on it: the pre-flight of training (its training and
validation splits), ``detzoo eval`` and ``detzoo predict``.

**What is read of each file** (``examine``): the header through Pillow - format, stored size, EXIF orientation
(``Image.open`` parses only the segments before the image data) - and the file's last 12 bytes, which tell
whether it ends as its format requires: a JPEG with its end-of-image marker, a PNG with its IEND chunk, a GIF
with its trailer, a WebP or BMP at the length its header gives. A file that does not is decoded once by
``image_files.decode_image``, the rule every reader applies: a JPEG missing only its last bytes is repaired
(named here), anything else it cannot use is named. Other formats (TIFF, ...) are decoded once. So a truncated
file - the common damage of an interrupted copy or download - and an image whose size differs from its
annotation are named, all of them at once, before the first step. Not seen: damage inside the image data of a
file that ends whole; the loader names it when it meets it (one line, and training keeps its state).

**Cache.** What is learnt about a file (not the verdict against an annotation) is kept by (path, size,
modification time) in one JSON file per image folder under the user's cache folder
(``common.files.cache_folder``), so a rerun, a resume or another annotation file over the same images reads
only file metadata. Not beside the dataset (often read-only, or shared) nor in the run folder (a new run has
none yet, and the next run would not find it). An unwritable cache only costs the next check its time.

**Duplicates across splits** (``cross_split_duplicates``): a validation image identical to a training image
inflates the validation metric. Only files whose byte size occurs in both splits can be identical, so only
those are hashed (SHA-256, ``image_files.file_digest``, as ``detzoo inspect`` hashes; the digest is cached).

Files are examined by a thread pool: Pillow's decoding and file reads release the GIL.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple, dataclass, field
from hashlib import sha256
from pathlib import Path

from PIL import Image

from ..common.device import available_cpus
from ..common.errors import DataError
from ..common.files import cache_folder, write_text
from .image_files import JPEG_END, JPEG_FORMATS, decode_image, file_digest, not_found, read_tail, size_problem
from .records import DetectionData, upright_size

CACHE_VERSION = 1
CACHE_SUBFOLDER = "image-checks"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk: length 0, type, CRC
TAIL_BYTES = len(PNG_END)
SHOWN = 10  # lines of a warning (repairs, skipped images, duplicates); the rest are counted


@dataclass
class FileFacts:
    """What one file is, whatever an annotation says about it (cached)."""

    size: int
    mtime_ns: int
    format: str | None = None
    stored: tuple[int, int] | None = None  # (width, height) of the stored pixels
    upright: tuple[int, int] | None = None  # (width, height) as shown (EXIF applied); None: not read (a PNG)
    problem: str | None = None  # why the file cannot be used at all
    repair: str | None = None  # a truncated JPEG repaired
    digest: str | None = None  # SHA-256, computed only where a duplicate is possible


@dataclass
class Findings:
    """The outcome of a check: per split, the records that cannot be used; the repairs; the duplicates."""

    problems: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # split -> (record index, message)
    repairs: list[str] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (image, identical image of the other split)
    duplicates_of: tuple[str, str] | None = None  # the two splits compared
    sizes: dict[str, int] = field(default_factory=dict)  # split -> images listed
    sources: dict[str, str] = field(default_factory=dict)  # split -> where it was read (for the inspect hint)
    files: int = 0  # distinct files checked
    cached: int = 0  # of which known from the cache
    seconds: float = 0.0
    cache_error: str | None = None


def examine(path: Path, stat: os.stat_result) -> FileFacts:
    """Header and end of one file (see the module docstring); a full decode only when the end is not whole."""
    facts = FileFacts(stat.st_size, stat.st_mtime_ns)
    try:
        with open(path, "rb") as handle:
            head = handle.read(TAIL_BYTES)
            tail = read_tail(handle, TAIL_BYTES)
            with Image.open(handle) as image:
                facts.format, facts.stored = image.format, image.size
                # Pillow finds a PNG's EXIF only by decoding the image when no eXIf chunk precedes the image data
                facts.upright = None if image.format == "PNG" and "exif" not in image.info else upright_size(image)
    except (OSError, SyntaxError, ValueError):  # the decoder's message says it in the words training uses
        facts.problem = _decode_problem(path) or f"{path}: not a readable image"
        return facts
    if not ends_whole(facts.format, head, tail, stat.st_size):
        try:
            facts.repair = decode_image(path).repair
        except DataError as exc:
            facts.problem = str(exc)
    return facts


def ends_whole(format: str | None, head: bytes, tail: bytes, size: int) -> bool:
    """Whether a file ends where its format says it ends (False: no cheap way to tell)."""
    if format in JPEG_FORMATS:
        return tail.endswith(JPEG_END)
    if format == "PNG":
        return tail == PNG_END
    if format == "GIF":
        return tail.endswith(b";")
    if format == "WEBP":  # RIFF: the length of what follows the first 8 bytes
        return int.from_bytes(head[4:8], "little") + 8 <= size
    if format == "BMP":  # bfSize: the file's length (0 when the writer left it out)
        return 0 < int.from_bytes(head[2:6], "little") <= size
    return False


def _decode_problem(path: Path) -> str | None:
    try:
        decode_image(path)
    except DataError as exc:
        return str(exc)
    return None


def default_threads() -> int:
    """Threads of the check: 4 per CPU (up to 16), so that waiting for a disk or a network file system overlaps;
    the parsing itself holds the GIL."""
    return min(16, 4 * available_cpus())


class FactsCache:
    """One JSON file per image folder under ``root`` (None: no cache): {"version", "folder", "files": {name:
    [size, mtime_ns, format, stored, upright, problem, repair, digest]}}. Paths are absolute strings (pathlib's
    parsing cost more than the rest of a cached file's check)."""

    def __init__(self, root: Path | None):
        self.root = root / CACHE_SUBFOLDER if root is not None else None
        self.folders: dict[str, dict[str, list]] = {}
        self.changed: set[str] = set()
        self.error: str | None = None

    def _file(self, folder: str) -> Path:
        return self.root / f"{sha256(folder.encode()).hexdigest()[:24]}.json"

    def load(self, folders: set[str]) -> None:
        for folder in folders - self.folders.keys():
            self.folders[folder] = {}
            if self.root is None:
                continue
            try:
                document = json.loads(self._file(folder).read_text())
            except (OSError, ValueError):
                continue
            if document.get("version") == CACHE_VERSION and document.get("folder") == folder:
                self.folders[folder] = document.get("files", {})

    def get(self, path: str, stat: os.stat_result) -> FileFacts | None:
        folder, name = os.path.split(path)
        row = self.folders.get(folder, {}).get(name)
        if not row or row[0] != stat.st_size or row[1] != stat.st_mtime_ns:
            return None
        size, mtime_ns, format, stored, upright, problem, repair, digest = row
        return FileFacts(size, mtime_ns, format, tuple(stored) if stored else None,
                         tuple(upright) if upright else None, problem, repair, digest)

    def put(self, path: str, facts: FileFacts) -> None:
        folder, name = os.path.split(path)
        self.folders.setdefault(folder, {})[name] = list(astuple(facts))
        self.changed.add(folder)

    def save(self) -> None:
        if self.root is None:
            return
        for folder in self.changed:
            document = {"version": CACHE_VERSION, "folder": folder, "files": self.folders[folder]}
            try:
                write_text(self._file(folder), json.dumps(document, separators=(",", ":")))
            except OSError as exc:
                self.error = f"the image-check cache {self.root} is not writable ({exc}); the next run checks again"
                return
        self.changed.clear()


def _facts_of(paths: list[str], cache: FactsCache, pool: ThreadPoolExecutor,
              threads: int) -> tuple[dict[str, FileFacts], int]:
    """Facts of every existing file (a missing one has none), from the cache where size and mtime still match;
    also how many came from the cache."""
    def one(path: str) -> tuple[str, FileFacts | None, bool]:
        try:
            stat = os.stat(path)
        except OSError:
            return path, None, False
        cached = cache.get(path, stat)
        return (path, cached, True) if cached else (path, examine(Path(path), stat), False)

    # a few paths per task: one future per file would cost as much as a cached file's check
    size = max(1, min(256, len(paths) // (4 * threads)))
    chunks = [paths[start: start + size] for start in range(0, len(paths), size)]
    facts, hits = {}, 0
    for path, found, hit in (item for chunk in pool.map(lambda part: [one(p) for p in part], chunks)
                             for item in chunk):
        if found is None:
            continue
        facts[path] = found
        hits += hit
        if not hit:
            cache.put(path, found)
    return facts, hits


def check_splits(splits: dict[str, DetectionData], workers: int | None = None, cache_root: Path | None = None,
                 duplicates_of: tuple[str, str] | None = None) -> Findings:
    """Check every image of each named split (``{"training": data, "validation": data}``) against its
    annotation; with ``duplicates_of`` = (split, other split), also find the images of the first identical to
    images of the second. ``cache_root``: the cache's folder (default ``common.files.cache_folder()``)."""
    entries = {split: [(r.path, r.origin, (r.width, r.height)) for r in data.records] for split, data in splits.items()}
    findings = check_entries(entries, workers, cache_root, duplicates_of)
    findings.sources = {split: data.source for split, data in splits.items()}
    return findings


def check_files(paths: list[Path], name: str = "input", workers: int | None = None,
                cache_root: Path | None = None) -> Findings:
    """Check image files that have no annotation (``detzoo predict``'s)."""
    return check_entries({name: [(path, None, None) for path in paths]}, workers, cache_root)


def check_entries(entries: dict[str, list[tuple[Path, str | None, tuple[int, int] | None]]],
                  workers: int | None = None, cache_root: Path | None = None,
                  duplicates_of: tuple[str, str] | None = None) -> Findings:
    """The check itself, over (path, where it is listed, annotated (width, height) or None) per split."""
    started = time.perf_counter()
    findings = Findings(sizes={split: len(found) for split, found in entries.items()})
    paths = {split: [os.path.abspath(path) for path, _, _ in found] for split, found in entries.items()}
    unique = list(dict.fromkeys(p for split_paths in paths.values() for p in split_paths))
    cache = FactsCache(cache_root if cache_root is not None else cache_folder())
    cache.load({os.path.dirname(p) for p in unique})
    threads = workers or default_threads()
    with ThreadPoolExecutor(threads) as pool:
        facts, findings.cached = _facts_of(unique, cache, pool, threads)
        if duplicates_of is not None:
            first, second = (paths.get(name, []) for name in duplicates_of)
            findings.duplicates = cross_split_duplicates(first, second, facts, cache, pool)
            findings.duplicates_of = duplicates_of
    cache.save()
    findings.files, findings.cache_error = len(unique), cache.error
    repaired = set()
    for split, found_entries in entries.items():
        findings.problems[split] = []
        for index, ((path, origin, size), absolute) in enumerate(zip(found_entries, paths[split])):
            found = facts.get(absolute)
            if found is None:
                problem = not_found(path, origin)
            else:
                problem = found.problem or _size_problem(path, found, size, origin)
            if problem:
                findings.problems[split].append((index, problem))
            elif found.repair and absolute not in repaired:
                repaired.add(absolute)
                findings.repairs.append(found.repair)
    findings.seconds = time.perf_counter() - started
    return findings


def _size_problem(path: Path, facts: FileFacts, size: tuple[int, int] | None, origin: str | None) -> str | None:
    """The loader's size rule on a file's facts; where the orientation was not read (a PNG whose EXIF could follow
    its image data) and the stored size differs from the annotation, the decoder itself decides."""
    if facts.upright is not None or size is None or tuple(size) == tuple(facts.stored):
        return size_problem(path, facts.stored, facts.upright or facts.stored, size, origin)
    try:
        decode_image(path, origin=origin, size=size)
    except DataError as exc:
        return str(exc)
    return None


def cross_split_duplicates(first: list[str], second: list[str], facts: dict[str, FileFacts], cache: FactsCache,
                           pool: ThreadPoolExecutor) -> list[tuple[str, str]]:
    """(image of ``first``, an identical image of ``second``) pairs: the same file, or the same bytes (hashed
    only where the byte sizes match)."""
    by_size: dict[int, list[str]] = defaultdict(list)
    for path in dict.fromkeys(second):
        if path in facts:
            by_size[facts[path].size].append(path)
    candidates = [p for p in dict.fromkeys(first) if p in facts and facts[p].size in by_size]
    need: set[str] = set()
    for path in candidates:
        others = [q for q in by_size[facts[path].size] if q != path]
        if others:  # (the same path listed in both splits needs no hashing)
            need.update([path, *others])
    missing = [p for p in need if facts[p].digest is None]
    for path, digest in zip(missing, pool.map(_digest_or_none, missing)):
        facts[path].digest = digest
        cache.put(path, facts[path])
    pairs = []
    for path in candidates:
        same = [q for q in by_size[facts[path].size]
                if q == path or (facts[q].digest is not None and facts[q].digest == facts[path].digest)]
        if same:
            pairs.append((path, path if path in same else same[0]))
    return pairs


def _digest_or_none(path: str) -> str | None:
    try:
        return file_digest(path)
    except OSError:
        return None


def apply_findings(findings: Findings, skip_bad: bool, hint: str, splits: dict[str, DetectionData] | None = None,
                   log=print) -> None:
    """Act on a check: a line saying what was checked, warnings naming the repairs and the duplicates; the
    images that cannot be used raise one DataError naming every one of them (``hint``: the command's way to
    leave them out), or with ``skip_bad`` are dropped from their split in ``splits`` and counted."""
    counts = ", ".join(f"{len(findings.problems.get(s, []))} of {n} {s}" for s, n in findings.sizes.items())
    # (a file listed in two splits is named once)
    messages = list(dict.fromkeys(message for found in findings.problems.values() for _, message in found))
    cached = f", {findings.cached} from the cache" if findings.cached else ""
    log(f"checked {findings.files} image file(s) (header, EXIF orientation, end of file) in {findings.seconds:.2f} s"
        f"{cached}")
    if findings.cache_error:
        log(f"warning: {findings.cache_error}")
    if findings.repairs:
        log(_listed(f"warning: repaired {len(findings.repairs)} truncated JPEG(s) (decoded from the data they hold, "
                    "see docs/data.md: Data problems)", findings.repairs))
    if findings.duplicates:
        log(_duplicates_warning(findings))
    if not messages:
        return
    if not skip_bad:
        source = next((findings.sources[split] for split, found in findings.problems.items()
                       if found and split in findings.sources), None)
        if source:
            hint += f"; `detzoo inspect --data {source}` lists every problem of a dataset"
        raise DataError(f"{len(messages)} image(s) cannot be used ({counts}); {hint}:\n  " + "\n  ".join(messages))
    for split, data in (splits or {}).items():
        dropped = {index for index, _ in findings.problems.get(split, [])}
        if dropped:
            data.records = [r for i, r in enumerate(data.records) if i not in dropped]
            data.skipped += len(dropped)
            data.problems += [m for _, m in findings.problems[split]]
    log(_listed(f"warning: left out {len(messages)} image(s) that cannot be used ({counts})", messages))


def _listed(title: str, lines: list[str]) -> str:
    more = [f"and {len(lines) - SHOWN} more"] if len(lines) > SHOWN else []
    return title + ":\n  " + "\n  ".join(lines[:SHOWN] + more)


def _duplicates_warning(findings: Findings) -> str:
    first, second = findings.duplicates_of
    pairs, total = findings.duplicates, findings.sizes[first]
    which = f"all {total}" if len(pairs) == total else f"{len(pairs)} of {total}"
    title = (f"warning: {which} {first} image(s) are also {second} images (the same file or the same bytes): a leak "
             f"that inflates the {first} metric")
    if len(pairs) == total:
        return title
    return _listed(title, [f"{a} (listed in both)" if a == b else f"{a} = {b}" for a, b in pairs])
