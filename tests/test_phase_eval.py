"""Phase / mode evaluation (issue 17): circular errors, heel strikes from phase wraps, scores, mode delays, the report."""

from __future__ import annotations

import numpy as np
import pytest

from metagait_edge.phase.dataset import prepare_recording
from metagait_edge.phase.evaluate import PhaseScores, circular_error, transition_points, wrap_events
from metagait_edge.phase.evaluate import ONE_NET, ONE_PASS
from metagait_edge.phase.report import machine_summary, render
from metagait_edge.phase.run import smooth_modes
from tests.test_phase_ground_truth import synthetic_recording


def test_circular_error_and_wrap_events():
    assert circular_error(np.array([2.0, 98.0, 60.0]), np.array([98.0, 2.0, 10.0])).tolist() == [4.0, -4.0, -50.0]
    t = np.arange(300)
    phase = np.mod(100 * (t - 10.25) / 50.0, 100)
    ev = wrap_events(phase, 58.8)
    assert np.allclose(ev, 10.25 + 50 * np.arange(6), atol=1e-6)
    noisy = phase.copy()
    noisy[60] = 99.0  # a jitter just after a wrap must not count twice
    assert len(wrap_events(noisy, 58.8)) == len(ev)


def test_scores_perfect_and_shifted_estimates():
    act = np.ones(1600, dtype=np.uint8)
    act[800:] = 3
    rec = prepare_recording(synthetic_recording(act=act))
    assert transition_points(rec.mode) == [(800, 0, 2)]
    s = PhaseScores()
    truth = rec.truth.phase
    s.add_phase("learned", rec, np.nan_to_num(truth))
    s.add_phase("baseline", rec, np.mod(np.nan_to_num(truth) + 5.0, 100))
    pred = rec.mode.copy()
    pred[800:810] = 0  # switches 10 samples late
    s.add_modes(rec, pred)
    s.add_phase("learned, all gyros masked", rec, np.mod(np.nan_to_num(truth) + 10.0, 100))
    out = s.summary(("learned", "baseline", "learned, all gyros masked"))
    assert out["phase_rmse_pct"]["learned"]["walking"] == pytest.approx(0.0, abs=1e-9)
    assert out["phase_rmse_pct"]["baseline"]["stairs_up"] == pytest.approx(5.0, abs=1e-6)
    assert out["phase_rmse_pct"]["learned"]["transitions"] == pytest.approx(0.0, abs=1e-9)
    h = out["hs_timing_ms"]["learned"]
    assert h["matched"] >= h["truth_events"] - 2 and h["median_abs"] < 1.0
    assert out["hs_timing_ms"]["baseline"]["mean"] == pytest.approx(-0.05 * 53.3 / 58.8 * 1000, rel=0.05)
    assert out["mode_accuracy"] == pytest.approx(1 - 10 / 1600)
    assert out["mode_errors_near_change"] == {"0.5s": 1.0, "1s": 1.0}
    s2 = PhaseScores()
    pred2 = pred.copy()
    pred2[100:110] = 4  # 700 samples (12 s) before the change
    pred2[1560:1570] = 4  # 760 samples after it
    pred2[760:770] = 2  # 30-40 samples (0.5-0.7 s) early
    s2.add_modes(rec, pred2)
    assert s2.summary(("learned",))["mode_errors_near_change"] == {"0.5s": pytest.approx(10 / 40), "1s": pytest.approx(20 / 40)}
    d = out["mode_switch_delay"]
    assert d["transitions"] == 1 and d["median_s"] == pytest.approx(10 / 58.8)
    full = {**out, "files": 1, "subjects": [99], "quick": True, "mode_alpha": {0: 0.2}, "latency_ms_p50": 0.3,
            "latency_ms_p99": 0.5, "latency_cpu_ms_p50": 0.2, "latency_cpu_ms_p99": 0.4}
    js = machine_summary(full)
    assert set(js["phase_rmse_pct"]) == {"walking", "running", "stairs_up", "stairs_down", "transitions"}
    assert js["baseline_phase_rmse_pct"]["stairs_up"] == pytest.approx(5.0, abs=1e-6)
    assert js["mode_accuracy"] == out["mode_accuracy"] and js["latency_ms_p99"] == 0.5
    md = render({**out, "files": 1, "subjects": [99], "quick": True, "mode_alpha": {0: 0.2}, "latency_ms_p50": 0.3,
                 "latency_ms_p99": 0.5, "latency_cpu_ms_p50": 0.2, "latency_cpu_ms_p99": 0.4}, "cmd", "vm", "today", "x.png")
    assert "| walking | 0.00 | 5.00 |" in md and "![phase across a transition](x.png)" in md
    assert "alpha per fold 0: 0.2" in md
    assert "100 % lie within 0.5 s of a label change" in md
    assert "| learned, all gyros masked | 10.00 | n/a |" in md
    assert "26k parameters" in md and "the 3 newest never reach the output" in md  # no sidecar: the first layout
    w = {"command": "training/train_phase.py --config c.yaml", "created": "2026-12-07T11:00", "git_commit": "abc",
         "epochs": 8, "kept_epoch": 7, "split": {}, "train_config": {"balance": 0.6, "gain_sd": 0.1, "epochs": 8,
                                                                   "windows_per_epoch": 1000},
         "config": {"window": 117, "n_conv": 4, "right_aligned": True, "width": 48, "mix_channels": 32, "hidden": 128}}
    md = render({**full, "weights": {0: w}}, "cmd", "vm", "today", None)
    assert "the last 117 samples (1.99 s)" in md and "count(mode)^-0.6" in md and "sd 0.1" in md
    assert "| 0 |  /  /  | n/a | `training/train_phase.py --config c.yaml` |" in md
    assert "ensemble" not in md and "mirror image" not in md
    # an ensemble of two mirror-trained seeds: one row per member, the description and the comparison rows say so
    tc = dict(w["train_config"], leg_swap_prob=0.5)
    members = [dict(w, train_config=dict(tc, seed=s), command=f"train --seed {s}") for s in (0, 1)]
    ph = {k: dict(v) for k, v in full["phase_rmse_pct"].items()}
    ph[ONE_PASS] = dict(ph["learned"], walking=1.25)
    ph[ONE_NET] = dict(ph["learned"], walking=1.5)
    md = render({**full, "phase_rmse_pct": ph, "weights": {0: dict(members[0], members=members)}}, "cmd", "vm", "today", None)
    assert "an ensemble of 2 such networks" in md and "mirror image" in md
    assert "| 0 |  /  /  | 0 | `train --seed 0` |" in md and "| 0 |  /  /  | 1 | `train --seed 1` |" in md
    assert f"| {ONE_PASS} | 1.25 |" in md and f"| {ONE_NET} | 1.50 |" in md


def test_smooth_modes_is_causal_and_delays_switches():
    p = np.zeros((20, 3))
    p[:10, 0] = 1
    p[10:, 1] = 1
    assert smooth_modes(p, 1.0).tolist() == [0] * 10 + [1] * 10
    sm = smooth_modes(p, 0.3)
    assert sm[:10].tolist() == [0] * 10 and sm[10] == 0 and sm[-1] == 1


def test_latency_probe_times_every_sample_from_physical_values():
    from metagait_edge.phase.model import PhaseNet, PhaseNetConfig
    from metagait_edge.phase.run import latency_ms

    rows = np.random.default_rng(0).normal(size=(80, 36)).astype(np.float32)
    wall, cpu = latency_ms(PhaseNet(PhaseNetConfig(window=32)), rows, {"rs": False}, 120)
    assert wall.shape == cpu.shape == (120,) and (wall > 0).all() and (cpu >= 0).all()


def test_true_labels_delayed_bound_the_accuracy_of_a_late_output():
    from metagait_edge.phase.evaluate import LABEL_DELAYS_MS, delayed_labels

    m = np.array([0] * 50 + [2] * 50 + [-1] * 10)
    assert delayed_labels(m, 0).tolist() == m.tolist()
    assert delayed_labels(m, 3).tolist() == [0] * 53 + [2] * 50 + [-1] * 7  # causal: the first label repeats
    rec = prepare_recording(synthetic_recording())
    rec.mode = np.zeros(len(rec), dtype=np.int64)
    rec.mode[len(rec) // 2:] = 1  # one change
    sc = PhaseScores()
    sc.add_modes(rec, rec.mode)
    late = sc.summary(())["mode_accuracy_true_labels_delayed"]
    assert list(late) == [f"{d}ms" for d in LABEL_DELAYS_MS] and late["0ms"] == 1.0
    k = round(0.3 * rec.fs)
    assert np.isclose(late["300ms"], 1 - k / len(rec))  # one change costs d of rows
    assert all(a >= b for a, b in zip(list(late.values()), list(late.values())[1:]))


def test_per_walker_rmse_per_mode_and_the_report_table():
    act = np.ones(1600, dtype=np.uint8)
    act[800:] = 3  # walking, then stairs up
    a = prepare_recording(synthetic_recording(act=act))
    b = prepare_recording(synthetic_recording(act=act))
    b.subject = a.subject + 1
    s = PhaseScores()
    s.add_phase("learned", a, np.mod(np.nan_to_num(a.truth.phase) + 2.0, 100))
    s.add_phase("learned", b, np.mod(np.nan_to_num(b.truth.phase) + 6.0, 100))
    out = s.summary(("learned",))
    per = out["rmse_per_walker"]["learned"]
    assert per["walking"][a.subject] == pytest.approx(2.0, abs=1e-6)
    assert per["stairs_up"][b.subject] == pytest.approx(6.0, abs=1e-6)
    assert per["running"] == {}
    assert out["walking_rmse_per_walker"]["learned"] == per["walking"]
    assert out["samples_per_walker"]["learned"]["walking"][a.subject] > 0
    full = {**out, "files": 2, "subjects": [a.subject, b.subject], "quick": False, "mode_alpha": 1.0,
            "latency_ms_p50": 0.3, "latency_ms_p99": 0.5, "latency_cpu_ms_p50": 0.2, "latency_cpu_ms_p99": 0.4}
    full["phase_rmse_pct"]["baseline"] = full["phase_rmse_pct"]["learned"]
    full["coverage"]["baseline"] = full["coverage"]["learned"]
    full["hs_timing_ms"]["baseline"] = full["hs_timing_ms"]["learned"]
    full["walking_rmse_per_walker"]["baseline"] = full["walking_rmse_per_walker"]["learned"]
    md = render(full, "cmd", "vm", "today", None)
    assert "| walker | walking | stairs_up | stairs_down | transitions |" not in md  # empty modes left out
    assert "| walker | walking | stairs_up | transitions |" in md
    assert f"| {b.subject} | 6.00 | 6.00 |" in md
    # Equal sample counts: leaving out the walker with the larger share leaves the other walker's error.
    assert f"| pooled, largest share left out | 2.00 (without {b.subject}) | 2.00 (without {b.subject}) |" in md


def test_strides_rejected_by_the_alternation_check_are_scored_apart():
    from metagait_edge.phase.evaluate import REJECTED

    rec = prepare_recording(synthetic_recording(left_shift=0.37))  # legs in step: every stride rejected
    assert np.isnan(rec.truth.phase).all()
    s = PhaseScores()
    s.add_phase("learned", rec, np.mod(np.nan_to_num(rec.truth.rejected) + 3.0, 100))
    out = s.summary(("learned",))
    assert out["phase_rmse_pct"]["learned"][REJECTED] == pytest.approx(3.0, abs=1e-6)
    assert out["samples"]["learned"][REJECTED] == int(np.isfinite(rec.truth.rejected).sum())
    assert np.isnan(out["phase_rmse_pct"]["learned"]["walking"])  # nothing left to score there


def test_validation_scoring_is_named_in_the_report_and_bad_walker_sets_are_refused():
    from metagait_edge.phase.run import evaluate_phase

    with pytest.raises(ValueError, match="walkers must be 'test' or 'val'"):
        evaluate_phase(None, walkers="train")
    rec = prepare_recording(synthetic_recording())
    s = PhaseScores()
    for name in ("learned", "baseline"):
        s.add_phase(name, rec, np.nan_to_num(rec.truth.phase))
    s.add_modes(rec, rec.mode)
    base = {**s.summary(), "files": 1, "subjects": [99], "quick": False, "mode_alpha": 1.0, "latency_ms_p50": 0.3,
            "latency_ms_p99": 0.5, "latency_cpu_ms_p50": 0.2, "latency_cpu_ms_p99": 0.4}
    assert "**Validation walkers**" in render({**base, "scored_walkers": "val"}, "cmd", "vm", "today", None)
    assert "**Validation walkers**" not in render({**base, "scored_walkers": "test"}, "cmd", "vm", "today", None)


def test_each_gait_mode_is_split_by_the_files_shank_gyroscopes():
    """The ground truth comes from the shank gyroscopes: every mode is also scored apart for files with both
    valid and files with a corrupted one, and a file's rows land only in its own side."""
    act = np.ones(1600, dtype=np.uint8)
    act[800:] = 3  # walking, then stairs up
    clean = prepare_recording(synthetic_recording(act=act))
    broken = prepare_recording(synthetic_recording(act=act))
    broken.valid = {**broken.valid, "ls": False}
    s = PhaseScores()
    s.add_phase("learned", clean, np.mod(np.nan_to_num(clean.truth.phase) + 2.0, 100))
    s.add_phase("learned", broken, np.mod(np.nan_to_num(broken.truth.phase) + 6.0, 100))
    ph = s.summary(("learned",))["phase_rmse_pct"]["learned"]
    for mode in ("walking", "stairs_up"):
        assert ph[f"{mode}, both shank gyros valid"] == pytest.approx(2.0, abs=1e-6)
        assert ph[f"{mode}, a shank gyro corrupted"] == pytest.approx(6.0, abs=1e-6)
        assert 2.0 < ph[mode] < 6.0  # the pooled row holds both files
    assert np.isnan(ph["running, both shank gyros valid"]) and np.isnan(ph["running, a shank gyro corrupted"])
