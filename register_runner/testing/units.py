"""systemd unit files read the way systemd reads them, for the unit tests and the fleet
benchmark, which both hold the tool to what the shipped units say."""

from __future__ import annotations


def unit_settings(text: str) -> dict[tuple[str, str], list[str]]:
    """Settings of unit files applied in order, the way systemd merges drop-ins: a
    setting accumulates, an empty assignment clears it (for single-valued settings
    the last value is the one that counts)."""
    settings: dict[tuple[str, str], list[str]] = {}
    section = ""
    for line in text.replace("\\\n", "").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        values = settings.setdefault((section, key.strip()), [])
        if value.strip():
            values.append(value.strip())
        else:
            values.clear()
    return settings
