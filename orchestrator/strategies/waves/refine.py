"""REFINE: a whole wave proposed jointly by a Gaussian process and qLogNEI (BoTorch), told every finished run.

The three parts of BoTorch's getting-started path, nothing more: ``SingleTaskGP`` on the runs (inputs in the unit
cube, log factors in log space; outputs standardised), ``qLogNoisyExpectedImprovement`` over the observed points,
and ``optimize_acqf`` asked for ``q`` points at once (sequential greedy: each point is chosen knowing the ones before
it are pending, which is what a batch of 16 needs; Optuna's GPSampler has no pending points and proposes 16
near-copies). Replicated and noisy runs are fine: the GP fits a noise level, and the noisy EI integrates over the
incumbent instead of trusting the best observed value.

torch and botorch are imported inside :func:`propose`, so importing the strategies stays light.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from orchestrator.cells import Seeds, WavePlan
from orchestrator.run_record import RunRecord, records
from orchestrator.strategies.waves.space import Axis

# optimize_acqf's effort, near Ax's defaults (1024 raw samples, 20 restarts): a wave of 16 in 7 factors takes
# ~5 s on one CPU thread.
RAW_SAMPLES = 1024
RESTARTS = 10
# The model-based stop: the whole next batch is expected to gain less than this share of the noise SD.
STOP_SHARE = 0.1
# The GP's constant prior mean: "fitted" (the marginal likelihood chooses it, BoTorch's default), or pinned at a
# quantile of the standardised observations on the bad side ("worst", or "q25" for the 25th percentile), which
# makes the model pessimistic where it has no runs. Measured with fresh processes, 20 repetitions, paired by seed
# (docs/benchmarks.md): "worst" cut llm_finetune's median regret 0.035 -> 0.011 (better in 17 of 20) and
# hartmann6's 0.26 -> 0.22, but raised friedman1's 0.050 -> 0.072 (an edge optimum the pessimism keeps away from)
# and rosenbrock's 0.0043 -> 0.0071 (worse in 14 of 20), the surface we do not tune on; "q25" and "worst" on the
# first model wave only were worse than both. Kept "fitted" until a variant wins on the held-out surface too.
PRIOR_MEAN = "fitted"


@dataclass(frozen=True)
class Proposal:
    points: np.ndarray  # (q, d) in the unit cube
    expected_improvement: float  # E[max improvement of the batch] over the best posterior mean, response units
    noise_sd: float  # the GP's noise SD, response units
    best_mean: float  # the best posterior mean at an observed point, response units


def propose(x: np.ndarray, y: np.ndarray, *, maximize: bool, q: int, seed: int,
            prior_mean: str = "fitted") -> Proposal:
    """``q`` points in the unit cube from runs ``x`` (n, d) in the unit cube with responses ``y`` (n,). ``seed``
    makes the proposal reproducible (a resumed study proposes the same wave)."""
    import torch
    from botorch.acquisition.logei import qLogExpectedImprovement, qLogNoisyExpectedImprovement
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from botorch.optim import optimize_acqf
    from botorch.sampling import SobolQMCNormalSampler
    from gpytorch.means import ConstantMean
    from gpytorch.mlls import ExactMarginalLogLikelihood

    d = x.shape[1]
    sign = 1.0 if maximize else -1.0  # BoTorch maximises
    torch.manual_seed(seed)
    train_x = torch.tensor(x, dtype=torch.float64)
    train_y = torch.tensor(sign * y, dtype=torch.float64).unsqueeze(-1)
    model = SingleTaskGP(train_x, train_y, outcome_transform=Standardize(m=1), mean_module=ConstantMean())
    if prior_mean != "fitted":
        level = 0.0 if prior_mean == "worst" else float(prior_mean[1:]) / 100
        model.mean_module.constant = float(torch.quantile(model.train_targets, level))
        model.mean_module.raw_constant.requires_grad_(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fit retries and numerical jitter notes: the fit is still usable
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    acq = qLogNoisyExpectedImprovement(model, X_baseline=train_x, prune_baseline=True,
                                       sampler=SobolQMCNormalSampler(torch.Size([256]), seed=seed))
    bounds = torch.tensor(np.stack([np.zeros(d), np.ones(d)]), dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        points, _ = optimize_acqf(acq, bounds=bounds, q=q, num_restarts=RESTARTS, raw_samples=RAW_SAMPLES,
                                  sequential=True, options={"seed": seed, "maxiter": 100})
    with torch.no_grad():
        mean = model.posterior(train_x).mean.squeeze(-1)  # in response units: the posterior is untransformed
        best = float(mean.max())
        # qEI over the best posterior mean: what the whole batch is expected to gain, in response units.
        gain = qLogExpectedImprovement(model, best_f=best,
                                       sampler=SobolQMCNormalSampler(torch.Size([512]), seed=seed))
        expected = math.exp(float(gain(points.unsqueeze(0))))
        # The likelihood's noise is in standardised units.
        noise = float(model.likelihood.noise.mean().sqrt()) * float(model.outcome_transform.stdvs.squeeze())
    return Proposal(points.numpy(), expected, noise, sign * best)


def runs_in_unit(axes: dict[str, Axis], names: list[str], runs: list[RunRecord], metric: str,
                 fixed: dict) -> tuple[np.ndarray, np.ndarray]:
    """Every finished run (designed or proposed) as (x in the unit cube over ``names``, y); a pruned run with the
    final value its curve predicted (``RunRecord.estimate``), so the model does not propose its region again as if
    unknown. Runs at another level of a ``fixed`` categorical are left out (the model has no axis for it); a fixed
    numeric factor was judged inert, so its runs count wherever it stood."""
    rows, values = [], []
    for run in records(runs):
        value = run.estimate(metric)
        if value is None:
            continue
        if any(not axes[n].numeric and run.levels.get(n) != v for n, v in fixed.items()):
            continue
        rows.append([axes[n].to_unit(run.levels[n]) for n in names])
        values.append(value)
    return np.array(rows, dtype=float).reshape(-1, len(names)), np.array(values, dtype=float)


def refine_wave(axes: dict[str, Axis], open_: list[str], fixed: dict, runs: list[RunRecord], metric: str, goal: str,
                seeds: Seeds, runs_per_wave: int, wave: int, why: str) -> WavePlan | None | str:
    """A wave of points proposed jointly by the model over the ``open_`` numeric factors' whole ranges, the others at
    ``fixed``; the reason to stop when the model expects no improvement beyond the noise; None when there is nothing
    to fit a model on (fewer than two distinct finished results)."""
    from orchestrator.strategies.waves.explore import wave_seed

    x, y = runs_in_unit(axes, open_, runs, metric, fixed)
    if len(y) < 2 or np.ptp(y) == 0:
        return None  # nothing to fit a model on: the caller explores instead
    count = max(1, runs_per_wave // len(seeds.seeds))
    proposal = propose(x, y, maximize=goal == "maximize", q=count, seed=wave_seed(seeds.study, wave) % (1 << 31),
                       prior_mean=PRIOR_MEAN)
    said = (f"the model expects the batch to improve the best fitted {metric} {proposal.best_mean:.4g} by "
            f"{proposal.expected_improvement:.3g} (noise SD {proposal.noise_sd:.3g})")
    if proposal.expected_improvement < STOP_SHARE * proposal.noise_sd:
        return f"the model expects no improvement beyond the noise: {said}, under {STOP_SHARE:g} x the noise SD"
    points = [{**fixed, **{n: axes[n].from_unit(u) for n, u in zip(open_, row)}} for row in proposal.points]
    cells = seeds.at_every_seed(points)
    return WavePlan(cells, "model", f"refine: {why}; {count} points proposed jointly over {', '.join(open_)} by a "
                                    f"Gaussian process and qLogNEI, told {len(y)} finished runs; {said}")
