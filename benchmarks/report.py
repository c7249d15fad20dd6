"""Collect benchmarks/results/*.json (written by each benchmark script) into benchmarks/README.md's table.

python benchmarks/report.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
START, END = "<!-- results:start -->", "<!-- results:end -->"


def table() -> str:
    rows = ["| benchmark | result (measured in one run) | machine |", "|---|---|---|"]
    for f in sorted((HERE / "results").glob("*.json")):
        res = json.loads(f.read_text())
        machine = res.pop("machine", "")
        name = res.pop("benchmark", f.stem)
        for case in res.pop("cases", None) or [res]:
            body = ", ".join(f"{k}={v}" for k, v in case.items() if not isinstance(v, (dict, list)))
            rows.append(f"| {name} | {body} | {machine} |")
    return "\n".join(rows)


def main() -> None:
    readme = HERE / "README.md"
    text = readme.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{table()}\n{END}{tail}")
    print(table())


if __name__ == "__main__":
    main()
