"""python -m simplexkern: the simplexkern command."""

import sys

from simplexkern.cli import main

sys.exit(main())
