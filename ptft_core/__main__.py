import sys

from ptft_core.cli import main

sys.exit(main())
