#!/usr/bin/env python3
"""Reference ε values for fl/src/dp.rs (test `accountant_matches_dp_accounting`), from Google's
dp-accounting: `python3 -m venv /tmp/dpa && /tmp/dpa/bin/pip install dp-accounting==0.6.0 &&
/tmp/dpa/bin/python scripts/dp-accounting-reference.py`."""
import dp_accounting
from dp_accounting import rdp

for sigma, steps, delta in [(2.016, 10, 1e-5), (12.793, 10, 1e-5), (5.0, 10, 1e-5),
                            (1.0, 1, 1e-5), (0.8, 100, 1e-6)]:
    acc = rdp.RdpAccountant()
    acc.compose(dp_accounting.GaussianDpEvent(sigma), steps)
    print(f"({sigma}, {steps}, {delta}, {acc.get_epsilon(delta)!r}),")
