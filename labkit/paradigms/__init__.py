"""One module per paradigm; each holds its example builders and its objective."""
