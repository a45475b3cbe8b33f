"""``python -m loopstack``: the ``loopstack`` command."""

import sys

from .cli.main import main

sys.exit(main())
