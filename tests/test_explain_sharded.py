"""Dataset-mode explanation and the evaluation split over processes (``trainer=ddp_cpu``), run as users run them:
``python explain.py ckpt=... mode=evaluate|profile ...`` in a subprocess, once in one process and once in two;
rank 0 gathers, orders by video and writes: the numbers equal those of one process."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ROOT, TINY_DATA, TINY_TRAIN, compose_cfg

from vidxai.evaluation import EvalClip, EvalSettings, evaluate
from vidxai.evaluation.registry import METHODS, register_method
from vidxai.evaluation.runner import VideoScorer
from vidxai.evaluation.shards import combine
from vidxai.models import build_network

#: small evaluation settings: three methods, 4 videos, one MPRT video, a two-step cascade
EVALUATE = ["mode=evaluate", "split=test", "limit=4", "methods=[epsilon,saliency,random]", "mprt.videos=1",
            "mprt.final_videos=2", "mprt.steps=2", "mprt.smprt_samples=2", "region_size=16", "n_boot=200"]


def _env() -> dict[str, str]:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
    env.pop("LOCAL_RANK", None)
    return env


def _explain(run: Path, *args: str, script: Path = ROOT / "explain.py", timeout: float = 420
             ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), f"hydra.run.dir={run}", *args], cwd=run.parent, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def _train_tiny_convlstm(tmp: Path) -> None:
    from vidxai.pipelines.train import train

    cfg = compose_cfg("train", tmp, TINY_DATA + TINY_TRAIN + [
        "model=convlstm", "model.net.hidden_channels=[4]", "model.net.stem_channels=4", "logger=csv",
        "callbacks.explanation.every_n_epochs=0", "test=false", "data.synthetic.clips_per_group=2"],
        data_dir=tmp / "data")
    train(cfg)


@pytest.fixture(scope="session")
def tiny_ckpt(build_once) -> Path:  # noqa: ANN001
    """A tiny ConvLSTM trained for two batches, once per session (its data: 20 videos, 4 of them in the test
    split; 4 frames of 32x32)."""
    return build_once("sharded", _train_tiny_convlstm) / "run" / "checkpoints" / "last.ckpt"


def _numbers(result: dict) -> dict:
    """What must not depend on the number of processes: every score, comparison and per-video row."""
    keep = ("methods", "comparisons", "vs_random", "verdict", "orders", "curves", "mprt", "chance", "metrics")
    out = {k: result[k] for k in keep}
    out["methods"] = {n: {k: v for k, v in m.items() if k != "time_s"} for n, m in result["methods"].items()}
    out["videos"] = result["settings"]["video_files"]
    return out


#: How far a number may move when the same clips are explained in other batches (a process explains its own
#: share together). Nothing else differs: the threads do not change a result here, the batch does, because the
#: convolution kernels sum a batch's float32 products in another order. Two orders of a sum of n terms differ
#: by at most 2 (n - 1) u sum|x_i| (u = 2**-24, Higham's bound). The longest chain of sums behind one map
#: value of the tiny ConvLSTM below is ~320 terms forward (stem conv 3*3*3 = 27, cell conv 3*3*(4+4) = 72 on
#: each of 4 frames, head 4) and as many backward: at most 2 * 640 * u = 7.6e-5 of the map's scale (measured:
#: 5e-7, 9 u). Every compared number is a mean, correlation, share or AOPC of such maps, bounded by 1 and moving
#: at most as much as the maps do, so 1e-4 in absolute terms (relative for larger numbers) holds every order of
#: the sums; the largest difference seen was 1.2e-6. A video counted twice or left out moves them by > 1e-2.
REORDER_TOL = 1e-4


def _assert_close(a: object, b: object, where: str = "") -> None:
    """Equal structures and strings; numbers equal up to :data:`REORDER_TOL` (float32 sums in another order)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, sorted(a), sorted(b))
        for k in a:
            _assert_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert np.isclose(a, b, rtol=REORDER_TOL, atol=REORDER_TOL, equal_nan=True), (where, a, b)
    else:
        assert a == b, (where, a, b)


def _csv_rows(path: Path) -> list[list[object]]:
    """The rows in a fixed order, numbers as floats (the maps of a batch of clips may differ from those of another
    batch in the last float32 bits: the randomisation pass explains each process's clips together)."""
    def cell(v: str) -> object:
        try:
            return float(v)
        except ValueError:
            return v

    return sorted(([cell(v) for v in row] for row in csv.reader(path.read_text().strip().splitlines())), key=str)


@pytest.mark.slow
def test_evaluate_with_two_processes_equals_one_process(tiny_ckpt: Path, tmp_path: Path) -> None:
    from vidxai.pipelines.explain import explain

    one, two = tmp_path / "run", tmp_path / "two"
    explain(compose_cfg("explain", tmp_path, [f"ckpt={tiny_ckpt}", *EVALUATE, "logger=csv"]))  # here, one process
    proc = _explain(two, f"ckpt={tiny_ckpt}", *EVALUATE, "trainer=ddp_cpu", "trainer.strategy.timeout.seconds=120")
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = json.loads((one / "evaluation.json").read_text())
    b = json.loads((two / "evaluation.json").read_text())
    assert a["settings"]["processes"] == 1 and b["settings"]["processes"] == 2
    assert len(a["settings"]["video_files"]) == 4 and a["settings"]["video_files"] == b["settings"]["video_files"]
    assert a["methods"]["epsilon"]["videos"] == b["methods"]["epsilon"]["videos"] == 4  # no video counted twice
    _assert_close(_numbers(a), _numbers(b))
    # per-video scores: the same rows (CSV), in the same order up to the timing-free columns
    _assert_close(_csv_rows(one / "evaluation.csv"), _csv_rows(two / "evaluation.csv"))
    # written once, by rank 0: the table on the console once, one W&B run, the figures
    assert proc.stdout.count("evaluation of 3 methods on 4 videos") == 1, proc.stdout[-2000:]
    assert len(list(two.rglob("offline-run-*"))) == 1
    assert (two / "evaluation.png").is_file() and (two / "evaluation.md").is_file()
    assert "rank 1 of 2: 2 video(s) done" in (two / "train_ddp_process_1.log").read_text()


@pytest.mark.slow
def test_profile_with_two_processes_equals_one_process(tiny_ckpt: Path, tmp_path: Path) -> None:
    from vidxai.pipelines.explain import explain

    one, two = tmp_path / "run", tmp_path / "two"
    args = [f"ckpt={tiny_ckpt}", "mode=profile", "split=test", "limit=3", "profile.n_boot=100", "logger=none"]
    explain(compose_cfg("explain", tmp_path, args))  # one process, here
    proc = _explain(two, *args, "trainer=ddp_cpu")  # 3 videos: rank 0 takes 0 and 2, rank 1 takes 1 and 0 again
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = json.loads((one / "profile.json").read_text())
    b = json.loads((two / "profile.json").read_text())
    a.pop("seconds"), b.pop("seconds")
    assert a["videos"] == 3
    _assert_close(a, b)
    _assert_close(json.loads((one / "videos.json").read_text()), json.loads((two / "videos.json").read_text()))
    assert proc.stdout.count("explained 3 videos of split test") == 1
    assert "rank 1 of 2: 2 video(s) done" in (two / "train_ddp_process_1.log").read_text()  # one repeated, once


def test_every_rank_gets_a_share_padded_like_a_distributed_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.utils.data import DistributedSampler

    from vidxai.pipelines import sharded

    for n, world in ((5, 2), (4, 2), (1, 3), (7, 3)):
        shares = []
        for rank in range(world):
            monkeypatch.setattr(sharded.PaddedShard, "_rank_world", staticmethod(lambda r=rank, w=world: (r, w)))
            shares.append(list(sharded.PaddedShard(n)))
            expected = list(DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=False))
            assert shares[-1] == expected and len(shares[-1]) >= 1, (n, world, rank)
        assert sorted(set(sum(shares, []))) == list(range(n))


@pytest.mark.slow
def test_a_failing_rank_ends_both_with_one_message(tiny_ckpt: Path, tmp_path: Path) -> None:
    run = tmp_path / "fail"
    proc = _explain(run, f"ckpt={tiny_ckpt}", *EVALUATE, "trainer=ddp_cpu", "logger=none",
                    script=ROOT / "tests" / "explain_failing_rank.py", timeout=300)
    assert proc.returncode != 0
    assert "rank 1 of 2 failed: RuntimeError: corrupt clip" in proc.stdout + proc.stderr, proc.stderr[-3000:]
    assert "error: rank 0 of 2 stopped because rank 1 of 2 failed: RuntimeError: corrupt clip" in proc.stderr
    assert not (run / "evaluation.json").exists()


def test_single_video_modes_run_in_one_process_under_ddp_cpu(tiny_ckpt: Path, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    from vidxai.pipelines.explain import explain

    cfg = compose_cfg("explain", tmp_path, [f"ckpt={tiny_ckpt}", "trainer=ddp_cpu", "logger=none", "split=val",
                                            "index=0", "compare=[z,epsilon]"])
    with caplog.at_level("INFO"):
        summary = explain(cfg)  # no process is started: the summary comes back here
    assert summary["rule"] == "epsilon" and (tmp_path / "run" / "compare.png").is_file()
    assert "runs in one process" in caplog.text or "explains one video in one process" in caplog.text


# ----------------------------------------------------------------------------- the merge, in one process
def _scored(shards_of: list[list[int]], names: list[str], s: EvalSettings, clips: list[EvalClip], net) -> dict:
    shards = []
    for keys in shards_of:
        scorer = VideoScorer(net, names, s)
        for k in keys:
            scorer.add(k, clips[k])
        shards.append(scorer.finish())
    return combine(shards, names, s, [c.source for c in clips], tuple(clips[0].video.shape))


def _plain(result: dict) -> dict:
    out = json.loads(json.dumps(result, default=lambda o: o.tolist()))
    out.pop("timing")
    out["settings"] = {k: v for k, v in out["settings"].items() if not k.endswith("_s") and k != "processes"}
    for m in out["methods"].values():
        m.pop("time_s", None)
    return out


@pytest.fixture
def fails_on_video_2():
    """A method that fails on video 2 only (so it is skipped from video 2 on)."""

    @register_method("fails_on_2", family="test", default=False)
    def _build(net, ctx):  # noqa: ANN001, ANN202
        def fn(clip: torch.Tensor, target: int, key: int) -> torch.Tensor:
            if key == 2:
                raise RuntimeError("no map for video 2")
            return clip.detach().abs().sum(1)

        return fn

    yield "fails_on_2"
    METHODS.pop("fails_on_2")


def test_shards_in_any_order_with_padding_equal_one_process(fails_on_video_2: str) -> None:
    torch.manual_seed(0)
    net = build_network("convlstm", num_classes=3, hidden_channels=[4], stem_channels=4).eval()
    g = torch.Generator().manual_seed(1)
    clips = [EvalClip(torch.randn(4, 3, 16, 16, generator=g), f"v{i}", i % 3) for i in range(5)]
    names = ["epsilon", "saliency", "random", fails_on_video_2]
    s = EvalSettings(mprt_videos=2, randomisation_videos=3, mprt_steps=2, region_size=4, n_boot=100)
    one = _plain(evaluate(net, clips, names, s))
    # rank 1 of 2 as a DistributedSampler pads it (video 0 again), and the shards out of rank order
    two = _plain(_scored([[1, 3, 0], [0, 2, 4]], names, s, clips, net))
    assert one == two
    assert one["methods"][fails_on_video_2]["videos"] == 2  # videos 0 and 1, before it failed
    assert "no map for video 2" in one["methods"][fails_on_video_2]["error"]
    assert one["methods"]["epsilon"]["videos"] == 5 and len(one["methods"]["epsilon"]["mprt_spearman"]) == 2


def test_videos_scored_in_groups_equal_one_at_a_time(fails_on_video_2: str) -> None:
    """The first pass explains ``video_batch`` videos per call; a method failing inside a group keeps the maps of
    the videos before the one it fails on, exactly as one video at a time."""
    from dataclasses import replace

    torch.manual_seed(0)
    net = build_network("convlstm", num_classes=3, hidden_channels=[4], stem_channels=4).eval()
    g = torch.Generator().manual_seed(3)
    clips = [EvalClip(torch.randn(4, 3, 16, 16, generator=g), f"v{i}", i % 3) for i in range(5)]
    names = ["epsilon", "alpha_beta", "saliency", "integrated_gradients", "occlusion", "random", fails_on_video_2]
    s = EvalSettings(mprt_videos=1, randomisation_videos=2, mprt_steps=2, region_size=4, n_boot=100, ig_steps=4)
    one = _plain(evaluate(net, clips, names, replace(s, video_batch=1)))
    for group in (3, 5):
        got = _plain(evaluate(net, clips, names, replace(s, video_batch=group)))
        assert got["settings"].pop("video_batch") == group
        got["settings"]["video_batch"] = 1
        _assert_close(got, one, f"video_batch={group}")
    assert one["methods"][fails_on_video_2]["videos"] == 2  # videos 0 and 1, then it failed inside the group
    assert "no map for video 2" in one["methods"][fails_on_video_2]["error"]
    assert one["methods"]["alpha_beta"]["videos"] == 5


def test_an_undecodable_video_is_an_error_not_the_next_video() -> None:
    from types import SimpleNamespace

    from vidxai.errors import UserError
    from vidxai.pipelines.modes.context import ExplainContext

    entries = [SimpleNamespace(record=SimpleNamespace(path=f"/data/v{i}.avi"), fps=8.0) for i in range(3)]

    class Skipping:  # what VideoClipDataset(on_bad_video="skip") does when video 1 does not decode
        def __init__(self) -> None:
            self.entries = entries

        def __getitem__(self, i: int) -> dict:
            return {"index": torch.tensor(2 if i == 1 else i)}

    ctx = ExplainContext(None, None, None, torch.device("cpu"), None, Path("."), None, None)
    with pytest.raises(UserError, match="cannot decode video /data/v1.avi"):
        ctx.clip(Skipping(), 1)


# ----------------------------------------------------------------------------- interrupted and resumed
#: the evaluation of the resume test: one video per group, so the journal has a record per video (4), then one
#: per randomisation step and method (2 x 3) and per method's sMPRT (3)
RESUMABLE = [*EVALUATE, "video_batch=1", "logger=none"]


def _journal_lines(run: Path) -> int:
    path = run / "journal" / "rank0.jsonl"
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def _interrupted(run: Path, args: list[str], sig: signal.Signals, after: int, rng: np.random.Generator
                 ) -> tuple[subprocess.CompletedProcess, float]:
    """Run explain.py and send ``sig`` once its journal has ``after`` lines (plus up to 5 ms at random, so the
    signal lands inside a unit of work); the finished process and the seconds it took to stop."""
    import time

    cmd = [sys.executable, str(ROOT / "explain.py"), f"hydra.run.dir={run}", *args]
    # a resumed run starts with the lines of the runs before: it must add one of its own before the signal (a
    # signal while Python is still importing tests the interpreter, not the run)
    after = max(after, _journal_lines(run) + 1)
    # SIGINT at its default, as in a terminal (a suite started in the background would pass on an ignored one)
    proc = subprocess.Popen(cmd, cwd=run.parent, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while proc.poll() is None and _journal_lines(run) < after and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(float(rng.uniform(0, 0.005)))
    sent = time.monotonic()
    if proc.poll() is None:
        # a unit of the tiny model takes 10-30 ms on a quiet machine (all 11 of them 0.12 s): freeze the run where
        # it is, then signal it and let it go on, so the signal lands inside the units, not after them
        proc.send_signal(signal.SIGSTOP)
        proc.send_signal(sig)
        proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), time.monotonic() - sent


@pytest.mark.slow
def test_an_evaluation_stopped_by_sigterm_ctrl_c_and_sigkill_resumes_to_the_same_result(
        tiny_ckpt: Path, tmp_path: Path) -> None:
    """As a user on a preemptible node: SIGTERM, then Ctrl-C, then SIGKILL, each at a random point of the journal
    (first pass or randomisation tests), each time the same command again with resume=; then a resume to the
    end. The result equals an uninterrupted run's (1e-6), and a resume with other settings is one error line."""
    from vidxai.errors import UserError
    from vidxai.pipelines.explain import explain
    from vidxai.pipelines.sharded import check_resume

    args = [f"ckpt={tiny_ckpt}", *RESUMABLE]
    explain(compose_cfg("explain", tmp_path / "whole", args))  # the uninterrupted run, here
    whole = json.loads((tmp_path / "whole" / "run" / "evaluation.json").read_text())
    total = _journal_lines(tmp_path / "whole" / "run")
    assert total == 1 + 4 + 2 * 3 + 3  # header, videos, cascade steps x methods, sMPRT per method

    rng = np.random.default_rng(24)
    run = tmp_path / "stopped"
    first = int(rng.integers(2, 5))  # after 1-3 of the 4 videos: in the first pass
    # then the tests; never after the last-but-one line: with only the last unit and the statistics left, a quiet
    # machine can finish the run inside the random delay, and a run that finished was not interrupted
    points = [first, *sorted(rng.choice(np.arange(first + 1, total - 1), size=2, replace=False))]
    for n, (sig, after) in enumerate(zip((signal.SIGTERM, signal.SIGINT, signal.SIGKILL), points, strict=True)):
        if _journal_lines(run) >= total:  # a quiet machine finished every unit before the signal landed (it
            break  # stopped the writing of the files): nothing is left to interrupt; the resume below still runs
        proc, seconds = _interrupted(run, [*args, *([f"resume={run}"] if n else [])], sig, int(after), rng)
        if proc.returncode == 0 and (run / "evaluation.json").exists():  # a quiet machine finished every unit
            # and wrote the result before the signal could be sent: nothing was interrupted; the result holds
            assert _journal_lines(run) == total
            _assert_close(_numbers(whole), _numbers(json.loads((run / "evaluation.json").read_text())))
            print(f"{sig.name} after {after} journal lines: the run finished first (nothing to interrupt)")
            break
        assert proc.returncode != 0, (sig, after, proc.stdout[-2000:], proc.stderr[-2000:])
        assert seconds < 30, (sig, seconds)
        if (run / "evaluation.json").exists():  # the signal landed after the result was written (a quiet machine)
            assert _journal_lines(run) == total
            _assert_close(_numbers(whole), _numbers(json.loads((run / "evaluation.json").read_text())))
            break
        lines = _journal_lines(run)
        print(f"{sig.name} after {after} journal lines: stopped in {seconds:.1f} s, {lines} lines kept")
        assert lines >= after, (sig, after, lines)  # what was finished stays
        if sig != signal.SIGKILL:
            assert f"resume={run}" in proc.stdout + proc.stderr, (sig, after, proc.returncode, proc.stdout[-2000:],
                                                                  proc.stderr[-2000:])
    with (run / "journal" / "rank0.jsonl").open("a") as fh:
        fh.write('{"kind":"videos","videos":[{"key"')  # what a SIGKILL in the middle of a write leaves
    with pytest.raises(UserError, match=r"resume=.*limit=3 here, limit=4 in the interrupted run"):
        check_resume(compose_cfg("explain", tmp_path / "other", [*args, "limit=3", f"resume={run}"]), "evaluate")

    explain(compose_cfg("explain", tmp_path / "resumed", [*args, f"resume={run}"]))
    resumed = json.loads((run / "evaluation.json").read_text())
    assert resumed["settings"]["resumed"] is True
    _assert_close(_numbers(whole), _numbers(resumed))
    assert _journal_lines(run) == total  # nothing done twice, the cut line dropped


def test_profile_resumes_from_its_journal_explaining_only_what_is_missing(
        tiny_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vidxai.errors import UserError
    from vidxai.pipelines.explain import explain
    from vidxai.pipelines.modes import profile

    args = [f"ckpt={tiny_ckpt}", "mode=profile", "split=test", "limit=3", "profile.n_boot=100", "logger=none"]
    explain(compose_cfg("explain", tmp_path / "a", args))
    run = tmp_path / "a" / "run"
    whole = json.loads((run / "profile.json").read_text())
    assert (run / "report.html").is_file()
    journal = run / "journal" / "rank0.jsonl"
    lines = journal.read_text().splitlines()
    assert len(lines) == 4  # the header, then one line per video
    journal.write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])  # killed while writing the second video
    with pytest.raises(UserError, match="holds the journal of an earlier run"):
        explain(compose_cfg("explain", tmp_path / "a", args))  # a new run in that folder: not over its journal
    explained: list[int] = []
    real = profile._explain_video
    monkeypatch.setattr(profile, "_explain_video", lambda *a: explained.append(a[-1]) or real(*a))
    explain(compose_cfg("explain", tmp_path / "b", [*args, f"resume={run}"]))
    assert explained == [1, 2]  # only what the journal did not hold
    again = json.loads((run / "profile.json").read_text())
    whole.pop("seconds"), again.pop("seconds")
    _assert_close(whole, again)
