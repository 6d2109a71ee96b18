"""Chance alerts of revenue_drop's count test on pure Poisson traffic: `python3 -m bench.revenue_drop_chance`.

docs/detectors.md ("revenue_drop", "Choosing z") quotes its figures. Needs numpy (not a project dependency: run it
with a Python that has it). It mimics the shipped rules on 5-minute evaluations: an hourly increase, the window as
the mean of the hourly values times its hours, the same window 1..4 weeks earlier, their median (the mean of the
middle two), the test `C < (sqrt(E) - k)^2` with E >= 10, 30 minutes of `for` and 6 hours of `keep_firing_for`.
The amount condition is left out (at these volumes it rarely filters a count that chance made this low), so the
figures are an upper bound for the shipped alert. Traffic: a diurnal shape (+-60 %) and weekends at 45 %. Then the
other side: the share of 50 % one-day drops (a Thursday, after four clean weeks) that the day or the 6-hour window
alerts on within the drop and the 6 hours after it.
"""

from __future__ import annotations

import argparse

import numpy as np

STEPS_PER_DAY = 288  # 5-minute evaluations
WEEK = 7 * STEPS_PER_DAY
FOR_STEPS = 6  # for: 30m
KEEP_STEPS = 72  # keep_firing_for: 6h
SHIPPED_K = {24: 1.770, 6: 2.031}  # the rules' margins with four weeks, by window hours


def traffic_shape(n: int) -> np.ndarray:
    t = np.arange(n)
    hour = (t % STEPS_PER_DAY) / 12.0
    shape = (1 + 0.6 * np.sin((hour - 9) / 24 * 2 * np.pi)) * np.where((t // STEPS_PER_DAY) % 7 >= 5, 0.45, 1.0)
    return shape / shape.mean()


def episodes(cond: np.ndarray) -> int:
    """Notifications: runs of FOR_STEPS true evaluations, merged while within KEEP_STEPS of the last true one."""
    count, run, prev, last = 0, 0, -2, -(10**9)
    for i in np.flatnonzero(cond):
        run = run + 1 if i == prev + 1 else 1
        prev = i
        if run >= FOR_STEPS:
            if i - last > KEEP_STEPS:
                count += 1
            last = i
    return count


def alerting(counts: np.ndarray, hours: int, margin: float) -> np.ndarray:
    """Where the window's count test holds, at each 5-minute step, for the charges counted in each step: the
    hourly increase, the window as the mean of the hourly values times its hours, the median of the same window
    1..4 weeks earlier, `C < (sqrt(E) - k)^2` with E >= 10."""
    n = len(counts)
    cum = np.concatenate([[0.0], np.cumsum(counts)])
    hourly = np.concatenate([np.zeros(12), cum[12:] - cum[:-12]])[:n]
    k = hours * 12
    hcum = np.concatenate([[0.0], np.cumsum(hourly)])
    window = np.concatenate([np.full(k, np.nan), (hcum[k:] - hcum[:-k]) / k * hours])[:n]
    past = np.sort([np.concatenate([np.full(j * WEEK, np.nan), window[: n - j * WEEK]]) for j in range(1, 5)], 0)
    usual = (past[1] + past[2]) / 2
    with np.errstate(invalid="ignore"):
        return np.asarray((window < np.clip(np.sqrt(usual) - margin, 0, None) ** 2) & (usual >= 10))


def chance_per_30_days(rng: np.random.Generator, per_day: float, weeks: int, hours: int, margin: float) -> float:
    n = (4 + weeks) * WEEK
    cond = alerting(rng.poisson(traffic_shape(n) * per_day / STEPS_PER_DAY).astype(float), hours, margin)
    return episodes(cond[4 * WEEK + STEPS_PER_DAY :]) / (weeks * 7 / 30)


def catch_rate(rng: np.random.Generator, per_day: float, start_hour: float, trials: int) -> float:
    """The share of 50 % one-day drops (on the Thursday after four clean weeks, from `start_hour` UTC) that either
    shipped window alerts on by the end of the drop plus the evaluation's allowed 6 hours. Each trial draws its own
    traffic, so the rolling windows scan every alignment as they do in Prometheus: more than one window's chance."""
    n = 5 * WEEK
    start = 4 * WEEK + 3 * STEPS_PER_DAY + int(start_hour * 12)
    stop = start + STEPS_PER_DAY + 72
    caught = 0
    for _ in range(trials):
        rate = traffic_shape(n) * per_day / STEPS_PER_DAY
        rate[start : start + STEPS_PER_DAY] *= 0.5
        counts = rng.poisson(rate).astype(float)
        either = alerting(counts, 24, SHIPPED_K[24]) | alerting(counts, 6, SHIPPED_K[6])
        caught += episodes(either[start:stop]) > 0
    return caught / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weeks", type=int, default=200, help="simulated weeks per volume (after 4 of warm-up)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--trials", type=int, default=600, help="simulated 50 %% one-day drops per volume and start")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    # Margins: the shipped k for four weeks (day 1.770, 6h 2.031) and the single k used before (1.861).
    for per_day in (30, 60, 200, 1000):
        for hours, margins in ((24, (SHIPPED_K[24], 1.861)), (6, (SHIPPED_K[6], 1.861))):
            rates = {m: round(chance_per_30_days(rng, per_day, args.weeks, hours, m), 2) for m in margins}
            print(f"{per_day:>5}/day {hours:>2}h window: chance alerts per 30 days by margin k: {rates}", flush=True)
    # The other side: how often the shipped margins catch a 50 % one-day drop, starting at midnight or at 10:00.
    for per_day in (30, 45, 60):
        caught = {h: round(catch_rate(rng, per_day, h, args.trials), 2) for h in (0, 10)}
        print(f"{per_day:>5}/day 50 % one-day drop caught, by its start hour (UTC): {caught}", flush=True)


if __name__ == "__main__":
    main()
