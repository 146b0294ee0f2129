"""Where the repository's shipped files are, for tests that read them."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "simulations" / "configs"  # the shipped run configs
