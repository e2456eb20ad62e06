"""GBCS General Signing APDUs, CS06 Activate Firmware, verification and signing."""
