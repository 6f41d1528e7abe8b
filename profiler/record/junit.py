"""The verdict as JUnit XML, the test-report format Jenkins, GitLab and GitHub test reporters read. Pure.

One test case per check (the implied checks, then each gate's absolute and change checks): a failed
check is a <failure> whose message is its reason; an inconclusive check that decides the verdict is
an <error> (the job could not tell), one that does not is <skipped>. The document follows the
JUnit 10 schema Jenkins' xUnit plugin publishes (testsuites > testsuite > properties, testcase).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

SUITE = "profiler"


def _case_name(check: Mapping[str, Any]) -> str:
    kind = check.get("kind") or "gate"
    bound = check.get("bound") or ""
    return f"{kind}: {check.get('metric')}" + (f" {bound}" if bound else "")


def _counts(checks: list[Mapping[str, Any]]) -> tuple[int, int, int]:
    """(failures, errors, skipped): failed checks, inconclusive required ones, inconclusive optional ones."""
    failures = sum(1 for c in checks if c.get("status") == "fail")
    errors = sum(1 for c in checks if c.get("status") == "inconclusive" and c.get("required", True))
    skipped = sum(1 for c in checks if c.get("status") == "inconclusive" and not c.get("required", True))
    return failures, errors, skipped


def _add_case(suite: ET.Element, check: Mapping[str, Any]) -> None:
    case = ET.SubElement(suite, "testcase", name=_case_name(check), classname=f"{SUITE}.{check.get('kind')}",
                         time="0")
    status, reason = check.get("status"), str(check.get("reason") or "")
    if status == "fail":
        ET.SubElement(case, "failure", message=reason, type="fail").text = reason
    elif status == "inconclusive":
        tag = "error" if check.get("required", True) else "skipped"
        ET.SubElement(case, tag, message=reason, type="inconclusive").text = reason


def junit_xml(report: Mapping[str, Any], location: str | None = None) -> str:
    """The JUnit XML document of a report's verdict; `location` (where the report was written) is a property."""
    verdict = report.get("verdict") or {}
    checks = list(verdict.get("checks") or [])
    run = report.get("run") or {}
    target = report.get("target") or {}
    failures, errors, skipped = _counts(checks)
    duration = f"{float(run.get('duration_s') or 0.0):.3f}"
    root = ET.Element("testsuites", name=SUITE, tests=str(len(checks)), failures=str(failures),
                      errors=str(errors), time=duration)
    suite = ET.SubElement(root, "testsuite", name=f"{SUITE}.{target.get('model', 'model')}", tests=str(len(checks)),
                          failures=str(failures), errors=str(errors), skipped=str(skipped), time=duration,
                          timestamp=str(run.get("started_at") or ""), id=str(run.get("id") or ""))
    properties = ET.SubElement(suite, "properties")
    facts = {"verdict": verdict.get("status"), "reason": verdict.get("reason"), "run_id": run.get("id"),
             "model": target.get("model"), "predecessor": (report.get("predecessor") or {}).get("id"),
             "report": location}
    for name, value in facts.items():
        if value is not None:
            ET.SubElement(properties, "property", name=name, value=str(value))
    for check in checks:
        _add_case(suite, check)
    ET.SubElement(suite, "system-out").text = f"verdict {str(verdict.get('status')).upper()}: {verdict.get('reason')}"
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
