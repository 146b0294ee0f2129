"""Tests for the camera site (ClientApp): what goes on the wire, and what a site does."""

import json

import h5py
import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common.serde import recorddict_to_proto

from client.app import evaluate, train
from common.config import load_config
from common.features import SCHEMA_VERSION
from common.model import build_model
from common.runconfig import config_as_yaml
from common.weights import SHAREABLE_PREFIXES, load_shareable, shareable_state, state_nbytes

D = 16


def make_site(root, n_train: int = 10, n_val: int = 4):
    """A site folder with a manifest and an already filled feature store (no decoding needed)."""
    site = root / "site_07"
    (site / "ar").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    store = site / "features.h5"
    with h5py.File(store, "w") as handle:
        handle.attrs.update(
            schema_version=SCHEMA_VERSION, encoder_id="test", dim=D, clip_len=16, clip_stride=1,
            clip_step=16, static_clips=2, eval_clips=5, frame_size=32, dtype="float32",
        )  # fmt: skip
        videos = handle.create_group("videos")
        for i in range(n_train + n_val):
            video_id = f"site_07_ar_{i:05d}"
            (site / "ar" / f"{video_id}.mp4").write_bytes(b"video stays at the site")
            lines.append(
                json.dumps(
                    {
                        "video_id": video_id,
                        "path": f"site_07/ar/{video_id}.mp4",
                        "split": "train" if i < n_train else "val",
                        "labels": {"action": int(i % 8)},
                    }
                )
            )
            group = videos.create_group(video_id)
            group["clip_features"] = rng.normal(size=(2, D)).astype(np.float32)
            group["eval_clip_features"] = rng.normal(size=(5, D)).astype(np.float32)
            group["static_features"] = rng.normal(size=(2, D)).astype(np.float32)
    (site / "ar" / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return site, store


def make_context(site, store, config, run_id: int = 1, **node_config) -> Context:
    """The site's Flower context; by default it runs in this process (client.worker has its
    own tests); `node_config` adds or overrides node-config keys."""
    return Context(
        run_id=run_id,
        node_id=7,
        node_config={
            "site-dir": str(site),
            "feature-store": str(store),
            "site-worker": False,
            **node_config,
        },
        state=RecordDict(),
        run_config={"config-yaml": config_as_yaml(config)},
    )


def round_message(config, arrays, message_type: str = "train") -> Message:
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            "config": ConfigRecord({"server-round": 1}),
        }
    )
    return Message(content, dst_node_id=7, message_type=message_type)


CONFIG = load_config(None, ["train.batch_size=4", "train.epochs=2", "train.lr=1e-3"])


def test_the_reply_carries_exactly_the_shareable_state_and_nothing_else(tmp_path):
    site, store = make_site(tmp_path)
    sent = shareable_state(build_model(D, CONFIG, seed=CONFIG.seed))
    reply = train(round_message(CONFIG, sent), make_context(site, store, CONFIG))

    assert list(reply.content.array_records) == ["arrays"]
    # Besides arrays and metrics, only the site's id (the server aggregates in site order).
    assert {k: dict(v) for k, v in reply.content.config_records.items()} == {
        "site": {"id": site.name}
    }
    arrays = {k: v.numpy() for k, v in reply.content.array_records["arrays"].items()}
    assert list(arrays) == list(sent), "names or order differ from the shareable state"
    assert all(name.startswith(SHAREABLE_PREFIXES) for name in arrays)
    assert sum(a.nbytes for a in arrays.values()) == state_nbytes(sent)
    # On the wire: the serialized reply is the arrays plus their names, dtypes and shapes (under
    # 256 bytes each) and the metrics; the site's features (14 videos x 9 clips x 64 bytes) or a
    # single frame would not fit in what is left.
    wire = recorddict_to_proto(reply.content).ByteSize()
    assert state_nbytes(sent) <= wire < state_nbytes(sent) + 256 * len(sent) + 1024
    metrics = reply.content.metric_records["metrics"]
    assert metrics["num-examples"] == 10
    assert {"loss", "loss_lc", "loss_t", "loss_b", "steps", "seconds"} <= set(metrics)
    assert metrics["steps"] == 2 * 3  # 2 epochs of 10 videos in batches of 4 (last one merged)
    # The site trained: the adapter moved away from identity.
    assert any(not np.array_equal(arrays[k], sent[k]) for k in sent if k.startswith("adapter."))


def test_a_received_state_that_does_not_fit_is_refused_with_its_name(tmp_path):
    from common.weights import ShareableStateError

    site, store = make_site(tmp_path)
    sent = shareable_state(build_model(D, CONFIG, seed=0))
    name = next(iter(sent))
    sent[name] = np.zeros(3, np.float32)
    with pytest.raises(ShareableStateError, match=name):
        train(round_message(CONFIG, sent), make_context(site, store, CONFIG))


def test_evaluate_reports_validation_top1_of_the_received_head(tmp_path):
    site, store = make_site(tmp_path)
    model = build_model(D, CONFIG, seed=0)
    reply = evaluate(
        round_message(CONFIG, shareable_state(model), "evaluate"), make_context(site, store, CONFIG)
    )
    metrics = reply.content.metric_records["metrics"]
    assert metrics["num-examples"] == 4
    assert 0.0 <= metrics["ar_top1"] <= 100.0
    assert not reply.content.array_records
    # Same arrays loaded by hand give the same number.
    from common.sitedata import load_site_data, site_tensors
    from common.training import evaluate_site

    check = build_model(D, CONFIG, seed=1)
    load_shareable(check, shareable_state(model))
    data = site_tensors(load_site_data(site, store, ["ar"], "val"))
    expected = evaluate_site(check, data, CONFIG.anonymizer.window)["ar_top1"]
    assert metrics["ar_top1"] == pytest.approx(expected)


def test_the_prepare_query_names_the_site_and_sends_no_arrays(tmp_path):
    from client.app import query

    site, store = make_site(tmp_path)
    message = Message(
        RecordDict({"config": ConfigRecord({"server-round": 0})}), dst_node_id=7,
        message_type="query",
    )  # fmt: skip
    reply = query(message, make_context(site, store, CONFIG))
    assert dict(reply.content.config_records["site"]) == {"id": "site_07"}
    assert not reply.content.array_records
    assert reply.content.metric_records["metrics"]["num-examples"] == 10
