"""A group-sequential equivalence design: look at the data at planned looks, stop once the verdict is known.

The data arrive in a balanced order (`data.sampling.sequential_order`): every prefix holds about the same
share of every MME category and MMMU subject. They are examined at looks t_1 < ... < t_K = 1, the
fractions of the full plan (default: 10 looks at 10 %, 20 %, ..., 100 %). At look k each metric has the
paired difference d_k = B - A, its design-based standard error se_k and, as in the fixed-size verdict,
an exact bound u for the case where the runs disagree nowhere (`verdict.exact_zero_bound`).

Two decisions per metric, each a group-sequential test with its own alpha-spending function (Lan &
DeMets 1983): Lan-DeMets O'Brien-Fleming-type spending, alpha(t) = 2 - 2 Phi(z(1 - alpha/2) / sqrt(t))
(gsDesign's sfLDOF), for equivalence; Hwang-Shih-DeCani spending with gamma = -4,
alpha(t) = alpha (1 - e^(4t)) / (1 - e^4) (Hwang, Shih & DeCani 1990; gsDesign's sfHSD and its default
upper bound), for a difference:

- **equivalent** (two one-sided tests, TOST): at look k the interval d_k +- h_k, with
  h_k = sqrt((c_k se_k)^2 + u_k^2), lies inside +-margin. c_k is the one-sided O'Brien-Fleming-type
  boundary spending `alpha` over the looks; u_k is the exact zero-disagreement bound at level alpha with
  the units seen by look k. No spending is needed for u: "no disagreement among the first n_k units"
  are nested events, so the chance that any look wrongly bounds a true disagreement share p is the
  chance at the first look whose bound is below p, at most alpha. Each side is a one-sided
  group-sequential test at level alpha, so the chance of ever calling a metric equivalent when its true
  difference is at or beyond the margin is at most alpha. The overall verdict `equivalent` needs every
  metric (an intersection-union test): its error is at most alpha without a multiplicity correction.
- **not equivalent** (a difference is shown, and it lies beyond the margin): |z_k| >= b_k and
  |d_k| >= margin, with z_k the test of no difference the fixed-size verdict describes (McNemar's exact
  test for questions, else d_k over the standard error under no difference: the plug-in se_k,
  estimated from a few disagreements at an early look, is too small too often), where b_k is the
  two-sided Hwang-Shih-DeCani (gamma = -4) boundary spending the metric's share of alpha over the
  looks (half a side). gamma = -4 spends 0.9 % of the share by t = 0.1 and 4.3 % by t = 0.3 (O'Brien-
  Fleming-type: ~0 and 0.02 %; the accuracies' first boundary is 3.79 instead of 8.26), so a clear
  drop stops at the second or third look instead of the third or fourth; it gives up a little at the
  end (the last boundary 2.51 instead of 2.48), which the calibration shows costs no power that matters
  (bench/verdict_calibration.py). Any spending function fixed in advance keeps each test's level (Lan &
  DeMets), so the choice is about speed only. Equivalence keeps O'Brien-Fleming-type spending: its
  interval rests on a plug-in se, which a few early disagreements estimate poorly, and early
  equivalence comes from the exact bound u (no spending) anyway. The shares are a weighted Bonferroni split (the overall verdict is `not equivalent` as soon as
  one metric is): accuracies weigh 2, MME scores 1 (mme_acc and mmmu_acc 1/3 of alpha each, the two MME
  scores 1/6 each), since the accuracies are the sensitive tests and the scores are there for drops
  concentrated in a few categories, which move them by many points. With
  no true difference the chance of ever calling any metric not equivalent (the false alarm) is at most
  alpha. This is the decision that gives power against a drop: the fixed-size verdict's "not
  equivalent" needs the whole interval beyond the margin, which a 2-point drop with a 1-point margin
  reaches only with several thousand questions; here a drop is declared once it is shown to be a drop
  and its estimate is beyond the margin. (A true difference just inside the margin can then be called
  not equivalent; that is the price of the power, documented in the user guide.)

Stopping: once a metric is decided (either way) it stays decided; the comparison stops when the overall
verdict is known: any metric not equivalent, or every metric equivalent. Before that, a part of the
samples stops being sent once every metric it feeds is equivalent (`compare.looks`: MME perception feeds
mme_acc and the perception score, MME cognition mme_acc and the cognition score, MMMU-val mmmu_acc).
This keeps both error rates: a part stops only when every metric it feeds is decided, so no open metric
is fed by a stopped part; an open metric's statistic at look k is computed from its own samples through
look k, the same test whether or not other parts are still sent, and a decided metric is never judged
again; a metric that stopped equivalent has
already spent its chance of a wrong `equivalent` and can only lose, not gain, chances of a false
`not equivalent`. So the bounds above (each equivalence at most alpha, the false alarm at most the sum
of the shares, alpha) hold with parts stopping on their own. Without it, identical engines would send
60-70 % of all of MME (the cognition score's 20-point margin needs ~60 % of its 260 questions even with
no disagreement: u = 1 - alpha^(1/n) over the 4 categories' per-answer weights) where about 30 % of the
perception questions already settle mme_acc and the perception score. At the last look the metrics
still open are `inconclusive`. The boundaries are computed here by recursive numerical integration of
the Brownian motion of the score statistic over the looks (Armitage, McPherson & Rowe 1969), on a grid
with Simpson weights, the way ld98/ldbounds and gsDesign compute them; tests check them against
published values. The looks are sample fractions, a proxy for information fractions (the variance per
paired sample is about constant); the spending function makes the design valid for any look times
fixed in advance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import optimize
from scipy import stats as sps

from vlmparity.compare import verdict as v
from vlmparity.errors import ConfigError

DEFAULT_LOOKS = 10
EQ_FAMILY = "obf"
NE_FAMILY = "hsd:-4"
SPENDING = (
    "equivalence: Lan-DeMets O'Brien-Fleming-type, alpha(t) = 2 - 2 Phi(z(1 - alpha/2) / sqrt(t)); "
    "difference: Hwang-Shih-DeCani gamma = -4, alpha(t) = alpha (1 - exp(4 t)) / (1 - exp(4))"
)
_GRID = 801  # grid points of the density between looks (odd: Simpson)
_Z_FLOOR = -9.0  # below this the continuation density is negligible (one-sided boundaries)
_Z_CAP = 40.0  # "never crosses" (a look that spends nothing)

OPEN = "open"


# --------------------------------------------------------------------------- spending and boundaries


def hsd_spending(t: float | NDArray[np.float64], alpha: float, gamma: float) -> NDArray[np.float64]:
    """Hwang-Shih-DeCani spending: alpha (1 - exp(-gamma t)) / (1 - exp(-gamma)); gamma 0 is linear (alpha t).
    gamma = -4 spends about like O'Brien-Fleming late but more early; gamma = 1 is close to Pocock."""
    tt = np.clip(np.asarray(t, dtype=float), 0.0, 1.0)
    if abs(gamma) < 1e-12:
        return np.asarray(alpha * tt, dtype=float)
    return np.asarray(alpha * np.expm1(-gamma * tt) / np.expm1(-gamma), dtype=float)


def spending(t: float | NDArray[np.float64], alpha: float, family: str) -> NDArray[np.float64]:
    """alpha spent by t under `family`: "obf" (Lan-DeMets O'Brien-Fleming-type) or "hsd:<gamma>"."""
    if family == "obf":
        return obf_spending(t, alpha)
    if family.startswith("hsd:"):
        return hsd_spending(t, alpha, float(family[4:]))
    raise ConfigError(f"unknown spending function {family!r}")


def obf_spending(t: float | NDArray[np.float64], alpha: float) -> NDArray[np.float64]:
    """Lan-DeMets O'Brien-Fleming-type spending: alpha spent by information fraction t (0 at 0, alpha at 1)."""
    tt = np.clip(np.asarray(t, dtype=float), 0.0, 1.0)
    z = sps.norm.isf(alpha / 2)
    with np.errstate(divide="ignore"):
        out = 2.0 * sps.norm.sf(z / np.sqrt(tt))
    return np.asarray(np.where(tt > 0, out, 0.0), dtype=float)


def _simpson(n: int, h: float) -> NDArray[np.float64]:
    w = np.ones(n)
    w[1:-1:2] = 4.0
    w[2:-1:2] = 2.0
    return w * h / 3.0


def _check_looks(times: Sequence[float]) -> NDArray[np.float64]:
    t = np.asarray(times, dtype=float)
    if t.ndim != 1 or t.size == 0 or np.any(np.diff(t) <= 0) or t[0] <= 0 or t[-1] > 1 + 1e-12:
        raise ConfigError(f"look times must increase within (0, 1], got {list(times)}")
    return t


@lru_cache(maxsize=64)
def _boundaries(times: tuple[float, ...], alpha: float, two_sided: bool, family: str) -> tuple[float, ...]:
    t = _check_looks(times)
    # two-sided: each side spends its own function at alpha / 2 (ldbounds, gsDesign)
    spend = 2 * spending(t, alpha / 2, family) if two_sided else spending(t, alpha, family)
    increments = np.diff(np.concatenate([[0.0], spend]))
    bounds: list[float] = []
    grid = weights = density = None  # on the B-scale, B(t) = Z(t) sqrt(t)
    t_prev = 0.0
    for k, (tk, inc) in enumerate(zip(t, increments, strict=True)):
        sd = math.sqrt(tk - t_prev)
        mass: Any = None if weights is None or density is None else weights * density

        def cross(c: float, mass: Any = mass, grid: Any = grid, sd: float = sd, tk: float = tk) -> float:
            """P(no crossing before, crossing at this look) with boundary c at this look."""
            if mass is None:  # the first look
                tail = float(sps.norm.sf(c))
                return 2 * tail if two_sided else tail
            edge = c * math.sqrt(tk)
            p = float(np.sum(mass * sps.norm.sf((edge - grid) / sd)))
            if two_sided:
                p += float(np.sum(mass * sps.norm.cdf((-edge - grid) / sd)))
            return p

        if inc <= cross(_Z_CAP) or inc <= 0:
            c = _Z_CAP
        else:
            c = float(optimize.brentq(lambda x, inc=inc: cross(x) - inc, 0.0, _Z_CAP, xtol=1e-10))
        bounds.append(c)
        # density of B(t_k) on the continuation region
        top = c * math.sqrt(tk)
        bottom = -top if two_sided else _Z_FLOOR * math.sqrt(tk) - 2 * math.sqrt(tk)
        new_grid = np.linspace(bottom, top, _GRID)
        new_weights = _simpson(_GRID, (top - bottom) / (_GRID - 1))
        if k == 0:
            new_density = sps.norm.pdf(new_grid / sd) / sd
        else:
            assert grid is not None and weights is not None and density is not None
            kernel = sps.norm.pdf((new_grid[:, None] - grid[None, :]) / sd) / sd
            new_density = kernel @ (weights * density)
        grid, weights, density = new_grid, new_weights, new_density
        t_prev = float(tk)
    return tuple(bounds)


def boundaries(
    times: Sequence[float], alpha: float, *, two_sided: bool = False, family: str = "obf"
) -> NDArray[np.float64]:
    """Z boundaries at the looks `times` (information fractions, last 1) for Lan-DeMets OBF spending.

    One-sided: reject at look k when Z_k >= c_k, P_0(ever) = alpha. Two-sided symmetric: |Z_k| >= c_k,
    P_0(ever) = alpha, each side spending alpha(t; alpha / 2) (as ldbounds and gsDesign do).
    """
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be between 0 and 1, got {alpha}")
    key = tuple(round(float(x), 12) for x in times)
    return np.asarray(_boundaries(key, float(alpha), two_sided, family))


def crossing_probability(bounds: Sequence[float], times: Sequence[float], drift: float = 0.0) -> float:
    """P(Z_k >= bounds_k at some look) for Z_k = B(t_k)/sqrt(t_k), B a Brownian motion with `drift`
    (mean drift * t): a check of the boundaries by the same integration, used by the tests."""
    t = _check_looks(times)
    total = 0.0
    grid = weights = density = None
    t_prev = 0.0
    for k, (tk, c) in enumerate(zip(t, bounds, strict=True)):
        sd = math.sqrt(tk - t_prev)
        mean_step = drift * (tk - t_prev)
        edge = c * math.sqrt(tk)
        if k == 0:
            total += float(sps.norm.sf((edge - mean_step) / sd))
        else:
            assert grid is not None and weights is not None and density is not None
            total += float(np.sum(weights * density * sps.norm.sf((edge - grid - mean_step) / sd)))
        bottom = _Z_FLOOR * math.sqrt(tk) - 2 * math.sqrt(tk) + drift * tk
        new_grid = np.linspace(bottom, edge, _GRID)
        new_weights = _simpson(_GRID, (edge - bottom) / (_GRID - 1))
        if k == 0:
            new_density = sps.norm.pdf((new_grid - mean_step) / sd) / sd
        else:
            assert grid is not None and weights is not None and density is not None
            kernel = sps.norm.pdf((new_grid[:, None] - grid[None, :] - mean_step) / sd) / sd
            new_density = kernel @ (weights * density)
        grid, weights, density = new_grid, new_weights, new_density
        t_prev = float(tk)
    return total


# --------------------------------------------------------------------------- the design


# Weights of the non-equivalence alpha: accuracies (the sensitive, primary tests) twice the MME scores
# (there to catch drops concentrated in a few categories, which move a score by many points).
WEIGHT = {"fraction": 2.0, "points": 1.0}


@dataclass(frozen=True)
class Design:
    """Looks, levels and boundaries of one sequential comparison of several metrics."""

    times: tuple[float, ...]  # look fractions of the full plan, increasing, last 1
    alpha: float
    eq_bounds: tuple[float, ...]  # c_k: one-sided, each TOST side at alpha
    ne_alphas: tuple[float, ...]  # per metric: its share of alpha for `not equivalent` (weighted Bonferroni)
    ne_bounds: tuple[tuple[float, ...], ...]  # per metric b_k: two-sided at its ne_alpha
    eq_family: str = "obf"
    ne_family: str = "obf"

    @property
    def metrics(self) -> int:
        return len(self.ne_alphas)

    def to_dict(self) -> dict[str, Any]:
        return {
            "looks": [round(t, 6) for t in self.times],
            "alpha": self.alpha,
            "spending": SPENDING if (self.eq_family, self.ne_family) == (EQ_FAMILY, NE_FAMILY) else "",
            "equivalence_spending": self.eq_family,
            "difference_spending": self.ne_family,
            "equivalence_bounds": [round(c, 4) for c in self.eq_bounds],
            "nonequivalence_alphas": [round(a, 6) for a in self.ne_alphas],
            "nonequivalence_bounds": [[round(c, 4) for c in b] for b in self.ne_bounds],
        }


def equal_looks(k: int) -> tuple[float, ...]:
    """k equally spaced look fractions, the last 1."""
    if k < 1:
        raise ConfigError(f"--looks must be at least 1, got {k}")
    return tuple((i + 1) / k for i in range(k))


def design(
    times: Sequence[float],
    alpha: float,
    weights: Sequence[float],
    *,
    eq_family: str | None = None,
    ne_family: str | None = None,
) -> Design:
    """The boundaries for metrics of these non-equivalence `weights` at the looks `times`, overall level alpha."""
    eq_family = EQ_FAMILY if eq_family is None else eq_family
    ne_family = NE_FAMILY if ne_family is None else ne_family
    t = tuple(float(x) for x in _check_looks(times))
    if not weights or min(weights) <= 0:
        raise ConfigError("a sequential design needs at least one metric")
    total = float(sum(weights))
    shares = tuple(alpha * w / total for w in weights)
    return Design(
        times=t,
        alpha=alpha,
        eq_bounds=tuple(float(x) for x in boundaries(t, alpha, family=eq_family)),
        ne_alphas=shares,
        ne_bounds=tuple(
            tuple(float(x) for x in boundaries(t, a, two_sided=True, family=ne_family)) for a in shares
        ),
        eq_family=eq_family,
        ne_family=ne_family,
    )


def weights_of(units: Sequence[str]) -> list[float]:
    """Non-equivalence weights of metrics by unit (accuracies 2, MME scores 1)."""
    return [WEIGHT.get(u, 1.0) for u in units]


# --------------------------------------------------------------------------- decisions at a look


def eq_half_width(r: v.PairedResult, c: float, alpha: float) -> float:
    """h = sqrt((c se)^2 + u^2): the equivalence interval's half-width at a look (u at level alpha)."""
    return math.hypot(c * r.se, r.exact_scale * v.exact_zero_bound(alpha, r.exact_units))


def difference_z(r: v.PairedResult) -> float:
    """|z| of the test of no difference: from its two-sided p (McNemar's exact test, or the z-test with
    the variance under no difference), never from the plug-in se, which few disagreements underestimate."""
    return float(sps.norm.isf(max(r.p_difference, 1e-300) / 2))


def metric_status(r: v.PairedResult, d: Design, look: int, j: int) -> tuple[str, float, float]:
    """Metric j: (equivalent | not equivalent | open, half-width of the equivalence interval, z of the difference)."""
    c, b = d.eq_bounds[look], d.ne_bounds[j][look]
    h = eq_half_width(r, c, d.alpha)
    z = difference_z(r)
    if abs(r.delta) + h < r.margin:
        return v.EQUIVALENT, h, z
    if z >= b and abs(r.delta) >= r.margin:
        return v.NOT_EQUIVALENT, h, z
    return OPEN, h, z


@dataclass(frozen=True)
class Look:
    """What one look found: per metric its status, the overall state, and how many samples it used."""

    index: int  # 0-based
    fraction: float
    samples: int  # task samples both endpoints answered through this look
    status: dict[str, str]  # metric -> equivalent | not equivalent | open (decided ones stay decided)
    decided_at: dict[str, int]  # metric -> look index it was decided at
    overall: str  # equivalent | not equivalent | open (| inconclusive at the last look)
    reason: str = ""
    judged: tuple[v.PairedResult, ...] = field(default_factory=tuple)


def examine(
    results: Sequence[v.PairedResult],
    d: Design,
    look: int,
    *,
    previous: Look | None = None,
    samples: int = 0,
) -> Look:
    """Judge every metric at `look` (0-based), keeping the decisions of earlier looks."""
    status = dict(previous.status) if previous else {}
    decided_at = dict(previous.decided_at) if previous else {}
    earlier = {r.metric: r for r in previous.judged} if previous else {}
    judged: list[v.PairedResult] = []
    for j, r in enumerate(results):
        if status.get(r.metric) in (v.EQUIVALENT, v.NOT_EQUIVALENT) and r.metric in earlier:
            judged.append(earlier[r.metric])  # decided earlier: shown as it was decided
            continue
        state, h, z = metric_status(r, d, look, j)
        status[r.metric] = state
        if state != OPEN:
            decided_at[r.metric] = look
        at = v.LookJudgement(state, look, len(d.times), z, d.ne_bounds[j][look])
        level = float(sps.norm.sf(d.eq_bounds[look]))
        verdict = state if state != OPEN else v.INCONCLUSIVE
        judged.append(v.at_interval(r, d.alpha, level, (r.delta - h, r.delta + h), verdict, look=at))
    states = [status[r.metric] for r in results]
    if v.NOT_EQUIVALENT in states:
        overall = v.NOT_EQUIVALENT
        names = [r.metric for r in results if status[r.metric] == v.NOT_EQUIVALENT]
        reason = f"{', '.join(names)} not equivalent (a difference beyond the margin is shown)"
    elif states and all(s == v.EQUIVALENT for s in states):
        overall = v.EQUIVALENT
        reason = "every metric equivalent within its margin"
    elif look == len(d.times) - 1:
        overall = v.INCONCLUSIVE
        names = [r.metric for r in results if status[r.metric] == OPEN]
        reason = f"the last look left {', '.join(names)} undecided"
    else:
        overall = OPEN
        reason = ""
    return Look(look, d.times[look], samples, status, decided_at, overall, reason, tuple(judged))


def verdict_of(look: Look) -> v.Verdict:
    """The overall verdict of a deciding look (or the last one), in the fixed-size verdict's shape (its
    reasons are written with the labels, `report.labels`)."""
    overall = look.overall if look.overall != OPEN else v.INCONCLUSIVE
    label = overall if overall != v.INCONCLUSIVE else f"{v.INCONCLUSIVE} ({look.reason})"
    alpha = look.judged[0].alpha if look.judged else v.ALPHA
    return v.Verdict(overall, label, v.EXIT_CODES[overall], alpha, None, (), look.judged)
