"""What a dataset reader found wrong, and what it did about it.

Two kinds of findings, handled the way torchvision's references, detectron2 and MMDetection handle them:

- **Repairs** happen silently per object and are counted in one summary line per dataset: a box without area
  (``x2 <= x1`` or ``y2 <= y1``, or under 1 px wide or tall once clipped to the image, as in COCO train2017)
  is dropped; a box that only extends past the image edge is clipped. The image keeps its other objects.
- **Bad input** (a non-finite or non-numeric box, an unknown class, a box entirely outside its image, a
  missing or unreadable image, a malformed file) raises a ``DataError`` naming the file and object - or,
  with ``skip_bad``, is skipped and counted: a bad *object* drops only that object (the references skip such
  an annotation and keep the image, and its other objects are still right), a bad *image or file* drops the
  image.
"""

from __future__ import annotations

from ..common.errors import DataError

SHOWN_OBJECTS = 10  # objects named in a summary line; the rest are counted


class Problems:
    """Collects a reader's findings: raise at once, or (skip_bad) count the skipped samples and objects;
    repairs (dropped and clipped boxes) are always counted and listed by annotation file and object."""

    def __init__(self, skip_bad: bool):
        self.skip_bad = skip_bad
        self.skipped = 0  # images skipped (skip_bad)
        self.skipped_objects = 0  # objects skipped (skip_bad)
        self.messages: list[str] = []  # every skipped image or object, in full
        self.dropped: list[tuple[str, str]] = []  # (annotation file, object) of boxes without area
        self.clipped: list[tuple[str, str]] = []  # (annotation file, object) of boxes past the image edge
        self.repairs: list[str] = []  # every dropped or clipped box, in full (file, image, object, box)

    def bad(self, message: str) -> None:
        """One bad image or file; raises DataError unless bad samples are skipped."""
        if not self.skip_bad:
            raise DataError(message)
        self.skipped += 1
        self.messages.append(message)

    def bad_object(self, message: str) -> None:
        """One bad object; raises DataError unless bad samples are skipped (then only the object goes)."""
        if not self.skip_bad:
            raise DataError(message)
        self.skipped_objects += 1
        self.messages.append(message)

    def drop(self, where: tuple[str, str], message: str) -> None:
        """A box without area, dropped: ``where`` = (annotation file, object) for the summary line."""
        self.dropped.append(where)
        self.repairs.append(message)

    def clip(self, where: tuple[str, str], message: str) -> None:
        """A box past the image edge, clipped."""
        self.clipped.append(where)
        self.repairs.append(message)

    @property
    def examples(self) -> list[str]:
        return self.messages[:5]

    def findings(self) -> list[str]:
        """Every finding in full, one line each: skipped images and objects, dropped and clipped boxes."""
        return [*self.messages, *self.repairs]

    def summary(self) -> list[str]:
        """One line per kind of finding (nothing when the data was clean)."""
        lines = []
        if self.dropped:
            lines.append(f"dropped {_boxes(len(self.dropped))} without area (under 1 px wide or tall inside the "
                         f"image): {list_objects(self.dropped)}")
        if self.clipped:
            lines.append(f"clipped {_boxes(len(self.clipped))} extending past the image edge: "
                         f"{list_objects(self.clipped)}")
        if self.skipped or self.skipped_objects:
            counts = [f"{self.skipped} bad image(s)"] if self.skipped else []
            counts += [f"{self.skipped_objects} bad object(s)"] if self.skipped_objects else []
            lines.append(f"skipped {' and '.join(counts)}, e.g. {self.examples[0]}")
        return lines


def _boxes(count: int) -> str:
    return f"{count} box" if count == 1 else f"{count} boxes"


def list_objects(items: list[tuple[str, str]], shown: int = SHOWN_OBJECTS) -> str:
    """``[("a.json", "annotation id 918"), ("a.json", "annotation id 7")]`` -> ``a.json annotation ids 918, 7``;
    at most ``shown`` objects are named, the rest counted."""
    groups: dict[str, list[str]] = {}
    for file, name in items[:shown]:
        groups.setdefault(file, []).append(name)
    parts = []
    for file, names in groups.items():
        heads = {name.rsplit(" ", 1)[0] for name in names}
        if len(names) > 1 and len(heads) == 1 and all(" " in name for name in names):
            parts.append(f"{file} {heads.pop()}s {', '.join(name.rsplit(' ', 1)[1] for name in names)}")
        else:
            parts.append(f"{file} {', '.join(names)}")
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return "; ".join(parts) + more
