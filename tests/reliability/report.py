"""Print the torture table from the rows the reliability tests recorded (`make torture`)."""

from __future__ import annotations

import json
import sys


def main(path: str) -> None:
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    print(f"{'test':<58} {'trials':>7} {'failures':>9}  worst loss")
    for row in rows:
        print(f"{row['test']:<58} {row['trials']:>7} {row['failures']:>9}  {row['worst_loss']}")


if __name__ == "__main__":
    main(sys.argv[1])
