"""``python -m noisesearch.cli ...``: the command line."""

from noisesearch.cli import main

main()
