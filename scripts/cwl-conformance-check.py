"""Checks a cwltest JUnit report against the committed CWL expectations.

Fails (exit 1) when a `required` test that needs no container engine did not
pass, or when fewer tests passed than the committed floor. Prints the tests
that failed and writes a per-tag table (markdown) for docs/cwl.md.
"""

import argparse
import collections
import sys
import re
import xml.etree.ElementTree as ET

from cwltest import utils


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tests", required=True, help="conformance_tests.yaml")
    ap.add_argument("--junit", required=True, help="cwltest --junit-xml output")
    ap.add_argument("--floor", required=True, help="file holding the minimum pass count")
    ap.add_argument("--needs-container", required=True,
                    help="file listing tests (one id per line, # comments) that need a container engine")
    ap.add_argument("--log", help="cwltest's stderr: its `Test N failed` lines also count (its JUnit "
                    "report omits a should_fail test that wrongly succeeded)")
    ap.add_argument("--table", help="write the per-tag table here (markdown)")
    ap.add_argument("--partial", action="store_true",
                    help="only part of the suite ran: check the required tests that ran, not the floor")
    a = ap.parse_args()

    tests, _ = utils.load_and_validate_tests(a.tests)
    # A test is named by its id; the few without one by their number.
    names = []
    tags_of = {}
    for i, t in enumerate(tests):
        name = utils.shortname(t["id"]) if isinstance(t.get("id"), str) else f"#{i + 1} {t.get('tool', '')}"
        names.append(name)
        tags_of[name] = set(t.get("tags", []))

    needs_container = set()
    with open(a.needs_container) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                needs_container.add(line)

    outcome = {}
    for case in ET.parse(a.junit).getroot().iter("testcase"):
        # cwltest's url ends in the test's number in the suite file.
        number = int(case.get("url", "#0").rsplit("#", 1)[1])
        name = names[number - 1] if 0 < number <= len(names) else case.get("file")
        if case.find("failure") is not None or case.find("error") is not None:
            outcome[name] = "failed"
        elif case.find("skipped") is not None:
            outcome[name] = "unsupported"
        else:
            outcome[name] = "passed"

    if a.log:
        with open(a.log, errors="replace") as f:
            for m in re.finditer(r"^Test (\d+) failed", f.read(), re.M):
                number = int(m.group(1))
                if 0 < number <= len(names):
                    outcome[names[number - 1]] = "failed"

    passed = sum(1 for v in outcome.values() if v == "passed")
    ok = True
    print(f"CWL conformance: {passed} of {len(outcome)} run tests passed "
          f"({len(tests)} in the suite)")

    by_tag = collections.defaultdict(lambda: [0, 0])
    for name, v in outcome.items():
        for tag in tags_of.get(name, set()) | {"all"}:
            by_tag[tag][1] += 1
            if v == "passed":
                by_tag[tag][0] += 1

    failing = sorted(n for n, v in outcome.items() if v != "passed")
    if failing:
        print("not passing:")
        for n in failing:
            mark = " (needs a container engine)" if n in needs_container else ""
            print(f"  {n}: {outcome[n]} [{', '.join(sorted(tags_of.get(n, [])))}]{mark}")

    req_bad = [n for n in failing if "required" in tags_of.get(n, set()) and n not in needs_container]
    if req_bad:
        ok = False
        print(f"FAIL: {len(req_bad)} required test(s) that need no container engine did not pass: "
              + ", ".join(req_bad))

    if not a.partial:
        with open(a.floor) as f:
            floor = int(f.read().split()[0])
        if passed < floor:
            ok = False
            print(f"FAIL: {passed} tests passed, below the committed floor of {floor} "
                  f"(cwl/conformance/floor); something that worked broke")
        elif passed > floor:
            print(f"note: {passed} passed, above the floor of {floor}: raise cwl/conformance/floor to {passed}")

    if a.table:
        with open(a.table, "w") as f:
            f.write("| tag | passed | run |\n|---|---:|---:|\n")
            for tag in sorted(by_tag, key=lambda t: (t != "all", t)):
                p, n = by_tag[tag]
                f.write(f"| {tag} | {p} | {n} |\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
