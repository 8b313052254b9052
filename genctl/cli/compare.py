"""``genctl compare RUN_OR_SWEEP [...]``: finished runs side by side.

Every folder under the arguments that holds a ``metrics.json`` is a run (so a multirun sweep
folder works as is). Prints one Markdown table (model, dataset, parameters, epochs, wall time,
test NLL in nats, bits/dim, the estimator, samples/s; and where any run has them, its active
latent units, the linear probe's accuracy genctl eval eval.metrics=[probe] filed and the sample
quality eval.metrics=[fid] filed), writes it as ``compare.md`` and
``compare.csv``, and draws ``compare.png``: validation loss against wall time for each run
(from its ``history.jsonl``) above a row of the runs' sample grids.

Not a Hydra app: it reads run folders and composes no config.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from genctl.errors import GenctlError
from genctl.runs.atomic import check_writable, write_text
from genctl.runs.summary import (
    compare_row,
    comparison_figure,
    comparison_table,
    csv_text,
    find_runs,
    labels_for,
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="genctl compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", help="run folders and/or sweep folders")
    p.add_argument("--out", help="where compare.md/.csv/.png go (default: the one folder given, else ./compare)")
    p.add_argument("--no-figure", action="store_true", help="skip compare.png")
    a = p.parse_args(argv)
    try:
        runs = find_runs(a.folders)
        labels = labels_for(runs)
        rows = [compare_row(run, label) for run, label in zip(runs, labels)]
        out = Path(a.out) if a.out else Path(a.folders[0]) if len(a.folders) == 1 else Path("compare")
        written = [out / "compare.md", out / "compare.csv"]
        for path in [*written, *([] if a.no_figure else [out / "compare.png"])]:
            check_writable(path, "the comparison", "pass --out DIR in a writable folder", out)
        table = comparison_table(rows)
        print(table)
        write_text(written[0], table + "\n", "the comparison", out)
        write_text(written[1], csv_text(rows), "the comparison", out)
        if not a.no_figure:
            labelled = [f"{r['run']}: {r['model']}" for r in rows]  # a sweep's folders are numbered
            written.append(comparison_figure(runs, labelled, out))
    except GenctlError as e:
        print(f"genctl compare: error: {e}", file=sys.stderr)
        return 2
    print("written: " + ", ".join(map(str, written)))
    return 0
