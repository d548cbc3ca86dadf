"""SMBPO against SB3 SAC: safety, return and cost per env step (SPEC.md 2.1, seed 000 figures).

Both algorithms get the same env, warm-up (``learning_starts`` uniform-random steps), number of
gradient updates per env step, batch size, networks, critic learning rate (3e-4) and real replay buffer
(``--buffer-size``, the paper's 1e6 by default). The policy learning rates differ as in the paper and SB3:
SMBPO's is the paper's 1e-4 (its default ``actor_learning_rate``), SAC's SB3's 3e-4. The script reports:

* cumulative violations and episode returns against env steps (JSON and a PNG);
* wall time per env step after the warm-up for both, and the ratio SMBPO / SAC;
* the FLOPs of one env step's work after the warm-up (SAC updates; for SMBPO also the model
  rollouts and the amortised model fits), counted from the layer sizes;
* the matmul peak of the device, measured with a torch micro-benchmark at the start of the run,
  and the resulting utilisation (FLOPs per env step / time per env step / float32 peak); the
  bfloat16 peak is measured too when the command asks for bfloat16 (``--model-precision`` or
  ``--sac-hidden-precision``; NaN otherwise);
* the final deterministic evaluation (mean return, cost and violations over ``--eval-episodes``); with
  ``--eval-snapshots K``, of the policies of the last K steps ``--snapshot-every`` apart (the last being the
  final policy), each over the same start states, and their means: one snapshot's return can swing by more
  than a thousand within a few hundred steps on SafeHopper-v0 (docs/benchmarks.md);
* where SMBPO's time goes: ``--profile-steps`` more training steps of the trained SMBPO under
  cProfile (``--profiler cprofile``, the default), split into SAC updates, model fits, model rollouts and
  the rest (env stepping, acting, buffers, logging); or under torch's profiler (``--profiler torch``),
  the same split plus the torch operators' self times: the matmuls' share, the other operators' and the
  time outside any operator (Python and dispatch), with the costliest operators listed. Profiling slows
  Python, so these steps are not in the timings above.

Usage (the real benchmark is >= 30,000 steps, about two hours on a GPU)::

    python benchmarks/smbpo.py --env SafeHopper-v0 --steps 30000 --out-dir bench_out

On a CPU the two algorithms can run side by side, one per core, into the same ``--out-dir``
(``taskset -c 0 ... --algos smbpo`` and ``taskset -c 1 ... --algos sac``); whichever finishes
second writes the combined report. ``--checkpoint-every N`` saves the run (model, both buffers,
trace) every N env steps, and the same command with ``--resume`` continues from the last
checkpoint, so a run longer than one sitting survives being stopped. The wall time of a resumed
run counts only training (not the saving, loading or the interruption); the RNG streams restart
at the resume, so a resumed run is not bit-identical to an uninterrupted one.

Smoke run (minutes, numbers only meaningful as a check that everything runs)::

    python benchmarks/smbpo.py --steps 600 --learning-starts 300 --model-initial-gradient-steps 200 \\
        --model-gradient-steps 100 --out-dir /tmp/smbpo_smoke
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import json
import math
import pstats
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from bench_plots import saved_figure
from flop_counts import linear_macs, matmul_peak_flops, sac_update_flops
from stable_baselines3 import SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from torch import profiler as tprof
from torch._C._profiler import _ExperimentalConfig

import sb3_safe  # noqa: F401 - registers the safe envs
from sb3_safe.common.cost import read_vec_costs
from sb3_safe.common.evaluation import evaluate_safe_policy
from sb3_safe.common.float_modes import denormals_flushed
from sb3_safe.smbpo import SMBPO


@dataclass
class RunTrace:
    """What one training run recorded, including the counters that a resumed run continues."""

    steps: list[int] = field(default_factory=list)
    cumulative_violations: list[int] = field(default_factory=list)
    episode_end_steps: list[int] = field(default_factory=list)
    episode_returns: list[float] = field(default_factory=list)
    violations: int = 0
    warmup_done: bool = False
    violations_at_warmup_end: int = 0
    model_rows_at_warmup_end: int = 0
    model_updates_at_warmup_end: int = 0
    wall_s_after_warmup: float = 0.0
    steps_after_warmup: int = 0
    model_rows_after_warmup: int = 0
    model_updates_after_warmup: int = 0
    violations_after_warmup: int = 0


class Checkpoint:
    """A run's latest saved state in ``directory``: the model, its replay buffer(s) and the trace.

    Each save goes to a new ``step_<n>`` folder and ``latest`` is switched to it only once the
    folder is complete, so an interruption during a save leaves the previous checkpoint usable.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def save(self, model: BaseAlgorithm, trace: RunTrace) -> None:
        folder = self.directory / f"step_{model.num_timesteps}"
        folder.mkdir(parents=True, exist_ok=True)
        model.save(folder / "model.zip")
        model.save_replay_buffer(folder / "replay_buffer.pkl")  # type: ignore[attr-defined]
        (folder / "trace.json").write_text(json.dumps(asdict(trace)))
        previous = self.latest_folder()
        (self.directory / "latest.tmp").write_text(folder.name)
        (self.directory / "latest.tmp").replace(self.directory / "latest")
        if previous is not None and previous != folder:
            shutil.rmtree(previous)

    def latest_folder(self) -> Path | None:
        pointer = self.directory / "latest"
        return self.directory / pointer.read_text().strip() if pointer.exists() else None

    def load(
        self, algo_class: type[OffPolicyAlgorithm], env: gym.Env, device: str, **overrides: Any
    ) -> tuple[OffPolicyAlgorithm, RunTrace] | None:
        """The latest checkpoint's model (with ``overrides`` of its saved attributes, set by SB3's ``load``
        before the algorithm checks its arguments) and trace, or None when there is none yet."""
        folder = self.latest_folder()
        if folder is None:
            return None
        model = algo_class.load(folder / "model.zip", env=env, device=device, **overrides)
        model.load_replay_buffer(folder / "replay_buffer.pkl")
        return model, RunTrace(**json.loads((folder / "trace.json").read_text()))


class ActorSnapshots:
    """The actor's weights at the ``count - 1`` steps ``every`` apart before ``last_step``, saved in ``directory``
    as a run passes them (the last snapshot, of ``last_step``, is the trained model itself).

    Files rather than memory, so that a run stopped and resumed within the window keeps the snapshots it took
    before the stop; a resumed run passing a step again overwrites that step's file with its own path's actor,
    and a new run starts by removing the folder, so no snapshot of another run is evaluated as this one's.
    A snapshot of step ``t`` is taken where the checkpoints are (the start of the next rollout), so it holds
    step ``t``'s updates, like the ``step_<t>`` checkpoint and unlike ``benchmarks/smbpo_snapshots.py``'s.
    """

    def __init__(self, directory: Path, last_step: int, count: int, every: int) -> None:
        self.directory = directory
        self.last_step = last_step
        self.steps = [last_step - every * i for i in range(count - 1, 0, -1)]

    def path(self, step: int) -> Path:
        """The file of step ``step``'s snapshot."""
        return self.directory / f"step_{step}.pt"

    def clear(self) -> None:
        """Remove every snapshot, for a new run in a folder that may hold an earlier run's."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def save_if_due(self, model: BaseAlgorithm) -> None:
        """Save the actor when ``model`` is at one of the snapshot steps."""
        if model.num_timesteps in self.steps:
            self.directory.mkdir(parents=True, exist_ok=True)
            th.save(model.actor.state_dict(), self.path(model.num_timesteps))  # type: ignore[attr-defined]

    def check_taken_before(self, step: int) -> None:
        """Raise if a snapshot step before ``step`` (where a resumed run starts) has no file: the run would
        otherwise train to its end and only then find that it cannot be evaluated."""
        missing = [t for t in self.steps if t < step and not self.path(t).exists()]
        if missing:
            raise FileNotFoundError(
                f"no actor snapshot of steps {missing} in {self.directory}: the run passed them without "
                "--eval-snapshots (or with a smaller one or another --snapshot-every), so it can be evaluated only "
                "at snapshots it took (--eval-snapshots 1: the final policy)"
            )

    def load(self) -> list[tuple[int, dict[str, th.Tensor]]]:
        """Every saved snapshot before the last step, oldest first, on the CPU (``load_state_dict`` copies them to
        the model's device)."""
        self.check_taken_before(self.last_step)
        return [(step, th.load(self.path(step), map_location="cpu", weights_only=True)) for step in self.steps]


class TraceCallback(BaseCallback):
    """Records violations, episode returns and the wall time after the warm-up; saves a
    checkpoint every ``checkpoint_every`` env steps and at the end of training (the saving is not timed),
    and the actor snapshots of ``snapshots``."""

    def __init__(
        self,
        trace: RunTrace,
        learning_starts: int,
        every: int = 100,
        checkpoint: Checkpoint | None = None,
        checkpoint_every: int = 0,
        snapshots: ActorSnapshots | None = None,
    ) -> None:
        super().__init__()
        self.trace = trace
        self.learning_starts = learning_starts
        self.every = every
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.snapshots = snapshots
        self.segment_start: float | None = None
        self.last_saved_step: int | None = None

    def _model_rows(self) -> int:
        return int(getattr(self.model, "model_rows_generated", 0))

    def _model_updates(self) -> int:
        return int(getattr(self.model, "model_updates_done", 0))

    def _on_training_start(self) -> None:
        self.last_saved_step = self.num_timesteps  # a resumed run starts from a saved step
        if self.trace.warmup_done:
            self.segment_start = time.perf_counter()

    def _close_segment(self) -> None:
        if isinstance(self.model, SMBPO):
            self.model.wait_for_model_fit()  # a background fit's remaining work belongs to the timed run
        if self.segment_start is not None:
            self.trace.wall_s_after_warmup += time.perf_counter() - self.segment_start
            self.segment_start = None
        self._count_after_warmup()

    def _count_after_warmup(self) -> None:
        # Brought up to date at every checkpoint, not only at the end, because benchmarks/smbpo_segment.py
        # counts a resumed run's stretch from the trace of the checkpoint it resumed from.
        trace = self.trace
        if trace.warmup_done:
            trace.steps_after_warmup = self.num_timesteps - self.learning_starts
            trace.model_rows_after_warmup = self._model_rows() - trace.model_rows_at_warmup_end
            trace.model_updates_after_warmup = self._model_updates() - trace.model_updates_at_warmup_end
            trace.violations_after_warmup = trace.violations - trace.violations_at_warmup_end

    def _on_step(self) -> bool:
        trace = self.trace
        infos = self.locals["infos"]
        _, violations = read_vec_costs(infos, "benchmark", self.num_timesteps)
        trace.violations += int(violations.sum())
        for info in infos:
            if "episode" in info:
                trace.episode_end_steps.append(self.num_timesteps)
                trace.episode_returns.append(float(info["episode"]["r"]))
        if self.num_timesteps % self.every == 0:
            trace.steps.append(self.num_timesteps)
            trace.cumulative_violations.append(trace.violations)
        if not trace.warmup_done and self.num_timesteps >= self.learning_starts:
            trace.warmup_done = True
            self.segment_start = time.perf_counter()
            trace.violations_at_warmup_end = trace.violations
            trace.model_rows_at_warmup_end = self._model_rows()
            trace.model_updates_at_warmup_end = self._model_updates()
        return True

    def _on_rollout_start(self) -> None:
        # SB3 stores a step's transition after the step callbacks and trains after the rollout, so
        # the start of the next rollout is the first point at which the buffers and the networks
        # are complete for the steps done so far.
        if self.snapshots is not None:
            self.snapshots.save_if_due(self.model)  # about a millisecond, so left in the timed work
        if self.checkpoint_every and self.num_timesteps % self.checkpoint_every == 0:
            self._close_segment()
            self._save_checkpoint()
            if self.trace.warmup_done:
                self.segment_start = time.perf_counter()

    def _save_checkpoint(self) -> None:
        step = self.num_timesteps
        if self.checkpoint is not None and self.checkpoint_every and step > 0 and step != self.last_saved_step:
            self.checkpoint.save(self.model, self.trace)
            self.last_saved_step = step
            # A progress line, since the report comes only at the end of runs that take hours.
            trace = self.trace
            print(
                f"{type(self.model).__name__} step {step}: {trace.violations} violations, "
                f"{trace.wall_s_after_warmup:.0f} s after the warm-up, checkpoint saved",
                flush=True,
            )

    def _on_training_end(self) -> None:
        self._close_segment()
        # The finished run too, so that a resume after training (during the evaluation or the
        # profile) trains no further step.
        self._save_checkpoint()


def smbpo_extra_flops_per_step(model: SMBPO, model_rows_per_step: float, model_updates_per_step: float) -> float:
    """FLOPs per env step of the model rollouts and the model fits (both measured counts, so the
    initial fit is included when it falls in the timed window).

    A rollout row runs through one ensemble member (GaussianEnsemble.sample_step) and the actor;
    a fit update runs every member on its own minibatch, forward and backward (3 x forward).
    """
    ensemble_row = 2.0 * linear_macs(model.dynamics)  # all members, one input row each
    actor_row = 2.0 * linear_macs(model.actor)
    rollouts = model_rows_per_step * (ensemble_row / model.ensemble_size + actor_row)
    fit = model_updates_per_step * 3.0 * ensemble_row * model.model_batch_size
    return rollouts + fit


def flops_per_env_step(
    model: OffPolicyAlgorithm, gradient_steps: int, batch_size: int, model_rows_per_step: float,
    model_updates_per_step: float,
) -> float:
    """FLOPs of one env step's work: the SAC updates, and for SMBPO its rollouts and model fits."""
    fused_update = getattr(model, "fused_sac_update", False)
    flops = gradient_steps * sac_update_flops(model, batch_size, fused_update)  # type: ignore[arg-type]
    if isinstance(model, SMBPO):
        flops += smbpo_extra_flops_per_step(model, model_rows_per_step, model_updates_per_step)
    return flops


# The methods of SMBPO.train that do each part of its work: the parts both profilers report.
SMBPO_PARTS = {"sac_updates": "_sac_update", "model_fits": "_maybe_fit_model", "model_rollouts": "model_rollouts"}
# The kernels that do the FLOPs counted above: Linear layers become addmm (forward) and mm (backward), the ensemble's
# batched members baddbmm / bmm.
MATMUL_OPS = frozenset({"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation"})


def profile_smbpo(model: SMBPO, steps: int) -> dict[str, Any]:
    """Share of the wall time of ``steps`` more training steps spent in each part of SMBPO's work.

    cProfile's cumulative times of the methods that do each part: SAC's updates (``SMBPO._sac_update``:
    SB3's ``SAC.train`` or ``fused_sac_train``), the model fits (``SMBPO._maybe_fit_model``; with ``--background-model-fit`` only
    the main thread's share of them: waiting for a fit that has not finished and copying the data for the
    next) and the model rollouts (``SMBPO.model_rollouts``); the rest is env stepping, acting, buffer writes
    and logging.
    """
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.runcall(model.learn, steps, reset_num_timesteps=False)
    total = time.perf_counter() - start
    cumulative = {(path, name): row[3] for (path, _, name), row in pstats.Stats(profiler).stats.items()}  # type: ignore[attr-defined]

    def seconds(name: str, path_end: str) -> float:
        return sum(t for (path, fn), t in cumulative.items() if fn == name and path.endswith(path_end))

    parts = {part: seconds(name, "smbpo/smbpo.py") for part, name in SMBPO_PARTS.items()}
    parts["env_acting_buffers_logging"] = total - sum(parts.values())
    return {"profiler": "cprofile", "profiled_steps": steps, "wall_s": total,
            **{f"share_{k}": v / total for k, v in parts.items()}}


@dataclass
class RecordedRange:
    """One name's ranges in a torch profile (an operator's calls, or a labelled range): total and self seconds."""

    total_s: float = 0.0
    self_s: float = 0.0
    calls: int = 0


def recorded_ranges(prof: tprof.profile) -> dict[int, dict[str, RecordedRange]]:
    """Total and self time of every operator and labelled range the profiler recorded, by thread and name.

    Read from the raw events rather than ``prof.key_averages()``, which first builds a Python object tree of
    every event: about 0.4 ms per event here, minutes and gigabytes for the two million operator calls of 250
    SMBPO steps, where a stack over the events sorted by start takes seconds. A range's self time is its
    duration less that of the ranges directly inside it on the same thread. A range directly inside one of
    the same name (an operator re-dispatched under its own name) counts as part of that call; torch's tables
    merge such a pair only when the inner range is the outer's only child.
    """
    by_thread: dict[int, list[tuple[int, int, str]]] = {}
    for event in prof.profiler.kineto_results.events():
        if event.device_type() == th.autograd.DeviceType.CPU and event.name() != "[memory]":
            by_thread.setdefault(event.start_thread_id(), []).append(
                (event.start_ns(), -event.duration_ns(), event.name())
            )
    return {thread: thread_ranges(events) for thread, events in by_thread.items()}


def thread_ranges(events: list[tuple[int, int, str]]) -> dict[str, RecordedRange]:
    """:func:`recorded_ranges` of one thread's ``(start_ns, -duration_ns, name)`` events."""
    ranges: dict[str, RecordedRange] = {}
    open_ranges: list[tuple[int, RecordedRange]] = []  # (end in ns, range) of the ranges enclosing this one
    for start, minus_duration, name in sorted(events):  # a parent before the children that start with it
        end = start - minus_duration
        while open_ranges and (open_ranges[-1][0] <= start or open_ranges[-1][0] < end):  # ended, or not enclosing
            open_ranges.pop()
        recorded = ranges.setdefault(name, RecordedRange())
        parent = open_ranges[-1][1] if open_ranges else None
        if parent is not recorded:
            duration_s = -minus_duration / 1e9
            if parent is not None:
                parent.self_s -= duration_s
            recorded.total_s += duration_s
            recorded.self_s += duration_s
            recorded.calls += 1
        open_ranges.append((end, recorded))
    return ranges


@contextmanager
def labelled_methods(model: SMBPO, labels: dict[str, str]) -> Iterator[None]:
    """Wrap each named method of ``model`` (this instance only) in a torch profiler range named by its label.

    SMBPO has no profiler ranges of its own: they would cost every user a call per part and step, so the
    benchmark adds them for the profiled steps only and puts the instance's attributes back afterwards.
    """

    def labelled(label: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            with tprof.record_function(label):
                return method(*args, **kwargs)

        return run

    own_attributes = {name: vars(model)[name] for name in labels.values() if name in vars(model)}
    try:
        for label, name in labels.items():
            setattr(model, name, labelled(label, getattr(model, name)))
        yield
    finally:
        for name in labels.values():
            vars(model).pop(name, None)
        vars(model).update(own_attributes)


def operator_times(ranges: dict[str, RecordedRange], wall_s: float, top_ops: int) -> dict[str, Any]:
    """The self times of one thread's torch operators (``aten::``) as shares of ``wall_s``: matmuls, the others,
    and the costliest operators. The other ranges (autograd's engine and nodes, the optimisers' and our
    labels) are Python and framework code, not operators."""
    operators = {name: r for name, r in ranges.items() if name.startswith("aten::")}
    matmul_s = sum(r.self_s for name, r in operators.items() if name in MATMUL_OPS)
    costliest = sorted(operators.items(), key=lambda item: -item[1].self_s)[:top_ops]
    return {
        "share_matmul_ops": matmul_s / wall_s,
        "share_other_ops": sum(r.self_s for name, r in operators.items() if name not in MATMUL_OPS) / wall_s,
        "top_ops": [{"name": name, "self_s": r.self_s, "calls": r.calls, "share": r.self_s / wall_s}
                    for name, r in costliest],
    }


def torch_profiler_config(device: th.device) -> _ExperimentalConfig:
    """The torch profiler setting that records every thread, not only the one that starts it (SMBPO's model
    fits run in a thread of their own), for a run on ``device``; ``main`` asks for it before training, so that
    an unsupported run is refused then rather than after hours.

    A private, experimental torch option (torch >= 2.7); on an older torch this raises ``TypeError``. Refused
    off the CPU: there an operator's CPU time is its kernel launch, not its work."""
    if device.type != "cpu":
        raise ValueError(
            f"--profiler torch splits the CPU time of torch's operators; on {device} an operator's CPU time is its "
            "kernel launch, not its work: use --profiler cprofile there"
        )
    return _ExperimentalConfig(profile_all_threads=True)


def torch_profile_smbpo(model: SMBPO, steps: int, top_ops: int = 15) -> dict[str, Any]:
    """Where the wall time of ``steps`` more training steps goes, from torch's profiler (CPU runs only).

    The parts (``share_<part>``) are as in :func:`profile_smbpo`. Beside them, the main thread's time splits
    into its operators' self times (:func:`operator_times`: ``share_matmul_ops``, the work the utilisation
    counts, and ``share_other_ops``: element-wise maths, optimiser kernels, copies, indexing), its wait for
    the model-fit thread (``share_waiting_for_model_fit``: the model-fit part's own time outside any range
    inside it) and the rest (``share_outside_ops``: Python, SB3, MuJoCo, autograd's engine, dispatch and the
    profiler's own cost). SMBPO fits its model in a thread of its own, synchronously or in the background:
    that thread's operator times are under ``model_fit_thread``, as shares of the same wall time (in the
    background they overlap the main thread's).
    """
    with labelled_methods(model, SMBPO_PARTS), tprof.profile(
        activities=[tprof.ProfilerActivity.CPU], experimental_config=torch_profiler_config(model.device)
    ) as prof:
        start = time.perf_counter()
        model.learn(steps, reset_num_timesteps=False)
        wall_s = time.perf_counter() - start
    threads = recorded_ranges(prof)
    main_thread = next((thread for thread, ranges in threads.items() if "sac_updates" in ranges), None)
    if main_thread is None:
        raise ValueError(f"the {steps} profiled steps made no SAC update (--gradient-steps 0?): nothing to split")
    main = threads.pop(main_thread)
    fit_thread: dict[str, RecordedRange] = {}  # every other thread, merged: in SMBPO only the model fit's records any
    for ranges in threads.values():
        for name, r in ranges.items():
            merged = fit_thread.setdefault(name, RecordedRange())
            merged.self_s += r.self_s
            merged.calls += r.calls
    main_operators = operator_times(main, wall_s, top_ops)
    waiting_s = main["model_fits"].self_s if "model_fits" in main else 0.0
    return {
        "profiler": "torch",
        "profiled_steps": steps,
        "wall_s": wall_s,
        **{f"share_{part}": main[part].total_s / wall_s if part in main else 0.0 for part in SMBPO_PARTS},
        "share_env_acting_buffers_logging": 1.0 - sum(main[p].total_s for p in SMBPO_PARTS if p in main) / wall_s,
        **main_operators,
        "share_waiting_for_model_fit": waiting_s / wall_s,
        "share_outside_ops": 1.0 - (main_operators["share_matmul_ops"] + main_operators["share_other_ops"]
                                    + waiting_s / wall_s),
        "model_fit_thread": operator_times(fit_thread, wall_s, top_ops),
    }


PROFILERS: dict[str, Callable[[SMBPO, int], dict[str, Any]]] = {"cprofile": profile_smbpo, "torch": torch_profile_smbpo}
ALGORITHMS: dict[str, type[OffPolicyAlgorithm]] = {"sac": SAC, "smbpo": SMBPO}


def new_model(algo: str, env: gym.Env, args: argparse.Namespace) -> OffPolicyAlgorithm:
    """SAC or SMBPO with the settings the two share (and SMBPO's model settings)."""
    common: dict[str, Any] = {
        "learning_starts": args.learning_starts,
        "gradient_steps": args.gradient_steps,
        "batch_size": args.batch_size,
        "learning_rate": 3e-4,
        "buffer_size": args.buffer_size,
        "policy_kwargs": {"net_arch": [256, 256]},
        "target_entropy": args.target_entropy,
        "seed": args.seed,
        "device": args.device,
    }
    if algo == "smbpo":
        if args.fused_sac_update:
            # Adam's fused kernel too: with one backward pass, the optimiser steps are a visible share.
            common["policy_kwargs"] = {**common["policy_kwargs"], "optimizer_kwargs": {"fused": True}}
        return SMBPO(
            "MlpPolicy",
            env,
            **common,
            model_buffer_size=args.model_buffer_size,
            rollout_batch_size=args.rollout_batch_size,
            rollout_horizon=args.rollout_horizon,
            model_gradient_steps=args.model_gradient_steps,
            model_initial_gradient_steps=args.model_initial_gradient_steps,
            background_model_fit=args.background_model_fit,
            fused_sac_update=args.fused_sac_update,
            **given_smbpo_settings(args),
        )
    return SAC("MlpPolicy", env, **common)


def given_smbpo_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``--rollout-freq``, ``--model-precision`` and ``--sac-hidden-precision`` where the command gives them: a
    new run takes SMBPO's defaults (the paper's) for the others, a resumed run its checkpoint's."""
    given = {
        "rollout_freq": args.rollout_freq,
        "model_precision": args.model_precision,
        "sac_hidden_precision": args.sac_hidden_precision,
    }
    return {name: value for name, value in given.items() if value is not None}


def sac_flushes_denormals(algo: str, args: argparse.Namespace) -> bool:
    """Whether this run is SB3's SAC with denormals flushed (``--sac-flush-denormals``); SMBPO flushes them
    in its own ``train()`` whatever the flag."""
    return algo == "sac" and args.sac_flush_denormals


def slots_per_env(capacity: int, n_envs: int) -> int:
    """Slots per env of an SB3 replay buffer made with ``buffer_size=capacity`` (SB3's own rule)."""
    return max(capacity // n_envs, 1)


def buffer_can_grow(model: OffPolicyAlgorithm, capacity: int) -> bool:
    """Whether ``model``'s real buffer can take ``capacity`` (transitions over all envs, as SB3's
    ``buffer_size``) as if it had been made with it: more slots, no transition overwritten yet (at most one
    per slot so far), and next observations stored apart (with SB3's ``optimize_memory_usage`` a full
    buffer's first slot already holds the last transition's next observation)."""
    buffer = model.replay_buffer
    assert buffer is not None
    return (
        slots_per_env(capacity, buffer.n_envs) > buffer.buffer_size
        and model.num_timesteps <= buffer.buffer_size * buffer.n_envs
        and not buffer.optimize_memory_usage
    )


def grow_replay_buffer(model: OffPolicyAlgorithm, capacity: int) -> None:
    """Give ``model``'s real buffer (SB3's ``ReplayBuffer`` or a subclass) room for ``capacity`` transitions,
    keeping its transitions in their slots.

    For a buffer that can grow (:func:`buffer_can_grow`) this is the buffer a run made with ``capacity``
    would hold, so a run checkpointed with a small buffer can go on with the paper's 1e6 exactly as a 1e6
    run would. SB3 sizes every per-transition array by its slots and offers no resize, hence the copy here.
    """
    buffer = model.replay_buffer
    assert buffer is not None
    old_slots, stored, slots = buffer.buffer_size, buffer.size(), slots_per_env(capacity, buffer.n_envs)
    for name, array in list(vars(buffer).items()):
        if isinstance(array, np.ndarray) and array.shape[:1] == (old_slots,):
            grown = np.zeros((slots, *array.shape[1:]), dtype=array.dtype)
            grown[:old_slots] = array
            setattr(buffer, name, grown)
    buffer.buffer_size, model.buffer_size = slots, capacity
    buffer.pos, buffer.full = stored, False


def train(algo: str, args: argparse.Namespace) -> tuple[OffPolicyAlgorithm, RunTrace]:
    """Train ``algo`` to ``args.steps`` env steps, from the last checkpoint when ``--resume`` finds one."""
    env = gym.make(args.env)
    checkpoint = Checkpoint(args.out_dir / f"{algo}_checkpoint")
    # The given ones win over the checkpoint's (the ensemble's weights are float32 in either precision, so a
    # run can switch); otherwise the run keeps its own.
    overrides = given_smbpo_settings(args) if algo == "smbpo" else {}
    restored = checkpoint.load(ALGORITHMS[algo], env, args.device, **overrides) if args.resume else None
    model, trace = restored if restored is not None else (new_model(algo, env, args), RunTrace())
    buffer = model.replay_buffer
    assert buffer is not None
    if buffer.buffer_size != slots_per_env(args.buffer_size, buffer.n_envs):
        if not buffer_can_grow(model, args.buffer_size):
            # A loaded buffer keeps the capacity it was made with; a run resumed with another one would report
            # results of a buffer it does not have.
            raise ValueError(
                f"the {algo} checkpoint in {checkpoint.directory} has a replay buffer of "
                f"{buffer.buffer_size * buffer.n_envs} transitions but --buffer-size is {args.buffer_size}: "
                "resume with the checkpoint's --buffer-size (a larger one is accepted only while the checkpoint's "
                "buffer has overwritten nothing)"
            )
        grow_replay_buffer(model, args.buffer_size)
    snapshots = actor_snapshots(algo, args)
    if restored is None:
        snapshots.clear()
    snapshots.check_taken_before(model.num_timesteps)  # a resumed run takes the later ones itself
    callback = TraceCallback(
        trace, args.learning_starts, checkpoint=checkpoint, checkpoint_every=args.checkpoint_every, snapshots=snapshots
    )
    flush = denormals_flushed() if sac_flushes_denormals(algo, args) else nullcontext()
    if model.num_timesteps < args.steps:
        with flush:
            model.learn(args.steps - model.num_timesteps, callback=callback, reset_num_timesteps=restored is None)
    return model, trace


def actor_snapshots(algo: str, args: argparse.Namespace) -> ActorSnapshots:
    """Where ``algo``'s run keeps the snapshots that ``--eval-snapshots`` evaluates besides the final policy."""
    return ActorSnapshots(args.out_dir / f"{algo}_snapshots", args.steps, args.eval_snapshots, args.snapshot_every)


def algorithm_result(algo: str, args: argparse.Namespace, peak: float, peak_bf16: float) -> dict[str, Any]:
    """Train ``algo``, evaluate it and count its work: the per-algorithm part of the report."""
    model, trace = train(algo, args)
    per_step_s = trace.wall_s_after_warmup / max(trace.steps_after_warmup, 1)
    steps = max(trace.steps_after_warmup, 1)
    flops = flops_per_env_step(
        model, args.gradient_steps, args.batch_size,
        trace.model_rows_after_warmup / steps, trace.model_updates_after_warmup / steps,
    )
    settings = run_settings(args, algo)
    # The peak was measured with --threads threads; a background model fit adds a core.
    peak_of_run = peak * settings["cpu_cores"] / args.threads if model.device.type == "cpu" else peak
    result: dict[str, Any] = {
        "run": settings,
        **asdict(trace),
        **snapshot_evaluation(model, actor_snapshots(algo, args), args.env, args.eval_episodes, args.seed),
        "violations_total": trace.violations,
        "sac_flush_denormals": sac_flushes_denormals(algo, args),
        "wall_s_per_env_step": per_step_s,
        "flops_per_env_step": flops,
        "matmul_peak_flops": peak,
        "matmul_peak_flops_bfloat16": peak_bf16,
        **({"smbpo_settings": smbpo_settings(model)} if isinstance(model, SMBPO) else {}),
        "utilisation": flops / per_step_s / peak_of_run if per_step_s > 0 else float("nan"),
    }
    if isinstance(model, SMBPO) and args.profile_steps > 0:
        result["profile"] = PROFILERS[args.profiler](model, args.profile_steps)
    return result


def smbpo_settings(model: SMBPO) -> dict[str, Any]:
    """SMBPO's own settings that the shared ``run`` entry leaves out (its speed options and its policy learning
    rate), as the run ended (a resumed run may have changed some), for the result."""
    names = ("model_precision", "rollout_freq", "fused_sac_update", "sac_hidden_precision", "background_model_fit",
             "actor_learning_rate")
    return {name: getattr(model, name) for name in names}


def run_settings(args: argparse.Namespace, algo: str) -> dict[str, Any]:
    """The settings both algorithms' results must share to be compared.

    ``cpu_cores`` is what the run occupies: ``--threads``, plus one for SMBPO's background model fit, so
    SAC with ``--threads 2`` pairs with SMBPO with ``--threads 1 --background-model-fit``. With ``--eval-snapshots``
    above 1 the evaluation settings are among them, so that the two evaluation returns are comparable.
    """
    keys = ("env", "steps", "learning_starts", "gradient_steps", "batch_size", "buffer_size", "seed", "device")
    # --model-precision is left out: SAC has no model, so one SAC run pairs with SMBPO runs of either precision.
    settings = {key: getattr(args, key) for key in keys}
    if args.eval_snapshots > 1:
        # Only then, so that results of runs made before --eval-snapshots existed still pair with new ones.
        settings.update({key: getattr(args, key) for key in ("eval_episodes", "eval_snapshots", "snapshot_every")})
    settings["cpu_cores"] = args.threads + int(algo == "smbpo" and args.background_model_fit)
    return settings


def smbpo_over_sac(
    smbpo: dict[str, Any], sac: dict[str, Any], seconds_key: str, falls_key: str, hint: str = ""
) -> tuple[float, float]:
    """SMBPO / SAC of the time per env step and of the falls after the warm-up (NaN when SAC never fell),
    read from ``seconds_key`` and ``falls_key`` of two results (or stretches) with a ``run`` entry.

    :param hint: appended to the error for runs of different settings, whose ratios would mean nothing
    """
    if smbpo["run"] != sac["run"]:
        raise ValueError(f"the SMBPO and SAC runs come from different settings: {smbpo['run']} vs {sac['run']}{hint}")
    falls_ratio = smbpo[falls_key] / sac[falls_key] if sac[falls_key] else float("nan")
    return smbpo[seconds_key] / sac[seconds_key], falls_ratio


def combined_report(results: dict[str, dict[str, Any]], args: argparse.Namespace, device: th.device) -> dict[str, Any]:
    """The ratios SMBPO / SAC from the two algorithms' results (possibly from two processes)."""
    time_ratio, falls_ratio = smbpo_over_sac(
        results["smbpo"], results["sac"], "wall_s_per_env_step", "violations_after_warmup",
        hint=" (results in --out-dir; use a fresh --out-dir)",
    )
    sac_return = results["sac"]["eval_return"]
    # A ratio of returns reads as "x times SAC's" only for a positive SAC return (not on SafePendulum-v0).
    return_ratio = results["smbpo"]["eval_return"] / sac_return if sac_return > 0 else float("nan")
    return {"env": args.env, "device": str(device), "args": {k: str(v) for k, v in vars(args).items()},
            "algorithms": results, "time_ratio_smbpo_over_sac": time_ratio,
            "violations_after_warmup_ratio_smbpo_over_sac": falls_ratio,
            "eval_return_ratio_smbpo_over_sac": return_ratio}


def final_evaluation(model: BaseAlgorithm, env_id: str, n_episodes: int, seed: int) -> dict[str, float]:
    """Mean return, cost and violations of ``n_episodes`` deterministic episodes of the trained policy."""
    env = gym.make(env_id)
    env.reset(seed=seed + 10_000)
    returns, _, costs, violations = evaluate_safe_policy(model, env, n_episodes, return_episode_rewards=True)
    env.close()
    return {
        "eval_return": float(sum(returns) / len(returns)),
        "eval_cost": float(sum(costs) / len(costs)),
        "eval_violations": float(sum(violations) / len(violations)),
    }


def snapshot_evaluation(
    model: BaseAlgorithm, snapshots: ActorSnapshots, env_id: str, n_episodes: int, seed: int
) -> dict[str, Any]:
    """:func:`final_evaluation` of every snapshot and of the final policy, all from the same start states, and
    their means; the model's actor is the final one again afterwards, even after an error (the script goes on to
    profile the trained model)."""
    final_weights = copy.deepcopy(model.actor.state_dict())  # type: ignore[attr-defined]
    evaluations = []
    try:
        for step, weights in [*snapshots.load(), (snapshots.last_step, final_weights)]:
            model.actor.load_state_dict(weights)  # type: ignore[attr-defined]
            evaluations.append({"step": step, **final_evaluation(model, env_id, n_episodes, seed)})
    finally:
        model.actor.load_state_dict(final_weights)  # type: ignore[attr-defined]
    means = {key: float(np.mean([e[key] for e in evaluations])) for key in ("eval_return", "eval_cost", "eval_violations")}
    return {**means, "snapshot_evaluations": evaluations}


def plot(results: dict[str, dict[str, Any]], path: Path, env_id: str) -> None:
    with saved_figure(path, 1, 2, figsize=(11, 4), dpi=120) as (fig, (left, right)):
        for name, result in results.items():
            left.plot(result["steps"], result["cumulative_violations"], label=name)
            right.plot(result["episode_end_steps"], result["episode_returns"], ".-", label=name)
        left.set(xlabel="env steps", ylabel="cumulative violations", title=f"{env_id}: violations")
        right.set(xlabel="env steps", ylabel="episode return", title=f"{env_id}: return")
        left.legend()
        right.legend()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="SafeHopper-v0")
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--learning-starts", type=int, default=5000)
    parser.add_argument("--gradient-steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--buffer-size", type=int, default=1_000_000,
                        help="real replay buffer capacity of both algorithms (paper: 1e6); a resumed run must give its checkpoint's")
    parser.add_argument("--target-entropy", type=float, default=-1.0, help="paper: hopper -1")
    parser.add_argument("--rollout-batch-size", type=int, default=100)
    parser.add_argument("--rollout-horizon", type=int, default=10)
    parser.add_argument("--rollout-freq", type=int, default=None,
                        help="SMBPO branches its rollouts every N env steps, --rollout-batch-size for each step since "
                             "the last ones (default: SMBPO's, 1 as in the paper); given with --resume, it replaces the "
                             "checkpoint's")
    parser.add_argument("--model-buffer-size", type=int, default=1_000_000)
    parser.add_argument("--model-gradient-steps", type=int, default=2000)
    parser.add_argument("--model-initial-gradient-steps", type=int, default=10_000)
    parser.add_argument("--model-precision", choices=("float32", "bfloat16"), default=None,
                        help="dtype of SMBPO's ensemble hidden matmuls (default: SMBPO's, float32 as in the paper); "
                             "given with --resume, it replaces the checkpoint's")
    parser.add_argument("--background-model-fit", action="store_true",
                        help="SMBPO fits its model in a background thread on one more core (not the paper's timing)")
    parser.add_argument("--fused-sac-update", action="store_true",
                        help="SMBPO's SAC steps with one backward pass (SMBPO(fused_sac_update=True)) and fused Adam "
                             "kernels; SAC stays SB3's")
    parser.add_argument("--sac-hidden-precision", choices=("float32", "bfloat16"), default=None,
                        help="with --fused-sac-update, dtype of SMBPO's SAC hidden-to-hidden matmuls (default: SMBPO's, "
                             "float32); given with --resume, it replaces the checkpoint's")
    parser.add_argument("--sac-flush-denormals", action="store_true",
                        help="SB3's SAC runs its whole learn() (env steps and acting included) with denormal floats "
                             "flushed to zero, a reference: SB3 keeps them, SMBPO flushes them in its train()")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=10, help="deterministic episodes of the final evaluation")
    parser.add_argument("--eval-snapshots", type=int, default=1,
                        help="evaluate the policies of the last K steps --snapshot-every apart, the final one included, "
                             "and report their means (1: the final policy only)")
    parser.add_argument("--snapshot-every", type=int, default=250, help="env steps between the evaluated snapshots")
    parser.add_argument("--profile-steps", type=int, default=250, help="SMBPO steps profiled at the end (0: none; 250 = one model fit)")
    parser.add_argument("--profiler", choices=sorted(PROFILERS), default="cprofile",
                        help="cprofile: the split into SMBPO's parts; torch: the same plus the torch operators' self times")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--peak-size", type=int, default=2048, help="matrix size of the matmul micro-benchmark")
    parser.add_argument("--out-dir", type=Path, default=Path("bench_out"))
    parser.add_argument("--algos", default="sac,smbpo", help="comma-separated subset of sac,smbpo to train in this process")
    parser.add_argument("--checkpoint-every", type=int, default=0, help="save the run every N env steps (0: never)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out-dir")
    args = parser.parse_args(argv)
    if args.steps <= args.learning_starts:
        parser.error("--steps must exceed --learning-starts (the timing covers the steps after the warm-up)")
    first_snapshot = args.steps - (args.eval_snapshots - 1) * args.snapshot_every
    if args.eval_snapshots < 1 or args.snapshot_every < 1 or first_snapshot <= args.learning_starts:
        parser.error(f"--eval-snapshots {args.eval_snapshots} every --snapshot-every {args.snapshot_every} steps must be "
                     f"at least 1 each and start after --learning-starts {args.learning_starts} (the first would be "
                     f"at step {first_snapshot})")
    algos = args.algos.split(",")
    if unknown := set(algos) - set(ALGORITHMS):
        parser.error(f"--algos: unknown {sorted(unknown)}; choose from {sorted(ALGORITHMS)}")
    if args.background_model_fit and "sac" in algos:
        parser.error("--background-model-fit: SMBPO then occupies --threads + 1 cores, so its SAC pair runs in its "
                     "own process with one more thread: --algos smbpo here, --algos sac --threads N+1 separately")
    return args


def main(argv: list[str] | None = None) -> None:
    """Train and evaluate each of ``--algos``, write its result, and combine SMBPO's and SAC's when both exist."""
    args = parse_args(argv)
    algos = args.algos.split(",")
    th.set_num_threads(args.threads)
    device = th.device("cuda" if args.device == "auto" and th.cuda.is_available() else
                       ("cpu" if args.device == "auto" else args.device))
    if args.profiler == "torch" and args.profile_steps > 0:
        torch_profiler_config(device)
    args.out_dir.mkdir(parents=True, exist_ok=True)

    peak = matmul_peak_flops(device, args.peak_size, repeats=5)
    # Only when the command asks for it (a resumed bfloat16 run repeats the flag to get it): on a CPU without
    # bfloat16 matmul support each of these matmuls takes about a minute.
    asks_bfloat16 = "bfloat16" in (args.model_precision, args.sac_hidden_precision)
    peak_bf16 = matmul_peak_flops(device, args.peak_size, repeats=5, dtype=th.bfloat16) if asks_bfloat16 else math.nan
    for algo in algos:
        result = algorithm_result(algo, args, peak, peak_bf16)
        (args.out_dir / f"{algo}_result.json").write_text(json.dumps(result, indent=1))
        print(json.dumps({algo: {k: v for k, v in result.items() if not isinstance(v, list)}}, indent=1))
        if args.eval_snapshots > 1:
            print(f"{algo} evaluation return per snapshot:",
                  ", ".join(f"{e['step']}: {e['eval_return']:.1f}" for e in result["snapshot_evaluations"]))
    result_files = {algo: args.out_dir / f"{algo}_result.json" for algo in ALGORITHMS}
    if not all(path.exists() for path in result_files.values()):
        return
    results = {algo: json.loads(path.read_text()) for algo, path in result_files.items()}
    report = combined_report(results, args, device)
    (args.out_dir / "smbpo_benchmark.json").write_text(json.dumps(report, indent=1))
    plot(results, args.out_dir / "smbpo_benchmark.png", args.env)
    print(json.dumps({key: value for key, value in report.items() if key not in ("algorithms", "args")}, indent=1))


if __name__ == "__main__":
    main()
