"""Draw the scaling runs (bench/results/scaling.json, written by bench.compare) as a PNG:
ingest rate and peak RSS against input size and against distinct lines.

    python -m bench.plot [scaling.json] [out.png]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).parent / "results"


def draw(source: Path = HERE / "scaling.json", out: Path = HERE / "scaling.png") -> Path:
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("the plot needs matplotlib: pip install '.[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = json.loads(Path(source).read_text())
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for ax, axis, key, label in ((axes[0], "by_records", "records", "records ingested"),
                                 (axes[1], "by_lines", "lines", "distinct lines indexed")):
        rows = sorted(runs[axis], key=lambda r: r[key])
        if not rows:
            continue
        x = [r[key] for r in rows]
        ax.plot(x, [r["rate"] / 1e6 for r in rows], "o-", color="tab:blue", label="ingest rate")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("M records/s", color="tab:blue")
        ax.set_ylim(bottom=0)
        for r in rows:
            ax.annotate(f"{r['rate'] / 1e6:.2f}", (r[key], r["rate"] / 1e6),
                        textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
        mem = ax.twinx()
        mem.plot(x, [r["peak_rss_mb"] for r in rows], "s--", color="tab:red", label="peak RSS")
        mem.plot(x, [r["store_mb"] for r in rows], "^:", color="tab:gray", label="store size")
        mem.axhline(300, color="tab:red", linewidth=0.6, alpha=0.5)
        mem.set_ylabel("MB (peak RSS, store)", color="tab:red")
        mem.set_yscale("log")
        fixed = rows[0]["lines_asked"] if axis == "by_records" else rows[0]["records_asked"]
        ax.set_title(f"{'lines' if axis == 'by_records' else 'records'} fixed at {fixed:,}")
        handles = ax.get_legend_handles_labels()[0] + mem.get_legend_handles_labels()[0]
        ax.legend(handles, [h.get_label() for h in handles], loc="lower left", fontsize=8)
    m = runs.get("machine", {})
    fig.suptitle(f"cdrtrace ingest scaling: {m.get('cpu', '')}, {m.get('cores', '?')} cores, "
                 f"{m.get('date', '')}", fontsize=10)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


if __name__ == "__main__":
    args = [Path(a) for a in sys.argv[1:]]
    print(draw(*args))
