"""The camera site: a Flower ClientApp (Message API).

A site keeps its video. On first use it encodes its AR videos once with the frozen encoder into
its local HDF5 store; every round it loads the received adapter and head arrays strictly,
trains the configured local epochs with the three SPLAVU losses on the cached features, and
replies with the shareable arrays only (AAM + task heads) and its metrics.
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path

import torch
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from common.config import RunConfig
from common.model import AnonymizerModel, build_model
from common.runconfig import run_config_from_context, site_paths
from common.sitedata import as_tensors, ensure_site_features, load_site_arrays
from common.training import evaluate_action_recognition, train_local
from common.weights import load_shareable, shareable_state

app = ClientApp()


@lru_cache(maxsize=4)
def _site_tensors(
    site_dir: str, store: str, split: str, config_yaml_key: str
) -> dict[str, torch.Tensor]:
    # Cached per process: in simulation one process serves many rounds of a site.
    return as_tensors(load_site_arrays(site_dir, store, split))


def _prepare(context: Context) -> tuple[RunConfig, str, Path, Path]:
    # One torch thread per site: the simulation runs one site per CPU.
    torch.set_num_threads(1)
    config = run_config_from_context(context.run_config)
    site_id, site_dir, store = site_paths(context.node_config, context.run_config, config)
    ensure_site_features(site_dir, store, config.encoder, config.features)
    return config, site_id, site_dir, store


def _model_from(msg: Message, config: RunConfig, dim: int) -> AnonymizerModel:
    model = build_model(dim, config, seed=config.seed)
    arrays = msg.content.array_records["arrays"]
    load_shareable(model, {name: array.numpy() for name, array in arrays.items()})
    return model


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Local SPLAVU training on the site's cached features; reply with shareable arrays only."""
    started = time.perf_counter()
    config, site_id, site_dir, store = _prepare(context)
    tensors = _site_tensors(str(site_dir), str(store), "train", str(store.stat().st_mtime_ns))
    model = _model_from(msg, config, tensors["clip_features"].shape[-1])
    train_config = msg.content.config_records.get("config", {})
    server_round = int(train_config.get("server-round", 0))
    proximal_mu = float(train_config.get("proximal-mu", 0.0))
    metrics = train_local(
        model,
        tensors,
        config.train,
        config.loss,
        proximal_mu=proximal_mu,
        window=config.anonymizer.window,
        # Another shuffle every round and at every site.
        seed=config.train.seed * 1_000_003
        + server_round * 1009
        + int(site_id.rsplit("_", 1)[-1] or 0),
    )
    reply_arrays = ArrayRecord(
        {name: Array(array) for name, array in shareable_state(model).items()}
    )
    reply_metrics = MetricRecord(
        {
            **{key: float(value) for key, value in metrics.items()},
            "num-examples": len(tensors["actions"]),
            "seconds": time.perf_counter() - started,
        }
    )
    return Message(RecordDict({"arrays": reply_arrays, "metrics": reply_metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Utility on the site's validation split: AR top-1 of the received adapter and head."""
    config, _, site_dir, store = _prepare(context)
    tensors = _site_tensors(str(site_dir), str(store), "val", str(store.stat().st_mtime_ns))
    model = _model_from(msg, config, tensors["clip_features"].shape[-1])
    top1 = evaluate_action_recognition(model, tensors, config.anonymizer.window)
    metrics = MetricRecord({"ar_top1": top1, "num-examples": len(tensors["actions"])})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
