"""``python -m tminus_sandbox --port N --data DIR``: serve every stand-in in the foreground.

tminus starts it this way (``tminus sandbox``, ``tminus up``) and never imports it: the
stand-ins are a dev-only distribution, and ``make lint`` keeps the two independent.
"""

import argparse
import sys

from tminus_sandbox.app import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tminus_sandbox", description=__doc__)
    parser.add_argument("--port", type=int, default=4281, help="loopback port (default 4281)")
    parser.add_argument("--data", required=True, help="folder for the stand-ins' SQLite state")
    args = parser.parse_args(argv)
    print(
        f"tminus sandbox on http://127.0.0.1:{args.port} (GitLab API at /api/v4, control at "
        "/_sandbox); Ctrl-C stops it",
        file=sys.stderr,
    )
    try:
        serve(args.data, args.port)
    except KeyboardInterrupt:
        return 130
    return 0


sys.exit(main())
