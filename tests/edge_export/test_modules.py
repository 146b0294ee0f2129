"""The edge module and its parts under torch.export: dynamic batch and clip count."""

import pytest
import torch

from common.aam import anonymize_in_windows
from edge_export.backends.tensorrt_backend import input_ranges
from edge_export.modules import AdapterPart, EdgeModule, EncoderPart, export_part, part_specs

WINDOW = 4


def clips(encoder, batch, length, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, length, 3, encoder.clip_len, encoder.frame_size, encoder.frame_size)
    return torch.randn(shape, generator=generator)


def test_the_whole_edge_module_exports_once_and_runs_at_sizes_it_was_not_traced_with(
    encoder, adapter
):
    edge = EdgeModule(encoder, adapter)
    program = export_part(edge, part_specs(encoder, WINDOW)["edge"])
    exported = program.module()
    for batch, length in [(1, 1), (5, 4), (3, 2)]:
        x = clips(encoder, batch, length, seed=batch)
        with torch.no_grad():
            expected = adapter(encoder(x.flatten(0, 1)).reshape(batch, length, -1))
            got = exported(x)
        assert got.shape == (batch, length, encoder.dim)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_the_parts_compose_to_the_windowed_anonymizer_of_training(encoder, adapter):
    specs = part_specs(encoder, WINDOW)
    encode = export_part(EncoderPart(encoder), specs["encoder"]).module()
    anonymize = export_part(AdapterPart(adapter), specs["adapter"]).module()
    x = clips(encoder, 1, 7)[0]  # one video of 7 clips: a window of 4, then one of 3
    with torch.no_grad():
        features = encode(x)  # (7, d)
        expected = anonymize_in_windows(adapter, encoder(x)[None], WINDOW)[0]
        got = torch.cat([anonymize(features[None, :4])[0], anonymize(features[None, 4:])[0]])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_a_shape_outside_the_exported_ranges_is_refused_before_the_call(encoder):
    spec = part_specs(encoder, WINDOW, max_batch=8)["adapter"]
    spec.check_input((8, WINDOW, encoder.dim))  # the largest allowed
    with pytest.raises(ValueError, match="clips from 1 to 4"):
        spec.check_input((2, WINDOW + 1, encoder.dim))
    with pytest.raises(ValueError, match="batch from 1 to 8"):
        spec.check_input((9, 2, encoder.dim))
    with pytest.raises(ValueError, match="shape"):
        spec.check_input((2, 2, encoder.dim + 1))


def test_tensorrt_input_ranges_come_from_the_window_and_the_largest_batch(encoder):
    specs = part_specs(encoder, window=8, max_batch=32)
    ranges = input_ranges(specs["adapter"])
    assert ranges == {
        "min_shape": (1, 1, encoder.dim),
        "opt_shape": (8, 8, encoder.dim),
        "max_shape": (32, 8, encoder.dim),
    }
    clip = (3, encoder.clip_len, encoder.frame_size, encoder.frame_size)
    assert input_ranges(specs["encoder"])["max_shape"] == (32 * 8, *clip)
