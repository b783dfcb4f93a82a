"""First contact, round two (#25, items 2, 3 and 5): a dataset mixed into itself, layers and seeds
named twice, names that are not portable directory names, and sweep options checked before anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from noiseattack import datasets
from noiseattack.config import ConfigError, resolve_train_config
from noiseattack.sweep import cpu_count


def _one_line_error(code: int, out: str, err: str, *needles: str) -> None:
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("noiseattack: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def _dry_run_identity(out: str) -> dict:
    """The JSON a command's --dry-run prints after its `name -> dir` line (its runs' lines follow)."""
    return json.JSONDecoder().raw_decode(out[out.index("{"):])[0]


# --------------------------------------------------------------------------- 2. mix into itself

def test_mix_without_extra_picks_a_foreign_source_for_fmnist_and_says_which(capsys, tmp_path):
    code, out, err = run_cli(capsys, "mix", "--dataset", "fmnist", "--k", "32", "--dry-run", "--runs-dir", tmp_path)
    assert code == 0, err
    assert out.startswith("mix-mnist-k32-fmnist"), out  # the picked source is in the run's name
    assert _dry_run_identity(out)["extra"] == "mnist"
    code, out, err = run_cli(capsys, "mix", "--dataset", "mnist", "--k", "32", "--dry-run", "--runs-dir", tmp_path)
    assert code == 0 and _dry_run_identity(out)["extra"] == "fmnist", err
    assert not any(tmp_path.iterdir())


def test_mix_help_says_the_default_depends_on_the_dataset(capsys):
    code, out, _ = run_cli(capsys, "mix", "--help")
    assert code == 0
    squashed = "".join(c for c in out if not c.isspace() and c not in "│|")  # wrapped, maybe boxed
    assert "[default:fmnist;mnistfor--datasetfmnist]" in squashed, out


@pytest.mark.parametrize("dataset", sorted(datasets.DATASETS))
def test_every_dataset_defaults_to_a_foreign_source_other_than_itself(dataset):
    cfg = resolve_train_config(attack="mix", dataset=dataset, k=8)
    assert cfg.extra != dataset and cfg.extra in datasets.EXTRA_SOURCES


@pytest.mark.parametrize("dataset", ["fmnist", "mnist"])
def test_mixing_a_dataset_into_itself_is_refused_on_the_cli(capsys, tmp_path, dataset):
    runs = tmp_path / "runs"
    code, out, err = run_cli(capsys, "mix", "--dataset", dataset, "--extra", dataset.upper(), "--k", "8",
                             "--runs-dir", runs)
    _one_line_error(code, out, err, f"--extra {dataset} is the dataset being trained")
    assert not runs.exists()


def test_mixing_a_dataset_into_itself_is_refused_in_a_grid(capsys, tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text('[train]\ndataset = "mnist"\n[grid]\nnorms = "bn"\nseeds = [0]\n'
                    '[[attack]]\nkind = "mix"\nextra = ["fmnist", "mnist"]\nk = [8]\n')
    code, out, err = run_cli(capsys, "sweep", grid, "--dry-run")
    _one_line_error(code, out, err, "--extra mnist is the dataset being trained")


def test_an_inverted_copy_of_the_dataset_is_still_a_foreign_source():
    assert resolve_train_config(attack="mix", dataset="mnist", extra="mnist-inverted", k=8).extra == "mnist-inverted"


# --------------------------------------------------------------------------- 3. named twice

@pytest.mark.parametrize("args, needle", [
    (["--seeds", "0,0"], "--seeds names seed 0 more than once"),
    (["--seeds", "3,1,3,1"], "--seeds names seed 3 more than once"),
    (["--norm", "bn,bn"], "--norm names bn more than once"),
    (["--norm", "bn,BN"], "--norm names bn more than once"),
    (["--norm", "paper,iebn"], "--norm names iebn more than once"),
])
def test_a_seed_or_layer_named_twice_is_refused(capsys, tmp_path, args, needle):
    runs = tmp_path / "runs"
    code, out, err = run_cli(capsys, "clean", *args, "--runs-dir", runs)
    _one_line_error(code, out, err, needle)
    assert not runs.exists()


def test_a_layer_named_twice_in_a_grid_is_refused(capsys, tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text('[grid]\nnorms = ["bn", "paper"]\nseeds = [0]\n[[attack]]\nkind = "clean"\n')
    code, out, err = run_cli(capsys, "sweep", grid, "--dry-run")
    _one_line_error(code, out, err, "grid.norms names bn more than once")


def test_distinct_seeds_and_layers_keep_their_order(capsys, tmp_path):
    code, out, err = run_cli(capsys, "clean", "--seeds", "3,1,2", "--norm", "iebn,bn", "--dry-run",
                             "--runs-dir", tmp_path)
    assert code == 0, err
    ident = _dry_run_identity(out)
    assert ident["seeds"] == [3, 1, 2] and ident["norms"] == ["iebn", "bn"]


# --------------------------------------------------------------------------- 5. names, workers

@pytest.mark.parametrize("name, needle", [
    ("a" * 300, "--name is 300 characters long"),
    ("a b:c*?", "has ' ', '*', ':', '?'"),
    ("-rf", "starts with '-'"),
    (".hidden", "starts with '.'"),
    ("x/y", "has '/'"),
    ("", "is empty"),
])
def test_a_name_that_is_not_a_portable_directory_name_is_refused_and_nothing_is_written(capsys, tmp_path, name,
                                                                                        needle):
    runs = tmp_path / "runs"
    code, out, err = run_cli(capsys, "clean", "--name", name, "--runs-dir", runs)
    _one_line_error(code, out, err, needle)
    assert not runs.exists()


def test_a_portable_name_is_taken_as_it_is(capsys, tmp_path):
    code, out, err = run_cli(capsys, "clean", "--name", "bn+se_v1.2-a", "--dry-run", "--runs-dir", tmp_path)
    assert code == 0, err
    assert out.startswith(f"bn+se_v1.2-a -> {tmp_path / 'bn+se_v1.2-a'}"), out


@pytest.mark.parametrize("workers", ["0", "-1", str(cpu_count() + 1), "99999"])
@pytest.mark.parametrize("dry_run", [True, False])
def test_sweep_workers_out_of_range_are_refused_before_the_plan(capsys, tmp_path, workers, dry_run):
    grid = tmp_path / "g.toml"
    grid.write_text(f'[train]\nruns_dir = "{tmp_path / "runs"}"\n[grid]\nnorms = "bn"\nseeds = [0]\n'
                    '[[attack]]\nkind = "clean"\n')
    code, out, err = run_cli(capsys, "sweep", grid, "--workers", workers, *(["--dry-run"] if dry_run else []))
    _one_line_error(code, out, err, "--workers must be")
    assert out == "" and not (tmp_path / "runs").exists()


def test_sweep_threads_beyond_the_cpus_are_refused(capsys, tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text('[grid]\nnorms = "bn"\nseeds = [0]\n[[attack]]\nkind = "clean"\n')
    code, out, err = run_cli(capsys, "sweep", grid, "--threads", str(cpu_count() + 1), "--dry-run")
    _one_line_error(code, out, err, "--threads must be 1 ..")


def test_bench_workers_out_of_range_are_refused(capsys, tmp_path):
    code, out, err = run_cli(capsys, "bench", "--norm", "bn", "--workers", "99999", "--dry-run",
                             "--runs-dir", tmp_path / "runs")
    _one_line_error(code, out, err, "--workers must be at most")
    assert not (tmp_path / "runs").exists()


def test_the_api_refuses_the_same_inputs():
    from noiseattack.experiment_setup import parse_seeds

    with pytest.raises(ConfigError, match="more than once"):
        parse_seeds([1, 1])
    with pytest.raises(ConfigError, match="the dataset being trained"):
        resolve_train_config(attack="mix", dataset="fmnist", extra="fmnist", k=8)
