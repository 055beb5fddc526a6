"""The gate's checks as JUnit XML: one testcase per check and checkpoint, a failure holding value and threshold.

    <testsuites name="dpo-eval gate" tests=N failures=F errors="0">
      <testsuite name="dpo-eval gate" tests=N failures=F errors="0" skipped="0">
        <testcase classname="dpo-eval.gate.<run>" name="<check> @ <run/label>">
          <failure type="threshold" message="value 0.61 does not satisfy >= 0.65">detail</failure>

CI systems (GitHub, GitLab, Jenkins) read this layout. Text is escaped by ElementTree.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

from dpo_eval.metrics.gate import CheckResult
from dpo_eval.reports.gate_summary import detail_text, number_text, threshold_text

SUITE = "dpo-eval gate"


def failure_message(result: CheckResult) -> str:
    """One line with the value and the threshold (and the reason, when the row has one)."""
    if result.value is None:
        return f"value missing, threshold {threshold_text(result)}: {result.reason}"
    if result.reason:  # a value the threshold would pass, failed for its reason (findings never computed)
        return f"value {number_text(result.value)}, threshold {threshold_text(result)}: {result.reason}"
    return f"value {number_text(result.value)} does not satisfy {threshold_text(result)}"


def testcase_name(result: CheckResult) -> str:
    return f"{result.name} @ {result.checkpoint}" if result.checkpoint else result.name


def render_junit(results: Sequence[CheckResult]) -> str:
    """The XML document as a string (with its declaration)."""
    counts = {"tests": str(len(results)), "failures": str(sum(not r.passed for r in results)), "errors": "0"}
    root = ET.Element("testsuites", {"name": SUITE, **counts})
    suite = ET.SubElement(root, "testsuite", {"name": SUITE, **counts, "skipped": "0"})
    for result in results:
        run = result.checkpoint.partition("/")[0] if result.checkpoint else "results"
        case = ET.SubElement(suite, "testcase", {"classname": f"dpo-eval.gate.{run}", "name": testcase_name(result)})
        if not result.passed:
            failure = ET.SubElement(case, "failure", {"type": "threshold", "message": failure_message(result)})
            failure.text = "\n".join(part for part in (f"figure: {result.figure}", detail_text(result)) if part)
        else:
            detail = detail_text(result)
            ET.SubElement(case, "system-out").text = (f"value {number_text(result.value)}, threshold "
                                                      f"{threshold_text(result)}" + (f"; {detail}" if detail else ""))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
