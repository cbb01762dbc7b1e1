"""`python -m arkor_ops.cli`."""

import sys

from arkor_ops.cli import main

sys.exit(main())
