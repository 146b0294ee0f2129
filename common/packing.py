"""One array per message on the wire: a message's arrays packed together, and unpacked again.

Flower 1.41 moves every Array of a message as objects of its own (the array and its chunks),
each pulled or pushed with a request of its own, hashed and, between SuperNode and SuperLink,
signed, at every hop of a deployment: ServerApp, SuperLink, SuperNode, ClientApp. The adapter
and heads are 38 arrays, so a message was about 80 requests per hop, and with 8 sites on 2 cores
Flower spent more CPU on those requests than the sites spent training (benchmarks/deploy.py).
Packed, a message's arrays travel as one Array (split into Flower's 5 MB chunks), and its
index as one ConfigRecord.

    packed = pack(content)      # every ArrayRecord -> one Array; index in ConfigRecord "packing"
    content = unpack(packed)    # the very Arrays again (their serialised bytes, bit for bit)

The server packs what it sends (server.federation) and unpacks what it receives before the
wire audit and screening; a site unpacks what it receives and packs its reply in its outermost
mod (client.mods.packing_mod), so that every other mod, the audit included, sees the named
arrays. A message that is not packed passes through both untouched.
"""

from __future__ import annotations

import json
from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from common.errors import LatentveilError

INDEX = "packing"  # the ConfigRecord holding the index
PACKED = "packed"  # the one Array of each packed ArrayRecord
STYPE = "latentveil.packed"  # its serialisation type: the arrays' bytes, one after the other


class PackingError(LatentveilError, ValueError):
    """A packed message whose index does not match its bytes."""


def is_packed(content: RecordDict) -> bool:
    return INDEX in content.config_records


def pack(content: RecordDict) -> RecordDict:
    """`content` with each ArrayRecord's arrays as one Array; unchanged if it has no arrays."""
    if is_packed(content) or not any(len(r) for r in content.array_records.values()):
        return content
    packed = RecordDict()
    index: dict[str, list[list[Any]]] = {}
    for name, record in content.items():
        if not isinstance(record, ArrayRecord):
            packed[name] = record
            continue
        entries, offset = [], 0
        for key, array in record.items():
            size = len(array.data)
            entries.append([key, array.dtype, list(array.shape), array.stype, offset, size])
            offset += size
        index[name] = entries
        blob = b"".join(array.data for array in record.values())
        packed[name] = ArrayRecord({PACKED: Array("uint8", (len(blob),), STYPE, blob)})
    packed[INDEX] = ConfigRecord({"index": json.dumps(index, separators=(",", ":"))})
    return packed


def unpack(content: RecordDict) -> RecordDict:
    """The content `pack` was given; unchanged if it is not packed. A packed message whose
    index does not account for its bytes exactly raises PackingError."""
    if not is_packed(content):
        return content
    try:
        index = json.loads(str(content.config_records[INDEX].get("index", "")))
    except json.JSONDecodeError as error:
        raise PackingError(f"a packed message's index is not valid JSON: {error}") from None
    if not isinstance(index, dict):
        raise PackingError("a packed message's index must map record names to array lists")
    plain = RecordDict()
    for name, record in content.items():
        if name == INDEX:
            continue
        if not isinstance(record, ArrayRecord):
            plain[name] = record
            continue
        if name not in index:
            raise PackingError(f"the packed ArrayRecord '{name}' is missing from the index")
        if list(record) != [PACKED] or record[PACKED].stype != STYPE:
            raise PackingError(
                f"the packed ArrayRecord '{name}' must hold the one Array '{PACKED}', got "
                f"{list(record)}"
            )
        plain[name] = _unpack_record(name, index[name], record[PACKED].data)
    missing = set(index) - set(plain.array_records)
    if missing:
        raise PackingError(f"the index names ArrayRecords the message lacks: {sorted(missing)}")
    return plain


def _unpack_record(name: str, entries: Any, blob: bytes) -> ArrayRecord:
    arrays: dict[str, Array] = {}
    offset = 0
    view = memoryview(blob)
    try:
        for key, dtype, shape, stype, start, size in entries:
            if start != offset or size < 0 or start + size > len(blob):
                raise PackingError(
                    f"array '{key}' of the packed ArrayRecord '{name}' lies outside its bytes "
                    f"(offset {start}, {size} bytes, {len(blob)} packed)"
                )
            if key in arrays:
                raise PackingError(f"array '{key}' appears twice in the packed '{name}'")
            arrays[str(key)] = Array(
                str(dtype),
                tuple(int(d) for d in shape),
                str(stype),
                bytes(view[start : start + size]),
            )
            offset = start + size
    except PackingError:
        raise
    except (TypeError, ValueError):
        raise PackingError(f"the index of the packed ArrayRecord '{name}' is malformed") from None
    if offset != len(blob):
        raise PackingError(
            f"the packed ArrayRecord '{name}' holds {len(blob) - offset} bytes its index does not "
            "account for"
        )
    return ArrayRecord(arrays)
