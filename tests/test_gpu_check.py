"""The GPU check script's CPU smoke run: every part reports, CUDA-only parts say why they were skipped."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from test_benchmarks import benchmark_script


def test_gpu_check_quick_on_the_cpu_writes_every_part(tmp_path: Path) -> None:
    from vidxai.models import NETWORKS

    gpu_check = benchmark_script("gpu_check")
    # generous budgets: the smoke run checks the script, not the speed of a shared machine
    report = gpu_check.main(["--device", "cpu", "--quick", "--out", str(tmp_path), "--budget-scale", "4"])

    written = list(tmp_path.glob("gpu_check-*-cpu.json"))
    assert len(written) == 1 and json.loads(written[0].read_text()) == json.loads(json.dumps(report, default=str))
    assert report["device"] == "cpu" and report["quick"] is True and report["wall_s"] > 0
    for name in gpu_check.PARTS:
        assert "status" in report[name] and report[name]["seconds"] >= 0, name
    for name in gpu_check.CUDA_ONLY:
        assert report[name]["status"] == "skipped: no CUDA"

    env = report["environment"]
    assert env["status"] == "ok" and env["versions"]["torch"] == torch.__version__ and env["device_name"]

    decode = report["decode"]
    assert decode["status"] == "ok"
    for key in ("320x240/pyav", "640x360/pyav"):
        assert decode[key]["full_decode_fps"] > 0 and decode[key]["clip16_ms"] > 0, key

    # LRP and training: finished cases carry positive figures; a part cut by its limit says so
    for part, figure in (("lrp", "epsilon"), ("training", "clips_per_s")):
        status = report[part]["status"]
        assert status == "ok" or status.startswith("timeout: stopped by its time limit"), (part, status)
        cases = {k: v for k, v in report[part].items() if "/" in k}
        # --quick covers every registered network (each built for the tiny clip it is fed)
        assert status != "ok" or {k.split("/")[0] for k in cases} == set(NETWORKS), (part, sorted(cases))
        for key, value in cases.items():
            if part == "lrp":
                assert value["epsilon"]["ratio"] > 0 and value["alpha_beta"]["ratio"] > 0, key
            else:
                assert value[figure] > 0, key
    assert report["evaluate"]["status"].startswith("skipped: --quick")
