"""Review dashboard benchmark: the first page load and a gallery filter on a large localization run, and how both
scale with the run's size.

    .venv/bin/python benchmarks/bench_dashboard.py [--images 500,5000] [--repeats 3] [--json OUT.json]

For each size N a results root is made with one synthetic localization run of N query images
(tests/dashboard/synthetic.py: every table with its schema, the fine grid of 100 thresholds, four methods, so
``localization_items`` holds N x 400 rows, and N x 4 stored 7x7 maps), the images being the embedded default
dataset's (3 classes x 4 images, generated once, cycled), read from disk like a real run's. Each step is timed
through Streamlit's AppTest, which runs the page script exactly as the server does, minus the browser's drawing:

* ``first page load``: a new session opens the dashboard (the runs page: the catalog) with empty caches;
* ``localization tables``: the localization page, Tables I/II (cached run tables, the run's own small files);
* ``gallery, first view``: the gallery section the first time: reads the items' columns the gallery needs and the
  stored maps (then cached for every session), filters, draws one page of 12 images x 4 methods;
* ``gallery filter``: a class filter on the warm gallery (filter the cached frame, draw one page);
* ``gallery filter (A right, B wrong)``: then 'decomposition right where gradcam is wrong'.

Torch runs on one thread, as in the server ``eml dashboard`` starts (``OMP_NUM_THREADS=1``). Each step is the
median of ``--repeats`` fresh rounds (new caches each round; the Python modules stay imported,
as in the server process after its first session). Nothing is asserted: the numbers, and the ratio of the largest
size to the smallest, are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

APP = ROOT / "flows" / "dashboard" / "app.py"


def _fresh_caches() -> None:
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()


def _round(root: str, label: str) -> dict[str, float]:
    from streamlit.testing.v1 import AppTest

    from flows.dashboard.settings import environment

    os.environ.update(environment(root))
    _fresh_caches()
    times = {}
    started = time.perf_counter()
    at = AppTest.from_file(str(APP), default_timeout=600).run()
    times["first page load"] = time.perf_counter() - started
    started = time.perf_counter()
    at.switch_page("views/localization.py").run()
    times["localization tables"] = time.perf_counter() - started
    started = time.perf_counter()
    at.radio(key="section").set_value("Gallery").run()
    times["gallery, first view"] = time.perf_counter() - started
    started = time.perf_counter()
    at.selectbox(key="class").set_value(label).run()
    times["gallery filter"] = time.perf_counter() - started
    started = time.perf_counter()
    at.selectbox(key="right").set_value("decomposition").run()
    at.selectbox(key="wrong").set_value("gradcam").run()
    times["gallery filter (A right, B wrong)"] = (time.perf_counter() - started) / 2  # two widget changes
    problems = [e.value for e in at.exception] + [e.value for e in at.error]
    if problems:
        raise SystemExit(f"the dashboard failed: {problems}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", default="500,5000", help="run sizes (query images), comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None, help="write the numbers here too")
    options = parser.parse_args()
    sizes = [int(v) for v in options.images.split(",")]

    import torch

    torch.set_num_threads(1)  # as `eml dashboard` runs the app (OMP_NUM_THREADS=1)
    from eml_core.synthetic import SyntheticConfig, generate_synthetic_dataset
    from tests.dashboard.synthetic import localization_run

    results: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        dataset = generate_synthetic_dataset(Path(scratch) / "data", SyntheticConfig(classes=3, images_per_class=4))
        for size in sizes:
            root = Path(scratch) / f"results-{size}"
            started = time.perf_counter()
            localization_run(root, size, dataset)
            made = time.perf_counter() - started
            items = (root / "localization").glob("*/localization_items.parquet")
            megabytes = sum(p.stat().st_size for p in items) / 1e6
            rounds = [_round(str(root), "2") for _ in range(options.repeats)]
            results[size] = {step: statistics.median(r[step] for r in rounds) for step in rounds[0]}
            print(f"{size} images: run made in {made:.1f} s, localization_items {megabytes:.1f} MB "
                  f"({size * 400} rows)")
    steps = list(results[sizes[0]])
    print(f"\n{'step':36}" + "".join(f"{f'{s} images':>14}" for s in sizes)
          + (f"{'ratio':>8}" if len(sizes) > 1 else ""))
    for step in steps:
        line = f"{step:36}" + "".join(f"{results[s][step]:13.2f}s" for s in sizes)
        if len(sizes) > 1:
            line += f"{results[sizes[-1]][step] / results[sizes[0]][step]:8.1f}"
        print(line)
    print(f"\nmedians of {options.repeats} rounds; python {platform.python_version()}, {os.cpu_count()} cores")
    if options.json:
        Path(options.json).write_text(json.dumps({"sizes": sizes, "repeats": options.repeats, "seconds": results},
                                                 indent=2))


if __name__ == "__main__":
    main()
