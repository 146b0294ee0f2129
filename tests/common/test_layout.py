"""Tests for the run folder's layout (common.layout)."""

from pathlib import Path

from common.layout import RunLayout
from tests.paths import REPO_ROOT


def test_every_file_of_a_run_lies_in_its_folder_and_no_two_share_a_name():
    layout = RunLayout(Path("/runs/x"))
    entries = RunLayout.describe()
    assert len(entries) == len(set(entries))
    paths = [getattr(layout, n) for n, m in vars(RunLayout).items() if isinstance(m, property)]
    assert all(p.parent == layout.root or p.parent.parent == layout.root for p in paths)
    assert len(set(paths)) == len(paths)
    assert layout.site_store("site_03") == Path("/runs/x/features/site_03.h5")
    assert layout.world("") == layout.default_world and layout.world("/w") == Path("/w")


def test_the_readme_run_folder_table_is_the_layouts():
    readme = (REPO_ROOT / "README.md").read_text()
    start = readme.index("<!-- run-folder:start -->\n") + len("<!-- run-folder:start -->\n")
    end = readme.index("\n<!-- run-folder:end -->")
    assert readme[start:end] == RunLayout.markdown_table(), (
        "README's run-folder table is stale: paste the output of "
        "`python -c 'from common.layout import RunLayout; print(RunLayout.markdown_table())'`"
    )


def test_docs_run_folder_lists_the_layout_and_the_default_adapter_arrays():
    from common.config import load_config
    from common.model import build_model
    from common.weights import shareable_arrays_markdown
    from tests.paths import CONFIG_DIR

    doc = (REPO_ROOT / "docs" / "run_folder.md").read_text()
    config = load_config(CONFIG_DIR / "default.yaml")
    for marker, expected in (
        ("run-folder", RunLayout.markdown_table()),
        ("adapter-arrays", shareable_arrays_markdown(build_model(config.encoder.dim, config))),
    ):
        start = doc.index(f"<!-- {marker}:start -->\n") + len(f"<!-- {marker}:start -->\n")
        end = doc.index(f"\n<!-- {marker}:end -->")
        assert doc[start:end] == expected, f"docs/run_folder.md's {marker} block is stale"
