"""Writes the notebook's data set: two overlapping Gaussian blobs in the plane, label 0 or 1.

    python make_data.py [DIR]     # blobs.csv and blobs-holdout.csv, in DIR or beside this file

``blobs.csv`` (600 rows) is the training data that ``ambient up --dataset`` splits across the
agents; ``blobs-holdout.csv`` (400 rows, drawn after it) is what the notebook scores the model on.
Both are committed; this script is how they were made (seeded: it writes the same files again).
The classes' means are (±1.2, ±0.8) with unit variance, so the best classifier (a line) is right
92.5 % of the time.
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MEAN = (1.2, 0.8)


def rows(rng: random.Random, n: int) -> str:
    """``n`` rows as CSV text with a header ``x1,x2,label``, the two classes in turn."""
    out = ["x1,x2,label"]
    for i in range(n):
        label = i % 2
        sign = 1 if label else -1
        x1 = rng.gauss(sign * MEAN[0], 1.0)
        x2 = rng.gauss(sign * MEAN[1], 1.0)
        out.append(f"{x1:.3f},{x2:.3f},{label}")
    return "\n".join(out) + "\n"


def main(out: Path = HERE) -> None:
    rng = random.Random(2024)
    (out / "blobs.csv").write_text(rows(rng, 600))
    (out / "blobs-holdout.csv").write_text(rows(rng, 400))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
