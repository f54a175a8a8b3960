"""``python -m service.cli``: the ``sona`` command."""

import sys

from service.cli import main

sys.exit(main())
