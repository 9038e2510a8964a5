"""Statistics that decide whether an observed traffic split matches the configured one.

Three questions, three tools:

* **Is the split exactly what was configured?**  A sample ratio mismatch (SRM) test of the
  observed counts against the configured weights: Pearson chi-square or the G-test for any number
  of variants, the exact two-sided binomial test for two variants at small N (``method="auto"``
  uses it for two variants while the smaller expected count is below 100, chi-square otherwise).
  A failed SRM test is evidence that routing is off; a passed one proves nothing on its own.
* **Is every share within +-tolerance of its weight?**  An equivalence test (TOST): each
  variant's two-sided Wilson interval at ``confidence`` must lie inside ``[w - tol, w + tol]``.
  Using the two-sided interval makes each one-sided test run at ``(1 - confidence) / 2``, which is
  conservative and matches how the interval is reported.  *Multiplicity*: the claim "all k variants
  are within tolerance" is an intersection-union test, so each variant's test at the given level
  already bounds the chance of wrongly claiming the whole split holds; no Bonferroni correction is
  applied to the intervals.  The price is paid on the power side instead: the request planner splits
  the allowed miss rate ``1 - power`` over the k variants (for k >= 3; for two variants the two
  shares are complements and fail together).
* **Can a load run stop early?**  :class:`SequentialSplitTest` is anytime-valid: a
  Dirichlet-multinomial mixture Bayes factor (Lindon & Malek, arXiv 2011.03567) says "mismatch"
  and the matching beta-binomial mixture confidence sequence per variant says "holds", both valid
  however often the counts are peeked at.

Run-time dependencies are the standard library only (``math``, ``statistics``); the special
functions (regularized incomplete gamma, binomial probabilities after Loader's saddle-point
formulation) are written here so p-values agree with scipy to about 1e-12 relative.

The package's modules follow those concerns: ``_distributions`` (special functions, binomial,
Wilson), ``_fixed`` (SRM and tolerance tests, the verdict), ``_sequential`` (the anytime-valid
test), ``_planning`` (sample sizes) and ``_units`` (counting requests or connections); this module
re-exports their public names so ``from pytest_abtraffic._stats import ...`` keeps working.
"""

from __future__ import annotations

from ._common import DEFAULT_CONCENTRATION, SequentialVerdict, Unit, normalize_weights
from ._common import Method as Method
from ._distributions import binomial_two_sided_p, chi2_sf, regularized_gamma_q, wilson_interval
from ._fixed import SplitResult, SrmResult, VariantRow, assert_split, check_split, srm_test
from ._planning import default_request_budget, plan_sample_size, tolerance_power
from ._sequential import SequentialSplitTest, SequentialState
from ._units import RunningTally, UnitTally, counts_by_unit, tally_units

__all__ = [
    "DEFAULT_CONCENTRATION",
    "RunningTally",
    "SequentialSplitTest",
    "SequentialState",
    "SequentialVerdict",
    "SplitResult",
    "SrmResult",
    "Unit",
    "UnitTally",
    "VariantRow",
    "assert_split",
    "binomial_two_sided_p",
    "check_split",
    "chi2_sf",
    "counts_by_unit",
    "default_request_budget",
    "normalize_weights",
    "plan_sample_size",
    "regularized_gamma_q",
    "srm_test",
    "tally_units",
    "tolerance_power",
    "wilson_interval",
]
