import sys

from gentext.cli import main

sys.exit(main())
