"""The wire audit: what every message of a run carried, array by array.

Both ends keep a record. A site's ClientApp records every message it receives and every reply
it sends (client.mods.audit_mod, in `<store>.wire.jsonl` beside its feature store) and refuses
to send any array outside the shareable allow-list (common.weights); the server records every
message it sends and every reply it receives (`RUN_DIR/wire.jsonl`). One JSON line per message:

    {"time": unix seconds, "run": flower run id, "round": r, "site": id, "direction": "down" | "up",
     "kind": "train" | "evaluate", "bytes": payload bytes,
     "arrays": [[record, name, dtype, shape, bytes], ...],
     "outside_allowlist": [names], "refused": reason or null}

Bytes are the serialised array payloads Flower puts on the wire (`Array.data`), so a
compressed update counts what it really costs. The time is when that end saw the message: a
site's "down" when its mods received it and "up" when the reply left them; the server's "down"
when it sent the round's messages and "up" when it had the round's replies.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flwr.app import RecordDict

from common.weights import is_shareable

# The sums over a site's clips that `anonymizer.init` discriminant asks for (common.discriminant).
STATISTICS_PREFIX = "moments."


def describe(content: RecordDict) -> list[list[Any]]:
    """[record, name, dtype, shape, bytes] of every array in a message's content."""
    return [
        [record_name, name, str(array.dtype), list(array.shape), len(array.data)]
        for record_name, record in content.array_records.items()
        for name, array in record.items()
    ]


def payload_bytes(arrays: Iterable[list[Any]]) -> int:
    return int(sum(entry[4] for entry in arrays))


def outside_allowlist(
    arrays: Iterable[list[Any]], allowed: Iterable[str] | None = None
) -> list[str]:
    """Names of arrays that may not leave a site: not under the shareable prefixes (nor the
    discriminant's moments, `moments.`, which only a query that carries their template asks
    for) or, when `allowed` is given (the names the site received), not among them."""
    allowed = set(allowed) if allowed is not None else None
    names = []
    for _, name, *_ in arrays:
        listed = is_shareable(name) or name.startswith(STATISTICS_PREFIX)
        if not listed or (allowed is not None and name not in allowed):
            if name not in names:
                names.append(name)
    return names


def entry(
    run: int,
    server_round: int,
    site: str,
    direction: str,
    kind: str,
    arrays: list[list[Any]],
    outside: list[str] | None = None,
    refused: str | None = None,
    at: float | None = None,
) -> dict[str, Any]:
    return {
        "time": round(time.time() if at is None else at, 3),
        "run": int(run),
        "round": int(server_round),
        "site": site,
        "direction": direction,
        "kind": kind,
        "bytes": payload_bytes(arrays),
        "arrays": arrays,
        "outside_allowlist": outside or [],
        "refused": refused,
    }


def append(path: str | Path, entries: Iterable[dict[str, Any]]) -> None:
    """Append entries as JSON lines, each write one whole line (flushed and fsynced: a record
    that a crash cut short is at most its last line)."""
    text = "".join(json.dumps(item, separators=(",", ":")) + "\n" for item in entries)
    if not text:
        return
    with open(path, "a") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def read(path: str | Path) -> list[dict[str, Any]]:
    """The entries of a wire record; a last line cut short by a crash is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries


def keep_rounds(path: str | Path, last_round: int) -> None:
    """Drop the entries after `last_round` (a resumed run redoes those rounds)."""
    path = Path(path)
    if not path.is_file():
        return
    kept = [e for e in read(path) if int(e.get("round", 0)) <= last_round]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in kept))
    os.replace(tmp, path)


def summarize(server: list[dict[str, Any]], sites: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The report's wire audit: bytes each way, per site and round, and whether any array
    outside the shareable allow-list left a site, by the server's record and (when the run
    folder holds them: simulation, `deploy-local`) by the sites' own records of the same runs.
    """
    runs = {e["run"] for e in server}
    sites_seen = None if sites is None else [e for e in sites if e.get("run") in runs]
    per_round: dict[tuple[int, str], dict[str, int]] = {}
    for e in server:
        slot = per_round.setdefault((e["round"], e["site"]), {"bytes_down": 0, "bytes_up": 0})
        slot["bytes_down" if e["direction"] == "down" else "bytes_up"] += int(e["bytes"])
    received_outside = sorted({n for e in server for n in e.get("outside_allowlist", [])})
    summary: dict[str, Any] = {
        "server_messages": len(server),
        "bytes_down": int(sum(e["bytes"] for e in server if e["direction"] == "down")),
        "bytes_up": int(sum(e["bytes"] for e in server if e["direction"] == "up")),
        "per_site_round": [{"round": r, "site": s, **v} for (r, s), v in sorted(per_round.items())],
        "outside_allowlist_received": received_outside,
        "site_records": None,
    }
    if sites_seen is not None:
        ups = [e for e in sites_seen if e["direction"] == "up"]
        summary["site_records"] = {
            "messages": len(sites_seen),
            "sites": sorted({e["site"] for e in sites_seen}),
            "refused": [
                {"round": e["round"], "site": e["site"], "arrays": e["outside_allowlist"]}
                for e in ups
                if e.get("refused")
            ],
            # arrays outside the allow-list in a reply the site did NOT refuse (left the site)
            "outside_allowlist_sent": sorted(
                {n for e in ups if not e.get("refused") for n in e.get("outside_allowlist", [])}
            ),
        }
    left = received_outside or (
        summary["site_records"] and summary["site_records"]["outside_allowlist_sent"]
    )
    summary["outside_allowlist_left_a_site"] = bool(left)
    return summary
