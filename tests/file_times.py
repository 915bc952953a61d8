"""Summed test time per test file from a pytest `--junitxml` report (the CI writes .ci/junit.xml), longest first:
what tests/xdist_schedule.py's LONG_FIRST is ordered by.

    python tests/file_times.py .ci/junit.xml [--top 40]
"""

from __future__ import annotations

import argparse
import collections
import xml.etree.ElementTree as ET


def file_times(report: str) -> dict[str, float]:
    """{test file name: summed seconds of its test cases (setup, call and teardown, as junitxml counts them)}."""
    sums: dict[str, float] = collections.Counter()
    for case in ET.parse(report).iter("testcase"):
        module = case.get("classname", "").split(".")
        name = next((f"{part}.py" for part in module if part.startswith("test_")), case.get("file", "?"))
        sums[name] += float(case.get("time", 0))
    return dict(sorted(sums.items(), key=lambda item: -item[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    times = file_times(args.report)
    total = sum(times.values())
    print(f"{len(times)} files, {total:.1f} s summed test time")
    for name, seconds in list(times.items())[: args.top]:
        print(f"{seconds:8.1f}  {seconds / total:5.1%}  {name}")


if __name__ == "__main__":
    main()
