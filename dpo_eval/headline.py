"""Print a report's headline from its saved results.json: where the page is, the recommended
checkpoint, a line per checkpoint and the findings, most severe first (used by `make demo`).

    python -m dpo_eval.headline demo_out/report
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SEVERITY_ORDER = {"high": 0, "warning": 1, "info": 2}


def _fmt(value, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _kl(checkpoint: dict):
    kl = checkpoint.get("kl") or {}
    for name in ("analytic", "k1"):
        if kl.get(name):
            return kl[name]["mean"]
    return None


def checkpoint_line(c: dict) -> str:
    rewards, quality, length = c.get("rewards") or {}, c.get("quality") or {}, c.get("length") or {}
    pairs = (c.get("drift") or {}).get("pairs") or {}
    return (f"  {c['run']} step {c['step']:>4}: reward acc {_fmt(rewards.get('accuracy'), '.2f')}, "
            f"margin {_fmt(rewards.get('mean_margin'), '.2f')}, KL {_fmt(_kl(c), '.2f')} nats, "
            f"length x{_fmt(length.get('mean_tokens_ratio'), '.2f')}, "
            f"chosen fell on {_fmt(pairs.get('displacement_share'), '.0%')} of pairs, "
            f"quality {_fmt(quality.get('value'), '+.3f')} ({quality.get('source', 'no judge')})")


def headline(results_dir: str | Path) -> str:
    results_dir = Path(results_dir)
    doc = json.loads((results_dir / "results.json").read_text())
    lines = [f"report: {(results_dir / 'report.html').resolve()}"]
    recommended = doc.get("recommended")
    lines.append(f"recommended: {recommended['reason']}" if recommended else "recommended: none (no quality axis)")
    lines.append("checkpoints:")
    lines += [checkpoint_line(c) for c in doc["checkpoints"] if not c.get("is_reference")]
    findings = sorted(doc.get("findings", []), key=lambda f: SEVERITY_ORDER.get(f["severity"], 3))
    lines.append(f"findings ({len(findings)}):")
    lines += [f"  [{f['severity']}] {f['title']}"
              f"{' (step ' + str(f['step']) + ')' if f.get('step') is not None else ''}: {f['message']}"
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
