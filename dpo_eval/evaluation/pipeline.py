"""`dpo-eval report`: evaluate every checkpoint of one or more runs and write results.json (+ report).

    inputs ─► plan (resolve, check, identify: no model loads)
           ─► score ─► samples ─► kl ─► entropy ─► unseen ─► judge   (each artifact in the run store)
           ─► assemble (metrics) ─► OUT/results.json + OUT/tables/*.parquet ─► render (if available)

The samples phase samples each model with the user's --temperature/--top-p (for the judge and the length
figures) and, when those are tempered or truncated, also untempered (T = 1, top-p = 1) for the figures
that are expectations under π: the KL estimates (k1/k2/k3 and the kl pass) and the dispersion to unseen
responses (``Paths`` slot ``kl_samples``). With untempered user settings both slots hold the same artifact.

The judge phase also judges each round's training pairs of a `dpo-eval loop` run (chosen against rejected,
store kind ``agreement``: dpo_eval.evaluation.loop_rounds), for the labeller's agreement with the judge.

Every step checks the store before it loads anything, so a rerun with nothing new loads no model, and
a checkpoint added to a run computes only its own artifacts (the reference's are reused). Each phase
has a progress bar over its artifacts (stderr) and its wall time in ``timings``.

``--stages`` (ReportConfig.stages) runs only some phases (and the phases they need); the artifacts of
the phases run have the same store keys as in a full report, so a later full report reuses them, and the
figures of the phases not run are null in results.json (``missing`` says why).

Under torchrun the model passes of score, kl, entropy and unseen are shared across the ranks, sampling
and judging run on rank 0, and rank 0 alone writes the store, results.json and the report
(``dpo_eval.evaluation.parallel``); a process-group that the caller set up is left to the caller.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from dpo_eval.engine.distributed import DistContext, init_distributed, shutdown
from dpo_eval.evaluation import loop_rounds, steps
from dpo_eval.evaluation.config import STAGES, ReportConfig
from dpo_eval.evaluation.plan import Plan, Row, RunPlan, build_plan, default_out
from dpo_eval.evaluation.steps import KL_SAMPLES
from dpo_eval.evaluation.store import Artifact, Ledger, RunStore

PHASES = STAGES
REFERENCE = "@reference"
"""The label under which a run's reference samples and entropy are found in ``Paths``."""
UNTEMPERED = " (untempered)"
"""Appended to a name in the ledger and key.json for samples made only for the KL figures."""


@dataclass(frozen=True)
class Job:
    """One artifact to make, and the (slot, run, label) names whose results it holds (slot: the ``Paths``
    kind; the phase's kind except for the untempered samples, KL_SAMPLES)."""

    artifact: Artifact
    names: tuple[tuple[str, str, str], ...]
    compute: Callable[[Path], None]
    is_shared: bool = False
    """Every rank of a torchrun job computes its share (model passes); else rank 0 alone."""

    @property
    def display(self) -> str:
        """The names for the progress bar and the ledger: "run/label" once each, UNTEMPERED appended where
        the artifact holds only the untempered samples of that row."""
        plain = [f"{run}/{label}" for slot, run, label in self.names if slot != KL_SAMPLES]
        extra = [f"{run}/{label}{UNTEMPERED}" for slot, run, label in self.names
                 if slot == KL_SAMPLES and f"{run}/{label}" not in plain]
        return ", ".join(dict.fromkeys(plain + extra))


@dataclass
class Paths:
    """Finished artifact folders by (kind, run, label); the label REFERENCE names the run's reference."""

    folders: dict[tuple[str, str, str], Path] = field(default_factory=dict)

    def get(self, kind: str, run: str, label: str) -> Path | None:
        return self.folders.get((kind, run, label))

    def key(self, kind: str, run: str, label: str) -> str:
        return self.folders[(kind, run, label)].name


@dataclass(frozen=True)
class ReportResult:
    out: Path
    document: dict
    ledger: Ledger
    timings: dict[str, float]
    notes: tuple[str, ...]
    is_main_process: bool = True
    """False on the other ranks of a torchrun job (their ``document`` is empty: rank 0 writes the results)."""


# ---------------------------------------------------------------------------------------------- jobs


def _models(run_plan: RunPlan) -> list[tuple[str, str, str, str]]:
    """(label, path, fingerprint, tokenizer sha256) of the run's reference (label REFERENCE) and of each row."""
    ref = run_plan.ref_identity
    return [(REFERENCE, run_plan.reference.path, ref.fingerprint, run_plan.ref_tokenizer_sha256),
            *[(row.label, row.path, row.identity.fingerprint, row.tokenizer_sha256) for row in run_plan.rows]]


def _score_jobs(plan: Plan, store: RunStore, paths: Paths) -> list[Job]:
    return [Job(store.artifact("score", steps.score_parts(plan, rp, row)), (("score", rp.run.name, row.label),),
                lambda work, rp=rp, row=row: steps.run_score(plan, rp, row, work), is_shared=True)
            for rp in plan.runs for row in rp.rows]


def _samples_jobs(plan: Plan, store: RunStore, paths: Paths) -> list[Job]:
    """Per model: its samples at the user's sampling (slot samples) and untempered (slot KL_SAMPLES); one
    job (merged by _unique) when the two settings are equal."""
    return [Job(store.artifact("samples", steps.samples_parts(plan, rp, fingerprint, tokenizer, sampling)),
                ((slot, rp.run.name, label),),
                lambda work, rp=rp, path=path, sampling=sampling, fingerprint=fingerprint:
                steps.run_samples(plan, rp, path, work, sampling, fingerprint))
            for rp in plan.runs for label, path, fingerprint, tokenizer in _models(rp)
            for slot, sampling in (("samples", plan.sampling), (KL_SAMPLES, plan.untempered_sampling))]


JobBuilder = Callable[[Plan, RunStore, Paths], list[Job]]
PartsOnSamples = Callable[[Plan, RunPlan, Row, str], dict]
StepOnSamples = Callable[[Plan, RunPlan, Row, Path, Path], None]


def _row_jobs_on_samples(kind: str, parts: PartsOnSamples, step: StepOnSamples, is_on_reference: bool) -> JobBuilder:
    """A builder of one shared job of `kind` per (run, row), over samples already in ``Paths``.

    The samples are the row's own untempered samples, or (`is_on_reference`) its run's reference's. The
    artifact is named by ``parts(plan, run_plan, row, samples_key)`` and made by
    ``step(plan, run_plan, row, samples_dir, work)``.
    """
    def build(plan: Plan, store: RunStore, paths: Paths) -> list[Job]:
        jobs = []
        for rp in plan.runs:
            for row in rp.rows:
                samples = paths.get(KL_SAMPLES, rp.run.name, REFERENCE if is_on_reference else row.label)
                jobs.append(Job(store.artifact(kind, parts(plan, rp, row, samples.name)),
                                ((kind, rp.run.name, row.label),),
                                lambda work, rp=rp, row=row, samples=samples: step(plan, rp, row, samples, work),
                                is_shared=True))
        return jobs

    return build


_kl_jobs = _row_jobs_on_samples("kl", steps.kl_parts, steps.run_kl, is_on_reference=False)
"""KL along each row's own untempered samples."""


def _entropy_jobs(plan: Plan, store: RunStore, paths: Paths) -> list[Job]:
    return [Job(store.artifact("entropy", steps.entropy_parts(plan, fingerprint, tokenizer)),
                (("entropy", rp.run.name, label),),
                lambda work, rp=rp, path=path: steps.run_entropy(plan, rp, path, work), is_shared=True)
            for rp in plan.runs for label, path, fingerprint, tokenizer in _models(rp)]


_unseen_jobs = _row_jobs_on_samples("unseen", steps.unseen_parts, steps.run_unseen, is_on_reference=True)
"""Policy and reference log-probs of the unseen responses drawn from each run's untempered reference samples."""


def _judge_jobs(plan: Plan, store: RunStore, paths: Paths) -> list[Job]:
    if plan.judge is None:
        return []
    jobs = []
    for rp in plan.runs:
        ref_samples = paths.get("samples", rp.run.name, REFERENCE)
        for row in (r for r in rp.rows if r.identity.fingerprint != rp.ref_identity.fingerprint):
            samples = paths.get("samples", rp.run.name, row.label)
            parts = steps.judge_parts(plan, samples.name, ref_samples.name)
            jobs.append(Job(store.artifact("judge", parts), (("judge", rp.run.name, row.label),),
                            lambda work, samples=samples, ref=ref_samples: steps.run_judge(plan, samples, ref, work)))
    return jobs + _agreement_jobs(plan, store)


def _agreement_jobs(plan: Plan, store: RunStore) -> list[Job]:
    """Per loop run and round: the report's judge on the round's training pairs (dpo_eval.evaluation.loop_rounds)."""
    jobs = []
    for rp in plan.runs:
        record = loop_rounds.read_loop(rp.run)
        if record is None or loop_rounds.agreement_skip_reason(record, plan.judge) is not None:
            continue
        for entry in record["rounds"]:
            pairs = loop_rounds.pairs_path(rp.run, entry)
            if pairs is None:
                continue
            label = loop_rounds.round_label(entry["round"])
            jobs.append(Job(store.artifact(loop_rounds.AGREEMENT, loop_rounds.agreement_parts(pairs, plan.judge)),
                            ((loop_rounds.AGREEMENT, rp.run.name, label),),
                            lambda work, pairs=pairs: _judge_pairs(plan, pairs, work)))
    return jobs


def _judge_pairs(plan: Plan, pairs: Path, work: Path) -> None:
    chosen, rejected = loop_rounds.write_pair_sides(pairs, work)
    steps.run_judge(plan, chosen, rejected, work)


JOBS = {"score": _score_jobs, "samples": _samples_jobs, "kl": _kl_jobs, "entropy": _entropy_jobs,
        "unseen": _unseen_jobs, "judge": _judge_jobs}


# ---------------------------------------------------------------------------------------------- running


def _unique(jobs: list[Job]) -> list[Job]:
    """One job per artifact key, holding every name that shares it, in first-seen order (the first job's
    compute makes it: jobs of one key make the same artifact)."""
    merged: dict[str, Job] = {}
    for job in jobs:
        seen = merged.get(job.artifact.key)
        merged[job.artifact.key] = job if seen is None else Job(seen.artifact, seen.names + job.names, seen.compute,
                                                                seen.is_shared)
    return list(merged.values())


def run_phase(kind: str, plan: Plan, store: RunStore, paths: Paths) -> None:
    """Make (or find) every artifact of one kind, with a progress bar over them."""
    jobs = _unique(JOBS[kind](plan, store, paths))
    bar = tqdm(jobs, desc=f"report: {kind}", unit="artifact", file=sys.stderr,
               disable=not plan.config.show_progress or not jobs or not store.ctx.is_main)
    for job in bar:
        bar.set_postfix_str(job.display[:60])
        folder = store.ensure(job.artifact, job.display, job.compute, job.is_shared)
        for slot, run, label in job.names:
            paths.folders[(slot, run, label)] = folder
    bar.close()


def _render(out: Path) -> str | None:
    """Render the report with dpo_eval.reports.render when that module exists; returns a note otherwise."""
    try:
        from dpo_eval.reports.render import render
    except ImportError:
        return "report.html not written: the renderer (dpo_eval.reports.render) is not installed"
    try:
        render(out)
    except Exception as error:  # noqa: BLE001 - results.json is written; a renderer fault must not lose it
        return f"report.html not written: rendering failed ({type(error).__name__}: {error}); results.json is complete"
    return None


def _join() -> tuple[DistContext, bool]:
    """This process's place in a torchrun job, and whether the report made (and must end) its process group."""
    import torch
    import torch.distributed as dist

    was_joined = dist.is_available() and dist.is_initialized()
    ctx = init_distributed()
    if ctx.is_distributed and torch.cuda.is_available():
        torch.cuda.set_device(ctx.local_rank)  # object collectives (all_gather, broadcast) use the current device
    return ctx, ctx.is_distributed and not was_joined


def report(config: ReportConfig) -> ReportResult:
    """Evaluate the runs of ``config`` and write OUT/results.json, its tables and (if possible) the report.

    Under torchrun every rank calls this; rank 0 returns the results, the others an empty document.
    """
    ctx, owns_group = _join()
    result = _report(config, ctx)  # on an error this process just ends: torchrun stops the other ranks
    if owns_group:
        shutdown(ctx)
    return result


def _report(config: ReportConfig, ctx: DistContext) -> ReportResult:
    from dpo_eval.evaluation.assemble import assemble, write_results

    timings: dict[str, float] = {}
    started = time.monotonic()
    store = RunStore(Path(config.store) if config.store else default_out(config) / "store", ctx=ctx)
    plan = build_plan(config, store)
    store.write_ledger()  # this run's ledger from here on (a killed run leaves what it did)
    timings["plan"] = time.monotonic() - started
    paths = Paths()
    for kind in plan.stages:
        started = time.monotonic()
        run_phase(kind, plan, store, paths)
        timings[kind] = time.monotonic() - started
    if not ctx.is_main:
        return ReportResult(plan.out, {}, store.ledger, timings, (), is_main_process=False)
    started = time.monotonic()
    document, tables = assemble(plan, paths, REFERENCE)
    timings["assemble"] = time.monotonic() - started
    write_results(plan.out, document, tables, timings)
    notes = list(plan.warnings)
    if config.render:
        started = time.monotonic()
        note = _render(plan.out)
        timings["render"] = time.monotonic() - started
        notes += [note] if note else []
    store.write_ledger()
    return ReportResult(plan.out, document, store.ledger, timings, tuple(notes))


__all__ = ["PHASES", "ReportConfig", "ReportResult", "Row", "report"]
