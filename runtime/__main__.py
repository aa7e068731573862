import sys

from vidrt.cli import main

sys.exit(main())
