"""Compressed update deltas: the error each method may make, the bytes it saves, and the
clear errors of an update that does not decode."""

import zlib

import numpy as np
import pytest

from common.compression import CompressionError, decode, encode


def _update(seed=0):
    rng = np.random.default_rng(seed)
    received = {
        "adapter.w": rng.normal(size=(64, 32)).astype(np.float32),
        "adapter.b": rng.normal(size=(64,)).astype(np.float32),
        "heads.ar.w": rng.normal(size=(8, 64)).astype(np.float32),
    }
    # a round's update: small, with one output channel moving far more than the others
    delta = {k: (1e-3 * rng.normal(size=v.shape)).astype(np.float32) for k, v in received.items()}
    delta["adapter.w"][3] *= 100
    trained = {k: received[k] + delta[k] for k in received}
    return received, trained


@pytest.mark.parametrize("method", ["fp16", "int8", "int8-channel"])
def test_a_decoded_update_is_within_the_methods_rounding_of_the_trained_arrays(method):
    received, trained = _update()
    payload, scales = encode(trained, received, method)
    decoded = decode(payload, scales, received, method)
    for name, array in trained.items():
        delta = array - received[name]
        assert decoded[name].dtype == array.dtype and decoded[name].shape == array.shape
        error = np.abs(decoded[name] - array)
        if method == "fp16":
            bound = np.abs(delta) * 2**-10 + 1e-6  # float16's relative precision, plus float32's
        elif method == "int8":
            bound = np.full_like(delta, np.abs(delta).max() / 127 / 2 + 1e-6)
        else:
            rows = np.abs(delta).reshape(delta.shape[0], -1).max(axis=1) if delta.ndim > 1 else None
            peak = rows.reshape(-1, *([1] * (delta.ndim - 1))) if rows is not None else None
            bound = (peak if peak is not None else np.abs(delta).max()) / 127 / 2 + 1e-6
            bound = np.broadcast_to(bound, delta.shape)
        assert (error <= bound).all(), (name, float(error.max()))


def test_per_channel_scales_keep_quiet_channels_that_one_loud_channel_drowns_per_tensor():
    received, trained = _update()
    errors = {}
    for method in ("int8", "int8-channel"):
        decoded = decode(*encode(trained, received, method), received, method)
        quiet = np.delete(np.arange(64), 3)
        errors[method] = np.abs(decoded["adapter.w"] - trained["adapter.w"])[quiet].max()
    assert errors["int8-channel"] < errors["int8"] / 10


def test_int8_deltas_cost_under_a_quarter_of_float32_and_encoding_is_deterministic():
    received, trained = _update()
    payload, scales = encode(trained, received, "int8")
    float32 = sum(a.nbytes for a in trained.values())
    compressed = sum(a.nbytes for a in payload.values()) + sum(s.nbytes for s in scales.values())
    assert compressed <= 0.25 * float32
    again, _ = encode(trained, received, "int8")
    assert all(np.array_equal(again[k], payload[k]) for k in payload)


def test_an_unchanged_array_decodes_to_itself():
    received, _ = _update()
    for method in ("fp16", "int8", "int8-channel"):
        decoded = decode(*encode(received, received, method), received, method)
        for name, array in received.items():
            np.testing.assert_array_equal(decoded[name], array)


BAD = {
    "unknown method": (lambda p, s: (p, s, "int4"), "unknown compression method"),
    "missing array": (lambda p, s: ({k: v for k, v in p.items() if k != "adapter.b"}, s, "int8"),
                      "missing array 'adapter.b'"),
    "extra array": (lambda p, s: (p | {"encoder.w": p["adapter.b"]}, s, "int8"),
                    "unexpected array 'encoder.w'"),
    "not deflated": (lambda p, s: (p | {"adapter.b": np.arange(9, dtype=np.uint8)}, s, "int8"),
                     "'adapter.b' does not inflate"),
    "wrong length": (lambda p, s: (p | {"adapter.b": np.frombuffer(zlib.compress(b"x" * 7),
                                                                   np.uint8)}, s, "int8"),
                     "inflates to 7 bytes"),
    "missing scale": (lambda p, s: (p, {k: v for k, v in s.items() if k != "adapter.w"}, "int8"),
                      "'adapter.w' needs a float32 scale"),
    "nan scale": (lambda p, s: (p, s | {"adapter.b": np.float32(np.nan) * np.ones((), np.float32)},
                                "int8"), "non-finite scale"),
    "wrong payload dtype": (lambda p, s: (p | {"adapter.b": p["adapter.b"].astype(np.int16)}, s,
                                          "int8"), "uint8 vector"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_an_update_that_does_not_decode_is_a_clear_error_naming_the_array(case):
    received, trained = _update()
    payload, scales = encode(trained, received, "int8")
    change, words = BAD[case]
    with pytest.raises(CompressionError, match=words.replace("(", r"\(")):
        changed_payload, changed_scales, method = change(payload, scales)
        decode(changed_payload, changed_scales, received, method)
