"""The hub's Smart Energy key-establishment (CBKE) crypto.

Binary-field Koblitz curves (sect163k1 for crypto suite 1, sect283k1 for suite 2) with
the project's own GF(2^m) arithmetic (``cryptography`` dropped binary curves), the
Zigbee AES-MMO hash and its HMAC, ECQV implicit certificates and ECMQV key agreement
with the Key Establishment cluster's KDF and key-confirmation MACs. Pure computation:
no I/O, clocks or radios; the cluster's state machine lives beside it (``ke_*``).
"""
