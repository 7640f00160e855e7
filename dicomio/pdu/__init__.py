"""L0: the PS3.8 Upper Layer PDUs as values, their codec, and an incremental reader.

Sans-IO: this package does no I/O and reads no clock.
"""
