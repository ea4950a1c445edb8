"""`python -m gentext.native [SOURCE]`: build the compiled kernels into the cache (what `prepare`
starts); exit 1 if the build failed (the reason is in the entry's failed.log)."""

import sys
from pathlib import Path

from gentext.native import build

sys.exit(0 if build(Path(sys.argv[1]) if len(sys.argv) > 1 else None) is not None else 1)
