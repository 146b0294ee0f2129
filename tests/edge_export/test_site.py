"""A site encodes its videos through its edge encoder (the best backend it has, or the one its
node config names), and the features agree with the eager encoder's."""

import json

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

from client.app import train
from common.config import FeaturesConfig
from common.features import FeatureStore, extract_features, find_videos
from common.model import build_model
from common.runconfig import config_as_yaml
from common.weights import shareable_state
from edge_export.backends import available_backends
from edge_export.site import choose_backend, site_encoder
from tests.edge_export.generated import write_video


def test_auto_picks_the_best_backend_this_machine_can_run():
    best = available_backends()[0]
    assert choose_backend("auto") == best
    assert "torch" in available_backends() and "tensorrt" not in available_backends()
    assert choose_backend("eager") == "eager"


def test_the_site_artifact_is_exported_once_and_agrees_with_eager(config, encoder, tmp_path):
    edge = site_encoder(config.encoder, "onnx", tmp_path / "edge")
    (folder,) = (tmp_path / "edge").iterdir()
    assert folder.name == f"{encoder.encoder_id}-onnx"
    metadata = (folder / "metadata.json").read_text()
    again = site_encoder(config.encoder, "onnx", tmp_path / "edge")
    assert (folder / "metadata.json").read_text() == metadata  # reused, not exported again
    assert again.encoder_id == edge.encoder_id == encoder.encoder_id and edge.backend == "onnx"

    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "v.mp4", 48, seed=0)
    features = FeaturesConfig(dtype="float32", eval_clips=0)
    items = find_videos(videos)
    extract_features(items, encoder, tmp_path / "eager.h5", features, progress=False)
    extract_features(items, edge, tmp_path / "edge.h5", features, progress=False)
    with FeatureStore(tmp_path / "eager.h5") as eager, FeatureStore(tmp_path / "edge.h5") as ours:
        assert ours.settings.backend == "onnx" and eager.settings.backend == "torch"
        assert ours.settings.encoder_id == eager.settings.encoder_id
        scale = max(1.0, np.abs(eager.clip_features("v")).max())
        for name in ("clip_features", "static_features"):
            np.testing.assert_allclose(
                getattr(ours, name)("v"), getattr(eager, name)("v"), rtol=0, atol=1e-4 * scale
            )


@pytest.mark.parametrize("backend", ["onnx", "eager"])
def test_a_site_encodes_its_own_videos_with_the_backend_its_node_config_names(
    config, tmp_path, backend
):
    site = tmp_path / "site_03"
    (site / "ar").mkdir(parents=True)
    lines = []
    for i in range(6):
        video_id = f"site_03_ar_{i:05d}"
        write_video(site / "ar" / f"{video_id}.mp4", 32, seed=i)
        entry = {"video_id": video_id, "path": f"site_03/ar/{video_id}.mp4",
                 "split": "train", "labels": {"action": i % 2}}  # fmt: skip
        lines.append(json.dumps(entry))
    (site / "ar" / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    store = tmp_path / "features" / "site_03.h5"
    context = Context(
        run_id=1,
        node_id=3,
        node_config={
            "site-dir": str(site),
            "feature-store": str(store),
            "encoder-backend": backend,
            "site-worker": False,  # in this process (client.worker has its own tests)
        },
        state=RecordDict(),
        run_config={"config-yaml": config_as_yaml(config)},
    )
    arrays = shareable_state(build_model(config.encoder.dim, config, seed=0))
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            "config": ConfigRecord({"server-round": 1}),
        }
    )
    reply = train(Message(content, dst_node_id=3, message_type="train"), context)
    assert reply.content.metric_records["metrics"]["num-examples"] == 6
    with FeatureStore(store) as features:
        assert features.settings.backend == ("torch" if backend == "eager" else backend)
        assert len(features) == 6 and features.clip_features("site_03_ar_00000").shape == (2, 16)
    edge_folder = store.parent / "site_03.edge"
    assert edge_folder.is_dir() == (backend != "eager")
