"""What the class names of the shipped models mean (no heavy imports: the CLI's --help reads it)."""

#: class name -> (space group(s), description with examples).
CLASS_MEANINGS: dict[str, tuple[str, str]] = {
    "bct_139": ("I4/mmm", "body-centred tetragonal (In, α-Pa)"),
    "bct_141": ("I4₁/amd", "body-centred tetragonal, two-atom basis (β-Sn)"),
    "hex/rh": ("P6₃/mmc, R-3m", "hexagonal and rhombohedral (hcp, dhcp, α-As, α-Hg, α-Sm, ...)"),
    "sc": ("Pm-3m", "simple cubic (α-Po)"),
    "fcc": ("Fm-3m", "face-centred cubic (Cu, Al)"),
    "diam": ("Fd-3m", "diamond (C, Si, α-Sn)"),
    "bcc": ("Im-3m", "body-centred cubic (Fe, W)"),
}
