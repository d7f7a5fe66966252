"""Allow `python -m capq`."""

from capq.cli import main

main()
