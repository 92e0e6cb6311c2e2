"""Device side: pure JAX physics (scattering, detector, fingerprint, defects); never imports ASE."""
