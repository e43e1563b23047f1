"""Summarise an Autobahn fuzzing-client index.json and decide pass or fail.

Usage: python3 summary.py INDEX_JSON SPEC_JSON [TITLE]

Prints a Markdown table of case counts per verdict, lists every case that did not pass,
and exits 1 when any case failed or any selected case group produced no result.
Both runners (kosoku and wstest) write the same index.json layout:
{agent: {case_id: {"behavior": ..., "behaviorClose": ..., "remoteCloseCode": ...}}}.
"""

import fnmatch
import json
import sys

# Verdicts in the order the table shows them. Any label outside PASSING (including
# ones not listed here, such as kosoku's ERROR) fails the run.
LABELS = [
    "OK",
    "NON-STRICT",
    "INFORMATIONAL",
    "UNIMPLEMENTED",
    "FAILED",
    "WRONG CODE",
    "UNCLEAN",
]
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"}


def main(argv):
    index_path, spec_path = argv[1], argv[2]
    title = argv[3] if len(argv) > 3 else "Autobahn TestSuite"
    with open(index_path) as f:
        index = json.load(f)
    with open(spec_path) as f:
        spec = json.load(f)

    cases = {}
    for agent_cases in index.values():
        cases.update(agent_cases)
    if not cases:
        print("autobahn: %s holds no case results" % index_path)
        return 1

    print_table(title, cases)
    failures = failing_cases(cases)
    missing = [p for p in spec["cases"] if not fnmatch.filter(cases, p)]
    for case_id in failures:
        case = cases[case_id]
        print(
            "FAIL %s: behavior=%s behaviorClose=%s remoteCloseCode=%s (%s)"
            % (
                case_id,
                case["behavior"],
                case["behaviorClose"],
                case.get("remoteCloseCode"),
                case.get("reportfile"),
            )
        )
    for pattern in missing:
        print("FAIL %s: no case of this group was run" % pattern)
    return 1 if failures or missing else 0


def print_table(title, cases):
    behavior = count(c["behavior"] for c in cases.values())
    close = count(c["behaviorClose"] for c in cases.values())
    extra = sorted((set(behavior) | set(close)) - set(LABELS))
    print("%s: %d cases" % (title, len(cases)))
    print()
    print("| verdict | behavior | behaviorClose |")
    print("|---|---:|---:|")
    for label in LABELS + extra:
        print("| %s | %d | %d |" % (label, behavior.get(label, 0), close.get(label, 0)))
    print()


def failing_cases(cases):
    bad = [
        case_id
        for case_id, case in cases.items()
        if case["behavior"] not in PASSING or case["behaviorClose"] not in PASSING
    ]
    return sorted(bad, key=lambda c: [int(p) for p in c.split(".")])


def count(labels):
    counts = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return counts


if __name__ == "__main__":
    sys.exit(main(sys.argv))
