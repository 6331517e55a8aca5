"""Pascal VOC XML reader: a VOCdevkit year folder (``Annotations/``, ``JPEGImages/``,
``ImageSets/Main/<split>.txt``) or a flat folder of image + XML pairs, as labelImg writes them.

Without a class list in the config, the classes are every object name found, sorted (stable across runs).
``difficult`` objects are kept and flagged; VOC mAP ignores them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from .problems import Problems
from .records import DataError, DetectionData, class_index, image_size, make_record, require_image_file

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG")


def is_vocdevkit(folder: Path) -> bool:
    return (folder / "Annotations").is_dir() and (folder / "JPEGImages").is_dir()


def _annotation_files(folder: Path, split: str | None) -> list[tuple[Path, Path]]:
    """(xml file, folder holding its image) pairs."""
    if is_vocdevkit(folder):
        if split:
            list_file = folder / "ImageSets" / "Main" / f"{split}.txt"
            if not list_file.is_file():
                raise DataError(f"{folder}: split list not found: {list_file}")
            ids = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
            return [(folder / "Annotations" / f"{i}.xml", folder / "JPEGImages") for i in ids]
        return [(p, folder / "JPEGImages") for p in sorted((folder / "Annotations").glob("*.xml"))]
    xml_files = sorted(folder.glob("*.xml"))
    if not xml_files:
        raise DataError(f"{folder}: no VOC XML files (and no Annotations/ + JPEGImages/ folders)")
    return [(p, folder) for p in xml_files]


def _text(node: ET.Element, tag: str, where: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DataError(f"{where}: missing <{tag}>")
    return child.text.strip()


def _number(node: ET.Element, tag: str, where: str) -> float:
    text = _text(node, tag, where)
    try:
        return float(text)
    except ValueError:
        raise DataError(f"{where}: <{tag}> is not a number: '{text}'") from None


def parse_voc_xml(xml_path: Path) -> ET.Element:
    try:
        return ET.parse(xml_path).getroot()
    except FileNotFoundError:
        raise DataError(f"{xml_path}: annotation file not found") from None
    except ET.ParseError as exc:
        line, column = exc.position
        raise DataError(f"{xml_path}: malformed XML at line {line} column {column}: {exc}") from None


def _find_image(xml_path: Path, image_folder: Path, root: ET.Element) -> Path:
    name = root.findtext("filename")
    if name and (image_folder / name.strip()).is_file():
        return image_folder / name.strip()
    for suffix in IMAGE_SUFFIXES:
        candidate = image_folder / (xml_path.stem + suffix)
        if candidate.is_file():
            return candidate
    return image_folder / (name.strip() if name else xml_path.stem + ".jpg")


def read_voc(folder: Path, split: str | None, class_names: list[str] | None, problems: Problems) -> DetectionData:
    if not folder.is_dir():
        raise DataError(f"{folder}: VOC folder not found")
    parsed = []
    for xml_path, image_folder in _annotation_files(folder, split):
        try:
            parsed.append((xml_path, image_folder, parse_voc_xml(xml_path)))
        except DataError as exc:
            problems.bad(str(exc))
    names = class_names
    if names is None:
        found = {obj.findtext("name", "").strip() for _, _, root in parsed for obj in root.iter("object")}
        names = sorted(n for n in found if n)
    records = []
    for image_id, (xml_path, image_folder, root) in enumerate(parsed):
        try:
            records.append(_record(xml_path, image_folder, root, names, image_id, problems))
        except DataError as exc:
            problems.bad(str(exc))
    return DetectionData(records, list(names), str(folder), "voc")


def _record(xml_path: Path, image_folder: Path, root: ET.Element, names: list[str], image_id: int,
            problems: Problems):
    image_path = _find_image(xml_path, image_folder, root)
    require_image_file(image_path, str(xml_path))
    size = root.find("size")
    width = int(float(size.findtext("width", "0") or 0)) if size is not None else 0
    height = int(float(size.findtext("height", "0") or 0)) if size is not None else 0
    if width <= 0 or height <= 0:
        width, height = image_size(image_path, str(xml_path))
    boxes, labels, difficult, what = [], [], [], []
    for index, obj in enumerate(root.iter("object")):
        try:
            name = _text(obj, "name", f"{xml_path}: object {index}")
            where = f"{xml_path}: object {index} ('{name}')"
            box = obj.find("bndbox")
            if box is None:
                raise DataError(f"{where}: missing <bndbox>")
            coordinates = [_number(box, tag, where) for tag in ("xmin", "ymin", "xmax", "ymax")]
            label = class_index(names, name, where)
        except DataError as exc:
            problems.bad_object(str(exc))
            continue
        boxes.append(coordinates)
        labels.append(label)
        difficult.append(obj.findtext("difficult", "0").strip() in ("1", "true", "True"))
        what.append(f"object {index} ('{name}')")
    return make_record(image_path, width, height, boxes, labels, str(xml_path), image_id,
                       difficult=difficult, object_names=what, problems=problems, annotation_file=xml_path.name)
