"""When hosts are on and busy: office hours, lunch dip, laptops, weekends, 24/7 servers.

:class:`Activity` gives, for one hour slot, a per-host *activity* level (user
interaction, 0..~1.5) and a *powered* flag in six 10-minute bins. Workstations follow
their owner's working day (per-host start/end with per-day jitter, lunch dip around
12:00-13:00 local, ~5% absent days); laptops are off outside the working day and
weekends, desktops stay on with a faint background; servers, DCs and printers run
24/7 with a business-hours bump; jump hosts are busy when admins work.

>>> from pipelines.simulate.network import Network
>>> net = Network(hosts=40, seed=1)
>>> act = Activity(net, tz_offset_h=0.0, seed=1)
>>> mon_noon, mon_3am = 1_699_833_600.0 + 11 * 3600, 1_699_833_600.0 + 3 * 3600
>>> float(act.bins(mon_noon)[1][net.ws].mean()) > 10 * float(act.bins(mon_3am)[1][net.ws].mean())
True
"""

from __future__ import annotations

import numpy as np

from pipelines.simulate.network import Network

__all__ = ["BIN", "BINS", "Activity", "local_day", "local_hour", "weekday"]

BINS = 6
BIN = 3600.0 / BINS


def local_hour(t: np.ndarray | float, tz_offset_h: float) -> np.ndarray:
    """Hour of day (float) in local time."""
    return np.asarray(((np.asarray(t) + tz_offset_h * 3600.0) % 86400.0) / 3600.0)


def local_day(t: float, tz_offset_h: float) -> int:
    """Local day number since the epoch."""
    return int((t + tz_offset_h * 3600.0) // 86400.0)


def weekday(day: int) -> int:
    """0 = Monday ... 6 = Sunday for a local day number.

    >>> weekday(19674)  # 2023-11-13
    0
    """
    return (day + 3) % 7


class Activity:
    """Per-host activity and power state, deterministic per (seed, local day)."""

    def __init__(self, net: Network, tz_offset_h: float, seed: int) -> None:
        self.net = net
        self.tz = tz_offset_h
        self.seed = seed
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]] = {}

    def _day(self, day: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
        got = self._cache.get(day)
        if got is None:
            if len(self._cache) > 4:
                self._cache.clear()
            got = self._cache[day] = self._day_params(day)
        return got

    def _day_params(self, day: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
        net = self.net
        rng = np.random.default_rng([self.seed, day, 202])
        n = net.n_internal
        wd = weekday(day) < 5
        start = net.start_h + rng.normal(0.0, 0.35, n)
        end = net.end_h + rng.normal(0.0, 0.5, n)
        present = rng.random(n) > 0.05
        if not wd:  # a few people work a little on weekends
            present = rng.random(n) < 0.06
            start = rng.uniform(9.5, 14.0, n)
            end = start + rng.uniform(0.5, 3.0, n)
        lunch = rng.uniform(11.8, 12.7, n)
        return start, end, present, lunch, wd

    def day_window(self, day: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(start hour, end hour, present) of every host's working day ``day``."""
        start, end, present, _lunch, _wd = self._day(day)
        return start, end, present

    def bins(self, t0: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(bin start times (6,), activity (hosts, 6), powered (hosts, 6)) for the hour at ``t0``."""
        net = self.net
        starts = t0 + BIN * np.arange(BINS)
        mids = local_hour(starts + BIN / 2, self.tz)[None, :]
        start, end, present, lunch, wd = self._day(local_day(t0, self.tz))
        s, e, ln = start[:, None], end[:, None], lunch[:, None]
        working = (mids >= s) & (mids < e) & present[:, None]
        act = np.where(working, 1.0, 0.0)
        act = np.where(working & (mids >= ln) & (mids < ln + 0.9), 0.45, act)
        act = act * net.intensity[:, None]
        laptop = net.laptop[:, None]
        act = np.where(~working & ~laptop, 0.02, act)  # desktop background (updates, idle apps)
        powered = np.where(laptop, (mids >= s - 0.3) & (mids < e + 0.6) & present[:, None], True)
        # servers, DCs, printers: always on; business-hours bump
        busy = 1.0 if wd else 0.0
        biz = np.where((mids >= 8) & (mids < 18), 0.5 + 0.5 * busy, 0.35)
        for group in (net.srv, net.dc, net.prn):
            act[group] = biz
            powered[group] = True
        # jump hosts: admins in business hours on weekdays
        act[net.jump] = np.where((mids >= 8.5) & (mids < 17.5), busy, 0.05)
        powered[net.jump] = True
        return starts, act, powered
