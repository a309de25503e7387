"""One module per export target; each holds its mapping table and renders its files."""
