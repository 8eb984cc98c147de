import sys

from recbole_tema.cli import main

sys.exit(main())
