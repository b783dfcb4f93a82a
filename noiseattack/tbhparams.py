"""TensorBoard's HParams for an experiment: one experiment-level config in `runs/<name>/tb/` (which
columns exist, and which come first) and one session per run in `tb/<norm>-s<seed>/`.

TensorBoard orders the HParams columns by (not `differs`, name) and shows the first five; without
an experiment-level config it builds one from the sessions, all `differs` false, so the first five
were alphabetical (alpha, attack, beta, dataset, depth) and norm and seed were hidden. Here norm,
seed and the attack setting are marked as the columns that tell runs apart, so they lead.
The final metrics get tags that sort after `test/` and `train/`, so that the Time Series tab opens
on the curves rather than on single-point charts.
"""

from __future__ import annotations

from typing import Any

from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

from .config import RunConfig, TrainConfig

FINAL_ACC_TAG = "zz_final/test_acc"  # "zz_": after test/ and train/ in every sorted listing
BEST_ACC_TAG = "zz_final/best_test_acc"
METRICS = ((FINAL_ACC_TAG, "final_acc"), (BEST_ACC_TAG, "best_acc"))
LEADING = ("norm", "seed", "setting")  # the columns shown first, in this (alphabetical) order


def run_hparams(run: RunConfig, status: str) -> dict[str, Any]:
    """A run's hparams: what tells it apart first, then the setting's attack parameters and the rest."""
    t = run.train
    attack = t.attack_spec().hparams(t.attack_params())
    return {"norm": run.norm, "seed": run.seed, "setting": t.setting_label(), "attack": t.attack.value, **attack,
            "dataset": t.dataset, "depth": t.depth, "width": t.width, "epochs": t.epochs, "status": status}


def _summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> Summary:
    data.version = metadata.PLUGIN_DATA_VERSION
    smd = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME,
                                                                 content=data.SerializeToString()))
    return Summary(value=[Summary.Value(tag=tag, metadata=smd)])


def _info(name: str, values: list[Any]) -> api_pb2.HParamInfo:
    info = api_pb2.HParamInfo(name=name, differs=name in LEADING)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        info.type = api_pb2.DATA_TYPE_FLOAT64
        info.domain_interval.min_value, info.domain_interval.max_value = min(values), max(values)
    else:
        info.type = api_pb2.DATA_TYPE_STRING
        info.domain_discrete.extend([str(v) for v in dict.fromkeys(values)])
    return info


def experiment_summary(train: TrainConfig, norms: list[str], seeds: list[int]) -> Summary:
    """The experiment-level config: every hparam of `run_hparams` with its domain, and the metrics."""
    runs = [RunConfig(train, n, s) for n in norms for s in seeds]
    rows = [run_hparams(r, "finished") for r in runs]
    domains = {name: [row[name] for row in rows] for name in rows[0]}
    domains["status"] = ["finished", "diverged"]
    exp = api_pb2.Experiment(
        hparam_infos=[_info(name, values) for name, values in domains.items()],
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=label)
                      for tag, label in METRICS])
    return _summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=exp))


def session_summaries(run: RunConfig, status: str) -> list[Summary]:
    """A run's session: its start (the hparams) and its end (success, or failure when it diverged)."""
    start = plugin_data_pb2.SessionStartInfo()
    for name, value in run_hparams(run, status).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            start.hparams[name].number_value = value
        else:
            start.hparams[name].string_value = str(value)
    end = plugin_data_pb2.SessionEndInfo(
        status=api_pb2.STATUS_SUCCESS if status == "finished" else api_pb2.STATUS_FAILURE)
    return [_summary(metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=start)),
            _summary(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end))]
