"""Shooting planners of GuSS (SPEC.md 2.4): RS, S-RS, CEM, RCEM and GuSS itself.

Reference: G. Paolo, J. Gonzalez-Billandon, A. Thomas, B. Kégl, "Guided Safe Shooting: model
based reinforcement learning with safety constraints", 2022. Every planner re-plans at each real
step (MPC) and returns the first action of its chosen candidate. All candidates of a generation
go through one batched rollout (:class:`~sb3_safe.guss.rollout.RolloutEvaluator`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from sb3_safe.guss.rollout import (
    BatchedMLPPolicies,
    DescriptorFunction,
    RolloutEvaluator,
    RolloutResult,
    lexicographic_order,
)


def rcem_elites(costs: np.ndarray, returns: np.ndarray, n_elites: int) -> np.ndarray:
    """RCEM's elite rule: the best-return zero-cost candidates, topped up with the lowest-cost ones.

    When at least ``n_elites`` candidates have zero cost the elites are the ``n_elites`` of them
    with the highest return; otherwise all zero-cost candidates are kept and the rest are the
    lowest-cost unsafe candidates (ties broken by return). This is exactly the head of the
    (cost ascending, return descending) order.

    :param costs: shape (n,)
    :param returns: shape (n,)
    :param n_elites: number of elites
    :return: indices of the elites, best first
    """
    return lexicographic_order(costs, returns)[:n_elites]


def cem_elites(returns: np.ndarray, n_elites: int) -> np.ndarray:
    """CEM's elite rule: the ``n_elites`` highest-return candidates (costs ignored).

    :param returns: shape (n,)
    :param n_elites: number of elites
    :return: indices of the elites, best first
    """
    return np.argsort(-np.asarray(returns), kind="stable")[:n_elites]


class ShootingPlanner(ABC):
    """Base class of the planners: owns the evaluator, the action space and the random generator.

    :param evaluator: batched model rollouts over the planning horizon
    :param action_space: Box (bounded) or Discrete action space
    :param seed: seed of the planner's random generator
    """

    def __init__(self, evaluator: RolloutEvaluator, action_space: spaces.Space, seed: int | None = None) -> None:
        if isinstance(action_space, spaces.Discrete):
            self.discrete, self.n_actions = True, int(action_space.n)
        elif isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
            if not (np.isfinite(action_space.low).all() and np.isfinite(action_space.high).all()):
                raise ValueError(f"shooting planners need a bounded Box action space, got {action_space}")
            self.discrete, self.n_actions = False, 0
            self.low = np.asarray(action_space.low, dtype=np.float32)
            self.high = np.asarray(action_space.high, dtype=np.float32)
        else:
            raise ValueError(f"shooting planners need a Discrete or flat Box action space, got {action_space}")
        self.evaluator = evaluator
        self.horizon = evaluator.horizon
        self.action_dim = 1 if self.discrete else int(action_space.shape[0])
        self.generator = np.random.default_rng(seed)
        self.last_info: dict[str, Any] = {}

    def seed(self, seed: int) -> None:
        """Reseed the planner's random generator."""
        self.generator = np.random.default_rng(seed)

    def reset(self) -> None:
        """Forget the state kept between control steps (called at the start of an episode)."""

    def random_sequences(self, n: int) -> np.ndarray:
        """``n`` uniformly random action sequences: (n, H, action_dim) floats or (n, H) indices."""
        if self.discrete:
            return self.generator.integers(self.n_actions, size=(n, self.horizon))
        unit = self.generator.random((n, self.horizon, self.action_dim), dtype=np.float32)
        return self.low + (self.high - self.low) * unit

    def _record(self, result: RolloutResult, best: int, n_evaluated: int) -> None:
        self.last_info = {
            "return": float(result.returns[best]),
            "cost": float(result.costs[best]),
            "n_evaluated": n_evaluated,
        }

    @abstractmethod
    def plan(self, observation: np.ndarray) -> np.ndarray:
        """Plan from ``observation`` (shape (obs_dim,)) and return the first action to execute."""


class RandomShootingPlanner(ShootingPlanner):
    """Random shooting (RS) and safe random shooting (S-RS).

    Reference: GuSS paper, section 5 (baselines). ``n_sequences`` uniformly random action
    sequences are evaluated in one rollout; RS executes the first action of the highest-return one,
    S-RS of the lowest-cost one, ties broken by return.

    :param evaluator: batched model rollouts over the planning horizon
    :param action_space: Box (bounded) or Discrete action space
    :param n_sequences: number of random sequences per control step (100 in the paper)
    :param safe: rank by cost first (S-RS) or by return only (RS)
    :param seed: seed of the planner's random generator
    """

    def __init__(
        self,
        evaluator: RolloutEvaluator,
        action_space: spaces.Space,
        n_sequences: int = 100,
        safe: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__(evaluator, action_space, seed)
        if n_sequences < 1:
            raise ValueError(f"n_sequences must be >= 1, got {n_sequences}")
        self.n_sequences = int(n_sequences)
        self.safe = bool(safe)

    def plan(self, observation: np.ndarray) -> np.ndarray:
        result = self.evaluator.evaluate_sequences(observation, self.random_sequences(self.n_sequences))
        if self.safe:
            best = int(lexicographic_order(result.costs, result.returns)[0])
        else:
            best = int(np.argmax(result.returns))
        self._record(result, best, self.n_sequences)
        return result.first_actions[best]


class CEMPlanner(ShootingPlanner):
    """Cross-entropy method (CEM) and its safe variant RCEM over open-loop action sequences.

    Reference: GuSS paper (RCEM after Liu et al., "Constrained model-based reinforcement learning
    with robust cross-entropy method", 2021). Each iteration samples ``n_sequences`` sequences
    from a per-step distribution (Gaussian clipped to the bounds for Box actions, categorical for
    Discrete actions), keeps ``n_elites`` elites and refits the distribution to them, smoothed by
    ``alpha`` (new = alpha * old + (1 - alpha) * elite statistics). CEM's elites are the
    highest-return sequences; RCEM's follow :func:`rcem_elites`. The executed action is the first
    action of the best candidate evaluated over all iterations (by the same ranking), not of the
    untested mean. Between control steps the Gaussian mean is shifted by one step (warm start) and
    the spread reset; the categorical distribution of discrete actions restarts from uniform (its
    probabilities are its spread); :meth:`reset` forgets the warm start at an episode start.

    The appendix gives 20 sequences and 10 elites but not the number of iterations; our default of
    5 gives 100 model evaluations per step, the budget of RS and GuSS.

    :param evaluator: batched model rollouts over the planning horizon
    :param action_space: Box (bounded) or Discrete action space
    :param n_sequences: sequences sampled per iteration (20 in the paper)
    :param n_elites: elites per iteration (10 in the paper)
    :param n_iterations: iterations per control step
    :param alpha: smoothing of the distribution update, in [0, 1)
    :param robust: RCEM's safe elite rule (True) or plain CEM (False)
    :param seed: seed of the planner's random generator
    """

    def __init__(
        self,
        evaluator: RolloutEvaluator,
        action_space: spaces.Space,
        n_sequences: int = 20,
        n_elites: int = 10,
        n_iterations: int = 5,
        alpha: float = 0.1,
        robust: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__(evaluator, action_space, seed)
        if not 1 <= n_elites <= n_sequences:
            raise ValueError(
                f"CEM needs 1 <= n_elites <= n_sequences, got n_elites={n_elites}, n_sequences={n_sequences}"
            )
        if n_iterations < 1:
            raise ValueError(f"n_iterations must be >= 1, got {n_iterations}")
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1), got {alpha}")
        self.n_sequences, self.n_elites, self.n_iterations = int(n_sequences), int(n_elites), int(n_iterations)
        self.alpha = float(alpha)
        self.robust = bool(robust)
        self.reset()

    def _initial_rows(self, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
        if self.discrete:
            probs = np.full((n_rows, self.n_actions), 1.0 / self.n_actions)
            return probs, probs
        mean = np.tile((self.low + self.high) / 2, (n_rows, 1))
        std = np.tile((self.high - self.low) / 4, (n_rows, 1))
        return mean, std

    def reset(self) -> None:
        # Discrete: (probabilities, unused); continuous: (mean, std), each (H, ...).
        self.mean, self.std = self._initial_rows(self.horizon)

    def _sample(self) -> np.ndarray:
        if self.discrete:
            # Inverse-CDF sampling of every step's categorical at once.
            cumulative = np.cumsum(self.mean, axis=-1)
            unit = self.generator.random((self.n_sequences, self.horizon, 1)) * cumulative[:, -1:]
            return np.minimum((unit > cumulative).sum(axis=-1), self.n_actions - 1)
        noise = self.generator.standard_normal((self.n_sequences, self.horizon, self.action_dim), dtype=np.float32)
        return np.clip(self.mean + self.std * noise, self.low, self.high).astype(np.float32)

    def _refit(self, elites: np.ndarray) -> None:
        if self.discrete:
            frequencies = (elites[..., None] == np.arange(self.n_actions)).mean(axis=0)
            self.mean = self.alpha * self.mean + (1 - self.alpha) * frequencies
            return
        self.mean = self.alpha * self.mean + (1 - self.alpha) * elites.mean(axis=0)
        self.std = self.alpha * self.std + (1 - self.alpha) * elites.std(axis=0)

    def _ranking(self, result: RolloutResult) -> np.ndarray:
        if self.robust:
            return rcem_elites(result.costs, result.returns, self.n_sequences)
        return cem_elites(result.returns, self.n_sequences)

    def plan(self, observation: np.ndarray) -> np.ndarray:
        best_key: tuple[float, float] | None = None
        best_action = np.empty(0)
        best_result, best_index = None, 0
        for _ in range(self.n_iterations):
            sequences = self._sample()
            result = self.evaluator.evaluate_sequences(observation, sequences)
            order = self._ranking(result)
            top = int(order[0])
            key = (float(result.costs[top]) if self.robust else 0.0, -float(result.returns[top]))
            if best_key is None or key < best_key:
                best_key, best_action, best_result, best_index = key, result.first_actions[top], result, top
            self._refit(sequences[order[: self.n_elites]])
        assert best_result is not None
        self._record(best_result, best_index, self.n_iterations * self.n_sequences)
        self._shift()
        return best_action

    def _shift(self) -> None:
        if self.discrete:
            # A categorical has no spread to reset apart from its probabilities: carried over, the
            # probabilities that 5 iterations concentrated on one torque per step left the next
            # step almost nothing else to sample (on SafeAcrobot-v0 CEM then never swung up).
            self.reset()
            return
        initial_mean, initial_std = self._initial_rows(self.horizon)
        self.mean = np.concatenate([self.mean[1:], initial_mean[-1:]], axis=0)
        self.std = initial_std


class GridArchive:
    """MAP-Elites grid archive of GuSS: one elite per behaviour cell, cost first, then return.

    Reference: GuSS paper, section 4. A candidate enters a cell when the cell is empty or the
    candidate has a lower total predicted cost than the incumbent, or the same cost and a higher
    return; on a full tie the incumbent stays.

    Why not pyribs (``ribs`` 0.12, pip-installable here): its archives rank by a single scalar
    objective (no exact lexicographic cost-then-return rule without packing both into one
    float) and it pulls in pandas and scikit-learn; the archive here is rebuilt at every
    control step for ~100 candidates, so a few vectorised NumPy ops over a sparse list of
    occupied cells (the Acrobot descriptor has 50^4 cells) are exact and cheaper.

    :param grid_size: cells per descriptor dimension
    :param lower: lower descriptor bounds, shape (n_descriptors,)
    :param upper: upper descriptor bounds, shape (n_descriptors,)
    :param n_params: length of the stored parameter vectors
    """

    def __init__(self, grid_size: Sequence[int], lower: Sequence[float], upper: Sequence[float], n_params: int) -> None:
        self.grid_size = np.asarray([int(g) for g in grid_size], dtype=np.int64)
        self.lower = np.asarray(lower, dtype=np.float64)
        self.upper = np.asarray(upper, dtype=np.float64)
        if not (len(self.grid_size) == len(self.lower) == len(self.upper)):
            raise ValueError(
                f"grid_size, lower and upper must have one entry per descriptor dimension, got "
                f"{len(self.grid_size)}, {len(self.lower)} and {len(self.upper)}"
            )
        if (self.grid_size < 1).any() or not bool((self.upper > self.lower).all()):
            raise ValueError("GridArchive needs grid sizes >= 1 and upper > lower in every dimension")
        # Row-major strides of the flat cell index.
        self.strides = np.concatenate([np.cumprod(self.grid_size[::-1])[::-1][1:], [1]]).astype(np.int64)
        self.n_params = int(n_params)
        self.clear()

    def clear(self) -> None:
        """Empty the archive."""
        self.cells = np.empty(0, dtype=np.int64)
        self.params = np.empty((0, self.n_params), dtype=np.float32)
        self.returns = np.empty(0, dtype=np.float32)
        self.costs = np.empty(0, dtype=np.float32)

    def __len__(self) -> int:
        return int(self.cells.shape[0])

    def cell_index(self, descriptors: np.ndarray) -> np.ndarray:
        """Flat cell index of each descriptor (values outside the bounds go to the edge cells)."""
        unit = (np.asarray(descriptors, dtype=np.float64) - self.lower) / (self.upper - self.lower)
        coords = np.clip(np.floor(unit * self.grid_size), 0, self.grid_size - 1).astype(np.int64)
        return coords @ self.strides

    def add(self, params: np.ndarray, descriptors: np.ndarray, returns: np.ndarray, costs: np.ndarray) -> None:
        """Insert a batch of evaluated candidates (also resolving competition among them).

        :param params: shape (n, n_params)
        :param descriptors: shape (n, n_descriptors)
        :param returns: shape (n,)
        :param costs: shape (n,)
        """
        cells = np.concatenate([self.cells, self.cell_index(descriptors)])
        all_params = np.concatenate([self.params, params])
        all_returns = np.concatenate([self.returns, returns])
        all_costs = np.concatenate([self.costs, costs])
        # Best-first within each cell: cell, then cost ascending, then return descending; the
        # stable sort keeps incumbents (listed first) ahead of newcomers on full ties.
        order = np.lexsort((-all_returns, all_costs, cells))
        sorted_cells = cells[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = sorted_cells[1:] != sorted_cells[:-1]
        keep = order[first]
        self.cells, self.params = cells[keep], all_params[keep]
        self.returns, self.costs = all_returns[keep], all_costs[keep]

    def select_parents(
        self, n: int, generator: np.random.Generator, cost_tolerance: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` parents uniformly among the zero-cost elites.

        When fewer than ``n`` elites have zero cost, all of them are used once and the missing
        parents are reported as random (the caller replaces them with fresh random policies).

        :param n: number of parents
        :param generator: NumPy random generator
        :param cost_tolerance: elites with cost <= this count as zero-cost
        :return: indices into the archive (n,), and a bool mask (n,) of slots to fill at random
            (their index is -1)
        """
        safe = np.flatnonzero(self.costs <= cost_tolerance)
        if len(safe) >= n:
            return safe[generator.integers(len(safe), size=n)], np.zeros(n, dtype=bool)
        picks = np.full(n, -1, dtype=np.int64)
        picks[: len(safe)] = safe
        return picks, picks < 0

    def ranked(self) -> np.ndarray:
        """Indices of the elites, best first: lowest cost, then highest return."""
        if len(self) == 0:
            raise RuntimeError("the archive is empty")
        return lexicographic_order(self.costs, self.returns)

    def best(self) -> int:
        """Index of the best elite: lowest cost, then highest return."""
        return int(self.ranked()[0])


class GuSSPlanner(ShootingPlanner):
    """Guided Safe Shooting: MAP-Elites over tiny closed-loop policies evaluated in the model.

    Reference: Paolo et al., GuSS (2022), algorithm 1 and supplementary table 5.1. At each control
    step the archive is emptied and seeded with ``n_initial_policies`` random policies (weights
    drawn from N(0, 1)); then each generation draws ``n_policies_per_generation`` parents
    uniformly among the zero-cost elites (fresh random policies fill missing parents), mutates
    them with additive N(0, ``mutation_sigma``²) noise, evaluates the offspring in one batched
    rollout and adds them to the grid archive, until ``n_policies`` policies have been evaluated.
    The executed action is the first action of the best elite (lowest cost, then highest return).

    ``n_warm_start`` (beyond the paper, whose planner starts every control step from random
    policies): the best ``n_warm_start`` elites of the previous control step take the place of as
    many random policies in the next step's first generation, so the number of evaluations is
    unchanged. The policies are closed-loop, so yesterday's plan is still a plan from today's
    state without shifting (CEM's warm start shifts its open-loop mean instead). :meth:`reset`
    forgets them at an episode start.

    :param evaluator: batched model rollouts over the planning horizon
    :param action_space: Box (bounded) or Discrete action space
    :param policies: the policy architecture (:class:`BatchedMLPPolicies`)
    :param descriptor_fn: behaviour descriptor of predicted trajectories
    :param descriptor_low: lower descriptor bounds
    :param descriptor_high: upper descriptor bounds
    :param grid_size: cells per descriptor dimension (an int applies to every dimension)
    :param n_policies: policies evaluated per control step (100 for the classic envs)
    :param n_initial_policies: random policies of the first generation (25)
    :param n_policies_per_generation: offspring per generation (5)
    :param mutation_sigma: standard deviation of the Gaussian mutation (0.05)
    :param cost_tolerance: a policy with predicted cost <= this counts as zero-cost (use a small
        positive value with a learned, continuous cost head)
    :param n_warm_start: elites carried over to the next control step (0: the paper's planner)
    :param seed: seed of the planner's random generator
    """

    def __init__(
        self,
        evaluator: RolloutEvaluator,
        action_space: spaces.Space,
        policies: BatchedMLPPolicies,
        descriptor_fn: DescriptorFunction,
        descriptor_low: Sequence[float],
        descriptor_high: Sequence[float],
        grid_size: int | Sequence[int] = 50,
        n_policies: int = 100,
        n_initial_policies: int = 25,
        n_policies_per_generation: int = 5,
        mutation_sigma: float = 0.05,
        cost_tolerance: float = 0.0,
        n_warm_start: int = 0,
        seed: int | None = None,
    ) -> None:
        super().__init__(evaluator, action_space, seed)
        if not 1 <= n_initial_policies <= n_policies:
            raise ValueError(
                f"GuSS needs 1 <= n_initial_policies <= n_policies, got {n_initial_policies} and {n_policies}"
            )
        if n_policies_per_generation < 1 or mutation_sigma < 0:
            raise ValueError("GuSS needs n_policies_per_generation >= 1 and mutation_sigma >= 0")
        if not 0 <= n_warm_start <= n_initial_policies:
            raise ValueError(
                f"GuSS needs 0 <= n_warm_start <= n_initial_policies, got {n_warm_start} and {n_initial_policies}"
            )
        n_descriptors = len(descriptor_low)
        sizes = [int(grid_size)] * n_descriptors if isinstance(grid_size, (int, np.integer)) else list(grid_size)
        self.policies = policies
        self.descriptor_fn = descriptor_fn
        self.archive = GridArchive(sizes, descriptor_low, descriptor_high, policies.n_params)
        self.n_policies = int(n_policies)
        self.n_initial_policies = int(n_initial_policies)
        self.n_policies_per_generation = int(n_policies_per_generation)
        self.mutation_sigma = float(mutation_sigma)
        self.cost_tolerance = float(cost_tolerance)
        self.n_warm_start = int(n_warm_start)
        self.reset()

    def reset(self) -> None:
        self.carried_over = np.empty((0, self.policies.n_params), dtype=np.float32)

    def random_policies(self, n: int) -> np.ndarray:
        """``n`` random parameter vectors, shape (n, n_params)."""
        return self.generator.standard_normal((n, self.policies.n_params), dtype=np.float32)

    def _evaluate_and_store(self, observation: np.ndarray, params: np.ndarray) -> None:
        result = self.evaluator.evaluate_policies(observation, self.policies, params)
        descriptors = self.descriptor_fn(result.observations)
        self.archive.add(params, descriptors, result.returns, result.costs)

    def _offspring(self, n: int) -> np.ndarray:
        picks, fill = self.archive.select_parents(n, self.generator, self.cost_tolerance)
        parents = self.archive.params[np.maximum(picks, 0)] if len(self.archive) else self.random_policies(n)
        noise = self.mutation_sigma * self.generator.standard_normal(parents.shape, dtype=np.float32)
        children = parents + noise
        if bool(fill.any()):
            children[fill] = self.random_policies(int(fill.sum()))
        return children

    def plan(self, observation: np.ndarray) -> np.ndarray:
        self.archive.clear()
        initial = np.concatenate(
            [self.carried_over, self.random_policies(self.n_initial_policies - len(self.carried_over))]
        )
        self._evaluate_and_store(observation, initial)
        evaluated = self.n_initial_policies
        while evaluated < self.n_policies:
            n = min(self.n_policies_per_generation, self.n_policies - evaluated)
            self._evaluate_and_store(observation, self._offspring(n))
            evaluated += n
        ranked = self.archive.ranked()
        best = int(ranked[0])
        self.last_info = {
            "return": float(self.archive.returns[best]),
            "cost": float(self.archive.costs[best]),
            "n_evaluated": evaluated,
            "archive_size": len(self.archive),
        }
        self.carried_over = self.archive.params[ranked[: self.n_warm_start]].copy()
        params = self.archive.params[best : best + 1]
        return self.policies.act(params, np.asarray(observation, dtype=np.float32).reshape(1, -1))[0]
