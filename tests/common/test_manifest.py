"""Tests for common.manifest.read_jsonl: order kept, blank lines skipped, bad lines named."""

from __future__ import annotations

import re

import pytest

from common.errors import LatentveilError
from common.manifest import ManifestError, read_jsonl


def test_reads_objects_in_order_and_skips_blank_lines(tmp_path):
    path = tmp_path / "manifest.jsonl"
    path.write_text('{"video_id": "b", "n": 2}\n\n   \n{"video_id": "a", "labels": {"x": [1]}}\n')
    assert read_jsonl(path) == [{"video_id": "b", "n": 2}, {"video_id": "a", "labels": {"x": [1]}}]


def test_last_line_without_newline_is_read(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}')
    assert [e["a"] for e in read_jsonl(path)] == [1, 2]


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "manifest.jsonl"
    # line 3 (counting the blank line 2) is half written, as after an interrupted write
    path.write_text('{"video_id": "a"}\n\n{"video_id": "b", "pa\n{"video_id": "c"}\n')
    with pytest.raises(ManifestError, match=rf"^{re.escape(str(path))}:3: not a JSON line \("):
        read_jsonl(path)


def test_a_line_that_is_json_but_not_an_object_is_refused(tmp_path):
    path = tmp_path / "manifest.jsonl"
    path.write_text('{"video_id": "a"}\n["video_id", "b"]\n')
    expected = rf"^{re.escape(str(path))}:2: not a JSON object \(a list\)"
    with pytest.raises(ManifestError, match=expected):
        read_jsonl(path)


def test_missing_file_and_binary_file_are_user_errors(tmp_path):
    with pytest.raises(ManifestError, match="no such file"):
        read_jsonl(tmp_path / "absent.jsonl")
    binary = tmp_path / "video.mp4"
    binary.write_bytes(b"\x00\x00\x00\x18ftypmp42\xff\xfe\xfa")
    with pytest.raises(ManifestError, match=rf"^{re.escape(str(binary))}: not UTF-8 text"):
        read_jsonl(binary)
    with pytest.raises(ManifestError, match="is a directory"):
        read_jsonl(tmp_path)
    assert issubclass(ManifestError, LatentveilError)  # the CLI reports it in one line
