"""The SMBPO benchmark's checkpoints: an interrupted run resumes where its last checkpoint left it."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch as th
from benchmark_modules import load_benchmark
from stable_baselines3.common.env_util import make_vec_env

from sb3_safe.common.float_modes import flushes_denormals

bench = load_benchmark("smbpo")


class Interrupted(Exception):
    pass


def tiny_args(out_dir: Path, resume: bool) -> argparse.Namespace:
    return argparse.Namespace(
        env="SafePendulum-v0", steps=300, learning_starts=100, gradient_steps=1, batch_size=32, buffer_size=1000,
        target_entropy=-1.0, seed=0, device="cpu", threads=1, out_dir=out_dir,
        checkpoint_every=100, resume=resume, background_model_fit=False,
        fused_sac_update=False, rollout_batch_size=5, rollout_horizon=3, rollout_freq=1, model_buffer_size=2000,
        model_gradient_steps=20, model_initial_gradient_steps=50, model_precision="float32", sac_flush_denormals=False,
        sac_hidden_precision=None, eval_episodes=1, eval_snapshots=1, snapshot_every=250,
    )


def train_until_stopped_at_200(args: argparse.Namespace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Train SAC with ``args`` and stop it as if interrupted right after its checkpoint at step 200."""
    save = bench.Checkpoint.save

    def save_then_stop_at_200(self, model, trace) -> None:  # type: ignore[no-untyped-def]
        save(self, model, trace)
        if model.num_timesteps == 200:
            raise Interrupted

    with monkeypatch.context() as patched:
        patched.setattr(bench.Checkpoint, "save", save_then_stop_at_200)
        with pytest.raises(Interrupted):
            bench.train("sac", args)


def test_interrupted_run_resumes_from_its_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    train_until_stopped_at_200(tiny_args(tmp_path, resume=False), monkeypatch)
    folder = tmp_path / "sac_checkpoint"
    assert (folder / "latest").read_text() == "step_200"
    assert not (folder / "step_100").exists()  # the previous checkpoint is removed once the new one is complete

    capsys.readouterr()
    model, trace = bench.train("sac", tiny_args(tmp_path, resume=True))
    assert model.num_timesteps == 300
    assert f"SAC step 300: {trace.violations} violations" in capsys.readouterr().out
    assert model.replay_buffer.size() == 300  # the 200 saved transitions and the 100 new ones
    assert trace.steps == [100, 200, 300]
    assert trace.cumulative_violations == sorted(trace.cumulative_violations)
    assert trace.steps_after_warmup == 200
    assert trace.wall_s_after_warmup > 0
    assert trace.episode_end_steps == [200]  # 200-step episodes: the one the resume starts ends at 400

    # The finished run is checkpointed too: resuming it again trains no further step.
    assert (folder / "latest").read_text() == "step_300"
    model, again = bench.train("sac", tiny_args(tmp_path, resume=True))
    assert model.num_timesteps == 300 and model.replay_buffer.size() == 300
    assert again == trace
    # A loaded buffer keeps its capacity: a resume that asks for a smaller one is refused, not silently run.
    with pytest.raises(ValueError, match="replay buffer of 1000 transitions but --buffer-size is 500"):
        bench.train("sac", argparse.Namespace(**{**vars(tiny_args(tmp_path, resume=True)), "buffer_size": 500}))


@pytest.mark.parametrize("small_buffer", [200, 300])  # full with nothing overwritten, and not yet full
@pytest.mark.parametrize("algo", ["sac", "smbpo"])
def test_a_resume_grows_a_buffer_that_overwrote_nothing_into_the_larger_runs_buffer(
    tmp_path: Path, algo: str, small_buffer: int
) -> None:
    small = argparse.Namespace(
        **{**vars(tiny_args(tmp_path / "small", resume=False)), "steps": 200, "buffer_size": small_buffer}
    )
    large = argparse.Namespace(**{**vars(tiny_args(tmp_path / "large", resume=False)), "steps": 200, "buffer_size": 5000})
    bench.train(algo, small)
    reference, _ = bench.train(algo, large)
    assert reference.replay_buffer.pos == 200

    grown, _ = bench.train(algo, argparse.Namespace(**{**vars(small), "resume": True, "buffer_size": 5000}))

    buffer, expected = grown.replay_buffer, reference.replay_buffer
    assert grown.buffer_size == buffer.buffer_size == 5000
    assert (buffer.pos, buffer.full, buffer.size()) == (200, False, 200)
    arrays = {name for name, value in vars(expected).items() if isinstance(value, np.ndarray)}
    assert {"observations", "next_observations", "actions", "rewards", "dones", "timeouts"} <= arrays
    assert algo == "sac" or "violations" in arrays
    for name in arrays:
        assert np.array_equal(getattr(buffer, name), getattr(expected, name)), name
    grown, _ = bench.train(algo, argparse.Namespace(**{**vars(small), "resume": True, "buffer_size": 5000, "steps": 250}))
    assert grown.replay_buffer.size() == 250


def test_a_buffer_of_several_envs_grows_by_slots_per_env() -> None:
    model = bench.SAC("MlpPolicy", make_vec_env("SafePendulum-v0", n_envs=2, seed=0), buffer_size=100, learning_starts=1000)
    model.learn(60)
    buffer = model.replay_buffer
    before = buffer.observations.copy()
    assert (buffer.buffer_size, buffer.pos) == (50, 30)
    assert bench.buffer_can_grow(model, 400)
    assert not bench.buffer_can_grow(model, 100)  # the same 50 slots per env

    bench.grow_replay_buffer(model, 400)

    assert (model.buffer_size, buffer.buffer_size, buffer.pos, buffer.full) == (400, 200, 30, False)
    assert buffer.observations.shape == (200, 2, 3)
    np.testing.assert_array_equal(buffer.observations[:50], before)


def test_a_buffer_that_stores_next_observations_in_the_next_slot_does_not_grow() -> None:
    model = bench.SAC(
        "MlpPolicy", "SafePendulum-v0", buffer_size=100, learning_starts=1000, optimize_memory_usage=True,
        replay_buffer_kwargs={"handle_timeout_termination": False},
    )
    model.learn(50)
    assert not bench.buffer_can_grow(model, 400)


def test_a_resume_does_not_grow_a_buffer_that_has_overwritten_transitions(tmp_path: Path) -> None:
    wrapped = argparse.Namespace(**{**vars(tiny_args(tmp_path, resume=False)), "steps": 200, "buffer_size": 150})
    bench.train("sac", wrapped)
    with pytest.raises(ValueError, match="replay buffer of 150 transitions but --buffer-size is 5000"):
        bench.train("sac", argparse.Namespace(**{**vars(wrapped), "resume": True, "buffer_size": 5000}))


def test_a_resumed_smbpo_run_takes_the_commands_rollout_freq_and_precision_checked_by_smbpo(tmp_path: Path) -> None:
    first = {**vars(tiny_args(tmp_path, resume=False)), "steps": 200, "model_precision": "bfloat16"}
    trained, _ = bench.train("smbpo", argparse.Namespace(**first))
    weights = {k: v.clone() for k, v in trained.dynamics.state_dict().items()}
    kept = argparse.Namespace(**{**vars(tiny_args(tmp_path, resume=True)), "rollout_freq": None, "model_precision": None})
    model, _ = bench.train("smbpo", argparse.Namespace(**{**vars(kept), "steps": 200}))
    assert model.rollout_freq == 1 and model.model_precision == "bfloat16"  # not given: the checkpoint's own
    resumed = argparse.Namespace(**{**vars(tiny_args(tmp_path, resume=True)), "steps": 200, "rollout_freq": 5})
    model, _ = bench.train("smbpo", resumed)
    assert model.rollout_freq == 5 and model.model_precision == "float32"
    assert model.dynamics.precision == "float32"
    assert all(th.equal(model.dynamics.state_dict()[k], w) for k, w in weights.items())  # the fitted model carries over
    model, _ = bench.train("smbpo", argparse.Namespace(**{**vars(resumed), "steps": 250}))
    assert model.num_timesteps == 250
    with pytest.raises(ValueError, match="rollout_freq must be a positive integer"):
        bench.train("smbpo", argparse.Namespace(**{**vars(resumed), "rollout_freq": 0}))


@pytest.mark.parametrize("sac_flush_denormals", [False, True])
def test_sac_trains_with_denormals_flushed_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sac_flush_denormals: bool
) -> None:
    seen: list[bool] = []
    sac_train = bench.SAC.train

    def recording_train(self, gradient_steps: int, batch_size: int = 64) -> None:  # type: ignore[no-untyped-def]
        seen.append(flushes_denormals())
        sac_train(self, gradient_steps, batch_size)

    monkeypatch.setattr(bench.SAC, "train", recording_train)
    args = tiny_args(tmp_path, resume=False)
    args.steps, args.checkpoint_every, args.sac_flush_denormals = 120, 0, sac_flush_denormals

    bench.train("sac", args)

    assert len(seen) == 20 and set(seen) == {sac_flush_denormals}
    assert not flushes_denormals()


def test_results_from_different_settings_are_not_combined(tmp_path: Path) -> None:
    args = tiny_args(tmp_path, resume=False)
    sac = {"run": bench.run_settings(args, "sac"), "wall_s_per_env_step": 0.1, "violations_after_warmup": 4,
           "eval_return": 200.0}
    smbpo = {**sac, "run": {**sac["run"], "seed": 1}, "violations_after_warmup": 1, "eval_return": 300.0}
    with pytest.raises(ValueError, match="different settings"):
        bench.combined_report({"sac": sac, "smbpo": smbpo}, args, "cpu")
    report = bench.combined_report({"sac": sac, "smbpo": {**smbpo, "run": sac["run"]}}, args, "cpu")
    assert report["violations_after_warmup_ratio_smbpo_over_sac"] == 0.25
    assert report["eval_return_ratio_smbpo_over_sac"] == 1.5
    negative = bench.combined_report({"sac": {**sac, "eval_return": -150.0}, "smbpo": {**smbpo, "run": sac["run"]}},
                                     args, "cpu")
    assert np.isnan(negative["eval_return_ratio_smbpo_over_sac"])  # "x times SAC's" means nothing there


def test_evaluation_settings_must_match_only_when_snapshots_are_evaluated(tmp_path: Path) -> None:
    def run(**changes: object) -> dict:
        return bench.run_settings(argparse.Namespace(**{**vars(tiny_args(tmp_path, resume=False)), **changes}), "sac")

    # One snapshot: the settings of results written before --eval-snapshots existed, whatever --eval-episodes.
    assert run() == run(eval_episodes=20, snapshot_every=100)
    assert "eval_snapshots" not in run()
    twelve = run(eval_snapshots=12)
    for other in (run(), run(eval_snapshots=11), run(eval_snapshots=12, snapshot_every=100),
                  run(eval_snapshots=12, eval_episodes=20)):
        assert other != twelve
    assert twelve == run(eval_snapshots=12)


def test_sac_on_two_threads_pairs_with_smbpo_on_one_thread_and_a_background_fit(tmp_path: Path) -> None:
    two_threads = argparse.Namespace(**{**vars(tiny_args(tmp_path, resume=False)), "threads": 2})
    background = argparse.Namespace(**{**vars(tiny_args(tmp_path, resume=False)), "background_model_fit": True})
    assert bench.run_settings(two_threads, "sac") == bench.run_settings(background, "smbpo")
    assert bench.run_settings(background, "sac") != bench.run_settings(background, "smbpo")


def snapshot_args(out_dir: Path, **changes: object) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(tiny_args(out_dir, resume=False)), "checkpoint_every": 0, **changes})


def actor_weights(model: bench.OffPolicyAlgorithm) -> dict[str, th.Tensor]:
    return {name: tensor.clone() for name, tensor in model.actor.state_dict().items()}


def assert_same_weights(first: dict[str, th.Tensor], second: dict[str, th.Tensor]) -> None:
    assert first.keys() == second.keys()
    assert all(th.equal(first[name], second[name]) for name in first)


@pytest.mark.parametrize("algo", ["sac", "smbpo"])
def test_each_evaluated_snapshot_is_the_policy_a_run_stopped_at_its_step_ends_with(tmp_path: Path, algo: str) -> None:
    args = snapshot_args(tmp_path / "long", eval_snapshots=3, snapshot_every=50)
    model, _ = bench.train(algo, args)
    final = actor_weights(model)
    snapshots = bench.actor_snapshots(algo, args)
    assert snapshots.steps == [200, 250]
    saved = dict(snapshots.load())
    stopped = {step: bench.train(algo, snapshot_args(tmp_path / str(step), steps=step))[0] for step in (200, 250)}
    for step, short_run in stopped.items():
        assert_same_weights(saved[step], actor_weights(short_run))

    result = bench.snapshot_evaluation(model, snapshots, args.env, 2, args.seed)

    assert [e["step"] for e in result["snapshot_evaluations"]] == [200, 250, 300]
    for evaluated, short_run in zip(result["snapshot_evaluations"], stopped.values()):
        assert evaluated == {"step": evaluated["step"], **bench.final_evaluation(short_run, args.env, 2, args.seed)}
    assert_same_weights(actor_weights(model), final)
    assert result["snapshot_evaluations"][-1] == {"step": 300, **bench.final_evaluation(model, args.env, 2, args.seed)}
    for key in ("eval_return", "eval_cost", "eval_violations"):
        assert result[key] == pytest.approx(np.mean([e[key] for e in result["snapshot_evaluations"]]))


def test_the_final_policy_is_restored_when_a_snapshot_evaluation_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = snapshot_args(tmp_path, eval_snapshots=3, snapshot_every=50)
    model, _ = bench.train("sac", args)
    final = actor_weights(model)
    evaluated: list[dict[str, th.Tensor]] = []

    def failing_evaluation(model, *_):  # type: ignore[no-untyped-def]
        evaluated.append(actor_weights(model))
        raise RuntimeError("evaluation failed")

    monkeypatch.setattr(bench, "final_evaluation", failing_evaluation)
    with pytest.raises(RuntimeError, match="evaluation failed"):
        bench.snapshot_evaluation(model, bench.actor_snapshots("sac", args), args.env, 1, 0)
    assert_same_weights(evaluated[0], dict(bench.actor_snapshots("sac", args).load())[200])
    assert_same_weights(actor_weights(model), final)


def test_a_run_stopped_inside_the_snapshot_window_keeps_the_snapshots_it_took(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    windowed = {"eval_snapshots": 4, "snapshot_every": 50, "checkpoint_every": 100}  # snapshots at 150, 200, 250
    train_until_stopped_at_200(snapshot_args(tmp_path, **windowed), monkeypatch)
    snapshots = bench.actor_snapshots("sac", snapshot_args(tmp_path, **windowed))
    taken_before_stop = snapshots.path(150).read_bytes()

    snapshots.path(150).rename(tmp_path / "kept.pt")
    with pytest.raises(FileNotFoundError, match=r"no actor snapshot of steps \[150\]"):
        bench.train("sac", snapshot_args(tmp_path, **windowed, resume=True))  # refused before training
    assert (tmp_path / "sac_checkpoint" / "latest").read_text() == "step_200"
    (tmp_path / "kept.pt").rename(snapshots.path(150))

    model, _ = bench.train("sac", snapshot_args(tmp_path, **windowed, resume=True))

    assert model.num_timesteps == 300
    assert [step for step, _ in snapshots.load()] == [150, 200, 250]
    assert snapshots.path(150).read_bytes() == taken_before_stop
    assert len(bench.snapshot_evaluation(model, snapshots, "SafePendulum-v0", 1, 0)["snapshot_evaluations"]) == 4


def test_a_new_run_does_not_inherit_an_earlier_runs_snapshots(tmp_path: Path) -> None:
    bench.train("sac", snapshot_args(tmp_path, checkpoint_every=100, eval_snapshots=3, snapshot_every=50))
    assert bench.actor_snapshots("sac", snapshot_args(tmp_path, eval_snapshots=3, snapshot_every=50)).path(200).exists()
    bench.train("sac", snapshot_args(tmp_path, checkpoint_every=100, seed=1))  # a new run without snapshots
    asked = snapshot_args(tmp_path, checkpoint_every=100, resume=True, eval_snapshots=3, snapshot_every=50)
    with pytest.raises(FileNotFoundError, match=r"no actor snapshot of steps \[200, 250\]"):
        bench.train("sac", asked)


def test_snapshot_arguments_must_fit_the_run_after_the_warm_up() -> None:
    base = ["--steps", "600", "--learning-starts", "300"]
    assert bench.parse_args([*base, "--eval-snapshots", "3", "--snapshot-every", "100"]).eval_snapshots == 3
    for bad in (["--eval-snapshots", "3", "--snapshot-every", "150"], ["--eval-snapshots", "0"],
                ["--snapshot-every", "0"]):
        with pytest.raises(SystemExit):
            bench.parse_args([*base, *bad])


@pytest.mark.parametrize("profiler", ["cprofile", "torch"])
def test_both_profilers_split_smbpos_time_into_its_parts_and_leave_the_model_as_it_was(
    tmp_path: Path, profiler: str
) -> None:
    args = tiny_args(tmp_path, resume=False)
    args.steps, args.checkpoint_every = 330, 0
    model = bench.train("smbpo", args)[0]
    assert isinstance(model, bench.SMBPO)

    profile = bench.PROFILERS[profiler](model, 40)

    assert model.num_timesteps == 370
    assert profile["profiler"] == profiler and profile["wall_s"] > 0
    # 40 steps of one SAC update and 5 rollouts each, and the model fit due at step 350 (synchronous here).
    assert profile["share_sac_updates"] > profile["share_model_rollouts"] > 0
    assert profile["share_env_acting_buffers_logging"] > 0
    assert profile["share_model_fits"] > 0.05
    assert not set(bench.SMBPO_PARTS.values()) & set(vars(model))  # the profiler's wrappers are gone
    if profiler == "torch":
        assert 0 < profile["share_matmul_ops"] < profile["share_sac_updates"] + profile["share_model_rollouts"]
        assert profile["share_other_ops"] > 0 and profile["share_outside_ops"] > 0
        assert {"aten::addmm", "aten::mm"} <= {op["name"] for op in profile["top_ops"]}
        # The ensemble's matmuls run in SMBPO's model-fit thread, which the profiler records too.
        fit_thread = profile["model_fit_thread"]
        assert fit_thread["share_matmul_ops"] > 0
        assert "aten::bmm" in {op["name"] for op in fit_thread["top_ops"]}
        assert profile["share_waiting_for_model_fit"] > 0.01


def test_profiled_ranges_self_times_subtract_the_ranges_directly_inside_them_on_their_own_thread() -> None:
    ms = 1_000_000
    events = [  # (thread, start, end, name), in ms
        (1, 0, 100, "sac_updates"), (1, 10, 40, "aten::linear"), (1, 12, 38, "aten::addmm"),
        (1, 50, 60, "aten::add_"), (1, 60, 70, "aten::add_"), (1, 80, 95, "aten::sum"), (1, 81, 90, "aten::sum"),
        (1, 82, 85, "aten::fill_"), (2, 20, 30, "aten::bmm"), (1, 200, 210, "[memory]"),
        (3, 0, 10, "aten::add"), (3, 5, 15, "aten::mul"), (1, 20, 30, "kernel on the GPU"),
    ]

    class Event:
        def __init__(self, thread: int, start: int, end: int, name: str) -> None:
            self.start_thread_id = lambda: thread
            self.start_ns = lambda: start * ms
            self.duration_ns = lambda: (end - start) * ms
            self.name = lambda: name
            on_gpu = name.endswith("GPU")
            self.device_type = lambda: th.autograd.DeviceType.CUDA if on_gpu else th.autograd.DeviceType.CPU

    prof = argparse.Namespace(profiler=argparse.Namespace(
        kineto_results=argparse.Namespace(events=lambda: [Event(*e) for e in events])
    ))
    threads = bench.recorded_ranges(prof)

    def times(thread: int, name: str) -> tuple[float, float, int]:
        r = threads[thread][name]
        return round(r.total_s * 1e3, 6), round(r.self_s * 1e3, 6), r.calls

    assert set(threads) == {1, 2, 3} and not {"[memory]", "kernel on the GPU"} & set(threads[1])
    assert times(1, "sac_updates") == (100, 100 - 30 - 10 - 10 - 15, 1)
    assert times(1, "aten::linear") == (30, 4, 1)
    assert times(1, "aten::addmm") == (26, 26, 1)
    assert times(1, "aten::add_") == (20, 20, 2)  # siblings that touch stay apart
    assert times(1, "aten::sum") == (15, 12, 1)  # re-dispatched under its own name: one call
    assert times(1, "aten::fill_") == (3, 3, 1)
    assert times(2, "aten::bmm") == (10, 10, 1)
    assert times(3, "aten::add") == (10, 10, 1) and times(3, "aten::mul") == (10, 10, 1)  # overlapping, not nested

    shares = bench.operator_times(threads[1], 0.1, top_ops=2)
    assert shares["share_matmul_ops"] == pytest.approx(0.26)
    assert shares["share_other_ops"] == pytest.approx((4 + 20 + 12 + 3) / 100)
    assert [op["name"] for op in shares["top_ops"]] == ["aten::addmm", "aten::add_"]
