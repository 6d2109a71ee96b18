"""Significance tests as PromQL arithmetic over recorded counts (the math is explained in docs/detectors.md).

Every function returns an expression over vectors that share one label set (they are recorded `by` the same
labels), so plain one-to-one matching applies.
"""

from __future__ import annotations


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
