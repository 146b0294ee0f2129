"""A federated round, driven with a Flower Grid and one of Flower's strategies.

Flower's `Strategy.start` always begins at round 1 and aggregates whatever comes back. The
project's round loop (server.rounds) calls the same strategy methods (configure_train,
aggregate_train) round by round through `FlowerTrainer`, which adds:

- every reply is screened before aggregation: a site whose arrays have the wrong names, shapes
  or dtypes, or non-finite values (or whose reply is an error) is left out of that round with
  the reason logged and recorded in the report; the round goes on with the others;
- replies are aggregated in site order, whatever order they arrive in;
- compressed updates (common.compression) are decoded against the arrays the round sent, before
  screening; with differential privacy every decoded update is clipped again to the clipping
  norm, so no site (one that skips clipping, or whose quantisation overshoots) can exceed the
  sensitivity the accountant assumes;
- a site that does not answer within `federation.round_timeout`, or that Flower reports
  unavailable, is recorded as dropped in that round; the round goes on with the others;
- the server's half of the wire audit (common.wire): every message sent and every reply
  received, array by array, and any array outside the shareable allow-list.

The loop around a round (evaluation, selection, checkpoints) is server.rounds.run_rounds.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import GaussianPrivacyEvent, Grid
from flwr.serverapp.exception import PrivacyBudgetExhausted
from flwr.supercore.differential_privacy import compute_clip_model_update
from flwr.superlink.grid.http_grid import HttpGrid

from common import wire
from common.compression import decode
from common.config import RunConfig
from common.discriminant import (
    MOMENTS_RECORD,
    DiscriminantError,
    moments_from_arrays,
    moments_template,
)
from common.evaluation import EvaluationSet
from common.packing import PackingError, pack, unpack
from common.weights import ShareableStateError, check_shareable
from server.checkpoints import ServerState
from server.history import RoundRecord
from server.rounds import RoundOutcome, RunStopped, SiteMoments, run_rounds
from server.strategies import create_strategy, load_strategy_state, strategy_state

log = logging.getLogger("latentveil.server")


def to_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({name: Array(np.ascontiguousarray(array)) for name, array in arrays.items()})


def from_record(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {name: array.numpy() for name, array in record.items()}


def screen_replies(
    replies: Iterable[Message], expected: dict[str, np.ndarray]
) -> tuple[list[Message], list[dict[str, Any]]]:
    """Split replies into those fit to aggregate and (node, reason) records of the others."""
    accepted: list[Message] = []
    rejected: list[dict[str, Any]] = []
    metric_keys: set[str] | None = None
    for reply in replies:
        node = int(reply.metadata.src_node_id)
        try:
            if reply.has_error():
                raise ShareableStateError(f"the site replied with an error: {reply.error.reason}")
            decode_reply(reply, expected)
            content = reply.content
            if list(content.array_records) != ["arrays"] or len(content.metric_records) != 1:
                raise ShareableStateError(
                    "a reply must hold exactly one ArrayRecord 'arrays' and one MetricRecord, got "
                    f"{list(content.array_records)} and {list(content.metric_records)}"
                )
            if set(content.config_records) - {"site"}:
                raise ShareableStateError(
                    "a reply may hold only the ConfigRecord 'site', got "
                    f"{list(content.config_records)}"
                )
            check_shareable(expected, from_record(content.array_records["arrays"]))
            metrics = next(iter(content.metric_records.values()))
            if not float(metrics.get("num-examples", 0)) > 0:
                raise ShareableStateError("the reply's metrics lack a positive 'num-examples'")
            keys = set(metrics)
            if metric_keys is not None and keys != metric_keys:
                raise ShareableStateError(
                    f"metric keys {sorted(keys)} differ from the other sites' {sorted(metric_keys)}"
                )
            metric_keys = keys
        except (ShareableStateError, KeyError, TypeError, ValueError) as error:
            log.warning("round: update from node %s excluded: %s", node, error)
            rejected.append({"node": node, "site": site_of(reply), "reason": str(error)})
            continue
        accepted.append(reply)
    return accepted, rejected


REPLY_POLL_SECONDS = 0.5


def send_and_receive(grid: Grid, messages: list[Message], timeout: float) -> list[Message]:
    """The Grid's send_and_receive, but on a deployment's Grid asking for replies every
    REPLY_POLL_SECONDS: Flower 1.41's HttpGrid asks every 3 s, so a round waited 1.5 s on
    average after its last reply (the Simulation Engine's Grid asks every 0.1 s)."""
    if not isinstance(grid, HttpGrid):
        return list(grid.send_and_receive(messages=messages, timeout=timeout))
    waiting = set(grid.push_messages(messages))
    deadline = time.monotonic() + timeout
    replies: list[Message] = []
    while waiting and time.monotonic() < deadline:
        received = list(grid.pull_messages(waiting))
        replies += received
        waiting -= {reply.metadata.reply_to_message_id for reply in received}
        if waiting:
            time.sleep(REPLY_POLL_SECONDS)
    return replies


def _unpack_reply(reply: Message) -> None:
    """A packed reply's named arrays, in place, for the wire audit to see; one that does not
    unpack stays packed, and screening rejects it with the reason (decode_reply)."""
    if reply.has_content():
        try:
            reply.content = unpack(reply.content)
        except PackingError:
            pass


def decode_reply(reply: Message, sent: dict[str, np.ndarray]) -> None:
    """Replace a packed (common.packing) or compressed update (records `arrays` + `scales` +
    ConfigRecord `compression`) by the arrays it holds, in place; a plain reply is left as it
    is."""
    reply.content = unpack(reply.content)
    content = reply.content
    if "compression" not in content.config_records:
        return
    method = str(content.config_records["compression"].get("method", ""))
    payload = content.array_records.get("arrays")
    if payload is None:
        raise ShareableStateError("a compressed reply holds no ArrayRecord 'arrays'")
    scales = content.array_records.get("scales", {})
    decoded = decode(from_record(payload), {k: a.numpy() for k, a in scales.items()}, sent, method)
    plain = RecordDict({"arrays": to_record(decoded)})
    for name, record in content.metric_records.items():
        plain[name] = record
    for name, record in content.config_records.items():
        if name != "compression":
            plain[name] = record
    reply.content = plain


def site_of(reply: Message) -> str:
    """The site a reply comes from: the site id the ClientApp puts in its `site` ConfigRecord
    (Flower's node ids change from run to run), else its node id."""
    site = reply.content.config_records.get("site", {}) if reply.has_content() else {}
    return str(site.get("id", f"node-{reply.metadata.src_node_id}"))


def _clip_update(reply: Message, sent: dict[str, np.ndarray], norm: float) -> None:
    """Clip a (decoded) update's difference from `sent` to L2 norm `norm`, in place."""
    arrays = from_record(reply.content.array_records["arrays"])
    names = list(sent)
    trained = [arrays[name].astype(np.float64) for name in names]
    compute_clip_model_update(trained, [sent[n].astype(np.float64) for n in names], norm)
    clipped = {n: t.astype(sent[n].dtype) for n, t in zip(names, trained, strict=True)}
    reply.content["arrays"] = to_record(clipped)


class FlowerTrainer:
    """A round on Flower's sites: the strategy's configure_train, the Grid's send_and_receive,
    screening, and the strategy's aggregate_train over the accepted replies in site order (so
    that the float sums, and the run, do not depend on which site answers first)."""

    def __init__(self, grid: Grid, config: RunConfig) -> None:
        self.grid = grid
        self.config = config
        self.strategy = create_strategy(config.federation, config.world.sites)
        self.site_by_node: dict[int, str] = {}  # learnt from the sites' replies
        self._waited = False

    def state(self) -> dict[str, np.ndarray]:
        return strategy_state(self.strategy)

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        load_strategy_state(self.strategy, state)

    def _prepare_sites(self, template: dict[str, np.ndarray] | None = None) -> list[Message]:
        """Before the first round (of this process): wait for every site to connect, for up to
        `federation.prepare_timeout` seconds (a round that starts while sites are still
        connecting would leave them out; then the strategy waits for min_sites), and have the
        connected sites encode their videos (a query message), so that no round's timeout has
        to cover it. Their replies name them: even a site that drops out in round 1 is known
        by its site id. With the moments' `template` (common.discriminant) the query asks for
        them too; returns the replies without an error."""
        self._waited = True
        timeout = self.config.federation.prepare_timeout
        deadline = time.monotonic() + timeout
        while len(nodes := list(self.grid.get_node_ids())) < self.config.world.sites:
            if time.monotonic() > deadline:
                log.warning("not every site connected; going on with those that did")
                break
            time.sleep(0.5)
        messages = []
        for node in nodes:
            content = RecordDict({"config": ConfigRecord({"server-round": 0})})
            if template is not None:
                content[MOMENTS_RECORD] = to_record(template)
            messages.append(Message(content, dst_node_id=node, message_type=MessageType.QUERY))
        replies = send_and_receive(self.grid, messages, timeout)
        answered = []
        for reply in replies:
            node = int(reply.metadata.src_node_id)
            if reply.has_error():
                log.warning("node %s could not prepare: %s", node, reply.error.reason)
            else:
                self.site_by_node[node] = site_of(reply)
                answered.append(reply)
        log.info("%d of %d sites prepared", len(self.site_by_node), len(nodes))
        return answered

    def class_moments(self, num_classes: int, dim: int) -> SiteMoments:
        """Every connected site's moments of its training clips that show an action (every
        trained task's), asked for with the sites' preparation (so before round 1) and screened
        (common.discriminant); a site whose reply is malformed is left out and named, as one
        without videos labelled with actions is."""
        template = moments_template(num_classes, dim)
        run_id = int(self.grid.run.run_id)
        sent_at = time.time()
        down = wire.describe(RecordDict({MOMENTS_RECORD: to_record(template)}))
        result = SiteMoments()
        for reply in sorted(self._prepare_sites(template), key=site_of):
            site = site_of(reply)
            arrays_up = wire.describe(reply.content)
            result.wire += [
                wire.entry(run_id, 0, site, "down", "query", down, at=sent_at),
                wire.entry(run_id, 0, site, "up", "query", arrays_up,
                           wire.outside_allowlist(arrays_up, allowed=template)),
            ]  # fmt: skip
            record = reply.content.array_records.get(MOMENTS_RECORD)
            if record is None:
                result.left_out.append({"site": site, "reason": "sent no moments"})
                continue
            try:
                result.sites[site] = moments_from_arrays(from_record(record), template)
            except DiscriminantError as error:
                log.warning("%s's moments were rejected: %s", site, error)
                result.left_out.append({"site": site, "reason": str(error)})
        return result

    def can_continue(self) -> bool:
        """False when another round would spend more than federation.dp_max_epsilon."""
        accountant = getattr(self.strategy, "accountant", None)
        if accountant is None or accountant.config.max_epsilon is None:
            return True
        event = GaussianPrivacyEvent(
            noise_multiplier=self.strategy.noise_multiplier,
            sample_size=self.strategy.num_sampled_clients,
            population_size=accountant.config.population_size,
        )
        return not accountant.would_exceed(event)

    def _site(self, node: int) -> str:
        return self.site_by_node.get(node, f"node-{node}")

    def train_round(self, server_round: int, arrays: dict[str, np.ndarray]) -> RoundOutcome:
        """Replies are screened against the round's global `arrays` (names, shapes, dtypes)."""
        federation = self.config.federation
        if not self._waited:
            self._prepare_sites()
        train_config = ConfigRecord({"proximal-mu": federation.proximal_mu})
        # Flower samples sites with `random` (fraction_train < 1): the same seed and round
        # sample the same share of the sites.
        random.seed(self.config.seed * 1_000_003 + server_round)
        try:
            messages = list(
                self.strategy.configure_train(
                    server_round, to_record(arrays), train_config, self.grid
                )
            )
        except PrivacyBudgetExhausted as error:
            raise RunStopped(f"the privacy budget is spent: {error}") from None
        run_id = int(self.grid.run.run_id)
        sent = {int(m.metadata.dst_node_id): wire.describe(m.content) for m in messages}
        sent_bytes = {node: wire.payload_bytes(arrays_down) for node, arrays_down in sent.items()}
        wire_log: list[dict[str, Any]] = []
        for message in messages:  # one array per message on the wire (common.packing)
            message.content = pack(message.content)
        sent_at = time.time()
        replies = send_and_receive(self.grid, messages, federation.round_timeout)
        for reply in replies:
            _unpack_reply(reply)
        # A reply's node is its message's destination: a reply Flower makes for a site that
        # went offline (NODE_UNAVAILABLE) comes from the SuperLink's node id, not the site's.
        node_of = {
            m.metadata.message_id: int(m.metadata.dst_node_id)
            for m in messages
            if m.metadata.message_id
        }
        by_node = {
            node_of.get(reply.metadata.reply_to_message_id, int(reply.metadata.src_node_id)): reply
            for reply in replies
        }
        sites: list[dict[str, Any]] = []
        dropped: list[dict[str, Any]] = []
        answered: list[Message] = []
        for message in messages:
            node = int(message.metadata.dst_node_id)
            reply = by_node.get(node)
            unavailable = (
                reply is not None
                and reply.has_error()
                and reply.error.code == ErrorCode.NODE_UNAVAILABLE
            )
            if reply is None or unavailable:
                reason = (
                    f"sent no reply in this round (federation.round_timeout "
                    f"{federation.round_timeout:g} s)"
                    if reply is None
                    else f"Flower reports the node unavailable: {reply.error.reason}"
                )
                dropped.append({"site": self._site(node), "node": node, "reason": reason})
                sites.append(self._site_entry(node, sent_bytes[node], 0, "dropped"))
                continue
            if reply.has_content():
                self.site_by_node[node] = site_of(reply)
            arrays_up = wire.describe(reply.content) if reply.has_content() else []
            outside = wire.outside_allowlist(arrays_up, allowed=arrays)
            wire_log.append(
                wire.entry(run_id, server_round, self._site(node), "up", "train", arrays_up,
                           outside, reply.error.reason if reply.has_error() else None)
            )  # fmt: skip
            sites.append(
                self._site_entry(node, sent_bytes[node], wire.payload_bytes(arrays_up), "")
            )
            answered.append(reply)
        # what went down, under the site names the replies gave
        wire_log += [
            wire.entry(
                run_id, server_round, self._site(node), "down", "train", arrays_down, at=sent_at
            )
            for node, arrays_down in sent.items()
        ]
        wire_log.sort(key=lambda e: (e["direction"] != "down", e["site"]))
        sites.sort(key=lambda e: e["site"])
        # A site that came back as a new node (an unauthenticated SuperNode gets a new id)
        # while its old node is not yet marked offline: the old node's silence is not a
        # dropout of the site.
        answered_sites = {site_of(r) for r in answered if r.has_content()}
        for entry in sites:
            if entry["status"] == "dropped" and entry["site"] in answered_sites:
                entry["status"] = "replaced by a new node"
        dropped = [e for e in dropped if e["site"] not in answered_sites]
        for entry in dropped:
            log.warning(
                "round %d: %s dropped out: %s", server_round, entry["site"], entry["reason"]
            )
        accepted, rejected = screen_replies(answered, arrays)
        for entry in rejected:
            entry["site"] = self._site(entry["node"])
        accepted.sort(key=lambda reply: (site_of(reply), int(reply.metadata.src_node_id)))
        rejected_nodes = {entry["node"] for entry in rejected}
        for entry in sites:
            if not entry["status"]:
                entry["status"] = "rejected" if entry["node"] in rejected_nodes else "aggregated"
        dp = getattr(self.strategy, "accountant", None) is not None
        if dp:
            for reply in accepted:
                _clip_update(reply, arrays, federation.dp_clipping_norm)
        new_arrays = arrays
        train_metrics: dict[str, float] = {}
        note = ""
        if accepted:
            aggregated, metrics = self.strategy.aggregate_train(server_round, accepted)
            if aggregated is not None:
                # Server optimisers (FedAdam, FedYogi) compute in float64: back to the model's
                # dtypes, so what is sent next round loads strictly at every site.
                new_arrays = {
                    k: v.astype(arrays[k].dtype) for k, v in from_record(aggregated).items()
                }
                check_shareable(arrays, new_arrays)
            elif dp:
                note = (
                    f"differential privacy: {len(accepted)} of {len(messages)} sampled sites "
                    "sent a usable update, so the round was not aggregated (no release, no "
                    "epsilon spent)"
                )
                for entry in sites:
                    if entry["status"] == "aggregated":
                        entry["status"] = "not aggregated"
            train_metrics = {k: float(v) for k, v in (metrics or {}).items()}
        else:
            note = "no usable update; the global arrays stay as they were"
        if note:
            log.warning("round %d: %s", server_round, note)
        spent = self.strategy.privacy_spent() if dp else None
        return RoundOutcome(
            arrays=new_arrays,
            train=train_metrics,
            sites_sampled=len(messages),
            sites_aggregated=0 if new_arrays is arrays else len(accepted),
            rejected=rejected,
            dropped=dropped,
            bytes_down=int(sum(sent_bytes.values())),
            bytes_up=int(sum(entry["bytes_up"] for entry in sites)),
            site_seconds=[
                float(next(iter(r.content.metric_records.values())).get("seconds", 0.0))
                for r in accepted
            ],
            sites=sites,
            wire=wire_log,
            epsilon=None if spent is None else float(spent.epsilon),
            note=note,
        )

    def _site_entry(self, node: int, down: int, up: int, status: str) -> dict[str, Any]:
        return {"site": self._site(node), "node": node, "bytes_down": down, "bytes_up": up,
                "status": status}  # fmt: skip


def run_federation(
    grid: Grid,
    config: RunConfig,
    run_dir: str | Path,
    evaluation_set: EvaluationSet,
    resume: bool = False,
    on_round: Callable[[RoundRecord], None] | None = None,
) -> ServerState:
    """Run (or continue) `federation.rounds` federated rounds (server.rounds.run_rounds);
    returns the final state."""
    trainer = FlowerTrainer(grid, config)
    return run_rounds(config, run_dir, evaluation_set, trainer, resume, on_round)
