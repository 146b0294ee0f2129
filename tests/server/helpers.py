"""Test doubles for server tests: a site's reply to a train message, without a site."""

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict


def train_request(node: int, server_round: int = 1) -> Message:
    """The server's train message to `node` (what a reply answers)."""
    return Message(
        RecordDict({"config": ConfigRecord({"server-round": server_round})}),
        dst_node_id=node,
        message_type="train",
    )


def train_reply(
    arrays: dict[str, np.ndarray],
    node: int,
    metrics: dict | None = None,
    server_round: int = 1,
) -> Message:
    """`node`'s reply to a train message: its trained arrays and its metrics.

    Flower weights an update by its "num-examples" metric; the default metrics give 5.
    """
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()}),
            "metrics": MetricRecord(metrics if metrics is not None else {"num-examples": 5}),
        }
    )
    return Message(content, reply_to=train_request(node, server_round))
