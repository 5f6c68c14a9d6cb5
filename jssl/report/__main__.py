import sys

from jssl.report.main import main

sys.exit(main())
