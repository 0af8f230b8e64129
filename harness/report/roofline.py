"""The roofline view both reports show: every timed kernel with its arithmetic intensity, the
roof at that intensity and the share of the roof it reached (`harness.analysis.roofline`)."""
from __future__ import annotations

from harness.analysis.roofline import roofline
from harness.case import ALWAYS_SHOWN, config_key, config_order, config_text, label_axes
from harness.report.format import fmt_tflops
from harness.report.run import Run


def roofline_view(run: Run) -> dict:
    """{"rows": table rows, "roofs": per (device, dtype), "left_out": why some records are not
    placed, "above": how many points lie above their roof}."""
    data = roofline(run.records, run.env.get("peaks") or {})
    rows = []
    axes = [a for a in label_axes(data["points"]) if a not in ALWAYS_SHOWN]
    for p in sorted(data["points"], key=lambda p: (config_order(config_key(p)), p["impl"],
                                                   p["sweep_len"])):
        rows.append({**p, "config": config_text(p, axes),
                     "intensity_text": f"{p['intensity']:.3g}",
                     "achieved_text": fmt_tflops(p["achieved_tflops"]),
                     "roof_text": fmt_tflops(p["roof_tflops"]),
                     "pct_text": f"{p['pct_of_roof']:.3g}%",
                     "unstable": p["stable"] is False})
    roofs = [{**r, "text": f"{r['device']} {r['dtype']}: matmul {fmt_tflops(r['peak_tflops'])} "
                           f"TFLOP/s, copy {r['bandwidth_gbs']:.3g} GB/s, ridge at "
                           f"{r['ridge']:.3g} FLOP/B"} for r in data["roofs"]]
    left_out = [f"{count} case{'s' if count != 1 else ''}: {why}"
                for why, count in sorted(data["left_out"].items())]
    return {"rows": rows, "roofs": roofs, "left_out": left_out,
            "above": sum(p["above_roof"] for p in data["points"])}
