"""The mods around the ClientApp (client.mods), run through the real app: the wire audit and
its refusal of arrays outside the allow-list, compression, differential-privacy clipping."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from client.app import app, train
from client.mods import audit_path
from common import wire
from common.config import load_config
from common.model import build_model
from common.packing import PACKED, is_packed, pack, unpack
from common.runconfig import config_as_yaml
from common.weights import shareable_state
from server.federation import decode_reply
from tests.client.test_client_app import D, make_context, make_site, round_message
from tests.client.test_worker import _worker_pid

ROOT = Path(__file__).resolve().parents[2]
BASE = ["train.batch_size=4", "train.epochs=2", "train.lr=1e-3"]


def _setup(tmp_path, extra=(), node_config=None):
    config = load_config(None, [*BASE, *extra])
    site, store = make_site(tmp_path)
    context = make_context(site, store, config, run_id=5, **(node_config or {}))
    arrays = shareable_state(build_model(D, config, seed=0))
    return config, store, context, arrays


def _arrays(reply):
    return {k: a.numpy() for k, a in reply.content.array_records["arrays"].items()}


def test_every_message_is_recorded_at_the_site_with_its_arrays_and_bytes(tmp_path):
    _, store, context, arrays = _setup(tmp_path)
    reply = app(round_message(None, arrays), context)
    assert not reply.has_error()
    down, up = wire.read(audit_path(store))
    assert (down["direction"], up["direction"]) == ("down", "up")
    assert down["run"] == up["run"] == 5 and down["site"] == "site_07" and down["round"] == 1
    assert [a[1] for a in down["arrays"]] == list(arrays)
    assert up["bytes"] == sum(len(a.data) for a in reply.content.array_records["arrays"].values())
    assert up["outside_allowlist"] == [] and up["refused"] is None


def test_a_packed_message_gets_a_packed_reply_and_the_mods_see_named_arrays(tmp_path):
    _, store, context, arrays = _setup(tmp_path)
    plain = app(round_message(None, arrays), context)
    message = round_message(None, arrays)
    message.content = pack(message.content)
    reply = app(message, context)
    assert is_packed(reply.content)
    assert list(reply.content.array_records["arrays"]) == [PACKED]
    unpacked = unpack(reply.content).array_records["arrays"]
    assert list(unpacked) == list(arrays)
    assert all(unpacked[k].data == plain.content.array_records["arrays"][k].data for k in arrays)
    down, up = wire.read(audit_path(store))[-2:]  # the audit saw the named arrays
    assert [a[1] for a in down["arrays"]] == [a[1] for a in up["arrays"]] == list(arrays)


def test_a_site_that_tries_to_send_an_extra_array_is_refused_before_it_leaves(tmp_path):
    _, store, context, arrays = _setup(tmp_path, node_config={"fault": "extra-array"})
    reply = app(round_message(None, arrays), context)
    assert reply.has_error()
    assert "encoder.planted" in reply.error.reason and "refused" in reply.error.reason
    assert not reply.has_content()  # nothing of the update goes out
    up = wire.read(audit_path(store))[-1]
    assert up["outside_allowlist"] == ["encoder.planted"] and up["refused"]
    summary = wire.summarize(
        [wire.entry(5, 1, "site_07", "up", "train", [])], wire.read(audit_path(store))
    )
    assert summary["site_records"]["refused"][0]["arrays"] == ["encoder.planted"]
    assert summary["outside_allowlist_left_a_site"] is False


def test_a_compressed_update_decodes_on_the_server_close_to_the_uncompressed_one(tmp_path):
    _, _, context, arrays = _setup(tmp_path, ["federation.compression=int8-channel"])
    plain = _arrays(train(round_message(None, arrays), context))  # the same training, no mods
    reply = app(round_message(None, arrays), context)
    assert reply.content.config_records["compression"]["method"] == "int8-channel"
    sent = sum(len(a.data) for r in reply.content.array_records.values() for a in r.values())
    full = sum(len(a.data) for a in train(round_message(None, arrays), context).content
               .array_records["arrays"].values())  # fmt: skip
    # (this 16-wide model is mostly Flower's per-array headers; a real one is below 25%: the
    # integration test on the tiny config and the benchmark measure that)
    assert sent < 0.6 * full
    decode_reply(reply, arrays)
    decoded = _arrays(reply)
    assert list(reply.content.config_records) == ["site"]
    for name, array in plain.items():
        step = np.abs(array - arrays[name]).max() / 127
        np.testing.assert_allclose(decoded[name], array, rtol=0, atol=step / 2 + 1e-6)


def test_with_differential_privacy_the_update_is_clipped_to_the_servers_norm(tmp_path):
    _, _, context, arrays = _setup(tmp_path, ["federation.dp_noise_multiplier=1.0"])
    unclipped = _arrays(train(round_message(None, arrays), context))
    norm = float(np.sqrt(sum(((unclipped[k] - arrays[k]) ** 2).sum() for k in arrays)))
    message = round_message(None, arrays)
    message.content["config"] = ConfigRecord({"server-round": 1, KEY_CLIPPING_NORM: norm / 4})
    clipped = _arrays(app(message, context))
    clipped_norm = np.sqrt(sum(((clipped[k] - arrays[k]) ** 2).sum() for k in arrays))
    np.testing.assert_allclose(clipped_norm, norm / 4, rtol=1e-4)
    # a server that does not send the clipping norm gets an error, never an unclipped update
    refused = app(round_message(None, arrays), context)
    assert refused.has_error() and not refused.has_content()


def test_a_deployed_sites_clientapp_process_never_imports_torch(tmp_path):
    # Flower starts a new ClientApp process for every message of a deployment; importing torch
    # there cost 3.5 s of CPU a message. The process runs the mods and hands the message to the
    # site's worker (client.worker), and both read the run's config, which names the encoder and
    # tasks: neither may check those names against the torch-importing registries.
    site, store = make_site(tmp_path)
    config = load_config(None, [*BASE, "federation.compression=int8"])
    (tmp_path / "config.yaml").write_text(config_as_yaml(config))
    np.savez(tmp_path / "sent.npz", **shareable_state(build_model(D, config, seed=0)))
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        import numpy as np
        from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
        from flwr.supercore.task_identity import TaskIdentity
        from client.app import app

        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 5, 7, 1
        root = Path({str(tmp_path)!r})
        context = Context(
            run_id=5, node_id=7, state=RecordDict(),
            node_config={{"site-dir": {str(site)!r}, "feature-store": {str(store)!r},
                          "site-worker-idle": 5.0}},
            run_config={{"config-yaml": (root / "config.yaml").read_text()}},
        )
        sent = np.load(root / "sent.npz")
        content = RecordDict({{
            "arrays": ArrayRecord({{k: Array(sent[k]) for k in sent.files}}),
            "config": ConfigRecord({{"server-round": 1}}),
        }})
        reply = app(Message(content, dst_node_id=7, message_type="train"), context)
        assert not reply.has_error(), reply.error
        assert len(reply.content.array_records["arrays"]) == len(sent.files)
        print("torch imported:", "torch" in sys.modules)
        """
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=180, cwd=ROOT
        )
        assert done.returncode == 0, done.stderr
        assert "torch imported: False" in done.stdout
        assert audit_path(store).is_file()  # the mods ran
    finally:
        if pid := _worker_pid(store, run_id=5):
            os.kill(pid, 9)
