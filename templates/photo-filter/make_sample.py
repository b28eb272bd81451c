#!/usr/bin/env python3
"""Writes sample.ppm, the photo-filter template's default image: a 64x48 colour test card (a
diagonal colour gradient, a white square, a dark disc and a black diagonal line), binary PPM (P6),
maxval 255. Standard library only; the same bytes on every run.

    python3 templates/photo-filter/make_sample.py [OUT.ppm]
"""
import os
import sys

W, H = 64, 48


def pixel(x, y):
    # Background: red grows to the right, green downwards, blue against both.
    r, g, b = x * 255 // (W - 1), y * 255 // (H - 1), 255 - (x + y) * 255 // (W + H - 2)
    if 8 <= x < 24 and 8 <= y < 24:  # a white square
        r, g, b = 255, 255, 255
    if (x - 44) ** 2 + (y - 28) ** 2 <= 10 ** 2:  # a dark disc
        r, g, b = 30, 20, 60
    if x == (y * W) // H and y >= 30:  # a black line, lower left
        r, g, b = 0, 0, 0
    return bytes((r, g, b))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "sample.ppm")
    data = b"P6\n%d %d\n255\n" % (W, H) + b"".join(pixel(x, y) for y in range(H) for x in range(W))
    with open(out, "wb") as f:
        f.write(data)


if __name__ == "__main__":
    main()
