"""What wraps a site's ClientApp, outermost first (client.app):

0. `packing_mod` unpacks a message the server packed into one array (common.packing) and packs
   the reply the same way, so that every mod inside it sees the named arrays;
1. `audit_mod` records every message in and every reply out (common.wire) and refuses to send a
   reply holding any array outside the shareable allow-list: the reply becomes an error that
   names the array, so nothing else leaves the site;
2. `compression_mod` encodes the trained arrays as a compressed delta from the received ones
   (common.compression; `federation.compression`);
3. `dp_clipping_mod` clips the update to the norm the server's differential-privacy wrapper
   sends (Flower's `fixedclipping_mod`) when `federation.dp_noise_multiplier` > 0: clip, then
   compress;
4. `fault_mod`, innermost, does nothing unless the node config names a `fault` (tests plant
   misbehaving sites with it: `fault="extra-array"` adds an array the allow-list forbids).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
)
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode

from common import wire
from common.compression import encode
from common.config import RunConfig
from common.packing import is_packed, pack, unpack
from common.runconfig import run_config_from_context, site_paths

FAULTS = ("extra-array",)


def _run_config(context: Context) -> RunConfig:
    # unchecked names: this is Flower's ClientApp process, which must not import torch
    # (common.runconfig); the names were checked where the run started
    return run_config_from_context(context.run_config, check_names=False)


def audit_path(store: Path) -> Path:
    """A site's own wire record, beside its feature store."""
    return Path(store).with_name(f"{Path(store).stem}.wire.jsonl")


def _kind(msg: Message) -> str:
    return str(msg.metadata.message_type).split(".")[0]


def _round(msg: Message) -> int:
    config = msg.content.config_records.get("config", {}) if msg.has_content() else {}
    return int(config.get("server-round", 0))


def audit_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    config = _run_config(context)
    site, _, store = site_paths(context.node_config, context.run_config, config)
    received = wire.describe(msg.content) if msg.has_content() else []
    server_round, kind = _round(msg), _kind(msg)
    entries = [wire.entry(context.run_id, server_round, site, "down", kind, received)]
    reply = call_next(msg, context)
    sent = wire.describe(reply.content) if reply.has_content() else []
    outside = wire.outside_allowlist(sent, allowed=[name for _, name, *_ in received])
    refused = None
    if outside:
        refused = (
            f"wire audit at {site}: array '{outside[0]}' is outside the shareable allow-list "
            f"({len(outside)} such array(s)); the reply was refused at the site"
        )
        reply = Message(Error(ErrorCode.MOD_FAILED_PRECONDITION, refused), reply_to=msg)
    entries.append(
        wire.entry(context.run_id, server_round, site, "up", kind, sent, outside, refused)
    )
    store.parent.mkdir(parents=True, exist_ok=True)
    wire.append(audit_path(store), entries)
    return reply


def compression_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    reply = call_next(msg, context)
    if _kind(msg) != "train" or not reply.has_content():
        return reply
    method = _run_config(context).federation.compression
    if method == "none":
        return reply
    received = msg.content.array_records.get("arrays")
    trained = reply.content.array_records.get("arrays")
    if received is None or trained is None or list(received) != list(trained):
        return reply  # not an update of the received arrays: left for the audit to judge
    payload, scales = encode(
        {k: a.numpy() for k, a in trained.items()},
        {k: a.numpy() for k, a in received.items()},
        method,
    )
    reply.content["arrays"] = ArrayRecord({k: Array(v) for k, v in payload.items()})
    if scales:
        reply.content["scales"] = ArrayRecord({k: Array(v) for k, v in scales.items()})
    reply.content["compression"] = ConfigRecord({"method": method})
    return reply


def dp_clipping_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    if _kind(msg) != "train":
        return call_next(msg, context)
    if (
        run_config_from_context(
            context.run_config, check_names=False
        ).federation.dp_noise_multiplier
        <= 0
    ):
        return call_next(msg, context)
    # Flower's mod: refuses (error reply) unless the server sent a clipping norm
    return fixedclipping_mod(msg, context, call_next)


def fault_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    fault = str(context.node_config.get("fault", ""))
    reply = call_next(msg, context)
    if fault == "extra-array" and reply.has_content() and "arrays" in reply.content:
        arrays = reply.content.array_records["arrays"]
        arrays["encoder.planted"] = Array(np.ones((4, 4), dtype=np.float32))
    return reply


def packing_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    packed = msg.has_content() and is_packed(msg.content)
    if packed:
        msg.content = unpack(msg.content)
    reply = call_next(msg, context)
    if packed and reply.has_content():
        reply.content = pack(reply.content)
    return reply


MODS = [packing_mod, audit_mod, compression_mod, dp_clipping_mod, fault_mod]
