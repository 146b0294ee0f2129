"""The run report: report.json (the contract in DESIGN.md), report.md and plots.

Privacy is the worst case over the attacker suite (common.attackers) on the anonymized VIDEO
features a deployment releases (`privacy_cmap`); the paper's stills protocol is reported beside
it (`privacy_stills_cmap`, and the paper's attacker alone, `privacy_stills_paper_cmap`), and
`privacy_attackers` gives every attacker's cMAP and AP per attribute, raw and anonymized.

Baseline = round 0 (the identity AAM: raw features under the same protocol); anonymized = the
round selected on validation numbers (server.selection; `evaluation.select: last` makes it the
last evaluated round), whose arrays are the adapter the run ships. The last evaluated round is
reported beside it. Percentages throughout; privacy cMAP lower is better.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from common.atomic import atomic_path, atomic_write_text
from common.config import RunConfig, to_dict
from common.layout import RunLayout
from common.tasks import Task, get_task
from server.history import History, RoundRecord

# report.json's baseline and anonymized entries always carry these (null when not evaluated).
CONTRACT_METRICS = ("privacy_cmap", "ar_top1", "tad_map", "ad_auc")
PRIVACY_DETAILS = (
    "privacy_attacker",
    "privacy_val_cmap",
    "privacy_per_attribute_ap",
    "privacy_stills_cmap",
    "privacy_stills_attacker",
    "privacy_stills_paper_cmap",
)
PROTOCOLS = ("video", "stills")

THREAT_MODEL = (
    "Threat model: the attacker sees the anonymized features a site releases and knows the "
    "frozen encoder and the adapter (broadcast to every site), so it can make labelled data of "
    "its own. Each attacker of the suite (the paper's MLP, logistic regression, k nearest "
    "neighbours, boosted trees, and an inversion attacker that maps anonymized features back to "
    "raw ones and reads them with a raw-feature attacker) is trained on the central train "
    "split, chosen and stopped on val, and scored once on test. Privacy cMAP is the WORST case "
    "(highest test cMAP) over the suite on VIDEO features: each central action video anonymized "
    "as the edge anonymizer runs it, the mean of its clip features, labelled with its actors' "
    "attributes. The stills protocol (static clips of still images) is the paper's."
)


def _evaluated_tasks(config: RunConfig) -> list[Task]:
    return [get_task(name) for name in config.tasks.evaluated]


def _task_view(evaluation: dict[str, Any], tasks: list[Task]) -> dict[str, Any]:
    view = {key: evaluation.get(key) for key in CONTRACT_METRICS}
    for task in tasks:
        view |= {task.test_key: evaluation.get(task.test_key)}
        view |= {f"{task.test_key}_se": evaluation.get(f"{task.test_key}_se")}
        if evaluation.get(f"{task.test_key}_change_se") is not None:
            view |= {f"{task.test_key}_change_se": evaluation[f"{task.test_key}_change_se"]}
        if evaluation.get(f"{task.test_key}_by_kind"):
            view |= {f"{task.test_key}_by_kind": evaluation[f"{task.test_key}_by_kind"]}
    view |= {key: evaluation.get(key) for key in PRIVACY_DETAILS}
    return view


def attacker_table(baseline: dict[str, Any], final: dict[str, Any]) -> dict[str, Any]:
    """privacy_attackers: per protocol and attacker, raw and anonymized cMAP / AP per attribute
    (and what each attacker chose on val)."""
    table: dict[str, Any] = {}
    for protocol in PROTOCOLS:
        raw = (baseline.get("privacy_attackers") or {}).get(protocol, {})
        anon = (final.get("privacy_attackers") or {}).get(protocol, {})
        table[protocol] = {
            name: {"raw": raw.get(name), "anonymized": anon.get(name)}
            for name in dict.fromkeys([*raw, *anon])
        }
    return table


def _round_entry(record: RoundRecord, tasks: list[Task]) -> dict[str, Any]:
    evaluation = record.evaluation.to_json() if record.evaluation else {}
    entry: dict[str, Any] = {
        "round": record.round,
        "privacy_cmap": evaluation.get("privacy_cmap"),
        "privacy_attacker": evaluation.get("privacy_attacker"),
        "privacy_stills_cmap": evaluation.get("privacy_stills_cmap"),
    }
    entry |= {task.test_key: evaluation.get(task.test_key) for task in tasks}
    # Validation numbers: what hyper-parameters may be chosen on (never test).
    entry["privacy_val_cmap"] = evaluation.get("privacy_val_cmap")
    entry |= {task.val_key: evaluation.get(task.val_key) for task in tasks}
    return entry | {
        **record.train,
        "sites_aggregated": record.sites_aggregated,
        "sites_rejected": record.sites_rejected,
        "bytes_up": record.bytes_up,
        "bytes_down": record.bytes_down,
        "seconds": record.seconds,
        "evaluation_seconds": record.evaluation_seconds,
        "slowest_site_seconds": record.slowest_site_seconds,
        "site_seconds": record.site_seconds,
        "sites_dropped": record.sites_dropped,
        "sites": record.sites,
        "epsilon": record.epsilon,
        "note": record.note,
    }


def build_report(
    config: RunConfig,
    history: History,
    communication: dict[str, Any],
    sites: list[dict[str, Any]],
    wall_seconds: float | None = None,
    wire: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """report.json content from a run's history (rounds with their evaluations) and, for a
    federated run, its wire audit (common.wire.summarize)."""
    tasks = _evaluated_tasks(config)
    evaluated = history.evaluated()
    baseline = history.baseline.to_json()
    chosen = history.selected()
    final = chosen.evaluation.to_json()
    last = evaluated[-1]
    chance = baseline["privacy_chance_cmap"]
    base_cmap, anon_cmap = baseline["privacy_cmap"], final["privacy_cmap"]
    metric_keys = dict.fromkeys([*CONTRACT_METRICS[1:], *(t.test_key for t in tasks)])
    drops = {
        key: (
            None
            if baseline.get(key) is None or final.get(key) is None
            else baseline[key] - final[key]
        )
        for key in metric_keys
    }
    return {
        "mode": config.federation.mode,
        "strategy": config.federation.strategy if config.federation.mode == "federated" else None,
        "baseline": _task_view(baseline, tasks),
        "anonymized": _task_view(final, tasks) | {"round": chosen.round},
        "selection": {
            "rule": config.evaluation.select,
            "max_val_drop": dict(config.tasks.evaluated),
            "round": chosen.round,
            "privacy_val_cmap": final.get("privacy_val_cmap"),
            **{task.val_key: final.get(task.val_key) for task in tasks},
            # The raw features' validation numbers, which the allowed drops are measured from.
            "raw": {
                "privacy_val_cmap": baseline.get("privacy_val_cmap"),
                **{task.val_key: baseline.get(task.val_key) for task in tasks},
            },
        },
        "last_evaluated": _task_view(last.evaluation.to_json(), tasks) | {"round": last.round},
        # How round 0's adapter was made, when not seeded (`anonymizer.init`), else empty.
        "initialisation": history.initialisation,
        "threat_model": THREAT_MODEL,
        "privacy_reduction_rel": (base_cmap - anon_cmap) / base_cmap,
        "privacy_stills_reduction_rel": _relative_drop(
            baseline.get("privacy_stills_cmap"), final.get("privacy_stills_cmap")
        ),
        "privacy_chance_cmap": chance,
        "privacy_removed_above_chance": (base_cmap - anon_cmap) / (base_cmap - chance)
        if base_cmap > chance
        else None,
        "utility_drop": drops,
        "privacy_attackers": attacker_table(baseline, final),
        "bias": {"baseline": baseline.get("bias"), "anonymized": final.get("bias")}
        if baseline.get("bias") or final.get("bias")
        else None,
        "tasks": {
            task.name: {"metric": task.test_key, "val_metric": task.val_key, "title": task.title}
            for task in tasks
        },
        "rounds": [_round_entry(r, tasks) for r in history.rounds],
        "rejected_updates": history.rejected,
        "dropped_sites": [e for r in history.rounds for e in r.sites_dropped],
        "stopped": history.stopped,
        "differential_privacy": _dp_section(config, history),
        "compression": _compression_section(config, history, communication),
        "wire": wire,
        "communication": communication,
        "sites": sites,
        "wall_seconds": wall_seconds,
        "config": to_dict(config),
    }


def _dp_section(config: RunConfig, history: History) -> dict[str, Any] | None:
    federation = config.federation
    if federation.dp_noise_multiplier <= 0:
        return None
    spent = [r.epsilon for r in history.rounds if r.epsilon is not None]
    return {
        "mechanism": "Flower DifferentialPrivacyClientSideFixedClipping + fixedclipping_mod",
        "accountant": "Flower RdpAccountant (client-level, add-or-remove-one, no amplification)",
        "noise_multiplier": federation.dp_noise_multiplier,
        "clipping_norm": federation.dp_clipping_norm,
        "delta": federation.dp_delta,
        "max_epsilon": federation.dp_max_epsilon or None,
        "epsilon": spent[-1] if spent else 0.0,
        "epsilon_per_round": [
            {"round": r.round, "epsilon": r.epsilon} for r in history.rounds if r.round > 0
        ],
    }


def _compression_section(
    config: RunConfig, history: History, communication: dict[str, Any]
) -> dict[str, Any] | None:
    if config.federation.mode != "federated":
        return None
    ups = [e["bytes_up"] for r in history.rounds for e in r.sites if e.get("bytes_up")]
    full = communication.get("wire_bytes_float32")
    mean = sum(ups) / len(ups) if ups else None
    return {
        "method": config.federation.compression,
        "mean_bytes_up_per_site_round": mean,
        "float32_bytes_per_site_round": full,
        "ratio_to_float32": mean / full if mean and full else None,
    }


def _relative_drop(before: float | None, after: float | None) -> float | None:
    if before is None or after is None or before == 0:
        return None
    return (before - after) / before


DASH_NOTE = (
    'A "–" is a number that does not exist: an attribute with no positive example in a split '
    "has no average precision, a round that was not evaluated has no scores, an attacker that "
    "was not run has no result, and a round evaluated without the stills protocol "
    "(`evaluation.stills: selected` runs it on the raw features, the last round and the "
    "selected round only) has no stills cMAP."
)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _row(*cells: Any) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return [_row(*header), "|" + "---|" * len(header), *(_row(*row) for row in rows)]


def _selection_sentence(report: dict[str, Any]) -> str:
    selection, last = report.get("selection"), report.get("last_evaluated")
    if not selection:
        return ""
    if selection["rule"] == "last":
        return f"Anonymized = the last round ({selection['round']})."
    start = report.get("initialisation") or {}
    if selection["round"] == 0 and not start:
        drops = ", ".join(
            f"{name} {_fmt(float(drop), 1)}"
            for name, drop in (selection.get("max_val_drop") or {}).items()
        )
        return (
            "**Round 0 was selected: `adapter.npz` is the untrained starting adapter, and the "
            "anonymized numbers are those of the features before any training.** No trained "
            f"round kept every task's validation metric within its allowed drop ({drops} "
            "points) with a lower validation privacy cMAP; see the rounds below, and consider "
            "more rounds, other loss weights, or `--set evaluation.select=last`."
        )
    tasks = report.get("tasks") or {}
    raw = selection.get("raw") or {}
    allowances = " and ".join(
        f"validation {tasks[name]['title'] if name in tasks else name} is at most "
        f"{_fmt(float(drop), 1)} points below the raw features'"
        + (
            f" ({_fmt(raw[tasks[name]['val_metric']])})"
            if name in tasks and raw.get(tasks[name]["val_metric"]) is not None
            else ""
        )
        for name, drop in (selection.get("max_val_drop") or {}).items()
    )
    sentence = (
        f"Anonymized = round {selection['round']}, selected on the VALIDATION split: the lowest "
        f"worst-case validation privacy cMAP on video ({_fmt(selection['privacy_val_cmap'])}) "
        f"among evaluated rounds whose {allowances}; its arrays are `adapter.npz`."
    )
    if start.get("kind") == "discriminant":
        sentence += (
            " Round 0 is the linear discriminant projection of the sites' clips that show an "
            "action "
            f"(`anonymizer.init` discriminant, shrinkage {float(start['shrinkage']):g}, "
            f"{sum(start['clips'].values())} clips of {len(start['clips'])} sites"
            + (f", {len(start['left_out'])} site(s) left out" if start["left_out"] else "")
            + "), before any training."
        )
    if last and last["round"] != selection["round"]:
        scores = "".join(
            f" and {task['title']} {_fmt(last.get(task['metric']))}" for task in tasks.values()
        )
        sentence += (
            f" The last round ({last['round']}) had privacy cMAP "
            f"{_fmt(last['privacy_cmap'])}{scores}."
        )
    return sentence


def _utility_rows(report: dict[str, Any]) -> list[list[Any]]:
    """One row per evaluated task: its metric raw and anonymized (± standard error), and the
    change (± the standard error of the change on the same test videos, when known)."""
    base, anon = report["baseline"], report["anonymized"]
    rows = []
    for task in (report.get("tasks") or {}).values():
        key = task["metric"]
        rows.append(
            [
                task["title"],
                f"{_fmt(base.get(key))} ± {_fmt(base.get(f'{key}_se'))}",
                f"{_fmt(anon.get(key))} ± {_fmt(anon.get(f'{key}_se'))}",
                _points_change(report["utility_drop"].get(key), anon.get(f"{key}_change_se")),
            ]
        )
        # per kind (AD: each anomaly kind's videos with every normal one), no standard error
        base_kinds, anon_kinds = base.get(f"{key}_by_kind") or {}, anon.get(f"{key}_by_kind") or {}
        for kind in dict.fromkeys([*base_kinds, *anon_kinds]):
            raw, anonymized = base_kinds.get(kind), anon_kinds.get(kind)
            change = None if raw is None or anonymized is None else raw - anonymized
            rows.append(
                [
                    f"{task['title']}, {kind} only",
                    _fmt(raw),
                    _fmt(anonymized),
                    _points_change(change),
                ]
            )
    return rows


def report_markdown(report: dict[str, Any]) -> str:
    """report.md: baseline vs anonymized, per-attribute, per-round and per-site tables."""
    base, anon = report["baseline"], report["anonymized"]
    title = report["mode"] + (f", {report['strategy']}" if report["strategy"] else "")
    removed = report["privacy_removed_above_chance"]
    lines = [
        f"# latentveil run report ({title})",
        "",
        THREAT_MODEL,
        "",
        "Lower cMAP is more private. Each task is measured by its own central protocol (a fresh",
        "downstream model on the same anonymized features; common.tasks), ± standard error; a",
        "change's standard error is paired: both models scored on the same test videos.",
        "",
        *_table(
            ["metric", "baseline (raw)", "anonymized", "change"],
            [
                [
                    "privacy cMAP, video, worst case (headline)",
                    f"{_fmt(base['privacy_cmap'])} ({base.get('privacy_attacker')})",
                    f"{_fmt(anon['privacy_cmap'])} ({anon.get('privacy_attacker')})",
                    f"{_fmt(100 * report['privacy_reduction_rel'], 1)}% lower",
                ],
                [
                    "privacy cMAP, stills, worst case",
                    f"{_fmt(base.get('privacy_stills_cmap'))} "
                    f"({base.get('privacy_stills_attacker')})",
                    f"{_fmt(anon.get('privacy_stills_cmap'))} "
                    f"({anon.get('privacy_stills_attacker')})",
                    _pct_lower(report.get("privacy_stills_reduction_rel")),
                ],
                [
                    "privacy cMAP, stills, the paper's attacker (mlp)",
                    _fmt(base.get("privacy_stills_paper_cmap")),
                    _fmt(anon.get("privacy_stills_paper_cmap")),
                    _pct_lower(
                        _relative_drop(
                            base.get("privacy_stills_paper_cmap"),
                            anon.get("privacy_stills_paper_cmap"),
                        )
                    ),
                ],
                *_utility_rows(report),
            ],
        ),
        "",
        f"Chance cMAP (constant scorer): {_fmt(report['privacy_chance_cmap'])}. "
        f"Share of the above-chance cMAP removed: "
        f"{_fmt(100 * removed, 1) if removed is not None else '–'}%.",
        "",
        _selection_sentence(report),
        "",
        "## Every attacker (test cMAP, raw -> anonymized)",
        "",
    ]
    lines += _attacker_lines(report)
    lines += ["", DASH_NOTE]
    lines += ["", "## Per attribute, worst-case attacker on video (AP)", ""]
    anon_ap = anon.get("privacy_per_attribute_ap") or {}
    lines += _table(
        ["attribute", "baseline", "anonymized"],
        [
            [name, _fmt(value, 1), _fmt(anon_ap.get(name), 1)]
            for name, value in (base.get("privacy_per_attribute_ap") or {}).items()
        ],
    )
    lines += _bias_lines(report)
    selected = (report.get("selection") or {}).get("round")
    tasks = report.get("tasks") or {}
    lines += ["", "## Rounds", ""]
    lines += _table(
        [
            "round",
            "privacy cMAP (video)",
            "worst attacker",
            "stills cMAP",
            *(task["title"] for task in tasks.values()),
            "val cMAP",
            *(f"val {task['title']}" for task in tasks.values()),
            "L_B",
            "L_LC",
            "L_T",
            "sites",
            "rejected",
            "MB up",
            "MB down",
            "s",
        ],
        [
            [
                f"{r['round']} (selected)" if r["round"] == selected else r["round"],
                _fmt(r["privacy_cmap"]),
                _fmt(r.get("privacy_attacker")),
                _fmt(r.get("privacy_stills_cmap")),
                *(_fmt(r.get(task["metric"])) for task in tasks.values()),
                _fmt(r.get("privacy_val_cmap")),
                *(_fmt(r.get(task["val_metric"])) for task in tasks.values()),
                _fmt(r.get("loss_b"), 3),
                _fmt(r.get("loss_lc"), 4),
                _fmt(r.get("loss_t"), 3),
                _fmt(r["sites_aggregated"]),
                len(r["sites_rejected"]),
                f"{r['bytes_up'] / 1e6:.2f}",
                f"{r['bytes_down'] / 1e6:.2f}",
                _fmt(r["seconds"], 1),
            ]
            for r in report["rounds"]
        ],
    )
    if report["rejected_updates"]:
        lines += ["", "## Updates left out of aggregation", ""]
        lines += _table(
            ["round", "node", "reason"],
            [[e.get("round"), e.get("node"), e.get("reason")] for e in report["rejected_updates"]],
        )
    lines += _federation_lines(report)
    comm = report["communication"]
    lines += [
        "",
        "## Communication",
        "",
        f"Shared parameters (AAM + heads): {comm.get('shared_params'):,}. "
        f"Frozen encoder parameters (never sent): {comm.get('encoder_params') or 0:,}. "
        f"Bytes per site per round, each way: {comm.get('bytes_per_client_per_round'):,}.",
    ]
    lines += _wire_lines(report)
    if report["sites"]:
        keys = [k for k in report["sites"][0] if k not in ("action_mix", "attribute_prevalence")]
        rows = []
        for site in report["sites"]:
            mix = ", ".join(f"{k} {v}" for k, v in (site.get("action_mix") or {}).items() if v)
            prevalence = ", ".join(
                f"{k} {v:.2f}" for k, v in (site.get("attribute_prevalence") or {}).items()
            )
            rows.append([_fmt(site.get(k)) for k in keys] + [mix, prevalence])
        lines += ["", "## Sites", ""]
        lines += _table([*keys, "actions (train)", "attribute prevalence (train)"], rows)
    plots = RunLayout(Path(".")).rounds_plot.name, RunLayout(Path(".")).frontier_plot.name
    lines += ["", f"Plots: `{plots[0]}`, `{plots[1]}`.", ""]
    return "\n".join(lines)


def _federation_lines(report: dict[str, Any]) -> list[str]:
    """Dropped sites, an early stop, differential privacy: only when the run had them."""
    lines: list[str] = []
    if report.get("stopped"):
        lines += ["", f"**The run stopped early: {report['stopped']}.**"]
    if report.get("dropped_sites"):
        lines += ["", "## Sites that dropped out", ""]
        lines += _table(
            ["round", "site", "reason"],
            [[e.get("round"), e.get("site"), e.get("reason")] for e in report["dropped_sites"]],
        )
    notes = [[r["round"], r["note"]] for r in report["rounds"] if r.get("note")]
    if notes:
        lines += ["", "## Rounds that changed nothing", ""]
        lines += _table(["round", "why"], notes)
    dp = report.get("differential_privacy")
    if dp:
        lines += [
            "",
            "## Differential privacy (of the sites' updates)",
            "",
            f"{dp['mechanism']}; noise multiplier {dp['noise_multiplier']:g}, clipping norm "
            f"{dp['clipping_norm']:g}. {dp['accountant']}: **epsilon {dp['epsilon']:.3f} at "
            f"delta {dp['delta']:g}** after {len(dp['epsilon_per_round'])} round(s)"
            + (f" (budget {dp['max_epsilon']:g})" if dp.get("max_epsilon") else "")
            + ". It bounds what the aggregated weights reveal about any one site's data; it "
            "is not the latent anonymization, whose privacy is the cMAP above.",
            "",
        ]
        lines += _table(
            ["round", "epsilon"],
            [[e["round"], _fmt(e["epsilon"], 3)] for e in dp["epsilon_per_round"]],
        )
    return lines


def _wire_lines(report: dict[str, Any]) -> list[str]:
    wire = report.get("wire")
    if not wire:
        return []
    compression = report.get("compression") or {}
    ratio = compression.get("ratio_to_float32")
    verdict = (
        "**YES: an array outside the shareable allow-list left a site**"
        if wire["outside_allowlist_left_a_site"]
        else "no array outside the shareable allow-list left any site"
    )
    records = wire.get("site_records")
    lines = [
        "",
        "## Wire audit",
        "",
        f"{verdict} (server record: {wire['server_messages']} messages, "
        f"{wire['bytes_down'] / 1e6:.2f} MB down, {wire['bytes_up'] / 1e6:.2f} MB up"
        + (
            f"; the sites' own records: {records['messages']} messages from "
            f"{len(records['sites'])} site(s), {len(records['refused'])} reply(ies) refused at "
            "the site"
            if records
            else "; the sites' own records are not in the run folder"
        )
        + "). Updates sent "
        + (
            f"compressed ({compression.get('method')}, {ratio:.1%} of float32)."
            if compression.get("method") not in (None, "none") and ratio
            else "uncompressed."
        ),
    ]
    if records and records["refused"]:
        lines += ["", "Refused at the site (never sent):", ""]
        lines += _table(
            ["round", "site", "arrays"],
            [[e["round"], e["site"], ", ".join(e["arrays"])] for e in records["refused"]],
        )
    if wire["per_site_round"]:
        lines += ["", "Bytes per site and round:", ""]
        lines += _table(
            ["round", "site", "KB down", "KB up"],
            [
                [
                    e["round"],
                    e["site"],
                    f"{e['bytes_down'] / 1e3:.1f}",
                    f"{e['bytes_up'] / 1e3:.1f}",
                ]
                for e in wire["per_site_round"]
            ],
        )
    return lines


def _bias_lines(report: dict[str, Any]) -> list[str]:
    """The bias protocol: action top-1 per group, raw and anonymized, and the gap."""
    bias = report.get("bias")
    if not bias:
        return []
    raw, anon = bias.get("baseline") or {}, bias.get("anonymized") or {}
    groups = list(dict.fromkeys([*(raw.get("accuracy") or {}), *(anon.get("accuracy") or {})]))
    rows = [
        [group, _fmt((raw.get("accuracy") or {}).get(group)),
         _fmt((anon.get("accuracy") or {}).get(group))]
        for group in groups
    ]  # fmt: skip
    rows.append(["gap (best - worst group)", _fmt(raw.get("gap")), _fmt(anon.get("gap"))])
    return [
        "",
        "## Bias (the paper's protocol)",
        "",
        "A fresh action probe trained on a skewed split (95% of an action's videos show one "
        "group), scored per group on a balanced test split (top-1, %):",
        "",
        *_table(["group", "raw", "anonymized"], rows),
    ]


def _points_change(drop: float | None, se: float | None = None) -> str:
    if drop is None:
        return "–"
    change = f"{_fmt(abs(drop))} points {'lower' if drop >= 0 else 'higher'}"
    return change if se is None else f"{change} (± {_fmt(se)} paired)"


def _pct_lower(value: float | None) -> str:
    return "–" if value is None else f"{_fmt(100 * value, 1)}% lower"


def _attacker_lines(report: dict[str, Any]) -> list[str]:
    """One row per attacker, one column pair per protocol; the worst case marked."""
    table = report.get("privacy_attackers") or {}
    names = list(dict.fromkeys(n for protocol in table.values() for n in protocol))
    if not names:
        return ["(no attacker results)"]

    def cell(protocol: str, name: str, side: str) -> str:
        entry = ((table.get(protocol) or {}).get(name) or {}).get(side)
        return "–" if not entry else _fmt(entry["test_cmap"])

    rows = [
        [name, *(f"{cell(p, name, 'raw')} -> {cell(p, name, 'anonymized')}" for p in PROTOCOLS)]
        for name in names
    ]
    return _table(["attacker", *(f"{p}" for p in PROTOCOLS)], rows)


def write_plots(report: dict[str, Any], run_dir: Path) -> list[Path]:
    """Privacy cMAP and each task's metric per round; privacy vs the first task's metric.
    Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evaluated = [r for r in report["rounds"] if r["privacy_cmap"] is not None]
    rounds = [r["round"] for r in evaluated]
    cmap = [r["privacy_cmap"] for r in evaluated]
    tasks = list((report.get("tasks") or {}).values())
    layout = RunLayout(run_dir)
    written = []

    from matplotlib.ticker import MaxNLocator

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(rounds, cmap, "o-", color="tab:red", label="anonymized (test)")
    val_cmap = [r.get("privacy_val_cmap") for r in evaluated]
    if all(v is not None for v in val_cmap):
        left.plot(rounds, val_cmap, "o:", color="tab:red", alpha=0.5, label="anonymized (val)")
    left.axhline(report["privacy_chance_cmap"], color="gray", linestyle=":", label="chance")
    selected = (report.get("selection") or {}).get("round")
    if selected in rounds:
        for axis in (left, right):
            axis.axvline(selected, color="black", linewidth=0.8, linestyle="--")
        left.plot([], [], color="black", linewidth=0.8, linestyle="--", label="selected (val)")
    # The stills protocol runs on the raw features, the last round and the selected one
    # (evaluation.stills: selected) or on every evaluated round: plot the rounds it ran on.
    stills = [(x, r["privacy_stills_cmap"]) for x, r in zip(rounds, evaluated, strict=True)
              if r.get("privacy_stills_cmap") is not None]  # fmt: skip
    if stills:
        left.plot(*zip(*stills, strict=True), "s--", color="tab:orange",
                  label="stills (paper protocol)")  # fmt: skip
    left.set(
        xlabel="round",
        ylabel="worst-case cMAP (lower = more private)",
        title="privacy: worst attacker on video",
    )
    left.legend()
    base = report["baseline"]
    for index, task in enumerate(tasks):
        color = f"C{index}"
        right.plot(rounds, [r.get(task["metric"]) for r in evaluated], "o-", color=color,
                   label=f"{task['title']} (test)")  # fmt: skip
        val = [r.get(task.get("val_metric", "")) for r in evaluated]
        if all(v is not None for v in val):
            right.plot(rounds, val, "o:", color=color, alpha=0.5, label=f"{task['title']} (val)")
        raw, raw_se = base.get(task["metric"]), base.get(f"{task['metric']}_se")
        if raw is not None:
            # the raw features' test value, with its standard error as a band
            right.axhline(raw, color=color, linewidth=0.8, linestyle="--")
            if raw_se:
                right.axhspan(raw - raw_se, raw + raw_se, color=color, alpha=0.12)
    right.set(xlabel="round", ylabel="%", title="utility (dashed: raw features ± SE)")
    if tasks:
        right.legend(fontsize="small")
    for axis in (left, right):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    written.append(_save(fig, layout.rounds_plot))
    plt.close(fig)
    if not tasks:
        return written
    main = tasks[0]
    utility = [r.get(main["metric"]) for r in evaluated]

    fig, axis = plt.subplots(figsize=(5, 4))
    axis.plot(cmap, utility, "-", color="lightgray", zorder=1)
    points = axis.scatter(cmap, utility, c=rounds, cmap="viridis", zorder=2)
    axis.scatter(
        [report["baseline"]["privacy_cmap"]],
        [report["baseline"].get(main["metric"])],
        marker="s",
        s=80,
        facecolors="none",
        edgecolors="black",
        label="raw features",
    )
    fig.colorbar(points, label="round")
    axis.set(
        xlabel="worst-case video cMAP (lower = more private)",
        ylabel=f"{main['title']} (%)",
        title="privacy vs utility",
    )
    axis.legend()
    fig.tight_layout()
    written.append(_save(fig, layout.frontier_plot))
    plt.close(fig)
    return written


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def rounds_csv(report: dict[str, Any]) -> str:
    """One row per round: its losses, privacy and task metrics (test and val; empty where the
    round was not evaluated), sites, bytes and seconds; for spreadsheets and plotting tools."""
    rows = report["rounds"]
    nested = {k for r in rows for k, v in r.items() if isinstance(v, dict | list)}
    # (nested values, e.g. each site's seconds, stay in report.json)
    columns = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in nested]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return buffer.getvalue()


def write_report(report: dict[str, Any], run_dir: str | Path) -> Path:
    """Write report.json, report.md and the plots into `run_dir`; returns report.json's path."""
    layout = RunLayout(Path(run_dir))
    atomic_write_text(layout.report_json, json.dumps(report, indent=2) + "\n")
    atomic_write_text(layout.report_md, report_markdown(report))
    atomic_write_text(layout.rounds_csv, rounds_csv(report))
    write_plots(report, layout.root)
    return layout.report_json
