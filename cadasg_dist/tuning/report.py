"""What ``cadasg tune`` writes: the front as JSON and markdown, a plot, and each member's config and model.

    OUT/front.json     every trial (status, parameters, scores) and the front, with the privacy note
    OUT/front.md       the same as tables
    OUT/front.png      utility against ε (private) or fidelity (not private), front members joined
    OUT/front/ID/      config.yaml and model/ of each front member (trained on the tuning rows)

Privacy: these files describe the tuning rows (validation scores) and are not protected; the
member models are trained on the tuning rows, so they are for comparison, not for release.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from cadasg_dist.evaluate.result import to_jsonable
from cadasg_dist.tuning.search import SearchOutcome, TrialRecord

FORMAT = "cadasg-tune/1"


def privacy_note(outcome: SearchOutcome) -> dict[str, Any]:
    """How the tuning's privacy is handled; goes into front.json and the picked model's meta."""
    split = outcome.split
    tuning = split["tuning_train_rows"] + split["validation_rows"]
    private = outcome.request.config.private
    return {
        "route": "holdout-split" if private else "non-private",
        # Without privacy the picked model trains on every row (final.final_rows).
        "final_rows": split["final_rows"] if private else split["final_rows"] + tuning, "tuning_rows": tuning,
        "statement": (
            f"Trials trained and were scored on {tuning} tuning rows that the final model never trains on; "
            f"the final model's epsilon covers only its {split['final_rows']} training rows. The tuning rows "
            "are NOT protected: the validation scores read them without noise and the choice of "
            "configuration depends on them; treat them as disclosed."
            if private else
            "Not private: the search reads the tuning rows without noise and the final model has no "
            "privacy guarantee (epsilon = inf)."),
    }


def outcome_dict(outcome: SearchOutcome) -> dict[str, Any]:
    front = {r.trial_id for r in outcome.front()}
    return {
        "format": FORMAT,
        "objectives": outcome.objectives,
        "trials_requested": outcome.request.trials,
        "trials": [{**_plain(r), "on_front": r.trial_id in front} for r in outcome.records],
        "front": [r.trial_id for r in outcome.records if r.trial_id in front],
        "stopped_early_fraction": outcome.stopped_fraction(),
        "wall_seconds": round(outcome.wall_s, 1),
        "interrupted": outcome.interrupted,
        "split": outcome.split,
        "privacy_of_tuning": privacy_note(outcome),
        "space": outcome.request.space.to_dict(),
        "experiment": str(outcome.experiment),
    }


def write_outputs(outcome: SearchOutcome, out: Path) -> dict[str, Path]:
    """Write front.json, front.md, front.png and the members' folders; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "front.json", "markdown": out / "front.md", "plot": out / "front.png"}
    data = outcome_dict(outcome)
    paths["json"].write_text(json.dumps(to_jsonable(data), indent=1) + "\n")
    paths["markdown"].write_text(front_markdown(data))
    plot_front(data, paths["plot"])
    members = out / "front"
    shutil.rmtree(members, ignore_errors=True)
    for record in outcome.front():
        export_member(record, outcome, members / record.trial_id)
    return paths


def export_member(record: TrialRecord, outcome: SearchOutcome, where: Path) -> None:
    import yaml

    where.mkdir(parents=True, exist_ok=True)
    config = outcome.request.config.replace(**record.params) if record.params else outcome.request.config
    (where / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    if record.artifact and Path(record.artifact).is_dir():
        shutil.copytree(record.artifact, where / "model", dirs_exist_ok=True)


def front_markdown(data: dict[str, Any]) -> str:
    objectives = list(data["objectives"])
    head = ["trial", *objectives, "score", "epochs", "status", "parameters"]
    lines = [f"# Tuning front ({len(data['front'])} of {len(data['trials'])} trials)", "",
             f"**Privacy of tuning ({data['privacy_of_tuning']['route']}).** "
             f"{data['privacy_of_tuning']['statement']}", "",
             f"Search: {data['wall_seconds']:.0f} s; {data['stopped_early_fraction']:.0%} of started trials "
             "stopped early by ASHA" + ("; INTERRUPTED: run the same command again to resume" if data["interrupted"]
                                        else ""), "",
             "## Front (non-dominated completed trials)", "", _row(head), _row(["---"] * len(head))]
    by_id = {t["trial_id"]: t for t in data["trials"]}
    for trial_id in data["front"]:
        lines.append(_row(_cells(by_id[trial_id], objectives)))
    lines += ["", "## All trials", "", _row(head), _row(["---"] * len(head))]
    lines += [_row(_cells(t, objectives)) for t in data["trials"]]
    return "\n".join(lines) + "\n"


def plot_front(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    private = "epsilon" in data["objectives"]
    x_key = "epsilon" if private else "fidelity"
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    styles = {"completed": dict(marker="o", alpha=0.8), "stopped": dict(marker="x", alpha=0.5),
              "infeasible": dict(marker="v", alpha=0.4)}
    for status, style in styles.items():
        pts = [t for t in data["trials"] if t["status"] == status and _num(t, x_key) is not None]
        if not pts:
            continue
        shade = dict(c=[_num(t, "fidelity") for t in pts], cmap="viridis", vmin=0, vmax=1) if private else {}
        ax.scatter([_num(t, x_key) for t in pts], [_num(t, "utility") for t in pts], label=status, **shade, **style)
    front = sorted((t for t in data["trials"] if t["on_front"]), key=lambda t: _num(t, x_key))
    if front:
        ax.plot([_num(t, x_key) for t in front], [_num(t, "utility") for t in front], color="tab:red", lw=1,
                label="front")
        for t in front:
            ax.annotate(t["trial_id"], (_num(t, x_key), _num(t, "utility")), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    if private:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("ε spent (lower is more private)")
        if ax.collections:
            fig.colorbar(ax.collections[0], ax=ax, label="validation fidelity")
    else:
        ax.set_xlabel("validation fidelity")
    ax.set_ylabel("validation utility ratio")
    ax.set_title("CA-DASG tuning: trials and front (validation rows, not protected)", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _num(trial: dict[str, Any], key: str) -> float | None:
    value = trial["metrics"].get(key)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _cells(trial: dict[str, Any], objectives: list[str]) -> list[str]:
    m = trial["metrics"]
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(trial["params"].items()))
    return [trial["trial_id"], *(_fmt(m.get(k)) for k in objectives), _fmt(m.get("score")), _fmt(m.get("epochs")),
            trial["status"], params]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"


def _plain(record: TrialRecord) -> dict[str, Any]:
    return {"trial_id": record.trial_id, "status": record.status, "params": record.params,
            "metrics": record.metrics, "artifact": record.artifact, "error": record.error}
