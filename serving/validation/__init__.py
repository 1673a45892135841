"""The validation layer: rules 1 (clinical necessity, with documentation) and 2 (code
substitution), comparing what the radiographs show with the billed procedure lines."""
