"""Prints how the peers' test files fare against keras_attn's classes.

    python -m tests.compat                 # every suite
    python -m tests.compat -k decoder      # suites whose name contains it
    python -m tests.compat --against-peer  # the peers' own classes
    python -m tests.compat -v              # also the failing test ids

Prints `suite | passed | failed | skipped | not applicable`, where "failed"
counts only failures not listed in tests/compat/NOT_APPLICABLE.md. Exits
with 1 when such a failure exists.
"""

import argparse
import sys

from tests.compat import runner


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.compat")
    parser.add_argument("-k", "--suite", default="",
                        help="run suites whose name contains this text")
    parser.add_argument("--against-peer", action="store_true",
                        help="run against the peers' own classes")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="list failing test ids")
    args = parser.parse_args(argv)

    suites = [s for s in runner.all_suites() if args.suite in s.name]
    if not runner.keras_hub_suites():
        print(f"keras-hub suites skipped: {runner.KERAS_HUB_PEER_DIR} "
              "does not exist.", file=sys.stderr)
    listed = {} if args.against_peer else runner.read_not_applicable()
    results, unexpected = [], []
    for suite in suites:
        print(f"running {suite.name} ...", file=sys.stderr, flush=True)
        result = runner.run_suite(suite, against_peer=args.against_peer)
        results.append(result)
        if result.error:
            unexpected.append(f"{suite.name}: {result.error}")
            print(result.output, file=sys.stderr)
        unexpected += [t for t in result.failed if t not in listed]
    print(runner.format_table(results, listed))
    if args.verbose or unexpected:
        for test_id in unexpected:
            print(f"FAILED {test_id}")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
