"""Which evaluation makes ``best.pt``: the primary metric first, then mAP@0.5 (COCO), and on a full tie the
later checkpoint, so that a run whose evaluations all give 0.0 does not ship its first epoch; and the reason,
as the training log prints it (``best: mAP 0.0000 = 0.0000, mAP@0.5 0.0120 > 0.0000``)."""

from __future__ import annotations

SECONDARY = ("mAP50",)  # tie-breakers after the primary metric, where the metric has them
NAMES = {"mAP": "mAP", "mAP50": "mAP@0.5"}


def ranking(metrics: dict[str, float], primary: str) -> tuple[tuple[str, float], ...]:
    """(name, value) pairs compared in order: the primary metric, then the secondary ones it has."""
    return ((primary, metrics[primary]), *((k, metrics[k]) for k in SECONDARY if k != primary and k in metrics))


def compare(new: tuple[tuple[str, float], ...], best: list | tuple | None) -> tuple[bool, bool, str]:
    """-> (becomes best.pt, strictly better, why). Equal on every key: the later checkpoint becomes best.pt
    but it is not an improvement (``train.early_stop`` counts it as none)."""
    if not best:
        return True, True, "best: first evaluation"
    parts = []
    for (name, value), (_, old) in zip(new, best):
        shown = NAMES.get(name, name)
        if value != old:
            parts.append(f"{shown} {value:.4f} {'>' if value > old else '<'} {old:.4f}")
            better = value > old
            return better, better, "best: " + ", ".join(parts) if better else ""
        parts.append(f"{shown} {value:.4f} = {old:.4f}")
    return True, False, "best: " + ", ".join(parts) + ": the later checkpoint"
