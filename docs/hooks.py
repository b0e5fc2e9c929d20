"""MkDocs hooks: the benchmarks' report and plots are the site's pages and images as they are
in benchmarks/ (generated there by ``python -m benchmarks.report``; not copied into docs/); and
the docstrings' Sphinx roles (``:class:`~timewheel.Task```) show as the code they name."""

from __future__ import annotations

import os
import re

from mkdocs.structure.files import File, Files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")
#: (path in benchmarks/, path on the site)
SHARED = [("RESULTS.md", "benchmarks/results.md")] + [
    (f"plots/{name}", f"benchmarks/plots/{name}")
    for name in sorted(os.listdir(os.path.join(BENCHMARKS, "plots"))) if name.endswith(".png")]


#: a role as the API reference's HTML has it: ``:meth:<code>~timewheel.api.Task.delay</code>``
ROLE = re.compile(r":(?:class|meth|func|mod|attr|data|exc|obj):<code>(~?)([^<]*)</code>")


def on_page_content(html: str, **_) -> str:
    return ROLE.sub(lambda m: f"<code>{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}</code>",
                    html)


def on_files(files: Files, config) -> Files:
    for src, uri in SHARED:
        with open(os.path.join(BENCHMARKS, src), "rb") as f:
            content = f.read()
        files.append(File.generated(config, uri, content=content))
    return files
