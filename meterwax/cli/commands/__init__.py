"""One module per ``meterwax`` verb; each parses its options and calls the layer below."""
