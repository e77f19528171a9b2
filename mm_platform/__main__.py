"""`python -m mm_platform` is the `mm` command."""

from mm_platform.cli.main import main

main()
