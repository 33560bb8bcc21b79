"""Runs fuzz cases one per line: reads a JSON case from stdin, writes one JSON line with its
outcome (op_cases.run_case for {"op": ...}, file_cases.run_file_case for {"file": ...}). If a
case crashes the process, the parent sees the pipe close and knows which case did it."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/

import torch  # noqa: E402

from fuzz.file_cases import run_file_case  # noqa: E402
from fuzz.op_cases import run_case  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip():
            case = json.loads(line)
            result = run_file_case(case) if "file" in case else run_case(case)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
