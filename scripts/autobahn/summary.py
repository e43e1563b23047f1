"""Summarise an Autobahn fuzzing-client index.json and decide pass or fail.

Usage: python3 summary.py INDEX_JSON SPEC_JSON [TITLE]

Prints a Markdown table of case counts per verdict, lists every case that did not pass,
and exits 1 when any case failed or any selected case group produced no result.
Both runners (kosoku and wstest) write the same index.json layout:
{agent: {case_id: {"behavior": ..., "behaviorClose": ..., "remoteCloseCode": ...}}}.

UNIMPLEMENTED is what the 12.* and 13.* cases report when the server declined the
client's permessage-deflate offer. It passes only for the offers the server declines by
design (DECLINED below); anywhere else it means compression was not negotiated where it
should have been, and fails the run.
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
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
# Case groups whose offer the server declines, and why. The server's LZ77 window is
# always 32 KiB (libdeflate), so it cannot honour server_max_window_bits under 15
# (RFC 7692 section 7.1.2.1 then requires declining the offer).
DECLINED = {
    "13.3.*": "offer server_max_window_bits=9",
    "13.5.*": "offer server_no_context_takeover; server_max_window_bits=9",
}


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
    declined = sorted(
        (c for c in cases if cases[c]["behavior"] == "UNIMPLEMENTED"),
        key=lambda c: [int(p) for p in c.split(".")],
    )
    for pattern, why in DECLINED.items():
        hits = fnmatch.filter(declined, pattern)
        if hits:
            print("declined by design (%s): %d cases %s" % (why, len(hits), pattern))
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
    bad = [case_id for case_id, case in cases.items() if not passed(case_id, case)]
    return sorted(bad, key=lambda c: [int(p) for p in c.split(".")])


def passed(case_id, case):
    declined = any(fnmatch.fnmatch(case_id, p) for p in DECLINED)
    verdicts = PASSING | {"UNIMPLEMENTED"} if declined else PASSING
    if case["behavior"] == "UNIMPLEMENTED" and declined:
        # A declined offer ends the case before any close is judged.
        return True
    return case["behavior"] in verdicts and case["behaviorClose"] in verdicts


def count(labels):
    counts = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return counts


if __name__ == "__main__":
    sys.exit(main(sys.argv))
