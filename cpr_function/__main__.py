"""`python -m cpr_function`: see `cli`."""

import sys

from .cli import main

sys.exit(main())
