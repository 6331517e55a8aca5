"""Write the dataset manifests of ``detzoo data get`` (src/detzoo/data/catalog/*.json) from local copies of the
datasets that are byte-identical to the published files:

    python tools/data_manifests.py ../shared/data

Each file's size and SHA-256 are read from the local copy; its URL is where the same bytes are published:
- coco128: each image as COCO serves it one by one (the ``coco_url`` of its annotation entry); the annotation
  file is cut from COCO's official ``annotations_trainval2017.zip`` (SHA-256 as TFDS publishes it), checked
  by the content SHA-256 of the local file (``detzoo.data.derived``);
- microcontroller: every file of Gilbert Tanner's repository at the commit that added the dataset, through
  raw.githubusercontent.com (the local files have the same git blob ids as that commit's ``images/`` tree).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from detzoo.data.derived import content_sha256  # noqa: E402
from detzoo.data.download import sha256_file  # noqa: E402

CATALOG = Path(__file__).resolve().parents[1] / "src" / "detzoo" / "data" / "catalog"
COCO_ANNOTATIONS = {
    "url": "http://images.cocodataset.org/annotations/annotations_trainval2017.zip",
    "size": 252907541,
    "sha256": "113a836d90195ee1f884e704da6304dfaaecff1f023f49b6ca93c4aaae470268",
    "checksum_source": "tensorflow/datasets: tensorflow_datasets/url_checksums/coco2017.txt (and coco.txt)",
}
TANNER = ("https://raw.githubusercontent.com/TannerGilbert/Tensorflow-Object-Detection-API-Train-Model/"
          "90fa5e1a008bfe437e33bb1d3a25e67c5c69ed29/images/")


def entry(folder: Path, relative: str, url: str) -> dict:
    path = folder / relative
    return {"path": relative, "url": url, "size": path.stat().st_size, "sha256": sha256_file(path)}


def coco128(folder: Path) -> dict:
    annotations = json.loads((folder / "annotations" / "instances_val2017.json").read_text())
    files = []
    for image in annotations["images"]:
        expected = f"http://images.cocodataset.org/train2017/{image['file_name']}"
        if image["coco_url"] != expected:
            raise SystemExit(f"{image['file_name']}: coco_url {image['coco_url']} is not {expected}")
        files.append(entry(folder, f"val2017/{image['file_name']}", image["coco_url"]))
    member = {"member": "annotations/instances_train2017.json", "path": "annotations/instances_val2017.json",
              "convert": "coco_subset", "options": {"image_ids": [image["id"] for image in annotations["images"]]},
              "content_sha256": content_sha256(annotations)}
    return {"name": "coco128",
            "description": "the first 128 images of COCO train2017 with their original COCO instances annotations "
                           "(939 boxes, 10 of them crowd), in COCO layout: annotations/instances_val2017.json + "
                           "val2017/",
            "license": "COCO annotations CC BY 4.0; images under their Flickr licences (listed in the JSON)",
            "source": "images: images.cocodataset.org one by one; annotations: cut from COCO's "
                      "annotations_trainval2017.zip",
            "files": files, "archives": [{**COCO_ANNOTATIONS, "members": [member]}]}


def microcontroller(folder: Path) -> dict:
    relative = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    return {"name": "microcontroller",
            "description": "Gilbert Tanner's microcontroller detection photos: 142 train + 7 test, 800x600, four "
                           "boards, a Pascal VOC XML beside each image, plus train_labels.csv / test_labels.csv",
            "license": "MIT (Gilbert Tanner, 2019)",
            "source": "github.com/TannerGilbert/Tensorflow-Object-Detection-API-Train-Model, images/ at commit "
                      "90fa5e1a (2019-11-16)",
            "files": [entry(folder, path, TANNER + path) for path in relative]}


def main(data: Path) -> None:
    for make in (coco128, microcontroller):
        manifest = make(data / make.__name__)
        path = CATALOG / f"{make.__name__}.json"
        path.write_text(json.dumps(manifest, indent=1) + "\n")
        print(f"{path}: {len(manifest['files'])} files + {len(manifest.get('archives', []))} archive(s)")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data"))
