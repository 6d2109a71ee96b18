"""Significance tests as PromQL arithmetic over recorded counts (the math is explained in docs/detectors.md).

Every function returns an expression over vectors that share one label set (they are recorded `by` the same
labels), so plain one-to-one matching applies.
"""

from __future__ import annotations

from statistics import NormalDist


def num(value: float) -> str:
    """A PromQL number literal without float noise (0.5, 6.125, 12.25)."""
    return f"{value:.10g}"


def wilson_lower(k: str, n: str, z: float) -> str:
    """Wilson score lower bound of a ratio of `k` events out of `n` trials at one-sided z.

    (p + z²/2n - z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n) with p = k/n, multiplied through by n:
    (k + z²/2 - z·sqrt(k(n-k)/n + z²/4)) / (n + z²). `n` must exclude 0 (e.g. `(x > 0)`); k(n-k) is clamped at 0
    because increase() extrapolation can make k a hair larger than n.
    """
    z2 = z * z
    return (
        f"(\n  {k} + {num(z2 / 2)}\n  - {num(z)} * sqrt(clamp_min({k} * ({n} - {k}), 0) / {n} + {num(z2 / 4)})\n)\n"
        f"/\n({n} + {num(z2)})"
    )


def poisson_threshold(expected: str, z: float) -> str:
    """The smallest count whose excess over a Poisson `expected` is significant at one-sided z.

    sqrt(K) is close to normal with mean sqrt(λ) and variance 1/4 for a Poisson K (even at small λ), so
    sqrt(k) - sqrt(λ) ≥ z/2 ⇔ k ≥ (sqrt(λ) + z/2)².
    """
    return f"(sqrt({expected}) + {num(z / 2)}) ^ 2"


def larger(a: str, b: str) -> str:
    """Element-wise max of two vectors with the same label sets (the one that exists where the other is missing)."""
    return f"(\n  ({a})\n  >=\n  ({b})\n)\nor\n({b})\nor\n({a})"


def scan_z(window_seconds: int, false_alerts_per_30_days: float) -> float:
    """The one-sided z at which a rolling window, evaluated continuously, crosses by chance about
    `false_alerts_per_30_days` times in 30 days.

    One window alone exceeds z with probability 1 - Φ(z), but a window that slides every few minutes gets many
    correlated looks: for a moving sum of independent counts (locally like Brownian motion) the expected number of
    separate crossings in a span T is about (T / window) · z · φ(z) (the scan-statistic approximation; at z = 3.09
    that is ten times 1 - Φ(z) per window length). Solved for z by bisection.
    """
    looks = 30 * 86400 / window_seconds
    low, high = 0.5, 10.0
    for _ in range(60):
        z = (low + high) / 2
        if looks * z * NormalDist().pdf(z) > false_alerts_per_30_days:
            low = z
        else:
            high = z
    return round(high, 3)
