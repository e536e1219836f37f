"""The CPU a figure was measured on, as /proc/cpuinfo names it, and its kind.

Machines here differ (AMD Zen 3, 4 and 5, Intel Emerald Rapids) and speeds and even trained
accuracies are compared only within one kind: every benchmark prints ``cpu_description()`` and
every ablation run records ``cpu_record()``; runs are paired by ``cpu_record()["kind"]``.
"""

from __future__ import annotations

import os
import platform

# (vendor, cpu family, model) -> microarchitecture, for the kinds this project has run on.
# AMD: family 25 (0x19) is Zen 3 (models 0x00-0x0f, 0x20-0x5f) or Zen 4 (0x10-0x1f, 0x60-0xaf);
# family 26 (0x1a) is Zen 5. Intel family 6: 143 Sapphire Rapids, 207 Emerald Rapids.
_INTEL = {143: "Intel Sapphire Rapids", 207: "Intel Emerald Rapids", 173: "Intel Granite Rapids"}


def _fields() -> dict:
    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def microarchitecture(vendor: str, family: int, model: int) -> str:
    """'AMD Zen 3', 'Intel Emerald Rapids', ... or 'vendor family F model M' when not known."""
    if vendor == "AuthenticAMD" and family == 25:
        return "AMD Zen 4" if 0x10 <= model <= 0x1F or 0x60 <= model <= 0xAF else "AMD Zen 3"
    if vendor == "AuthenticAMD" and family == 26:
        return "AMD Zen 5"
    if vendor == "GenuineIntel" and family == 6 and model in _INTEL:
        return _INTEL[model]
    return f"{vendor} family {family} model {model}"


def cpu_record() -> dict:
    """``{"kind", "model_name", "vendor", "family", "model", "avx512", "cores"}`` of this machine."""
    fields = _fields()
    if not fields:
        return {"kind": platform.processor() or platform.machine(), "model_name": platform.processor(),
                "vendor": None, "family": None, "model": None, "avx512": None, "cores": os.cpu_count()}
    vendor = fields.get("vendor_id", "?")
    family, model = int(fields.get("cpu family", -1)), int(fields.get("model", -1))
    return {"kind": microarchitecture(vendor, family, model), "model_name": fields.get("model name", "?"),
            "vendor": vendor, "family": family, "model": model,
            "avx512": "avx512f" in fields.get("flags", "").split(), "cores": os.cpu_count()}


def cpu_description() -> str:
    """'AMD Zen 3: AMD EPYC (cpu family 25, model 1, AVX2), 2 cores'."""
    r = cpu_record()
    if r["family"] is None:
        return f"{r['kind']}, {r['cores']} cores"
    isa = "AVX-512" if r["avx512"] else "AVX2"
    return f"{r['kind']}: {r['model_name']} (cpu family {r['family']}, model {r['model']}, {isa}), {r['cores']} cores"
