"""Pascal VOC XML reader: a VOCdevkit year folder (``Annotations/``, ``JPEGImages/``,
``ImageSets/Main/<split>.txt``), a flat folder of image + XML pairs as labelImg writes them, or a dataset
folder with ``images/`` beside ``annotations/`` or ``annots/`` (the common Kaggle layout). Each XML's image is
looked for under the given image root, beside the XML, in a sibling ``images/`` or ``JPEGImages/`` folder,
and in the XML's ``<folder>``.

Without a class list in the config, the classes are every object name found, sorted (stable across runs).
``difficult`` objects are kept and flagged; VOC mAP ignores them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from .problems import Problems
from .records import DataError, DetectionData, class_index, image_size, image_under, make_record

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG")
ANNOTATION_FOLDERS = ("annotations", "annots", "Annotations")  # beside images/ in a dataset folder
IMAGE_FOLDERS = ("images", "JPEGImages")  # beside the XML's folder


def is_vocdevkit(folder: Path) -> bool:
    return (folder / "Annotations").is_dir() and (folder / "JPEGImages").is_dir()


def voc_xml_folder(folder: Path) -> Path | None:
    """The folder holding a VOC dataset's XML files: the folder itself, or its annotations/ or annots/."""
    for candidate in (folder, *(folder / name for name in ANNOTATION_FOLDERS)):
        if any(candidate.glob("*.xml")):
            return candidate
    return None


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
    xml_folder = voc_xml_folder(folder)
    if xml_folder is None:
        raise DataError(f"{folder}: no VOC XML files here or in {'/, '.join(ANNOTATION_FOLDERS)}/ (and no "
                        "Annotations/ + JPEGImages/ folders)")
    return [(p, xml_folder) for p in sorted(xml_folder.glob("*.xml"))]


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


def find_image(xml_path: Path, xml_image_folder: Path, root: ET.Element, image_root: Path | None) -> Path:
    """The image an XML describes: its ``<filename>`` (else the XML's name with an image suffix) under
    ``image_root`` when given, in ``xml_image_folder`` (beside the XML; JPEGImages/ in a VOCdevkit), in a
    sibling images/ or JPEGImages/ folder, or in the XML's ``<folder>``. DataError naming every folder tried."""
    filename = (root.findtext("filename") or "").strip()
    if filename:
        image_under(xml_image_folder, filename, str(xml_path))  # refuses absolute paths and '..'
    names = [filename] if filename else []
    names += [xml_path.stem + suffix for suffix in IMAGE_SUFFIXES if xml_path.stem + suffix != filename]
    folders = [image_root] if image_root else []
    folders += [xml_image_folder, *(xml_path.parent.parent / name for name in IMAGE_FOLDERS)]
    folder_tag = Path((root.findtext("folder") or "").strip())
    if folder_tag.parts and not folder_tag.is_absolute() and ".." not in folder_tag.parts:
        folders += [xml_path.parent.parent / folder_tag, xml_path.parent / folder_tag]
    folders = list(dict.fromkeys(folders))
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    wanted = f"'{filename}' or " if filename else ""
    raise DataError(f"{xml_path}: image file not found: {wanted}'{xml_path.stem}' with an image suffix, looked in "
                    f"{', '.join(map(str, folders))}")


def read_voc(folder: Path, split: str | None, class_names: list[str] | None, problems: Problems,
             image_root: Path | None = None) -> DetectionData:
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
            records.append(_record(xml_path, find_image(xml_path, image_folder, root, image_root), root, names,
                                   image_id, problems))
        except DataError as exc:
            problems.bad(str(exc))
    return DetectionData(records, list(names), str(folder), "voc")


def _record(xml_path: Path, image_path: Path, root: ET.Element, names: list[str], image_id: int,
            problems: Problems):
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
