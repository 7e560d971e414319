"""Air and vacuum wavelengths (Angstrom): line lists quote air wavelengths above 2000 A."""

from __future__ import annotations

import numpy as np


def air_to_vacuum(wl_air):
    """Air -> vacuum wavelength (A) above 2000 A (Morton 2000 / Ciddor refractive index)."""
    wl = np.asarray(wl_air, float)
    s2 = (1e4 / wl) ** 2
    n = 1 + 0.00008336624212083 + 0.02408926869968 / (130.1065924522 - s2) + 0.0001599740894897 / (38.92568793293 - s2)
    return np.where(wl > 2000.0, wl * n, wl)


def vacuum_to_air(wl_vac):
    """Vacuum -> air wavelength (A) above 2000 A (Morton 2000)."""
    wl = np.asarray(wl_vac, float)
    s2 = (1e4 / wl) ** 2
    n = 1 + 0.0000834254 + 0.02406147 / (130 - s2) + 0.00015998 / (38.9 - s2)
    return np.where(wl > 2000.0, wl / n, wl)
