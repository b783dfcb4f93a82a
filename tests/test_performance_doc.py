"""docs/performance.md's generated regions are what scripts/bench_doc.py makes of the committed logs:
each `<!-- bench:NAME:begin -->` region holds the table of the one log named NAME under docs/bench/."""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from bench_doc import table  # noqa: E402


def test_every_bench_region_is_its_logs_table():
    doc = (REPO / "docs" / "performance.md").read_text()
    regions = re.findall(r"<!-- bench:(\S+):begin -->\n(.*?)\n<!-- bench:\1:end -->", doc, flags=re.S)
    assert len(regions) >= 4, "performance.md lost its generated regions"
    for name, body in regions:
        logs = [p for p in (REPO / "docs" / "bench").rglob(f"{name}.*") if p.suffix in (".txt", ".log")]
        assert len(logs) == 1, f"region {name}: want one log named {name}.txt or .log under docs/bench, found {logs}"
        assert body == table(logs[0].read_text()), f"region {name} is not bench_doc.py's table of {logs[0]}"


def test_bench_protocol_prints_the_ratio_lines_bench_doc_reads(capsys, monkeypatch):
    """scripts/bench_protocol.py end to end, at its smallest (one step, one round, two layers): the
    compiled and the eager model of each step, and the ratio lines are what bench_doc.py tabulates."""
    import pytest
    from conftest import cxx_compiler

    from noiseattack import train

    if cxx_compiler() is None:
        pytest.skip("no C++ compiler: torch.compile on a CPU needs one")
    import bench_protocol

    monkeypatch.setattr(train._CompileState, "failed", False)  # a fallback stays in this test (it stops the script)

    argv = ["--settings", "clean", "--norms", "bn,bn-damped", "--steps", "1", "--rounds", "1"]
    assert bench_protocol.main(argv) == 0
    out = capsys.readouterr().out
    ratio = [line.split() for line in out.splitlines() if line.startswith("ratio ")]
    assert [r[1] for r in ratio] == ["compiled_vs_eager_clean_bn", "compiled_vs_eager_clean_bn-damped",
                                     "step_clean_bn-damped_vs_bn"] and all(float(r[2]) > 0 for r in ratio)
    rows = [line for line in table(out).splitlines() if line.startswith("| `")]
    assert rows == [f"| `{r[1]}` | {r[2]} | {r[4]} | {r[6]} |" for r in ratio]
    assert not train._CompileState.failed  # both models compiled: the ratios compare compiled with eager


def test_bench_ratios_from_known_rates():
    """bench.py's per-round ratios from rates (img/s) chosen by hand: throughput ratios as a / b, step-time
    ratios as rate(BN) / rate(layer); the IEBN ablations' eager-model ratio only where BN ran eager too."""
    import bench

    r = {"pure": 200.0, "harness": 180.0, "harness_flip": 150.0, "reference": 90.0, "harness_iebn": 160.0,
         "harness_constant": 176.0, "harness_fp32": 100.0, "harness_nchw": 120.0, "harness_iebn_kernels": 140.0,
         "harness_iebn_eager": 112.0, "harness_iebn_reference": 80.0, "zoo_gn": 144.0}
    eager = bench.ratios({**r, "compile": False}, "bn")
    want = {"harness_vs_pure": 0.9, "harness_vs_reference": 2.0, "compiled_vs_eager": 150 / 180,
            "iebn_step_vs_bn_step": 180 / 160, "constant_step_vs_clean_step": 180 / 176, "amp_vs_fp32": 1.8,
            "iebn_eager_step_vs_bn_step": 180 / 112, "channels_last_vs_nchw": 1.5,
            "iebn_compiled_vs_eager_kernels": 1.25, "iebn_fused_vs_reference_layer": 1.4, "step_gn_vs_bn": 1.25}
    assert eager.keys() == want.keys()
    assert all(abs(eager[k] - v) < 1e-12 for k, v in want.items()), eager
    compiled = bench.ratios({**r, "compile": True}, "bn")
    assert "iebn_eager_step_vs_bn_step" not in compiled and abs(compiled["compiled_vs_eager"] - 1.2) < 1e-12
    # the norm under test is IEBN: its own rate is the harness's
    assert abs(bench.ratios({**r, "compile": True, "harness_bn": 198.0}, "iebn")["iebn_step_vs_bn_step"] - 1.1) < 1e-12


def test_bench_doc_tables_a_cpu_log_with_its_targets_and_rates():
    log = "\n".join([
        "cpu: Some CPU (2 cores, torch threads 2, AVX512, bf16 yes); gpu: none; torch 9.9; python 3.11.7",
        "round 1/2: pure 100  harness 96",
        "",
        "pure                  101.5 img/s   (rounds: 100, 103)",
        "harness_iebn_reference     96.0 img/s   (rounds: 96, 96)",
        "AVX512, bf16 yes; median of 2 paired per-round ratios, with their min and max",
        "ratio harness_vs_pure 0.946 min 0.940 max 0.952",
        "ratio harness_vs_reference 1.700 min 1.6 max 1.8",
        "ratio iebn_step_vs_bn_step 1.150 min 1.1 max 1.2",
        "ratio amp_vs_fp32 1.812 min 1.707 max 1.970"])
    assert table(log) == "\n".join([
        "Machine: Some CPU (2 cores, torch threads 2, AVX512, bf16 yes); gpu: none; torch 9.9; python 3.11.7; "
        "CPU kind AVX512, bf16 yes", "",
        "| ratio | median | min | max | target (issue #4) |", "|---|---:|---:|---:|---|",
        "| `harness_vs_pure` | 0.946 | 0.940 | 0.952 | 1. ≥ 0.95 ✗ |",
        "| `harness_vs_reference` | 1.700 | 1.6 | 1.8 | 2. ≥ 1.6 ✓ |",
        "| `iebn_step_vs_bn_step` | 1.150 | 1.1 | 1.2 | 3a. ≤ 1.15 ✓ |",
        "| `amp_vs_fp32` | 1.812 | 1.707 | 1.970 |  |", "",
        "| measurement | img/s (median) | rounds |", "|---|---:|---|",
        "| `pure` | 101.5 | 100, 103 |", "| `harness_iebn_reference` | 96.0 | 96, 96 |"])
    gpu = table(log.replace("gpu: none", "gpu: NVIDIA H200"))  # on a GPU: target 4, >= 5x the reference
    assert "| `harness_vs_reference` | 1.700 | 1.6 | 1.8 | 4. ≥ 5 ✗ |" in gpu
    assert "| `harness_vs_pure` | 0.946 | 0.940 | 0.952 | 1. ≥ 0.95 ✗ |" in gpu
    no_targets = table("cpu: X; gpu: none\nratio sweep_vs_pure_w2 0.959")  # no ratio with a target: no column
    assert "target" not in no_targets and "| `sweep_vs_pure_w2` | 0.959 |  |  |" in no_targets


def test_bench_ablation_jobs_time_what_their_names_say(monkeypatch):
    """bench.py's jobs, each run with the timer replaced by one that records what it was asked to time:
    the IEBN ablations train an eager model (a whole-model compile would compile every variant alike),
    with the compiled kernels, the eager ones and the official ops; harness_fp32 is the harness without
    autocast; harness_nchw the harness without channels_last."""
    import bench

    from noiseattack.config import resolve_train_config
    from noiseattack.iebn import IEBN

    seen = {}
    monkeypatch.setattr(bench, "time_harness", lambda cfg, norm, *a: seen.setdefault("last", (cfg, norm, IEBN.default_impl)))
    common = dict(dataset="cifar100", depth=8, batch_size=8, device="cpu", channels_last=True, compile_norms=True,
                  compile=True, epochs=1)
    clean = resolve_train_config(attack="clean", amp=True, **common)
    attacked = resolve_train_config(attack="constant", alpha=2.0, beta=1.0, amp=True, **common)
    import torch

    from noiseattack.data import Split

    train = Split(torch.zeros(16, 3, 32, 32, dtype=torch.uint8), torch.zeros(16, dtype=torch.long))
    jobs = bench._jobs(bench._parser().parse_args(["--amp", "--ablations", "--batch-size", "8"]), clean, attacked,
                       train, root=None)
    got = {}
    for name in ("harness", "harness_fp32", "harness_nchw", "harness_iebn_kernels", "harness_iebn_eager",
                 "harness_iebn_reference"):
        seen.clear()
        jobs[name]()
        cfg, norm, impl = seen["last"]
        got[name] = (norm, cfg.compile, cfg.compile_norms, cfg.amp, cfg.channels_last, impl)
    default_impl = IEBN.default_impl
    assert got == {
        "harness": ("bn", True, True, True, True, default_impl),
        "harness_fp32": ("bn", True, True, False, True, default_impl),
        "harness_nchw": ("bn", True, True, True, False, default_impl),
        "harness_iebn_kernels": ("iebn", False, True, True, True, default_impl),
        "harness_iebn_eager": ("iebn", False, False, True, True, default_impl),
        "harness_iebn_reference": ("iebn", False, False, True, True, "reference"),
    }
    assert "harness_nchw" not in bench._jobs(bench._parser().parse_args(["--ablations", "--no-channels-last"]),
                                             resolve_train_config(attack="clean", **{**common, "channels_last": False}),
                                             attacked, train, root=None)


def test_bench_doc_without_logs_fills_every_region_from_its_log_by_name(tmp_path):
    """`bench_doc.py --doc DOC`: each bench:NAME region from the one log NAME.txt/.log under --bench (in a
    sub-dir too); a region without its log is one line on stderr, exit 2, the doc unchanged."""
    import subprocess

    bench = tmp_path / "bench"
    (bench / "gpu").mkdir(parents=True)
    (bench / "a.txt").write_text("cpu: X; gpu: none\nratio amp_vs_fp32 1.500 min 1.4 max 1.6\n")
    (bench / "gpu" / "b.log").write_text("just a log\n")
    doc = tmp_path / "doc.md"
    doc.write_text("# t\n<!-- bench:a:begin -->\nold\n<!-- bench:a:end -->\n<!-- bench:b:begin -->\n<!-- bench:b:end -->\n")
    script = str(REPO / "scripts" / "bench_doc.py")
    proc = subprocess.run([sys.executable, script, "--doc", str(doc), "--bench", str(bench)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert doc.read_text() == ("# t\n<!-- bench:a:begin -->\n" + table((bench / "a.txt").read_text()) + "\n<!-- bench:a:end -->\n"
                               "<!-- bench:b:begin -->\n```text\njust a log\n```\n<!-- bench:b:end -->\n")
    before = doc.read_text() + "<!-- bench:c:begin -->\n<!-- bench:c:end -->\n"
    doc.write_text(before)
    proc = subprocess.run([sys.executable, script, "--doc", str(doc), "--bench", str(bench)], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "bench:c" in proc.stderr and doc.read_text() == before
