"""``python -m cellfoundry.cli``."""

from cellfoundry.cli import main

main()
