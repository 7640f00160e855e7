"""``python -m dicomio``: the ``dicomio`` command line (see ``dicomio.apps.cli``)."""

import sys

from dicomio.apps.cli import main

if __name__ == "__main__":
    sys.exit(main())
