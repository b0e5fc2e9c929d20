"""MkDocs hook: the benchmarks' report and plots are the site's pages and images as they are
in benchmarks/ (generated there by ``python -m benchmarks.report``; not copied into docs/)."""

from __future__ import annotations

import os

from mkdocs.structure.files import File, Files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")
#: (path in benchmarks/, path on the site)
SHARED = [("RESULTS.md", "benchmarks/results.md")] + [
    (f"plots/{name}", f"benchmarks/plots/{name}")
    for name in sorted(os.listdir(os.path.join(BENCHMARKS, "plots"))) if name.endswith(".png")]


def on_files(files: Files, config) -> Files:
    for src, uri in SHARED:
        with open(os.path.join(BENCHMARKS, src), "rb") as f:
            content = f.read()
        files.append(File.generated(config, uri, content=content))
    return files
