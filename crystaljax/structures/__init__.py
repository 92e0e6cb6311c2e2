"""Host side: read, validate, standardise and cut structures; prototypes and the data set (NumPy, ASE, spglib)."""
