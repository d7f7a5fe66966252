"""capq without the repository's tooling package (as in the runtime images): its commands say where they run."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

WITHOUT_TOOLING = textwrap.dedent("""
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "tooling":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, Block())
    sys.argv = ["capq", *sys.argv[1:]]
    from capq.cli import main
    main()
""")


def _capq_without_tooling(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_TOOLING, *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "args", [["stack", "up"], ["demo", "--models", "blip"], ["models", "make-tiny", "x"]], ids=" ".join
)
def test_tooling_commands_name_the_remedy_where_tooling_is_absent(args):
    done = _capq_without_tooling(*args)
    assert done.returncode == 2, done.stderr
    assert "is repository tooling" in done.stderr and "run it from a checkout" in done.stderr


def test_the_other_commands_run_without_tooling():
    done = _capq_without_tooling("models", "list", "--json")
    assert done.returncode == 0, done.stderr
    assert '"blip"' in done.stdout
