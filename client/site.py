"""What a camera site does with a message: the training, evaluation and preparation behind the
ClientApp (client.app), in the ClientApp's process (simulation) or in the site's long-lived
worker (client.worker, deployment). Each function takes the message content and the Flower
context and returns the reply content.

A site keeps its video. On first use it encodes its videos of the seen tasks once with the
frozen encoder, run through the best edge backend the site has (`edge_export.site`), into its
local HDF5 store; every round it loads the received adapter and head arrays strictly, trains
the configured local epochs with the three SPLAVU losses on the cached features, and replies
with the shareable arrays only (AAM + task heads), its metrics and its site id.
"""

from __future__ import annotations

import time
import zlib
from functools import lru_cache
from pathlib import Path

import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    MetricRecord,
    RecordDict,
)

from common.config import RunConfig
from common.discriminant import MOMENTS_RECORD, moments_arrays, trained_moments
from common.model import AnonymizerModel, build_model
from common.runconfig import run_config_from_context, site_paths
from common.sitedata import (
    SiteData,
    ensure_site_features,
    load_site_data,
    site_static_clips,
    site_tensors,
)
from common.training import evaluate_site, train_local
from common.weights import load_shareable, shareable_state
from edge_export.site import site_encoder


@lru_cache(maxsize=4)
def _site_data(
    site_dir: str, store: str, tasks: tuple[str, ...], split: str, store_version: str
) -> SiteData:
    # Cached per process: in simulation one process serves many rounds of a site.
    return site_tensors(load_site_data(site_dir, store, tasks, split))


def _prepare(context: Context, split: str) -> tuple[RunConfig, str, SiteData]:
    # One torch thread per site (the simulation runs one site per CPU), deterministic kernels:
    # the same seed gives the same update.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    config = run_config_from_context(context.run_config)
    site_id, site_dir, store = site_paths(context.node_config, context.run_config, config)
    tasks = tuple(config.tasks.seen)
    # The site encodes its videos (once) through the best edge backend it has, or the one its
    # node config names: --node-config 'encoder-backend="onnx"' (auto, eager, torch, onnx,
    # openvino, tensorrt). The artifact is kept beside the store, one folder per store (sites
    # that share a disk, as in `deploy-local`, never write into each other's).
    backend = str(context.node_config.get("encoder-backend", "auto"))
    edge_dir = Path(store).with_name(f"{Path(store).stem}.edge")
    ensure_site_features(
        site_dir,
        store,
        config.encoder,
        config.features,
        tasks=tasks,
        encoder_factory=lambda: site_encoder(config.encoder, backend, edge_dir),
        static_clips=site_static_clips(config.features, config.loss),
    )
    data = _site_data(str(site_dir), str(store), tasks, split, str(Path(store).stat().st_mtime_ns))
    return config, site_id, data


def _model_from(content: RecordDict, config: RunConfig, data: SiteData) -> AnonymizerModel:
    dim = next(iter(data.values())).clip_features.shape[-1]
    model = build_model(dim, config, seed=config.seed)
    arrays = content.array_records["arrays"]
    load_shareable(model, {name: array.numpy() for name, array in arrays.items()})
    return model


def site_seed(config: RunConfig, server_round: int, site_id: str) -> int:
    """The seed of a site's shuffles in a round: from (train.seed, round, site) only (a site
    id's number, "site_03" -> 3, or a checksum of a name without one)."""
    digits = "".join(ch for ch in site_id if ch.isdigit())
    site = int(digits) if digits else zlib.crc32(site_id.encode())
    return config.train.seed * 1_000_003 + server_round * 1009 + site


def train_content(content: RecordDict, context: Context) -> RecordDict:
    """Local SPLAVU training on the site's cached features; reply with shareable arrays only."""
    started = time.perf_counter()
    config, site_id, data = _prepare(context, "train")
    model = _model_from(content, config, data)
    train_config = content.config_records.get("config", {})
    server_round = int(train_config.get("server-round", 0))
    metrics = train_local(
        model,
        data,
        config,
        proximal_mu=float(train_config.get("proximal-mu", 0.0)),
        seed=site_seed(config, server_round, site_id),
    )
    reply_arrays = ArrayRecord(
        {name: Array(array) for name, array in shareable_state(model).items()}
    )
    reply_metrics = MetricRecord(
        {
            **{key: float(value) for key, value in metrics.items()},
            "num-examples": sum(len(task_data) for task_data in data.values()),
            # the weight of differential privacy's uniform mean (server.strategies)
            "unit-weight": 1.0,
            "seconds": time.perf_counter() - started,
        }
    )
    # The site's id lets the server aggregate in site order (server.federation).
    return RecordDict(
        {"arrays": reply_arrays, "metrics": reply_metrics, "site": ConfigRecord({"id": site_id})}
    )


def query_content(content: RecordDict, context: Context) -> RecordDict:
    """The server's call before round 1: encode this site's videos now (once), so that no
    round's timeout has to cover it; reply with the site id. When the query carries the
    moments' template (`anonymizer.init` discriminant), also reply with the moments of the
    site's training clips that show an action, from every task it trains (AR's clips, TAD's
    clips inside a segment), under the template's names (common.discriminant): sums over
    clips, the only data-derived arrays that leave a site outside its trained weights."""
    started = time.perf_counter()
    config, site_id, data = _prepare(context, "train")
    reply = RecordDict({"site": ConfigRecord({"id": site_id})})
    template = content.array_records.get(MOMENTS_RECORD)
    moments = trained_moments(config, data) if template is not None else None
    if moments is not None:
        reply[MOMENTS_RECORD] = ArrayRecord(
            {name: Array(value) for name, value in moments_arrays(moments).items()}
        )
    reply["metrics"] = MetricRecord(
        {
            "num-examples": sum(len(t) for t in data.values()),
            "seconds": time.perf_counter() - started,
        }
    )
    return reply


def evaluate_content(content: RecordDict, context: Context) -> RecordDict:
    """Utility on the site's validation split: each seen task's metric of the received adapter
    and heads."""
    config, _, data = _prepare(context, "val")
    model = _model_from(content, config, data)
    scores = evaluate_site(model, data, config.anonymizer.window)
    num_examples = sum(len(task_data) for task_data in data.values())
    metrics = MetricRecord({**scores, "num-examples": num_examples})
    return RecordDict({"metrics": metrics})


HANDLERS = {"train": train_content, "evaluate": evaluate_content, "query": query_content}
