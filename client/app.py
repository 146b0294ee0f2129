"""The camera site: a Flower ClientApp (Message API).

What a site does with a message is client.site: it encodes its videos once into its feature
store, trains the adapter and heads with the three SPLAVU losses, and replies with the
shareable arrays only. Where it runs:

- in this process, in simulation (Flower's Simulation Engine keeps one process per site for
  the whole run, so the site's data and imports stay loaded);
- in the site's long-lived worker (client.worker) in a deployment, where Flower starts a new
  ClientApp process for every message: this process then imports neither torch nor the site's
  data, and the worker keeps both between rounds. Node config `site-worker=false` runs in this
  process instead;
- in the site's executor (client.executor), one long-lived process that runs the SuperNode's
  tasks itself (`flower-supernode --isolation process`), which `deploy-local` uses.

The mods of client.mods (wire audit, compression, DP clipping) wrap every message here, in the
process that talks to Flower.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from client.mods import MODS

# The wire audit, compression, DP clipping and planted faults wrap every message (client.mods).
app = ClientApp(mods=MODS)


_IN_PROCESS = [False]


def keep_in_process() -> None:
    """Run every message in this process from now on: client.executor, already the site's
    long-lived process, calls it."""
    _IN_PROCESS[0] = True


def uses_worker(context: Context) -> bool:
    """A deployed site (node config `site-dir`) uses its worker unless `site-worker=false` or
    this process is the site's executor (client.executor)."""
    if _IN_PROCESS[0]:
        return False
    value = context.node_config.get("site-worker")
    if value is None:
        return "site-dir" in context.node_config
    return str(value).strip().lower() in ("true", "1", "yes")


def _handle(kind: str, msg: Message, context: Context) -> Message:
    if uses_worker(context):
        from client.worker import call

        content = call(kind, msg.content, context)
    else:
        from client.site import HANDLERS

        content = HANDLERS[kind](msg.content, context)
    return Message(content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Local SPLAVU training on the site's cached features; reply with shareable arrays only."""
    return _handle("train", msg, context)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """The server's call before round 1: encode this site's videos now (once), so that no
    round's timeout has to cover it; reply with the site id."""
    return _handle("query", msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Utility on the site's validation split: each seen task's metric of the received adapter
    and heads."""
    return _handle("evaluate", msg, context)
