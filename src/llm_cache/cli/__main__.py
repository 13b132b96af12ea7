"""``python -m llm_cache.cli``: the ``llm-cache`` command."""

import sys

from . import main

sys.exit(main())
