import sys

from tests.peers.cli import main

sys.exit(main())
