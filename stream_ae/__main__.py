"""``python -m stream_ae`` is the ``stream-ae`` command."""

import sys

from stream_ae.cli import main

sys.exit(main())
