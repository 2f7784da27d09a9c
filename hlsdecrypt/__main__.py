"""``python -m hlsdecrypt`` and the ``hlsdecrypt`` command.

Imports nothing until it runs, so that Ctrl-C at any moment of start-up ends as quietly as later.
"""

import sys


def run() -> None:
    try:
        from .cli import main

        code = main()
    except KeyboardInterrupt:
        sys.stderr.write("hlsdecrypt: interrupted\n")
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    run()
