"""`python -m ptdistill` is the same as the `ptdistill` console script."""

from ptdistill.cli import main

raise SystemExit(main())
