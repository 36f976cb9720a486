"""``python -m topogrow.cli``: the ``topogrow`` command."""

import sys

from topogrow.cli import main

sys.exit(main())
