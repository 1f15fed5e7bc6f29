"""Caps on what one untrusted sample may cost, named once (``--max-member-bytes``,
``--max-pixels``). No heavy imports: the configuration reads them before torch is loaded."""

DEFAULT_MAX_MEMBER_BYTES = 64 << 20     # each tar member, and a sample's members together
DEFAULT_MAX_PIXELS = 8192 * 8192        # checked from the image header, before any pixel is decoded
