import sys

from xlxmert.cli import main

sys.exit(main())
