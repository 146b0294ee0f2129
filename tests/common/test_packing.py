"""One array per message on the wire (common.packing): the very arrays come back, a malformed
packed message is a clear error, and a message without arrays or already plain passes."""

import json

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from common.packing import INDEX, PACKED, PackingError, is_packed, pack, unpack


def _content() -> RecordDict:
    rng = np.random.default_rng(0)
    return RecordDict(
        {
            "arrays": ArrayRecord(
                {
                    "adapter.w": Array(rng.normal(size=(7, 5)).astype(np.float32)),
                    "adapter.b": Array(rng.normal(size=5).astype(np.float16)),
                    "heads.ar.idx": Array(np.arange(4, dtype=np.int64)),
                }
            ),
            "scales": ArrayRecord({"adapter.w": Array(np.ones(3, np.float32))}),
            "metrics": MetricRecord({"loss": 0.5}),
            "config": ConfigRecord({"server-round": 3}),
        }
    )


def test_a_packed_message_holds_one_array_per_record_and_unpacks_to_the_same_bytes():
    content = _content()
    packed = pack(content)
    assert is_packed(packed)
    assert [list(r) for r in packed.array_records.values()] == [[PACKED], [PACKED]]
    total = sum(len(a.data) for a in content.array_records["arrays"].values())
    assert len(packed.array_records["arrays"][PACKED].data) == total
    plain = unpack(packed)
    assert not is_packed(plain)
    assert list(plain) == list(content)
    for name, record in content.array_records.items():
        assert list(plain.array_records[name]) == list(record)
        for key, array in record.items():
            back = plain.array_records[name][key]
            assert (back.dtype, back.shape, back.stype) == (array.dtype, array.shape, array.stype)
            assert back.data == array.data
            np.testing.assert_array_equal(back.numpy(), array.numpy())
    assert plain.metric_records["metrics"]["loss"] == 0.5
    assert plain.config_records["config"]["server-round"] == 3


def test_messages_without_arrays_and_plain_messages_pass_untouched():
    empty = RecordDict({"config": ConfigRecord({"server-round": 0})})
    assert pack(empty) is empty
    content = _content()
    assert unpack(content) is content
    once = pack(content)
    assert pack(once) is once


def _tampered(change) -> RecordDict:
    packed = pack(_content())
    index = json.loads(packed.config_records[INDEX]["index"])
    change(index, packed)
    packed[INDEX] = ConfigRecord({"index": json.dumps(index)})
    return packed


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda index, p: index["arrays"][0].__setitem__(5, 10**9), "lies outside its bytes"),
        (lambda index, p: index["arrays"].pop(), "bytes its index does not account for"),
        (lambda index, p: index["arrays"][1].__setitem__(0, "adapter.w"), "appears twice"),
        (lambda index, p: index.pop("scales"), "'scales' is missing from the index"),
        (lambda index, p: index.__setitem__("ghost", []), "ArrayRecords the message lacks"),
        (lambda index, p: index["arrays"][0].__setitem__(2, "x"), "is malformed"),
        (
            lambda index, p: p.__setitem__("arrays", ArrayRecord({"w": Array(np.ones(2))})),
            "must hold the one Array 'packed'",
        ),
    ],
)
def test_a_packed_message_whose_index_does_not_match_its_bytes_is_refused(change, message):
    with pytest.raises(PackingError, match=message):
        unpack(_tampered(change))


def test_an_index_that_is_not_json_is_refused():
    packed = pack(_content())
    packed[INDEX] = ConfigRecord({"index": "{not json"})
    with pytest.raises(PackingError, match="not valid JSON"):
        unpack(packed)
