"""One module per ``meterwax`` command; ``flows/cli.py`` registers them."""
