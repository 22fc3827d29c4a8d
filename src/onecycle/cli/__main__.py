"""`python -m onecycle.cli`: how torchrun starts each data-parallel process (onecycle.training.distributed)."""
import sys

from onecycle.cli import main

sys.exit(main())
