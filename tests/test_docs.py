"""The documentation site (mkdocs.yml, docs/) builds with ``--strict``: every page in the nav,
no broken link, anchor or API reference; and the README, its landing page, links only to
files that exist."""

from __future__ import annotations

import os
import re
import shutil
import sys

from timewheel.testing import processes as procs

from .conftest import ROOT


def test_the_site_builds_strictly(tmp_path) -> None:
    mkdocs = shutil.which("mkdocs", path=os.path.dirname(sys.executable))
    assert mkdocs, "mkdocs is in the test extra: pip install -e '.[test]'"
    out = procs.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                    capture_output=True, text=True, timeout=120,
                    env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert out.returncode == 0, out.stderr[-5000:]
    assert (tmp_path / "site" / "reference" / "api" / "index.html").read_text().count("count_down") > 2
    assert (tmp_path / "site" / "benchmarks" / "plots" / "scale.png").exists()


def test_the_readme_links_to_files_that_exist() -> None:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    assert len([t for t in targets if t.startswith("docs/")]) >= 20
    missing = [t for t in targets if "://" not in t and not os.path.exists(os.path.join(ROOT, t))]
    assert missing == []
    venv = "python3 -m venv .venv && .venv/bin/pip install -e "
    for command in (venv + ". && .venv/bin/python examples/quickstart.py",
                    venv + "'.[test]' && .venv/bin/python -m pytest -q -n 2 --dist loadfile"):
        assert command in readme        # the two set-up commands, as they were
