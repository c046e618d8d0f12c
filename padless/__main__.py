import sys

from padless.cli import main

sys.exit(main())
