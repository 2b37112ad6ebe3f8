import sys

from ssr_lib.cli import main

sys.exit(main())
