"""`--plot FILE.png`: latency and throughput over time (matplotlib, imported only here)."""

from __future__ import annotations

from typing import Any

__all__ = ["plot_timeline"]


def plot_timeline(report: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["timeline"]
    fig, (ax_lat, ax_rate) = plt.subplots(2, 1, sharex=True, figsize=(10, 6), height_ratios=(2, 1))
    lat_rows = [r for r in rows if "p50_ms" in r]
    xs = [r["t"] for r in lat_rows]
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99"), ("max_ms", "max")):
        ax_lat.plot(xs, [r[key] for r in lat_rows], marker=".", label=label)
    ax_lat.set_ylabel("end-to-end latency (ms)")
    ax_lat.set_yscale("log")
    ax_lat.grid(True, which="both", alpha=0.3)
    ax_lat.legend(loc="upper left")
    for ev in report.get("drains", []):
        for ax in (ax_lat, ax_rate):
            ax.axvline(ev["at_s"], color="grey", linestyle="--", alpha=0.6)
    ax_rate.bar([r["t"] for r in rows], [r["delivered"] for r in rows], width=0.9, label="delivered/s", alpha=0.7)
    ax_pub = ax_rate.twinx()
    ax_pub.plot([r["t"] for r in rows], [r["published"] for r in rows], color="tab:red", label="published/s")
    ax_rate.set_ylabel("delivered/s")
    ax_pub.set_ylabel("published/s")
    ax_rate.set_xlabel("seconds since publishing started")
    d = report["delivered"]
    fig.suptitle(
        f"herald loadtest {report['scenario']}/{report['transport']}: "
        f"{report['connections']['requested']} connections, lost {d['lost']}, dup {d['duplicated']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
