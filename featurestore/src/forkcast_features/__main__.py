"""`python -m forkcast_features` is `forkcast-features`."""

import sys

from forkcast_features.cli import main

sys.exit(main())
