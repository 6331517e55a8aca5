"""`detzoo data get` (issue 18): each file from its public URL, checked (size, SHA-256), built in a hidden folder
and renamed into place; reused afterwards. No internet here: the download code runs against an HTTP server on
127.0.0.1 (`--mirror`), which serves the real files of ../shared/data where the manifests describe them, and
archives the tests make."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from detzoo.cli import main
from detzoo.common.errors import DataError
from detzoo.data import catalog, download
from detzoo.data.catalog import Archive, ArchiveMember, Manifest, RemoteFile, get_dataset, manifest
from detzoo.data.derived import content_sha256, convert_member


class Server:
    """Serves ``files`` (URL path -> bytes) on 127.0.0.1; paths in ``truncate`` get the full Content-Length but
    only half the bytes before the connection closes. ``requests`` lists every path asked for."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the standard library's name)
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if self.path in server.truncate else body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def publish(self, url: str, body: bytes) -> None:
        """Serve ``body`` where ``--mirror`` looks for ``url``: /host/path."""
        parts = urlsplit(url)
        self.files[f"/{parts.netloc}{parts.path}"] = body

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    served = Server()
    yield served
    served.close()


@pytest.fixture(autouse=True)
def no_retry_wait(monkeypatch):
    monkeypatch.setattr(download, "RETRY_DELAY_S", 0.0)


def _sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _leftovers(root: Path) -> list[str]:
    """What lies under ``root`` besides finished datasets: partial builds, downloads."""
    relative = [p.relative_to(root) for p in root.rglob("*")]
    return sorted(str(p) for p in relative if p.parts[0].startswith(".") and p != Path(catalog.DOWNLOADS))


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): _sha(p.read_bytes()) for p in folder.rglob("*")
            if p.is_file() and p.name != catalog.MARKER}


# --------------------------------------------------------------------------- the real manifests


@pytest.mark.parametrize("name", catalog.dataset_names())
def test_manifest_describes_the_local_copy_byte_for_byte(name, request):
    """Every file a manifest lists has that size and SHA-256 in ../shared/data (the copy the tests use), and
    the coco128 annotation file has the content SHA-256 the conversion is checked against."""
    folder = request.getfixturevalue({"coco128": "coco128", "microcontroller": "micro"}[name])
    spec = manifest(name)
    local = _tree(folder)
    listed = {f.path: f.sha256 for f in spec.files}
    for archive in spec.archives:
        for member in archive.members:
            listed[member.path] = None
            if member.content_sha256:
                data = json.loads((folder / member.path).read_text())
                assert content_sha256(data) == member.content_sha256
    assert set(listed) == set(local)
    assert all(local[path] == sha for path, sha in listed.items() if sha is not None)
    assert all((folder / f.path).stat().st_size == f.size for f in spec.files)


def test_coco_subset_rebuilds_the_annotation_file_from_a_larger_shuffled_source(coco128_json):
    """The conversion applied to a superset in another order (as instances_train2017.json is) gives the same
    bytes as the local file, so its content SHA-256 matches."""
    original = coco128_json.read_bytes()
    data = json.loads(original)
    member = manifest("coco128").archives[0].members[0]
    source = {**data, "images": data["images"][::-1] + [{"id": 10**9, "file_name": "other.jpg"}],
              "annotations": data["annotations"] + [{"id": 10**9, "image_id": 10**9, "bbox": [0, 0, 1, 1]}]}
    converted = convert_member("coco_subset", io.BytesIO(json.dumps(source).encode()), member.options, "test")
    assert converted == original
    assert content_sha256(json.loads(converted)) == member.content_sha256


def test_get_microcontroller_through_the_mirror_then_reuse(server, micro, tmp_path, capsys):
    """The real manifest end to end: 300 files over HTTP, verified, renamed into place; a second call is
    answered from the folder without a request."""
    spec = manifest("microcontroller")
    for remote in spec.files:
        server.publish(remote.url, (micro / remote.path).read_bytes())
    root = tmp_path / "cache"
    assert main(["data", "get", "microcontroller", "--root", str(root), "--mirror", server.url]) == 0
    assert _tree(root / "microcontroller") == _tree(micro)
    assert (root / "microcontroller" / catalog.MARKER).is_file() and _leftovers(root) == []
    asked = len(server.requests)
    assert asked == len(spec.files)
    assert main(["data", "get", "microcontroller", "--root", str(root), "--mirror", server.url]) == 0
    assert len(server.requests) == asked
    assert capsys.readouterr().out.splitlines()[-1] == f"microcontroller: {root / 'microcontroller'}"


def test_coco128_refuses_an_annotation_archive_that_is_not_the_published_one(server, tmp_path, capsys):
    """A test-made zip where COCO's annotations_trainval2017.zip should be: refused in one line (no retry: the
    file arrived whole, it is the wrong one), before any image is fetched; nothing is left."""
    archive = manifest("coco128").archives[0]
    body = _zip({"annotations/instances_train2017.json": b"{}"})
    server.publish(archive.url, body)
    root = tmp_path / "cache"
    assert main(["data", "get", "coco128", "--root", str(root), "--mirror", server.url]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "annotations_trainval2017.zip" in error
    assert f"{len(body)} bytes instead of {archive.size}: not the file expected" in error
    assert len(server.requests) == 1
    assert not (root / "coco128").exists() and _leftovers(root) == []


# --------------------------------------------------------------------------- a dataset made by the test


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zipped:  # stored: a test can alter a member
        for name, body in members.items():
            zipped.writestr(name, body)
    return buffer.getvalue()


COCO = {"info": {"description": "test"}, "categories": [{"id": 1, "name": "thing"}],
        "images": [{"id": 3, "file_name": "c.jpg"}, {"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
        "annotations": [{"id": 7, "image_id": 2, "bbox": [1, 1, 2, 2]}, {"id": 5, "image_id": 1, "bbox": [0, 0, 1, 1]},
                        {"id": 6, "image_id": 3, "bbox": [0, 0, 3, 3]}]}
SUBSET = {**COCO, "images": [COCO["images"][1], COCO["images"][2]], "annotations": COCO["annotations"][:2]}


def _made_dataset(server: Server, archive_body: bytes | None = None, archive_sha: str | None = None):
    """A manifest of two plain files and a zip holding a COCO file to cut down and a file kept as it is; the
    server publishes all of it at example.org URLs."""
    readme = b"kept as it is\n"
    body = _zip({"annotations/full.json": json.dumps(COCO).encode(), "README": readme})
    images = {"images/a.jpg": b"A" * 1000, "images/b.jpg": b"B" * 3000}
    files = [RemoteFile(path, f"https://example.org/{path}", len(data), _sha(data)) for path, data in images.items()]
    archive_body = body if archive_body is None else archive_body
    archive = Archive("https://example.org/archive.zip", len(archive_body), archive_sha or _sha(archive_body),
                      [ArchiveMember("annotations/full.json", "annotations/instances.json", convert="coco_subset",
                                     content_sha256=content_sha256(SUBSET), options={"image_ids": [1, 2]}),
                       ArchiveMember("README", "README", sha256=_sha(readme))])
    for remote in files:
        server.publish(remote.url, images[remote.path])
    server.publish(archive.url, archive_body)
    return Manifest("made", "a test dataset", "none", files, [archive]), body


def test_a_dataset_is_built_whole_verified_and_reused(server, tmp_path):
    spec, _ = _made_dataset(server)
    root = tmp_path / "cache"
    folder = get_dataset(spec, root, server.url, log=lambda *a: None)
    assert folder == root / "made"
    assert json.loads((folder / "annotations" / "instances.json").read_text()) == SUBSET
    assert (folder / "README").read_bytes() == b"kept as it is\n"
    assert (folder / "images" / "b.jpg").read_bytes() == b"B" * 3000
    assert _leftovers(root) == []  # the archive is deleted once used
    asked = len(server.requests)
    assert get_dataset(spec, root, server.url, log=lambda *a: None) == folder and len(server.requests) == asked


def test_a_truncated_archive_is_refused_after_retries_and_nothing_is_left(server, tmp_path):
    spec, _ = _made_dataset(server)
    server.truncate.add("/example.org/archive.zip")
    root = tmp_path / "cache"
    with pytest.raises(DataError, match=r"archive.zip: truncated transfer: \d+ bytes instead of \d+ \(tried 3 time") as error:
        get_dataset(spec, root, server.url, log=lambda *a: None)
    assert "\n" not in str(error.value)
    assert server.requests.count("/example.org/archive.zip") == 3
    assert not (root / "made").exists() and _leftovers(root) == []


def test_a_corrupted_archive_is_refused_at_once(server, tmp_path):
    spec, body = _made_dataset(server)
    flipped = bytearray(body)
    flipped[len(body) // 2] ^= 0xFF
    server.publish(spec.archives[0].url, bytes(flipped))
    root = tmp_path / "cache"
    with pytest.raises(DataError, match="SHA-256 .* instead of .*corrupted, or changed at the source"):
        get_dataset(spec, root, server.url, log=lambda *a: None)
    assert server.requests == ["/example.org/archive.zip"]
    assert not (root / "made").exists() and _leftovers(root) == []


def test_an_archive_that_checks_out_but_does_not_unpack_leaves_no_half_dataset(server, tmp_path):
    """A damaged zip whose SHA-256 is the one listed (a wrong manifest): unpacking fails with one line, the
    folder being built is removed; the verified download stays for the next attempt."""
    good = _made_dataset(server)[1]
    broken = good.replace(b"kept as it is", b"kept as it IS")  # the member's CRC no longer matches
    spec, _ = _made_dataset(server, broken, _sha(broken))
    root = tmp_path / "cache"
    with pytest.raises(DataError, match=r"archive.zip \(archive.zip\): cannot unpack \(BadZipFile: Bad CRC-32"):
        get_dataset(spec, root, server.url, log=lambda *a: None)
    assert not (root / "made").exists()
    assert _leftovers(root) == [".downloads/archive.zip"]


def test_a_missing_file_stops_the_build_and_removes_it(server, tmp_path):
    spec, _ = _made_dataset(server)
    del server.files["/example.org/images/b.jpg"]
    root = tmp_path / "cache"
    with pytest.raises(DataError, match="images/b.jpg: HTTP 404"):
        get_dataset(spec, root, server.url, log=lambda *a: None)
    assert not (root / "made").exists() and _leftovers(root) == [".downloads/archive.zip"]  # verified: reused
    server.publish("https://example.org/images/b.jpg", b"B" * 3000)
    get_dataset(spec, root, server.url, log=lambda *a: None)
    assert server.requests.count("/example.org/archive.zip") == 1 and _leftovers(root) == []


def test_an_abandoned_build_of_a_killed_process_is_removed(server, tmp_path):
    spec, _ = _made_dataset(server)
    root = tmp_path / "cache"
    abandoned = root / f".made{catalog.PARTIAL}999999999-x"
    (abandoned / "images").mkdir(parents=True)
    get_dataset(spec, root, server.url, log=lambda *a: None)
    assert not abandoned.exists()


def test_lookup_order_env_then_shared_then_cache(tmp_path, monkeypatch, coco128):
    """$DETZOO_DATA first, then ../shared/data beside the checkout (what this project's machines have), then
    the cache (which is $DETZOO_DATA when set); the fixtures use this lookup too."""
    monkeypatch.setenv("DETZOO_DATA", str(tmp_path))
    assert catalog.cache_root() == tmp_path and catalog.search_roots()[0] == tmp_path
    assert catalog.find_dataset("coco128") == coco128  # not in $DETZOO_DATA: the checkout's shared copy
    (tmp_path / "coco128").mkdir()
    assert catalog.find_dataset("coco128") == tmp_path / "coco128"
    monkeypatch.delenv("DETZOO_DATA")
    monkeypatch.setattr(catalog, "_checkout_shared_data", lambda: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert catalog.search_roots() == [tmp_path / "xdg" / "detzoo" / "data"]
    assert catalog.find_dataset("coco128") is None
