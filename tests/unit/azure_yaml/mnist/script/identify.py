"""An Azure-style file entry script: init() reads --model and --top_k, run() returns a line per file."""

import argparse
import os

args = None
digit = None


def init():
    global args, digit
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("--model", required=True)
    parser.add_argument("--top_k", type=int, default=1)
    args, _ = parser.parse_known_args()
    with open(os.path.join(args.model, "digit.txt")) as handle:
        digit = handle.read().strip()


def run(mini_batch):
    return [f"{os.path.basename(path)}: {digit} (top {args.top_k})" for path in mini_batch]
