"""Print a report's headline from its saved results.json: where the page is, the recommended
checkpoint in the page's one sentence, a line per checkpoint (named and rounded as the page does) and the
findings, most severe first (used by `make demo`).

    python -m dpo_eval.headline demo_out/report
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dpo_eval.reports import view
from dpo_eval.reports.verdict import recommendation


def _fmt(value, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _kl(checkpoint: dict, estimator: str) -> str:
    """The KL estimate the page uses, "mean ± SE" to the SE's precision."""
    kl = view.dig(checkpoint, "kl", estimator) or {}
    return view.fmt_pm(kl.get("mean"), kl.get("se"))


def checkpoint_line(doc: dict, c: dict) -> str:
    """One checkpoint as the page names it, its figures to the precision their SEs support."""
    rewards, quality, length = c.get("rewards") or {}, c.get("quality") or {}, c.get("length") or {}
    pairs = (c.get("drift") or {}).get("pairs") or {}
    source = quality.get("source", "no judge").replace(" - ", " − ")
    return (f"  {view.checkpoint_name(doc, c['run'], c['step'])}: reward acc {view.reward_accuracy_text(rewards)}, "
            f"margin {view.margin_text(rewards)}, KL {_kl(c, view.kl_estimator(doc))} nats, "
            f"length x{_fmt(length.get('mean_tokens_ratio'), '.2f')}, "
            f"chosen fell on {_fmt(pairs.get('displacement_share'), '.0%')} of pairs, "
            f"quality {view.fmt_pm(quality.get('value'), quality.get('se'), signed=True)} ({source})")


def headline(results_dir: str | Path) -> str:
    results_dir = Path(results_dir)
    doc = json.loads((results_dir / "results.json").read_text())
    lines = [f"report: {(results_dir / 'report.html').resolve()}"]
    sentence = recommendation(doc)
    lines.append(f"recommended: {sentence}" if sentence else "recommended: none (no quality axis)")
    lines.append("checkpoints:")
    lines += [checkpoint_line(doc, c) for c in doc["checkpoints"] if not c.get("is_reference")]
    findings = view.sorted_findings(doc.get("findings", []))
    lines.append(f"findings ({len(findings)}):")
    lines += [f"  [{f['severity']}] {f['title']} ({view.finding_place(doc, f)}): {f['message']}"
              for f in findings[:8]]
    lines += [f"missing: {m['what']}: {m['why']} ({m['flag']})" for m in doc.get("missing", [])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not (Path(args[0]) / "results.json").is_file():
        print("usage: python -m dpo_eval.headline RESULTS_DIR (a folder holding results.json)", file=sys.stderr)
        return 2
    print(headline(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
