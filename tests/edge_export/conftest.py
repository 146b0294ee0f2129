"""Fixtures for the edge tests (what they are made of: tests/edge_export/generated.py)."""

import pytest

from common.encoders import create_encoder
from tests.edge_export.generated import tiny_config, trained_model


@pytest.fixture(scope="session")
def config():
    return tiny_config()


@pytest.fixture(scope="session")
def encoder(config):
    return create_encoder(config.encoder)


@pytest.fixture(scope="session")
def adapter(config):
    return trained_model(config, seed=1).adapter


@pytest.fixture(scope="session")
def other_adapter(config):
    return trained_model(config, seed=2).adapter
